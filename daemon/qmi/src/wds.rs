//! WDS (service 0x01): data sessions, their state and their IP settings.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    DecodeError, EncodeError, Message, MessageKind, Request, Service,
    message::{empty_message, named_values, switches_message},
    tlv,
};

pub const SET_EVENT_REPORT: u16 = 0x0001;
/// The Event Report indication shares Set Event Report's id.
pub const EVENT_REPORT_INDICATION: u16 = 0x0001;
pub const START_NETWORK: u16 = 0x0020;
pub const STOP_NETWORK: u16 = 0x0021;
pub const GET_PACKET_SERVICE_STATUS: u16 = 0x0022;
/// The Packet Service Status indication shares its request's id.
pub const PACKET_SERVICE_STATUS_INDICATION: u16 = 0x0022;
pub const GET_CHANNEL_RATES: u16 = 0x0023;
pub const GET_CURRENT_SETTINGS: u16 = 0x002D;
pub const SET_IP_FAMILY: u16 = 0x004D;

named_values!(
    /// `QmiWdsIpFamily`.
    IpFamily(u8) {
        IPV4 = 4,
        IPV6 = 6,
        UNSPECIFIED = 8,
    }
);

named_values!(
    /// `QmiWdsConnectionStatus`.
    ConnectionStatus(u8) {
        UNKNOWN = 0,
        DISCONNECTED = 1,
        CONNECTED = 2,
        SUSPENDED = 3,
        AUTHENTICATING = 4,
    }
);

named_values!(
    /// Why a call ended (`QmiWdsCallEndReason`; the common generic ones are named).
    CallEndReason(u16) {
        GENERIC_UNSPECIFIED = 1,
        GENERIC_CLIENT_END = 2,
        GENERIC_NO_SERVICE = 3,
        GENERIC_FADE = 4,
        GENERIC_RELEASE_NORMAL = 5,
        GENERIC_ACCESS_FAILURE = 1014,
        GENERIC_CLOSE_IN_PROGRESS = 1016,
        GENERIC_NETWORK_INITIATED_TERMINATION = 1017,
        GENERIC_NO_NETWORK = 1020,
    }
);

named_values!(
    /// The domain of a verbose call-end reason (`QmiWdsVerboseCallEndReasonType`).
    VerboseCallEndReasonType(u16) {
        MIP = 1,
        INTERNAL = 2,
        CM = 3,
        THREEGPP = 6,
        PPP = 7,
        EHRPD = 8,
        IPV6 = 9,
    }
);

/// A call-end reason with its domain; the 3GPP ones are TS 24.008 causes (36: regular
/// deactivation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerboseCallEndReason {
    pub kind: VerboseCallEndReasonType,
    pub reason: i16,
}

/// Authentication protocols a session may use (`QmiWdsAuthentication` bits).
pub mod authentication {
    pub const NONE: u8 = 0;
    pub const PAP: u8 = 1 << 0;
    pub const CHAP: u8 = 1 << 1;
}

switches_message!(
    /// Turns WDS event reports on or off for this client.
    SetEventReport, Service::WDS, SET_EVENT_REPORT, Request, "WDS Set Event Report request",
    {
        channel_rate = 0x10,
        data_bearer_technology = 0x12,
        dormancy_status = 0x13,
        current_data_bearer_technology = 0x15,
        /// The data call status in Event Report indications.
        data_call_status = 0x17,
        preferred_data_system = 0x18,
        data_systems = 0x1A,
        extended_data_bearer_technology = 0x1E,
    }
);

empty_message!(
    SetEventReportResponse,
    Service::WDS,
    SET_EVENT_REPORT,
    Response,
    "WDS Set Event Report response"
);

impl Request for SetEventReport {
    type Response = SetEventReportResponse;
}

named_values!(
    /// `QmiWdsDataCallStatus`.
    DataCallStatus(u8) {
        UNKNOWN = 0,
        ACTIVATED = 1,
        TERMINATED = 2,
    }
);

const TLV_TX_BYTES: u8 = 0x19;
const TLV_RX_BYTES: u8 = 0x1A;
const TLV_DATA_CALL_STATUS: u8 = 0x1F;

