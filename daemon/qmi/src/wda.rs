//! WDA (service 0x1A): the data path's framing (raw IP or Ethernet, QMAP aggregation).

use crate::{
    DecodeError, EncodeError, Message, MessageKind, Request, Service,
    message::{Body, body_message, named_values},
    tlv,
};

pub const SET_DATA_FORMAT: u16 = 0x0020;
pub const GET_DATA_FORMAT: u16 = 0x0021;

named_values!(
    /// `QmiWdaLinkLayerProtocol`.
    LinkLayerProtocol(u32) {
        UNKNOWN = 0,
        IEEE_802_3 = 1,
        RAW_IP = 2,
    }
);

named_values!(
    /// `QmiWdaDataAggregationProtocol`.
    AggregationProtocol(u32) {
        DISABLED = 0,
        TLP = 1,
        QC_NCM = 2,
        MBIM = 3,
        RNDIS = 4,
        QMAP = 5,
        QMAPV4 = 8,
        QMAPV5 = 9,
    }
);

/// Which data endpoint a format applies to (`QmiDataEndpointType` and the USB interface).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: u32,
    pub interface_number: u32,
}

impl Endpoint {
    /// The endpoint type of USB-attached modems.
    pub const HSUSB: u32 = 2;

    fn write(self, out: &mut tlv::Writer, id: u8) -> Result<(), EncodeError> {
        let mut v = tlv::Value::new();
        v.u32(self.kind).u32(self.interface_number);
        out.put_value(id, &v)?;
        Ok(())
    }

    fn find(tlvs: &[u8], id: u8, message: &'static str) -> Result<Option<Self>, DecodeError> {
        tlv::find(tlvs, id)?
            .map(|v| {
                let mut r = tlv::Reader::new(v, id, message);
                Ok(Self {
                    kind: r.u32()?,
                    interface_number: r.u32()?,
                })
            })
            .transpose()
    }
}

const TLV_QOS_FORMAT: u8 = 0x10;
const TLV_LINK_LAYER: u8 = 0x11;
const TLV_UL_AGGREGATION: u8 = 0x12;
const TLV_DL_AGGREGATION: u8 = 0x13;
const TLV_NDP_SIGNATURE: u8 = 0x14;
const TLV_DL_MAX_DATAGRAMS: u8 = 0x15;
const TLV_DL_MAX_SIZE: u8 = 0x16;
const TLV_SET_ENDPOINT: u8 = 0x17;
const TLV_SET_UL_MAX_DATAGRAMS: u8 = 0x1B;
const TLV_SET_UL_MAX_SIZE: u8 = 0x1C;
const TLV_UL_MAX_DATAGRAMS: u8 = 0x17;
const TLV_UL_MAX_SIZE: u8 = 0x18;
const TLV_DL_MIN_PADDING: u8 = 0x1A;
const TLV_FLOW_CONTROL: u8 = 0x1B;
const TLV_GET_ENDPOINT: u8 = 0x10;

/// Asks for a data format; the modem answers with the one it actually uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetDataFormat {
    pub qos_format: Option<bool>,
    pub link_layer_protocol: Option<LinkLayerProtocol>,
    pub uplink_aggregation: Option<AggregationProtocol>,
    pub downlink_aggregation: Option<AggregationProtocol>,
    pub ndp_signature: Option<u32>,
    pub downlink_max_datagrams: Option<u32>,
    pub downlink_max_size: Option<u32>,
    pub endpoint: Option<Endpoint>,
    pub uplink_max_datagrams: Option<u32>,
    pub uplink_max_size: Option<u32>,
}

impl Message for SetDataFormat {
    const SERVICE: Service = Service::WDA;
    const MESSAGE_ID: u16 = SET_DATA_FORMAT;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "WDA Set Data Format request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            qos_format,
            link_layer_protocol,
            uplink_aggregation,
            downlink_aggregation,
            ndp_signature,
            downlink_max_datagrams,
            downlink_max_size,
            endpoint,
            uplink_max_datagrams,
            uplink_max_size,
        } = *self;
        out.put_opt(TLV_QOS_FORMAT, qos_format, tlv::Writer::put_bool)
            .put_opt(TLV_LINK_LAYER, link_layer_protocol.map(|p| p.0), tlv::Writer::put_u32)
            .put_opt(
                TLV_UL_AGGREGATION,
                uplink_aggregation.map(|p| p.0),
                tlv::Writer::put_u32,
            )
            .put_opt(
                TLV_DL_AGGREGATION,
                downlink_aggregation.map(|p| p.0),
                tlv::Writer::put_u32,
            )
            .put_opt(TLV_NDP_SIGNATURE, ndp_signature, tlv::Writer::put_u32)
            .put_opt(TLV_DL_MAX_DATAGRAMS, downlink_max_datagrams, tlv::Writer::put_u32)
            .put_opt(TLV_DL_MAX_SIZE, downlink_max_size, tlv::Writer::put_u32);
        if let Some(endpoint) = endpoint {
            endpoint.write(out, TLV_SET_ENDPOINT)?;
        }
        out.put_opt(TLV_SET_UL_MAX_DATAGRAMS, uplink_max_datagrams, tlv::Writer::put_u32)
            .put_opt(TLV_SET_UL_MAX_SIZE, uplink_max_size, tlv::Writer::put_u32);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let u32_tlv = |id| tlv::find_u32(tlvs, id, Self::NAME);
        Ok(Self {
            qos_format: tlv::find_bool(tlvs, TLV_QOS_FORMAT, Self::NAME)?,
            link_layer_protocol: u32_tlv(TLV_LINK_LAYER)?.map(LinkLayerProtocol),
            uplink_aggregation: u32_tlv(TLV_UL_AGGREGATION)?.map(AggregationProtocol),
            downlink_aggregation: u32_tlv(TLV_DL_AGGREGATION)?.map(AggregationProtocol),
            ndp_signature: u32_tlv(TLV_NDP_SIGNATURE)?,
            downlink_max_datagrams: u32_tlv(TLV_DL_MAX_DATAGRAMS)?,
            downlink_max_size: u32_tlv(TLV_DL_MAX_SIZE)?,
            endpoint: Endpoint::find(tlvs, TLV_SET_ENDPOINT, Self::NAME)?,
            uplink_max_datagrams: u32_tlv(TLV_SET_UL_MAX_DATAGRAMS)?,
            uplink_max_size: u32_tlv(TLV_SET_UL_MAX_SIZE)?,
        })
    }
}

