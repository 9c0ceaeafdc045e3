//! BASIC_CONNECT (`a289cc33-bcbb-8b4f-b6b0-133ec2aae6df`): identity, SIM readiness, radio,
//! registration, packet service, signal, data sessions, IP configuration and device services.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    DecodeError, Message, Request, Uuid,
    info::{Reader, Writer},
    message::{values, words_message},
};

pub const DEVICE_CAPS: u32 = 1;
pub const SUBSCRIBER_READY_STATUS: u32 = 2;
pub const RADIO_STATE: u32 = 3;
pub const PIN: u32 = 4;
pub const PIN_LIST: u32 = 5;
pub const HOME_PROVIDER: u32 = 6;
pub const PREFERRED_PROVIDERS: u32 = 7;
pub const VISIBLE_PROVIDERS: u32 = 8;
pub const REGISTER_STATE: u32 = 9;
pub const PACKET_SERVICE: u32 = 10;
pub const SIGNAL_STATE: u32 = 11;
pub const CONNECT: u32 = 12;
pub const PROVISIONED_CONTEXTS: u32 = 13;
pub const SERVICE_ACTIVATION: u32 = 14;
pub const IP_CONFIGURATION: u32 = 15;
pub const DEVICE_SERVICES: u32 = 16;
pub const DEVICE_SERVICE_SUBSCRIBE_LIST: u32 = 19;
pub const PACKET_STATISTICS: u32 = 20;
pub const NETWORK_IDLE_HINT: u32 = 21;
pub const EMERGENCY_MODE: u32 = 22;
pub const IP_PACKET_FILTERS: u32 = 23;
pub const MULTICARRIER_PROVIDERS: u32 = 24;

const SERVICE: Uuid = Uuid::BASIC_CONNECT;

/// `MbimCellularClass` bits.
pub mod cellular_class {
    pub const GSM: u32 = 1 << 0;
    pub const CDMA: u32 = 1 << 1;
}

/// `MbimSimClass` bits.
pub mod sim_class {
    pub const LOGICAL: u32 = 1 << 0;
    pub const REMOVABLE: u32 = 1 << 1;
}

/// `MbimDataClass` bits.
pub mod data_class {
    pub const GPRS: u32 = 1 << 0;
    pub const EDGE: u32 = 1 << 1;
    pub const UMTS: u32 = 1 << 2;
    pub const HSDPA: u32 = 1 << 3;
    pub const HSUPA: u32 = 1 << 4;
    pub const LTE: u32 = 1 << 5;
    pub const FIVE_G_NSA: u32 = 1 << 6;
    pub const FIVE_G_SA: u32 = 1 << 7;
    pub const CUSTOM: u32 = 1 << 31;
}

/// `MbimSmsCaps` bits.
pub mod sms_caps {
    pub const PDU_RECEIVE: u32 = 1 << 0;
    pub const PDU_SEND: u32 = 1 << 1;
    pub const TEXT_RECEIVE: u32 = 1 << 2;
    pub const TEXT_SEND: u32 = 1 << 3;
}

/// `MbimCtrlCaps` bits.
pub mod ctrl_caps {
    pub const REG_MANUAL: u32 = 1 << 0;
    pub const HW_RADIO_SWITCH: u32 = 1 << 1;
    pub const CDMA_MOBILE_IP: u32 = 1 << 2;
    pub const CDMA_SIMPLE_IP: u32 = 1 << 3;
    pub const MULTI_CARRIER: u32 = 1 << 4;
    /// The device has an eUICC (eSIM).
    pub const ESIM: u32 = 1 << 5;
    pub const UE_POLICY_ROUTE_SELECTION: u32 = 1 << 6;
    pub const SIM_HOT_SWAP_CAPABLE: u32 = 1 << 7;
}

/// `MbimReadyInfoFlag` bits.
pub mod ready_info {
    pub const PROTECT_UNIQUE_ID: u32 = 1 << 0;
}

/// `MbimRegistrationFlag` bits.
pub mod registration_flag {
    pub const MANUAL_SELECTION_NOT_AVAILABLE: u32 = 1 << 0;
    pub const PACKET_SERVICE_AUTOMATIC_ATTACH: u32 = 1 << 1;
}

