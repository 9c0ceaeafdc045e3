//! BER-TLV (ISO 7816-4 §5.2, the X.690 subset ES10 and IoT SAFE use): tags of up to three
//! bytes, definite lengths of up to three bytes, parsed without copying and built with
//! minimal lengths. [`simple`] reads the one-byte-tag, one-byte-length TLVs of IoT SAFE.
//!
//! Offsets in errors count from the start of the slice being read: for children, the start
//! of their parent's value.

use std::fmt;

/// The most value bytes a three-byte length field (`83 xx xx xx`) can announce.
pub const MAX_VALUE_LEN: usize = 0xFF_FFFF;

/// b6 of a tag's first byte: the value is itself a sequence of TLVs.
const CONSTRUCTED: u8 = 0x20;
/// b5-b1 of a first byte all set: the tag number continues in the following bytes.
const MORE_TAG_BYTES: u8 = 0x1F;
/// b8 of a subsequent tag byte: another byte follows.
const TAG_CONTINUES: u8 = 0x80;

/// A BER tag of one to three bytes, held as its bytes read big-endian (`0xBF3E`, `0x5A`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(u32);

/// A tag's class, b8-b7 of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 00: X.690's own types (`30` SEQUENCE, `04` OCTET STRING).
    Universal,
    /// 01: e.g. `5A`, `4F`, `5F20`.
    Application,
    /// 10: e.g. `A0`, `9F70`, `BF3E`; most of ES10.
    ContextSpecific,
    /// 11: e.g. `E3` in profile lists.
    Private,
}

impl Tag {
    /// The tag whose bytes read big-endian are `raw`, if they form one valid tag of 1 to 3 bytes.
    pub const fn new(raw: u32) -> Option<Self> {
        let [b3, b2, b1, b0] = raw.to_be_bytes();
        let valid = match (b3, b2, b1) {
            (0, 0, 0) => b0 & MORE_TAG_BYTES != MORE_TAG_BYTES,
            (0, 0, first) => first & MORE_TAG_BYTES == MORE_TAG_BYTES && b0 & TAG_CONTINUES == 0,
            (0, first, middle) => {
                first & MORE_TAG_BYTES == MORE_TAG_BYTES && middle & TAG_CONTINUES != 0 && b0 & TAG_CONTINUES == 0
            }
            _ => false,
        };
        if valid { Some(Self(raw)) } else { None }
    }

    /// The tag's bytes read big-endian.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// How many bytes the tag takes: 1 to 3.
    pub const fn encoded_len(self) -> usize {
        match self.0 {
            0..=0xFF => 1,
            0x100..=0xFFFF => 2,
            _ => 3,
        }
    }

    const fn first_byte(self) -> u8 {
        self.0.to_be_bytes()[4 - self.encoded_len()]
    }

    /// Whether the value is itself a sequence of TLVs (b6 of the first byte).
    pub const fn is_constructed(self) -> bool {
        self.first_byte() & CONSTRUCTED != 0
    }

    /// The class in b8-b7 of the first byte.
    pub const fn class(self) -> Class {
        match self.first_byte() >> 6 {
            0 => Class::Universal,
            1 => Class::Application,
            2 => Class::ContextSpecific,
            _ => Class::Private,
        }
    }

    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes()[4 - self.encoded_len()..]);
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$X}", self.0, width = 2 * self.encoded_len())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

/// Why bytes could not be read, or a value not written, as TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("the TLV at offset {offset} needs {needed} bytes but only {available} remain")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("the tag at offset {offset} is longer than three bytes")]
    TagTooLong { offset: usize },
    #[error("the TLV at offset {offset} has the indefinite length 80, which ISO 7816-4 does not allow")]
    IndefiniteLength { offset: usize },
    #[error("the TLV at offset {offset} has a {len_bytes}-byte length field; at most 3 bytes are allowed")]
    LengthTooLong { offset: usize, len_bytes: usize },
    #[error("{trailing} bytes follow the TLV that should end at offset {offset}")]
    TrailingBytes { offset: usize, trailing: usize },
    #[error("a TLV value of {len} bytes exceeds the {max} bytes its length field can announce")]
    ValueTooLong { len: usize, max: usize },
    #[error("tag {tag} is primitive, so it cannot hold nested TLVs")]
    NotConstructed { tag: Tag },
}

