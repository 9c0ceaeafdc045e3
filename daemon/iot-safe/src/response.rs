//! The applet's answers: application data, the object list with its C1–C4 containers, file
//! information, public keys; parsed for the daemon and built for the simulated applet.

use aiesim_apdu::{
    CardError, StatusWord,
    tlv::{TlvError, simple},
};

/// Why a response is not what the applet should have answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the response is not well-formed simple-TLV")]
    Tlv(#[source] TlvError),
    #[error("the response lacks field {tag:#04x}")]
    MissingField { tag: u8 },
    #[error("field {tag:#04x} is {len} bytes long, but it must be {expected}")]
    FieldLength {
        tag: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("the public key is not an uncompressed P-256 point (65 bytes starting 04)")]
    NotUncompressedPoint,
}

impl From<TlvError> for ResponseError {
    fn from(error: TlvError) -> Self {
        Self::Tlv(error)
    }
}

fn length(tag: u8, len: usize, expected: &'static str) -> ResponseError {
    ResponseError::FieldLength { tag, len, expected }
}

/// An unsigned big-endian number of 1 to `max` bytes.
fn number(tag: u8, value: &[u8], max: usize, expected: &'static str) -> Result<u32, ResponseError> {
    if value.is_empty() || value.len() > max {
        return Err(length(tag, value.len(), expected));
    }
    Ok(value.iter().fold(0, |n, &b| n << 8 | u32::from(b)))
}

fn one_byte(tag: u8, value: &[u8]) -> Result<u8, ResponseError> {
    match value {
        [byte] => Ok(*byte),
        other => Err(length(tag, other.len(), "1 byte")),
    }
}

fn two_byte_mask(tag: u8, value: &[u8]) -> Result<u16, ResponseError> {
    match *value {
        [one] => Ok(u16::from(one)),
        [high, low] => Ok(u16::from_be_bytes([high, low])),
        _ => Err(length(tag, value.len(), "1 or 2 bytes")),
    }
}

mod app_tag {
    pub const VERSION: u8 = 0x10;
    pub const ID: u8 = 0x11;
    pub const CRYPTO_FUNCTIONS: u8 = 0x90;
    pub const HASH: u8 = 0x91;
    pub const SIGNATURE: u8 = 0x92;
    pub const MAX_SESSIONS: u8 = 0xB7;
    pub const CAPACITIES: [u8; 4] = [0xB1, 0xB2, 0xB3, 0xB4];
}

/// Get Data – application: the applet's version, identity, capacities and algorithms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ApplicationInfo {
    /// `10`.
    pub version: Option<Vec<u8>>,
    /// `11`.
    pub id: Option<Vec<u8>>,
    /// `B1` to `B4`, as the card sends them (one per object kind, C1 to C4).
    pub capacities: [Option<Vec<u8>>; 4],
    /// `90`: crypto function bits, see [`crypto_function`].
    pub crypto_functions: Option<u8>,
    /// `91`: hash bits, see [`crate::hash`].
    pub hash_algorithms: Option<u16>,
    /// `92`: signature algorithm bits, see [`crate::signature_algorithm`].
    pub signature_algorithms: Option<u8>,
    /// `B7`: how many signing sessions can be open at once.
    pub max_sessions: Option<u8>,
}

impl ApplicationInfo {
    /// Decodes the response; unknown tags are skipped.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let mut info = Self::default();
        for tlv in simple::iter(data) {
            let simple::Tlv { tag, value } = tlv?;
            match tag {
                app_tag::VERSION => info.version = Some(value.to_vec()),
                app_tag::ID => info.id = Some(value.to_vec()),
                app_tag::CRYPTO_FUNCTIONS => info.crypto_functions = Some(one_byte(tag, value)?),
                app_tag::HASH => info.hash_algorithms = Some(two_byte_mask(tag, value)?),
                app_tag::SIGNATURE => info.signature_algorithms = Some(one_byte(tag, value)?),
                app_tag::MAX_SESSIONS => info.max_sessions = Some(one_byte(tag, value)?),
                _ => {
                    if let Some(slot) = app_tag::CAPACITIES.iter().position(|&t| t == tag) {
                        info.capacities[slot] = Some(value.to_vec());
                    }
                }
            }
        }
        Ok(info)
    }

    /// Encodes the response.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            version,
            id,
            capacities,
            crypto_functions,
            hash_algorithms,
            signature_algorithms,
            max_sessions,
        } = self;
        let mut out = Vec::new();
        if let Some(version) = version {
            simple::put(&mut out, app_tag::VERSION, version)?;
        }
        if let Some(id) = id {
            simple::put(&mut out, app_tag::ID, id)?;
        }
        for (tag, capacity) in app_tag::CAPACITIES.into_iter().zip(capacities) {
            if let Some(capacity) = capacity {
                simple::put(&mut out, tag, capacity)?;
            }
        }
        if let Some(functions) = crypto_functions {
            simple::put(&mut out, app_tag::CRYPTO_FUNCTIONS, &[*functions])?;
        }
        if let Some(hash) = hash_algorithms {
            simple::put(&mut out, app_tag::HASH, &hash.to_be_bytes())?;
        }
        if let Some(signature) = signature_algorithms {
            simple::put(&mut out, app_tag::SIGNATURE, &[*signature])?;
        }
        if let Some(sessions) = max_sessions {
            simple::put(&mut out, app_tag::MAX_SESSIONS, &[*sessions])?;
        }
        Ok(out)
    }
}

