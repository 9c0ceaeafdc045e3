//! The AI applet (docs/ai-applet.md): the token account with receipts signed by the card's
//! account key, operator-signed vouchers redeemed once, and the operator's endpoint list.

use std::path::PathBuf;

use aiesim_ai_applet::{
    AccountKey, AppletError, AppletInfo, Balance, CardId, CardState, Debit, Endpoint, Endpoints, Receipt, Request,
    RequestError, UNIT_TOKENS, Voucher, receipt_message, top_up_message, voucher_message,
};
use aiesim_apdu::Command;
use p256::ecdsa::VerifyingKey;

use super::{
    AiProbe, Error, Outbox, ReceiptMode, answer,
    card_state::{self, Account},
    fci, is_get_response, keys, status,
};
use crate::world::{Applet, sw};

/// The largest amount one DEBIT may take, by default.
pub const MAX_DEBIT: u64 = 50_000;
/// What the operator lets the daemon spend offline before reconciling, by default.
pub const OFFLINE_ALLOWANCE: u64 = 5_000;
/// How many redeemed voucher ids the card remembers before raising the replay floor.
const VOUCHER_STORE: usize = 64;

/// What the applet is personalised with.
pub struct Setup {
    pub card_id: CardId,
    /// The balance of a fresh account (a stored one keeps its own).
    pub tokens: u64,
    pub operator_key: Option<keys::Point>,
    pub endpoints: Vec<Endpoint>,
    pub card_state: Option<PathBuf>,
    pub offline_allowance: u64,
    pub max_debit: u64,
    pub probe: AiProbe,
}

pub struct AiApplet {
    card_id: CardId,
    key: keys::CardKey,
    operator: Option<VerifyingKey>,
    endpoints: Vec<u8>,
    account: Account,
    card_state: Option<PathBuf>,
    offline_allowance: u64,
    max_debit: u64,
    probe: AiProbe,
    /// The last receipt given, for the replay fault.
    last_receipt: Option<Receipt>,
    outbox: Outbox,
}

impl AiApplet {
    pub fn new(setup: Setup) -> Result<Self, Error> {
        let Setup {
            card_id,
            tokens,
            operator_key,
            endpoints,
            card_state,
            offline_allowance,
            max_debit,
            probe,
        } = setup;
        let operator = operator_key
            .map(|point| VerifyingKey::from_sec1_bytes(&point).map_err(|_| Error::OperatorKey))
            .transpose()?;
        let endpoints = Endpoints { endpoints }.encode().map_err(Error::Encode)?;
        let stored = card_state.as_deref().map(card_state::load).transpose()?.flatten();
        let (account, key) = if let Some(stored) = stored {
            stored
        } else {
            let (account, key) = (Account::new(tokens), keys::CardKey::generate());
            // Personalisation writes the fresh account, so a restart finds the same key.
            if let Some(path) = &card_state {
                card_state::save(path, &account, &key)?;
            }
            (account, key)
        };
        probe.note(account.balance, account.sequence, false);
        Ok(Self {
            card_id,
            key,
            operator,
            endpoints,
            account,
            card_state,
            offline_allowance,
            max_debit,
            probe,
            last_receipt: None,
            outbox: Outbox::default(),
        })
    }

    fn run(&mut self, request: &Request) -> Result<Vec<u8>, AppletError> {
        Ok(match request {
            Request::GetBalance => {
                let Account {
                    balance,
                    sequence,
                    state,
                    ..
                } = self.account;
                Balance {
                    balance,
                    sequence,
                    unit: UNIT_TOKENS,
                    state,
                }
                .encode()
            }
            Request::Debit(debit) => {
                let honest = self.debit(debit)?;
                let given = match self.probe.get().receipts {
                    ReceiptMode::Honest => honest,
                    ReceiptMode::Forge => {
                        let mut forged = honest;
                        forged.signature[17] ^= 0x01;
                        forged
                    }
                    ReceiptMode::Replay => self.last_receipt.unwrap_or(honest),
                };
                self.last_receipt = Some(honest);
                given.encode()
            }
            Request::TopUp { voucher, host_time } => self.top_up(voucher, *host_time)?.encode(),
            Request::GetEndpoints => self.endpoints.clone(),
            Request::GetAccountKey => AccountKey(self.key.public()).encode(),
            Request::GetData => AppletInfo {
                version: [1, 0],
                card_id: self.card_id,
                max_debit: self.max_debit,
                offline_allowance: self.offline_allowance,
            }
            .encode()
            .map_err(|_| AppletError::Internal)?,
        })
    }

