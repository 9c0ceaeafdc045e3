//! The applet's answers, parsed by the daemon and built by the simulated applet, and the
//! status words it fails with.

use aiesim_apdu::{
    StatusWord,
    tlv::{self, Tag, Tlv, TlvError, Writer},
};

use crate::CardId;

/// Why response data is not what the applet answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the response is {len} bytes long instead of {expected}")]
    Length { len: usize, expected: usize },
    #[error("the response is not well-formed BER-TLV")]
    Tlv(#[source] TlvError),
    #[error("expected tag {expected} but found {found}")]
    UnexpectedTag { expected: Tag, found: Tag },
    #[error("the mandatory field {tag} is missing from {parent}")]
    Missing { tag: Tag, parent: Tag },
    #[error("field {tag} is {len} bytes long, but it must be {expected}")]
    FieldLength {
        tag: Tag,
        len: usize,
        expected: &'static str,
    },
    #[error("field {tag} is not valid UTF-8")]
    Utf8 { tag: Tag },
    #[error("the account key is not an uncompressed P-256 point (65 bytes starting 04)")]
    NotUncompressedPoint,
}

impl From<TlvError> for ResponseError {
    fn from(error: TlvError) -> Self {
        Self::Tlv(error)
    }
}

fn exact<const N: usize>(data: &[u8]) -> Result<&[u8; N], ResponseError> {
    data.try_into().map_err(|_| ResponseError::Length {
        len: data.len(),
        expected: N,
    })
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0; 8];
    out.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(out)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut out = [0; 4];
    out.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(out)
}

/// The account's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardState {
    /// 00: personalised but not yet activated by the operator; nothing but reads works.
    Inactive,
    /// 01: debits and top-ups work.
    Active,
    /// 02: blocked by the operator; debits refused, top-ups still accepted.
    Blocked,
    /// A state this version does not know.
    Other(u8),
}

impl CardState {
    /// The state byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Inactive => 0,
            Self::Active => 1,
            Self::Blocked => 2,
            Self::Other(code) => code,
        }
    }

    /// The state of a state byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Inactive,
            1 => Self::Active,
            2 => Self::Blocked,
            other => Self::Other(other),
        }
    }
}

/// The unit byte of GET BALANCE: tokens, the only unit version 1 defines.
pub const UNIT_TOKENS: u8 = 0x01;

/// GET BALANCE: `balance(8) ‖ sequence(4) ‖ unit(1) ‖ state(1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Balance {
    /// Tokens left.
    pub balance: u64,
    /// The sequence number of the last debit or top-up (0 before the first).
    pub sequence: u32,
    /// [`UNIT_TOKENS`].
    pub unit: u8,
    /// Whether the account works.
    pub state: CardState,
}

impl Balance {
    /// The response's length.
    pub const LEN: usize = 14;

    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let Self {
            balance,
            sequence,
            unit,
            state,
        } = *self;
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&balance.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(&[unit, state.code()]);
        out
    }

    /// Decodes the response.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let bytes = exact::<{ Self::LEN }>(data)?;
        Ok(Self {
            balance: u64_at(bytes, 0),
            sequence: u32_at(bytes, 8),
            unit: bytes[12],
            state: CardState::from_code(bytes[13]),
        })
    }
}

/// DEBIT's and TOP-UP's answer: `new balance(8) ‖ sequence(4) ‖ signature r‖s(64)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The balance after the operation.
    pub balance: u64,
    /// The operation's sequence number, one more than the previous.
    pub sequence: u32,
    /// The account key's signature over [`crate::receipt_message`] or [`crate::top_up_message`].
    pub signature: [u8; 64],
}

impl Receipt {
    /// The response's length.
    pub const LEN: usize = 76;

    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let Self {
            balance,
            sequence,
            signature,
        } = self;
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&balance.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(signature);
        out
    }

    /// Decodes the response.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let bytes = exact::<{ Self::LEN }>(data)?;
        let mut signature = [0; 64];
        signature.copy_from_slice(&bytes[12..]);
        Ok(Self {
            balance: u64_at(bytes, 0),
            sequence: u32_at(bytes, 8),
            signature,
        })
    }
}