/// `MbimIPConfigurationAvailableFlag` bits.
pub mod ip_available {
    pub const ADDRESS: u32 = 1 << 0;
    pub const GATEWAY: u32 = 1 << 1;
    pub const DNS: u32 = 1 << 2;
    pub const MTU: u32 = 1 << 3;
}

values!(
    /// `MbimDeviceType`.
    DeviceType {
        UNKNOWN = 0 => "unknown",
        EMBEDDED = 1 => "embedded",
        REMOVABLE = 2 => "removable",
        REMOTE = 3 => "remote",
    }
);

values!(
    /// `MbimVoiceClass`.
    VoiceClass {
        UNKNOWN = 0 => "unknown",
        NO_VOICE = 1 => "no-voice",
        SEPARATED_VOICE_DATA = 2 => "separated-voice-data",
        SIMULTANEOUS_VOICE_DATA = 3 => "simultaneous-voice-data",
    }
);

values!(
    /// `MbimSubscriberReadyState`.
    ReadyState {
        NOT_INITIALIZED = 0 => "not-initialized",
        INITIALIZED = 1 => "initialized",
        SIM_NOT_INSERTED = 2 => "sim-not-inserted",
        BAD_SIM = 3 => "bad-sim",
        FAILURE = 4 => "failure",
        NOT_ACTIVATED = 5 => "not-activated",
        DEVICE_LOCKED = 6 => "device-locked",
        NO_ESIM_PROFILE = 7 => "no-esim-profile",
    }
);

values!(
    /// `MbimRadioSwitchState`.
    RadioSwitchState {
        OFF = 0 => "off",
        ON = 1 => "on",
    }
);

values!(
    /// `MbimRegisterState`.
    RegisterState {
        UNKNOWN = 0 => "unknown",
        DEREGISTERED = 1 => "deregistered",
        SEARCHING = 2 => "searching",
        HOME = 3 => "home",
        ROAMING = 4 => "roaming",
        PARTNER = 5 => "partner",
        DENIED = 6 => "denied",
    }
);

values!(
    /// `MbimRegisterMode`.
    RegisterMode {
        UNKNOWN = 0 => "unknown",
        AUTOMATIC = 1 => "automatic",
        MANUAL = 2 => "manual",
    }
);

values!(
    /// `MbimRegisterAction`.
    RegisterAction {
        AUTOMATIC = 0 => "automatic",
        MANUAL = 1 => "manual",
    }
);

values!(
    /// `MbimPacketServiceAction`.
    PacketServiceAction {
        ATTACH = 0 => "attach",
        DETACH = 1 => "detach",
    }
);

values!(
    /// `MbimPacketServiceState`.
    PacketServiceState {
        UNKNOWN = 0 => "unknown",
        ATTACHING = 1 => "attaching",
        ATTACHED = 2 => "attached",
        DETACHING = 3 => "detaching",
        DETACHED = 4 => "detached",
    }
);

values!(
    /// `MbimActivationCommand`.
    ActivationCommand {
        DEACTIVATE = 0 => "deactivate",
        ACTIVATE = 1 => "activate",
    }
);

values!(
    /// `MbimActivationState`.
    ActivationState {
        UNKNOWN = 0 => "unknown",
        ACTIVATED = 1 => "activated",
        ACTIVATING = 2 => "activating",
        DEACTIVATED = 3 => "deactivated",
        DEACTIVATING = 4 => "deactivating",
    }
);

values!(
    /// `MbimVoiceCallState`.
    VoiceCallState {
        NONE = 0 => "none",
        IN_PROGRESS = 1 => "in-progress",
        HANG_UP = 2 => "hang-up",
    }
);

values!(
    /// `MbimContextIpType`.
    ContextIpType {
        DEFAULT = 0 => "default",
        IPV4 = 1 => "ipv4",
        IPV6 = 2 => "ipv6",
        IPV4V6 = 3 => "ipv4v6",
        IPV4_AND_IPV6 = 4 => "ipv4-and-ipv6",
    }
);

values!(
    /// `MbimCompression`.
    Compression {
        NONE = 0 => "none",
        ENABLE = 1 => "enable",
    }
);

