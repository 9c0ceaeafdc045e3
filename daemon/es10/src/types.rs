//! The identifiers and small value types ES10 carries: ICCID, EID, AID, versions, bit strings.

use std::{fmt, str::FromStr};

/// Why a string or byte field is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an ICCID has 1 to 20 decimal digits, not {len} characters")]
    IccidLength { len: usize },
    #[error("an ICCID holds only decimal digits; {found:?} is not one")]
    IccidDigit { found: char },
    #[error("an ICCID field is 10 bytes of swapped BCD, not {len} bytes")]
    IccidBytes { len: usize },
    #[error("the ICCID field has nibble {nibble:#x} where a digit or trailing F padding belongs")]
    IccidNibble { nibble: u8 },
    #[error("an AID is 5 to 16 bytes long, not {len}")]
    AidLength { len: usize },
}

/// An ICCID as its digits (`89000123456789012341`), held as SGP.22 sends it: ten bytes of
/// BCD with the nibbles of each byte swapped and F padding after the last digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iccid(String);

impl Iccid {
    /// The encoded length of every ICCID field (`Iccid ::= [APPLICATION 26] OCTET STRING (SIZE(10))`).
    pub const ENCODED_LEN: usize = 10;

    /// The ICCID with these 1 to 20 decimal digits.
    pub fn new(digits: &str) -> Result<Self, IdError> {
        let len = digits.chars().count();
        if !(1..=20).contains(&len) {
            return Err(IdError::IccidLength { len });
        }
        if let Some(found) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(IdError::IccidDigit { found });
        }
        Ok(Self(digits.to_owned()))
    }

    /// Reads the ten swapped-BCD bytes of a `5A` field.
    pub fn from_bcd(bytes: &[u8]) -> Result<Self, IdError> {
        if bytes.len() != Self::ENCODED_LEN {
            return Err(IdError::IccidBytes { len: bytes.len() });
        }
        let mut digits = String::with_capacity(20);
        let mut padding = false;
        for nibble in bytes.iter().flat_map(|b| [b & 0x0F, b >> 4]) {
            match nibble {
                0..=9 if !padding => digits.push(char::from(b'0' + nibble)),
                0xF => padding = true,
                _ => return Err(IdError::IccidNibble { nibble }),
            }
        }
        Self::new(&digits).map_err(|_| IdError::IccidNibble { nibble: 0xF })
    }

    /// The ten swapped-BCD bytes, F-padded.
    pub fn to_bcd(&self) -> [u8; 10] {
        let mut nibbles = self.0.bytes().map(|d| d - b'0').chain(std::iter::repeat(0xF));
        let mut out = [0; 10];
        for byte in &mut out {
            let low = nibbles.next().unwrap_or(0xF);
            let high = nibbles.next().unwrap_or(0xF);
            *byte = high << 4 | low;
        }
        out
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Iccid {
    type Err = IdError;

    fn from_str(digits: &str) -> Result<Self, IdError> {
        Self::new(digits)
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iccid({})", self.0)
    }
}

/// The eUICC's 16-byte identifier, printed as its 32 digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eid(pub [u8; 16]);

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eid({self})")
    }
}

/// An application identifier of 5 to 16 bytes (an ISD-P's, in ES10).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aid(Vec<u8>);

impl Aid {
    /// The AID of these bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, IdError> {
        if !(5..=16).contains(&bytes.len()) {
            return Err(IdError::AidLength { len: bytes.len() });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aid({self})")
    }
}

/// SGP.22's `VersionType`: three bytes, major, minor, revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// The major version (2 in SGP.22 v2.2.1).
    pub major: u8,
    /// The minor version.
    pub minor: u8,
    /// The revision.
    pub revision: u8,
}

impl Version {
    /// The version `major.minor.revision`.
    pub const fn new(major: u8, minor: u8, revision: u8) -> Self {
        Self { major, minor, revision }
    }

    /// The three bytes.
    pub const fn to_bytes(self) -> [u8; 3] {
        let Self { major, minor, revision } = self;
        [major, minor, revision]
    }
}

impl From<[u8; 3]> for Version {
    fn from([major, minor, revision]: [u8; 3]) -> Self {
        Self { major, minor, revision }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { major, minor, revision } = self;
        write!(f, "{major}.{minor}.{revision}")
    }
}