/// What the modem reports to clients that asked with [`SetEventReport`] (the parts this
/// codec reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventReportIndication {
    pub tx_bytes_ok: Option<u64>,
    pub rx_bytes_ok: Option<u64>,
    pub data_call_status: Option<DataCallStatus>,
}

impl Message for EventReportIndication {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = EVENT_REPORT_INDICATION;
    const KIND: MessageKind = MessageKind::Indication;
    const NAME: &'static str = "WDS Event Report indication";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            tx_bytes_ok,
            rx_bytes_ok,
            data_call_status,
        } = *self;
        out.put_opt(TLV_TX_BYTES, tx_bytes_ok, |w, id, v| w.put_fixed(id, &v.to_le_bytes()))
            .put_opt(TLV_RX_BYTES, rx_bytes_ok, |w, id, v| w.put_fixed(id, &v.to_le_bytes()))
            .put_opt(TLV_DATA_CALL_STATUS, data_call_status.map(|s| s.0), tlv::Writer::put_u8);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let u64_tlv = |id| {
            tlv::find(tlvs, id)?
                .map(|v| tlv::fixed::<8>(v, id, Self::NAME, "8").map(u64::from_le_bytes))
                .transpose()
        };
        Ok(Self {
            tx_bytes_ok: u64_tlv(TLV_TX_BYTES)?,
            rx_bytes_ok: u64_tlv(TLV_RX_BYTES)?,
            data_call_status: tlv::find_u8(tlvs, TLV_DATA_CALL_STATUS, Self::NAME)?.map(DataCallStatus),
        })
    }
}

const TLV_APN: u8 = 0x14;
const TLV_AUTHENTICATION: u8 = 0x16;
const TLV_USERNAME: u8 = 0x17;
const TLV_PASSWORD: u8 = 0x18;
const TLV_IP_FAMILY_PREFERENCE: u8 = 0x19;
const TLV_PROFILE_INDEX_3GPP: u8 = 0x31;
const TLV_AUTOCONNECT: u8 = 0x33;

/// Brings up a data session; every setting is optional (the default profile fills in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartNetwork {
    pub apn: Option<String>,
    /// [`authentication`] bits.
    pub authentication: Option<u8>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ip_family: Option<IpFamily>,
    pub profile_index_3gpp: Option<u8>,
    pub autoconnect: Option<bool>,
}

impl Message for StartNetwork {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = START_NETWORK;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "WDS Start Network request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            apn,
            authentication,
            username,
            password,
            ip_family,
            profile_index_3gpp,
            autoconnect,
        } = self;
        if let Some(apn) = apn {
            out.put(TLV_APN, apn.as_bytes())?;
        }
        out.put_opt(TLV_AUTHENTICATION, *authentication, tlv::Writer::put_u8);
        if let Some(username) = username {
            out.put(TLV_USERNAME, username.as_bytes())?;
        }
        if let Some(password) = password {
            out.put(TLV_PASSWORD, password.as_bytes())?;
        }
        out.put_opt(TLV_IP_FAMILY_PREFERENCE, ip_family.map(|f| f.0), tlv::Writer::put_u8)
            .put_opt(TLV_PROFILE_INDEX_3GPP, *profile_index_3gpp, tlv::Writer::put_u8)
            .put_opt(TLV_AUTOCONNECT, *autoconnect, tlv::Writer::put_bool);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            apn: tlv::find_string(tlvs, TLV_APN)?,
            authentication: tlv::find_u8(tlvs, TLV_AUTHENTICATION, Self::NAME)?,
            username: tlv::find_string(tlvs, TLV_USERNAME)?,
            password: tlv::find_string(tlvs, TLV_PASSWORD)?,
            ip_family: tlv::find_u8(tlvs, TLV_IP_FAMILY_PREFERENCE, Self::NAME)?.map(IpFamily),
            profile_index_3gpp: tlv::find_u8(tlvs, TLV_PROFILE_INDEX_3GPP, Self::NAME)?,
            autoconnect: tlv::find_bool(tlvs, TLV_AUTOCONNECT, Self::NAME)?,
        })
    }
}

impl Request for StartNetwork {
    type Response = StartNetworkResponse;
}

