//! The journal's records (prost messages, written by hand: no `.proto` build step).
//!
//! Field numbers are the format: never reuse one. A reader skips fields it does not know, so
//! later versions may add some.

/// One journal record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    Reserve(Reserve),
    #[prost(message, tag = "2")]
    Progress(Progress),
    #[prost(message, tag = "3")]
    Commit(Commit),
    #[prost(message, tag = "4")]
    DebitSent(DebitSent),
    #[prost(message, tag = "5")]
    DebitDone(DebitDone),
    #[prost(message, tag = "6")]
    Snapshot(Snapshot),
    #[prost(message, tag = "7")]
    TopUp(TopUpDone),
    #[prost(message, tag = "8")]
    Policy(AppPolicy),
}

/// An app's policy as an administrator left it (every key unset: the configured defaults).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AppPolicy {
    #[prost(string, tag = "1")]
    pub app: String,
    #[prost(uint64, optional, tag = "2")]
    pub total: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub daily: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    pub monthly: Option<u64>,
    #[prost(uint64, optional, tag = "5")]
    pub per_minute: Option<u64>,
}

/// Spend in the latest calendar windows: `day` is `yyyymmdd`, `month` `yyyymm`, local time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WindowSpent {
    #[prost(uint32, tag = "1")]
    pub day: u32,
    #[prost(uint64, tag = "2")]
    pub day_spent: u64,
    #[prost(uint32, tag = "3")]
    pub month: u32,
    #[prost(uint64, tag = "4")]
    pub month_spent: u64,
}

/// A voucher the card redeemed, with its verified receipt.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopUpDone {
    #[prost(bytes = "vec", tag = "1")]
    pub card_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub voucher_id: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub amount: u64,
    #[prost(uint64, tag = "4")]
    pub balance: u64,
    #[prost(uint32, tag = "5")]
    pub sequence: u32,
    #[prost(bytes = "vec", tag = "6")]
    pub signature: Vec<u8>,
}

/// Tokens held for a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reserve {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub app: String,
    #[prost(uint64, tag = "3")]
    pub amount: u64,
    /// Account tokens per 1000 model tokens, for the card's debit.
    #[prost(uint64, tag = "4")]
    pub price_per_1k: u64,
    /// SHA-256 of the request, named by the card's receipt.
    #[prost(bytes = "vec", tag = "5")]
    pub digest: Vec<u8>,
    /// The calendar windows it was admitted in (`yyyymmdd`, `yyyymm`): its charge counts there.
    #[prost(uint32, tag = "6")]
    pub day: u32,
    #[prost(uint32, tag = "7")]
    pub month: u32,
}

/// Tokens delivered so far, written before they reach the app: a crash charges at least these.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Progress {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub used: u64,
}

/// A request's end: `charged` tokens spent, the rest released; `debit` account tokens owed to
/// the card `card_id` (0: the request is not billed to a card).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Commit {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub charged: u64,
    #[prost(uint64, tag = "3")]
    pub debit: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub card_id: Vec<u8>,
}

/// A DEBIT is about to go to the card with this nonce (resent as is after a crash).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DebitSent {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub nonce: Vec<u8>,
}

/// The card's verified receipt for a debit (an empty signature: the card completed it but the
/// receipt was lost in a crash, as its sequence showed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DebitDone {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub balance: u64,
    #[prost(uint32, tag = "3")]
    pub sequence: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub card_id: Vec<u8>,
    #[prost(uint64, tag = "6")]
    pub amount: u64,
    #[prost(bytes = "vec", tag = "7")]
    pub digest: Vec<u8>,
    #[prost(bytes = "vec", tag = "8")]
    pub nonce: Vec<u8>,
}

/// What compaction keeps: everything settled folded into totals.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    #[prost(uint64, tag = "1")]
    pub next_id: u64,
    #[prost(message, repeated, tag = "2")]
    pub apps: Vec<AppSpent>,
    #[prost(uint64, tag = "3")]
    pub device_spent: u64,
    #[prost(message, optional, tag = "4")]
    pub card: Option<CardRecord>,
    #[prost(message, repeated, tag = "5")]
    pub pending: Vec<PendingRecord>,
    /// The newest receipts, oldest first, for reconciliation.
    #[prost(message, repeated, tag = "6")]
    pub receipts: Vec<DebitDone>,
    #[prost(message, optional, tag = "7")]
    pub device_windows: Option<WindowSpent>,
    #[prost(message, repeated, tag = "8")]
    pub policies: Vec<AppPolicy>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppSpent {
    #[prost(string, tag = "1")]
    pub app: String,
    #[prost(uint64, tag = "2")]
    pub spent: u64,
    #[prost(message, optional, tag = "3")]
    pub windows: Option<WindowSpent>,
}

/// The card as last verified.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CardRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub card_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub balance: u64,
    #[prost(uint32, tag = "3")]
    pub sequence: u32,
    #[prost(uint64, tag = "4")]
    pub allowance: u64,
    #[prost(uint64, tag = "5")]
    pub max_debit: u64,
}

/// A debit owed to a card and not yet receipted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub amount: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub digest: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub card_id: Vec<u8>,
    /// Empty until the DEBIT was sent.
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
}
