//! The applet's commands: built by the daemon from a [`Request`], and read back into one by
//! the simulated applet. CLA is proprietary (`8x`) or interindustry (`0x`) with the channel in it.

use aiesim_apdu::{
    ChannelError, Command, Le,
    tlv::{TlvError, simple},
    with_channel,
};

/// Instruction bytes of the `IoT` SAFE applet.
pub mod ins {
    /// Get Data: application, object list, file information.
    pub const GET_DATA: u8 = 0xCB;
    /// Read File.
    pub const READ_FILE: u8 = 0xB0;
    /// Get Random.
    pub const GET_RANDOM: u8 = 0x84;
    /// Compute Signature Init (P1 00) and close (P1 01).
    pub const COMPUTE_SIGNATURE_INIT: u8 = 0x2A;
    /// Compute Signature Update.
    pub const COMPUTE_SIGNATURE_UPDATE: u8 = 0x2B;
    /// Verify Signature Init.
    pub const VERIFY_SIGNATURE_INIT: u8 = 0x2C;
    /// Verify Signature Update.
    pub const VERIFY_SIGNATURE_UPDATE: u8 = 0x2D;
    /// Read Public Key.
    pub const READ_PUBLIC_KEY: u8 = 0xCD;
}

/// Get Data P1 values.
mod get_data {
    pub const APPLICATION: u8 = 0x00;
    pub const OBJECT_LIST: u8 = 0x01;
    pub const FILE_INFO: u8 = 0xC3;
}

/// Object reference and parameter tags in command data.
mod tag {
    pub const FILE_ID: u8 = 0x83;
    pub const FILE_LABEL: u8 = 0x73;
    pub const PRIVATE_KEY_ID: u8 = 0x84;
    pub const PRIVATE_KEY_LABEL: u8 = 0x74;
    pub const PUBLIC_KEY_ID: u8 = 0x85;
    pub const PUBLIC_KEY_LABEL: u8 = 0x75;
    pub const MODE: u8 = 0xA1;
    pub const HASH: u8 = 0x91;
    pub const SIGNATURE_ALGORITHM: u8 = 0x92;
    pub const HASH_VALUE: u8 = 0x9E;
    pub const MESSAGE: u8 = 0x9B;
}

const SIGN_OPEN: u8 = 0x00;
const SIGN_CLOSE: u8 = 0x01;
const UPDATE_LAST: u8 = 0x80;
const UPDATE_MORE: u8 = 0x00;

/// The GSMA `IoT` SAFE AID; vendor MVP applets use others, so the daemon makes it configurable.
pub const AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x59, 0x00, 0x10];

/// Hash algorithm bits (tag 91, two bytes big-endian).
pub mod hash {
    /// SHA-256.
    pub const SHA256: u16 = 0x0001;
    /// SHA-384.
    pub const SHA384: u16 = 0x0002;
    /// SHA-512.
    pub const SHA512: u16 = 0x0004;
}

/// Signature algorithm bits (tag 92).
pub mod signature_algorithm {
    /// RSA PKCS#1 v1.5.
    pub const RSA_PKCS1: u8 = 0x01;
    /// RSA-PSS.
    pub const RSA_PSS: u8 = 0x02;
    /// ECDSA.
    pub const ECDSA: u8 = 0x04;
}

