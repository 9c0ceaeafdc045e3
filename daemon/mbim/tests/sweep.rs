//! No decoder panics on any input: pseudo-random and mutated bytes through every parser.

#![expect(
    clippy::cast_possible_truncation,
    reason = "the sweep cuts random numbers down to bytes and indices on purpose"
)]

mod support;

use aiesim_mbim::{
    Body, ControlMessage, Message, RawMessage, Reassembler, Splitter,
    basic_connect::*,
    basic_connect_ext::*,
    info::Reader,
    proxy_control::{ConfigurationResponse, ConfigurationSet},
    qmi::{MsgResponse, MsgSet},
    uicc::*,
};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Every typed parser over one information buffer; returns how many accepted it.
fn parse_info(info: &[u8]) -> usize {
    // Whatever parses must encode and parse back to itself.
    macro_rules! all {
        ($($t:ty),* $(,)?) => {
            [$(<$t>::from_info(info).map(|m| {
                let again = m.to_info().unwrap();
                assert_eq!(<$t>::from_info(&again).unwrap(), m, "{}", <$t>::NAME);
            }).is_ok()),*].iter().filter(|ok| **ok).count()
        };
    }
    all!(
        DeviceCapsQuery,
        DeviceCapsResponse,
        SubscriberReadyStatusQuery,
        SubscriberReadyStatusResponse,
        RadioStateQuery,
        RadioStateSet,
        RadioStateResponse,
        RegisterStateQuery,
        RegisterStateSet,
        RegisterStateResponse,
        PacketServiceQuery,
        PacketServiceSet,
        PacketServiceResponse,
        SignalStateQuery,
        SignalStateSet,
        SignalStateResponse,
        ConnectQuery,
        ConnectSet,
        ConnectResponse,
        IpConfigurationQuery,
        IpConfigurationResponse,
        DeviceServicesQuery,
        DeviceServicesResponse,
        DeviceServiceSubscribeListSet,
        DeviceServiceSubscribeListResponse,
        DeviceSlotMappingsQuery,
        DeviceSlotMappingsSet,
        DeviceSlotMappingsResponse,
        SlotInfoStatusQuery,
        SlotInfoStatusResponse,
        DeviceResetSet,
        DeviceResetResponse,
        AtrQuery,
        AtrResponse,
        OpenChannelSet,
        OpenChannelResponse,
        CloseChannelSet,
        CloseChannelResponse,
        ApduSet,
        ApduResponse,
        MsgSet,
        MsgResponse,
        ConfigurationSet,
        ConfigurationResponse,
    )
}

fn exercise(bytes: &[u8]) {
    let _ = RawMessage::decode(bytes);
    if let Ok(message) = ControlMessage::decode(bytes) {
        // Whatever decodes re-encodes to the same bytes.
        assert_eq!(message.encode().unwrap(), bytes);
        if let Body::Command(c) = &message.body {
            parse_info(&c.info);
        }
    }
    let _ = Reassembler::with_limits(4096, 4).push(bytes);
    let _ = parse_info(bytes);
    let mut r = Reader::new(bytes, "sweep");
    let _ = (
        r.string("a"),
        r.uicc_bytes("b"),
        r.offset_array("c", 3, 20),
        r.optional_offset("d", 16),
    );
    let _ = Reader::new(bytes, "sweep").ref_struct_array("e", u32::MAX);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(160);
        let mut bytes = rng.bytes(len);
        // Make a good share look like real headers, so the sweep gets past the first checks.
        if len >= 12 && rng.below(2) == 0 {
            let types = [
                1_u32,
                2,
                3,
                4,
                0x8000_0001,
                0x8000_0002,
                0x8000_0003,
                0x8000_0004,
                0x8000_0007,
            ];
            bytes[..4].copy_from_slice(&types[rng.below(types.len())].to_le_bytes());
            bytes[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            if len >= 20 && rng.below(2) == 0 {
                bytes[12..16].copy_from_slice(&1_u32.to_le_bytes());
                bytes[16..20].copy_from_slice(&0_u32.to_le_bytes());
            }
        }
        exercise(&bytes);
    }
}

#[test]
fn mutated_samples_never_panic() {
    let mut rng = Rng(42);
    let encoded: Vec<Vec<u8>> = support::samples().iter().map(|s| s.message.encode().unwrap()).collect();
    let mut decoded_infos = 0;
    for _ in 0..30_000 {
        let mut bytes = encoded[rng.below(encoded.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        if rng.below(8) == 0 {
            bytes.truncate(rng.below(bytes.len() + 1));
        }
        exercise(&bytes);
        // The information buffer alone, with lengths and offsets garbled.
        if bytes.len() > 48 {
            decoded_infos += parse_info(&bytes[48..]);
        }
    }
    assert!(decoded_infos > 0, "the mutations should leave some buffers decodable");
}

#[test]
fn the_splitter_survives_random_streams() {
    let mut rng = Rng(7);
    let encoded: Vec<Vec<u8>> = support::samples().iter().map(|s| s.message.encode().unwrap()).collect();
    let mut stream = Vec::new();
    let mut sent = 0;
    for _ in 0..2_000 {
        if rng.below(3) == 0 {
            let noise = rng.below(20);
            stream.extend(rng.bytes(noise));
        } else {
            stream.extend(&encoded[rng.below(encoded.len())]);
            sent += 1;
        }
    }
    let mut splitter = Splitter::with_max_transfer_len(512);
    let mut reassembler = Reassembler::new();
    let (mut messages, mut rest) = (0, &stream[..]);
    while !rest.is_empty() {
        let taken = splitter.push(&rest[..rest.len().min(1 + rng.below(97))]);
        rest = &rest[taken..];
        while let Some(transfer) = splitter.next_transfer() {
            if let Ok(Ok(Some(_))) = transfer.map(|t| reassembler.push(&t)) {
                messages += 1;
            }
        }
    }
    // Noise can swallow a message that follows a fake header, but most must get through.
    assert!(messages * 10 >= sent * 8, "{messages} of {sent} messages came through");
    assert!(splitter.buffered() <= 512);
}