/// GET ACCOUNT KEY: the uncompressed P-256 point `04 X Y` receipts verify against.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountKey(pub [u8; 65]);

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKey(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))?;
        write!(f, ")")
    }
}

impl AccountKey {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Decodes the response.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let point = exact::<65>(data)?;
        if point[0] != 0x04 {
            return Err(ResponseError::NotUncompressedPoint);
        }
        Ok(Self(*point))
    }
}

const fn t(raw: u32) -> Tag {
    match Tag::new(raw) {
        Some(tag) => tag,
        None => panic!("invalid tag constant"),
    }
}

const INFO: Tag = t(0xE0);
const INFO_VERSION: Tag = t(0x80);
const INFO_CARD_ID: Tag = t(0x81);
const INFO_MAX_DEBIT: Tag = t(0x82);
const INFO_OFFLINE: Tag = t(0x83);
const ENDPOINTS: Tag = t(0xE1);
const ENDPOINT: Tag = t(0xA0);
const ENDPOINT_NAME: Tag = t(0x80);
const ENDPOINT_URL: Tag = t(0x81);
const ENDPOINT_TIER: Tag = t(0x82);
const MODEL: Tag = t(0xA3);
const MODEL_NAME: Tag = t(0x80);
const MODEL_CONTEXT: Tag = t(0x81);
const MODEL_MAX_OUTPUT: Tag = t(0x82);
const MODEL_PRICE: Tag = t(0x83);

fn fields(value: &[u8]) -> Result<Vec<Tlv<'_>>, ResponseError> {
    Ok(tlv::iter(value).collect::<Result<_, _>>()?)
}

fn field<'a>(fields: &[Tlv<'a>], tag: Tag, parent: Tag) -> Result<&'a [u8], ResponseError> {
    fields
        .iter()
        .find(|f| f.tag == tag)
        .map(|f| f.value)
        .ok_or(ResponseError::Missing { tag, parent })
}

fn fixed<const N: usize>(value: &[u8], tag: Tag, expected: &'static str) -> Result<[u8; N], ResponseError> {
    value.try_into().map_err(|_| ResponseError::FieldLength {
        tag,
        len: value.len(),
        expected,
    })
}

fn text(value: &[u8], tag: Tag) -> Result<String, ResponseError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| ResponseError::Utf8 { tag })
}

fn outer(data: &[u8], expected: Tag) -> Result<Tlv<'_>, ResponseError> {
    let tlv = Tlv::parse_exact(data)?;
    if tlv.tag != expected {
        return Err(ResponseError::UnexpectedTag {
            expected,
            found: tlv.tag,
        });
    }
    Ok(tlv)
}

/// GET DATA: `E0 { 80 version(2) 81 card id(16) 82 max debit(8) 83 offline allowance(8) }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppletInfo {
    /// Protocol version, major and minor: `[1, 0]` for this document.
    pub version: [u8; 2],
    /// The 16-byte identity receipts and vouchers name: the eUICC's EID.
    pub card_id: CardId,
    /// The largest amount one DEBIT may take.
    pub max_debit: u64,
    /// How many tokens the operator lets the daemon spend before it must reconcile online.
    pub offline_allowance: u64,
}

