//! The biller: takes the ledger's pending debits to the card's AI applet, oldest first, and
//! settles each with the card's receipt once it verifies (docs/ai-applet.md, "What the daemon
//! must do").
//!
//! For each debit: a fresh nonce is journalled (durably) before DEBIT is sent; the receipt must
//! carry the next sequence number, the balance less the amount, and a signature by the card's
//! account key over exactly this card, amount, request digest and nonce; only then is it
//! journalled and the debit settled. A debit that was sent before (a crash, a lost answer) is
//! first checked against GET BALANCE: a sequence one further means the card did it and the
//! receipt was lost, so it is settled without resending — never debited twice.
//!
//! While the card is out of reach, debits wait and the ledger spends within the offline
//! allowance; when it returns they go in order. A card that refuses for want of balance stops
//! new requests (the ledger says so on D-Bus); a receipt that does not verify, or a sequence
//! that went back, stops all spending: that is a card fault or an attack.

use std::{sync::Arc, time::Duration};

use aiesim_ai_applet::{AppletError, Debit, Receipt, Voucher, receipt_message, top_up_message};
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{AccountState, Esim, EsimAvailability, EsimError, ai_applet};
use crate::{
    broker::chain,
    ledger::{CardView, JournalledReceipt, Ledger, PendingDebit, record::TopUpDone},
};

/// How soon a card that could not be reached is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Why settling stopped.
enum Stop {
    /// The card is out of reach (no session, card removed, a transport error).
    Offline(String),
    /// The card refused for want of balance or because the account is not active.
    Exhausted(AppletError),
    /// A receipt did not verify, or the card's state went back: stop all spending.
    Fault(String),
}

/// What a redeemed voucher did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopUp {
    pub amount: u64,
    pub balance: u64,
    pub sequence: u32,
}

type TopUpReply = oneshot::Sender<Result<TopUp, EsimError>>;

/// The biller's handle. The biller is the only one that changes the card's account, so debits
/// and top-ups take their sequence numbers one after the other.
pub struct Biller {
    top_ups: mpsc::Sender<(Voucher, TopUpReply)>,
    cancel: CancellationToken,
}

impl Biller {
    /// Starts billing `esim`'s card for `ledger`'s debits; must be called within a runtime.
    pub fn spawn(esim: Arc<Esim>, ledger: Ledger) -> Self {
        let (top_ups, queue) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        tokio::spawn(run(esim, ledger, queue, cancel.clone()));
        Self { top_ups, cancel }
    }

    /// Redeems an operator voucher on the card, verifies the card's receipt and journals it.
    pub async fn top_up(&self, voucher: Voucher) -> Result<TopUp, EsimError> {
        let (reply, answer) = oneshot::channel();
        self.top_ups
            .send((voucher, reply))
            .await
            .map_err(|_| EsimError::Stopped)?;
        answer.await.map_err(|_| EsimError::Stopped)?
    }
}