/// Why a command could not be built, or bytes not read as an `IoT` SAFE command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the command data is not well-formed simple-TLV")]
    Tlv(#[source] TlvError),
    #[error("the class byte cannot address the applet's logical channel")]
    Channel(#[source] ChannelError),
    #[error("instruction {ins:#04x} is not an IoT SAFE instruction")]
    UnknownInstruction { ins: u8 },
    #[error("instruction {ins:#04x} does not take P1 = {p1:#04x}, P2 = {p2:#04x}")]
    Parameters { ins: u8, p1: u8, p2: u8 },
    #[error("instruction {ins:#04x} needs field {tag:#04x} in its data")]
    MissingField { ins: u8, tag: u8 },
    #[error("field {tag:#04x} is {len} bytes long, but it must be {expected}")]
    FieldLength {
        tag: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("an object identifier or label is 1 to 255 bytes long, not {len}")]
    Reference { len: usize },
    #[error("instruction {ins:#04x} carries {len} data bytes where none belong")]
    UnexpectedData { ins: u8, len: usize },
}

impl From<TlvError> for RequestError {
    fn from(error: TlvError) -> Self {
        Self::Tlv(error)
    }
}

/// How the applet's class byte is coded before the channel goes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ClassCoding {
    /// `8x`, the default; fall back to interindustry on 6E00.
    #[default]
    Proprietary,
    /// `0x`.
    Interindustry,
}

/// The applet as opened on one logical channel: what every command's CLA is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Applet {
    cla: u8,
}

impl Applet {
    /// The applet on `channel` with class coding `coding`.
    pub fn new(coding: ClassCoding, channel: u8) -> Result<Self, RequestError> {
        let base = match coding {
            ClassCoding::Proprietary => 0x80,
            ClassCoding::Interindustry => 0x00,
        };
        let cla = with_channel(base, channel).map_err(RequestError::Channel)?;
        Ok(Self { cla })
    }

    /// The class byte commands carry.
    pub fn cla(self) -> u8 {
        self.cla
    }
}

/// An object named by its identifier or its label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectRef {
    /// Usually one byte (`01`), up to three seen.
    Id(Vec<u8>),
    /// Up to 60 bytes of text.
    Label(Vec<u8>),
}

/// Which kind of object a reference names: each has its own pair of tags.
#[derive(Debug, Clone, Copy)]
enum Kind {
    File,
    PrivateKey,
    PublicKey,
}

impl Kind {
    const fn tags(self) -> (u8, u8) {
        match self {
            Self::File => (tag::FILE_ID, tag::FILE_LABEL),
            Self::PrivateKey => (tag::PRIVATE_KEY_ID, tag::PRIVATE_KEY_LABEL),
            Self::PublicKey => (tag::PUBLIC_KEY_ID, tag::PUBLIC_KEY_LABEL),
        }
    }
}

impl ObjectRef {
    fn put(&self, out: &mut Vec<u8>, kind: Kind) -> Result<(), RequestError> {
        let (id_tag, label_tag) = kind.tags();
        let (tag, value) = match self {
            Self::Id(id) => (id_tag, id),
            Self::Label(label) => (label_tag, label),
        };
        if value.is_empty() || value.len() > simple::MAX_VALUE_LEN {
            return Err(RequestError::Reference { len: value.len() });
        }
        Ok(simple::put(out, tag, value)?)
    }

    fn find(data: &[u8], kind: Kind, ins: u8) -> Result<Self, RequestError> {
        let (id_tag, label_tag) = kind.tags();
        if let Some(id) = simple::find(data, id_tag)? {
            return Self::checked(Self::Id(id.to_vec()));
        }
        if let Some(label) = simple::find(data, label_tag)? {
            return Self::checked(Self::Label(label.to_vec()));
        }
        Err(RequestError::MissingField { ins, tag: id_tag })
    }

    fn checked(reference: Self) -> Result<Self, RequestError> {
        let (Self::Id(value) | Self::Label(value)) = &reference;
        if value.is_empty() {
            return Err(RequestError::Reference { len: 0 });
        }
        Ok(reference)
    }
}

/// Compute Signature's mode (tag A1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMode {
    /// 01: the applet hashes the full text sent in `9B` blocks.
    FullText,
    /// 02: the last block of a text hashed outside.
    LastBlock,
    /// 03: pad and sign a hash computed outside, sent in `9E`.
    PrecomputedHash,
    /// A mode this crate does not name.
    Other(u8),
}