/// Crypto function bits of keys (tag 61) and of the application (tag 90).
pub mod crypto_function {
    /// Signature generation or verification.
    pub const SIGNATURE: u8 = 0x01;
    /// Key generation.
    pub const KEY_GENERATION: u8 = 0x02;
    /// Key agreement (ECKA).
    pub const KEY_AGREEMENT: u8 = 0x04;
    /// Key derivation.
    pub const KEY_DERIVATION: u8 = 0x08;
}

/// A key's type (tag 4B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// 13: NIST P-256, persistent.
    P256Persistent,
    /// 14: NIST P-256, volatile.
    P256Volatile,
    /// 23: brainpoolP256r1, persistent.
    BrainpoolP256Persistent,
    /// 24: brainpoolP256r1, volatile.
    BrainpoolP256Volatile,
    /// 03: RSA-2048.
    Rsa2048,
    /// Anything else.
    Other(u8),
}

impl KeyType {
    /// The type byte.
    pub fn code(self) -> u8 {
        match self {
            Self::P256Persistent => 0x13,
            Self::P256Volatile => 0x14,
            Self::BrainpoolP256Persistent => 0x23,
            Self::BrainpoolP256Volatile => 0x24,
            Self::Rsa2048 => 0x03,
            Self::Other(code) => code,
        }
    }

    /// The type of a type byte.
    pub fn from_code(code: u8) -> Self {
        match code {
            0x13 => Self::P256Persistent,
            0x14 => Self::P256Volatile,
            0x23 => Self::BrainpoolP256Persistent,
            0x24 => Self::BrainpoolP256Volatile,
            0x03 => Self::Rsa2048,
            other => Self::Other(other),
        }
    }

    /// Whether it is a NIST P-256 key, the only curve the daemon's JWTs (ES256) use.
    pub fn is_p256(self) -> bool {
        matches!(self, Self::P256Persistent | Self::P256Volatile)
    }
}

/// Key usage (tag 4E) values.
pub mod key_usage {
    /// General purpose.
    pub const GENERAL: u8 = 0x01;
    /// TLS 1.2 `CertificateVerify`.
    pub const TLS12: u8 = 0x02;
    /// TLS 1.3 `CertificateVerify`.
    pub const TLS13: u8 = 0x03;
}

/// File usage (tag 21) values.
pub mod file_usage {
    /// General purpose.
    pub const GENERAL: u8 = 0x01;
    /// An X.509 certificate.
    pub const CERTIFICATE: u8 = 0x02;
}

/// The state value (tag 4A) of an object ready for use.
pub const STATE_ACTIVE: u8 = 0x01;

mod obj_tag {
    pub const PRIVATE_KEY: u8 = 0xC1;
    pub const PUBLIC_KEY: u8 = 0xC2;
    pub const FILE: u8 = 0xC3;
    pub const SECRET_KEY: u8 = 0xC4;
    /// 73 file, 74 private, 75 public, 76 secret.
    pub const LABELS: [u8; 4] = [0x73, 0x74, 0x75, 0x76];
    /// 83 file, 84 private, 85 public, 86 secret.
    pub const IDS: [u8; 4] = [0x83, 0x84, 0x85, 0x86];
    pub const ACCESS: u8 = 0x60;
    pub const STATE: u8 = 0x4A;
    pub const KEY_TYPE: u8 = 0x4B;
    pub const KEY_USAGE: u8 = 0x4E;
    pub const CRYPTO_FUNCTIONS: u8 = 0x61;
    pub const SIGNATURE: u8 = 0x92;
    pub const HASH: u8 = 0x91;
    pub const FILE_USAGE: u8 = 0x21;
    pub const FILE_SIZE: u8 = 0x20;
}

