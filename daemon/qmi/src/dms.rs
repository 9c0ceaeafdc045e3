//! DMS (service 0x02): the device's identity, capabilities and operating mode.

use crate::{
    DecodeError, EncodeError, Message, MessageKind, Request, Service,
    message::{empty_message, named_values},
    tlv,
};

pub const GET_CAPABILITIES: u16 = 0x0020;
pub const GET_MANUFACTURER: u16 = 0x0021;
pub const GET_MODEL: u16 = 0x0022;
pub const GET_REVISION: u16 = 0x0023;
pub const GET_IDS: u16 = 0x0025;
pub const GET_OPERATING_MODE: u16 = 0x002D;
pub const SET_OPERATING_MODE: u16 = 0x002E;

const TLV_ESN: u8 = 0x10;
const TLV_IMEI: u8 = 0x11;
const TLV_MEID: u8 = 0x12;
/// Manufacturer, model and revision each answer with one string in TLV 0x01.
const TLV_STRING: u8 = 0x01;

empty_message!(
    /// Asks for the ESN, IMEI and MEID.
    GetIds, Service::DMS, GET_IDS, Request, "DMS Get IDs request"
);

impl Request for GetIds {
    type Response = GetIdsResponse;
}

/// The device identifiers; a modem sends only those its radio technologies have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetIdsResponse {
    pub esn: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
}

impl Message for GetIdsResponse {
    const SERVICE: Service = Service::DMS;
    const MESSAGE_ID: u16 = GET_IDS;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "DMS Get IDs response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self { esn, imei, meid } = self;
        for (id, value) in [(TLV_ESN, esn), (TLV_IMEI, imei), (TLV_MEID, meid)] {
            if let Some(value) = value {
                out.put(id, value.as_bytes())?;
            }
        }
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            esn: tlv::find(tlvs, TLV_ESN)?.map(tlv::string),
            imei: tlv::find(tlvs, TLV_IMEI)?.map(tlv::string),
            meid: tlv::find(tlvs, TLV_MEID)?.map(tlv::string),
        })
    }
}

/// Declares a request without TLVs and its response carrying one string in TLV 0x01.
macro_rules! string_query {
    (
        $(#[$doc:meta])* $request:ident, $response:ident, $field:ident, $id:expr,
        $request_label:literal, $response_label:literal
    ) => {
        empty_message!($(#[$doc])* $request, Service::DMS, $id, Request, $request_label);

        impl Request for $request {
            type Response = $response;
        }

        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $response {
            pub $field: String,
        }

        impl Message for $response {
            const SERVICE: Service = Service::DMS;
            const MESSAGE_ID: u16 = $id;
            const KIND: MessageKind = MessageKind::Response;
            const NAME: &'static str = $response_label;

            fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
                out.put(TLV_STRING, self.$field.as_bytes())?;
                Ok(())
            }

            fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
                let value = tlv::require(tlvs, TLV_STRING, Self::NAME)?;
                Ok(Self {
                    $field: tlv::string(value),
                })
            }
        }
    };
}

string_query!(
    /// Asks who made the modem.
    GetManufacturer, GetManufacturerResponse, manufacturer, GET_MANUFACTURER,
    "DMS Get Manufacturer request", "DMS Get Manufacturer response"
);
string_query!(
    /// Asks for the modem's model name.
    GetModel, GetModelResponse, model, GET_MODEL,
    "DMS Get Model request", "DMS Get Model response"
);
string_query!(
    /// Asks for the firmware revision.
    GetRevision, GetRevisionResponse, revision, GET_REVISION,
    "DMS Get Revision request", "DMS Get Revision response"
);

named_values!(
    /// What the modem's radio is doing (`QmiDmsOperatingMode`).
    OperatingMode(u8) {
        ONLINE = 0,
        LOW_POWER = 1,
        FACTORY_TEST = 2,
        OFFLINE = 3,
        /// Set-only: the modem resets and comes back online.
        RESET = 4,
        SHUTTING_DOWN = 5,
        PERSISTENT_LOW_POWER = 6,
        MODE_ONLY_LOW_POWER = 7,
    }
);

impl OperatingMode {
    /// Whether the radio is off in this mode (every low-power flavour and offline).
    pub const fn radio_off(self) -> bool {
        !matches!(self.0, 0 | 2)
    }
}

/// Both operating-mode messages carry the mode in TLV 0x01.
const TLV_MODE: u8 = 0x01;
const TLV_OFFLINE_REASON: u8 = 0x10;
const TLV_HARDWARE_RESTRICTED: u8 = 0x11;

empty_message!(
    /// Asks for the operating mode.
    GetOperatingMode, Service::DMS, GET_OPERATING_MODE, Request, "DMS Get Operating Mode request"
);

impl Request for GetOperatingMode {
    type Response = GetOperatingModeResponse;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetOperatingModeResponse {
    pub mode: OperatingMode,
    /// Why the modem is offline (`QmiDmsOfflineReason` bits), only when it is.
    pub offline_reason: Option<u16>,
    /// Whether a hardware switch (`W_DISABLE#`) keeps the radio off.
    pub hardware_restricted: Option<bool>,
}

impl Message for GetOperatingModeResponse {
    const SERVICE: Service = Service::DMS;
    const MESSAGE_ID: u16 = GET_OPERATING_MODE;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "DMS Get Operating Mode response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            mode,
            offline_reason,
            hardware_restricted,
        } = *self;
        out.put_u8(TLV_MODE, mode.0)
            .put_opt(TLV_OFFLINE_REASON, offline_reason, tlv::Writer::put_u16)
            .put_opt(TLV_HARDWARE_RESTRICTED, hardware_restricted, tlv::Writer::put_bool);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let [mode] = tlv::fixed(tlv::require(tlvs, TLV_MODE, Self::NAME)?, TLV_MODE, Self::NAME, "1")?;
        Ok(Self {
            mode: OperatingMode(mode),
            offline_reason: tlv::find_u16(tlvs, TLV_OFFLINE_REASON, Self::NAME)?,
            hardware_restricted: tlv::find_bool(tlvs, TLV_HARDWARE_RESTRICTED, Self::NAME)?,
        })
    }
}