values!(
    /// `MbimAuthProtocol`.
    AuthProtocol {
        NONE = 0 => "none",
        PAP = 1 => "pap",
        CHAP = 2 => "chap",
        MSCHAPV2 = 3 => "mschapv2",
    }
);

words_message!(
    /// Asks for the device's capabilities and identity.
    DeviceCapsQuery, SERVICE, DEVICE_CAPS, Query, false, "BASIC_CONNECT DEVICE_CAPS query", {}
);

impl Request for DeviceCapsQuery {
    type Response = DeviceCapsResponse;
}

/// The device's capabilities; `device_id` is the IMEI on 3GPP devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCapsResponse {
    pub device_type: DeviceType,
    /// [`cellular_class`] bits.
    pub cellular_class: u32,
    pub voice_class: VoiceClass,
    /// [`sim_class`] bits.
    pub sim_class: u32,
    /// [`data_class`] bits.
    pub data_class: u32,
    /// [`sms_caps`] bits.
    pub sms_caps: u32,
    /// [`ctrl_caps`] bits.
    pub control_caps: u32,
    pub max_sessions: u32,
    pub custom_data_class: String,
    pub device_id: String,
    pub firmware_info: String,
    pub hardware_info: String,
}

impl Message for DeviceCapsResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = DEVICE_CAPS;
    const KIND: crate::Kind = crate::Kind::Response;
    const NAME: &'static str = "BASIC_CONNECT DEVICE_CAPS response";

    fn write(&self, out: &mut Writer) {
        let Self {
            device_type,
            cellular_class,
            voice_class,
            sim_class,
            data_class,
            sms_caps,
            control_caps,
            max_sessions,
            custom_data_class,
            device_id,
            firmware_info,
            hardware_info,
        } = self;
        out.u32(device_type.0)
            .u32(*cellular_class)
            .u32(voice_class.0)
            .u32(*sim_class)
            .u32(*data_class)
            .u32(*sms_caps)
            .u32(*control_caps)
            .u32(*max_sessions)
            .string(custom_data_class)
            .string(device_id)
            .string(firmware_info)
            .string(hardware_info);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            device_type: DeviceType(info.u32()?),
            cellular_class: info.u32()?,
            voice_class: VoiceClass(info.u32()?),
            sim_class: info.u32()?,
            data_class: info.u32()?,
            sms_caps: info.u32()?,
            control_caps: info.u32()?,
            max_sessions: info.u32()?,
            custom_data_class: info.string("CustomDataClass")?,
            device_id: info.string("DeviceId")?,
            firmware_info: info.string("FirmwareInfo")?,
            hardware_info: info.string("HardwareInfo")?,
        })
    }
}

words_message!(
    /// Asks whether the SIM is ready, and for its identities.
    SubscriberReadyStatusQuery, SERVICE, SUBSCRIBER_READY_STATUS, Query, false,
    "BASIC_CONNECT SUBSCRIBER_READY_STATUS query", {}
);

impl Request for SubscriberReadyStatusQuery {
    type Response = SubscriberReadyStatusResponse;
}

/// The SIM's readiness; also sent as a notification when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberReadyStatusResponse {
    pub ready_state: ReadyState,
    /// The IMSI.
    pub subscriber_id: String,
    pub sim_iccid: String,
    /// [`ready_info`] bits.
    pub ready_info: u32,
    pub telephone_numbers: Vec<String>,
}

impl Message for SubscriberReadyStatusResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = SUBSCRIBER_READY_STATUS;
    const KIND: crate::Kind = crate::Kind::Response;
    const NOTIFICATION: bool = true;
    const NAME: &'static str = "BASIC_CONNECT SUBSCRIBER_READY_STATUS response";

    fn write(&self, out: &mut Writer) {
        let Self {
            ready_state,
            subscriber_id,
            sim_iccid,
            ready_info,
            telephone_numbers,
        } = self;
        out.u32(ready_state.0)
            .string(subscriber_id)
            .string(sim_iccid)
            .u32(*ready_info)
            .u32(count(telephone_numbers.len()))
            .string_array(telephone_numbers);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ready_state = ReadyState(info.u32()?);
        let subscriber_id = info.string("SubscriberId")?;
        let sim_iccid = info.string("SimIccId")?;
        let ready_info = info.u32()?;
        let numbers = info.u32()?;
        Ok(Self {
            ready_state,
            subscriber_id,
            sim_iccid,
            ready_info,
            telephone_numbers: info.string_array("TelephoneNumbers", numbers)?,
        })
    }
}