/// A key container (C1 private, C2 public, C4 secret); fields may come in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyObject {
    /// `74`/`75`/`76`.
    pub label: Option<Vec<u8>>,
    /// `84`/`85`/`86`.
    pub id: Option<Vec<u8>>,
    /// `60`: access conditions, as sent.
    pub access: Option<Vec<u8>>,
    /// `4A`: [`STATE_ACTIVE`] when usable.
    pub state: Option<u8>,
    /// `4B`.
    pub key_type: Option<KeyType>,
    /// `4E`: see [`key_usage`].
    pub usage: Option<u8>,
    /// `61`: see [`crypto_function`].
    pub crypto_functions: Option<u8>,
    /// `92`: signature algorithm bits.
    pub signature_algorithms: Option<u8>,
    /// `91`: hash bits.
    pub hash_algorithms: Option<u16>,
}

/// A file container (C3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FileObject {
    /// `73`.
    pub label: Option<Vec<u8>>,
    /// `83`.
    pub id: Option<Vec<u8>>,
    /// `60`.
    pub access: Option<Vec<u8>>,
    /// `4A`.
    pub state: Option<u8>,
    /// `21`: see [`file_usage`].
    pub usage: Option<u8>,
    /// `20`: the size in bytes (two bytes big-endian on most cards, up to four read).
    pub size: Option<u32>,
}

/// One object of the list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    /// C1.
    PrivateKey(KeyObject),
    /// C2.
    PublicKey(KeyObject),
    /// C3.
    File(FileObject),
    /// C4.
    SecretKey(KeyObject),
}

fn reference(value: &[u8], slot: &mut Option<Vec<u8>>) {
    if slot.is_none() {
        *slot = Some(value.to_vec());
    }
}

impl KeyObject {
    fn decode(content: &[u8]) -> Result<Self, ResponseError> {
        let mut key = Self::default();
        for tlv in simple::iter(content) {
            let simple::Tlv { tag, value } = tlv?;
            match tag {
                _ if obj_tag::LABELS.contains(&tag) => reference(value, &mut key.label),
                _ if obj_tag::IDS.contains(&tag) => reference(value, &mut key.id),
                obj_tag::ACCESS => key.access = Some(value.to_vec()),
                obj_tag::STATE => key.state = Some(one_byte(tag, value)?),
                obj_tag::KEY_TYPE => key.key_type = Some(KeyType::from_code(one_byte(tag, value)?)),
                obj_tag::KEY_USAGE => key.usage = Some(one_byte(tag, value)?),
                obj_tag::CRYPTO_FUNCTIONS => key.crypto_functions = Some(one_byte(tag, value)?),
                obj_tag::SIGNATURE => key.signature_algorithms = Some(one_byte(tag, value)?),
                obj_tag::HASH => key.hash_algorithms = Some(two_byte_mask(tag, value)?),
                _ => {}
            }
        }
        Ok(key)
    }

    /// `slot` picks the label and id tags: 1 private, 2 public, 3 secret.
    fn encode(&self, slot: usize) -> Result<Vec<u8>, TlvError> {
        let Self {
            label,
            id,
            access,
            state,
            key_type,
            usage,
            crypto_functions,
            signature_algorithms,
            hash_algorithms,
        } = self;
        let mut out = Vec::new();
        if let Some(label) = label {
            simple::put(&mut out, obj_tag::LABELS[slot], label)?;
        }
        if let Some(id) = id {
            simple::put(&mut out, obj_tag::IDS[slot], id)?;
        }
        if let Some(access) = access {
            simple::put(&mut out, obj_tag::ACCESS, access)?;
        }
        for (tag, byte) in [
            (obj_tag::STATE, *state),
            (obj_tag::KEY_TYPE, key_type.map(KeyType::code)),
            (obj_tag::KEY_USAGE, *usage),
            (obj_tag::CRYPTO_FUNCTIONS, *crypto_functions),
            (obj_tag::SIGNATURE, *signature_algorithms),
        ] {
            if let Some(byte) = byte {
                simple::put(&mut out, tag, &[byte])?;
            }
        }
        if let Some(hash) = hash_algorithms {
            simple::put(&mut out, obj_tag::HASH, &hash.to_be_bytes())?;
        }
        Ok(out)
    }

