//! The MBIM client: one driver task owns the transport, fragments what it sends, reassembles
//! what it receives, matches answers to requests by transaction id and hands indications and
//! function errors to subscribers.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use aiesim_mbim::{
    Body, CommandDone, ControlMessage, DecodeError, EncodeError, Indication, Message, ProtocolError, Reassembler,
    Request, Status,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::modem::{
    ModemError,
    transport::{Framer, Transport, TransportError},
};

/// Requests queued for the driver before callers wait for room.
const QUEUE_DEPTH: usize = 32;
/// Events buffered per subscriber; one that lags behind re-reads the state instead.
const EVENT_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MbimError {
    #[error("the modem answered the {request} with status {status}")]
    Status { request: &'static str, status: Status },
    #[error("the modem refused the {request} ({error})")]
    Function {
        request: &'static str,
        error: ProtocolError,
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
    #[error("the modem answered the {request} with an unexpected {answer} message")]
    Unexpected {
        request: &'static str,
        answer: &'static str,
    },
}

impl Framer for aiesim_mbim::Splitter {
    fn room(&self) -> usize {
        Self::room(self)
    }

    fn push(&mut self, data: &[u8]) -> usize {
        Self::push(self, data)
    }

    fn next_frame(&mut self) -> Option<Result<Vec<u8>, String>> {
        self.next_transfer().map(|frame| frame.map_err(|err| err.to_string()))
    }
}

/// What the modem sends unasked.
#[derive(Debug, Clone)]
pub enum Event {
    Indication(Arc<Indication>),
    /// A `FUNCTION_ERROR` for no request of ours, e.g. `NotOpened` after a modem-side reset.
    FunctionError(ProtocolError),
}

type Reply = Result<ControlMessage, Arc<TransportError>>;

struct Call {
    /// The message; the driver fills in the transaction id.
    body: Body,
    reply: oneshot::Sender<Reply>,
}

/// An MBIM client over any [`Transport`].
pub struct MbimClient {
    calls: mpsc::Sender<Call>,
    stopped: Arc<OnceLock<Arc<TransportError>>>,
    closed: watch::Receiver<bool>,
    events: broadcast::Sender<Event>,
    driver: JoinHandle<()>,
    timeout: Duration,
}

impl MbimClient {
    /// Starts the driver; `max_control_transfer` bounds every fragment it sends.
    pub fn spawn(transport: impl Transport, timeout: Duration, max_control_transfer: usize) -> Self {
        let (calls, queue) = mpsc::channel(QUEUE_DEPTH);
        let stopped = Arc::new(OnceLock::new());
        let (events, _) = broadcast::channel(EVENT_DEPTH);
        let (closed_tx, closed) = watch::channel(false);
        let driver = tokio::spawn(drive(Driver {
            transport,
            calls: queue,
            stopped: Arc::clone(&stopped),
            events: events.clone(),
            closed: closed_tx,
            max_control_transfer,
        }));
        Self {
            calls,
            stopped,
            closed,
            events,
            driver,
            timeout,
        }
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Resolves once the control channel has stopped, with why.
    pub async fn closed(&self) -> ModemError {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|closed| *closed).await;
        self.disconnected()
    }

    fn disconnected(&self) -> ModemError {
        ModemError::Disconnected(self.stopped.get().cloned())
    }

    /// Sends `body` and waits for the answer with the same transaction id.
    async fn exchange(&self, body: Body, request: &'static str) -> Result<ControlMessage, ModemError> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.calls
                .send(Call { body, reply })
                .await
                .map_err(|_| self.disconnected())?;
            match answer.await {
                Ok(Ok(message)) => Ok(message),
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

    /// OPEN with our `MaxControlTransfer`.
    pub async fn open(&self, max_control_transfer: u32) -> Result<(), ModemError> {
        let answer = self.exchange(Body::Open { max_control_transfer }, "MBIM OPEN").await?;
        match answer.body {
            Body::OpenDone(status) if status.is_success() => Ok(()),
            Body::OpenDone(status) => Err(MbimError::Status {
                request: "MBIM OPEN",
                status,
            }
            .into()),
            other => Err(unexpected("MBIM OPEN", &other).into()),
        }
    }

    pub async fn close(&self) -> Result<(), ModemError> {
        let answer = self.exchange(Body::Close, "MBIM CLOSE").await?;
        match answer.body {
            Body::CloseDone(_) => Ok(()),
            other => Err(unexpected("MBIM CLOSE", &other).into()),
        }
    }

    /// A COMMAND as is; the answer's status is the caller's to judge.
    pub async fn command_raw(
        &self,
        command: aiesim_mbim::Command,
        request: &'static str,
    ) -> Result<CommandDone, ModemError> {
        let answer = self.exchange(Body::Command(command), request).await?;
        match answer.body {
            Body::CommandDone(done) => Ok(done),
            Body::FunctionError(error) => Err(MbimError::Function { request, error }.into()),
            other => Err(unexpected(request, &other).into()),
        }
    }

    /// A typed request and its typed answer; any status but success is an error.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response, ModemError> {
        let command = request.to_command().map_err(|source| MbimError::Encode {
            request: R::NAME,
            source,
        })?;
        let done = self.command_raw(command, R::NAME).await?;
        if !done.status.is_success() {
            return Err(MbimError::Status {
                request: R::NAME,
                status: done.status,
            }
            .into());
        }
        R::Response::from_command_done(&done).map_err(|source| {
            MbimError::Malformed {
                request: R::NAME,
                source,
            }
            .into()
        })
    }

    /// Stops the driver, which closes the port.
    pub fn shutdown(&self) {
        self.driver.abort();
    }
}

impl Drop for MbimClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn unexpected(request: &'static str, body: &Body) -> MbimError {
    MbimError::Unexpected {
        request,
        answer: body.message_type().name(),
    }
}

struct Driver<T> {
    transport: T,
    calls: mpsc::Receiver<Call>,
    stopped: Arc<OnceLock<Arc<TransportError>>>,
    events: broadcast::Sender<Event>,
    closed: watch::Sender<bool>,
    max_control_transfer: usize,
}

async fn drive<T: Transport>(driver: Driver<T>) {
    let Driver {
        mut transport,
        mut calls,
        stopped,
        events,
        closed,
        max_control_transfer,
    } = driver;
    let mut pending: HashMap<u32, oneshot::Sender<Reply>> = HashMap::new();
    let mut reassembler = Reassembler::new();
    let mut last_tid: u32 = 0;
    let failure = loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(Call { body, reply }) = call else { return };
                pending.retain(|_, waiter| !waiter.is_closed());
                // Never 0, never one still awaiting its answer.
                loop {
                    last_tid = last_tid.wrapping_add(1).max(1);
                    if !pending.contains_key(&last_tid) {
                        break;
                    }
                }
                let message = ControlMessage::new(last_tid, body);
                let fragments = match message.encode_fragments(max_control_transfer) {
                    Ok(fragments) => fragments,
                    Err(err) => {
                        tracing::error!(%err, "dropping a request that cannot be encoded");
                        continue;
                    }
                };
                let mut sent = Ok(());
                for fragment in &fragments {
                    sent = transport.send(fragment).await;
                    if sent.is_err() {
                        break;
                    }
                }
                match sent {
                    Ok(()) => {
                        pending.insert(last_tid, reply);
                    }
                    Err(err) => drop(reply.send(Err(Arc::new(err)))),
                }
            }
            received = transport.recv() => match received {
                Ok(bytes) => match reassembler.push(&bytes) {
                    Ok(Some(message)) => dispatch(message, &mut pending, &events),
                    Ok(None) => {}
                    Err(err) => tracing::warn!(%err, "dropping an MBIM transfer"),
                },
                Err(err) => break Arc::new(err),
            },
        }
    };
    tracing::warn!(error = %failure, "the MBIM control channel stopped");
    let _ = stopped.set(Arc::clone(&failure));
    closed.send_replace(true);
    for (_, waiter) in pending.drain() {
        drop(waiter.send(Err(Arc::clone(&failure))));
    }
}

fn dispatch(
    message: ControlMessage,
    pending: &mut HashMap<u32, oneshot::Sender<Reply>>,
    events: &broadcast::Sender<Event>,
) {
    tracing::trace!(?message, "received");
    match &message.body {
        Body::IndicateStatus(indication) => {
            let _ = events.send(Event::Indication(Arc::new(indication.clone())));
        }
        Body::FunctionError(error) if !pending.contains_key(&message.transaction_id) => {
            tracing::warn!(%error, "the modem reports an MBIM function error");
            let _ = events.send(Event::FunctionError(*error));
        }
        Body::OpenDone(_) | Body::CloseDone(_) | Body::CommandDone(_) | Body::FunctionError(_) => {
            // A request's own NotOpened is its caller's to handle (re-open and retry).
            if let Some(waiter) = pending.remove(&message.transaction_id) {
                drop(waiter.send(Ok(message)));
            } else {
                tracing::debug!(
                    tid = message.transaction_id,
                    "no request waits for this answer (late or not ours)"
                );
            }
        }
        other => tracing::warn!(
            kind = other.message_type().name(),
            "ignoring a host message sent by the modem"
        ),
    }
}