words_message!(
    /// Asks for the radio's hardware and software switch states.
    RadioStateQuery, SERVICE, RADIO_STATE, Query, false, "BASIC_CONNECT RADIO_STATE query", {}
);
words_message!(
    /// Turns the radio on or off (the software switch).
    RadioStateSet, SERVICE, RADIO_STATE, Set, false, "BASIC_CONNECT RADIO_STATE set", {
        radio_state: RadioSwitchState,
    }
);
words_message!(
    /// The radio switch states; also a notification.
    RadioStateResponse, SERVICE, RADIO_STATE, Response, true, "BASIC_CONNECT RADIO_STATE response", {
        hw_radio_state: RadioSwitchState,
        sw_radio_state: RadioSwitchState,
    }
);

impl Request for RadioStateQuery {
    type Response = RadioStateResponse;
}

impl Request for RadioStateSet {
    type Response = RadioStateResponse;
}

words_message!(
    /// Asks for the network registration state.
    RegisterStateQuery, SERVICE, REGISTER_STATE, Query, false, "BASIC_CONNECT REGISTER_STATE query", {}
);

impl Request for RegisterStateQuery {
    type Response = RegisterStateResponse;
}

/// Registers automatically or with a chosen provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterStateSet {
    pub provider_id: String,
    pub register_action: RegisterAction,
    /// [`data_class`] bits.
    pub data_class: u32,
}

impl Message for RegisterStateSet {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = REGISTER_STATE;
    const KIND: crate::Kind = crate::Kind::Set;
    const NAME: &'static str = "BASIC_CONNECT REGISTER_STATE set";

    fn write(&self, out: &mut Writer) {
        let Self {
            provider_id,
            register_action,
            data_class,
        } = self;
        out.string(provider_id).u32(register_action.0).u32(*data_class);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            provider_id: info.string("ProviderId")?,
            register_action: RegisterAction(info.u32()?),
            data_class: info.u32()?,
        })
    }
}

impl Request for RegisterStateSet {
    type Response = RegisterStateResponse;
}

/// The registration state; also a notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterStateResponse {
    pub nw_error: u32,
    pub register_state: RegisterState,
    pub register_mode: RegisterMode,
    /// [`data_class`] bits.
    pub available_data_classes: u32,
    /// [`cellular_class`] bits.
    pub current_cellular_class: u32,
    /// MCC and MNC, e.g. "00101".
    pub provider_id: String,
    pub provider_name: String,
    pub roaming_text: String,
    /// [`registration_flag`] bits.
    pub registration_flag: u32,
}

impl Message for RegisterStateResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = REGISTER_STATE;
    const KIND: crate::Kind = crate::Kind::Response;
    const NOTIFICATION: bool = true;
    const NAME: &'static str = "BASIC_CONNECT REGISTER_STATE response";

    fn write(&self, out: &mut Writer) {
        let Self {
            nw_error,
            register_state,
            register_mode,
            available_data_classes,
            current_cellular_class,
            provider_id,
            provider_name,
            roaming_text,
            registration_flag,
        } = self;
        out.u32(*nw_error)
            .u32(register_state.0)
            .u32(register_mode.0)
            .u32(*available_data_classes)
            .u32(*current_cellular_class)
            .string(provider_id)
            .string(provider_name)
            .string(roaming_text)
            .u32(*registration_flag);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            nw_error: info.u32()?,
            register_state: RegisterState(info.u32()?),
            register_mode: RegisterMode(info.u32()?),
            available_data_classes: info.u32()?,
            current_cellular_class: info.u32()?,
            provider_id: info.string("ProviderId")?,
            provider_name: info.string("ProviderName")?,
            roaming_text: info.string("RoamingText")?,
            registration_flag: info.u32()?,
        })
    }
}

