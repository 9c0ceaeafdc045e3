//! Arbitrary text through the chunk decoder, both as one `data` payload and as an event stream
//! whose events' data the daemon decodes in turn; arbitrary bytes as an error response body.
#![no_main]

use aiesimd::cloud::{
    openai::{Chunk, decode_chunk, error_message},
    sse::SseParser,
};
use libfuzzer_sys::fuzz_target;

/// The daemon's `MAX_SSE_LINE`.
const SSE_LIMIT: usize = 256 * 1024;
/// `openai::MAX_ERROR_CHARS` and the ellipsis that marks a cut.
const MAX_ERROR_CHARS: usize = 300 + 1;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        decode(text);
    }

    let mut parser = SseParser::new(SSE_LIMIT);
    let mut events = Vec::new();
    if parser.feed(data, &mut events).is_ok() {
        events.extend(parser.finish());
    }
    for event in &events {
        decode(&event.data);
    }

    let message = error_message(data);
    assert!(!message.is_empty());
    assert!(
        message.chars().count() <= MAX_ERROR_CHARS,
        "error message not shortened"
    );
    assert!(
        !message.chars().any(char::is_control),
        "control character in {message:?}"
    );
});

fn decode(data: &str) {
    let chunk = decode_chunk(data);
    assert_eq!(matches!(chunk, Ok(Chunk::Done)), data.trim() == "[DONE]");
    if let Ok(Chunk::Delta {
        content: Some(text), ..
    }) = &chunk
    {
        assert!(!text.is_empty(), "an empty delta was passed on");
    }
}
