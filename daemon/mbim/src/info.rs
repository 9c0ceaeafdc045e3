//! Information buffers: a fixed part of little-endian fields, then variable data the fixed part
//! references by `{offset, size}` (offsets from the start of the buffer, data padded to 4 bytes).
//!
//! Nested structures (the elements of a ref-struct-array) are information buffers of their own:
//! their offsets count from the element's start, so they are read and written with their own
//! [`Reader`] and [`Writer`].

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{DecodeError, EncodeError, Uuid};

/// How a reference to variable data is written in the fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    /// `{u32 offset, u32 size}`: strings, byte arrays, ref-struct-array elements.
    OffsetSize,
    /// `{u32 size, u32 offset}`: libmbim's `uicc-ref-byte-array` (MS UICC low-level access).
    SizeOffset,
    /// `u32 offset` alone, the element count being another field: struct-array, ipv4-array, ref-ipv4.
    Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    /// Where in the fixed part the reference goes.
    at: usize,
    kind: RefKind,
    data: Vec<u8>,
}

/// Builds an information buffer: fixed fields in call order, variable data after them in the
/// order it was referenced, each item padded to 4 bytes (as libmbim lays them out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    fixed: Vec<u8>,
    refs: Vec<Ref>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.fixed.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.fixed.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.fixed.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.fixed.extend_from_slice(&value.0);
        self
    }

    /// Bytes written inline in the fixed part (a guint32-array, an unpadded tail).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.fixed.extend_from_slice(bytes);
        self
    }

    /// A UTF-16LE string referenced by `{offset, size}`; size counts bytes, with no terminator.
    pub fn string(&mut self, value: &str) -> &mut Self {
        let data = value.encode_utf16().flat_map(u16::to_le_bytes).collect();
        self.reference(RefKind::OffsetSize, data)
    }

    /// A byte array referenced by `{offset, size}`.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.reference(RefKind::OffsetSize, value.to_vec())
    }

    /// A byte array referenced by `{size, offset}` (libmbim's `uicc-ref-byte-array`).
    pub fn uicc_bytes(&mut self, value: &[u8]) -> &mut Self {
        self.reference(RefKind::SizeOffset, value.to_vec())
    }

    /// Data referenced by its offset alone (struct-array, ipv4/ipv6 arrays, ref-ipv4/ref-ipv6).
    pub fn offset_only(&mut self, data: Vec<u8>) -> &mut Self {
        self.reference(RefKind::Offset, data)
    }

    /// One `{offset, size}` pair per element, each element an already built nested buffer.
    /// The element count is a separate field the caller writes first.
    pub fn ref_struct_array(&mut self, elements: Vec<Vec<u8>>) -> &mut Self {
        for element in elements {
            self.reference(RefKind::OffsetSize, element);
        }
        self
    }

    /// One `{offset, size}` pair per string (libmbim's `string-array`).
    pub fn string_array<S: AsRef<str>>(&mut self, values: &[S]) -> &mut Self {
        for value in values {
            self.string(value.as_ref());
        }
        self
    }

    fn reference(&mut self, kind: RefKind, data: Vec<u8>) -> &mut Self {
        let at = self.fixed.len();
        let width = if kind == RefKind::Offset { 4 } else { 8 };
        self.fixed.resize(at + width, 0);
        self.refs.push(Ref { at, kind, data });
        self
    }

    /// Lays out the variable data and fills in every reference.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        let Self { mut fixed, refs } = self;
        let too_long = |len| EncodeError::TooLong {
            what: "an information buffer",
            len,
            max: u32::MAX as usize,
        };
        let mut out_data = Vec::new();
        for Ref { at, kind, data } in refs {
            // Empty data is referenced as offset 0, size 0 and takes no room, as libmbim does.
            let (offset, size) = if data.is_empty() {
                (0, 0)
            } else {
                let offset = fixed.len() + out_data.len();
                out_data.extend_from_slice(&data);
                out_data.resize(out_data.len().next_multiple_of(4), 0);
                (
                    u32::try_from(offset).map_err(|_| too_long(offset))?,
                    u32::try_from(data.len()).map_err(|_| too_long(data.len()))?,
                )
            };
            let slot = match kind {
                RefKind::OffsetSize => [offset.to_le_bytes(), size.to_le_bytes()].concat(),
                RefKind::SizeOffset => [size.to_le_bytes(), offset.to_le_bytes()].concat(),
                RefKind::Offset => offset.to_le_bytes().to_vec(),
            };
            fixed[at..at + slot.len()].copy_from_slice(&slot);
        }
        fixed.extend_from_slice(&out_data);
        u32::try_from(fixed.len()).map_err(|_| too_long(fixed.len()))?;
        Ok(fixed)
    }
}