    fn debit(&mut self, debit: &Debit) -> Result<Receipt, AppletError> {
        let Debit { amount, .. } = *debit;
        if self.account.state != CardState::Active {
            return Err(AppletError::NotActive);
        }
        if amount == 0 || amount > self.max_debit {
            return Err(AppletError::IncorrectData);
        }
        let balance = self
            .account
            .balance
            .checked_sub(amount)
            .ok_or(AppletError::InsufficientBalance)?;
        let sequence = self.account.sequence.checked_add(1).ok_or(AppletError::Internal)?;
        let signature = self.key.sign(&receipt_message(&self.card_id, debit, balance, sequence));
        self.commit(Account {
            balance,
            sequence,
            ..self.account.clone()
        })?;
        Ok(Receipt {
            balance,
            sequence,
            signature,
        })
    }

    fn top_up(&mut self, voucher: &Voucher, host_time: u64) -> Result<Receipt, AppletError> {
        let Voucher {
            id,
            amount,
            expiry,
            card_id,
            signature,
        } = voucher;
        if self.account.state == CardState::Inactive {
            return Err(AppletError::NotActive);
        }
        if *amount == 0 || *card_id != self.card_id {
            return Err(AppletError::IncorrectData);
        }
        // Without the operator's key no voucher can be shown genuine.
        let operator = self.operator.as_ref().ok_or(AppletError::BadSignature)?;
        if !keys::verify(operator, &voucher_message(voucher), signature) {
            return Err(AppletError::BadSignature);
        }
        let now = host_time.max(self.account.highest_time);
        if *expiry <= self.account.replay_floor || self.account.vouchers.iter().any(|(seen, _)| seen == id) {
            return Err(AppletError::VoucherReplayed);
        }
        if *expiry < now {
            return Err(AppletError::VoucherExpired);
        }
        let balance = self
            .account
            .balance
            .checked_add(*amount)
            .ok_or(AppletError::BalanceOverflow)?;
        let sequence = self.account.sequence.checked_add(1).ok_or(AppletError::Internal)?;
        let mut account = Account {
            balance,
            sequence,
            highest_time: now,
            ..self.account.clone()
        };
        account.vouchers.push_back((*id, *expiry));
        if account.vouchers.len() > VOUCHER_STORE {
            if let Some((_, evicted)) = account.vouchers.pop_front() {
                account.replay_floor = account.replay_floor.max(evicted);
            }
        }
        let signature = self
            .key
            .sign(&top_up_message(&self.card_id, id, *amount, balance, sequence));
        self.commit(account)?;
        Ok(Receipt {
            balance,
            sequence,
            signature,
        })
    }

    /// Makes `account` the card's, on disk first when it persists: all or nothing.
    fn commit(&mut self, account: Account) -> Result<(), AppletError> {
        if let Some(path) = &self.card_state {
            card_state::save(path, &account, &self.key).map_err(|error| {
                tracing::error!(error = %error, "the AI applet could not store its account; the change is rolled back");
                AppletError::Internal
            })?;
        }
        let debit = account.balance < self.account.balance;
        self.probe.note(account.balance, account.sequence, debit);
        self.account = account;
        Ok(())
    }
}

fn request_error(error: &RequestError) -> AppletError {
    match error {
        RequestError::Channel(_) | RequestError::Class { .. } => AppletError::WrongClass,
        RequestError::UnknownInstruction { .. } => AppletError::UnknownInstruction,
        RequestError::Parameters { .. } => AppletError::WrongParameters,
        RequestError::DataLength { .. } => AppletError::WrongLength,
    }
}