words_message!(
    /// Asks for the packet service (attach) state.
    PacketServiceQuery, SERVICE, PACKET_SERVICE, Query, false, "BASIC_CONNECT PACKET_SERVICE query", {}
);
words_message!(
    /// Attaches to or detaches from packet service.
    PacketServiceSet, SERVICE, PACKET_SERVICE, Set, false, "BASIC_CONNECT PACKET_SERVICE set", {
        action: PacketServiceAction,
    }
);

impl Request for PacketServiceQuery {
    type Response = PacketServiceResponse;
}

impl Request for PacketServiceSet {
    type Response = PacketServiceResponse;
}

/// The packet service state; also a notification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketServiceResponse {
    pub nw_error: u32,
    pub packet_service_state: PacketServiceState,
    /// [`data_class`] bits.
    pub highest_available_data_class: u32,
    /// Bits per second.
    pub uplink_speed: u64,
    pub downlink_speed: u64,
}

impl Message for PacketServiceResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = PACKET_SERVICE;
    const KIND: crate::Kind = crate::Kind::Response;
    const NOTIFICATION: bool = true;
    const NAME: &'static str = "BASIC_CONNECT PACKET_SERVICE response";

    fn write(&self, out: &mut Writer) {
        let Self {
            nw_error,
            packet_service_state,
            highest_available_data_class,
            uplink_speed,
            downlink_speed,
        } = self;
        out.u32(*nw_error)
            .u32(packet_service_state.0)
            .u32(*highest_available_data_class)
            .u64(*uplink_speed)
            .u64(*downlink_speed);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            nw_error: info.u32()?,
            packet_service_state: PacketServiceState(info.u32()?),
            highest_available_data_class: info.u32()?,
            uplink_speed: info.u64()?,
            downlink_speed: info.u64()?,
        })
    }
}

words_message!(
    /// Asks for the signal strength.
    SignalStateQuery, SERVICE, SIGNAL_STATE, Query, false, "BASIC_CONNECT SIGNAL_STATE query", {}
);
words_message!(
    /// Configures signal notifications: an interval in seconds and change thresholds.
    SignalStateSet, SERVICE, SIGNAL_STATE, Set, false, "BASIC_CONNECT SIGNAL_STATE set", {
        signal_strength_interval: u32,
        rssi_threshold: u32,
        error_rate_threshold: u32,
    }
);
words_message!(
    /// The signal strength; also a notification.
    SignalStateResponse, SERVICE, SIGNAL_STATE, Response, true, "BASIC_CONNECT SIGNAL_STATE response", {
        /// 0 (-113 dBm or less) to 31 (-51 dBm or more) in 2 dB steps; 99 unknown.
        rssi: u32,
        /// 0-7; 99 unknown.
        error_rate: u32,
        signal_strength_interval: u32,
        rssi_threshold: u32,
        error_rate_threshold: u32,
    }
);

impl Request for SignalStateQuery {
    type Response = SignalStateResponse;
}

impl Request for SignalStateSet {
    type Response = SignalStateResponse;
}

/// Asks for the state of one data session (the query carries the whole connect info layout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectQuery {
    pub session_id: u32,
    pub activation_state: ActivationState,
    pub voice_call_state: VoiceCallState,
    pub ip_type: ContextIpType,
    pub context_type: Uuid,
    pub nw_error: u32,
}

/// The state of a data session; also a notification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectResponse {
    pub session_id: u32,
    pub activation_state: ActivationState,
    pub voice_call_state: VoiceCallState,
    pub ip_type: ContextIpType,
    pub context_type: Uuid,
    pub nw_error: u32,
}