/// A DER BIT STRING such as `UICCCapability`: named bits are numbered from b8 of the first byte.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BitString {
    /// The content bytes after the unused-bits count.
    pub bytes: Vec<u8>,
    /// How many low bits of the last byte are padding (0 to 7).
    pub unused: u8,
}

impl BitString {
    /// A bit string with exactly the named bits `set`.
    pub fn from_bits(set: &[usize]) -> Self {
        let len = set.iter().max().map_or(0, |&max| max / 8 + 1);
        let mut bytes = vec![0; len];
        for &bit in set {
            bytes[bit / 8] |= 0x80 >> (bit % 8);
        }
        let used_in_last = set.iter().max().map_or(8, |&max| max % 8 + 1);
        let unused = u8::try_from(8 - used_in_last).unwrap_or(0);
        Self { bytes, unused }
    }

    /// Whether named bit `bit` is set; bits past the end read as clear.
    pub fn get(&self, bit: usize) -> bool {
        self.bytes
            .get(bit / 8)
            .is_some_and(|byte| byte & (0x80 >> (bit % 8)) != 0)
    }

    /// Reads the content of a BIT STRING field: the unused-bits count, then the bits.
    pub(crate) fn from_content(content: &[u8]) -> Option<Self> {
        let (&unused, bytes) = content.split_first()?;
        if unused > 7 || (bytes.is_empty() && unused != 0) {
            return None;
        }
        Some(Self {
            bytes: bytes.to_vec(),
            unused,
        })
    }

    /// The content of a BIT STRING field.
    pub(crate) fn to_content(&self) -> Vec<u8> {
        let Self { bytes, unused } = self;
        let mut out = Vec::with_capacity(bytes.len() + 1);
        out.push(*unused);
        out.extend_from_slice(bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iccid_is_nibble_swapped_bcd() {
        let iccid = Iccid::from_bcd(&[0x98, 0x00, 0x10, 0x32, 0x54, 0x76, 0x98, 0x10, 0x32, 0x14]).unwrap();
        assert_eq!(iccid.as_str(), "89000123456789012341");
        assert_eq!(
            iccid.to_bcd(),
            [0x98, 0x00, 0x10, 0x32, 0x54, 0x76, 0x98, 0x10, 0x32, 0x14]
        );
        // A 19-digit ICCID ends in F padding.
        let short = Iccid::new("8944500102198304826").unwrap();
        assert_eq!(short.to_bcd()[9], 0xF6);
        assert_eq!(Iccid::from_bcd(&short.to_bcd()), Ok(short));
        assert_eq!(
            Iccid::from_bcd(&[0x98, 0x00, 0x10, 0x32, 0x54, 0x76, 0x98, 0x10, 0x32, 0xA4]),
            Err(IdError::IccidNibble { nibble: 0xA })
        );
        // A digit after the padding started is not an ICCID.
        assert_eq!(
            Iccid::from_bcd(&[0xF8, 0x00, 0x10, 0x32, 0x54, 0x76, 0x98, 0x10, 0x32, 0x14]),
            Err(IdError::IccidNibble { nibble: 0 })
        );
        assert_eq!(Iccid::from_bcd(&[0xFF; 10]), Err(IdError::IccidNibble { nibble: 0xF }));
        assert_eq!(Iccid::from_bcd(&[0x98; 9]), Err(IdError::IccidBytes { len: 9 }));
        assert_eq!("89x".parse::<Iccid>(), Err(IdError::IccidDigit { found: 'x' }));
        assert_eq!(Iccid::new(&"1".repeat(21)), Err(IdError::IccidLength { len: 21 }));
    }

    #[test]
    fn bit_strings_number_bits_from_the_top() {
        let bits = BitString::from_bits(&[1, 9]);
        assert_eq!(bits.to_content(), [6, 0x40, 0x40]);
        assert!(bits.get(1) && bits.get(9) && !bits.get(0) && !bits.get(100));
        assert_eq!(BitString::from_content(&bits.to_content()), Some(bits));
        assert_eq!(BitString::from_content(&[8, 0]), None);
        assert_eq!(BitString::from_content(&[1]), None);
        assert_eq!(BitString::from_bits(&[]).to_content(), [0]);
        assert_eq!(Version::new(2, 2, 1).to_string(), "2.2.1");
    }
}