impl Applet for AiApplet {
    fn name(&self) -> &'static str {
        "ai"
    }

    fn aid(&self) -> &[u8] {
        &aiesim_ai_applet::AID
    }

    fn select(&mut self) -> Vec<u8> {
        self.outbox.clear();
        fci(&aiesim_ai_applet::AID)
    }

    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Ok(command) = Command::decode(apdu) else {
            return status(sw::WRONG_LENGTH);
        };
        if is_get_response(&command) {
            let le = command.le.map_or(256, |le| le.get() as usize);
            return self.outbox.get_response(le);
        }
        self.outbox.clear();
        let result = Request::from_command(&command)
            .map_err(|error| request_error(&error))
            .and_then(|request| self.run(&request));
        match result {
            Ok(data) => self.outbox.send(data),
            Err(error) => answer(Vec::new(), error.status_word().0),
        }
    }
}

#[cfg(test)]
mod tests {
    use aiesim_ai_applet::{Model, Tier};
    use aiesim_apdu::{Response, StatusWord};
    use p256::ecdsa::{Signature, SigningKey, signature::Signer as _, signature::Verifier as _};
    use rand_core::OsRng;

    use super::*;
    use crate::euicc::{
        Config,
        test_support::{Card, configured, world},
    };

    const AID: [u8; 8] = aiesim_ai_applet::AID;
    const NOW: u64 = 1_767_225_600;

    fn ask(card: &mut Card, request: &Request) -> Response {
        card.send(&request.to_command(card.channel).unwrap())
    }

    fn balance(card: &mut Card) -> Balance {
        Balance::decode(&ask(card, &Request::GetBalance).data).unwrap()
    }

    fn account_key(card: &mut Card) -> VerifyingKey {
        let key = AccountKey::decode(&ask(card, &Request::GetAccountKey).data).unwrap();
        VerifyingKey::from_sec1_bytes(&key.0).unwrap()
    }

    fn debit(amount: u64) -> Debit {
        Debit {
            amount,
            digest: [0x11; 32],
            nonce: [0x22; 16],
        }
    }

    fn operator() -> (SigningKey, Config) {
        let operator = SigningKey::random(&mut OsRng);
        let mut point = [0; 65];
        point.copy_from_slice(operator.verifying_key().to_encoded_point(false).as_bytes());
        let config = Config {
            operator_key: Some(point),
            ..Config::default()
        };
        (operator, config)
    }

    fn voucher(operator: &SigningKey, id: u8, amount: u64, expiry: u64, card_id: CardId) -> Voucher {
        let mut voucher = Voucher {
            id: [id; 16],
            amount,
            expiry,
            card_id,
            signature: [0; 64],
        };
        let signature: Signature = operator.sign(&voucher_message(&voucher));
        voucher.signature = signature.to_bytes().into();
        voucher
    }

    fn top_up(card: &mut Card, voucher: Voucher) -> Response {
        ask(
            card,
            &Request::TopUp {
                voucher,
                host_time: NOW,
            },
        )
    }

    #[test]
    fn debits_are_signed_receipts_in_sequence() {
        let mut world = world();
        let card_id = world.uicc.eid;
        let mut card = Card::open(&mut world, &AID);
        let info = AppletInfo::decode(&ask(&mut card, &Request::GetData).data).unwrap();
        assert_eq!(
            (info.card_id, info.version, info.max_debit),
            (card_id, [1, 0], MAX_DEBIT)
        );
        let key = account_key(&mut card);
        assert_eq!(
            balance(&mut card),
            Balance {
                balance: 100_000,
                sequence: 0,
                unit: UNIT_TOKENS,
                state: CardState::Active
            }
        );
        for (sequence, expected) in [(1, 98_500), (2, 97_000)] {
            let response = ask(&mut card, &Request::Debit(debit(1500)));
            assert_eq!(response.sw, StatusWord::OK);
            let receipt = Receipt::decode(&response.data).unwrap();
            assert_eq!((receipt.balance, receipt.sequence), (expected, sequence));
            let message = receipt_message(&card_id, &debit(1500), receipt.balance, receipt.sequence);
            let signature = Signature::from_slice(&receipt.signature).unwrap();
            key.verify(&message, &signature).unwrap();
            // The receipt binds the amount: the same signature over another amount fails.
            let other = receipt_message(&card_id, &debit(1501), receipt.balance, receipt.sequence);
            assert!(key.verify(&other, &signature).is_err());
        }
        assert_eq!(balance(&mut card).sequence, 2);
    }

