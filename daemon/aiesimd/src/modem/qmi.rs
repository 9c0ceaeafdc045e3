//! The QMI client: one driver task owns the transport, matches responses to requests by
//! transaction id and logs indications; callers get typed answers or a typed error.

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
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    ModemError, ModemInfo,
    transport::{Transport, TransportError},
};

/// Requests queued for the driver before callers wait for room.
const QUEUE_DEPTH: usize = 32;

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
    driver: JoinHandle<()>,
    timeout: Duration,
}

impl QmiClient {
    /// Starts the driver task; must be called within a tokio runtime.
    pub fn spawn(transport: impl Transport, timeout: Duration) -> Self {
        let (calls, queue) = mpsc::channel(QUEUE_DEPTH);
        let stopped = Arc::new(OnceLock::new());
        let driver = tokio::spawn(drive(transport, queue, Arc::clone(&stopped)));
        Self {
            calls,
            stopped,
            driver,
            timeout,
        }
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
        let frame = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ModemError::Timeout {
                request: R::NAME,
                after: self.timeout,
            })??;
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

    /// Stops the driver and closes the port.
    pub async fn shutdown(mut self) {
        self.driver.abort();
        // Only cancellation can end it here; the port is closed either way.
        let _ = (&mut self.driver).await;
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
                Ok(bytes) => dispatch(&bytes, &mut pending),
                Err(err) => break Arc::new(err),
            },
        }
    };
    tracing::warn!(error = %failure, "the QMI control channel stopped");
    let _ = stopped.set(Arc::clone(&failure));
    for (_, waiter) in pending.drain() {
        drop(waiter.send(Err(Arc::clone(&failure))));
    }
}

fn dispatch(bytes: &[u8], pending: &mut HashMap<Key, oneshot::Sender<Reply>>) {
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
        MessageKind::Indication if frame.service == Service::CTL && frame.message_id == ctl::SYNC => {
            tracing::warn!("the modem released every client id (CTL Sync indication)");
        }
        MessageKind::Indication => tracing::debug!(
            service = %frame.service,
            message_id = frame.message_id,
            "ignoring an indication"
        ),
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
