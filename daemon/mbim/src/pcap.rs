//! A pcap capture of MBIM transfers, for Wireshark/tshark (linktype USER0 with the
//! `mbim.control` dissector). Pure: it builds bytes; the caller writes them where it likes.

use std::time::Duration;

/// DLT_USER0, which tshark maps to `mbim.control` with a `uat:user_dlts` preference.
pub const LINKTYPE_USER0: u32 = 147;
/// The longest record a capture keeps whole.
const SNAPLEN: u32 = 256 * 1024;

/// A capture file being built in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    bytes: Vec<u8>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new(LINKTYPE_USER0)
    }
}

impl Capture {
    /// An empty capture: the 24-byte global header (microsecond timestamps, little-endian).
    pub fn new(linktype: u32) -> Self {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
        bytes.extend_from_slice(&2_u16.to_le_bytes());
        bytes.extend_from_slice(&4_u16.to_le_bytes());
        bytes.extend_from_slice(&0_i32.to_le_bytes());
        bytes.extend_from_slice(&0_u32.to_le_bytes());
        bytes.extend_from_slice(&SNAPLEN.to_le_bytes());
        bytes.extend_from_slice(&linktype.to_le_bytes());
        Self { bytes }
    }

    /// Appends one frame (a 16-byte record header and the data, cut at the snap length).
    pub fn push(&mut self, timestamp: Duration, data: &[u8]) -> &mut Self {
        let original = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let kept = original.min(SNAPLEN);
        let seconds = u32::try_from(timestamp.as_secs()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&seconds.to_le_bytes());
        self.bytes.extend_from_slice(&timestamp.subsec_micros().to_le_bytes());
        self.bytes.extend_from_slice(&kept.to_le_bytes());
        self.bytes.extend_from_slice(&original.to_le_bytes());
        self.bytes.extend_from_slice(&data[..kept as usize]);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let mut c = Capture::default();
        c.push(Duration::new(2, 5_000), &[1, 2, 3]);
        let b = c.into_bytes();
        assert_eq!(b.len(), 24 + 16 + 3);
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&b[20..24], &147_u32.to_le_bytes());
        assert_eq!(&b[24..40], &[2, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0][..]);
        assert_eq!(&b[40..], &[1, 2, 3]);
    }
}
