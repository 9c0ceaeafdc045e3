//! NAS (service 0x03): registration, serving system and signal quality.

use crate::{
    DecodeError, EncodeError, Message, MessageKind, Request, Service,
    message::{Body, body_message, empty_message, named_values, switches_message},
    tlv,
};

pub const REGISTER_INDICATIONS: u16 = 0x0003;
pub const GET_SIGNAL_STRENGTH: u16 = 0x0020;
pub const GET_SERVING_SYSTEM: u16 = 0x0024;
/// The Serving System indication shares its request's id.
pub const SERVING_SYSTEM_INDICATION: u16 = 0x0024;
pub const GET_SYSTEM_INFO: u16 = 0x004D;
pub const SYSTEM_INFO_INDICATION: u16 = 0x004E;
pub const GET_SIGNAL_INFO: u16 = 0x004F;
pub const CONFIG_SIGNAL_INFO: u16 = 0x0050;
pub const SIGNAL_INFO_INDICATION: u16 = 0x0051;

named_values!(
    /// A radio access technology (`QmiNasRadioInterface`, a signed byte on the wire).
    RadioInterface(i8) {
        UNKNOWN = -1,
        NONE = 0,
        CDMA_1X = 1,
        CDMA_1XEVDO = 2,
        AMPS = 3,
        GSM = 4,
        UMTS = 5,
        LTE = 8,
        TD_SCDMA = 9,
        NR5G = 12,
    }
);

switches_message!(
    /// Turns NAS indications on or off for this client; absent TLVs leave a switch as it is.
    RegisterIndications, Service::NAS, REGISTER_INDICATIONS, Request, "NAS Register Indications request",
    {
        system_selection_preference = 0x10,
        ddtm_events = 0x12,
        /// The Serving System indication (0x0024).
        serving_system_events = 0x13,
        dual_standby_preference = 0x14,
        subscription_info = 0x15,
        network_time = 0x17,
        /// The System Info indication (0x004E).
        system_info = 0x18,
        /// The Signal Info indication (0x0051), with the thresholds of Config Signal Info.
        signal_info = 0x19,
        error_rate = 0x1A,
        current_plmn_name = 0x1E,
        rf_band_information = 0x20,
    }
);

empty_message!(
    RegisterIndicationsResponse,
    Service::NAS,
    REGISTER_INDICATIONS,
    Response,
    "NAS Register Indications response"
);

impl Request for RegisterIndications {
    type Response = RegisterIndicationsResponse;
}

/// Which extra measurements Get Signal Strength should report (`QmiNasSignalStrengthRequest`).
pub mod signal_strength_request {
    pub const RSSI: u16 = 1 << 0;
    pub const ECIO: u16 = 1 << 1;
    pub const IO: u16 = 1 << 2;
    pub const SINR: u16 = 1 << 3;
    pub const ERROR_RATE: u16 = 1 << 4;
    pub const RSRQ: u16 = 1 << 5;
    pub const LTE_SNR: u16 = 1 << 6;
    pub const LTE_RSRP: u16 = 1 << 7;
}

const TLV_REQUEST_MASK: u8 = 0x10;

/// The legacy signal query; [`GetSignalInfo`] is the one that reports LTE and 5G properly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetSignalStrength {
    /// [`signal_strength_request`] bits.
    pub request_mask: Option<u16>,
}

impl Message for GetSignalStrength {
    const SERVICE: Service = Service::NAS;
    const MESSAGE_ID: u16 = GET_SIGNAL_STRENGTH;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "NAS Get Signal Strength request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_opt(TLV_REQUEST_MASK, self.request_mask, tlv::Writer::put_u16);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            request_mask: tlv::find_u16(tlvs, TLV_REQUEST_MASK, Self::NAME)?,
        })
    }
}

impl Request for GetSignalStrength {
    type Response = GetSignalStrengthResponse;
}

/// One measurement and the technology it was taken on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measurement<T> {
    pub value: T,
    pub radio: RadioInterface,
}

