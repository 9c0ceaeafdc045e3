//! One `qmi-proxy` client: the CTL Internal Proxy Open handshake, its requests forwarded over
//! the daemon's session, its client ids tracked (and released when it goes), and the
//! indications for its client ids passed on.
//!
//! What a proxied client may do is narrower than what the modem allows: it may only use client
//! ids it allocated itself, and its CTL Sync releases only those, so it can never take the
//! daemon's ids away.

use std::{collections::BTreeSet, sync::Arc};

use aiesim_qmi::{BROADCAST_CLIENT_ID, Frame, Message, MessageKind, ProtocolError, QmiResult, Service, Splitter, ctl};
use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
    sync::broadcast,
};

use super::QmiClient;
use crate::modem::ModemError;

/// Serves one connected client until it disconnects or the session ends.
pub async fn serve(mut stream: UnixStream, client: Arc<QmiClient>) {
    let mut owned: BTreeSet<(Service, u8)> = BTreeSet::new();
    let served = serve_inner(&mut stream, &client, &mut owned).await;
    if let Err(err) = served {
        tracing::debug!(%err, "qmi-proxy client gone");
    }
    // Whatever it did not release, we do: a vanished client must not leak client ids.
    for (service, id) in owned {
        if let Err(error) = client.release(service, id).await {
            tracing::debug!(%service, client_id = id, error = %crate::broker::chain(&error), "could not release a proxied client id");
        }
    }
}