    /// Whether the key can make the ES256 signatures the daemon needs: active (or no state
    /// given), P-256, and allowed to sign by its crypto functions or, lacking those, its usage.
    pub fn can_sign_p256(&self) -> bool {
        let Self {
            state,
            key_type,
            usage,
            crypto_functions,
            signature_algorithms,
            ..
        } = self;
        let active = state.is_none_or(|s| s == STATE_ACTIVE);
        let curve = match key_type {
            Some(key_type) => key_type.is_p256(),
            None => signature_algorithms.is_some_and(|a| a & crate::signature_algorithm::ECDSA != 0),
        };
        let signs = match crypto_functions {
            Some(functions) => functions & crypto_function::SIGNATURE != 0,
            None => usage.is_some_and(|u| matches!(u, key_usage::GENERAL | key_usage::TLS12 | key_usage::TLS13)),
        };
        let ecdsa = signature_algorithms.is_none_or(|a| a & crate::signature_algorithm::ECDSA != 0);
        active && curve && signs && ecdsa
    }
}

impl FileObject {
    fn decode(content: &[u8]) -> Result<Self, ResponseError> {
        let mut file = Self::default();
        for tlv in simple::iter(content) {
            let simple::Tlv { tag, value } = tlv?;
            match tag {
                _ if obj_tag::LABELS.contains(&tag) => reference(value, &mut file.label),
                _ if obj_tag::IDS.contains(&tag) => reference(value, &mut file.id),
                obj_tag::ACCESS => file.access = Some(value.to_vec()),
                obj_tag::STATE => file.state = Some(one_byte(tag, value)?),
                obj_tag::FILE_USAGE => file.usage = Some(one_byte(tag, value)?),
                obj_tag::FILE_SIZE => file.size = Some(number(tag, value, 4, "1 to 4 bytes")?),
                _ => {}
            }
        }
        Ok(file)
    }

    fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let Self {
            label,
            id,
            access,
            state,
            usage,
            size,
        } = self;
        let mut out = Vec::new();
        if let Some(label) = label {
            simple::put(&mut out, obj_tag::LABELS[0], label)?;
        }
        if let Some(id) = id {
            simple::put(&mut out, obj_tag::IDS[0], id)?;
        }
        if let Some(access) = access {
            simple::put(&mut out, obj_tag::ACCESS, access)?;
        }
        if let Some(state) = state {
            simple::put(&mut out, obj_tag::STATE, &[*state])?;
        }
        if let Some(usage) = usage {
            simple::put(&mut out, obj_tag::FILE_USAGE, &[*usage])?;
        }
        if let Some(size) = size {
            // Two bytes as most cards send it, four when the size needs them.
            match u16::try_from(*size) {
                Ok(small) => simple::put(&mut out, obj_tag::FILE_SIZE, &small.to_be_bytes())?,
                Err(_) => simple::put(&mut out, obj_tag::FILE_SIZE, &size.to_be_bytes())?,
            }
        }
        Ok(out)
    }
}

impl Object {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), TlvError> {
        let (tag, content) = match self {
            Self::PrivateKey(key) => (obj_tag::PRIVATE_KEY, key.encode(1)?),
            Self::PublicKey(key) => (obj_tag::PUBLIC_KEY, key.encode(2)?),
            Self::File(file) => (obj_tag::FILE, file.encode()?),
            Self::SecretKey(key) => (obj_tag::SECRET_KEY, key.encode(3)?),
        };
        simple::put(out, tag, &content)
    }
}

/// Get Data – object list, all parts concatenated; containers other than C1–C4 are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ObjectList {
    /// The objects in card order.
    pub objects: Vec<Object>,
}