const TLV_STRENGTH: u8 = 0x01;
const TLV_RSSI_LIST: u8 = 0x11;
const TLV_RSRQ: u8 = 0x16;
const TLV_LTE_SNR: u8 = 0x17;
const TLV_LTE_RSRP: u8 = 0x18;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetSignalStrengthResponse {
    /// The current signal in dBm.
    pub strength: Measurement<i8>,
    /// RSSI per technology, as a positive number of -dBm (70 means -70 dBm).
    pub rssi: Option<Vec<Measurement<u8>>>,
    /// LTE RSRQ in dB.
    pub rsrq: Option<Measurement<i8>>,
    /// LTE SNR in tenths of a dB.
    pub lte_snr: Option<i16>,
    /// LTE RSRP in dBm.
    pub lte_rsrp: Option<i16>,
}

impl Message for GetSignalStrengthResponse {
    const SERVICE: Service = Service::NAS;
    const MESSAGE_ID: u16 = GET_SIGNAL_STRENGTH;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "NAS Get Signal Strength response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            strength,
            rssi,
            rsrq,
            lte_snr,
            lte_rsrp,
        } = self;
        out.put_fixed(
            TLV_STRENGTH,
            &[strength.value.to_le_bytes()[0], strength.radio.0.to_le_bytes()[0]],
        );
        if let Some(rssi) = rssi {
            let mut value = tlv::Value::new();
            value.count_u16("the RSSI list", rssi.len())?;
            for m in rssi {
                value.u8(m.value).i8(m.radio.0);
            }
            out.put_value(TLV_RSSI_LIST, &value)?;
        }
        if let Some(rsrq) = rsrq {
            out.put_fixed(TLV_RSRQ, &[rsrq.value.to_le_bytes()[0], rsrq.radio.0.to_le_bytes()[0]]);
        }
        out.put_opt(TLV_LTE_SNR, *lte_snr, |w, id, v| w.put_fixed(id, &v.to_le_bytes()))
            .put_opt(TLV_LTE_RSRP, *lte_rsrp, |w, id, v| w.put_fixed(id, &v.to_le_bytes()));
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let measurement = |id: u8| -> Result<Option<Measurement<i8>>, DecodeError> {
            tlv::find(tlvs, id)?
                .map(|v| {
                    let [value, radio] = tlv::fixed(v, id, Self::NAME, "2")?;
                    Ok(Measurement {
                        value: i8::from_le_bytes([value]),
                        radio: RadioInterface(i8::from_le_bytes([radio])),
                    })
                })
                .transpose()
        };
        let strength = measurement(TLV_STRENGTH)?.ok_or(DecodeError::MissingTlv {
            message: Self::NAME,
            tlv: TLV_STRENGTH,
        })?;
        let rssi = tlv::find(tlvs, TLV_RSSI_LIST)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_RSSI_LIST, Self::NAME);
                let count = r.count_u16()?;
                r.elements(count, |r| {
                    Ok(Measurement {
                        value: r.u8()?,
                        radio: RadioInterface(r.i8()?),
                    })
                })
            })
            .transpose()?;
        Ok(Self {
            strength,
            rssi,
            rsrq: measurement(TLV_RSRQ)?,
            lte_snr: tlv::find_i16(tlvs, TLV_LTE_SNR, Self::NAME)?,
            lte_rsrp: tlv::find_i16(tlvs, TLV_LTE_RSRP, Self::NAME)?,
        })
    }
}

named_values!(
    /// `QmiNasRegistrationState`.
    RegistrationState(u8) {
        NOT_REGISTERED = 0,
        REGISTERED = 1,
        NOT_REGISTERED_SEARCHING = 2,
        REGISTRATION_DENIED = 3,
        UNKNOWN = 4,
    }
);

named_values!(
    /// Circuit- or packet-switched attachment (`QmiNasAttachState`).
    AttachState(u8) {
        UNKNOWN = 0,
        ATTACHED = 1,
        DETACHED = 2,
    }
);