/// Asks the modem to change its operating mode (`RESET` restarts it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOperatingMode {
    pub mode: OperatingMode,
}

impl Message for SetOperatingMode {
    const SERVICE: Service = Service::DMS;
    const MESSAGE_ID: u16 = SET_OPERATING_MODE;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "DMS Set Operating Mode request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u8(TLV_MODE, self.mode.0);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let [mode] = tlv::fixed(tlv::require(tlvs, TLV_MODE, Self::NAME)?, TLV_MODE, Self::NAME, "1")?;
        Ok(Self {
            mode: OperatingMode(mode),
        })
    }
}

empty_message!(
    SetOperatingModeResponse,
    Service::DMS,
    SET_OPERATING_MODE,
    Response,
    "DMS Set Operating Mode response"
);

impl Request for SetOperatingMode {
    type Response = SetOperatingModeResponse;
}

named_values!(
    /// A radio technology in DMS's capability list (`QmiDmsRadioInterface`).
    RadioInterface(u8) {
        CDMA_1X = 1,
        EVDO = 2,
        GSM = 4,
        UMTS = 5,
        LTE = 8,
        TDS = 9,
        NR5G = 10,
    }
);

named_values!(
    /// Circuit/packet data support (`QmiDmsDataServiceCapability`).
    DataServiceCapability(u8) {
        NONE = 0,
        CS = 1,
        PS = 2,
        SIMULTANEOUS_CS_PS = 3,
        NON_SIMULTANEOUS_CS_PS = 4,
    }
);

named_values!(
    /// Whether the modem has a SIM interface (`QmiDmsSimCapability`).
    SimCapability(u8) {
        NOT_SUPPORTED = 1,
        SUPPORTED = 2,
    }
);

const TLV_CAPABILITIES: u8 = 0x01;

empty_message!(
    /// Asks for channel rates, data and SIM support and the radio technologies.
    GetCapabilities, Service::DMS, GET_CAPABILITIES, Request, "DMS Get Capabilities request"
);

impl Request for GetCapabilities {
    type Response = GetCapabilitiesResponse;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetCapabilitiesResponse {
    pub max_tx_channel_rate: u32,
    pub max_rx_channel_rate: u32,
    pub data_service: DataServiceCapability,
    pub sim: SimCapability,
    pub radio_interfaces: Vec<RadioInterface>,
}

impl Message for GetCapabilitiesResponse {
    const SERVICE: Service = Service::DMS;
    const MESSAGE_ID: u16 = GET_CAPABILITIES;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "DMS Get Capabilities response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            max_tx_channel_rate,
            max_rx_channel_rate,
            data_service,
            sim,
            radio_interfaces,
        } = self;
        let mut value = tlv::Value::new();
        value
            .u32(*max_tx_channel_rate)
            .u32(*max_rx_channel_rate)
            .u8(data_service.0)
            .u8(sim.0)
            .count_u8("the radio interface list", radio_interfaces.len())?;
        for radio in radio_interfaces {
            value.u8(radio.0);
        }
        out.put_value(TLV_CAPABILITIES, &value)?;
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let mut r = tlv::Reader::new(
            tlv::require(tlvs, TLV_CAPABILITIES, Self::NAME)?,
            TLV_CAPABILITIES,
            Self::NAME,
        );
        Ok(Self {
            max_tx_channel_rate: r.u32()?,
            max_rx_channel_rate: r.u32()?,
            data_service: DataServiceCapability(r.u8()?),
            sim: SimCapability(r.u8()?),
            radio_interfaces: {
                let count = r.count_u8()?;
                r.elements(count, |r| r.u8().map(RadioInterface))?
            },
        })
    }
}