/// One TLV borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tlv<'a> {
    /// The tag, with its class and constructed bit.
    pub tag: Tag,
    /// The value, borrowed; for constructed tags, the encoded children.
    pub value: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Reads the TLV at the start of `bytes` and returns it with the bytes after it.
    pub fn parse(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), TlvError> {
        read(bytes, 0)
    }

    /// Reads `bytes` as exactly one TLV.
    pub fn parse_exact(bytes: &'a [u8]) -> Result<Self, TlvError> {
        let (tlv, rest) = Self::parse(bytes)?;
        if !rest.is_empty() {
            return Err(TlvError::TrailingBytes {
                offset: bytes.len() - rest.len(),
                trailing: rest.len(),
            });
        }
        Ok(tlv)
    }

    /// Whether the value holds nested TLVs.
    pub fn is_constructed(&self) -> bool {
        self.tag.is_constructed()
    }

    /// The TLVs inside the value; meaningful for constructed tags.
    pub fn children(&self) -> Tlvs<'a> {
        iter(self.value)
    }

    /// The first child with `tag`, after checking that all children are well formed.
    pub fn find(&self, tag: Tag) -> Result<Option<Tlv<'a>>, TlvError> {
        find(self.value, tag)
    }
}

/// Iterates sibling TLVs; stops after the first malformed one.
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
    offset: usize,
}

/// Iterates the TLVs in `bytes`.
pub fn iter(bytes: &[u8]) -> Tlvs<'_> {
    Tlvs { rest: bytes, offset: 0 }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, TlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match read(self.rest, self.offset) {
            Ok((tlv, rest)) => {
                self.offset += self.rest.len() - rest.len();
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

/// The first TLV with `tag` among the siblings in `bytes`, after checking they are all well formed.
pub fn find(bytes: &[u8], tag: Tag) -> Result<Option<Tlv<'_>>, TlvError> {
    let mut found = None;
    for tlv in iter(bytes) {
        let tlv = tlv?;
        if tlv.tag == tag && found.is_none() {
            found = Some(tlv);
        }
    }
    Ok(found)
}

/// Descends through `path`: the first tag among `bytes`, the next inside its value, and so on.
pub fn find_path<'a>(bytes: &'a [u8], path: &[Tag]) -> Result<Option<Tlv<'a>>, TlvError> {
    let Some((&first, rest)) = path.split_first() else {
        return Ok(None);
    };
    let Some(mut tlv) = find(bytes, first)? else {
        return Ok(None);
    };
    for &tag in rest {
        match tlv.find(tag)? {
            Some(child) => tlv = child,
            None => return Ok(None),
        }
    }
    Ok(Some(tlv))
}

/// Reads one TLV at the start of `bytes`, which sits at `offset` in what is being iterated.
fn read(bytes: &[u8], offset: usize) -> Result<(Tlv<'_>, &[u8]), TlvError> {
    let truncated = |needed| TlvError::Truncated {
        offset,
        needed,
        available: bytes.len(),
    };
    let tag_len = match bytes {
        [] => return Err(truncated(1)),
        [first, ..] if first & MORE_TAG_BYTES != MORE_TAG_BYTES => 1,
        [_] => return Err(truncated(2)),
        [_, second, ..] if second & TAG_CONTINUES == 0 => 2,
        [_, _] => return Err(truncated(3)),
        [_, _, third, ..] if third & TAG_CONTINUES == 0 => 3,
        _ => return Err(TlvError::TagTooLong { offset }),
    };
    let (tag_bytes, after_tag) = bytes.split_at(tag_len);
    let tag = Tag(tag_bytes.iter().fold(0, |raw, &b| raw << 8 | u32::from(b)));
    let (len, len_len) = match after_tag {
        [] => return Err(truncated(tag_len + 1)),
        &[short, ..] if short < 0x80 => (usize::from(short), 1),
        [0x80, ..] => return Err(TlvError::IndefiniteLength { offset }),
        &[long, ref rest @ ..] => {
            let len_bytes = usize::from(long & 0x7F);
            if len_bytes > 3 {
                return Err(TlvError::LengthTooLong { offset, len_bytes });
            }
            let Some(field) = rest.get(..len_bytes) else {
                return Err(truncated(tag_len + 1 + len_bytes));
            };
            // Non-minimal forms such as 81 05 are accepted: BER allows them and cards send them.
            let len = field.iter().fold(0, |len, &b| len << 8 | usize::from(b));
            (len, 1 + len_bytes)
        }
    };
    let header = tag_len + len_len;
    let Some((value, rest)) = bytes[header..].split_at_checked(len) else {
        return Err(truncated(header + len));
    };
    Ok((Tlv { tag, value }, rest))
}