impl AppletInfo {
    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            version,
            card_id,
            max_debit,
            offline_allowance,
        } = self;
        let mut w = Writer::new();
        w.put_constructed(INFO, |info| {
            info.put(INFO_VERSION, version)?
                .put(INFO_CARD_ID, card_id)?
                .put(INFO_MAX_DEBIT, &max_debit.to_be_bytes())?
                .put(INFO_OFFLINE, &offline_allowance.to_be_bytes())?;
            Ok(())
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response; unknown fields are skipped for later versions.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let info = outer(data, INFO)?;
        let fields = fields(info.value)?;
        let get = |tag| field(&fields, tag, INFO);
        Ok(Self {
            version: fixed(get(INFO_VERSION)?, INFO_VERSION, "2 bytes")?,
            card_id: fixed(get(INFO_CARD_ID)?, INFO_CARD_ID, "16 bytes")?,
            max_debit: u64::from_be_bytes(fixed(get(INFO_MAX_DEBIT)?, INFO_MAX_DEBIT, "8 bytes")?),
            offline_allowance: u64::from_be_bytes(fixed(get(INFO_OFFLINE)?, INFO_OFFLINE, "8 bytes")?),
        })
    }
}

/// How close an endpoint sits to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// 01: in the metro edge.
    Metro,
    /// 02: a provincial data centre.
    Province,
    /// 03: a national one.
    National,
    /// A tier this version does not know.
    Other(u8),
}

impl Tier {
    /// The tier byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Metro => 1,
            Self::Province => 2,
            Self::National => 3,
            Self::Other(code) => code,
        }
    }

    /// The tier of a tier byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Metro,
            2 => Self::Province,
            3 => Self::National,
            other => Self::Other(other),
        }
    }
}

/// A model an endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    /// `80`: the name requests use.
    pub name: String,
    /// `81`: the context window in model tokens.
    pub context_window: u32,
    /// `82`: the most output tokens per request.
    pub max_output: u32,
    /// `83`: account tokens debited per 1000 model tokens.
    pub price_per_1k: u64,
}

/// One operator-provisioned endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `80`.
    pub name: String,
    /// `81`: the base URL.
    pub url: String,
    /// `82`.
    pub tier: Tier,
    /// `A3` each.
    pub models: Vec<Model>,
}

/// GET ENDPOINTS: `E1 { A0 endpoint ... }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// In the operator's order of preference.
    pub endpoints: Vec<Endpoint>,
}

impl Endpoints {
    /// Encodes the response; the applet sends it through 61xx / GET RESPONSE when over 256 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self { endpoints } = self;
        let mut w = Writer::new();
        w.put_constructed(ENDPOINTS, |list| {
            endpoints.iter().try_for_each(|endpoint| {
                let Endpoint {
                    name,
                    url,
                    tier,
                    models,
                } = endpoint;
                list.put_constructed(ENDPOINT, |e| {
                    e.put(ENDPOINT_NAME, name.as_bytes())?
                        .put(ENDPOINT_URL, url.as_bytes())?
                        .put(ENDPOINT_TIER, &[tier.code()])?;
                    models.iter().try_for_each(|model| {
                        let Model {
                            name,
                            context_window,
                            max_output,
                            price_per_1k,
                        } = model;
                        e.put_constructed(MODEL, |m| {
                            m.put(MODEL_NAME, name.as_bytes())?
                                .put(MODEL_CONTEXT, &context_window.to_be_bytes())?
                                .put(MODEL_MAX_OUTPUT, &max_output.to_be_bytes())?
                                .put(MODEL_PRICE, &price_per_1k.to_be_bytes())?;
                            Ok(())
                        })
                        .map(drop)
                    })
                })
                .map(drop)
            })
        })?;
        Ok(w.into_bytes())
    }

    /// Decodes the response; unknown fields and entries are skipped for later versions.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let list = outer(data, ENDPOINTS)?;
        let mut endpoints = Vec::new();
        for entry in fields(list.value)? {
            if entry.tag != ENDPOINT {
                continue;
            }
            let e = fields(entry.value)?;
            let mut models = Vec::new();
            for model in e.iter().filter(|f| f.tag == MODEL) {
                let m = fields(model.value)?;
                models.push(Model {
                    name: text(field(&m, MODEL_NAME, MODEL)?, MODEL_NAME)?,
                    context_window: u32::from_be_bytes(fixed(
                        field(&m, MODEL_CONTEXT, MODEL)?,
                        MODEL_CONTEXT,
                        "4 bytes",
                    )?),
                    max_output: u32::from_be_bytes(fixed(
                        field(&m, MODEL_MAX_OUTPUT, MODEL)?,
                        MODEL_MAX_OUTPUT,
                        "4 bytes",
                    )?),
                    price_per_1k: u64::from_be_bytes(fixed(field(&m, MODEL_PRICE, MODEL)?, MODEL_PRICE, "8 bytes")?),
                });
            }
            let [tier] = fixed(field(&e, ENDPOINT_TIER, ENDPOINT)?, ENDPOINT_TIER, "1 byte")?;
            endpoints.push(Endpoint {
                name: text(field(&e, ENDPOINT_NAME, ENDPOINT)?, ENDPOINT_NAME)?,
                url: text(field(&e, ENDPOINT_URL, ENDPOINT)?, ENDPOINT_URL)?,
                tier: Tier::from_code(tier),
                models,
            });
        }
        Ok(Self { endpoints })
    }
}

