//! The QMI device model: CTL client-id bookkeeping and the DMS identity, as a pure state machine.

use std::collections::{BTreeMap, BTreeSet};

use aiesim_qmi::{
    DecodeError, EncodeError, Frame, Message, MessageKind, ProtocolError, Service, Splitter,
    ctl::{self, ServiceVersion},
    dms,
};

use crate::control;

/// The services this model answers, with the versions it reports (those of a recent modem).
const SERVICES: [ServiceVersion; 2] = [
    ServiceVersion {
        service: Service::CTL,
        major: 1,
        minor: 5,
    },
    ServiceVersion {
        service: Service::DMS,
        major: 1,
        minor: 14,
    },
];

/// Client ids a service hands out before answering `ClientIdsExhausted`.
const MAX_CLIENTS_PER_SERVICE: usize = 32;

/// What DMS reports about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub imei: String,
    pub manufacturer: String,
    pub model: String,
    pub revision: String,
}

/// A simulated QMI modem.
pub struct Device {
    identity: Identity,
    splitter: Splitter,
    /// Allocated client ids per service.
    clients: BTreeMap<Service, BTreeSet<u8>>,
}

/// Why a request gets an error response; the QMI error code is what the client sees.
type Answer = Result<Frame, ProtocolError>;

impl Device {
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            splitter: Splitter::new(),
            clients: BTreeMap::new(),
        }
    }

    /// The answer to one request, or `None` for frames that get none (responses, indications).
    pub fn handle(&mut self, request: &Frame) -> Option<Frame> {
        if request.kind != MessageKind::Request {
            tracing::warn!(kind = %request.kind, service = %request.service, "ignoring a frame that is not a request");
            return None;
        }
        let answer = if request.service == Service::CTL {
            self.handle_ctl(request)
        } else if self.is_client(request.service, request.client_id) {
            self.handle_service(request)
        } else {
            Err(ProtocolError::InvalidClientId)
        };
        Some(answer.unwrap_or_else(|error| {
            tracing::info!(
                service = %request.service,
                message_id = format_args!("{:#06x}", request.message_id),
                %error,
                "refusing a request"
            );
            Frame::error_response(request, error)
        }))
    }

    fn is_client(&self, service: Service, client_id: u8) -> bool {
        self.clients.get(&service).is_some_and(|ids| ids.contains(&client_id))
    }

    fn handle_ctl(&mut self, request: &Frame) -> Answer {
        match request.message_id {
            ctl::GET_VERSION_INFO => {
                read::<ctl::GetVersionInfo>(request)?;
                respond(
                    &ctl::GetVersionInfoResponse {
                        services: SERVICES.to_vec(),
                    },
                    request,
                )
            }
            ctl::ALLOCATE_CID => {
                let ctl::AllocateCid { service } = read(request)?;
                if service == Service::CTL || !SERVICES.iter().any(|s| s.service == service) {
                    return Err(ProtocolError::InvalidServiceType);
                }
                let ids = self.clients.entry(service).or_default();
                if ids.len() >= MAX_CLIENTS_PER_SERVICE {
                    return Err(ProtocolError::ClientIdsExhausted);
                }
                // Lowest free id, never 0 (CTL's) nor 0xFF (broadcast).
                let client_id = (1..=254u8)
                    .find(|id| !ids.contains(id))
                    .ok_or(ProtocolError::ClientIdsExhausted)?;
                ids.insert(client_id);
                tracing::info!(%service, client_id, "allocated a client id");
                respond(&ctl::AllocateCidResponse { service, client_id }, request)
            }
            ctl::RELEASE_CID => {
                let ctl::ReleaseCid { service, client_id } = read(request)?;
                let released = self.clients.get_mut(&service).is_some_and(|ids| ids.remove(&client_id));
                if !released {
                    return Err(ProtocolError::InvalidClientId);
                }
                tracing::info!(%service, client_id, "released a client id");
                respond(&ctl::ReleaseCidResponse { service, client_id }, request)
            }
            ctl::SYNC => {
                read::<ctl::Sync>(request)?;
                self.clients.clear();
                tracing::info!("sync: released every client id");
                respond(&ctl::SyncResponse, request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn handle_service(&self, request: &Frame) -> Answer {
        let Identity {
            imei,
            manufacturer,
            model,
            revision,
        } = &self.identity;
        match (request.service, request.message_id) {
            (Service::DMS, dms::GET_IDS) => {
                read::<dms::GetIds>(request)?;
                let ids = dms::GetIdsResponse {
                    esn: None,
                    imei: Some(imei.clone()),
                    meid: None,
                };
                respond(&ids, request)
            }
            (Service::DMS, dms::GET_MANUFACTURER) => {
                read::<dms::GetManufacturer>(request)?;
                let manufacturer = manufacturer.clone();
                respond(&dms::GetManufacturerResponse { manufacturer }, request)
            }
            (Service::DMS, dms::GET_MODEL) => {
                read::<dms::GetModel>(request)?;
                respond(&dms::GetModelResponse { model: model.clone() }, request)
            }
            (Service::DMS, dms::GET_REVISION) => {
                read::<dms::GetRevision>(request)?;
                let revision = revision.clone();
                respond(&dms::GetRevisionResponse { revision }, request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }
}

/// Reads a request's TLVs, mapping what went wrong to the QMI error a modem would answer.
fn read<M: Message>(request: &Frame) -> Result<M, ProtocolError> {
    M::from_frame(request).map_err(|err| {
        tracing::warn!(message = M::NAME, %err, "malformed request");
        match err {
            DecodeError::MissingTlv { .. } => ProtocolError::MissingArgument,
            _ => ProtocolError::MalformedMessage,
        }
    })
}

fn respond<M: Message>(message: &M, request: &Frame) -> Answer {
    message.to_response(request).map_err(|err: EncodeError| {
        tracing::error!(message = M::NAME, %err, "could not encode the answer");
        ProtocolError::Internal
    })
}

impl control::Device for Device {
    fn receive(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let taken = self.splitter.push(bytes);
            bytes = &bytes[taken..];
            while let Some(frame) = self.splitter.next_frame() {
                let request = match frame.and_then(|frame| Frame::decode(&frame)) {
                    Ok(request) => request,
                    Err(err) => {
                        tracing::warn!(%err, "dropping bytes that are not a usable QMI frame");
                        continue;
                    }
                };
                tracing::debug!(?request, "request");
                let Some(answer) = self.handle(&request) else {
                    continue;
                };
                match answer.encode() {
                    Ok(bytes) => out.push(bytes),
                    Err(err) => tracing::error!(%err, "could not encode an answer"),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use aiesim_qmi::{CTL_CLIENT_ID as CTL, QmiResult, Request};

    use super::*;
    use crate::control::Device as _;

    fn device() -> Device {
        Device::new(Identity {
            imei: "356938035643809".into(),
            manufacturer: "aiesim".into(),
            model: "sim".into(),
            revision: "1".into(),
        })
    }

    fn call<R: Request>(device: &mut Device, client_id: u8, request: &R) -> Result<R::Response, ProtocolError> {
        let frame = request.to_frame(client_id, 1).unwrap();
        let answer = device.handle(&frame).unwrap();
        assert_eq!((answer.transaction, answer.kind), (1, MessageKind::Response));
        QmiResult::decode(&answer.tlvs).unwrap().into_result()?;
        Ok(R::Response::from_frame(&answer).unwrap())
    }

    #[test]
    fn answers_the_qmicli_allocation_byte_for_byte() {
        let mut device = device();
        let answers = device.receive(&[
            0x01, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x22, 0x00, 0x04, 0x00, 0x01, 0x01, 0x00, 0x02,
        ]);
        assert_eq!(
            answers,
            [vec![
                0x01, 0x17, 0x00, 0x80, 0x00, 0x00, 0x01, 0x01, 0x22, 0x00, 0x0c, 0x00, 0x02, 0x04, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x01, 0x02, 0x00, 0x02, 0x01
            ]]
        );
    }

    #[test]
    fn client_ids_are_tracked_per_service() {
        let mut device = device();
        let dms = Service::DMS;
        let first = call(&mut device, CTL, &ctl::AllocateCid { service: dms }).unwrap();
        let second = call(&mut device, CTL, &ctl::AllocateCid { service: dms }).unwrap();
        assert_eq!((first.client_id, second.client_id), (1, 2));

        let ids = call(&mut device, first.client_id, &dms::GetIds).unwrap();
        assert_eq!(ids.imei.as_deref(), Some("356938035643809"));
        assert_eq!(call(&mut device, 9, &dms::GetIds), Err(ProtocolError::InvalidClientId));

        call(
            &mut device,
            CTL,
            &ctl::ReleaseCid {
                service: dms,
                client_id: 1,
            },
        )
        .unwrap();
        assert_eq!(
            call(
                &mut device,
                CTL,
                &ctl::ReleaseCid {
                    service: dms,
                    client_id: 1
                }
            ),
            Err(ProtocolError::InvalidClientId)
        );
        assert_eq!(
            call(&mut device, 1, &dms::GetModel),
            Err(ProtocolError::InvalidClientId)
        );
        // The freed id is handed out again.
        let again = call(&mut device, CTL, &ctl::AllocateCid { service: dms }).unwrap();
        assert_eq!(again.client_id, 1);

        call(&mut device, CTL, &ctl::Sync).unwrap();
        assert_eq!(
            call(&mut device, 2, &dms::GetRevision),
            Err(ProtocolError::InvalidClientId)
        );
    }

    #[test]
    fn exhaustion_and_unknown_services_are_refused() {
        let mut device = device();
        for _ in 0..MAX_CLIENTS_PER_SERVICE {
            call(&mut device, CTL, &ctl::AllocateCid { service: Service::DMS }).unwrap();
        }
        assert_eq!(
            call(&mut device, CTL, &ctl::AllocateCid { service: Service::DMS }),
            Err(ProtocolError::ClientIdsExhausted)
        );
        assert_eq!(
            call(&mut device, CTL, &ctl::AllocateCid { service: Service::WDS }),
            Err(ProtocolError::InvalidServiceType)
        );
    }

    #[test]
    fn unknown_and_malformed_requests_get_errors() {
        let mut device = device();
        let dms = call(&mut device, CTL, &ctl::AllocateCid { service: Service::DMS }).unwrap();
        let unknown = Frame {
            service: Service::DMS,
            client_id: dms.client_id,
            kind: MessageKind::Request,
            transaction: 5,
            message_id: 0x0055,
            tlvs: vec![],
        };
        let answer = device.handle(&unknown).unwrap();
        assert_eq!(
            QmiResult::decode(&answer.tlvs).unwrap(),
            QmiResult::Failure(ProtocolError::InvalidQmiCommand)
        );
        let missing = Frame {
            service: Service::CTL,
            client_id: CTL,
            message_id: ctl::ALLOCATE_CID,
            ..unknown.clone()
        };
        let answer = device.handle(&missing).unwrap();
        assert_eq!(
            QmiResult::decode(&answer.tlvs).unwrap(),
            QmiResult::Failure(ProtocolError::MissingArgument)
        );
        let garbage = device.receive(&[0xde, 0xad, 0xbe, 0xef]);
        assert!(garbage.is_empty());
    }
}