named_values!(
    /// `QmiNasNetworkType`.
    NetworkType(u8) {
        UNKNOWN = 0,
        THREEGPP2 = 1,
        THREEGPP = 2,
    }
);

named_values!(
    /// The legacy roaming indicator (`QmiNasRoamingIndicatorStatus`): note that 0 means on.
    RoamingIndicator(u8) {
        ON = 0,
        OFF = 1,
    }
);

named_values!(
    /// A data technology the serving system offers (`QmiNasDataCapability`).
    DataCapability(u8) {
        GPRS = 1,
        EDGE = 2,
        HSDPA = 3,
        HSUPA = 4,
        WCDMA = 5,
        CDMA = 6,
        EVDO_REV_0 = 7,
        EVDO_REV_A = 8,
        GSM = 9,
        EVDO_REV_B = 10,
        LTE = 11,
        HSDPA_PLUS = 12,
        DC_HSDPA_PLUS = 13,
    }
);

/// The mandatory part of the serving system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingSystem {
    pub registration_state: RegistrationState,
    pub cs_attach_state: AttachState,
    pub ps_attach_state: AttachState,
    pub selected_network: NetworkType,
    pub radio_interfaces: Vec<RadioInterface>,
}

/// The network the modem is on; MCC and MNC are numbers, so a leading-zero MNC needs
/// [`ServingSystemInfo::mnc_includes_pcs_digit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plmn {
    pub mcc: u16,
    pub mnc: u16,
    pub description: String,
}

/// What Get Serving System answers and its indication reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingSystemInfo {
    pub serving_system: ServingSystem,
    pub roaming_indicator: Option<RoamingIndicator>,
    pub data_service_capability: Option<Vec<DataCapability>>,
    pub current_plmn: Option<Plmn>,
    pub lac_3gpp: Option<u16>,
    pub cid_3gpp: Option<u32>,
    pub lte_tac: Option<u16>,
    /// `(mcc, mnc, whether the MNC has three digits)`.
    pub mnc_includes_pcs_digit: Option<(u16, u16, bool)>,
}

/// The TLV ids that differ between the response and the indication.
struct ServingSystemIds {
    lac: u8,
    cid: u8,
    tac: u8,
    mnc_pcs: u8,
}

const TLV_SERVING_SYSTEM: u8 = 0x01;
const TLV_ROAMING_INDICATOR: u8 = 0x10;
const TLV_DATA_SERVICE_CAPABILITY: u8 = 0x11;
const TLV_CURRENT_PLMN: u8 = 0x12;
const RESPONSE_IDS: ServingSystemIds = ServingSystemIds {
    lac: 0x1C,
    cid: 0x1D,
    tac: 0x24,
    mnc_pcs: 0x27,
};
const INDICATION_IDS: ServingSystemIds = ServingSystemIds {
    lac: 0x1D,
    cid: 0x1E,
    tac: 0x25,
    mnc_pcs: 0x29,
};

