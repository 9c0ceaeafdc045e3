//! Every decoder fed pseudo-random bytes: nothing may panic, and what decodes re-encodes.

use crate::{
    Command, Response, StatusWord, channel_of,
    test_support::XorShift,
    tlv::{self, Tlv},
    with_channel,
};

/// Walks a TLV tree as deep as it goes, as the fuzz target does.
fn walk(bytes: &[u8], depth: usize) -> usize {
    let mut count = 0;
    for tlv in tlv::iter(bytes) {
        let Ok(Tlv { tag, value }) = tlv else { break };
        count += 1;
        let mut rebuilt = tlv::Writer::new();
        rebuilt.put(tag, value).expect("a parsed value fits a length field");
        assert_eq!(Tlv::parse_exact(rebuilt.as_bytes()), Ok(Tlv { tag, value }));
        if tag.is_constructed() && depth < 64 {
            count += walk(value, depth + 1);
        }
    }
    count
}

/// Runs every decoder on `bytes`; shared by the sweeps below.
pub fn decode_everything(bytes: &[u8]) {
    if let Ok((command, length)) = Command::decode_with_length(bytes) {
        assert_eq!(command.encode_as(length).as_deref(), Ok(bytes));
    }
    if let Ok(response) = Response::decode(bytes) {
        assert_eq!(response.encode(), bytes);
        let _ = response.sw.status();
        let _ = response.into_result();
    }
    walk(bytes, 0);
    let _ = tlv::find_path(bytes, &[tlv::Tag::new(0xBF3E).unwrap(), tlv::Tag::new(0x5A).unwrap()]);
    for simple in tlv::simple::iter(bytes) {
        let _ = simple;
    }
    if let [cla, channel, ..] = *bytes {
        if let Ok(moved) = with_channel(cla, channel) {
            assert_eq!(channel_of(moved), Ok(channel));
        }
    }
    if let [sw1, sw2, ..] = *bytes {
        let _ = StatusWord::new(sw1, sw2).to_result();
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift::new(0x5EED_A9D0);
    for _ in 0..20_000 {
        let len = rng.below(300);
        decode_everything(&rng.bytes(len));
    }
}

#[test]
fn plausible_bytes_never_panic() {
    // Random bytes rarely form long TLVs or extended APDUs, so bias towards their markers.
    let markers = [
        0x00, 0x01, 0x1F, 0x20, 0x3F, 0x5A, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x9F, 0xBF, 0xFF,
    ];
    let mut rng = XorShift::new(42);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(2) == 0 {
                    markers[rng.below(markers.len())]
                } else {
                    u8::try_from(rng.below(8)).unwrap()
                }
            })
            .collect();
        decode_everything(&bytes);
    }
}