const TLV_PACKET_DATA_HANDLE: u8 = 0x01;
const TLV_CALL_END_REASON: u8 = 0x10;
const TLV_VERBOSE_CALL_END_REASON: u8 = 0x11;

fn write_end_reasons(out: &mut tlv::Writer, reason: Option<CallEndReason>, verbose: Option<VerboseCallEndReason>) {
    out.put_opt(TLV_CALL_END_REASON, reason.map(|r| r.0), tlv::Writer::put_u16);
    if let Some(VerboseCallEndReason { kind, reason }) = verbose {
        let [k0, k1] = kind.0.to_le_bytes();
        let [r0, r1] = reason.to_le_bytes();
        out.put_fixed(TLV_VERBOSE_CALL_END_REASON, &[k0, k1, r0, r1]);
    }
}

fn read_end_reasons(
    tlvs: &[u8],
    message: &'static str,
) -> Result<(Option<CallEndReason>, Option<VerboseCallEndReason>), DecodeError> {
    let reason = tlv::find_u16(tlvs, TLV_CALL_END_REASON, message)?.map(CallEndReason);
    let verbose = tlv::find(tlvs, TLV_VERBOSE_CALL_END_REASON)?
        .map(|v| {
            let [k0, k1, r0, r1] = tlv::fixed(v, TLV_VERBOSE_CALL_END_REASON, message, "4")?;
            Ok::<_, DecodeError>(VerboseCallEndReason {
                kind: VerboseCallEndReasonType(u16::from_le_bytes([k0, k1])),
                reason: i16::from_le_bytes([r0, r1]),
            })
        })
        .transpose()?;
    Ok((reason, verbose))
}

/// The session's handle on success; why the call failed on `CallFailed`
/// (send it with [`Message::to_error_response`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartNetworkResponse {
    pub packet_data_handle: Option<u32>,
    pub call_end_reason: Option<CallEndReason>,
    pub verbose_call_end_reason: Option<VerboseCallEndReason>,
}

impl Message for StartNetworkResponse {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = START_NETWORK;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "WDS Start Network response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            packet_data_handle,
            call_end_reason,
            verbose_call_end_reason,
        } = *self;
        out.put_opt(TLV_PACKET_DATA_HANDLE, packet_data_handle, tlv::Writer::put_u32);
        write_end_reasons(out, call_end_reason, verbose_call_end_reason);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let (call_end_reason, verbose_call_end_reason) = read_end_reasons(tlvs, Self::NAME)?;
        Ok(Self {
            packet_data_handle: tlv::find_u32(tlvs, TLV_PACKET_DATA_HANDLE, Self::NAME)?,
            call_end_reason,
            verbose_call_end_reason,
        })
    }
}

const TLV_DISABLE_AUTOCONNECT: u8 = 0x10;

/// Tears down the session `packet_data_handle` (0xFFFFFFFF: the autoconnect session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopNetwork {
    pub packet_data_handle: u32,
    pub disable_autoconnect: Option<bool>,
}

impl Message for StopNetwork {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = STOP_NETWORK;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "WDS Stop Network request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u32(TLV_PACKET_DATA_HANDLE, self.packet_data_handle).put_opt(
            TLV_DISABLE_AUTOCONNECT,
            self.disable_autoconnect,
            tlv::Writer::put_bool,
        );
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_PACKET_DATA_HANDLE, Self::NAME)?;
        let handle = tlv::fixed::<4>(value, TLV_PACKET_DATA_HANDLE, Self::NAME, "4")?;
        Ok(Self {
            packet_data_handle: u32::from_le_bytes(handle),
            disable_autoconnect: tlv::find_bool(tlvs, TLV_DISABLE_AUTOCONNECT, Self::NAME)?,
        })
    }
}

empty_message!(
    StopNetworkResponse,
    Service::WDS,
    STOP_NETWORK,
    Response,
    "WDS Stop Network response"
);

impl Request for StopNetwork {
    type Response = StopNetworkResponse;
}

const TLV_CONNECTION_STATUS: u8 = 0x01;
const TLV_INDICATION_IP_FAMILY: u8 = 0x12;
const TLV_EXTENDED_TECHNOLOGY: u8 = 0x34;