impl ServingSystemInfo {
    fn write(&self, out: &mut tlv::Writer, ids: &ServingSystemIds) -> Result<(), EncodeError> {
        let Self {
            serving_system,
            roaming_indicator,
            data_service_capability,
            current_plmn,
            lac_3gpp,
            cid_3gpp,
            lte_tac,
            mnc_includes_pcs_digit,
        } = self;
        let ServingSystem {
            registration_state,
            cs_attach_state,
            ps_attach_state,
            selected_network,
            radio_interfaces,
        } = serving_system;
        let mut value = tlv::Value::new();
        value
            .u8(registration_state.0)
            .u8(cs_attach_state.0)
            .u8(ps_attach_state.0)
            .u8(selected_network.0)
            .count_u8("the radio interface list", radio_interfaces.len())?;
        for radio in radio_interfaces {
            value.i8(radio.0);
        }
        out.put_value(TLV_SERVING_SYSTEM, &value)?;
        out.put_opt(
            TLV_ROAMING_INDICATOR,
            roaming_indicator.map(|r| r.0),
            tlv::Writer::put_u8,
        );
        if let Some(caps) = data_service_capability {
            let mut value = tlv::Value::new();
            value.count_u8("the data capability list", caps.len())?;
            for cap in caps {
                value.u8(cap.0);
            }
            out.put_value(TLV_DATA_SERVICE_CAPABILITY, &value)?;
        }
        if let Some(Plmn { mcc, mnc, description }) = current_plmn {
            let mut value = tlv::Value::new();
            value
                .u16(*mcc)
                .u16(*mnc)
                .u8_prefixed("the PLMN description", description.as_bytes())?;
            out.put_value(TLV_CURRENT_PLMN, &value)?;
        }
        out.put_opt(ids.lac, *lac_3gpp, tlv::Writer::put_u16)
            .put_opt(ids.cid, *cid_3gpp, tlv::Writer::put_u32)
            .put_opt(ids.tac, *lte_tac, tlv::Writer::put_u16);
        if let Some((mcc, mnc, pcs)) = mnc_includes_pcs_digit {
            let mut value = tlv::Value::new();
            value.u16(*mcc).u16(*mnc).bool(*pcs);
            out.put_value(ids.mnc_pcs, &value)?;
        }
        Ok(())
    }

    fn read(tlvs: &[u8], message: &'static str, ids: &ServingSystemIds) -> Result<Self, DecodeError> {
        let mut r = tlv::Reader::new(
            tlv::require(tlvs, TLV_SERVING_SYSTEM, message)?,
            TLV_SERVING_SYSTEM,
            message,
        );
        let registration_state = RegistrationState(r.u8()?);
        let cs_attach_state = AttachState(r.u8()?);
        let ps_attach_state = AttachState(r.u8()?);
        let selected_network = NetworkType(r.u8()?);
        let count = r.count_u8()?;
        let radio_interfaces = r.elements(count, |r| r.i8().map(RadioInterface))?;
        let data_service_capability = tlv::find(tlvs, TLV_DATA_SERVICE_CAPABILITY)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_DATA_SERVICE_CAPABILITY, message);
                let count = r.count_u8()?;
                r.elements(count, |r| r.u8().map(DataCapability))
            })
            .transpose()?;
        let current_plmn = tlv::find(tlvs, TLV_CURRENT_PLMN)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_CURRENT_PLMN, message);
                Ok::<_, DecodeError>(Plmn {
                    mcc: r.u16()?,
                    mnc: r.u16()?,
                    description: tlv::string(r.u8_prefixed()?),
                })
            })
            .transpose()?;
        let mnc_includes_pcs_digit = tlv::find(tlvs, ids.mnc_pcs)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, ids.mnc_pcs, message);
                Ok::<_, DecodeError>((r.u16()?, r.u16()?, r.bool()?))
            })
            .transpose()?;
        Ok(Self {
            serving_system: ServingSystem {
                registration_state,
                cs_attach_state,
                ps_attach_state,
                selected_network,
                radio_interfaces,
            },
            roaming_indicator: tlv::find_u8(tlvs, TLV_ROAMING_INDICATOR, message)?.map(RoamingIndicator),
            data_service_capability,
            current_plmn,
            lac_3gpp: tlv::find_u16(tlvs, ids.lac, message)?,
            cid_3gpp: tlv::find_u32(tlvs, ids.cid, message)?,
            lte_tac: tlv::find_u16(tlvs, ids.tac, message)?,
            mnc_includes_pcs_digit,
        })
    }
}

empty_message!(
    /// Asks for registration, attachment, the network and the cell.
    GetServingSystem, Service::NAS, GET_SERVING_SYSTEM, Request, "NAS Get Serving System request"
);

impl Request for GetServingSystem {
    type Response = GetServingSystemResponse;
}