    #[test]
    fn overdraws_and_bad_commands_change_nothing() {
        let mut world = configured(&Config {
            tokens: 1000,
            ..Config::default()
        });
        let mut card = Card::open(&mut world, &AID);
        let before = balance(&mut card);
        for (amount, sw) in [
            (1001, AppletError::InsufficientBalance),
            (0, AppletError::IncorrectData),
            (MAX_DEBIT + 1, AppletError::IncorrectData),
        ] {
            assert_eq!(ask(&mut card, &Request::Debit(debit(amount))).sw, sw.status_word());
        }
        assert_eq!(balance(&mut card), before);
        assert_eq!(ask(&mut card, &Request::Debit(debit(1000))).sw, StatusWord::OK);
        assert_eq!(balance(&mut card).balance, 0);

        let mut command = Request::GetBalance.to_command(card.channel).unwrap();
        command.cla &= 0x7F;
        assert_eq!(card.send(&command).sw, StatusWord::CLA_NOT_SUPPORTED);
        let mut command = Request::GetBalance.to_command(card.channel).unwrap();
        command.p2 = 1;
        assert_eq!(card.send(&command).sw, StatusWord::INCORRECT_P1_P2);
        let mut command = Request::Debit(debit(1)).to_command(card.channel).unwrap();
        command.data.pop();
        assert_eq!(card.send(&command).sw, StatusWord::WRONG_LENGTH);
        // Without an operator key, no voucher is genuine.
        let voucher = voucher(&SigningKey::random(&mut OsRng), 1, 10, NOW, [0; 16]);
        let voucher = Voucher {
            card_id: card.world().uicc.eid,
            ..voucher
        };
        assert_eq!(top_up(&mut card, voucher).sw, AppletError::BadSignature.status_word());
    }

    #[test]
    fn vouchers_top_up_once_and_only_when_genuine() {
        let (operator, config) = operator();
        let mut world = configured(&config);
        let card_id = world.uicc.eid;
        let mut card = Card::open(&mut world, &AID);
        let key = account_key(&mut card);

        let good = voucher(&operator, 1, 5000, NOW + 600, card_id);
        let response = top_up(&mut card, good);
        assert_eq!(response.sw, StatusWord::OK);
        let receipt = Receipt::decode(&response.data).unwrap();
        assert_eq!((receipt.balance, receipt.sequence), (105_000, 1));
        let message = top_up_message(&card_id, &good.id, 5000, receipt.balance, receipt.sequence);
        key.verify(&message, &Signature::from_slice(&receipt.signature).unwrap())
            .unwrap();

        let refused = |card: &mut Card, voucher| top_up(card, voucher).sw;
        assert_eq!(refused(&mut card, good), AppletError::VoucherReplayed.status_word());
        let forged = voucher(&SigningKey::random(&mut OsRng), 2, 5000, NOW + 600, card_id);
        assert_eq!(refused(&mut card, forged), AppletError::BadSignature.status_word());
        let tampered = Voucher {
            amount: 50_000,
            ..voucher(&operator, 3, 5000, NOW + 600, card_id)
        };
        assert_eq!(refused(&mut card, tampered), AppletError::BadSignature.status_word());
        let expired = voucher(&operator, 4, 5000, NOW - 1, card_id);
        assert_eq!(refused(&mut card, expired), AppletError::VoucherExpired.status_word());
        let elsewhere = voucher(&operator, 5, 5000, NOW + 600, [0x77; 16]);
        assert_eq!(refused(&mut card, elsewhere), AppletError::IncorrectData.status_word());
        assert_eq!(
            balance(&mut card),
            Balance {
                balance: 105_000,
                sequence: 1,
                unit: UNIT_TOKENS,
                state: CardState::Active
            }
        );
        // The card's clock only moves forward: an earlier host time does not revive a voucher.
        let late = voucher(&operator, 6, 10, NOW - 1, card_id);
        let earlier = Request::TopUp {
            voucher: late,
            host_time: NOW - 100,
        };
        assert_eq!(ask(&mut card, &earlier).sw, AppletError::VoucherExpired.status_word());
    }