empty_message!(
    /// Asks whether this client's session is up.
    GetPacketServiceStatus, Service::WDS, GET_PACKET_SERVICE_STATUS, Request, "WDS Get Packet Service Status request"
);

impl Request for GetPacketServiceStatus {
    type Response = GetPacketServiceStatusResponse;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetPacketServiceStatusResponse {
    pub connection_status: ConnectionStatus,
}

impl Message for GetPacketServiceStatusResponse {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = GET_PACKET_SERVICE_STATUS;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "WDS Get Packet Service Status response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u8(TLV_CONNECTION_STATUS, self.connection_status.0);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_CONNECTION_STATUS, Self::NAME)?;
        let [status] = tlv::fixed(value, TLV_CONNECTION_STATUS, Self::NAME, "1")?;
        Ok(Self {
            connection_status: ConnectionStatus(status),
        })
    }
}

/// Sent to a session's client when it goes up or down, with why it went down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketServiceStatusIndication {
    pub connection_status: ConnectionStatus,
    pub reconfiguration_required: bool,
    pub call_end_reason: Option<CallEndReason>,
    pub verbose_call_end_reason: Option<VerboseCallEndReason>,
    pub ip_family: Option<IpFamily>,
    pub extended_technology_preference: Option<u16>,
}

impl Message for PacketServiceStatusIndication {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = PACKET_SERVICE_STATUS_INDICATION;
    const KIND: MessageKind = MessageKind::Indication;
    const NAME: &'static str = "WDS Packet Service Status indication";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            connection_status,
            reconfiguration_required,
            call_end_reason,
            verbose_call_end_reason,
            ip_family,
            extended_technology_preference,
        } = *self;
        out.put_fixed(
            TLV_CONNECTION_STATUS,
            &[connection_status.0, u8::from(reconfiguration_required)],
        );
        write_end_reasons(out, call_end_reason, verbose_call_end_reason);
        out.put_opt(TLV_INDICATION_IP_FAMILY, ip_family.map(|f| f.0), tlv::Writer::put_u8)
            .put_opt(
                TLV_EXTENDED_TECHNOLOGY,
                extended_technology_preference,
                tlv::Writer::put_u16,
            );
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_CONNECTION_STATUS, Self::NAME)?;
        let [status, reconfigure] = tlv::fixed(value, TLV_CONNECTION_STATUS, Self::NAME, "2")?;
        let (call_end_reason, verbose_call_end_reason) = read_end_reasons(tlvs, Self::NAME)?;
        Ok(Self {
            connection_status: ConnectionStatus(status),
            reconfiguration_required: reconfigure != 0,
            call_end_reason,
            verbose_call_end_reason,
            ip_family: tlv::find_u8(tlvs, TLV_INDICATION_IP_FAMILY, Self::NAME)?.map(IpFamily),
            extended_technology_preference: tlv::find_u16(tlvs, TLV_EXTENDED_TECHNOLOGY, Self::NAME)?,
        })
    }
}

empty_message!(
    /// Asks for the data channel's current and maximum rates.
    GetChannelRates, Service::WDS, GET_CHANNEL_RATES, Request, "WDS Get Channel Rates request"
);

impl Request for GetChannelRates {
    type Response = GetChannelRatesResponse;
}

const TLV_CHANNEL_RATES: u8 = 0x01;

/// The data channel's rates in bit/s, uplink (TX) and downlink (RX); 0 where the modem has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetChannelRatesResponse {
    pub current_tx_bps: u32,
    pub current_rx_bps: u32,
    pub max_tx_bps: u32,
    pub max_rx_bps: u32,
}

impl Message for GetChannelRatesResponse {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = GET_CHANNEL_RATES;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "WDS Get Channel Rates response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            current_tx_bps,
            current_rx_bps,
            max_tx_bps,
            max_rx_bps,
        } = *self;
        let mut v = tlv::Value::new();
        for rate in [current_tx_bps, current_rx_bps, max_tx_bps, max_rx_bps] {
            v.bytes(&rate.to_le_bytes());
        }
        out.put_value(TLV_CHANNEL_RATES, &v)?;
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_CHANNEL_RATES, Self::NAME)?;
        let bytes = tlv::fixed::<16>(value, TLV_CHANNEL_RATES, Self::NAME, "16")?;
        let rate = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Ok(Self {
            current_tx_bps: rate(0),
            current_rx_bps: rate(4),
            max_tx_bps: rate(8),
            max_rx_bps: rate(12),
        })
    }
}

