//! Sample values of every message the codec can produce, shared by the test suites.

#![allow(dead_code, reason = "each suite uses its own part of the samples")]

use std::net::{Ipv4Addr, Ipv6Addr};

use aiesim_mbim::{
    Body, ControlMessage, Message, ProtocolError, Status, Uuid,
    basic_connect::{
        ActivationCommand, ActivationState, AuthProtocol, Compression, ConnectQuery, ConnectResponse, ConnectSet,
        ContextIpType, DeviceCapsQuery, DeviceCapsResponse, DeviceServiceElement, DeviceServiceSubscribeListResponse,
        DeviceServiceSubscribeListSet, DeviceServicesQuery, DeviceServicesResponse, DeviceType, EventEntry,
        IpConfigurationQuery, IpConfigurationResponse, Ipv4Element, Ipv6Element, PacketServiceAction,
        PacketServiceQuery, PacketServiceResponse, PacketServiceSet, PacketServiceState, RadioStateQuery,
        RadioStateResponse, RadioStateSet, RadioSwitchState, ReadyState, RegisterAction, RegisterMode, RegisterState,
        RegisterStateQuery, RegisterStateResponse, RegisterStateSet, SignalStateQuery, SignalStateResponse,
        SignalStateSet, SubscriberReadyStatusQuery, SubscriberReadyStatusResponse, VoiceCallState, VoiceClass,
        ctrl_caps, data_class,
    },
    basic_connect_ext::{
        DeviceResetResponse, DeviceResetSet, DeviceSlotMappingsQuery, DeviceSlotMappingsResponse,
        DeviceSlotMappingsSet, SlotInfoStatusQuery, SlotInfoStatusResponse, SlotState,
    },
    proxy_control::{ConfigurationResponse, ConfigurationSet},
    qmi::{MsgResponse, MsgSet},
    uicc::{
        ApduResponse, ApduSet, AtrQuery, AtrResponse, ClassByteType, CloseChannelResponse, CloseChannelSet,
        OpenChannelResponse, OpenChannelSet, SecureMessaging,
    },
};

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

pub const ISD_R: &str = "a0000005591010ffffffff8900000100";
/// A minimal well-formed ATR (T=0, two historical bytes), so tshark can parse it.
pub const ATR: &str = "3b021450";
pub const GET_EID: &str = "81e2910006bf3e035c015a";
pub const EID: &str = "89049032123451234512345678901235";
pub const DMS_GET_IDS: &str = "010c0000020100010025000000";

pub fn device_caps() -> DeviceCapsResponse {
    DeviceCapsResponse {
        device_type: DeviceType::EMBEDDED,
        cellular_class: 1,
        voice_class: VoiceClass::NO_VOICE,
        sim_class: 1,
        data_class: data_class::LTE | data_class::UMTS,
        sms_caps: 0,
        control_caps: ctrl_caps::ESIM | ctrl_caps::REG_MANUAL,
        max_sessions: 8,
        custom_data_class: String::new(),
        device_id: "356938035643809".into(),
        firmware_info: "aiesim-fw 1.0".into(),
        hardware_info: "AI-eSIM wearable".into(),
    }
}

pub fn subscriber_ready() -> SubscriberReadyStatusResponse {
    SubscriberReadyStatusResponse {
        ready_state: ReadyState::INITIALIZED,
        subscriber_id: "001010123456789".into(),
        sim_iccid: "8988211000000000001".into(),
        ready_info: 0,
        telephone_numbers: vec!["+15550100".into(), "+15550101".into()],
    }
}

pub fn register_state() -> RegisterStateResponse {
    RegisterStateResponse {
        nw_error: 0,
        register_state: RegisterState::HOME,
        register_mode: RegisterMode::AUTOMATIC,
        available_data_classes: data_class::LTE,
        current_cellular_class: 1,
        provider_id: "00101".into(),
        provider_name: "aiesim net".into(),
        roaming_text: String::new(),
        registration_flag: 2,
    }
}