/// Why the applet refused a command, by the status word it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AppletError {
    #[error("the account holds fewer tokens than the debit asks for (SW 6985)")]
    InsufficientBalance,
    #[error("the account is not active: it was never activated or the operator blocked it (SW 6986)")]
    NotActive,
    #[error(
        "the amount is zero or above the per-debit limit, or the voucher is malformed or for another card (SW 6A80)"
    )]
    IncorrectData,
    #[error("the voucher's operator signature does not verify (SW 6982)")]
    BadSignature,
    #[error("the voucher was already redeemed (SW 6984)")]
    VoucherReplayed,
    #[error("the voucher has expired (SW 6A88)")]
    VoucherExpired,
    #[error("the top-up would take the balance past its maximum (SW 6A84)")]
    BalanceOverflow,
    #[error("the applet rejected the command's length (SW 6700)")]
    WrongLength,
    #[error("the applet rejected P1 or P2 (SW 6A86)")]
    WrongParameters,
    #[error("the applet does not know the instruction (SW 6D00)")]
    UnknownInstruction,
    #[error("the applet does not accept the class byte (SW 6E00)")]
    WrongClass,
    #[error("the applet failed internally (SW 6F00)")]
    Internal,
    #[error("the applet answered status word {0}")]
    Other(StatusWord),
}

impl AppletError {
    /// The status word the applet answers for this error.
    pub fn status_word(self) -> StatusWord {
        StatusWord(match self {
            Self::InsufficientBalance => 0x6985,
            Self::NotActive => 0x6986,
            Self::IncorrectData => 0x6A80,
            Self::BadSignature => 0x6982,
            Self::VoucherReplayed => 0x6984,
            Self::VoucherExpired => 0x6A88,
            Self::BalanceOverflow => 0x6A84,
            Self::WrongLength => 0x6700,
            Self::WrongParameters => 0x6A86,
            Self::UnknownInstruction => 0x6D00,
            Self::WrongClass => 0x6E00,
            Self::Internal => 0x6F00,
            Self::Other(sw) => sw.0,
        })
    }

    /// `Ok(())` for 9000, otherwise the applet error the status word stands for.
    pub fn check(sw: StatusWord) -> Result<(), Self> {
        Err(match sw.0 {
            0x9000 => return Ok(()),
            0x6985 => Self::InsufficientBalance,
            0x6986 => Self::NotActive,
            0x6A80 => Self::IncorrectData,
            0x6982 => Self::BadSignature,
            0x6984 => Self::VoucherReplayed,
            0x6A88 => Self::VoucherExpired,
            0x6A84 => Self::BalanceOverflow,
            0x6700 => Self::WrongLength,
            0x6A86 => Self::WrongParameters,
            0x6D00 => Self::UnknownInstruction,
            0x6E00 => Self::WrongClass,
            0x6F00 => Self::Internal,
            _ => Self::Other(sw),
        })
    }
}
