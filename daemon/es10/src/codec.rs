//! What every ES10 decoder shares: the decode error, tag constants and the ASN.1 primitives
//! (INTEGER, BOOLEAN, `UTF8String`, OCTET STRING) as SGP.22 encodes them in DER.

use aiesim_apdu::tlv::{self, Tag, Tlv, TlvError};

use crate::types::IdError;

/// Why bytes could not be read as an ES10 request or response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the bytes are not well-formed BER-TLV")]
    Tlv(#[source] TlvError),
    #[error("expected tag {expected} but found {found}")]
    UnexpectedTag { expected: Tag, found: Tag },
    #[error("the mandatory field {tag} is missing from {parent}")]
    Missing { tag: Tag, parent: Tag },
    #[error("field {tag} is {len} bytes long, but it must be {expected}")]
    Length {
        tag: Tag,
        len: usize,
        expected: &'static str,
    },
    #[error("field {tag} is not a non-negative integer that fits 64 bits")]
    Integer { tag: Tag },
    #[error("field {tag} is not valid UTF-8")]
    Utf8 { tag: Tag },
    #[error("field {tag} does not hold a valid identifier")]
    Id {
        tag: Tag,
        #[source]
        source: IdError,
    },
    #[error("field {tag} holds none of the alternatives it allows")]
    Choice { tag: Tag },
    #[error("tag {tag} is not an ES10 request this crate knows")]
    UnknownRequest { tag: Tag },
}

impl From<TlvError> for DecodeError {
    fn from(error: TlvError) -> Self {
        Self::Tlv(error)
    }
}

/// A tag constant; an invalid one fails the build, never a run.
pub(crate) const fn t(raw: u32) -> Tag {
    match Tag::new(raw) {
        Some(tag) => tag,
        None => panic!("invalid tag constant"),
    }
}

/// `bytes` read as exactly one TLV tagged `expected`.
pub(crate) fn outer(bytes: &[u8], expected: Tag) -> Result<Tlv<'_>, DecodeError> {
    let tlv = Tlv::parse_exact(bytes)?;
    if tlv.tag != expected {
        return Err(DecodeError::UnexpectedTag {
            expected,
            found: tlv.tag,
        });
    }
    Ok(tlv)
}

/// The children of `value`, all checked to be well formed.
pub(crate) fn children(value: &[u8]) -> Result<Vec<Tlv<'_>>, DecodeError> {
    Ok(tlv::iter(value).collect::<Result<_, _>>()?)
}

/// The first child tagged `tag`.
pub(crate) fn first<'a>(fields: &[Tlv<'a>], tag: Tag) -> Option<Tlv<'a>> {
    fields.iter().copied().find(|field| field.tag == tag)
}

/// The first child tagged `tag`, which must be there.
pub(crate) fn required<'a>(fields: &[Tlv<'a>], tag: Tag, parent: Tag) -> Result<Tlv<'a>, DecodeError> {
    first(fields, tag).ok_or(DecodeError::Missing { tag, parent })
}

/// A DER INTEGER that must be non-negative and fit a u64 (a leading 00 byte is allowed).
pub(crate) fn uint(field: Tlv<'_>) -> Result<u64, DecodeError> {
    let error = DecodeError::Integer { tag: field.tag };
    match field.value {
        [] => Err(error),
        [first, ..] if first & 0x80 != 0 => Err(error),
        [0, rest @ ..] if rest.len() == 8 => Ok(be(rest)),
        value if value.len() <= 8 => Ok(be(value)),
        _ => Err(error),
    }
}

/// A small DER INTEGER such as a result code.
pub(crate) fn small_uint(field: Tlv<'_>) -> Result<u8, DecodeError> {
    u8::try_from(uint(field)?).map_err(|_| DecodeError::Integer { tag: field.tag })
}

/// An unsigned big-endian number of up to 8 bytes, not an ASN.1 INTEGER (extCardResource).
pub(crate) fn unsigned_be(field: Tlv<'_>) -> Result<u64, DecodeError> {
    if field.value.is_empty() || field.value.len() > 8 {
        return Err(DecodeError::Integer { tag: field.tag });
    }
    Ok(be(field.value))
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b))
}

/// The DER INTEGER content of a non-negative number: minimal, with a 00 before a set b8.
pub(crate) fn uint_bytes(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&bytes[skip..]);
    out
}

/// The minimal unsigned big-endian bytes of `value`, at least one.
pub(crate) fn unsigned_be_bytes(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    bytes[skip..].to_vec()
}

/// A BOOLEAN: DER writes FF for true, but any non-zero byte reads as true.
pub(crate) fn boolean(field: Tlv<'_>) -> Result<bool, DecodeError> {
    match field.value {
        [byte] => Ok(*byte != 0),
        value => Err(DecodeError::Length {
            tag: field.tag,
            len: value.len(),
            expected: "1 byte",
        }),
    }
}

/// A `UTF8String`.
pub(crate) fn utf8(field: Tlv<'_>) -> Result<String, DecodeError> {
    std::str::from_utf8(field.value)
        .map(str::to_owned)
        .map_err(|_| DecodeError::Utf8 { tag: field.tag })
}

/// A value of exactly `N` bytes.
pub(crate) fn fixed<const N: usize>(field: Tlv<'_>, expected: &'static str) -> Result<[u8; N], DecodeError> {
    field.value.try_into().map_err(|_| DecodeError::Length {
        tag: field.tag,
        len: field.value.len(),
        expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_der() {
        for (value, bytes) in [
            (0, &[0x00][..]),
            (1, &[0x01]),
            (127, &[0x7F]),
            (128, &[0x00, 0x80]),
            (0x1234, &[0x12, 0x34]),
            (u64::MAX, &[0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        ] {
            assert_eq!(uint_bytes(value), bytes, "{value}");
            let field = Tlv {
                tag: t(0x80),
                value: bytes,
            };
            assert_eq!(uint(field), Ok(value));
        }
        for bad in [&[][..], &[0x80], &[0xFF, 0xFF], &[1, 0, 0, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(
                uint(Tlv {
                    tag: t(0x80),
                    value: bad
                }),
                Err(DecodeError::Integer { tag: t(0x80) })
            );
        }
        assert_eq!(unsigned_be_bytes(0), [0]);
        assert_eq!(unsigned_be_bytes(0x8000), [0x80, 0]);
    }
}
