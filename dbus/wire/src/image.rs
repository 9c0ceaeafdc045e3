//! Images in requests: the type sniffed from the magic bytes (PNG, JPEG, WebP, GIF) and the
//! dimensions read from the header. Pure functions over bytes, no I/O, fuzzed.

use std::{fmt, sync::Arc};

/// An image format the daemon forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
    Gif,
}

impl ImageKind {
    pub const ALL: [Self; 4] = [Self::Png, Self::Jpeg, Self::Webp, Self::Gif];

    /// The MIME type, as in a `data:` URL.
    pub const fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
            Self::Gif => "image/gif",
        }
    }

    /// The kind a MIME type names (`image/jpg` too, as apps write it).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let mime = mime.trim().to_ascii_lowercase();
        if mime == "image/jpg" {
            return Some(Self::Jpeg);
        }
        Self::ALL.into_iter().find(|k| k.mime() == mime)
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime())
    }
}

/// Why bytes are not an image the daemon forwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the data is not a PNG, JPEG, WebP or GIF image (its first bytes are {0})")]
    Unknown(String),
    #[error("the {0} header is truncated or malformed")]
    Malformed(ImageKind),
    #[error("the {kind} image has no pixels ({width}x{height})")]
    Empty { kind: ImageKind, width: u32, height: u32 },
}

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
}

/// An image of a request, checked: its bytes are forwarded unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub info: ImageInfo,
    pub data: Arc<[u8]>,
}

impl Image {
    /// Checks that `data` is an image of a known kind with a readable size.
    pub fn new(data: impl Into<Arc<[u8]>>) -> Result<Self, ImageError> {
        let data = data.into();
        Ok(Self {
            info: inspect(&data)?,
            data,
        })
    }
}

/// Sniffs the kind from the magic bytes and reads the dimensions from the header.
pub fn inspect(data: &[u8]) -> Result<ImageInfo, ImageError> {
    let (kind, size) = if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        (ImageKind::Png, png(data))
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        (ImageKind::Jpeg, jpeg(data))
    } else if data.len() >= 12 && data.starts_with(b"RIFF") && &data[8..12] == b"WEBP" {
        (ImageKind::Webp, webp(data))
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        (ImageKind::Gif, gif(data))
    } else {
        let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(ImageError::Unknown(if head.is_empty() {
            "missing: it is empty".into()
        } else {
            head.join(" ")
        }));
    };
    let (width, height) = size.ok_or(ImageError::Malformed(kind))?;
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { kind, width, height });
    }
    Ok(ImageInfo { kind, width, height })
}

fn be16(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?)))
}

fn le16(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?)))
}

fn le24(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// The IHDR chunk comes first, by the PNG spec.
fn png(d: &[u8]) -> Option<(u32, u32)> {
    if be32(d, 8)? != 13 || d.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((be32(d, 16)?, be32(d, 20)?))
}

fn gif(d: &[u8]) -> Option<(u32, u32)> {
    Some((le16(d, 6)?, le16(d, 8)?))
}

/// Walks the marker segments up to the first frame header (`SOFn`).
fn jpeg(d: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        if *d.get(i)? != 0xff {
            return None;
        }
        // Fill bytes: any number of 0xFF before a marker.
        while *d.get(i)? == 0xff {
            i += 1;
        }
        let marker = d[i];
        i += 1;
        match marker {
            // Markers without a length.
            0x01 | 0xd0..=0xd8 => {}
            // End of image or start of scan before any frame header.
            0xd9 | 0xda => return None,
            _ => {
                let len = usize::try_from(be16(d, i)?).ok()?;
                if len < 2 {
                    return None;
                }
                // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
                if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
                    if len < 7 {
                        return None;
                    }
                    return Some((be16(d, i + 5)?, be16(d, i + 3)?));
                }
                i += len;
            }
        }
    }
}

