//! TLVs: `u8 type | u16 length | value`, iterated without copying and built into a buffer.

use crate::{DecodeError, EncodeError};

/// One TLV borrowed from a frame's TLV section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub id: u8,
    pub value: &'a [u8],
}

/// Iterates the TLVs of a TLV section; stops after the first malformed one.
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
    offset: usize,
}

/// Iterates the TLVs in `bytes` (a frame's TLV section).
pub fn iter(bytes: &[u8]) -> Tlvs<'_> {
    Tlvs { rest: bytes, offset: 0 }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((header, tail)) = self.rest.split_first_chunk::<3>() else {
            let err = DecodeError::TruncatedTlv {
                offset: self.offset,
                needed: 3,
                available: self.rest.len(),
            };
            self.rest = &[];
            return Some(Err(err));
        };
        let len = usize::from(u16::from_le_bytes([header[1], header[2]]));
        let Some((value, after)) = tail.split_at_checked(len) else {
            let err = DecodeError::TruncatedTlv {
                offset: self.offset,
                needed: 3 + len,
                available: self.rest.len(),
            };
            self.rest = &[];
            return Some(Err(err));
        };
        self.rest = after;
        self.offset += 3 + len;
        Some(Ok(Tlv { id: header[0], value }))
    }
}

/// The value of the first TLV `id`, after checking that the whole section is well formed.
pub fn find(bytes: &[u8], id: u8) -> Result<Option<&[u8]>, DecodeError> {
    let mut found = None;
    for tlv in iter(bytes) {
        let tlv = tlv?;
        if tlv.id == id && found.is_none() {
            found = Some(tlv.value);
        }
    }
    Ok(found)
}

/// Like [`find`], for a TLV the message cannot do without.
pub fn require<'a>(bytes: &'a [u8], id: u8, message: &'static str) -> Result<&'a [u8], DecodeError> {
    find(bytes, id)?.ok_or(DecodeError::MissingTlv { message, tlv: id })
}

/// Reads a fixed-size TLV value.
pub fn fixed<const N: usize>(
    value: &[u8],
    id: u8,
    message: &'static str,
    expected: &'static str,
) -> Result<[u8; N], DecodeError> {
    value.try_into().map_err(|_| DecodeError::TlvSize {
        message,
        tlv: id,
        expected,
        actual: value.len(),
    })
}