impl SignMode {
    /// The mode byte.
    pub fn code(self) -> u8 {
        match self {
            Self::FullText => 1,
            Self::LastBlock => 2,
            Self::PrecomputedHash => 3,
            Self::Other(code) => code,
        }
    }

    /// The mode of a mode byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::FullText,
            2 => Self::LastBlock,
            3 => Self::PrecomputedHash,
            other => Self::Other(other),
        }
    }
}

/// The algorithm parameters of a Compute or Verify Signature Init.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignParams {
    /// `A1 01 mode`.
    pub mode: SignMode,
    /// `91 02 hash`: one of the [`hash`] bits.
    pub hash: u16,
    /// `92 01 algorithm`: one of the [`signature_algorithm`] bits.
    pub algorithm: u8,
}

impl SignParams {
    /// ECDSA P-256 over a SHA-256 hash the host computed, as every library does it.
    pub const ECDSA_SHA256_PRECOMPUTED: Self = Self {
        mode: SignMode::PrecomputedHash,
        hash: hash::SHA256,
        algorithm: signature_algorithm::ECDSA,
    };

    fn put(self, out: &mut Vec<u8>) -> Result<(), RequestError> {
        let Self { mode, hash, algorithm } = self;
        simple::put(out, tag::MODE, &[mode.code()])?;
        simple::put(out, tag::HASH, &hash.to_be_bytes())?;
        simple::put(out, tag::SIGNATURE_ALGORITHM, &[algorithm])?;
        Ok(())
    }

    fn find(data: &[u8], ins: u8) -> Result<Self, RequestError> {
        let field = |tag| simple::find(data, tag)?.ok_or(RequestError::MissingField { ins, tag });
        let mode = match field(tag::MODE)? {
            [mode] => SignMode::from_code(*mode),
            other => return Err(length(tag::MODE, other.len(), "1 byte")),
        };
        let hash = match field(tag::HASH)? {
            // One-byte hash masks are read too; cards with a single algorithm send them.
            [one] => u16::from(*one),
            &[high, low] => u16::from_be_bytes([high, low]),
            other => return Err(length(tag::HASH, other.len(), "1 or 2 bytes")),
        };
        let algorithm = match field(tag::SIGNATURE_ALGORITHM)? {
            [algorithm] => *algorithm,
            other => return Err(length(tag::SIGNATURE_ALGORITHM, other.len(), "1 byte")),
        };
        Ok(Self { mode, hash, algorithm })
    }
}

fn length(tag: u8, len: usize, expected: &'static str) -> RequestError {
    RequestError::FieldLength { tag, len, expected }
}

/// What a Compute Signature Update carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignInput {
    /// `9E`: the hash, for [`SignMode::PrecomputedHash`].
    Hash(Vec<u8>),
    /// `9B`: a block of the text, for [`SignMode::FullText`].
    Message(Vec<u8>),
}