/// Appends a definite length in its shortest form.
fn write_len(out: &mut Vec<u8>, len: usize) -> Result<(), TlvError> {
    let too_long = TlvError::ValueTooLong {
        len,
        max: MAX_VALUE_LEN,
    };
    let bytes = u32::try_from(len).map_err(|_| too_long)?.to_be_bytes();
    match len {
        0..=0x7F => out.push(bytes[3]),
        0x80..=0xFF => out.extend_from_slice(&[0x81, bytes[3]]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, bytes[2], bytes[3]]),
        0x1_0000..=MAX_VALUE_LEN => out.extend_from_slice(&[0x83, bytes[1], bytes[2], bytes[3]]),
        _ => return Err(too_long),
    }
    Ok(())
}

/// Builds BER-TLV with minimal length fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one TLV whose value is `value` as given (for a constructed tag: encoded children).
    pub fn put(&mut self, tag: Tag, value: &[u8]) -> Result<&mut Self, TlvError> {
        let Self { buf } = self;
        let start = buf.len();
        tag.write(buf);
        if let Err(error) = write_len(buf, value.len()) {
            buf.truncate(start);
            return Err(error);
        }
        buf.extend_from_slice(value);
        Ok(self)
    }

    /// Appends a constructed TLV whose children `build` writes.
    pub fn put_constructed(
        &mut self,
        tag: Tag,
        build: impl FnOnce(&mut Writer) -> Result<(), TlvError>,
    ) -> Result<&mut Self, TlvError> {
        if !tag.is_constructed() {
            return Err(TlvError::NotConstructed { tag });
        }
        let mut children = Self::new();
        build(&mut children)?;
        self.put(tag, &children.buf)
    }

    /// What has been written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The written bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Simple-TLV as IoT SAFE uses it: a one-byte tag, a one-byte length, the value.
pub mod simple {
    use super::TlvError;

    /// The most value bytes a one-byte length announces.
    pub const MAX_VALUE_LEN: usize = 0xFF;