/// Declares the two messages that share CONNECT's session-state layout.
macro_rules! connect_info {
    ($name:ident, $kind:ident, $notification:literal, $label:literal) => {
        impl Message for $name {
            const SERVICE: Uuid = SERVICE;
            const CID: u32 = CONNECT;
            const KIND: crate::Kind = crate::Kind::$kind;
            const NOTIFICATION: bool = $notification;
            const NAME: &'static str = $label;

            fn write(&self, out: &mut Writer) {
                let Self {
                    session_id,
                    activation_state,
                    voice_call_state,
                    ip_type,
                    context_type,
                    nw_error,
                } = self;
                out.u32(*session_id)
                    .u32(activation_state.0)
                    .u32(voice_call_state.0)
                    .u32(ip_type.0)
                    .uuid(*context_type)
                    .u32(*nw_error);
            }

            fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self {
                    session_id: info.u32()?,
                    activation_state: ActivationState(info.u32()?),
                    voice_call_state: VoiceCallState(info.u32()?),
                    ip_type: ContextIpType(info.u32()?),
                    context_type: info.uuid()?,
                    nw_error: info.u32()?,
                })
            }
        }
    };
}

connect_info!(ConnectQuery, Query, false, "BASIC_CONNECT CONNECT query");
connect_info!(ConnectResponse, Response, true, "BASIC_CONNECT CONNECT response");

impl Request for ConnectQuery {
    type Response = ConnectResponse;
}

/// Activates or deactivates a data session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectSet {
    pub session_id: u32,
    pub activation_command: ActivationCommand,
    /// The APN.
    pub access_string: String,
    pub user_name: String,
    pub password: String,
    pub compression: Compression,
    pub auth_protocol: AuthProtocol,
    pub ip_type: ContextIpType,
    pub context_type: Uuid,
}

impl Message for ConnectSet {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = CONNECT;
    const KIND: crate::Kind = crate::Kind::Set;
    const NAME: &'static str = "BASIC_CONNECT CONNECT set";

    fn write(&self, out: &mut Writer) {
        let Self {
            session_id,
            activation_command,
            access_string,
            user_name,
            password,
            compression,
            auth_protocol,
            ip_type,
            context_type,
        } = self;
        out.u32(*session_id)
            .u32(activation_command.0)
            .string(access_string)
            .string(user_name)
            .string(password)
            .u32(compression.0)
            .u32(auth_protocol.0)
            .u32(ip_type.0)
            .uuid(*context_type);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            session_id: info.u32()?,
            activation_command: ActivationCommand(info.u32()?),
            access_string: info.string("AccessString")?,
            user_name: info.string("UserName")?,
            password: info.string("Password")?,
            compression: Compression(info.u32()?),
            auth_protocol: AuthProtocol(info.u32()?),
            ip_type: ContextIpType(info.u32()?),
            context_type: info.uuid()?,
        })
    }
}

impl Request for ConnectSet {
    type Response = ConnectResponse;
}

/// Asks for the IP configuration of a session; the other fields of the layout are sent empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpConfigurationQuery {
    pub session_id: u32,
}

impl Message for IpConfigurationQuery {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = IP_CONFIGURATION;
    const KIND: crate::Kind = crate::Kind::Query;
    const NAME: &'static str = "BASIC_CONNECT IP_CONFIGURATION query";

    fn write(&self, out: &mut Writer) {
        let Self { session_id } = self;
        out.u32(*session_id);
        // Availability, counts, offsets and MTUs, all zero: 14 words.
        for _ in 0..14 {
            out.u32(0);
        }
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            session_id: info.u32()?,
        })
    }
}

impl Request for IpConfigurationQuery {
    type Response = IpConfigurationResponse;
}

/// An address and its on-link prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Element {
    pub prefix_length: u32,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Element {
    pub prefix_length: u32,
    pub address: Ipv6Addr,
}

/// The IP configuration of a session; also a notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpConfigurationResponse {
    pub session_id: u32,
    /// [`ip_available`] bits.
    pub ipv4_available: u32,
    pub ipv6_available: u32,
    pub ipv4_addresses: Vec<Ipv4Element>,
    pub ipv6_addresses: Vec<Ipv6Element>,
    pub ipv4_gateway: Option<Ipv4Addr>,
    pub ipv6_gateway: Option<Ipv6Addr>,
    pub ipv4_dns: Vec<Ipv4Addr>,
    pub ipv6_dns: Vec<Ipv6Addr>,
    pub ipv4_mtu: u32,
    pub ipv6_mtu: u32,
}