/// Declares a serving-system message with its TLV id table.
macro_rules! serving_system_message {
    ($(#[$doc:meta])* $name:ident, $id:expr, $kind:ident, $ids:expr, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name(pub ServingSystemInfo);

        impl Message for $name {
            const SERVICE: Service = Service::NAS;
            const MESSAGE_ID: u16 = $id;
            const KIND: MessageKind = MessageKind::$kind;
            const NAME: &'static str = $label;

            fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
                self.0.write(out, &$ids)
            }

            fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
                ServingSystemInfo::read(tlvs, Self::NAME, &$ids).map(Self)
            }
        }
    };
}

serving_system_message!(
    GetServingSystemResponse,
    GET_SERVING_SYSTEM,
    Response,
    RESPONSE_IDS,
    "NAS Get Serving System response"
);
serving_system_message!(
    /// Sent on changes to clients that turned on `serving_system_events`.
    ServingSystemIndication, SERVING_SYSTEM_INDICATION, Indication, INDICATION_IDS,
    "NAS Serving System indication"
);

named_values!(
    /// `QmiNasServiceStatus`.
    ServiceStatus(u8) {
        NONE = 0,
        LIMITED = 1,
        AVAILABLE = 2,
        LIMITED_REGIONAL = 3,
        POWER_SAVE = 4,
    }
);

named_values!(
    /// `QmiNasNetworkServiceDomain`.
    ServiceDomain(u8) {
        NONE = 0,
        CS = 1,
        PS = 2,
        CS_PS = 3,
        UNKNOWN = 4,
    }
);

named_values!(
    /// `QmiNasRoamingStatus` (unlike [`RoamingIndicator`], 0 means off).
    RoamingStatus(u8) {
        OFF = 0,
        ON = 1,
    }
);

/// A technology's service status in System Info.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStatusInfo {
    pub status: ServiceStatus,
    pub true_status: ServiceStatus,
    pub preferred_data_path: bool,
}

/// The LTE system, each field present only if the modem marked it valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LteSystemInfo {
    pub domain: Option<ServiceDomain>,
    pub service_capability: Option<ServiceDomain>,
    pub roaming_status: Option<RoamingStatus>,
    pub forbidden: Option<bool>,
    pub lac: Option<u16>,
    pub cid: Option<u32>,
    /// `(domain, cause)` of the last registration reject.
    pub registration_reject: Option<(ServiceDomain, u8)>,
    /// MCC and MNC as the digit strings the modem sends ("001", "01").
    pub network: Option<(String, String)>,
    pub tac: Option<u16>,
}

/// What Get System Info answers and its indication reports (the LTE part).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    pub lte_service_status: Option<ServiceStatusInfo>,
    pub lte_system_info: Option<LteSystemInfo>,
}

const TLV_LTE_SERVICE_STATUS: u8 = 0x14;
/// "LTE System Info v2" (libqmi ≥ 1.30); the response and the indication use the same id.
const TLV_LTE_SYSTEM_INFO: u8 = 0x19;

/// A three-digit field: ASCII digits, padded with NUL or 0xFF after a two-digit MNC.
fn digits(bytes: [u8; 3]) -> String {
    bytes
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect()
}

fn digits_field(digits: &str) -> [u8; 3] {
    let mut out = [0; 3];
    for (slot, b) in out.iter_mut().zip(digits.bytes().filter(u8::is_ascii_digit)) {
        *slot = b;
    }
    out
}