/// Which settings Get Current Settings should report (`QmiWdsGetCurrentSettingsRequestedSettings`).
pub mod requested_settings {
    pub const PROFILE_ID: u32 = 1 << 0;
    pub const PROFILE_NAME: u32 = 1 << 1;
    pub const PDP_TYPE: u32 = 1 << 2;
    pub const APN_NAME: u32 = 1 << 3;
    pub const DNS_ADDRESS: u32 = 1 << 4;
    pub const GRANTED_QOS: u32 = 1 << 5;
    pub const USERNAME: u32 = 1 << 6;
    pub const AUTH_PROTOCOL: u32 = 1 << 7;
    pub const IP_ADDRESS: u32 = 1 << 8;
    pub const GATEWAY_INFO: u32 = 1 << 9;
    pub const PCSCF_ADDRESS: u32 = 1 << 10;
    pub const PCSCF_SERVER_ADDRESS_LIST: u32 = 1 << 11;
    pub const PCSCF_DOMAIN_NAME_LIST: u32 = 1 << 12;
    pub const MTU: u32 = 1 << 13;
    pub const DOMAIN_NAME_LIST: u32 = 1 << 14;
    pub const IP_FAMILY: u32 = 1 << 15;
    pub const IMCN_FLAG: u32 = 1 << 16;
    pub const EXTENDED_TECHNOLOGY_PREFERENCE: u32 = 1 << 17;
}

const TLV_REQUESTED_SETTINGS: u8 = 0x10;

/// Asks for the session's settings; `requested_settings` is a [`requested_settings`] mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetCurrentSettings {
    pub requested_settings: u32,
}

impl Message for GetCurrentSettings {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = GET_CURRENT_SETTINGS;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "WDS Get Current Settings request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u32(TLV_REQUESTED_SETTINGS, self.requested_settings);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_REQUESTED_SETTINGS, Self::NAME)?;
        let mask = tlv::fixed::<4>(value, TLV_REQUESTED_SETTINGS, Self::NAME, "4")?;
        Ok(Self {
            requested_settings: u32::from_le_bytes(mask),
        })
    }
}

impl Request for GetCurrentSettings {
    type Response = GetCurrentSettingsResponse;
}

const TLV_PROFILE_NAME: u8 = 0x10;
const TLV_PDP_TYPE: u8 = 0x11;
const TLV_PRIMARY_DNS: u8 = 0x15;
const TLV_SECONDARY_DNS: u8 = 0x16;
const TLV_SETTINGS_USERNAME: u8 = 0x1B;
const TLV_SETTINGS_AUTHENTICATION: u8 = 0x1D;
const TLV_IPV4_ADDRESS: u8 = 0x1E;
const TLV_PROFILE_ID: u8 = 0x1F;
const TLV_IPV4_GATEWAY: u8 = 0x20;
const TLV_IPV4_SUBNET_MASK: u8 = 0x21;
const TLV_IPV6_ADDRESS: u8 = 0x25;
const TLV_IPV6_GATEWAY: u8 = 0x26;
const TLV_IPV6_PRIMARY_DNS: u8 = 0x27;
const TLV_IPV6_SECONDARY_DNS: u8 = 0x28;
const TLV_MTU: u8 = 0x29;
const TLV_DOMAIN_NAMES: u8 = 0x2A;
const TLV_SETTINGS_IP_FAMILY: u8 = 0x2B;