impl Message for IpConfigurationResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = IP_CONFIGURATION;
    const KIND: crate::Kind = crate::Kind::Response;
    const NOTIFICATION: bool = true;
    const NAME: &'static str = "BASIC_CONNECT IP_CONFIGURATION response";

    fn write(&self, out: &mut Writer) {
        let Self {
            session_id,
            ipv4_available,
            ipv6_available,
            ipv4_addresses,
            ipv6_addresses,
            ipv4_gateway,
            ipv6_gateway,
            ipv4_dns,
            ipv6_dns,
            ipv4_mtu,
            ipv6_mtu,
        } = self;
        let v4: Vec<u8> = ipv4_addresses
            .iter()
            .flat_map(|e| [&e.prefix_length.to_le_bytes()[..], &e.address.octets()].concat())
            .collect();
        let v6: Vec<u8> = ipv6_addresses
            .iter()
            .flat_map(|e| [&e.prefix_length.to_le_bytes()[..], &e.address.octets()].concat())
            .collect();
        out.u32(*session_id)
            .u32(*ipv4_available)
            .u32(*ipv6_available)
            .u32(count(ipv4_addresses.len()))
            .offset_only(v4)
            .u32(count(ipv6_addresses.len()))
            .offset_only(v6)
            .offset_only(ipv4_gateway.map(|a| a.octets().to_vec()).unwrap_or_default())
            .offset_only(ipv6_gateway.map(|a| a.octets().to_vec()).unwrap_or_default())
            .u32(count(ipv4_dns.len()))
            .offset_only(ipv4_dns.iter().flat_map(Ipv4Addr::octets).collect())
            .u32(count(ipv6_dns.len()))
            .offset_only(ipv6_dns.iter().flat_map(Ipv6Addr::octets).collect())
            .u32(*ipv4_mtu)
            .u32(*ipv6_mtu);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let session_id = info.u32()?;
        let ipv4_available = info.u32()?;
        let ipv6_available = info.u32()?;
        let n = info.u32()?;
        let ipv4_addresses = info
            .offset_array("IPv4Address", n, 8)?
            .into_iter()
            .map(|e| Ipv4Element {
                prefix_length: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                address: Reader::ipv4(&e[4..]),
            })
            .collect();
        let n = info.u32()?;
        let ipv6_addresses = info
            .offset_array("IPv6Address", n, 20)?
            .into_iter()
            .map(|e| Ipv6Element {
                prefix_length: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                address: Reader::ipv6(&e[4..]),
            })
            .collect();
        let ipv4_gateway = info.optional_offset("IPv4Gateway", 4)?.map(Reader::ipv4);
        let ipv6_gateway = info.optional_offset("IPv6Gateway", 16)?.map(Reader::ipv6);
        let n = info.u32()?;
        let ipv4_dns = info
            .offset_array("IPv4DnsServer", n, 4)?
            .into_iter()
            .map(Reader::ipv4)
            .collect();
        let n = info.u32()?;
        let ipv6_dns = info
            .offset_array("IPv6DnsServer", n, 16)?
            .into_iter()
            .map(Reader::ipv6)
            .collect();
        Ok(Self {
            session_id,
            ipv4_available,
            ipv6_available,
            ipv4_addresses,
            ipv6_addresses,
            ipv4_gateway,
            ipv6_gateway,
            ipv4_dns,
            ipv6_dns,
            ipv4_mtu: info.u32()?,
            ipv6_mtu: info.u32()?,
        })
    }
}

words_message!(
    /// Asks which services and CIDs the device implements.
    DeviceServicesQuery, SERVICE, DEVICE_SERVICES, Query, false, "BASIC_CONNECT DEVICE_SERVICES query", {}
);

impl Request for DeviceServicesQuery {
    type Response = DeviceServicesResponse;
}

/// One service the device implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceServiceElement {
    pub service: Uuid,
    /// 1 host-to-device, 2 device-to-host (for device service streams).
    pub dss_payload: u32,
    pub max_dss_instances: u32,
    pub cids: Vec<u32>,
}

/// The services the device implements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceServicesResponse {
    pub max_dss_sessions: u32,
    pub device_services: Vec<DeviceServiceElement>,
}

