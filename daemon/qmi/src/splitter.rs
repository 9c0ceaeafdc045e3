//! Cuts a byte stream into whole QMUX frames, skipping bytes that cannot start one.

use crate::{
    DecodeError,
    frame::{HeaderCheck, MAX_FRAME_LEN, QMUX_MARKER, check_header},
};

/// The shortest frame there is: a CTL frame without TLVs.
const MIN_FRAME_LEN: usize = 12;

/// A streaming frame splitter with a bounded buffer.
///
/// Feed it with [`Splitter::push`] (it takes at most [`Splitter::room`] bytes) and drain it with
/// [`Splitter::next_frame`] until that returns `None`. The buffer never holds more than the
/// largest frame allowed, and a full buffer always yields a frame or garbage, so it cannot stall.
#[derive(Debug, Clone)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Bytes before this offset are consumed; compacted on the next push.
    start: usize,
    max_frame_len: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Splitter {
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A splitter that treats longer frames as garbage (clamped to what QMUX can express).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame_len: max_frame_len.clamp(MIN_FRAME_LEN, MAX_FRAME_LEN),
        }
    }

    /// How many bytes the next [`Splitter::push`] accepts.
    pub fn room(&self) -> usize {
        self.max_frame_len - self.buffered()
    }

    /// Bytes received but not yet returned as a frame or reported as garbage.
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

    /// The next whole frame (marker included), a [`DecodeError::Garbage`] report for a run of
    /// skipped bytes, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        let mut skipped = 0;
        loop {
            let pending = &self.buf[self.start..];
            if pending.is_empty() {
                break;
            }
            match check_header(pending, self.max_frame_len) {
                HeaderCheck::Complete(len) if skipped == 0 => {
                    let frame = pending[..len].to_vec();
                    self.start += len;
                    return Some(Ok(frame));
                }
                // After skipped bytes, report the garbage first; the frame comes next call.
                HeaderCheck::NeedMore | HeaderCheck::Complete(_) => break,
                HeaderCheck::Invalid => {
                    let resync = pending
                        .iter()
                        .skip(1)
                        .position(|&b| b == QMUX_MARKER)
                        .map_or(pending.len(), |at| at + 1);
                    skipped += resync;
                    self.start += resync;
                }
            }
        }
        (skipped > 0).then_some(Err(DecodeError::Garbage { skipped }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_VERSION_INFO: [u8; 12] = [0x01, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x21, 0x00, 0x00, 0x00];
    const DMS_GET_IDS: [u8; 13] = [
        0x01, 0x0c, 0x00, 0x00, 0x02, 0x01, 0x00, 0x01, 0x00, 0x25, 0x00, 0x00, 0x00,
    ];

    fn drain(s: &mut Splitter) -> Vec<Result<Vec<u8>, DecodeError>> {
        std::iter::from_fn(|| s.next_frame()).collect()
    }

    #[test]
    fn splits_back_to_back_frames() {
        let mut s = Splitter::new();
        let mut stream = GET_VERSION_INFO.to_vec();
        stream.extend_from_slice(&DMS_GET_IDS);
        assert_eq!(s.push(&stream), stream.len());
        assert_eq!(drain(&mut s), [Ok(GET_VERSION_INFO.to_vec()), Ok(DMS_GET_IDS.to_vec())]);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn reassembles_byte_by_byte() {
        let mut s = Splitter::new();
        let mut frames = Vec::new();
        for b in DMS_GET_IDS.iter().chain(&GET_VERSION_INFO) {
            s.push(&[*b]);
            frames.extend(drain(&mut s));
        }
        assert_eq!(frames, [Ok(DMS_GET_IDS.to_vec()), Ok(GET_VERSION_INFO.to_vec())]);
    }

    #[test]
    fn skips_garbage_and_resyncs() {
        let mut s = Splitter::new();
        // Leading noise, a fake marker whose lengths disagree, then a real frame.
        let mut stream = vec![0xde, 0xad, 0x01, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        stream.extend_from_slice(&DMS_GET_IDS);
        s.push(&stream);
        assert_eq!(
            drain(&mut s),
            [Err(DecodeError::Garbage { skipped: 10 }), Ok(DMS_GET_IDS.to_vec())]
        );
    }

    #[test]
    fn oversized_frames_are_garbage_and_the_buffer_stays_bounded() {
        let mut s = Splitter::with_max_frame_len(64);
        // A header claiming 0x200 bytes: longer than this splitter allows.
        s.push(&[0x01, 0x00, 0x02, 0x00, 0x02, 0x03, 0x00]);
        assert_eq!(drain(&mut s), [Err(DecodeError::Garbage { skipped: 7 })]);
        let noise = [0x55; 1000];
        assert_eq!(s.push(&noise), 64);
        assert_eq!(s.room(), 0);
        assert_eq!(drain(&mut s), [Err(DecodeError::Garbage { skipped: 64 })]);
        assert_eq!(s.room(), 64);
    }

    #[test]
    fn a_full_buffer_always_makes_progress() {
        let mut s = Splitter::with_max_frame_len(13);
        assert_eq!(s.push(&DMS_GET_IDS), 13);
        assert_eq!(s.room(), 0);
        assert_eq!(drain(&mut s), [Ok(DMS_GET_IDS.to_vec())]);
    }
}
