//! The codec against frames captured from real mbimcli sessions (reference/test-peers.md), and
//! every typed message through a full encode/decode round trip.

mod support;

use std::fmt::Debug;

use aiesim_mbim::{
    Body, Command, CommandType, ControlMessage, DecodeError, EncodeError, Message, ProtocolError, Request, Status,
    Uuid,
    basic_connect::{self, DeviceCapsQuery, RadioStateResponse, RadioSwitchState, SignalStateResponse},
    info::Reader,
    uicc::{self, ApduResponse, ApduSet},
};
use support::{DMS_GET_IDS, EID, GET_EID, Sample, eid_response, get_eid, hex, samples};

const OPEN: &str = "01000000 10000000 01000000 00100000";
const OPEN_DONE: &str = "01000080 10000000 01000000 00000000";
const DEVICE_CAPS_QUERY: &str =
    "03000000 30000000 02000000 01000000 00000000 a289cc33bcbb8b4fb6b0133ec2aae6df 01000000 00000000 00000000";

#[test]
fn open_and_open_done() {
    let open = ControlMessage::decode(&hex(OPEN)).unwrap();
    assert_eq!(
        open,
        ControlMessage::new(
            1,
            Body::Open {
                max_control_transfer: 4096
            }
        )
    );
    assert_eq!(open.encode().unwrap(), hex(OPEN));
    let done = ControlMessage::decode(&hex(OPEN_DONE)).unwrap();
    assert_eq!(done, ControlMessage::new(1, Body::OpenDone(Status::None)));
    assert_eq!(done.encode().unwrap(), hex(OPEN_DONE));
}

#[test]
fn device_caps_query() {
    let bytes = hex(DEVICE_CAPS_QUERY);
    let message = ControlMessage::decode(&bytes).unwrap();
    assert_eq!(message.transaction_id, 2);
    let Body::Command(command) = &message.body else {
        panic!("not a COMMAND: {message:?}");
    };
    assert_eq!(
        (command.service, command.cid, command.command_type),
        (Uuid::BASIC_CONNECT, basic_connect::DEVICE_CAPS, CommandType::Query)
    );
    assert!(command.is::<DeviceCapsQuery>());
    DeviceCapsQuery::from_command(command).unwrap();
    let rebuilt = ControlMessage::new(2, Body::Command(DeviceCapsQuery {}.to_command().unwrap()));
    assert_eq!(rebuilt.encode().unwrap(), bytes);
}

#[test]
fn get_eid_apdu() {
    let set = get_eid();
    let command = set.to_command().unwrap();
    // Channel, SecureMessaging, ClassByteType, {size, offset} of the command, then the command.
    assert_eq!(
        command.info[..20],
        hex("01000000 00000000 00000000 0b000000 14000000")[..]
    );
    assert_eq!(command.info[20..31], hex(GET_EID)[..]);
    assert_eq!(command.info.len(), 32, "the command is padded to 4 bytes");
    assert_eq!(ApduSet::from_command(&command).unwrap(), set);

    let response = eid_response();
    let done = response.to_command_done(Status::None).unwrap();
    let parsed = ApduResponse::from_command_done(&done).unwrap();
    assert_eq!(uicc::status_word(parsed.status), 0x9000);
    assert_eq!(parsed.response[..5], hex("bf3e125a10")[..]);
    assert_eq!(parsed.response[5..], hex(EID)[..]);
}

/// A typed value survives its information buffer and a whole control message.
fn round_trip<M: Message + PartialEq + Debug>(m: &M) {
    assert_eq!(&M::from_info(&m.to_info().unwrap()).unwrap(), m, "{}", M::NAME);
}

#[test]
fn every_sample_round_trips() {
    let samples = samples();
    assert!(samples.len() > 50);
    for Sample { name, message } in &samples {
        let bytes = message.encode().unwrap();
        assert_eq!(&ControlMessage::decode(&bytes).unwrap(), message, "{name}");
        for max in [64, 100, 4096] {
            let fragments = message.encode_fragments(max).unwrap();
            assert!(fragments.iter().all(|f| f.len() <= max), "{name}");
            let mut r = aiesim_mbim::Reassembler::new();
            let mut out = Vec::new();
            for f in &fragments {
                out.extend(r.push(f).unwrap());
            }
            assert_eq!(out, std::slice::from_ref(message), "{name} in fragments of {max}");
        }
    }
}

#[test]
fn every_typed_message_round_trips() {
    use support::*;
    round_trip(&device_caps());
    round_trip(&subscriber_ready());
    round_trip(&register_state());
    round_trip(&packet_service());
    round_trip(&signal_state());
    round_trip(&connect_set());
    round_trip(&connect_response());
    round_trip(&ip_configuration());
    round_trip(&device_services());
    round_trip(&basic_connect::DeviceServiceSubscribeListSet { events: events() });
    round_trip(&open_channel());
    round_trip(&get_eid());
    round_trip(&eid_response());
    round_trip(&aiesim_mbim::uicc::AtrResponse { atr: hex(ATR) });
    round_trip(&aiesim_mbim::basic_connect_ext::DeviceSlotMappingsSet { slots: vec![1, 0] });
    round_trip(&aiesim_mbim::proxy_control::ConfigurationSet {
        device_path: "/dev/cdc-wdm0".into(),
        timeout: 30,
    });
    round_trip(&aiesim_mbim::qmi::MsgSet { qmux: hex(DMS_GET_IDS) });
    // Typed values come back from the control message they were sent in, too.
    let done = signal_state().to_command_done(Status::None).unwrap();
    assert_eq!(SignalStateResponse::from_command_done(&done).unwrap(), signal_state());
    let ind = signal_state().to_indication().unwrap();
    assert_eq!(SignalStateResponse::from_indication(&ind).unwrap(), signal_state());
}