    #[test]
    fn evicted_vouchers_stay_refused_below_the_replay_floor() {
        let (operator, config) = operator();
        let mut world = configured(&config);
        let card_id = world.uicc.eid;
        let mut card = Card::open(&mut world, &AID);
        let first = voucher(&operator, 0, 1, NOW + 1, card_id);
        assert_eq!(top_up(&mut card, first).sw, StatusWord::OK);
        for id in 1..=u8::try_from(VOUCHER_STORE).unwrap() {
            let next = voucher(&operator, id, 1, NOW + 1000 + u64::from(id), card_id);
            assert_eq!(top_up(&mut card, next).sw, StatusWord::OK);
        }
        // The first id left the store, but its expiry is now the floor.
        assert_eq!(top_up(&mut card, first).sw, AppletError::VoucherReplayed.status_word());
        let at_floor = voucher(&operator, 200, 1, NOW + 1, card_id);
        assert_eq!(
            top_up(&mut card, at_floor).sw,
            AppletError::VoucherReplayed.status_word()
        );
    }

    #[test]
    fn long_endpoint_lists_come_through_get_response() {
        let endpoints: Vec<Endpoint> = (1..=4)
            .map(|n| Endpoint {
                name: format!("endpoint-{n}"),
                url: format!("http://10.0.{n}.1:8080/v1/with/a/fairly/long/path"),
                tier: Tier::from_code(n),
                models: vec![
                    Model {
                        name: "smollm2-135m".into(),
                        context_window: 8192,
                        max_output: 512,
                        price_per_1k: 10,
                    },
                    Model {
                        name: "a-much-larger-model".into(),
                        context_window: 131_072,
                        max_output: 4096,
                        price_per_1k: 250,
                    },
                ],
            })
            .collect();
        let mut world = configured(&Config {
            endpoints: endpoints.clone(),
            ..Config::default()
        });
        let mut card = Card::open(&mut world, &AID);
        let command = Request::GetEndpoints.to_command(card.channel).unwrap();
        let raw = card.world().uicc.transmit(1, &command.encode().unwrap()).unwrap();
        assert_eq!(raw[raw.len() - 2], 0x61, "more than 256 bytes announce the rest");
        let response = ask(&mut card, &Request::GetEndpoints);
        assert_eq!(response.sw, StatusWord::OK);
        assert!(response.data.len() > 256);
        assert_eq!(Endpoints::decode(&response.data).unwrap().endpoints, endpoints);

        // The default list: one metro endpoint on the test cloud.
        let mut default = crate::euicc::test_support::world();
        let mut card = Card::open(&mut default, &AID);
        let list = Endpoints::decode(&ask(&mut card, &Request::GetEndpoints).data).unwrap();
        assert_eq!(list.endpoints.len(), 1);
        assert_eq!(
            (list.endpoints[0].url.as_str(), list.endpoints[0].tier),
            ("http://127.0.0.1:8080/v1", Tier::Metro)
        );
    }

    #[test]
    fn a_stored_account_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (operator, config) = operator();
        let config = Config {
            card_state: Some(dir.path().join("card-state")),
            tokens: 2000,
            ..config
        };
        let mut world = configured(&config);
        let card_id = world.uicc.eid;
        let mut card = Card::open(&mut world, &AID);
        let key = account_key(&mut card).to_encoded_point(false);
        assert_eq!(ask(&mut card, &Request::Debit(debit(500))).sw, StatusWord::OK);
        let redeemed = voucher(&operator, 9, 100, NOW + 60, card_id);
        assert_eq!(top_up(&mut card, redeemed).sw, StatusWord::OK);
        let before = balance(&mut card);
        assert_eq!((before.balance, before.sequence), (1600, 2));

        // A restarted simulator: a new world from the same options.
        let mut world = configured(&Config { tokens: 99, ..config });
        let mut card = Card::open(&mut world, &AID);
        assert_eq!(balance(&mut card), before, "the stored balance wins over --tokens");
        assert_eq!(account_key(&mut card).to_encoded_point(false), key);
        assert_eq!(
            top_up(&mut card, redeemed).sw,
            AppletError::VoucherReplayed.status_word()
        );
        let receipt = Receipt::decode(&ask(&mut card, &Request::Debit(debit(100))).data).unwrap();
        assert_eq!(receipt.sequence, 3);
    }
}