/// Reads a TLV whose whole value is a string; modems pad with NULs and are not always UTF-8.
pub fn string(value: &[u8]) -> String {
    let end = value.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Reads a TLV whose value is exactly one `N`-byte field, if the TLV is present.
fn find_fixed<const N: usize>(
    tlvs: &[u8],
    id: u8,
    message: &'static str,
    expected: &'static str,
) -> Result<Option<[u8; N]>, DecodeError> {
    find(tlvs, id)?
        .map(|value| fixed(value, id, message, expected))
        .transpose()
}

/// The optional one-byte TLV `id`.
pub fn find_u8(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<u8>, DecodeError> {
    Ok(find_fixed::<1>(tlvs, id, message, "1")?.map(|[b]| b))
}

/// The optional one-byte boolean TLV `id` (any non-zero byte is true, as in libqmi).
pub fn find_bool(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<bool>, DecodeError> {
    Ok(find_u8(tlvs, id, message)?.map(|b| b != 0))
}

pub fn find_i8(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<i8>, DecodeError> {
    Ok(find_fixed::<1>(tlvs, id, message, "1")?.map(i8::from_le_bytes))
}

pub fn find_u16(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<u16>, DecodeError> {
    Ok(find_fixed::<2>(tlvs, id, message, "2")?.map(u16::from_le_bytes))
}

pub fn find_i16(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<i16>, DecodeError> {
    Ok(find_fixed::<2>(tlvs, id, message, "2")?.map(i16::from_le_bytes))
}

pub fn find_u32(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<u32>, DecodeError> {
    Ok(find_fixed::<4>(tlvs, id, message, "4")?.map(u32::from_le_bytes))
}

/// The optional string TLV `id` (the whole value, no length prefix).
pub fn find_string(tlvs: &[u8], id: u8) -> Result<Option<String>, DecodeError> {
    Ok(find(tlvs, id)?.map(string))
}

/// Reads the fields of one structured TLV value in order, checking every length.
///
/// Arrays inside values carry their element count first (one byte unless stated otherwise),
/// and strings inside values their length, as libqmi lays them out.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    value: &'a [u8],
    offset: usize,
    tlv: u8,
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(value: &'a [u8], tlv: u8, message: &'static str) -> Self {
        Self {
            value,
            offset: 0,
            tlv,
            message,
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.value[self.offset..];
        let Some(bytes) = rest.get(..n) else {
            return Err(DecodeError::FieldTruncated {
                message: self.message,
                tlv: self.tlv,
                offset: self.offset,
                needed: n,
                len: self.value.len(),
            });
        };
        self.offset += n;
        Ok(bytes)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        self.array().map(i8::from_le_bytes)
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        self.array().map(i16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A one-byte element count.
    pub fn count_u8(&mut self) -> Result<usize, DecodeError> {
        self.u8().map(usize::from)
    }

    /// A two-byte element count.
    pub fn count_u16(&mut self) -> Result<usize, DecodeError> {
        self.u16().map(usize::from)
    }

    /// Bytes preceded by a one-byte length.
    pub fn u8_prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.count_u8()?;
        self.take(len)
    }

    /// Bytes preceded by a two-byte length.
    pub fn u16_prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.count_u16()?;
        self.take(len)
    }

    /// `count` elements read by `element`; the capacity is bounded by the bytes left, so a
    /// lying count cannot make a large allocation.
    pub fn elements<T>(
        &mut self,
        count: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut out = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(out)
    }

    pub fn remaining(&self) -> usize {
        self.value.len() - self.offset
    }
}

/// Builds one structured TLV value, the mirror of [`Reader`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Value {
    buf: Vec<u8>,
}

impl Value {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.buf.push(value);
        self
    }

    pub fn i8(&mut self, value: i8) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u8(u8::from(value))
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    pub fn i16(&mut self, value: i16) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    /// A one-byte element count for `what`.
    pub fn count_u8(&mut self, what: &'static str, len: usize) -> Result<&mut Self, EncodeError> {
        let count = u8::try_from(len).map_err(|_| EncodeError::TooLong {
            what,
            len,
            max: usize::from(u8::MAX),
        })?;
        Ok(self.u8(count))
    }

    /// A two-byte element count for `what`.
    pub fn count_u16(&mut self, what: &'static str, len: usize) -> Result<&mut Self, EncodeError> {
        let count = u16::try_from(len).map_err(|_| EncodeError::TooLong {
            what,
            len,
            max: usize::from(u16::MAX),
        })?;
        Ok(self.u16(count))
    }

    /// Bytes preceded by a one-byte length.
    pub fn u8_prefixed(&mut self, what: &'static str, bytes: &[u8]) -> Result<&mut Self, EncodeError> {
        self.count_u8(what, bytes.len())?;
        Ok(self.bytes(bytes))
    }

    /// Bytes preceded by a two-byte length.
    pub fn u16_prefixed(&mut self, what: &'static str, bytes: &[u8]) -> Result<&mut Self, EncodeError> {
        self.count_u16(what, bytes.len())?;
        Ok(self.bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Builds a TLV section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one TLV.
    pub fn put(&mut self, id: u8, value: &[u8]) -> Result<&mut Self, EncodeError> {
        let len = u16::try_from(value.len()).map_err(|_| EncodeError::TooLong {
            what: "a TLV value",
            len: value.len(),
            max: usize::from(u16::MAX),
        })?;
        self.buf.push(id);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(value);
        Ok(self)
    }

    pub fn put_u8(&mut self, id: u8, value: u8) -> &mut Self {
        self.put_fixed(id, &[value])
    }

    pub fn put_u16(&mut self, id: u8, value: u16) -> &mut Self {
        self.put_fixed(id, &value.to_le_bytes())
    }

    pub fn put_u32(&mut self, id: u8, value: u32) -> &mut Self {
        self.put_fixed(id, &value.to_le_bytes())
    }

    pub fn put_bool(&mut self, id: u8, value: bool) -> &mut Self {
        self.put_u8(id, u8::from(value))
    }

    /// Appends a structured value built with [`Value`].
    pub fn put_value(&mut self, id: u8, value: &Value) -> Result<&mut Self, EncodeError> {
        self.put(id, value.as_bytes())
    }

    /// Appends the TLV only when there is something to say.
    pub fn put_opt<T>(
        &mut self,
        id: u8,
        value: Option<T>,
        put: impl FnOnce(&mut Self, u8, T) -> &mut Self,
    ) -> &mut Self {
        if let Some(value) = value {
            put(self, id, value);
        }
        self
    }

    /// Appends a TLV whose value is small by construction, so it cannot fail.
    pub fn put_fixed<const N: usize>(&mut self, id: u8, value: &[u8; N]) -> &mut Self {
        const { assert!(N <= u16::MAX as usize) };
        self.buf.push(id);
        #[expect(clippy::cast_possible_truncation, reason = "N is checked at compile time")]
        self.buf.extend_from_slice(&(N as u16).to_le_bytes());
        self.buf.extend_from_slice(value);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_and_builds() {
        let mut w = Writer::new();
        w.put_u8(0x01, 2).put_u16(0x02, 0x0102);
        w.put(0x10, b"abc").unwrap();
        let bytes = w.into_bytes();
        assert_eq!(
            bytes,
            [0x01, 1, 0, 2, 0x02, 2, 0, 0x02, 0x01, 0x10, 3, 0, b'a', b'b', b'c']
        );
        let tlvs: Vec<_> = iter(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(tlvs.len(), 3);
        assert_eq!(
            tlvs[2],
            Tlv {
                id: 0x10,
                value: b"abc"
            }
        );
        assert_eq!(find(&bytes, 0x02).unwrap(), Some(&[0x02, 0x01][..]));
        assert_eq!(find(&bytes, 0x11).unwrap(), None);
    }

    #[test]
    fn truncated_tlvs_are_errors() {
        assert_eq!(
            iter(&[0x01, 5, 0, 1, 2]).next(),
            Some(Err(DecodeError::TruncatedTlv {
                offset: 0,
                needed: 8,
                available: 5
            }))
        );
        let mut it = iter(&[0x01, 0, 0, 0x02]);
        assert!(matches!(it.next(), Some(Ok(_))));
        assert!(matches!(
            it.next(),
            Some(Err(DecodeError::TruncatedTlv { offset: 3, .. }))
        ));
        assert_eq!(it.next(), None);
        assert!(find(&[0x01, 0, 0, 0x02], 0x01).is_err());
    }

    #[test]
    fn strings_drop_trailing_nuls() {
        assert_eq!(string(b"QUALCOMM\0\0"), "QUALCOMM");
        assert_eq!(string(b"\0"), "");
        assert_eq!(string(b"\xffx"), "\u{fffd}x");
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = vec![0; 70_000];
        assert!(matches!(
            Writer::new().put(1, &big),
            Err(EncodeError::TooLong { len: 70_000, .. })
        ));
    }
}
