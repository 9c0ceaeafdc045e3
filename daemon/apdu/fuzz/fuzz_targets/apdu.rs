//! Arbitrary bytes through the command and response decoders, the status classification,
//! the channel coding and the BER- and simple-TLV parsers.
#![no_main]

use aiesim_apdu::{
    Command, Response, StatusWord, channel, channel_of,
    tlv::{self, Tlv},
    with_channel,
};
use libfuzzer_sys::fuzz_target;

/// Walks every TLV as deep as it nests; each one must rebuild to the same tag and value.
fn walk(bytes: &[u8], depth: usize) {
    for tlv in tlv::iter(bytes) {
        let Ok(Tlv { tag, value }) = tlv else {
            return;
        };
        let mut rebuilt = tlv::Writer::new();
        rebuilt.put(tag, value).expect("a parsed value fits a length field");
        assert_eq!(Tlv::parse_exact(rebuilt.as_bytes()), Ok(Tlv { tag, value }));
        assert_eq!(tlv::Tag::new(tag.get()), Some(tag));
        if tag.is_constructed() && depth < 256 {
            walk(value, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Whatever decodes as a command must encode back to the same bytes in the same form.
    if let Ok((command, length)) = Command::decode_with_length(data) {
        assert_eq!(command.encode_as(length).as_deref(), Ok(data));
        let _ = command.encode();
    }
    if let Ok(response) = Response::decode(data) {
        assert_eq!(response.encode(), data);
        let _ = response.sw.status();
        let _ = channel::opened_channel(&response);
        let _ = response.into_result();
    }
    walk(data, 0);
    let _ = Tlv::parse_exact(data);
    for simple in tlv::simple::iter(data) {
        let _ = simple;
    }
    if let [first, second, ..] = *data {
        let sw = StatusWord::new(first, second);
        let _ = sw.status();
        let _ = sw.to_result().map_err(|error| error.to_string());
        if let Ok(moved) = with_channel(first, second) {
            assert_eq!(channel_of(moved), Ok(second));
        }
        let _ = channel::close_command(second);
    }
});