#[test]
fn the_qmi_tunnel_is_unpadded() {
    let command = aiesim_mbim::qmi::MsgSet { qmux: hex(DMS_GET_IDS) }
        .to_command()
        .unwrap();
    assert_eq!(command.info, hex(DMS_GET_IDS));
    assert_eq!(command.info.len(), 13);
    assert_eq!(
        ControlMessage::new(9, Body::Command(command)).encode().unwrap().len(),
        48 + 13
    );
}

#[test]
fn strings_are_utf16_with_offsets_from_the_buffer_start() {
    let caps = support::device_caps();
    let info = caps.to_info().unwrap();
    let mut r = Reader::new(&info, "test");
    for _ in 0..8 {
        r.u32().unwrap();
    }
    // CustomDataClass is empty: offset 0, size 0.
    assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (0, 0));
    let (offset, size) = (r.u32().unwrap() as usize, r.u32().unwrap() as usize);
    assert_eq!(offset, 64, "data starts right after the 64-byte fixed part");
    assert_eq!(size, 2 * caps.device_id.len());
    let utf16: Vec<u8> = caps.device_id.encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert_eq!(info[offset..offset + size], utf16[..]);
}

#[test]
fn typed_parsers_check_what_they_are_given() {
    let done = support::device_caps().to_command_done(Status::None).unwrap();
    assert!(matches!(
        SignalStateResponse::from_command_done(&done),
        Err(DecodeError::WrongMessage { cid: 1, .. })
    ));
    let query = Command {
        service: Uuid::BASIC_CONNECT,
        cid: basic_connect::RADIO_STATE,
        command_type: CommandType::Query,
        info: vec![],
    };
    assert!(matches!(
        basic_connect::RadioStateSet::from_command(&query),
        Err(DecodeError::WrongKind { .. })
    ));
    assert!(matches!(
        RadioStateResponse {
            hw_radio_state: RadioSwitchState::ON,
            sw_radio_state: RadioSwitchState::ON
        }
        .to_command(),
        Err(EncodeError::WrongKind { .. })
    ));
    // DEVICE_CAPS is never a notification.
    assert!(support::device_caps().to_indication().is_err());
    // Truncated buffers are errors, not panics or defaults.
    let info = support::device_caps().to_info().unwrap();
    for len in 0..64 {
        assert!(
            basic_connect::DeviceCapsResponse::from_info(&info[..len]).is_err(),
            "{len}"
        );
    }
    let decoded: <DeviceCapsQuery as Request>::Response = basic_connect::DeviceCapsResponse::from_info(&info).unwrap();
    assert_eq!(decoded, support::device_caps());
}

#[test]
fn control_message_errors() {
    let open = hex(OPEN);
    assert!(matches!(
        ControlMessage::decode(&open[..15]),
        Err(DecodeError::LengthMismatch {
            declared: 16,
            actual: 15
        })
    ));
    assert!(matches!(
        ControlMessage::decode(&open[..8]),
        Err(DecodeError::Truncated { .. })
    ));
    let mut unknown = open.clone();
    unknown[0] = 9;
    assert!(matches!(
        ControlMessage::decode(&unknown),
        Err(DecodeError::UnknownMessageType { message_type: 9 })
    ));
    let mut caps = hex(DEVICE_CAPS_QUERY);
    caps[44] = 1; // InformationBufferLength 1, with nothing after it
    assert!(matches!(
        ControlMessage::decode(&caps),
        Err(DecodeError::InfoLengthMismatch { declared: 1, actual: 0 })
    ));
    let mut caps = hex(DEVICE_CAPS_QUERY);
    caps[40] = 7; // command type 7
    assert!(matches!(
        ControlMessage::decode(&caps),
        Err(DecodeError::UnknownCommandType { command_type: 7 })
    ));
    let mut caps = hex(DEVICE_CAPS_QUERY);
    caps[12] = 2; // fragment 0 of 2
    assert!(matches!(
        ControlMessage::decode(&caps),
        Err(DecodeError::Fragmented { total: 2, current: 0 })
    ));
    let error = ControlMessage::new(3, Body::FunctionError(ProtocolError::NotOpened));
    assert_eq!(error.encode().unwrap(), hex("04000080 10000000 03000000 05000000"));
    assert!(matches!(
        error.encode_fragments(63),
        Err(EncodeError::MaxControlTransfer { max: 63, .. })
    ));
}