async fn serve_inner(
    stream: &mut UnixStream,
    client: &QmiClient,
    owned: &mut BTreeSet<(Service, u8)>,
) -> std::io::Result<()> {
    let mut splitter = Splitter::new();
    let mut indications = client.indications();
    let mut in_flight = FuturesUnordered::new();
    let mut opened = false;
    let mut buf = [0; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buf[..splitter.room().min(4096)]) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                splitter.push(&buf[..n]);
                while let Some(frame) = splitter.next_frame() {
                    let Ok(request) = frame.map_err(|e| e.to_string()).and_then(|f| Frame::decode(&f).map_err(|e| e.to_string())) else {
                        tracing::debug!("qmi-proxy client sent bytes that are not a QMI frame");
                        continue;
                    };
                    if request.kind != MessageKind::Request {
                        continue;
                    }
                    match local_answer(&request, &mut opened, owned) {
                        Local::Answer(answer) => write(stream, &answer).await?,
                        Local::Forward => {
                            let original = request.transaction;
                            in_flight.push(async move { (original, client.forward(request).await) });
                        }
                    }
                }
            }
            Some((original, answered)) = in_flight.next(), if !in_flight.is_empty() => {
                match answered {
                    Ok(mut answer) => {
                        answer.transaction = original;
                        track(&answer, owned);
                        write(stream, &answer).await?;
                    }
                    Err(error) => {
                        // The client's own timeout tells it; a dead modem ends the connection.
                        tracing::debug!(error = %crate::broker::chain(&error), "a proxied request failed");
                        if matches!(error, ModemError::Disconnected(_)) {
                            return Ok(());
                        }
                    }
                }
            }
            indication = indications.recv() => match indication {
                Ok(frame) if is_for(&frame, owned) => write(stream, &frame).await?,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a qmi-proxy client missed indications");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

enum Local {
    Answer(Frame),
    Forward,
}

/// What the proxy answers itself: the handshake, a Sync, and anything it must refuse.
fn local_answer(request: &Frame, opened: &mut bool, owned: &mut BTreeSet<(Service, u8)>) -> Local {
    let refuse = |error| Local::Answer(Frame::error_response(request, error));
    if request.service == Service::CTL {
        match request.message_id {
            ctl::INTERNAL_PROXY_OPEN => match ctl::InternalProxyOpen::from_frame(request) {
                Ok(open) => {
                    tracing::debug!(path = %open.device_path, "qmi-proxy client opened the modem");
                    *opened = true;
                    match ctl::InternalProxyOpenResponse.to_response(request) {
                        Ok(answer) => Local::Answer(answer),
                        Err(_) => refuse(ProtocolError::Internal),
                    }
                }
                Err(_) => refuse(ProtocolError::MalformedMessage),
            },
            _ if !*opened => refuse(ProtocolError::InvalidOperation),
            // The modem's Sync would release the daemon's ids too: only the client's go.
            ctl::SYNC => {
                owned.clear();
                match ctl::SyncResponse.to_response(request) {
                    Ok(answer) => Local::Answer(answer),
                    Err(_) => refuse(ProtocolError::Internal),
                }
            }
            ctl::RELEASE_CID => match ctl::ReleaseCid::from_frame(request) {
                Ok(release) if owned.contains(&(release.service, release.client_id)) => Local::Forward,
                Ok(_) => refuse(ProtocolError::InvalidClientId),
                Err(_) => refuse(ProtocolError::MalformedMessage),
            },
            _ => Local::Forward,
        }
    } else if *opened && owned.contains(&(request.service, request.client_id)) {
        Local::Forward
    } else {
        refuse(ProtocolError::InvalidClientId)
    }
}

/// Notes the client ids a successful Allocate or Release CID answer hands over or takes back.
fn track(answer: &Frame, owned: &mut BTreeSet<(Service, u8)>) {
    if answer.service != Service::CTL || !matches!(QmiResult::decode(&answer.tlvs), Ok(QmiResult::Success)) {
        return;
    }
    match answer.message_id {
        ctl::ALLOCATE_CID => {
            if let Ok(allocated) = ctl::AllocateCidResponse::from_frame(answer) {
                owned.insert((allocated.service, allocated.client_id));
            }
        }
        ctl::RELEASE_CID => {
            if let Ok(released) = ctl::ReleaseCidResponse::from_frame(answer) {
                owned.remove(&(released.service, released.client_id));
            }
        }
        _ => {}
    }
}

/// Indications for one of the client's ids, broadcasts on a service it has an id on, and CTL's.
fn is_for(frame: &Frame, owned: &BTreeSet<(Service, u8)>) -> bool {
    frame.service == Service::CTL
        || owned.contains(&(frame.service, frame.client_id))
        || (frame.client_id == BROADCAST_CLIENT_ID && owned.iter().any(|(service, _)| *service == frame.service))
}

/// A client's bytes through the proxy's own rules, the modem granting every Allocate CID: what
/// the `qmi_proxy` fuzz target drives. Panics if a request the rules keep from the modem would
/// reach it, or if an answer the proxy makes cannot be sent.
pub fn replay_for_fuzzing(bytes: &[u8]) {
    let mut splitter = Splitter::new();
    let (mut opened, mut owned, mut next_id) = (false, BTreeSet::new(), 1u8);
    let mut rest = bytes;
    loop {
        let taken = splitter.push(rest);
        rest = &rest[taken..];
        while let Some(frame) = splitter.next_frame() {
            let Ok(request) = frame.and_then(|f| Frame::decode(&f)) else {
                continue;
            };
            if request.kind != MessageKind::Request {
                continue;
            }
            match local_answer(&request, &mut opened, &mut owned) {
                Local::Answer(answer) => {
                    answer.encode().expect("a local answer encodes");
                }
                Local::Forward => {
                    assert!(opened, "forwarded before the handshake");
                    if request.service == Service::CTL {
                        if let Some(answer) = modem_answer(&request, &mut next_id) {
                            track(&answer, &mut owned);
                        }
                    } else {
                        assert!(
                            owned.contains(&(request.service, request.client_id)),
                            "another's client id"
                        );
                    }
                }
            }
        }
        if taken == 0 {
            break;
        }
    }
}

/// The modem's answer to a forwarded CTL request, as far as the id bookkeeping needs one.
fn modem_answer(request: &Frame, next_id: &mut u8) -> Option<Frame> {
    match request.message_id {
        ctl::ALLOCATE_CID => {
            let allocate = ctl::AllocateCid::from_frame(request).ok()?;
            *next_id = next_id.wrapping_add(1).max(1);
            ctl::AllocateCidResponse {
                service: allocate.service,
                client_id: *next_id,
            }
            .to_response(request)
            .ok()
        }
        ctl::RELEASE_CID => {
            let release = ctl::ReleaseCid::from_frame(request).ok()?;
            ctl::ReleaseCidResponse {
                service: release.service,
                client_id: release.client_id,
            }
            .to_response(request)
            .ok()
        }
        _ => None,
    }
}

async fn write(stream: &mut UnixStream, frame: &Frame) -> std::io::Result<()> {
    match frame.encode() {
        Ok(bytes) => stream.write_all(&bytes).await,
        Err(err) => {
            tracing::warn!(%err, "could not encode a frame for a qmi-proxy client");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: Service, client_id: u8, message_id: u16, tlvs: Vec<u8>) -> Frame {
        Frame {
            service,
            client_id,
            kind: MessageKind::Request,
            transaction: 7,
            message_id,
            tlvs,
        }
    }

    fn refused_with(local: Local) -> Option<ProtocolError> {
        match local {
            Local::Answer(answer) => match QmiResult::decode(&answer.tlvs).unwrap() {
                QmiResult::Failure(error) => Some(error),
                QmiResult::Success => None,
            },
            Local::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn a_client_may_use_only_its_own_ids_and_its_sync_stays_local() {
        let mut owned = BTreeSet::new();
        let mut opened = false;
        let dms_request = request(Service::DMS, 1, 0x0025, vec![]);
        assert_eq!(
            refused_with(local_answer(&dms_request, &mut opened, &mut owned)),
            Some(ProtocolError::InvalidClientId)
        );
        let open = ctl::InternalProxyOpen {
            device_path: "/dev/cdc-wdm0".into(),
        }
        .to_frame(0, 1)
        .unwrap();
        assert_eq!(refused_with(local_answer(&open, &mut opened, &mut owned)), None);
        assert!(opened);

        let allocated = ctl::AllocateCidResponse {
            service: Service::DMS,
            client_id: 3,
        }
        .to_response(&ctl::AllocateCid { service: Service::DMS }.to_frame(0, 2).unwrap())
        .unwrap();
        track(&allocated, &mut owned);
        assert!(matches!(
            local_answer(&request(Service::DMS, 3, 0x0025, vec![]), &mut opened, &mut owned),
            Local::Forward
        ));
        // The daemon's id 1 stays out of reach, for requests and for releases.
        assert_eq!(
            refused_with(local_answer(&dms_request, &mut opened, &mut owned)),
            Some(ProtocolError::InvalidClientId)
        );
        let release_daemons = ctl::ReleaseCid {
            service: Service::DMS,
            client_id: 1,
        }
        .to_frame(0, 3)
        .unwrap();
        assert_eq!(
            refused_with(local_answer(&release_daemons, &mut opened, &mut owned)),
            Some(ProtocolError::InvalidClientId)
        );
        let sync = ctl::Sync.to_frame(0, 4).unwrap();
        assert_eq!(refused_with(local_answer(&sync, &mut opened, &mut owned)), None);
        assert!(owned.is_empty(), "a client's Sync forgets its own ids only");
    }

    #[test]
    fn indications_reach_the_clients_they_are_for() {
        let owned: BTreeSet<_> = [(Service::NAS, 4)].into_iter().collect();
        let indication = |service, client_id| Frame {
            service,
            client_id,
            kind: MessageKind::Indication,
            transaction: 0,
            message_id: 0x0051,
            tlvs: vec![],
        };
        assert!(is_for(&indication(Service::NAS, 4), &owned));
        assert!(is_for(&indication(Service::NAS, BROADCAST_CLIENT_ID), &owned));
        assert!(!is_for(&indication(Service::NAS, 1), &owned), "the daemon's own");
        assert!(!is_for(&indication(Service::WDS, BROADCAST_CLIENT_ID), &owned));
    }
}