impl Message for DeviceServicesResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = DEVICE_SERVICES;
    const KIND: crate::Kind = crate::Kind::Response;
    const NAME: &'static str = "BASIC_CONNECT DEVICE_SERVICES response";

    fn write(&self, out: &mut Writer) {
        let Self {
            max_dss_sessions,
            device_services,
        } = self;
        let elements = device_services
            .iter()
            .map(
                |DeviceServiceElement {
                     service,
                     dss_payload,
                     max_dss_instances,
                     cids,
                 }| {
                    let mut e = Vec::with_capacity(28 + 4 * cids.len());
                    e.extend_from_slice(&service.0);
                    e.extend_from_slice(&dss_payload.to_le_bytes());
                    e.extend_from_slice(&max_dss_instances.to_le_bytes());
                    e.extend_from_slice(&count(cids.len()).to_le_bytes());
                    e.extend(cids.iter().flat_map(|c| c.to_le_bytes()));
                    e
                },
            )
            .collect();
        out.u32(count(device_services.len()))
            .u32(*max_dss_sessions)
            .ref_struct_array(elements);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = info.u32()?;
        let max_dss_sessions = info.u32()?;
        let device_services = info
            .ref_struct_array("DeviceServices", n)?
            .into_iter()
            .map(|e| {
                let mut e = Reader::new(e, Self::NAME);
                let service = e.uuid()?;
                let dss_payload = e.u32()?;
                let max_dss_instances = e.u32()?;
                let n = e.u32()?;
                Ok(DeviceServiceElement {
                    service,
                    dss_payload,
                    max_dss_instances,
                    cids: e.u32_array(n)?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self {
            max_dss_sessions,
            device_services,
        })
    }
}

/// One service and the CIDs whose notifications the host wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    pub service: Uuid,
    pub cids: Vec<u32>,
}

fn write_events(out: &mut Writer, events: &[EventEntry]) {
    let elements = events
        .iter()
        .map(|EventEntry { service, cids }| {
            let mut e = Vec::with_capacity(20 + 4 * cids.len());
            e.extend_from_slice(&service.0);
            e.extend_from_slice(&count(cids.len()).to_le_bytes());
            e.extend(cids.iter().flat_map(|c| c.to_le_bytes()));
            e
        })
        .collect();
    out.u32(count(events.len())).ref_struct_array(elements);
}

fn read_events(info: &mut Reader<'_>, message: &'static str) -> Result<Vec<EventEntry>, DecodeError> {
    let n = info.u32()?;
    info.ref_struct_array("Events", n)?
        .into_iter()
        .map(|e| {
            let mut e = Reader::new(e, message);
            let service = e.uuid()?;
            let n = e.u32()?;
            Ok(EventEntry {
                service,
                cids: e.u32_array(n)?,
            })
        })
        .collect()
}

/// Replaces the set of notifications the host receives (an empty CID list means all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceServiceSubscribeListSet {
    pub events: Vec<EventEntry>,
}

/// The notifications now enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceServiceSubscribeListResponse {
    pub events: Vec<EventEntry>,
}

/// Declares the two messages that share the event list layout.
macro_rules! event_list {
    ($name:ident, $kind:ident, $label:literal) => {
        impl Message for $name {
            const SERVICE: Uuid = SERVICE;
            const CID: u32 = DEVICE_SERVICE_SUBSCRIBE_LIST;
            const KIND: crate::Kind = crate::Kind::$kind;
            const NAME: &'static str = $label;

            fn write(&self, out: &mut Writer) {
                let Self { events } = self;
                write_events(out, events);
            }

            fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self {
                    events: read_events(info, Self::NAME)?,
                })
            }
        }
    };
}

event_list!(
    DeviceServiceSubscribeListSet,
    Set,
    "BASIC_CONNECT DEVICE_SERVICE_SUBSCRIBE_LIST set"
);
event_list!(
    DeviceServiceSubscribeListResponse,
    Response,
    "BASIC_CONNECT DEVICE_SERVICE_SUBSCRIBE_LIST response"
);

impl Request for DeviceServiceSubscribeListSet {
    type Response = DeviceServiceSubscribeListResponse;
}

/// A list length as the u32 MBIM counts in; lists come from typed values, never near 4 G entries.
pub(crate) fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