/// One `IoT` SAFE command, as the daemon means it and the simulated applet reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// `CB 00 00`: version, identifier, capacities and algorithms.
    GetApplicationData,
    /// `CB 01 00`, then `CB 01 01` while the card answers 6300.
    GetObjectList {
        /// Whether this asks for the next part after 6300.
        continuation: bool,
    },
    /// `CB C3 00 { 83 id | 73 label }`.
    GetFileInfo(ObjectRef),
    /// `B0 offset { 83 id | 73 label } Le`.
    ReadFile {
        /// The file.
        file: ObjectRef,
        /// Where to start, in P1-P2.
        offset: u16,
        /// How many bytes to read.
        len: Le,
    },
    /// `84 00 00 Le`.
    GetRandom {
        /// How many random bytes.
        len: Le,
    },
    /// `2A 00 session { 84 id | 74 label, A1, 91, 92 }`.
    SignInit {
        /// The session number, 01 typically.
        session: u8,
        /// The private key.
        key: ObjectRef,
        /// Mode, hash and algorithm.
        params: SignParams,
    },
    /// `2A 01 session`: closes a signing session, stale or finished.
    SignClose {
        /// The session number.
        session: u8,
    },
    /// `2B 80|00 session { 9E hash | 9B data }`.
    SignUpdate {
        /// The session number.
        session: u8,
        /// Whether this is the last block (P1 80).
        last: bool,
        /// The hash or text block.
        input: SignInput,
    },
    /// `CD 00 00 { 85 id | 75 label }`.
    ReadPublicKey(ObjectRef),
    /// `2C 00 session { 85 id | 75 label, A1, 91, 92 }`.
    VerifyInit {
        /// The session number.
        session: u8,
        /// The public key.
        key: ObjectRef,
        /// Mode, hash and algorithm.
        params: SignParams,
    },
    /// `2D 80|00 session { 9E hash, 33 len r‖s }`.
    VerifyUpdate {
        /// The session number.
        session: u8,
        /// Whether this is the last block.
        last: bool,
        /// The hash.
        hash: Vec<u8>,
        /// The signature to check, raw r‖s.
        signature: Vec<u8>,
    },
}

impl Request {
    /// The command APDU on `applet`'s class byte.
    pub fn to_command(&self, applet: Applet) -> Result<Command, RequestError> {
        let cla = applet.cla();
        let mut data = Vec::new();
        let (ins, p1, p2, le) = match self {
            Self::GetApplicationData => (ins::GET_DATA, get_data::APPLICATION, 0, Some(Le::SHORT_MAX)),
            Self::GetObjectList { continuation } => (
                ins::GET_DATA,
                get_data::OBJECT_LIST,
                u8::from(*continuation),
                Some(Le::SHORT_MAX),
            ),
            Self::GetFileInfo(file) => {
                file.put(&mut data, Kind::File)?;
                (ins::GET_DATA, get_data::FILE_INFO, 0, Some(Le::SHORT_MAX))
            }
            Self::ReadFile { file, offset, len } => {
                file.put(&mut data, Kind::File)?;
                let [p1, p2] = offset.to_be_bytes();
                (ins::READ_FILE, p1, p2, Some(*len))
            }
            Self::GetRandom { len } => (ins::GET_RANDOM, 0, 0, Some(*len)),
            Self::SignInit { session, key, params } => {
                key.put(&mut data, Kind::PrivateKey)?;
                params.put(&mut data)?;
                (ins::COMPUTE_SIGNATURE_INIT, SIGN_OPEN, *session, None)
            }
            Self::SignClose { session } => (ins::COMPUTE_SIGNATURE_INIT, SIGN_CLOSE, *session, None),
            Self::SignUpdate { session, last, input } => {
                match input {
                    SignInput::Hash(hash) => simple::put(&mut data, tag::HASH_VALUE, hash)?,
                    SignInput::Message(block) => simple::put(&mut data, tag::MESSAGE, block)?,
                }
                let p1 = if *last { UPDATE_LAST } else { UPDATE_MORE };
                (ins::COMPUTE_SIGNATURE_UPDATE, p1, *session, Some(Le::SHORT_MAX))
            }
            Self::ReadPublicKey(key) => {
                key.put(&mut data, Kind::PublicKey)?;
                (ins::READ_PUBLIC_KEY, 0, 0, Some(Le::SHORT_MAX))
            }
            Self::VerifyInit { session, key, params } => {
                key.put(&mut data, Kind::PublicKey)?;
                params.put(&mut data)?;
                (ins::VERIFY_SIGNATURE_INIT, SIGN_OPEN, *session, None)
            }
            Self::VerifyUpdate {
                session,
                last,
                hash,
                signature,
            } => {
                simple::put(&mut data, tag::HASH_VALUE, hash)?;
                simple::put(&mut data, crate::signature::SIGNATURE_TAG, signature)?;
                let p1 = if *last { UPDATE_LAST } else { UPDATE_MORE };
                (ins::VERIFY_SIGNATURE_UPDATE, p1, *session, None)
            }
        };
        let command = Command::new(cla, ins, p1, p2).with_data(data);
        Ok(match le {
            Some(le) => command.with_le(le),
            None => command,
        })
    }