impl Body for SystemInfo {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            lte_service_status,
            lte_system_info,
        } = self;
        if let Some(ServiceStatusInfo {
            status,
            true_status,
            preferred_data_path,
        }) = lte_service_status
        {
            out.put_fixed(
                TLV_LTE_SERVICE_STATUS,
                &[status.0, true_status.0, u8::from(*preferred_data_path)],
            );
        }
        if let Some(LteSystemInfo {
            domain,
            service_capability,
            roaming_status,
            forbidden,
            lac,
            cid,
            registration_reject,
            network,
            tac,
        }) = lte_system_info
        {
            let mut v = tlv::Value::new();
            // Each field is a validity byte and the value (zeros when invalid).
            v.bool(domain.is_some()).u8(domain.unwrap_or_default().0);
            v.bool(service_capability.is_some())
                .u8(service_capability.unwrap_or_default().0);
            v.bool(roaming_status.is_some())
                .u8(roaming_status.unwrap_or_default().0);
            v.bool(forbidden.is_some()).bool(forbidden.unwrap_or_default());
            v.bool(lac.is_some()).u16(lac.unwrap_or_default());
            v.bool(cid.is_some()).u32(cid.unwrap_or_default());
            let (reject_domain, reject_cause) = registration_reject.unwrap_or_default();
            v.bool(registration_reject.is_some())
                .u8(reject_domain.0)
                .u8(reject_cause);
            let (mcc, mnc) = network
                .as_ref()
                .map_or(([0; 3], [0; 3]), |(mcc, mnc)| (digits_field(mcc), digits_field(mnc)));
            v.bool(network.is_some()).bytes(&mcc).bytes(&mnc);
            v.bool(tac.is_some()).u16(tac.unwrap_or_default());
            out.put_value(TLV_LTE_SYSTEM_INFO, &v)?;
        }
        Ok(())
    }

    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError> {
        let lte_service_status = tlv::find(tlvs, TLV_LTE_SERVICE_STATUS)?
            .map(|v| {
                let [status, true_status, preferred] = tlv::fixed(v, TLV_LTE_SERVICE_STATUS, message, "3")?;
                Ok::<_, DecodeError>(ServiceStatusInfo {
                    status: ServiceStatus(status),
                    true_status: ServiceStatus(true_status),
                    preferred_data_path: preferred != 0,
                })
            })
            .transpose()?;
        let lte_system_info = tlv::find(tlvs, TLV_LTE_SYSTEM_INFO)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_LTE_SYSTEM_INFO, message);
                let domain = valid(r.bool()?, ServiceDomain(r.u8()?));
                let service_capability = valid(r.bool()?, ServiceDomain(r.u8()?));
                let roaming_status = valid(r.bool()?, RoamingStatus(r.u8()?));
                let forbidden = valid(r.bool()?, r.bool()?);
                let lac = valid(r.bool()?, r.u16()?);
                let cid = valid(r.bool()?, r.u32()?);
                let registration_reject = valid(r.bool()?, (ServiceDomain(r.u8()?), r.u8()?));
                let network = valid(r.bool()?, (digits(r.array()?), digits(r.array()?)));
                let tac = valid(r.bool()?, r.u16()?);
                Ok::<_, DecodeError>(LteSystemInfo {
                    domain,
                    service_capability,
                    roaming_status,
                    forbidden,
                    lac,
                    cid,
                    registration_reject,
                    network,
                    tac,
                })
            })
            .transpose()?;
        Ok(Self {
            lte_service_status,
            lte_system_info,
        })
    }
}

/// A field behind a validity byte.
fn valid<T>(is_valid: bool, value: T) -> Option<T> {
    is_valid.then_some(value)
}

empty_message!(
    /// Asks for per-technology service status and system details.
    GetSystemInfo, Service::NAS, GET_SYSTEM_INFO, Request, "NAS Get System Info request"
);

impl Request for GetSystemInfo {
    type Response = GetSystemInfoResponse;
}

body_message!(
    GetSystemInfoResponse(SystemInfo),
    Service::NAS,
    GET_SYSTEM_INFO,
    Response,
    "NAS Get System Info response"
);
body_message!(
    /// Sent on changes to clients that turned on `system_info`.
    SystemInfoIndication(SystemInfo), Service::NAS, SYSTEM_INFO_INDICATION, Indication, "NAS System Info indication"
);

/// LTE signal quality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LteSignal {
    /// dBm.
    pub rssi: i8,
    /// dB.
    pub rsrq: i8,
    /// dBm.
    pub rsrp: i16,
    /// Tenths of a dB.
    pub snr: i16,
}

