//! Arbitrary bytes through the SSE parser, cut into chunks where the fuzzer says: the events, and
//! the first error, must not depend on where the cuts fall, and no event may exceed the limit.
#![no_main]

use aiesimd::cloud::sse::{SseError, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

/// From tiny, to reach the limit errors, to the daemon's own `MAX_SSE_LINE`.
const LIMITS: [usize; 4] = [4, 16, 64, 256 * 1024];

fuzz_target!(|data: &[u8]| {
    // Header byte: bits 0-2 say how many chunk sizes follow, bits 3-4 pick the limit.
    let Some((&header, rest)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from((header >> 3) & 3)];
    let (sizes, body) = rest.split_at(rest.len().min(usize::from(header & 7)));

    let whole = parse(body, limit, &[]);
    let cut = parse(body, limit, sizes);
    assert_eq!(cut, whole, "the cuts {sizes:?} changed the result");
    for event in &whole.0 {
        assert!(event.data.len() <= limit, "an event's data exceeds the limit");
        assert!(
            event.event.as_ref().is_none_or(|e| e.len() <= limit),
            "an event name exceeds the limit"
        );
    }
});

/// Feeds `body` in chunks of `sizes` bytes, cycled (0 feeds an empty chunk); no sizes: all at once.
fn parse(body: &[u8], limit: usize, mut sizes: &[u8]) -> (Vec<SseEvent>, Result<(), SseError>) {
    if sizes.iter().all(|&s| s == 0) {
        // Only empty chunks would never get through the body.
        sizes = &[];
    }
    let mut sizes = sizes.iter().cycle();
    let mut parser = SseParser::new(limit);
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let n = sizes.next().map_or(rest.len(), |&s| usize::from(s).min(rest.len()));
        let (chunk, tail) = rest.split_at(n);
        if let Err(e) = parser.feed(chunk, &mut out) {
            assert_eq!(parser.feed(b"", &mut out), Err(SseError::Poisoned));
            assert_eq!(parser.finish(), None);
            return (out, Err(e));
        }
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    out.extend(parser.finish());
    (out, Ok(()))
}
