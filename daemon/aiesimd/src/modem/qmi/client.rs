//! The QMI client: one driver task owns the transport, matches responses to requests by
//! transaction id and hands indications to subscribers; callers get typed answers or a typed
//! error.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use aiesim_qmi::{
    CTL_CLIENT_ID, DecodeError, EncodeError, Frame, Message, MessageKind, ProtocolError, QmiResult, Request, Service,
    ctl, dms,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::modem::{
    ModemError, ModemInfo,
    transport::{Transport, TransportError},
};

/// Requests queued for the driver before callers wait for room.
const QUEUE_DEPTH: usize = 32;
/// Indications buffered per subscriber; one that lags behind re-reads the state instead.
const INDICATION_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum QmiError {
    #[error("the modem refused the {request}")]
    Refused {
        request: &'static str,
        #[source]
        source: ProtocolError,
    },
    #[error("the modem's answer to the {request} is malformed")]
    Malformed {
        request: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("could not encode the {request}")]
    Encode {
        request: &'static str,
        #[source]
        source: EncodeError,
    },
}

/// What the driver hands back for one request: its response, or why the port went away.
type Reply = Result<Frame, Arc<TransportError>>;

struct Call {
    /// The request; the driver fills in the transaction id.
    frame: Frame,
    reply: oneshot::Sender<Reply>,
}

/// A QMI client over any [`Transport`].
pub struct QmiClient {
    calls: mpsc::Sender<Call>,
    /// Why the driver stopped, once it has.
    stopped: Arc<OnceLock<Arc<TransportError>>>,
    /// Turns true when the driver stops.
    closed: watch::Receiver<bool>,
    indications: broadcast::Sender<Arc<Frame>>,
    driver: JoinHandle<()>,
    timeout: Duration,
}

impl QmiClient {
    /// Starts the driver task; must be called within a tokio runtime.
    pub fn spawn(transport: impl Transport, timeout: Duration) -> Self {
        let (calls, queue) = mpsc::channel(QUEUE_DEPTH);
        let stopped = Arc::new(OnceLock::new());
        let (indications, _) = broadcast::channel(INDICATION_DEPTH);
        let (closed_tx, closed) = watch::channel(false);
        let driver = tokio::spawn(drive(
            transport,
            queue,
            Arc::clone(&stopped),
            indications.clone(),
            closed_tx,
        ));
        Self {
            calls,
            stopped,
            closed,
            indications,
            driver,
            timeout,
        }
    }

    /// Every indication the modem sends from now on (broadcast and to our client ids).
    pub fn indications(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.indications.subscribe()
    }

    /// Resolves once the control channel has stopped, with why.
    pub async fn closed(&self) -> ModemError {
        let mut closed = self.closed.clone();
        // An error here means the driver is gone too.
        let _ = closed.wait_for(|closed| *closed).await;
        self.disconnected()
    }

    /// Releases every client id on the modem, ours and any a crashed earlier run left behind.
    pub async fn sync(&self) -> Result<(), ModemError> {
        self.call(CTL_CLIENT_ID, &ctl::Sync).await?;
        Ok(())
    }

    /// Sends `request` to `client_id` and waits for its typed response.
    pub async fn call<R: Request>(&self, client_id: u8, request: &R) -> Result<R::Response, ModemError> {
        // Encoding once here means the driver's own encoding cannot fail.
        let frame = request
            .to_frame(client_id, 0)
            .and_then(|frame| frame.encode().map(|_| frame))
            .map_err(|source| QmiError::Encode {
                request: R::NAME,
                source,
            })?;
        let frame = self.exchange(frame, R::NAME).await?;
        let malformed = |source| QmiError::Malformed {
            request: R::NAME,
            source,
        };
        QmiResult::decode(&frame.tlvs)
            .map_err(malformed)?
            .into_result()
            .map_err(|source| QmiError::Refused {
                request: R::NAME,
                source,
            })?;
        Ok(R::Response::from_frame(&frame).map_err(malformed)?)
    }

    /// Sends a proxied client's request as it is (with a transaction id of ours) and returns
    /// the modem's answer as it is; the proxy restores the client's transaction id.
    pub async fn forward(&self, frame: Frame) -> Result<Frame, ModemError> {
        frame.encode().map_err(|source| QmiError::Encode {
            request: "proxied request",
            source,
        })?;
        self.exchange(frame, "proxied request").await
    }