impl Request for SetDataFormat {
    type Response = SetDataFormatResponse;
}

/// The data format in use, as both Set and Get Data Format answer it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataFormat {
    pub qos_format: Option<bool>,
    pub link_layer_protocol: Option<LinkLayerProtocol>,
    pub uplink_aggregation: Option<AggregationProtocol>,
    pub downlink_aggregation: Option<AggregationProtocol>,
    pub ndp_signature: Option<u32>,
    pub downlink_max_datagrams: Option<u32>,
    pub downlink_max_size: Option<u32>,
    pub uplink_max_datagrams: Option<u32>,
    pub uplink_max_size: Option<u32>,
    pub downlink_min_padding: Option<u32>,
    pub flow_control: Option<u8>,
}

impl Body for DataFormat {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let Self {
            qos_format,
            link_layer_protocol,
            uplink_aggregation,
            downlink_aggregation,
            ndp_signature,
            downlink_max_datagrams,
            downlink_max_size,
            uplink_max_datagrams,
            uplink_max_size,
            downlink_min_padding,
            flow_control,
        } = *self;
        out.put_opt(TLV_QOS_FORMAT, qos_format, tlv::Writer::put_bool)
            .put_opt(TLV_LINK_LAYER, link_layer_protocol.map(|p| p.0), tlv::Writer::put_u32)
            .put_opt(
                TLV_UL_AGGREGATION,
                uplink_aggregation.map(|p| p.0),
                tlv::Writer::put_u32,
            )
            .put_opt(
                TLV_DL_AGGREGATION,
                downlink_aggregation.map(|p| p.0),
                tlv::Writer::put_u32,
            )
            .put_opt(TLV_NDP_SIGNATURE, ndp_signature, tlv::Writer::put_u32)
            .put_opt(TLV_DL_MAX_DATAGRAMS, downlink_max_datagrams, tlv::Writer::put_u32)
            .put_opt(TLV_DL_MAX_SIZE, downlink_max_size, tlv::Writer::put_u32)
            .put_opt(TLV_UL_MAX_DATAGRAMS, uplink_max_datagrams, tlv::Writer::put_u32)
            .put_opt(TLV_UL_MAX_SIZE, uplink_max_size, tlv::Writer::put_u32)
            .put_opt(TLV_DL_MIN_PADDING, downlink_min_padding, tlv::Writer::put_u32)
            .put_opt(TLV_FLOW_CONTROL, flow_control, tlv::Writer::put_u8);
        Ok(())
    }

    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError> {
        let u32_tlv = |id| tlv::find_u32(tlvs, id, message);
        Ok(Self {
            qos_format: tlv::find_bool(tlvs, TLV_QOS_FORMAT, message)?,
            link_layer_protocol: u32_tlv(TLV_LINK_LAYER)?.map(LinkLayerProtocol),
            uplink_aggregation: u32_tlv(TLV_UL_AGGREGATION)?.map(AggregationProtocol),
            downlink_aggregation: u32_tlv(TLV_DL_AGGREGATION)?.map(AggregationProtocol),
            ndp_signature: u32_tlv(TLV_NDP_SIGNATURE)?,
            downlink_max_datagrams: u32_tlv(TLV_DL_MAX_DATAGRAMS)?,
            downlink_max_size: u32_tlv(TLV_DL_MAX_SIZE)?,
            uplink_max_datagrams: u32_tlv(TLV_UL_MAX_DATAGRAMS)?,
            uplink_max_size: u32_tlv(TLV_UL_MAX_SIZE)?,
            downlink_min_padding: u32_tlv(TLV_DL_MIN_PADDING)?,
            flow_control: tlv::find_u8(tlvs, TLV_FLOW_CONTROL, message)?,
        })
    }
}

body_message!(
    SetDataFormatResponse(DataFormat),
    Service::WDA,
    SET_DATA_FORMAT,
    Response,
    "WDA Set Data Format response"
);

/// Asks for the data format in use (of one endpoint, on modems with several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetDataFormat {
    pub endpoint: Option<Endpoint>,
}

impl Message for GetDataFormat {
    const SERVICE: Service = Service::WDA;
    const MESSAGE_ID: u16 = GET_DATA_FORMAT;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "WDA Get Data Format request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        if let Some(endpoint) = self.endpoint {
            endpoint.write(out, TLV_GET_ENDPOINT)?;
        }
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            endpoint: Endpoint::find(tlvs, TLV_GET_ENDPOINT, Self::NAME)?,
        })
    }
}

impl Request for GetDataFormat {
    type Response = GetDataFormatResponse;
}

body_message!(
    GetDataFormatResponse(DataFormat),
    Service::WDA,
    GET_DATA_FORMAT,
    Response,
    "WDA Get Data Format response"
);