pub fn packet_service() -> PacketServiceResponse {
    PacketServiceResponse {
        nw_error: 0,
        packet_service_state: PacketServiceState::ATTACHED,
        highest_available_data_class: data_class::LTE,
        uplink_speed: 50_000_000,
        downlink_speed: 150_000_000,
    }
}

pub fn signal_state() -> SignalStateResponse {
    SignalStateResponse {
        rssi: 23,
        error_rate: 99,
        signal_strength_interval: 5,
        rssi_threshold: 1,
        error_rate_threshold: 0xffff_ffff,
    }
}

pub fn connect_set() -> ConnectSet {
    ConnectSet {
        session_id: 0,
        activation_command: ActivationCommand::ACTIVATE,
        access_string: "internet".into(),
        user_name: "user".into(),
        password: "secret".into(),
        compression: Compression::NONE,
        auth_protocol: AuthProtocol::PAP,
        ip_type: ContextIpType::IPV4V6,
        context_type: Uuid::CONTEXT_INTERNET,
    }
}

pub fn connect_response() -> ConnectResponse {
    ConnectResponse {
        session_id: 0,
        activation_state: ActivationState::ACTIVATED,
        voice_call_state: VoiceCallState::NONE,
        ip_type: ContextIpType::IPV4,
        context_type: Uuid::CONTEXT_INTERNET,
        nw_error: 0,
    }
}

pub fn ip_configuration() -> IpConfigurationResponse {
    IpConfigurationResponse {
        session_id: 0,
        ipv4_available: 0xf,
        ipv6_available: 0x1,
        ipv4_addresses: vec![Ipv4Element {
            prefix_length: 24,
            address: Ipv4Addr::new(10, 64, 0, 2),
        }],
        ipv6_addresses: vec![Ipv6Element {
            prefix_length: 64,
            address: "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
        }],
        ipv4_gateway: Some(Ipv4Addr::new(10, 64, 0, 1)),
        ipv6_gateway: None,
        ipv4_dns: vec![Ipv4Addr::new(10, 64, 0, 53), Ipv4Addr::new(9, 9, 9, 9)],
        ipv6_dns: vec![],
        ipv4_mtu: 1500,
        ipv6_mtu: 0,
    }
}

pub fn device_services() -> DeviceServicesResponse {
    DeviceServicesResponse {
        max_dss_sessions: 0,
        device_services: vec![
            DeviceServiceElement {
                service: Uuid::BASIC_CONNECT,
                dss_payload: 0,
                max_dss_instances: 0,
                cids: vec![1, 2, 3, 9, 10, 11, 12, 15, 16, 19],
            },
            DeviceServiceElement {
                service: Uuid::MS_UICC_LOW_LEVEL_ACCESS,
                dss_payload: 0,
                max_dss_instances: 0,
                cids: vec![1, 2, 3, 4],
            },
            DeviceServiceElement {
                service: Uuid::QMI,
                dss_payload: 0,
                max_dss_instances: 0,
                cids: vec![1],
            },
        ],
    }
}

pub fn events() -> Vec<EventEntry> {
    vec![
        EventEntry {
            service: Uuid::BASIC_CONNECT,
            cids: vec![2, 9, 10, 11, 12],
        },
        EventEntry {
            service: Uuid::QMI,
            cids: vec![1],
        },
    ]
}

pub fn open_channel() -> OpenChannelSet {
    OpenChannelSet {
        app_id: hex(ISD_R),
        select_p2_arg: 0,
        channel_group: 1,
    }
}

pub fn get_eid() -> ApduSet {
    ApduSet {
        channel: 1,
        secure_messaging: SecureMessaging::NONE,
        class_byte_type: ClassByteType::INTER_INDUSTRY,
        command: hex(GET_EID),
    }
}

pub fn eid_response() -> ApduResponse {
    ApduResponse {
        status: 144,
        response: hex(&format!("bf3e125a10{EID}")),
    }
}

