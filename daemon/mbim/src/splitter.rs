//! Cuts a byte stream (a pty, a proxy socket) into MBIM transfers by their MessageLength,
//! skipping bytes that cannot start one.

use crate::{DecodeError, MessageType, control::HEADER_LEN};

/// The default bound on one transfer: well above any MaxControlTransfer seen on devices.
pub const DEFAULT_MAX_TRANSFER_LEN: usize = 64 * 1024;

/// A streaming splitter with a bounded buffer.
///
/// Feed it with [`Splitter::push`] (it takes at most [`Splitter::room`] bytes) and drain it with
/// [`Splitter::next_transfer`] until that returns `None`. Each item is one transfer (a whole
/// message or one fragment) for [`crate::Reassembler::push`]. A full buffer always yields a
/// transfer or garbage, so the splitter cannot stall.
#[derive(Debug, Clone)]
pub struct Splitter {
    buf: Vec<u8>,
    start: usize,
    max_transfer_len: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderCheck {
    NeedMore,
    Invalid,
    Complete(usize),
}

/// Checks the header at the start of `buf` as far as the bytes present allow.
fn check_header(buf: &[u8], max_len: usize) -> HeaderCheck {
    // Every message type is 0x0000000N or 0x8000000N: bytes 1 and 2 are zero.
    let valid_prefix = buf.iter().take(4).enumerate().all(|(i, &b)| match i {
        0 => matches!(b, 1..=4 | 7),
        3 => b == 0 || b == 0x80,
        _ => b == 0,
    });
    if !valid_prefix {
        return HeaderCheck::Invalid;
    }
    let Some(word) = buf.get(..8) else {
        return HeaderCheck::NeedMore;
    };
    let code = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    let Some(message_type) = MessageType::from_code(code) else {
        return HeaderCheck::Invalid;
    };
    let len = u32::from_le_bytes([word[4], word[5], word[6], word[7]]) as usize;
    let fixed = !message_type.is_fragmentable() && len != message_type.min_len();
    if fixed || len < message_type.min_len().max(HEADER_LEN) || len > max_len {
        return HeaderCheck::Invalid;
    }
    if buf.len() < len {
        HeaderCheck::NeedMore
    } else {
        HeaderCheck::Complete(len)
    }
}

impl Splitter {
    pub fn new() -> Self {
        Self::with_max_transfer_len(DEFAULT_MAX_TRANSFER_LEN)
    }

    /// A splitter that treats longer transfers as garbage.
    pub fn with_max_transfer_len(max_transfer_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_transfer_len: max_transfer_len.max(crate::MIN_CONTROL_TRANSFER),
        }
    }

    /// How many bytes the next [`Splitter::push`] accepts.
    pub fn room(&self) -> usize {
        self.max_transfer_len - self.buffered()
    }

    /// Bytes received but not yet returned as a transfer or reported as garbage.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends as much of `data` as there is room for and returns how much that was.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let taken = data.len().min(self.room());
        self.buf.extend_from_slice(&data[..taken]);
        taken
    }

    /// The next whole transfer, a [`DecodeError::Garbage`] report for a run of skipped bytes, or
    /// `None` when more bytes are needed.
    pub fn next_transfer(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        let mut skipped = 0;
        loop {
            let pending = &self.buf[self.start..];
            if pending.is_empty() {
                break;
            }
            match check_header(pending, self.max_transfer_len) {
                HeaderCheck::Complete(len) if skipped == 0 => {
                    let transfer = pending[..len].to_vec();
                    self.start += len;
                    return Some(Ok(transfer));
                }
                // After skipped bytes, report the garbage first; the transfer comes next call.
                HeaderCheck::NeedMore | HeaderCheck::Complete(_) => break,
                HeaderCheck::Invalid => {
                    skipped += 1;
                    self.start += 1;
                }
            }
        }
        (skipped > 0).then_some(Err(DecodeError::Garbage { skipped }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: [u8; 16] = [1, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0x10, 0, 0];
    const CLOSE: [u8; 12] = [2, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0];

    fn drain(s: &mut Splitter) -> Vec<Result<Vec<u8>, DecodeError>> {
        std::iter::from_fn(|| s.next_transfer()).collect()
    }

    #[test]
    fn splits_back_to_back_and_byte_by_byte() {
        let stream = [&OPEN[..], &CLOSE[..]].concat();
        let mut s = Splitter::new();
        s.push(&stream);
        assert_eq!(drain(&mut s), [Ok(OPEN.to_vec()), Ok(CLOSE.to_vec())]);
        let mut got = Vec::new();
        for b in &stream {
            s.push(&[*b]);
            got.extend(drain(&mut s));
        }
        assert_eq!(got, [Ok(OPEN.to_vec()), Ok(CLOSE.to_vec())]);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn skips_garbage_and_resyncs() {
        // Noise, then something shaped like OPEN whose length is impossible, then a real OPEN.
        let stream = [&[0xde, 0xad][..], &[1, 0, 0, 0, 3, 0, 0, 0], &OPEN].concat();
        let mut s = Splitter::new();
        s.push(&stream);
        assert_eq!(
            drain(&mut s),
            [Err(DecodeError::Garbage { skipped: 10 }), Ok(OPEN.to_vec())]
        );
    }

    #[test]
    fn the_buffer_stays_bounded() {
        let mut s = Splitter::with_max_transfer_len(64);
        // A header claiming 0x200 bytes is longer than this splitter allows.
        s.push(&[3, 0, 0, 0, 0, 2, 0, 0]);
        // The last three bytes could still start a CLOSE, so they wait for more.
        assert_eq!(drain(&mut s), [Err(DecodeError::Garbage { skipped: 5 })]);
        assert_eq!(s.buffered(), 3);
        assert_eq!(s.push(&[0x55; 1000]), 61);
        assert_eq!(s.room(), 0);
        assert_eq!(drain(&mut s), [Err(DecodeError::Garbage { skipped: 64 })]);
        assert_eq!(s.room(), 64);
    }
}