/// The first chunk after the RIFF header says it: lossy (VP8), lossless (VP8L) or extended (VP8X).
fn webp(d: &[u8]) -> Option<(u32, u32)> {
    let chunk = d.get(12..16)?;
    let body = 20;
    match chunk {
        b"VP8 " => {
            if d.get(body + 3..body + 6)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            Some((le16(d, body + 6)? & 0x3fff, le16(d, body + 8)? & 0x3fff))
        }
        b"VP8L" => {
            if *d.get(body)? != 0x2f {
                return None;
            }
            let bits = u32::from_le_bytes(d.get(body + 1..body + 5)?.try_into().ok()?);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Some((le24(d, body + 4)? + 1, le24(d, body + 7)? + 1)),
        _ => None,
    }
}

/// Test images built byte by byte, the smallest valid header of each kind.
#[cfg(any(test, feature = "samples"))]
pub mod samples {
    /// A PNG header (signature and IHDR) of `width` x `height`.
    pub fn png(width: u32, height: u32) -> Vec<u8> {
        let mut d = b"\x89PNG\r\n\x1a\n".to_vec();
        d.extend_from_slice(&13u32.to_be_bytes());
        d.extend_from_slice(b"IHDR");
        d.extend_from_slice(&width.to_be_bytes());
        d.extend_from_slice(&height.to_be_bytes());
        d.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        d
    }

    /// A JPEG start with an APP0 segment, then a baseline frame header.
    pub fn jpeg(width: u16, height: u16) -> Vec<u8> {
        let mut d = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
        d.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        d.extend_from_slice(&[0xff, 0xc0, 0x00, 0x11, 0x08]);
        d.extend_from_slice(&height.to_be_bytes());
        d.extend_from_slice(&width.to_be_bytes());
        d.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xff, 0xd9]);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: ImageKind, width: u32, height: u32) -> ImageInfo {
        ImageInfo { kind, width, height }
    }

    #[test]
    fn reads_each_kind_and_its_size() {
        assert_eq!(inspect(&samples::png(640, 480)), Ok(info(ImageKind::Png, 640, 480)));
        assert_eq!(inspect(&samples::jpeg(1024, 768)), Ok(info(ImageKind::Jpeg, 1024, 768)));
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&[0x20, 0x01, 0x10, 0x00, 0, 0, 0]);
        assert_eq!(inspect(&gif), Ok(info(ImageKind::Gif, 288, 16)));
        let riff = |chunk: &[u8], body: &[u8]| {
            let mut d = b"RIFF\0\0\0\0WEBP".to_vec();
            d.extend_from_slice(chunk);
            d.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
            d.extend_from_slice(body);
            d
        };
        let lossy = riff(b"VP8 ", &[0, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        assert_eq!(inspect(&lossy), Ok(info(ImageKind::Webp, 640, 480)));
        // 14 bits each of width-1 (99) and height-1 (49).
        let bits: u32 = 0x63 | (0x31 << 14);
        let mut body = vec![0x2f];
        body.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(inspect(&riff(b"VP8L", &body)), Ok(info(ImageKind::Webp, 100, 50)));
        let extended = riff(b"VP8X", &[0x10, 0, 0, 0, 0xff, 0x0f, 0, 0xff, 0x1f, 0]);
        assert_eq!(inspect(&extended), Ok(info(ImageKind::Webp, 4096, 8192)));
    }

    #[test]
    fn skips_fill_bytes_and_segments_before_the_jpeg_frame() {
        let mut d = samples::jpeg(33, 44);
        // An extra fill byte and a comment segment before the frame header.
        d.splice(20..20, [0xff, 0xff, 0xfe, 0x00, 0x04, b'h', b'i']);
        assert_eq!(inspect(&d), Ok(info(ImageKind::Jpeg, 33, 44)));
    }

    #[test]
    fn refuses_what_is_not_a_known_image() {
        assert!(matches!(inspect(b""), Err(ImageError::Unknown(_))));
        let e = inspect(b"%PDF-1.7 hello").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the data is not a PNG, JPEG, WebP or GIF image (its first bytes are 25 50 44 46 2d 31 2e 37)"
        );
        assert_eq!(
            inspect(b"RIFF\0\0\0\0WAVEfmt "),
            Err(ImageError::Unknown("52 49 46 46 00 00 00 00".into()))
        );
    }

    #[test]
    fn refuses_truncated_headers_and_empty_images() {
        // From the end of each signature on.
        for (kind, whole, from) in [
            (ImageKind::Png, samples::png(5, 5), 8),
            (ImageKind::Jpeg, samples::jpeg(5, 5), 3),
        ] {
            for cut in from..whole.len() {
                let short = &whole[..cut];
                if let Err(e) = inspect(short) {
                    assert_eq!(e, ImageError::Malformed(kind), "cut at {cut}");
                }
            }
        }
        assert_eq!(
            inspect(&samples::png(8, 8)[..20]),
            Err(ImageError::Malformed(ImageKind::Png))
        );
        assert_eq!(
            inspect(&samples::png(0, 8)),
            Err(ImageError::Empty {
                kind: ImageKind::Png,
                width: 0,
                height: 8
            })
        );
        // A scan before any frame header has no size.
        assert_eq!(
            inspect(&[0xff, 0xd8, 0xff, 0xda, 0, 2]),
            Err(ImageError::Malformed(ImageKind::Jpeg))
        );
    }

    #[test]
    fn mime_types_name_kinds() {
        for k in ImageKind::ALL {
            assert_eq!(ImageKind::from_mime(k.mime()), Some(k));
        }
        assert_eq!(ImageKind::from_mime("IMAGE/JPG"), Some(ImageKind::Jpeg));
        assert_eq!(ImageKind::from_mime("image/tiff"), None);
    }
}
