//! Arbitrary bytes through the splitter, the message decoder, the reassembler and every typed
//! parser.
#![no_main]

use aiesim_mbim::{
    Body, ControlMessage, Message, Reassembler, Splitter,
    basic_connect::{
        ConnectQuery, ConnectResponse, ConnectSet, DeviceCapsQuery, DeviceCapsResponse,
        DeviceServiceSubscribeListResponse, DeviceServiceSubscribeListSet, DeviceServicesQuery, DeviceServicesResponse,
        IpConfigurationQuery, IpConfigurationResponse, PacketServiceQuery, PacketServiceResponse, PacketServiceSet,
        RadioStateQuery, RadioStateResponse, RadioStateSet, RegisterStateQuery, RegisterStateResponse,
        RegisterStateSet, SignalStateQuery, SignalStateResponse, SignalStateSet, SubscriberReadyStatusQuery,
        SubscriberReadyStatusResponse,
    },
    basic_connect_ext::{
        DeviceResetResponse, DeviceResetSet, DeviceSlotMappingsQuery, DeviceSlotMappingsResponse,
        DeviceSlotMappingsSet, SlotInfoStatusQuery, SlotInfoStatusResponse,
    },
    proxy_control::{ConfigurationResponse, ConfigurationSet},
    qmi::{MsgResponse, MsgSet},
    uicc::{
        ApduResponse, ApduSet, AtrQuery, AtrResponse, CloseChannelResponse, CloseChannelSet, OpenChannelResponse,
        OpenChannelSet,
    },
};
use libfuzzer_sys::fuzz_target;

/// Every typed parser; whatever parses must encode and parse back to itself.
fn parse_info(info: &[u8]) {
    macro_rules! all {
        ($($t:ty),* $(,)?) => {
            $(
                if let Ok(m) = <$t>::from_info(info) {
                    let again = m.to_info().expect("a decoded message re-encodes");
                    assert_eq!(<$t>::from_info(&again).expect("a re-encoded message decodes"), m);
                }
            )*
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
    );
}

fn check_message(message: &ControlMessage) {
    let bytes = message.encode().expect("a decoded message re-encodes");
    assert_eq!(
        &ControlMessage::decode(&bytes).expect("re-encoded message decodes"),
        message
    );
    match &message.body {
        Body::Command(c) => parse_info(&c.info),
        Body::CommandDone(d) => parse_info(&d.info),
        Body::IndicateStatus(i) => parse_info(&i.info),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so both whole and split deliveries are covered.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut splitter = Splitter::with_max_transfer_len(1024);
    let mut reassembler = Reassembler::with_limits(4096, 4);
    let mut rest = data;
    loop {
        let taken = splitter.push(&rest[..rest.len().min(chunk)]);
        rest = &rest[taken..];
        while let Some(transfer) = splitter.next_transfer() {
            if let Ok(Ok(Some(message))) = transfer.map(|t| reassembler.push(&t)) {
                check_message(&message);
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    if let Ok(message) = ControlMessage::decode(data) {
        check_message(&message);
    }
    parse_info(data);
});