/// The session's settings; a modem sends what was requested and what it has.
///
/// IPv4 addresses travel as little-endian `u32` holding the address's big-endian value,
/// IPv6 ones as eight network-order `u16`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetCurrentSettingsResponse {
    pub profile_name: Option<String>,
    pub pdp_type: Option<u8>,
    pub apn: Option<String>,
    pub primary_dns: Option<Ipv4Addr>,
    pub secondary_dns: Option<Ipv4Addr>,
    pub username: Option<String>,
    /// [`authentication`] bits.
    pub authentication: Option<u8>,
    pub ipv4_address: Option<Ipv4Addr>,
    /// `(profile type, profile index)`.
    pub profile_id: Option<(u8, u8)>,
    pub ipv4_gateway: Option<Ipv4Addr>,
    pub ipv4_subnet_mask: Option<Ipv4Addr>,
    /// Address and prefix length.
    pub ipv6_address: Option<(Ipv6Addr, u8)>,
    pub ipv6_gateway: Option<(Ipv6Addr, u8)>,
    pub ipv6_primary_dns: Option<Ipv6Addr>,
    pub ipv6_secondary_dns: Option<Ipv6Addr>,
    pub mtu: Option<u32>,
    pub domain_names: Option<Vec<String>>,
    pub ip_family: Option<IpFamily>,
}

fn put_ipv4(out: &mut tlv::Writer, id: u8, address: Option<Ipv4Addr>) {
    out.put_opt(id, address.map(u32::from), tlv::Writer::put_u32);
}