/// 5G NR signal quality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nr5gSignal {
    /// dBm.
    pub rsrp: i16,
    /// Tenths of a dB.
    pub snr: i16,
}

/// What Get Signal Info answers and the Signal Info indication reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalInfo {
    /// GSM RSSI in dBm.
    pub gsm: Option<i8>,
    pub lte: Option<LteSignal>,
    pub nr5g: Option<Nr5gSignal>,
    /// 5G RSRQ in dB.
    pub nr5g_rsrq: Option<i16>,
}

const TLV_GSM_SIGNAL: u8 = 0x12;
const TLV_LTE_SIGNAL: u8 = 0x14;
const TLV_NR5G_SIGNAL: u8 = 0x17;
const TLV_NR5G_SIGNAL_EXTENDED: u8 = 0x18;

impl Body for SignalInfo {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            gsm,
            lte,
            nr5g,
            nr5g_rsrq,
        } = *self;
        out.put_opt(TLV_GSM_SIGNAL, gsm, |w, id, v| w.put_fixed(id, &v.to_le_bytes()));
        if let Some(LteSignal { rssi, rsrq, rsrp, snr }) = lte {
            let mut v = tlv::Value::new();
            v.i8(rssi).i8(rsrq).i16(rsrp).i16(snr);
            out.put_value(TLV_LTE_SIGNAL, &v)?;
        }
        if let Some(Nr5gSignal { rsrp, snr }) = nr5g {
            let mut v = tlv::Value::new();
            v.i16(rsrp).i16(snr);
            out.put_value(TLV_NR5G_SIGNAL, &v)?;
        }
        out.put_opt(TLV_NR5G_SIGNAL_EXTENDED, nr5g_rsrq, |w, id, v| {
            w.put_fixed(id, &v.to_le_bytes())
        });
        Ok(())
    }

    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError> {
        let lte = tlv::find(tlvs, TLV_LTE_SIGNAL)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_LTE_SIGNAL, message);
                Ok::<_, DecodeError>(LteSignal {
                    rssi: r.i8()?,
                    rsrq: r.i8()?,
                    rsrp: r.i16()?,
                    snr: r.i16()?,
                })
            })
            .transpose()?;
        let nr5g = tlv::find(tlvs, TLV_NR5G_SIGNAL)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, TLV_NR5G_SIGNAL, message);
                Ok::<_, DecodeError>(Nr5gSignal {
                    rsrp: r.i16()?,
                    snr: r.i16()?,
                })
            })
            .transpose()?;
        Ok(Self {
            gsm: tlv::find_i8(tlvs, TLV_GSM_SIGNAL, message)?,
            lte,
            nr5g,
            nr5g_rsrq: tlv::find_i16(tlvs, TLV_NR5G_SIGNAL_EXTENDED, message)?,
        })
    }
}

empty_message!(
    /// Asks for the signal of every technology in use.
    GetSignalInfo, Service::NAS, GET_SIGNAL_INFO, Request, "NAS Get Signal Info request"
);

impl Request for GetSignalInfo {
    type Response = GetSignalInfoResponse;
}

body_message!(
    GetSignalInfoResponse(SignalInfo),
    Service::NAS,
    GET_SIGNAL_INFO,
    Response,
    "NAS Get Signal Info response"
);
body_message!(
    /// Sent when a configured threshold is crossed, to clients that turned on `signal_info`.
    SignalInfoIndication(SignalInfo), Service::NAS, SIGNAL_INFO_INDICATION, Indication, "NAS Signal Info indication"
);

/// Sets the thresholds whose crossing sends a Signal Info indication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSignalInfo {
    /// dBm.
    pub rssi_thresholds: Option<Vec<i8>>,
    /// Tenths of a dB.
    pub lte_snr_thresholds: Option<Vec<i16>>,
    /// dB.
    pub rsrq_thresholds: Option<Vec<i8>>,
    /// dBm.
    pub rsrp_thresholds: Option<Vec<i16>>,
    /// `(rate, average period)` of LTE reports.
    pub lte_report: Option<(u8, u8)>,
}

