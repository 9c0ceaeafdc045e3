//! DMS (service 0x02): the device's identity.

use crate::{DecodeError, EncodeError, Message, MessageKind, Request, Service, message::empty_message, tlv};

pub const GET_MANUFACTURER: u16 = 0x0021;
pub const GET_MODEL: u16 = 0x0022;
pub const GET_REVISION: u16 = 0x0023;
pub const GET_IDS: u16 = 0x0025;

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