/// One control message, named for failure reports.
pub struct Sample {
    pub name: &'static str,
    pub message: ControlMessage,
}

fn command<M: Message>(tid: u32, m: &M) -> ControlMessage {
    ControlMessage::new(tid, Body::Command(m.to_command().unwrap()))
}

fn done<M: Message>(tid: u32, m: &M) -> ControlMessage {
    ControlMessage::new(tid, Body::CommandDone(m.to_command_done(Status::None).unwrap()))
}

fn indication<M: Message>(tid: u32, m: &M) -> ControlMessage {
    ControlMessage::new(tid, Body::IndicateStatus(m.to_indication().unwrap()))
}

/// Every control message type and every typed message, in each direction it travels.
#[expect(
    clippy::too_many_lines,
    reason = "one flat list of every message is easiest to audit"
)]
pub fn samples() -> Vec<Sample> {
    let mut tid = 0;
    let mut next = || {
        tid += 1;
        tid
    };
    let mut v = vec![
        Sample {
            name: "OPEN",
            message: ControlMessage::new(
                next(),
                Body::Open {
                    max_control_transfer: 4096,
                },
            ),
        },
        Sample {
            name: "OPEN_DONE",
            message: ControlMessage::new(next(), Body::OpenDone(Status::None)),
        },
        Sample {
            name: "CLOSE",
            message: ControlMessage::new(next(), Body::Close),
        },
        Sample {
            name: "CLOSE_DONE",
            message: ControlMessage::new(next(), Body::CloseDone(Status::None)),
        },
        Sample {
            name: "HOST_ERROR",
            message: ControlMessage::new(next(), Body::HostError(ProtocolError::FragmentOutOfSequence)),
        },
        Sample {
            name: "FUNCTION_ERROR",
            message: ControlMessage::new(next(), Body::FunctionError(ProtocolError::NotOpened)),
        },
    ];
    macro_rules! push {
        ($name:literal, $f:ident, $m:expr) => {
            v.push(Sample {
                name: $name,
                message: $f(next(), &$m),
            })
        };
    }
    push!("DEVICE_CAPS query", command, DeviceCapsQuery {});
    push!("DEVICE_CAPS response", done, device_caps());
    push!("SUBSCRIBER_READY_STATUS query", command, SubscriberReadyStatusQuery {});
    push!("SUBSCRIBER_READY_STATUS response", done, subscriber_ready());
    push!("SUBSCRIBER_READY_STATUS indication", indication, subscriber_ready());
    push!("RADIO_STATE query", command, RadioStateQuery {});
    push!(
        "RADIO_STATE set",
        command,
        RadioStateSet {
            radio_state: RadioSwitchState::OFF
        }
    );
    push!(
        "RADIO_STATE response",
        done,
        RadioStateResponse {
            hw_radio_state: RadioSwitchState::ON,
            sw_radio_state: RadioSwitchState::OFF
        }
    );
    push!(
        "RADIO_STATE indication",
        indication,
        RadioStateResponse {
            hw_radio_state: RadioSwitchState::ON,
            sw_radio_state: RadioSwitchState::ON
        }
    );
    push!("REGISTER_STATE query", command, RegisterStateQuery {});
    push!(
        "REGISTER_STATE set",
        command,
        RegisterStateSet {
            provider_id: "00101".into(),
            register_action: RegisterAction::MANUAL,
            data_class: data_class::LTE
        }
    );
    push!("REGISTER_STATE response", done, register_state());
    push!("REGISTER_STATE indication", indication, register_state());
    push!("PACKET_SERVICE query", command, PacketServiceQuery {});
    push!(
        "PACKET_SERVICE set",
        command,
        PacketServiceSet {
            action: PacketServiceAction::ATTACH
        }
    );
    push!("PACKET_SERVICE response", done, packet_service());
    push!("PACKET_SERVICE indication", indication, packet_service());
    push!("SIGNAL_STATE query", command, SignalStateQuery {});
    push!(
        "SIGNAL_STATE set",
        command,
        SignalStateSet {
            signal_strength_interval: 5,
            rssi_threshold: 2,
            error_rate_threshold: 0xffff_ffff
        }
    );
    push!("SIGNAL_STATE response", done, signal_state());
    push!("SIGNAL_STATE indication", indication, signal_state());
    push!(
        "CONNECT query",
        command,
        ConnectQuery {
            session_id: 0,
            context_type: Uuid::CONTEXT_INTERNET,
            ..ConnectQuery::default()
        }
    );
    push!("CONNECT set", command, connect_set());
    push!("CONNECT response", done, connect_response());
    push!("CONNECT indication", indication, connect_response());
    push!(
        "IP_CONFIGURATION query",
        command,
        IpConfigurationQuery { session_id: 0 }
    );
    push!("IP_CONFIGURATION response", done, ip_configuration());
    push!("IP_CONFIGURATION indication", indication, ip_configuration());
    push!("DEVICE_SERVICES query", command, DeviceServicesQuery {});
    push!("DEVICE_SERVICES response", done, device_services());
    push!(
        "DEVICE_SERVICE_SUBSCRIBE_LIST set",
        command,
        DeviceServiceSubscribeListSet { events: events() }
    );
    push!(
        "DEVICE_SERVICE_SUBSCRIBE_LIST response",
        done,
        DeviceServiceSubscribeListResponse { events: events() }
    );
    push!("DEVICE_SLOT_MAPPINGS query", command, DeviceSlotMappingsQuery {});
    push!(
        "DEVICE_SLOT_MAPPINGS set",
        command,
        DeviceSlotMappingsSet { slots: vec![1] }
    );
    push!(
        "DEVICE_SLOT_MAPPINGS response",
        done,
        DeviceSlotMappingsResponse { slots: vec![1] }
    );
    push!("SLOT_INFO_STATUS query", command, SlotInfoStatusQuery { slot_index: 1 });
    push!(
        "SLOT_INFO_STATUS response",
        done,
        SlotInfoStatusResponse {
            slot_index: 1,
            state: SlotState::ACTIVE_ESIM
        }
    );
    push!(
        "SLOT_INFO_STATUS indication",
        indication,
        SlotInfoStatusResponse {
            slot_index: 0,
            state: SlotState::EMPTY
        }
    );
    push!("DEVICE_RESET set", command, DeviceResetSet {});
    push!("DEVICE_RESET response", done, DeviceResetResponse {});
    push!("ATR query", command, AtrQuery {});
    push!("ATR response", done, AtrResponse { atr: hex(ATR) });
    push!("OPEN_CHANNEL set", command, open_channel());
    push!(
        "OPEN_CHANNEL response",
        done,
        OpenChannelResponse {
            status: 144,
            channel: 1,
            response: hex("6f1a840e")
        }
    );
    push!(
        "CLOSE_CHANNEL set",
        command,
        CloseChannelSet {
            channel: 1,
            channel_group: 1
        }
    );
    push!("CLOSE_CHANNEL response", done, CloseChannelResponse { status: 144 });
    push!("APDU set", command, get_eid());
    push!("APDU response", done, eid_response());
    push!("QMI MSG set", command, MsgSet { qmux: hex(DMS_GET_IDS) });
    push!(
        "QMI MSG response",
        done,
        MsgResponse {
            qmux: hex("011700800201020225000b00020400000000001103003335360000")
        }
    );
    push!(
        "QMI MSG indication",
        indication,
        MsgResponse {
            qmux: hex("010c00800000022700000000")
        }
    );
    push!(
        "PROXY_CONTROL CONFIGURATION set",
        command,
        ConfigurationSet {
            device_path: "/dev/cdc-wdm0".into(),
            timeout: 30
        }
    );
    push!("PROXY_CONTROL CONFIGURATION response", done, ConfigurationResponse {});
    v
}