    async fn exchange(&self, frame: Frame, request: &'static str) -> Result<Frame, ModemError> {
        let (reply, answer) = oneshot::channel();
        let call = Call { frame, reply };
        // The deadline covers queueing too: a wedged port must not hang the caller.
        let exchange = async {
            self.calls.send(call).await.map_err(|_| self.disconnected())?;
            match answer.await {
                Ok(Ok(frame)) => Ok(frame),
                Ok(Err(source)) => Err(ModemError::Disconnected(Some(source))),
                Err(_) => Err(self.disconnected()),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ModemError::Timeout {
                request,
                after: self.timeout,
            })?
    }

    /// Allocates a client id on `service`.
    pub async fn allocate(&self, service: Service) -> Result<u8, ModemError> {
        let allocated = self.call(CTL_CLIENT_ID, &ctl::AllocateCid { service }).await?;
        if allocated.service != service {
            tracing::warn!(
                %service,
                answered = %allocated.service,
                "the modem allocated a client id for another service"
            );
        }
        tracing::debug!(%service, client_id = allocated.client_id, "allocated a client id");
        Ok(allocated.client_id)
    }

    /// Gives a client id back.
    pub async fn release(&self, service: Service, client_id: u8) -> Result<(), ModemError> {
        self.call(CTL_CLIENT_ID, &ctl::ReleaseCid { service, client_id })
            .await?;
        tracing::debug!(%service, client_id, "released a client id");
        Ok(())
    }

    /// Stops the driver, which closes the port.
    pub fn shutdown(&self) {
        self.driver.abort();
    }

    fn disconnected(&self) -> ModemError {
        ModemError::Disconnected(self.stopped.get().cloned())
    }
}

impl Drop for QmiClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads the identity DMS reports, over an allocated DMS client id.
pub async fn read_info(client: &QmiClient, dms: u8) -> Result<ModemInfo, ModemError> {
    // Concurrent on purpose: the driver matches the answers by transaction id.
    let (ids, manufacturer, model, revision) = tokio::try_join!(
        client.call(dms, &dms::GetIds),
        client.call(dms, &dms::GetManufacturer),
        client.call(dms, &dms::GetModel),
        client.call(dms, &dms::GetRevision),
    )?;
    let imei = ids.imei.unwrap_or_else(|| {
        tracing::warn!("the modem reports no IMEI");
        String::new()
    });
    Ok(ModemInfo {
        imei,
        manufacturer: manufacturer.manufacturer,
        model: model.model,
        revision: revision.revision,
    })
}

/// Responses are matched on the service, client id and transaction they echo.
type Key = (Service, u8, u16);

/// Hands out transaction ids: one byte for CTL, two for the other services; never 0.
#[derive(Default)]
struct Transactions {
    last: HashMap<Service, u16>,
}

impl Transactions {
    fn next(&mut self, service: Service, client_id: u8, busy: impl Fn(Key) -> bool) -> u16 {
        let max = if service == Service::CTL {
            u16::from(u8::MAX)
        } else {
            u16::MAX
        };
        let last = self.last.entry(service).or_default();
        // Skip ids still awaiting an answer; a full wrap means the oldest one is reused.
        for _ in 0..max {
            *last = if *last >= max { 1 } else { *last + 1 };
            if !busy((service, client_id, *last)) {
                break;
            }
        }
        *last
    }
}

async fn drive(
    mut transport: impl Transport,
    mut calls: mpsc::Receiver<Call>,
    stopped: Arc<OnceLock<Arc<TransportError>>>,
    indications: broadcast::Sender<Arc<Frame>>,
    closed: watch::Sender<bool>,
) {
    let mut pending: HashMap<Key, oneshot::Sender<Reply>> = HashMap::new();
    let mut transactions = Transactions::default();
    let failure = loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { return };
                // Callers that timed out dropped their receivers; forget them.
                pending.retain(|_, waiter| !waiter.is_closed());
                let Call { mut frame, reply } = call;
                frame.transaction = transactions
                    .next(frame.service, frame.client_id, |key| pending.contains_key(&key));
                let key = (frame.service, frame.client_id, frame.transaction);
                tracing::trace!(?frame, "request");
                let sent = match frame.encode() {
                    Ok(bytes) => transport.send(&bytes).await,
                    Err(err) => {
                        // The caller encoded this frame already; only a bug lands here.
                        tracing::error!(%err, "dropping a request that cannot be encoded");
                        continue;
                    }
                };
                match sent {
                    Ok(()) => {
                        pending.insert(key, reply);
                    }
                    Err(err) => drop(reply.send(Err(Arc::new(err)))),
                }
            }
            received = transport.recv() => match received {
                Ok(bytes) => dispatch(&bytes, &mut pending, &indications),
                Err(err) => break Arc::new(err),
            },
        }
    };
    tracing::warn!(error = %failure, "the QMI control channel stopped");
    let _ = stopped.set(Arc::clone(&failure));
    closed.send_replace(true);
    for (_, waiter) in pending.drain() {
        drop(waiter.send(Err(Arc::clone(&failure))));
    }
}

fn dispatch(
    bytes: &[u8],
    pending: &mut HashMap<Key, oneshot::Sender<Reply>>,
    indications: &broadcast::Sender<Arc<Frame>>,
) {
    let frame = match Frame::decode(bytes) {
        Ok(frame) => frame,
        Err(err) => {
            tracing::warn!(%err, "ignoring an undecodable frame from the modem");
            return;
        }
    };
    tracing::trace!(?frame, "received");
    match frame.kind {
        MessageKind::Response => {
            let key = (frame.service, frame.client_id, frame.transaction);
            if let Some(waiter) = pending.remove(&key) {
                drop(waiter.send(Ok(frame)));
            } else {
                tracing::debug!(
                    service = %frame.service,
                    transaction = frame.transaction,
                    "no request waits for this response (late or not ours)"
                );
            }
        }
        MessageKind::Indication => {
            if frame.service == Service::CTL && frame.message_id == ctl::SYNC {
                tracing::warn!("the modem released every client id (CTL Sync indication)");
            }
            // No subscriber is not an error: nobody asked for this one.
            let _ = indications.send(Arc::new(frame));
        }
        MessageKind::Request => tracing::warn!(
            service = %frame.service,
            "ignoring a request sent by the modem"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_wrap_and_skip_busy_ones() {
        let mut t = Transactions::default();
        assert_eq!(t.next(Service::CTL, 0, |_| false), 1);
        assert_eq!(t.next(Service::CTL, 0, |k| k.2 == 2), 3);
        t.last.insert(Service::CTL, 255);
        assert_eq!(t.next(Service::CTL, 0, |_| false), 1);
        t.last.insert(Service::DMS, u16::MAX);
        assert_eq!(t.next(Service::DMS, 1, |_| false), 1);
    }
}
