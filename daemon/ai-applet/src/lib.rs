//! The AI applet's APDU protocol (docs/ai-applet.md): a token account with signed receipts,
//! operator-signed top-up vouchers and the operator's endpoint list. Bytes in, typed values
//! out, no I/O, and no cryptography: [`receipt_message`], [`top_up_message`] and
//! [`voucher_message`] give the exact bytes that are signed, and the callers sign and verify.
//!
//! The daemon builds [`Request`]s and parses [`Balance`], [`Receipt`], [`Endpoints`],
//! [`AccountKey`] and [`AppletInfo`]; the simulated applet reads the requests back with
//! [`Request::from_command`] and answers with the same types, failing with [`AppletError`].

mod command;
mod message;
mod response;

pub use command::{CLA, DEBIT_DATA_LEN, Request, RequestError, TOP_UP_DATA_LEN, ins};
pub use message::{
    DEBIT_TAG, RECEIPT_MESSAGE_LEN, TOP_UP_MESSAGE_LEN, TOP_UP_TAG, VOUCHER_MESSAGE_LEN, VOUCHER_TAG, receipt_message,
    top_up_message, voucher_message,
};
pub use response::{
    AccountKey, AppletError, AppletInfo, Balance, CardState, Endpoint, Endpoints, Model, Receipt, ResponseError, Tier,
    UNIT_TOKENS,
};

/// The applet's AID: `F0` opens ISO 7816-5's unregistered proprietary category, then "AIESIM"
/// in ASCII and the protocol version 01. The daemon makes it configurable.
pub const AID: [u8; 8] = [0xF0, 0x41, 0x49, 0x45, 0x53, 0x49, 0x4D, 0x01];

/// The card's 16-byte identity in receipts and vouchers: the eUICC's EID.
pub type CardId = [u8; 16];

/// What the daemon asks DEBIT to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Debit {
    /// Tokens, at least 1 and at most [`AppletInfo::max_debit`].
    pub amount: u64,
    /// SHA-256 of the request being paid for, so the receipt names it.
    pub digest: [u8; 32],
    /// Fresh random bytes from the daemon, so a receipt cannot be replayed as another's.
    pub nonce: [u8; 16],
}

/// An operator-signed voucher that TOP-UP redeems once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Voucher {
    /// Unique per voucher; the card refuses one it has seen.
    pub id: [u8; 16],
    /// Tokens to add, at least 1.
    pub amount: u64,
    /// The last Unix second at which it may be redeemed.
    pub expiry: u64,
    /// The only card that accepts it.
    pub card_id: CardId,
    /// The operator key's ECDSA P-256 signature over [`voucher_message`], r‖s.
    pub signature: [u8; 64],
}

#[cfg(test)]
mod tests;