fn find_ipv4(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<Ipv4Addr>, DecodeError> {
    Ok(tlv::find_u32(tlvs, id, message)?.map(Ipv4Addr::from))
}

fn put_ipv6(value: &mut tlv::Value, address: Ipv6Addr) {
    // Network order segment by segment is simply the address's octets.
    value.bytes(&address.octets());
}

fn read_ipv6(r: &mut tlv::Reader<'_>) -> Result<Ipv6Addr, DecodeError> {
    r.array::<16>().map(Ipv6Addr::from)
}

impl Message for GetCurrentSettingsResponse {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = GET_CURRENT_SETTINGS;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "WDS Get Current Settings response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            profile_name,
            pdp_type,
            apn,
            primary_dns,
            secondary_dns,
            username,
            authentication,
            ipv4_address,
            profile_id,
            ipv4_gateway,
            ipv4_subnet_mask,
            ipv6_address,
            ipv6_gateway,
            ipv6_primary_dns,
            ipv6_secondary_dns,
            mtu,
            domain_names,
            ip_family,
        } = self;
        for (id, text) in [(TLV_PROFILE_NAME, profile_name), (TLV_APN, apn)] {
            if let Some(text) = text {
                out.put(id, text.as_bytes())?;
            }
        }
        out.put_opt(TLV_PDP_TYPE, *pdp_type, tlv::Writer::put_u8);
        put_ipv4(out, TLV_PRIMARY_DNS, *primary_dns);
        put_ipv4(out, TLV_SECONDARY_DNS, *secondary_dns);
        if let Some(username) = username {
            out.put(TLV_SETTINGS_USERNAME, username.as_bytes())?;
        }
        out.put_opt(TLV_SETTINGS_AUTHENTICATION, *authentication, tlv::Writer::put_u8);
        put_ipv4(out, TLV_IPV4_ADDRESS, *ipv4_address);
        if let Some((kind, index)) = profile_id {
            out.put_fixed(TLV_PROFILE_ID, &[*kind, *index]);
        }
        put_ipv4(out, TLV_IPV4_GATEWAY, *ipv4_gateway);
        put_ipv4(out, TLV_IPV4_SUBNET_MASK, *ipv4_subnet_mask);
        for (id, address) in [(TLV_IPV6_ADDRESS, ipv6_address), (TLV_IPV6_GATEWAY, ipv6_gateway)] {
            if let Some((address, prefix)) = address {
                let mut v = tlv::Value::new();
                put_ipv6(&mut v, *address);
                v.u8(*prefix);
                out.put_value(id, &v)?;
            }
        }
        for (id, address) in [
            (TLV_IPV6_PRIMARY_DNS, ipv6_primary_dns),
            (TLV_IPV6_SECONDARY_DNS, ipv6_secondary_dns),
        ] {
            if let Some(address) = address {
                out.put_fixed(id, &address.octets());
            }
        }
        out.put_opt(TLV_MTU, *mtu, tlv::Writer::put_u32);
        if let Some(names) = domain_names {
            let mut v = tlv::Value::new();
            v.count_u8("the domain name list", names.len())?;
            for name in names {
                v.u16_prefixed("a domain name", name.as_bytes())?;
            }
            out.put_value(TLV_DOMAIN_NAMES, &v)?;
        }
        out.put_opt(TLV_SETTINGS_IP_FAMILY, ip_family.map(|f| f.0), tlv::Writer::put_u8);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let ipv6_with_prefix = |id| {
            tlv::find(tlvs, id)?
                .map(|v| {
                    let mut r = tlv::Reader::new(v, id, Self::NAME);
                    Ok::<_, DecodeError>((read_ipv6(&mut r)?, r.u8()?))
                })
                .transpose()
        };
        let ipv6 = |id| {
            tlv::find(tlvs, id)?
                .map(|v| read_ipv6(&mut tlv::Reader::new(v, id, Self::NAME)))
                .transpose()
        };
        let domain_names = tlv::find(tlvs, TLV_DOMAIN_NAMES)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_DOMAIN_NAMES, Self::NAME);
                let count = r.count_u8()?;
                r.elements(count, |r| r.u16_prefixed().map(tlv::string))
            })
            .transpose()?;
        Ok(Self {
            profile_name: tlv::find_string(tlvs, TLV_PROFILE_NAME)?,
            pdp_type: tlv::find_u8(tlvs, TLV_PDP_TYPE, Self::NAME)?,
            apn: tlv::find_string(tlvs, TLV_APN)?,
            primary_dns: find_ipv4(tlvs, TLV_PRIMARY_DNS, Self::NAME)?,
            secondary_dns: find_ipv4(tlvs, TLV_SECONDARY_DNS, Self::NAME)?,
            username: tlv::find_string(tlvs, TLV_SETTINGS_USERNAME)?,
            authentication: tlv::find_u8(tlvs, TLV_SETTINGS_AUTHENTICATION, Self::NAME)?,
            ipv4_address: find_ipv4(tlvs, TLV_IPV4_ADDRESS, Self::NAME)?,
            profile_id: tlv::find(tlvs, TLV_PROFILE_ID)?
                .map(|v| tlv::fixed::<2>(v, TLV_PROFILE_ID, Self::NAME, "2").map(|[k, i]| (k, i)))
                .transpose()?,
            ipv4_gateway: find_ipv4(tlvs, TLV_IPV4_GATEWAY, Self::NAME)?,
            ipv4_subnet_mask: find_ipv4(tlvs, TLV_IPV4_SUBNET_MASK, Self::NAME)?,
            ipv6_address: ipv6_with_prefix(TLV_IPV6_ADDRESS)?,
            ipv6_gateway: ipv6_with_prefix(TLV_IPV6_GATEWAY)?,
            ipv6_primary_dns: ipv6(TLV_IPV6_PRIMARY_DNS)?,
            ipv6_secondary_dns: ipv6(TLV_IPV6_SECONDARY_DNS)?,
            mtu: tlv::find_u32(tlvs, TLV_MTU, Self::NAME)?,
            domain_names,
            ip_family: tlv::find_u8(tlvs, TLV_SETTINGS_IP_FAMILY, Self::NAME)?.map(IpFamily),
        })
    }
}

const TLV_IP_FAMILY: u8 = 0x01;

/// Chooses the IP family of this client's next session (dual-stack needs two clients).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetIpFamily {
    pub preference: IpFamily,
}

impl Message for SetIpFamily {
    const SERVICE: Service = Service::WDS;
    const MESSAGE_ID: u16 = SET_IP_FAMILY;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "WDS Set IP Family request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u8(TLV_IP_FAMILY, self.preference.0);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let [family] = tlv::fixed(
            tlv::require(tlvs, TLV_IP_FAMILY, Self::NAME)?,
            TLV_IP_FAMILY,
            Self::NAME,
            "1",
        )?;
        Ok(Self {
            preference: IpFamily(family),
        })
    }
}

empty_message!(
    SetIpFamilyResponse,
    Service::WDS,
    SET_IP_FAMILY,
    Response,
    "WDS Set IP Family response"
);

impl Request for SetIpFamily {
    type Response = SetIpFamilyResponse;
}