/// Reads an information buffer: fixed fields in order, variable data through their references.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// `message` names the buffer in errors, e.g. "BASIC_CONNECT DEVICE_CAPS response".
    pub fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self { buf, pos: 0, message }
    }

    /// The whole buffer.
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }

    /// Bytes of the fixed part not read yet (and whatever variable data follows them).
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos + N;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::InfoTruncated {
            message: self.message,
            needed: end,
            available: self.buf.len(),
        })?;
        self.pos = end;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.fixed().map(u32::from_le_bytes)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        self.fixed().map(i32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.fixed().map(u64::from_le_bytes)
    }

    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        self.fixed().map(Uuid)
    }

    /// `count` u32 values written inline (a guint32-array).
    pub fn u32_array(&mut self, count: u32) -> Result<Vec<u32>, DecodeError> {
        // Each value consumes 4 bytes or fails, so a huge count cannot allocate much.
        (0..count).map(|_| self.u32()).collect()
    }

    /// The variable data at `offset`; `size` bytes long.
    pub fn at(&self, field: &'static str, offset: u32, size: u32) -> Result<&'a [u8], DecodeError> {
        if size == 0 {
            return Ok(&[]);
        }
        let start = offset as usize;
        start
            .checked_add(size as usize)
            .and_then(|end| self.buf.get(start..end))
            .ok_or(DecodeError::OutOfBounds {
                message: self.message,
                field,
                offset,
                size,
                len: self.buf.len(),
            })
    }

    /// A `{offset, size}` reference.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let offset = self.u32()?;
        let size = self.u32()?;
        self.at(field, offset, size)
    }

    /// A `{size, offset}` reference (libmbim's `uicc-ref-byte-array`).
    pub fn uicc_bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let size = self.u32()?;
        let offset = self.u32()?;
        self.at(field, offset, size)
    }

    /// A UTF-16LE string referenced by `{offset, size}`; trailing NULs are dropped.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(field)?;
        utf16(bytes, self.message, field)
    }

    /// `count` strings, one `{offset, size}` pair each (libmbim's `string-array`).
    pub fn string_array(&mut self, field: &'static str, count: u32) -> Result<Vec<String>, DecodeError> {
        (0..count).map(|_| self.string(field)).collect()
    }

    /// `count` nested structures, one `{offset, size}` pair each (a ref-struct-array).
    pub fn ref_struct_array(&mut self, field: &'static str, count: u32) -> Result<Vec<&'a [u8]>, DecodeError> {
        (0..count).map(|_| self.bytes(field)).collect()
    }

    /// `count` elements of `element` bytes at one offset (struct-array, ipv4-array, ipv6-array).
    pub fn offset_array(
        &mut self,
        field: &'static str,
        count: u32,
        element: usize,
    ) -> Result<Vec<&'a [u8]>, DecodeError> {
        let offset = self.u32()?;
        let size = (count as usize)
            .checked_mul(element)
            .and_then(|size| u32::try_from(size).ok())
            .ok_or(DecodeError::OutOfBounds {
                message: self.message,
                field,
                offset,
                size: u32::MAX,
                len: self.buf.len(),
            })?;
        Ok(self.at(field, offset, size)?.chunks_exact(element.max(1)).collect())
    }

    /// An optional element referenced by its offset alone, 0 meaning absent (ref-ipv4, ref-ipv6).
    pub fn optional_offset(&mut self, field: &'static str, element: u32) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.u32()? {
            0 => Ok(None),
            offset => self.at(field, offset, element).map(Some),
        }
    }

    /// Reads an IPv4 address from a 4-byte slice (network order, as MBIM sends it).
    pub fn ipv4(bytes: &[u8]) -> Ipv4Addr {
        let mut octets = [0; 4];
        octets.copy_from_slice(&bytes[..4]);
        Ipv4Addr::from(octets)
    }

    /// Reads an IPv6 address from a 16-byte slice.
    pub fn ipv6(bytes: &[u8]) -> Ipv6Addr {
        let mut octets = [0; 16];
        octets.copy_from_slice(&bytes[..16]);
        Ipv6Addr::from(octets)
    }
}

/// Decodes UTF-16LE; unpaired surrogates become U+FFFD, as modems are not always careful.
fn utf16(bytes: &[u8], message: &'static str, field: &'static str) -> Result<String, DecodeError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(DecodeError::OddStringLength {
            message,
            field,
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        });
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let end = units.iter().rposition(|&u| u != 0).map_or(0, |last| last + 1);
    Ok(String::from_utf16_lossy(&units[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_libmbim() {
        // The mbim-proxy configuration: string then u32, data after the 12-byte fixed part.
        let mut w = Writer::new();
        w.string("/dev/a").u32(30);
        let bytes = w.finish().unwrap();
        assert_eq!(
            bytes,
            [
                12, 0, 0, 0, 12, 0, 0, 0, 30, 0, 0, 0, b'/', 0, b'd', 0, b'e', 0, b'v', 0, b'/', 0, b'a', 0
            ]
        );
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.string("path").unwrap(), "/dev/a");
        assert_eq!(r.u32().unwrap(), 30);
        assert!(Reader::new(&bytes[..10], "test").fixed::<12>().is_err());
    }

    #[test]
    fn uicc_references_are_size_first_and_data_is_padded() {
        let mut w = Writer::new();
        w.uicc_bytes(&[0xa0, 0, 0]).u32(4).bytes(&[0x55]).bytes(&[]);
        let bytes = w.finish().unwrap();
        assert_eq!(
            bytes,
            [
                3, 0, 0, 0, 28, 0, 0, 0, 4, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa0, 0, 0, 0,
                0x55, 0, 0, 0
            ]
        );
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.uicc_bytes("a").unwrap(), [0xa0, 0, 0]);
        assert_eq!(r.u32().unwrap(), 4);
        assert_eq!(r.bytes("b").unwrap(), [0x55]);
        assert_eq!(r.bytes("c").unwrap(), [] as [u8; 0]);
    }

    #[test]
    fn bad_references_are_errors() {
        let bytes = [8, 0, 0, 0, 4, 0, 0, 0];
        assert!(matches!(
            Reader::new(&bytes, "t").bytes("f"),
            Err(DecodeError::OutOfBounds { offset: 8, size: 4, .. })
        ));
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(Reader::new(&bytes, "t").bytes("f").is_err());
        let bytes = [8, 0, 0, 0, 1, 0, 0, 0, b'a', 0];
        assert!(matches!(
            Reader::new(&bytes, "t").string("f"),
            Err(DecodeError::OddStringLength { size: 1, .. })
        ));
        assert!(Reader::new(&[0; 4], "t").offset_array("f", u32::MAX, 20).is_err());
        assert!(Reader::new(&[0; 4], "t").u32_array(u32::MAX).is_err());
    }
}
