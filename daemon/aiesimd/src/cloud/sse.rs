//! A server-sent events parser (the WHATWG `text/event-stream` format): bytes in, events out,
//! no I/O. Chunk boundaries may fall anywhere, even inside a CRLF or a UTF-8 sequence.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server named the event.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("line {line} of the event stream is longer than {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("an event of the stream carries more than {limit} bytes of data (at line {line})")]
    EventTooLarge { line: u64, limit: usize },
    #[error("line {line} of the event stream is not UTF-8")]
    NotUtf8 { line: u64 },
    #[error("the event stream was fed after an earlier error")]
    Poisoned,
}

/// An incremental parser; feed it the body as it arrives.
#[derive(Debug)]
pub struct SseParser {
    limit: usize,
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// A chunk ended on CR: a LF at the start of the next one belongs to the same line end.
    after_cr: bool,
    lines_done: u64,
    poisoned: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser that refuses lines, and events' data, longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event: None,
            after_cr: false,
            lines_done: 0,
            poisoned: false,
        }
    }

    /// Parses `chunk` and appends the events it completes to `out`; events completed before an
    /// error are still appended. After an error the parser refuses further input.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.poisoned {
            return Err(SseError::Poisoned);
        }
        let result = self.feed_inner(&mut chunk, out);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn feed_inner(&mut self, chunk: &mut &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                *chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&chunk[..end])?;
            let terminator = chunk[end];
            *chunk = &chunk[end + 1..];
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => *chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line(out)?;
        }
        self.extend_line(chunk)
    }

    /// Ends the stream: an event whose lines all arrived but whose closing blank line did not is
    /// still dispatched (some servers end that way); an unterminated last line is dropped, as the
    /// format requires, since it may be cut short.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.poisoned {
            return None;
        }
        self.line.clear();
        self.take_event()
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.limit {
            return Err(SseError::LineTooLong {
                line: self.lines_done + 1,
                limit: self.limit,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.lines_done += 1;
        let mut raw = std::mem::take(&mut self.line);
        let mut bytes = raw.as_slice();
        if self.lines_done == 1 {
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        let result = self.field(bytes, out);
        raw.clear();
        // Reuses the allocation: lines are short and many.
        self.line = raw;
        result
    }

    fn field(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if bytes.is_empty() {
            out.extend(self.take_event());
            return Ok(());
        }
        if bytes[0] == b':' {
            return Ok(());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| SseError::NotUtf8 { line: self.lines_done })?;
        let (name, value) = match text.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (text, ""),
        };
        match name {
            "data" => {
                let extra = usize::from(self.has_data) + value.len();
                if self.data.len() + extra > self.limit {
                    return Err(SseError::EventTooLarge {
                        line: self.lines_done,
                        limit: self.limit,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` serve reconnection, which a chat stream never does.
            _ => {}
        }
        Ok(())
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limit: usize) -> (Vec<SseEvent>, Result<(), SseError>) {
        let mut p = SseParser::new(limit);
        let mut out = Vec::new();
        let r = p.feed(input, &mut out);
        if r.is_ok() {
            out.extend(p.finish());
        }
        (out, r)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    const SAMPLE: &[u8] = b"\xEF\xBB\xBF: keep-alive\r\n\
        data: {\"a\":1}\r\n\r\n\
        event: usage\ndata:first\ndata:  second\n\n\
        data\n\n\
        id: 7\nretry: 10\n\n\
        data: x\rdata: y\r\r\
        data: [DONE]\n\n";

    #[test]
    fn parses_fields_line_ends_comments_and_multiline_data() {
        let (events, r) = parse_all(SAMPLE, 1024);
        r.unwrap();
        assert_eq!(data(&events), ["{\"a\":1}", "first\n second", "", "x\ny", "[DONE]"]);
        assert_eq!(events[1].event.as_deref(), Some("usage"));
        assert_eq!(events[0].event, None);
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let (whole, r) = parse_all(SAMPLE, 1024);
        r.unwrap();
        for cut in 0..=SAMPLE.len() {
            let mut p = SseParser::new(1024);
            let mut out = Vec::new();
            p.feed(&SAMPLE[..cut], &mut out).unwrap();
            p.feed(&SAMPLE[cut..], &mut out).unwrap();
            out.extend(p.finish());
            assert_eq!(out, whole, "split at {cut}");
        }
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        for b in SAMPLE {
            p.feed(std::slice::from_ref(b), &mut out).unwrap();
            p.feed(&[], &mut out).unwrap();
        }
        out.extend(p.finish());
        assert_eq!(out, whole, "byte by byte");
    }

    #[test]
    fn utf8_split_across_chunks_is_joined() {
        let text = "data: 你好 👋\n\n".as_bytes();
        for cut in 0..=text.len() {
            let mut p = SseParser::new(64);
            let mut out = Vec::new();
            p.feed(&text[..cut], &mut out).unwrap();
            p.feed(&text[cut..], &mut out).unwrap();
            assert_eq!(data(&out), ["你好 👋"], "split at {cut}");
        }
    }

    #[test]
    fn end_of_stream_keeps_complete_lines_and_drops_a_cut_one() {
        assert_eq!(data(&parse_all(b"data: [DONE]\n", 64).0), ["[DONE]"]);
        assert_eq!(data(&parse_all(b"data: [DONE]\r", 64).0), ["[DONE]"]);
        assert!(parse_all(b"data: [DO", 64).0.is_empty());
        assert_eq!(data(&parse_all(b"data: a\n\ndata: b\ndata: c", 64).0), ["a", "b"]);
    }

    #[test]
    fn long_lines_and_large_events_are_refused_even_when_fed_bytewise() {
        let (events, r) = parse_all(b"data: ok\n\ndata: 0123456789\n\n", 12);
        assert_eq!(data(&events), ["ok"]);
        assert_eq!(r, Err(SseError::LineTooLong { line: 3, limit: 12 }));

        let mut p = SseParser::new(8);
        let mut out = Vec::new();
        let err = b":xxxxxxxxxxxxxxxx"
            .iter()
            .find_map(|b| p.feed(std::slice::from_ref(b), &mut out).err());
        assert_eq!(err, Some(SseError::LineTooLong { line: 1, limit: 8 }));
        assert_eq!(p.feed(b"\n", &mut out), Err(SseError::Poisoned));
        assert_eq!(p.finish(), None);

        let (_, r) = parse_all(b"data: 1234\ndata: 1234\ndata: 1\n\n", 10);
        assert_eq!(r, Err(SseError::EventTooLarge { line: 3, limit: 10 }));
    }

    #[test]
    fn invalid_utf8_is_an_error_but_not_in_comments() {
        assert_eq!(parse_all(b"data: \xFF\n\n", 64).1, Err(SseError::NotUtf8 { line: 1 }));
        assert_eq!(parse_all(b": \xFF\n\n", 64).1, Ok(()));
    }

    #[test]
    fn garbage_never_panics() {
        // A fixed xorshift sequence: reproducible without a randomness dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"data: \r\n:event\xFF\xEF\xBB\xBFx{}[DONE]";
        for _ in 0..2_000 {
            let mut input = Vec::new();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(alphabet[usize::try_from(x % alphabet.len() as u64).unwrap()]);
            }
            let cut = usize::try_from(x % 65).unwrap();
            let mut p = SseParser::new(16);
            let mut out = Vec::new();
            let _ = p.feed(&input[..cut], &mut out);
            let _ = p.feed(&input[cut..], &mut out);
            let _ = p.finish();
            assert!(out.iter().all(|e| e.data.len() <= 16));
        }
    }
}