impl Drop for Biller {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A voucher as `TopUp` takes it: `id(16) ‖ amount(8) ‖ expiry(8) ‖ card id(16) ‖ operator
/// signature r‖s(64)`, 112 bytes (docs/ai-applet.md).
pub fn parse_voucher(bytes: &[u8]) -> Result<Voucher, EsimError> {
    let bytes: &[u8; 112] = bytes
        .try_into()
        .map_err(|_| EsimError::BadVoucher(format!("a voucher is 112 bytes, not {}", bytes.len())))?;
    let take = |range: std::ops::Range<usize>| &bytes[range];
    let u64_at = |at: usize| u64::from_be_bytes(take(at..at + 8).try_into().expect("8 bytes"));
    Ok(Voucher {
        id: take(0..16).try_into().expect("16 bytes"),
        amount: u64_at(16),
        expiry: u64_at(24),
        card_id: take(32..48).try_into().expect("16 bytes"),
        signature: take(48..112).try_into().expect("64 bytes"),
    })
}

/// Runs until `cancel`: follows the eSIM's state, the ledger's queue of debits and top-ups.
async fn run(
    esim: Arc<Esim>,
    ledger: Ledger,
    mut top_ups: mpsc::Receiver<(Voucher, TopUpReply)>,
    cancel: CancellationToken,
) {
    let mut state = esim.state();
    let mut faulted = false;
    loop {
        let account = {
            let s = state.borrow_and_update();
            (s.availability == EsimAvailability::Ready)
                .then(|| s.account.clone())
                .flatten()
        };
        let retry = match (&account, faulted) {
            (_, true) => false,
            (Some(account), false) => match bill(&esim, &ledger, account).await {
                Ok(()) => false,
                Err(stop) => {
                    faulted = stopped(&ledger, stop);
                    !faulted
                }
            },
            (None, false) => {
                ledger.card_offline();
                false
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
            () = ledger.debit_queued() => {}
            () = tokio::time::sleep(RETRY), if retry => {}
            top_up = top_ups.recv() => {
                let Some((voucher, reply)) = top_up else { return };
                let result = match (&account, faulted) {
                    (_, true) => Err(EsimError::Unavailable("spending is stopped after a card fault".into())),
                    (Some(account), false) => redeem(&esim, &ledger, account, voucher).await,
                    (None, false) => Err(EsimError::Unavailable("no card with a token account is ready".into())),
                };
                drop(reply.send(result));
            }
        }
    }
}

/// Tells the ledger why billing stopped; returns whether that was a fault (all spending stops).
fn stopped(ledger: &Ledger, stop: Stop) -> bool {
    match stop {
        Stop::Offline(reason) => {
            tracing::info!(reason = %reason, "the card is out of reach; debits wait");
            ledger.card_offline();
            false
        }
        Stop::Exhausted(why) => {
            tracing::warn!(reason = %why, "the card refused a debit; no new requests until it has more");
            ledger.card_exhausted();
            false
        }
        Stop::Fault(reason) => {
            ledger.card_fault(reason);
            true
        }
    }
}

/// Redeems `voucher`: TOP-UP with the host's time, then the receipt must be the next one, add
/// exactly the voucher's amount, and carry the account key's signature over this card, voucher,
/// amount, balance and sequence.
async fn redeem(esim: &Esim, ledger: &Ledger, account: &AccountState, voucher: Voucher) -> Result<TopUp, EsimError> {
    if voucher.card_id != account.card_id {
        return Err(EsimError::BadVoucher("it is for another card".into()));
    }
    let key = VerifyingKey::from_sec1_bytes(&account.account_key)
        .map_err(|_| EsimError::BadTopUpReceipt("the card's account key is not a P-256 point".into()))?;
    let before = ledger
        .card()
        .card
        .filter(|c| c.card_id == account.card_id)
        .map_or((account.balance, account.sequence), |c| (c.balance, c.sequence));
    let host_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let receipt = ai_applet::top_up(esim.modem(), voucher, host_time).await?;
    let bad = |why: String| {
        let e = EsimError::BadTopUpReceipt(why);
        ledger.card_fault(chain(&e));
        e
    };
    if receipt.sequence != before.1.wrapping_add(1) {
        return Err(bad(format!(
            "sequence {} where {} is next",
            receipt.sequence,
            before.1.wrapping_add(1)
        )));
    }
    if receipt.balance != before.0.saturating_add(voucher.amount) {
        return Err(bad(format!(
            "balance {} where {} and {} make {}",
            receipt.balance,
            before.0,
            voucher.amount,
            before.0.saturating_add(voucher.amount)
        )));
    }
    let message = top_up_message(
        &account.card_id,
        &voucher.id,
        voucher.amount,
        receipt.balance,
        receipt.sequence,
    );
    let verified = Signature::from_slice(&receipt.signature)
        .ok()
        .is_some_and(|sig| key.verify(&message, &sig).is_ok());
    if !verified {
        return Err(bad("its signature does not verify against the account key".into()));
    }
    ledger
        .topped_up(TopUpDone {
            card_id: account.card_id.to_vec(),
            voucher_id: voucher.id.to_vec(),
            amount: voucher.amount,
            balance: receipt.balance,
            sequence: receipt.sequence,
            signature: receipt.signature.to_vec(),
        })
        .await
        .map_err(|e| EsimError::Unavailable(chain(&e)))?;
    esim.note_balance(&account.card_id, receipt.balance, receipt.sequence);
    tracing::info!(
        amount = voucher.amount,
        balance = receipt.balance,
        sequence = receipt.sequence,
        "voucher redeemed; receipt verified"
    );
    Ok(TopUp {
        amount: voucher.amount,
        balance: receipt.balance,
        sequence: receipt.sequence,
    })
}

/// Checks the card against the journal, tells the ledger it is there, and settles every debit
/// owed to it.
async fn bill(esim: &Esim, ledger: &Ledger, account: &AccountState) -> Result<(), Stop> {
    let key = VerifyingKey::from_sec1_bytes(&account.account_key)
        .map_err(|_| Stop::Fault("the card's account key is not a P-256 point".into()))?;
    let card_id = account.card_id;
    let known = ledger.card().card.filter(|c| c.card_id == card_id);
    if let Some(known) = known
        && account.sequence < known.sequence
    {
        return Err(Stop::Fault(format!(
            "the card's sequence went back from {} to {}: a rolled-back or cloned account",
            known.sequence, account.sequence
        )));
    }
    // From the journal when the card is known (it may lag the card by a lost receipt, which the
    // first debit below finds), else as read.
    let mut view = CardView {
        card_id,
        balance: account.balance,
        sequence: account.sequence,
        allowance: account.offline_allowance,
        max_debit: account.max_debit,
    };
    if let Some(known) = known
        && ledger.next_debit(&card_id).is_some_and(|d| d.nonce.is_some())
    {
        view.balance = known.balance;
        view.sequence = known.sequence;
    } else if let Some(known) = known
        && known.sequence != account.sequence
    {
        tracing::warn!(
            journal = known.sequence,
            card = account.sequence,
            "the card's account changed outside this daemon (a top-up elsewhere?); taking the card's"
        );
    }
    ledger.card_online(view);
    while let Some(debit) = ledger.next_debit(&card_id) {
        let receipt = settle(esim, ledger, &key, view, debit).await?;
        view.balance = receipt.balance;
        view.sequence = receipt.sequence;
        esim.note_balance(&card_id, receipt.balance, receipt.sequence);
    }
    Ok(())
}

/// Takes one debit to the card and journals its verified receipt.
async fn settle(
    esim: &Esim,
    ledger: &Ledger,
    key: &VerifyingKey,
    view: CardView,
    pending: PendingDebit,
) -> Result<JournalledReceipt, Stop> {
    let modem = esim.modem();
    let journal = |e: crate::ledger::LedgerError| Stop::Fault(chain(&e));
    let nonce = if let Some(nonce) = pending.nonce {
        // Sent before: did the card do it?
        let now = ai_applet::balance(modem).await.map_err(|e| offline(&e))?;
        if now.sequence == view.sequence.wrapping_add(1) && now.balance == view.balance.saturating_sub(pending.amount) {
            tracing::warn!(
                debit = pending.id,
                sequence = now.sequence,
                "the card completed a debit whose receipt was lost; settled without resending"
            );
            let receipt = JournalledReceipt {
                id: pending.id,
                amount: pending.amount,
                balance: now.balance,
                sequence: now.sequence,
                signature: Vec::new(),
            };
            ledger.debit_done(pending.id, receipt.clone()).await.map_err(journal)?;
            return Ok(receipt);
        }
        if now.sequence != view.sequence {
            return Err(Stop::Fault(format!(
                "the card's sequence is {} where the journal expects {} or {}",
                now.sequence,
                view.sequence,
                view.sequence.wrapping_add(1)
            )));
        }
        nonce
    } else {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|e| Stop::Offline(format!("no randomness for a nonce: {e}")))?;
        ledger.debit_sent(pending.id, nonce).await.map_err(journal)?;
        nonce
    };
    let debit = Debit {
        amount: pending.amount,
        digest: pending.digest,
        nonce,
    };
    let receipt = match ai_applet::debit(modem, debit).await {
        Ok(receipt) => receipt,
        Err(EsimError::Ai(why @ (AppletError::InsufficientBalance | AppletError::NotActive))) => {
            return Err(Stop::Exhausted(why));
        }
        Err(EsimError::Ai(why)) => {
            return Err(Stop::Fault(format!("the card refused debit {}: {why}", pending.id)));
        }
        Err(e) => return Err(offline(&e)),
    };
    verify(key, &view, &debit, &receipt).map_err(Stop::Fault)?;
    let journalled = JournalledReceipt {
        id: pending.id,
        amount: pending.amount,
        balance: receipt.balance,
        sequence: receipt.sequence,
        signature: receipt.signature.to_vec(),
    };
    ledger
        .debit_done(pending.id, journalled.clone())
        .await
        .map_err(journal)?;
    tracing::info!(
        debit = pending.id,
        amount = pending.amount,
        balance = receipt.balance,
        sequence = receipt.sequence,
        "the card debited; receipt verified"
    );
    Ok(journalled)
}

fn offline(e: &EsimError) -> Stop {
    Stop::Offline(chain(e))
}

/// A receipt is good when it is the next one, takes exactly the amount, and the card's account
/// key signed this card, amount, digest, nonce, balance and sequence.
pub fn verify(key: &VerifyingKey, before: &CardView, debit: &Debit, receipt: &Receipt) -> Result<(), String> {
    let next = before.sequence.wrapping_add(1);
    if receipt.sequence != next {
        return Err(format!(
            "the card's receipt has sequence {} where {next} is next: a replayed or forged receipt",
            receipt.sequence
        ));
    }
    let expected = before.balance.saturating_sub(debit.amount);
    if receipt.balance != expected {
        return Err(format!(
            "the card's receipt says balance {} where {} less {} is {expected}",
            receipt.balance, before.balance, debit.amount
        ));
    }
    let message = receipt_message(&before.card_id, debit, receipt.balance, receipt.sequence);
    let signature = Signature::from_slice(&receipt.signature)
        .map_err(|_| "the card's receipt signature is not a P-256 signature".to_owned())?;
    key.verify(&message, &signature)
        .map_err(|_| "the card's receipt does not verify against its account key: a forged receipt".to_owned())
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::{SigningKey, signature::Signer as _};

    use super::*;

    fn signed(key: &SigningKey, view: &CardView, debit: &Debit, balance: u64, sequence: u32) -> Receipt {
        let sig: Signature = key.sign(&receipt_message(&view.card_id, debit, balance, sequence));
        Receipt {
            balance,
            sequence,
            signature: sig.to_bytes().into(),
        }
    }

    #[test]
    fn only_the_next_honest_receipt_verifies() {
        let card = SigningKey::from_slice(&[0x42; 32]).unwrap();
        let other = SigningKey::from_slice(&[0x43; 32]).unwrap();
        let key = VerifyingKey::from(&card);
        let view = CardView {
            card_id: [0x89; 16],
            balance: 1_000,
            sequence: 7,
            allowance: 100,
            max_debit: 500,
        };
        let debit = Debit {
            amount: 30,
            digest: [1; 32],
            nonce: [2; 16],
        };
        assert_eq!(
            verify(&key, &view, &debit, &signed(&card, &view, &debit, 970, 8)),
            Ok(())
        );
        let forged = signed(&other, &view, &debit, 970, 8);
        assert!(verify(&key, &view, &debit, &forged).unwrap_err().contains("forged"));
        let replayed = signed(&card, &view, &debit, 970, 7);
        assert!(verify(&key, &view, &debit, &replayed).unwrap_err().contains("replayed"));
        let short = signed(&card, &view, &debit, 980, 8);
        assert!(verify(&key, &view, &debit, &short).unwrap_err().contains("balance"));
        let another_nonce = Debit {
            nonce: [3; 16],
            ..debit
        };
        let moved = signed(&card, &view, &another_nonce, 970, 8);
        assert!(
            verify(&key, &view, &debit, &moved).is_err(),
            "a receipt for another debit"
        );
    }
}