const TLV_RSSI_THRESHOLD: u8 = 0x10;
const TLV_LTE_SNR_THRESHOLD: u8 = 0x13;
const TLV_RSRQ_THRESHOLD: u8 = 0x15;
const TLV_RSRP_THRESHOLD: u8 = 0x16;
const TLV_LTE_REPORT: u8 = 0x17;

fn put_i8_list(out: &mut tlv::Writer, id: u8, list: Option<&Vec<i8>>) -> Result<(), EncodeError> {
    if let Some(list) = list {
        let mut v = tlv::Value::new();
        v.count_u8("a threshold list", list.len())?;
        for &t in list {
            v.i8(t);
        }
        out.put_value(id, &v)?;
    }
    Ok(())
}

fn put_i16_list(out: &mut tlv::Writer, id: u8, list: Option<&Vec<i16>>) -> Result<(), EncodeError> {
    if let Some(list) = list {
        let mut v = tlv::Value::new();
        v.count_u8("a threshold list", list.len())?;
        for &t in list {
            v.i16(t);
        }
        out.put_value(id, &v)?;
    }
    Ok(())
}

// Free functions rather than `Reader::i8`: their lifetimes are late-bound, as the bound needs.
fn read_i8(r: &mut tlv::Reader<'_>) -> Result<i8, DecodeError> {
    r.i8()
}

fn read_i16(r: &mut tlv::Reader<'_>) -> Result<i16, DecodeError> {
    r.i16()
}

fn find_list<T>(
    tlvs: &[u8],
    id: u8,
    message: &'static str,
    element: impl FnMut(&mut tlv::Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Option<Vec<T>>, DecodeError> {
    tlv::find(tlvs, id)?
        .map(|v| {
            let mut r = tlv::Reader::new(v, id, message);
            let count = r.count_u8()?;
            r.elements(count, element)
        })
        .transpose()
}

impl Message for ConfigSignalInfo {
    const SERVICE: Service = Service::NAS;
    const MESSAGE_ID: u16 = CONFIG_SIGNAL_INFO;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "NAS Config Signal Info request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            rssi_thresholds,
            lte_snr_thresholds,
            rsrq_thresholds,
            rsrp_thresholds,
            lte_report,
        } = self;
        put_i8_list(out, TLV_RSSI_THRESHOLD, rssi_thresholds.as_ref())?;
        put_i16_list(out, TLV_LTE_SNR_THRESHOLD, lte_snr_thresholds.as_ref())?;
        put_i8_list(out, TLV_RSRQ_THRESHOLD, rsrq_thresholds.as_ref())?;
        put_i16_list(out, TLV_RSRP_THRESHOLD, rsrp_thresholds.as_ref())?;
        if let Some((rate, period)) = lte_report {
            out.put_fixed(TLV_LTE_REPORT, &[*rate, *period]);
        }
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            rssi_thresholds: find_list(tlvs, TLV_RSSI_THRESHOLD, Self::NAME, read_i8)?,
            lte_snr_thresholds: find_list(tlvs, TLV_LTE_SNR_THRESHOLD, Self::NAME, read_i16)?,
            rsrq_thresholds: find_list(tlvs, TLV_RSRQ_THRESHOLD, Self::NAME, read_i8)?,
            rsrp_thresholds: find_list(tlvs, TLV_RSRP_THRESHOLD, Self::NAME, read_i16)?,
            lte_report: tlv::find(tlvs, TLV_LTE_REPORT)?
                .map(|v| tlv::fixed::<2>(v, TLV_LTE_REPORT, Self::NAME, "2").map(|[a, b]| (a, b)))
                .transpose()?,
        })
    }
}

empty_message!(
    ConfigSignalInfoResponse,
    Service::NAS,
    CONFIG_SIGNAL_INFO,
    Response,
    "NAS Config Signal Info response"
);

impl Request for ConfigSignalInfo {
    type Response = ConfigSignalInfoResponse;
}