    /// One simple-TLV borrowed from the bytes it was read from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Tlv<'a> {
        /// The one-byte tag.
        pub tag: u8,
        /// The value, at most 255 bytes, borrowed.
        pub value: &'a [u8],
    }

    /// Iterates simple-TLVs; stops after the first malformed one.
    #[derive(Debug, Clone)]
    pub struct Tlvs<'a> {
        rest: &'a [u8],
        offset: usize,
    }

    /// Iterates the simple-TLVs in `bytes`.
    pub fn iter(bytes: &[u8]) -> Tlvs<'_> {
        Tlvs { rest: bytes, offset: 0 }
    }

    impl<'a> Iterator for Tlvs<'a> {
        type Item = Result<Tlv<'a>, TlvError>;

        fn next(&mut self) -> Option<Self::Item> {
            let Self { rest, offset } = self;
            let parsed = match *rest {
                [] => return None,
                &[tag, len, ref tail @ ..] => tail
                    .split_at_checked(usize::from(len))
                    .map(|(value, after)| (tag, value, after))
                    .ok_or(2 + usize::from(len)),
                [_] => Err(2),
            };
            match parsed {
                Ok((tag, value, after)) => {
                    *offset += 2 + value.len();
                    *rest = after;
                    Some(Ok(Tlv { tag, value }))
                }
                Err(needed) => {
                    let error = TlvError::Truncated {
                        offset: *offset,
                        needed,
                        available: rest.len(),
                    };
                    *rest = &[];
                    Some(Err(error))
                }
            }
        }
    }

    /// The value of the first simple-TLV `tag`, after checking that all are well formed.
    pub fn find(bytes: &[u8], tag: u8) -> Result<Option<&[u8]>, TlvError> {
        let mut found = None;
        for tlv in iter(bytes) {
            let tlv = tlv?;
            if tlv.tag == tag && found.is_none() {
                found = Some(tlv.value);
            }
        }
        Ok(found)
    }

    /// Appends one simple-TLV, e.g. IoT SAFE's `84 01 <key id>`.
    pub fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) -> Result<(), TlvError> {
        let len = u8::try_from(value.len()).map_err(|_| TlvError::ValueTooLong {
            len: value.len(),
            max: MAX_VALUE_LEN,
        })?;
        out.extend_from_slice(&[tag, len]);
        out.extend_from_slice(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::hex;

    fn tag(raw: u32) -> Tag {
        Tag::new(raw).unwrap()
    }

    const EID: &str = "89049032123451234512345678901235";

    #[test]
    fn get_eid_response_down_to_the_eid() {
        let bytes = hex(&format!("BF3E12 5A10 {EID}"));
        let outer = Tlv::parse_exact(&bytes).unwrap();
        assert_eq!(outer.tag, tag(0xBF3E));
        assert!(outer.is_constructed());
        assert_eq!(outer.tag.class(), Class::ContextSpecific);
        let eid = outer.find(tag(0x5A)).unwrap().unwrap();
        assert!(!eid.is_constructed());
        assert_eq!(eid.value, hex(EID));
        assert_eq!(find_path(&bytes, &[tag(0xBF3E), tag(0x5A)]).unwrap(), Some(eid));
        assert_eq!(find_path(&bytes, &[tag(0xBF3E), tag(0x4F)]).unwrap(), None);
        assert_eq!(find_path(&bytes, &[]).unwrap(), None);
    }

    #[test]
    fn tags_of_one_to_three_bytes() {
        for (raw, len, constructed, class) in [
            (0x5A, 1, false, Class::Application),
            (0xA0, 1, true, Class::ContextSpecific),
            (0x30, 1, true, Class::Universal),
            (0xE3, 1, true, Class::Private),
            (0x9F70, 2, false, Class::ContextSpecific),
            (0x5F20, 2, false, Class::Application),
            (0xBF3E, 2, true, Class::ContextSpecific),
            (0xBF_8101, 3, true, Class::ContextSpecific),
        ] {
            let t = tag(raw);
            assert_eq!(
                (t.encoded_len(), t.is_constructed(), t.class()),
                (len, constructed, class),
                "{t}"
            );
            let mut w = Writer::new();
            w.put(t, &[1, 2]).unwrap();
            let bytes = w.into_bytes();
            assert_eq!(bytes.len(), len + 3);
            assert_eq!(Tlv::parse_exact(&bytes).unwrap(), Tlv { tag: t, value: &[1, 2] });
        }
        for invalid in [0x1F, 0xBF, 0xBF81, 0x5A5A, 0xBF_3E01, 0xBF_8181, 0x0100_0000] {
            assert_eq!(Tag::new(invalid), None, "{invalid:#x}");
        }
        assert_eq!(tag(0x9F70).to_string(), "9F70");
        assert_eq!(format!("{:?}", tag(0x5A)), "Tag(5A)");
        assert_eq!(Tlv::parse(&hex("BF818101 00")), Err(TlvError::TagTooLong { offset: 0 }));
    }

    #[test]
    fn length_forms() {
        let value = vec![0xEE; 0x1_0001];
        for (len, header) in [
            (0, "5A00"),
            (0x7F, "5A7F"),
            (0x80, "5A8180"),
            (0xFF, "5A81FF"),
            (0x100, "5A820100"),
            (0xFFFF, "5A82FFFF"),
            (0x1_0000, "5A83010000"),
        ] {
            let mut w = Writer::new();
            w.put(tag(0x5A), &value[..len]).unwrap();
            let bytes = w.into_bytes();
            assert_eq!(bytes[..header.len() / 2], hex(header), "{len}");
            assert_eq!(Tlv::parse_exact(&bytes).unwrap().value.len(), len);
        }
        // Non-minimal lengths are read; indefinite and four-byte ones are not.
        assert_eq!(Tlv::parse_exact(&hex("33 8102 AABB")).unwrap().value, hex("AABB"));
        assert_eq!(Tlv::parse_exact(&hex("33 820002 AABB")).unwrap().value, hex("AABB"));
        assert_eq!(
            Tlv::parse(&hex("30 80 0000")),
            Err(TlvError::IndefiniteLength { offset: 0 })
        );
        assert_eq!(
            Tlv::parse(&hex("04 8400000001 AA")),
            Err(TlvError::LengthTooLong {
                offset: 0,
                len_bytes: 4
            })
        );
        let huge = vec![0; MAX_VALUE_LEN + 1];
        assert_eq!(
            Writer::new().put(tag(0x04), &huge).map(|_| ()),
            Err(TlvError::ValueTooLong {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );
    }

    #[test]
    fn truncations_are_errors_with_offsets() {
        for (bytes, needed, available) in [
            ("", 1, 0),
            ("BF", 2, 1),
            ("BF81", 3, 2),
            ("5A", 2, 1),
            ("5A81", 3, 2),
            ("5A8201", 4, 3),
            ("5A03AABB", 5, 4),
        ] {
            assert_eq!(
                Tlv::parse(&hex(bytes)),
                Err(TlvError::Truncated {
                    offset: 0,
                    needed,
                    available
                }),
                "{bytes}"
            );
        }
        let bytes = hex("5A01AA 4F03BB");
        let mut siblings = iter(&bytes);
        assert_eq!(
            siblings.next(),
            Some(Ok(Tlv {
                tag: tag(0x5A),
                value: &[0xAA]
            }))
        );
        assert_eq!(
            siblings.next(),
            Some(Err(TlvError::Truncated {
                offset: 3,
                needed: 5,
                available: 3
            }))
        );
        assert_eq!(siblings.next(), None);
        assert!(find(&bytes, tag(0x5A)).is_err());
        assert_eq!(
            Tlv::parse_exact(&hex("5A01AA 00")),
            Err(TlvError::TrailingBytes { offset: 3, trailing: 1 })
        );
    }

    #[test]
    fn builds_enable_profile_as_lpac_sends_it() {
        let iccid = hex("98001032547698103214");
        let mut w = Writer::new();
        w.put_constructed(tag(0xBF31), |request| {
            request.put_constructed(tag(0xA0), |id| id.put(tag(0x5A), &iccid).map(drop))?;
            request.put(tag(0x81), &[0x00])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(w.as_bytes(), hex("BF3111 A00C 5A0A 98001032547698103214 810100"));
        assert_eq!(
            Writer::new().put_constructed(tag(0x5A), |_| Ok(())).map(|_| ()),
            Err(TlvError::NotConstructed { tag: tag(0x5A) })
        );
    }

    #[test]
    fn walks_a_profile_list() {
        let profile = |iccid: &str, state: u8| {
            let mut w = Writer::new();
            w.put_constructed(tag(0xE3), |p| {
                p.put(tag(0x5A), &hex(iccid))?
                    .put(tag(0x4F), &hex("A0000005591010FFFFFFFF8900001000"))?
                    .put(tag(0x9F70), &[state])?
                    .put(tag(0x92), b"AI data")?;
                Ok(())
            })
            .unwrap();
            w.into_bytes()
        };
        let mut list = profile("98001032547698103214", 1);
        list.extend(profile("98001032547698103296", 0));
        let mut w = Writer::new();
        w.put_constructed(tag(0xBF2D), |r| r.put(tag(0xA0), &list).map(drop))
            .unwrap();
        let bytes = w.into_bytes();

        let profiles = find_path(&bytes, &[tag(0xBF2D), tag(0xA0)]).unwrap().unwrap();
        let states: Vec<(Vec<u8>, u8)> = profiles
            .children()
            .map(|p| {
                let p = p.unwrap();
                assert_eq!(p.tag, tag(0xE3));
                let iccid = p.find(tag(0x5A)).unwrap().unwrap().value.to_vec();
                let state = p.find(tag(0x9F70)).unwrap().unwrap().value[0];
                (iccid, state)
            })
            .collect();
        assert_eq!(
            states,
            [(hex("98001032547698103214"), 1), (hex("98001032547698103296"), 0)]
        );
    }

    #[test]
    fn simple_tlvs_of_iot_safe() {
        // Get Data – application: version, id, then a max-sessions byte.
        let bytes = hex("1002 0100 1103 414243 B701 02");
        let tlvs: Vec<_> = simple::iter(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            tlvs,
            [
                simple::Tlv {
                    tag: 0x10,
                    value: &[1, 0]
                },
                simple::Tlv {
                    tag: 0x11,
                    value: b"ABC"
                },
                simple::Tlv { tag: 0xB7, value: &[2] },
            ]
        );
        assert_eq!(simple::find(&bytes, 0x11).unwrap(), Some(&b"ABC"[..]));
        assert_eq!(simple::find(&bytes, 0x90).unwrap(), None);

        let mut out = Vec::new();
        simple::put(&mut out, 0x84, &[0x01]).unwrap();
        simple::put(&mut out, 0x9E, &[0xAB; 32]).unwrap();
        assert_eq!(out[..5], hex("840101 9E20"));
        assert_eq!(
            simple::put(&mut out, 0x9B, &[0; 256]),
            Err(TlvError::ValueTooLong { len: 256, max: 255 })
        );

        let broken = hex("8401 01 84");
        let mut broken = simple::iter(&broken);
        assert!(matches!(broken.next(), Some(Ok(_))));
        assert_eq!(
            broken.next(),
            Some(Err(TlvError::Truncated {
                offset: 3,
                needed: 2,
                available: 1
            }))
        );
        assert_eq!(broken.next(), None);
        assert_eq!(
            simple::iter(&hex("C105 0102")).next(),
            Some(Err(TlvError::Truncated {
                offset: 0,
                needed: 7,
                available: 4
            }))
        );
    }
}
