//! CTL (service 0x00): client-id allocation, version discovery and the qmi-proxy handshake.

use crate::{DecodeError, EncodeError, Message, MessageKind, Request, Service, message::empty_message, tlv};

pub const GET_VERSION_INFO: u16 = 0x0021;
pub const ALLOCATE_CID: u16 = 0x0022;
pub const RELEASE_CID: u16 = 0x0023;
pub const SYNC: u16 = 0x0027;
/// libqmi's own message: the first thing a client of `qmi-proxy` sends, naming the device.
pub const INTERNAL_PROXY_OPEN: u16 = 0xFF00;

/// The TLV that carries each CTL message's payload.
const TLV_PAYLOAD: u8 = 0x01;

empty_message!(
    /// Asks which services the modem speaks, and in which versions.
    GetVersionInfo, Service::CTL, GET_VERSION_INFO, Request, "CTL Get Version Info request"
);

impl Request for GetVersionInfo {
    type Response = GetVersionInfoResponse;
}

/// One service and the version of it the modem implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceVersion {
    pub service: Service,
    pub major: u16,
    pub minor: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetVersionInfoResponse {
    pub services: Vec<ServiceVersion>,
}

impl Message for GetVersionInfoResponse {
    const SERVICE: Service = Service::CTL;
    const MESSAGE_ID: u16 = GET_VERSION_INFO;
    const KIND: MessageKind = MessageKind::Response;
    const NAME: &'static str = "CTL Get Version Info response";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        let count = u8::try_from(self.services.len()).map_err(|_| EncodeError::TooLong {
            what: "the service version list",
            len: self.services.len(),
            max: usize::from(u8::MAX),
        })?;
        let mut value = Vec::with_capacity(1 + 5 * self.services.len());
        value.push(count);
        for ServiceVersion { service, major, minor } in &self.services {
            value.push(service.0);
            value.extend_from_slice(&major.to_le_bytes());
            value.extend_from_slice(&minor.to_le_bytes());
        }
        out.put(TLV_PAYLOAD, &value)?;
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_PAYLOAD, Self::NAME)?;
        let size_error = || DecodeError::TlvSize {
            message: Self::NAME,
            tlv: TLV_PAYLOAD,
            expected: "1 + 5 bytes per listed service",
            actual: value.len(),
        };
        let (&count, entries) = value.split_first().ok_or_else(size_error)?;
        if entries.len() != 5 * usize::from(count) {
            return Err(size_error());
        }
        let services = entries
            .chunks_exact(5)
            .map(|e| ServiceVersion {
                service: Service(e[0]),
                major: u16::from_le_bytes([e[1], e[2]]),
                minor: u16::from_le_bytes([e[3], e[4]]),
            })
            .collect();
        Ok(Self { services })
    }
}

/// Asks for a client id on `service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocateCid {
    pub service: Service,
}

impl Message for AllocateCid {
    const SERVICE: Service = Service::CTL;
    const MESSAGE_ID: u16 = ALLOCATE_CID;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "CTL Allocate CID request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put_u8(TLV_PAYLOAD, self.service.0);
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_PAYLOAD, Self::NAME)?;
        let [service] = tlv::fixed(value, TLV_PAYLOAD, Self::NAME, "1")?;
        Ok(Self {
            service: Service(service),
        })
    }
}

impl Request for AllocateCid {
    type Response = AllocateCidResponse;
}

/// Reads and writes the `{u8 service, u8 cid}` pair both CID messages carry.
fn read_service_cid(tlvs: &[u8], message: &'static str) -> Result<(Service, u8), DecodeError> {
    let value = tlv::require(tlvs, TLV_PAYLOAD, message)?;
    let [service, cid] = tlv::fixed(value, TLV_PAYLOAD, message, "2")?;
    Ok((Service(service), cid))
}

/// Declares a message whose payload is a `{service, client id}` pair.
macro_rules! service_cid_message {
    ($(#[$doc:meta])* $name:ident, $id:expr, $kind:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            pub service: Service,
            pub client_id: u8,
        }

        impl Message for $name {
            const SERVICE: Service = Service::CTL;
            const MESSAGE_ID: u16 = $id;
            const KIND: MessageKind = MessageKind::$kind;
            const NAME: &'static str = $label;

            fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
                out.put_fixed(TLV_PAYLOAD, &[self.service.0, self.client_id]);
                Ok(())
            }

            fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
                let (service, client_id) = read_service_cid(tlvs, Self::NAME)?;
                Ok(Self { service, client_id })
            }
        }
    };
}

service_cid_message!(
    /// The client id the modem allocated.
    AllocateCidResponse, ALLOCATE_CID, Response, "CTL Allocate CID response"
);
service_cid_message!(
    /// Gives a client id back.
    ReleaseCid, RELEASE_CID, Request, "CTL Release CID request"
);
service_cid_message!(
    /// The client id the modem released.
    ReleaseCidResponse, RELEASE_CID, Response, "CTL Release CID response"
);

impl Request for ReleaseCid {
    type Response = ReleaseCidResponse;
}

empty_message!(
    /// Releases every client id of every service (for a host that lost track of its own).
    Sync, Service::CTL, SYNC, Request, "CTL Sync request"
);
empty_message!(SyncResponse, Service::CTL, SYNC, Response, "CTL Sync response");
empty_message!(
    /// Sent by a modem that has released every client id, e.g. after a reset.
    SyncIndication, Service::CTL, SYNC, Indication, "CTL Sync indication"
);

impl Request for Sync {
    type Response = SyncResponse;
}

/// Asks a qmi-proxy to open (or share) `device_path` for this connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InternalProxyOpen {
    pub device_path: String,
}

impl Message for InternalProxyOpen {
    const SERVICE: Service = Service::CTL;
    const MESSAGE_ID: u16 = INTERNAL_PROXY_OPEN;
    const KIND: MessageKind = MessageKind::Request;
    const NAME: &'static str = "CTL Internal Proxy Open request";

    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError> {
        out.put(TLV_PAYLOAD, self.device_path.as_bytes())?;
        Ok(())
    }

    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, TLV_PAYLOAD, Self::NAME)?;
        Ok(Self {
            device_path: tlv::string(value),
        })
    }
}

empty_message!(
    /// The proxy opened the device; only the result TLV.
    InternalProxyOpenResponse, Service::CTL, INTERNAL_PROXY_OPEN, Response, "CTL Internal Proxy Open response"
);

impl Request for InternalProxyOpen {
    type Response = InternalProxyOpenResponse;
}