    /// Reads a command APDU the way the applet does; the class byte is the caller's concern.
    pub fn from_command(command: &Command) -> Result<Self, RequestError> {
        let Command {
            cla: _,
            ins,
            p1,
            p2,
            data,
            le,
        } = command;
        let (ins, p1, p2) = (*ins, *p1, *p2);
        let bad_parameters = RequestError::Parameters { ins, p1, p2 };
        let no_data = || {
            if data.is_empty() {
                Ok(())
            } else {
                Err(RequestError::UnexpectedData { ins, len: data.len() })
            }
        };
        let field = |tag| simple::find(data, tag)?.ok_or(RequestError::MissingField { ins, tag });
        let last = |p1| match p1 {
            UPDATE_LAST => Ok(true),
            UPDATE_MORE => Ok(false),
            _ => Err(bad_parameters.clone()),
        };
        match ins {
            ins::GET_DATA => match (p1, p2) {
                (get_data::APPLICATION, 0) => no_data().map(|()| Self::GetApplicationData),
                (get_data::OBJECT_LIST, 0 | 1) => no_data().map(|()| Self::GetObjectList { continuation: p2 == 1 }),
                (get_data::FILE_INFO, 0) => ObjectRef::find(data, Kind::File, ins).map(Self::GetFileInfo),
                _ => Err(bad_parameters),
            },
            ins::READ_FILE => Ok(Self::ReadFile {
                file: ObjectRef::find(data, Kind::File, ins)?,
                offset: u16::from_be_bytes([p1, p2]),
                len: le.unwrap_or(Le::SHORT_MAX),
            }),
            ins::GET_RANDOM => {
                no_data()?;
                Ok(Self::GetRandom {
                    len: le.unwrap_or(Le::SHORT_MAX),
                })
            }
            ins::COMPUTE_SIGNATURE_INIT => match p1 {
                SIGN_OPEN => Ok(Self::SignInit {
                    session: p2,
                    key: ObjectRef::find(data, Kind::PrivateKey, ins)?,
                    params: SignParams::find(data, ins)?,
                }),
                // Some hosts repeat the key reference when closing; it changes nothing.
                SIGN_CLOSE => Ok(Self::SignClose { session: p2 }),
                _ => Err(bad_parameters),
            },
            ins::COMPUTE_SIGNATURE_UPDATE => {
                let last = last(p1)?;
                let input = if let Some(hash) = simple::find(data, tag::HASH_VALUE)? {
                    SignInput::Hash(hash.to_vec())
                } else {
                    SignInput::Message(field(tag::MESSAGE)?.to_vec())
                };
                Ok(Self::SignUpdate {
                    session: p2,
                    last,
                    input,
                })
            }
            ins::READ_PUBLIC_KEY => match (p1, p2) {
                (0, 0) => ObjectRef::find(data, Kind::PublicKey, ins).map(Self::ReadPublicKey),
                _ => Err(bad_parameters),
            },
            ins::VERIFY_SIGNATURE_INIT => match p1 {
                SIGN_OPEN => Ok(Self::VerifyInit {
                    session: p2,
                    key: ObjectRef::find(data, Kind::PublicKey, ins)?,
                    params: SignParams::find(data, ins)?,
                }),
                _ => Err(bad_parameters),
            },
            ins::VERIFY_SIGNATURE_UPDATE => Ok(Self::VerifyUpdate {
                session: p2,
                last: last(p1)?,
                hash: field(tag::HASH_VALUE)?.to_vec(),
                signature: field(crate::signature::SIGNATURE_TAG)?.to_vec(),
            }),
            _ => Err(RequestError::UnknownInstruction { ins }),
        }
    }
}