impl ObjectList {
    /// Decodes the concatenated data of the object list responses.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let mut objects = Vec::new();
        for tlv in simple::iter(data) {
            let simple::Tlv { tag, value } = tlv?;
            objects.push(match tag {
                obj_tag::PRIVATE_KEY => Object::PrivateKey(KeyObject::decode(value)?),
                obj_tag::PUBLIC_KEY => Object::PublicKey(KeyObject::decode(value)?),
                obj_tag::FILE => Object::File(FileObject::decode(value)?),
                obj_tag::SECRET_KEY => Object::SecretKey(KeyObject::decode(value)?),
                _ => continue,
            });
        }
        Ok(Self { objects })
    }

    /// Encodes the whole list.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let mut out = Vec::new();
        for object in &self.objects {
            object.encode(&mut out)?;
        }
        Ok(out)
    }

    /// The list cut into responses of at most `max_len` bytes at container boundaries, for an
    /// applet that answers all but the last with 6300; a container longer than `max_len`
    /// gets a part of its own.
    pub fn encode_parts(&self, max_len: usize) -> Result<Vec<Vec<u8>>, TlvError> {
        let mut parts: Vec<Vec<u8>> = vec![Vec::new()];
        for object in &self.objects {
            let mut container = Vec::new();
            object.encode(&mut container)?;
            match parts.last_mut() {
                Some(part) if part.is_empty() || part.len() + container.len() <= max_len => part.extend(container),
                _ => parts.push(container),
            }
        }
        Ok(parts)
    }

    /// The private key the daemon signs its JWTs with: the first that [`KeyObject::can_sign_p256`],
    /// preferring a persistent key and TLS usage over general purpose.
    pub fn signing_key(&self) -> Option<&KeyObject> {
        self.objects
            .iter()
            .filter_map(|object| match object {
                Object::PrivateKey(key) if key.can_sign_p256() => Some(key),
                _ => None,
            })
            .enumerate()
            .max_by_key(|&(index, key)| {
                let persistent = key.key_type == Some(KeyType::P256Persistent);
                let tls = key.usage.is_some_and(|u| u != key_usage::GENERAL);
                // Earlier entries win ties: max_by_key keeps the last maximum, so negate the index.
                (persistent, tls, std::cmp::Reverse(index))
            })
            .map(|(_, key)| key)
    }

    /// The device certificate: the first file with usage [`file_usage::CERTIFICATE`] that is
    /// active or has no state.
    pub fn certificate_file(&self) -> Option<&FileObject> {
        self.objects.iter().find_map(|object| match object {
            Object::File(file)
                if file.usage == Some(file_usage::CERTIFICATE) && file.state.is_none_or(|s| s == STATE_ACTIVE) =>
            {
                Some(file)
            }
            _ => None,
        })
    }
}

/// Whether an object list response asks for a follow-up `CB 01 01` (SW 6300).
pub fn object_list_continues(sw: StatusWord) -> bool {
    sw == StatusWord::MORE_DATA_AVAILABLE
}

/// Get Data – file information: one `C3` container, or its fields bare, as cards differ.
pub fn decode_file_info(data: &[u8]) -> Result<FileObject, ResponseError> {
    match simple::iter(data).collect::<Result<Vec<_>, _>>()?.as_slice() {
        [
            simple::Tlv {
                tag: obj_tag::FILE,
                value,
            },
        ] => FileObject::decode(value),
        _ => FileObject::decode(data),
    }
}

/// Encodes a file information response as a `C3` container.
pub fn encode_file_info(file: &FileObject) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::new();
    Object::File(file.clone()).encode(&mut out)?;
    Ok(out)
}

mod key_tag {
    pub const PUBLIC_KEY: u8 = 0x34;
    pub const EC_KEY: u8 = 0x49;
    pub const POINT: u8 = 0x86;
}

/// The uncompressed P-256 point `04 X Y` of Read Public Key (`34 45 49 43 86 41 04 X Y`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 65]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))?;
        write!(f, ")")
    }
}

impl PublicKey {
    /// Decodes the response; `86` directly inside `34` is accepted too.
    pub fn decode(data: &[u8]) -> Result<Self, ResponseError> {
        let outer = simple::find(data, key_tag::PUBLIC_KEY)?.ok_or(ResponseError::MissingField {
            tag: key_tag::PUBLIC_KEY,
        })?;
        let inner = simple::find(outer, key_tag::EC_KEY)?.unwrap_or(outer);
        let point = simple::find(inner, key_tag::POINT)?.ok_or(ResponseError::MissingField { tag: key_tag::POINT })?;
        match <[u8; 65]>::try_from(point) {
            Ok(point) if point[0] == 0x04 => Ok(Self(point)),
            _ => Err(ResponseError::NotUncompressedPoint),
        }
    }

    /// Encodes the response as `34 45 49 43 86 41 04 X Y`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![key_tag::PUBLIC_KEY, 0x45, key_tag::EC_KEY, 0x43, key_tag::POINT, 0x41];
        out.extend_from_slice(&self.0);
        out
    }
}

/// Verify Signature Update's verdict: 9000 valid, 6D01 (or 6982) mismatch, else a card error.
pub fn verify_result(sw: StatusWord) -> Result<bool, CardError> {
    match sw.0 {
        0x6D01 | 0x6982 => Ok(false),
        _ => sw.to_result().map(|()| true),
    }
}
