//! The exact byte strings the card and the operator sign (docs/ai-applet.md, "Signed
//! messages"). The signatures are ECDSA P-256 over SHA-256 of these bytes, raw r‖s; the
//! arithmetic lives with the callers so this crate stays dependency-free.

use crate::{CardId, Debit, Voucher};

/// The domain tag that starts a debit receipt.
pub const DEBIT_TAG: &[u8; 15] = b"AIESIM-DEBIT-V1";
/// The domain tag that starts a top-up receipt.
pub const TOP_UP_TAG: &[u8; 15] = b"AIESIM-TOPUP-V1";
/// The domain tag that starts the operator's voucher message.
pub const VOUCHER_TAG: &[u8; 17] = b"AIESIM-VOUCHER-V1";

/// The length of [`receipt_message`]: 15 + 16 + 8 + 32 + 16 + 8 + 4.
pub const RECEIPT_MESSAGE_LEN: usize = 99;
/// The length of [`top_up_message`]: 15 + 16 + 16 + 8 + 8 + 4.
pub const TOP_UP_MESSAGE_LEN: usize = 67;
/// The length of [`voucher_message`]: 17 + 16 + 8 + 8 + 16.
pub const VOUCHER_MESSAGE_LEN: usize = 65;

/// What the card signs for a DEBIT: `"AIESIM-DEBIT-V1" ‖ card id ‖ amount ‖ digest ‖ nonce ‖
/// new balance ‖ sequence`, numbers big-endian.
pub fn receipt_message(card_id: &CardId, debit: &Debit, new_balance: u64, sequence: u32) -> Vec<u8> {
    let Debit { amount, digest, nonce } = debit;
    let mut out = Vec::with_capacity(RECEIPT_MESSAGE_LEN);
    out.extend_from_slice(DEBIT_TAG);
    out.extend_from_slice(card_id);
    out.extend_from_slice(&amount.to_be_bytes());
    out.extend_from_slice(digest);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&new_balance.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out
}

/// What the card signs for a TOP-UP: `"AIESIM-TOPUP-V1" ‖ card id ‖ voucher id ‖ amount ‖
/// new balance ‖ sequence`.
pub fn top_up_message(
    card_id: &CardId,
    voucher_id: &[u8; 16],
    amount: u64,
    new_balance: u64,
    sequence: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOP_UP_MESSAGE_LEN);
    out.extend_from_slice(TOP_UP_TAG);
    out.extend_from_slice(card_id);
    out.extend_from_slice(voucher_id);
    out.extend_from_slice(&amount.to_be_bytes());
    out.extend_from_slice(&new_balance.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out
}

/// What the operator signs in a voucher: `"AIESIM-VOUCHER-V1" ‖ voucher id ‖ amount ‖ expiry ‖
/// target card id`; the voucher's own signature is not part of it.
pub fn voucher_message(voucher: &Voucher) -> Vec<u8> {
    let Voucher {
        id,
        amount,
        expiry,
        card_id,
        signature: _,
    } = voucher;
    let mut out = Vec::with_capacity(VOUCHER_MESSAGE_LEN);
    out.extend_from_slice(VOUCHER_TAG);
    out.extend_from_slice(id);
    out.extend_from_slice(&amount.to_be_bytes());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(card_id);
    out
}
