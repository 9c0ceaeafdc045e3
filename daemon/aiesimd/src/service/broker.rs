//! `org.aiesim.AiEsim1.Broker` on the root object.

use aiesim_dbus::ChatDict as _;
use std::{collections::HashMap, os::unix::net::UnixStream as StdUnixStream, sync::Arc, time::Duration};

use aiesim_dbus::{ChatOptions, StreamEvent, iface};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tokio_util::sync::CancellationToken;
use zbus::{
    Connection, ObjectPath, ObjectServer, OwnedFd, OwnedObjectPath, OwnedVariant, Variant, interface, message::Header,
};

use super::{
    DaemonError, Shared,
    request::{Progress, RequestObject},
};
use crate::{
    broker::{EventSink, Outcome, SinkClosed, chain},
    identity::{Caller, Identify},
};

/// Largest answer `Ask` collects; the token cap bounds it well before this.
const ASK_MAX_BYTES: usize = 1 << 20;

pub struct BrokerObject {
    pub shared: Arc<Shared>,
}

#[interface(name = "org.aiesim.AiEsim1.Broker")]
impl BrokerObject {
    async fn chat(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        request: HashMap<String, OwnedVariant>,
    ) -> Result<(OwnedObjectPath, OwnedFd), DaemonError> {
        let options = ChatOptions::from_chat(&request, &self.shared.requests.images)?;
        let caller = self.caller(&header).await?;
        // Counted from before admission to the object's removal, lingering included.
        let slot = self.shared.object_slot(&caller.app)?;

        let (ours, theirs) = StdUnixStream::pair()?;
        // The bounded buffer: an app that stops reading stalls the writer here, not memory.
        nix::sys::socket::setsockopt(
            &ours,
            nix::sys::socket::sockopt::SndBuf,
            &self.shared.requests.stream_buffer,
        )
        .map_err(|e| DaemonError::Failed(format!("cannot bound the stream's buffer: {e}")))?;
        ours.set_nonblocking(true)?;
        let ours = UnixStream::from_std(ours)?;
        let admitted = self.admit(connection, &caller, options).await?;
        let path = self.shared.next_request_path();
        let progress = Progress::queued(admitted.route());
        let cancel = CancellationToken::new();
        let object = RequestObject {
            owner: caller.sender.clone(),
            progress: progress.clone(),
            cancel: cancel.clone(),
        };
        if let Err(e) = connection.object_server().at(path.as_str(), object).await {
            self.shared.broker.abandon(admitted);
            return Err(e.into());
        }
        tracing::info!(request = %path, app = %caller.app, endpoint = %admitted.route().endpoint, estimate = admitted.estimate(), "chat admitted");

        let shared = Arc::clone(&self.shared);
        let connection = connection.clone();
        let task_path = path.clone();
        tokio::spawn(async move {
            let (read, write) = ours.into_split();
            let mut sink = SocketSink {
                write,
                progress: progress.clone(),
                stall: shared.requests.stall_timeout,
            };
            let stop = async {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = peer_closed(read) => {}
                }
            };
            let outcome = shared.broker.run(admitted, &mut sink, stop).await;
            drop(sink);
            progress.finish(&outcome);
            log_outcome(&task_path, &caller, &outcome);
            if let Some((aiesim_dbus::ErrorName::BudgetExceeded, reason)) = &outcome.error {
                budget_exhausted(&shared, &connection, &caller, reason).await;
            }
            if let Err(e) = connection
                .emit_signal(
                    Some(caller.sender.as_str()),
                    task_path.as_str(),
                    iface::REQUEST,
                    "Finished",
                    &(finished_dict(&outcome),),
                )
                .await
            {
                tracing::debug!(request = %task_path, error = %e, "Finished not delivered");
            }
            tokio::time::sleep(shared.requests.linger).await;
            let _ = connection
                .object_server()
                .remove::<RequestObject, _>(task_path.as_str())
                .await;
            drop(slot);
        });

        let path = OwnedObjectPath::try_from(path).map_err(|e| DaemonError::Failed(e.to_string()))?;
        Ok((path, OwnedFd::from(std::os::fd::OwnedFd::from(theirs))))
    }

    async fn ask(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        prompt: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(String, HashMap<String, OwnedVariant>), DaemonError> {
        let options = ChatOptions::from_ask(&prompt, &options, &self.shared.requests.images)?;
        let caller = self.caller(&header).await?;
        // A caller that leaves the bus has no one to answer: its request is cancelled.
        let gone = caller_gone(connection, &caller.sender).await?;
        let admitted = self.admit(connection, &caller, options).await?;
        let mut sink = TextSink(String::new());
        let outcome = self.shared.broker.run(admitted, &mut sink, gone).await;
        log_outcome("ask", &caller, &outcome);
        if let Some((aiesim_dbus::ErrorName::BudgetExceeded, reason)) = &outcome.error {
            budget_exhausted(&self.shared, connection, &caller, reason).await;
        }
        if let Some((name, message)) = outcome.error {
            return Err(DaemonError::new(name, message));
        }
        let usage = HashMap::from([
            (
                "prompt_tokens".to_owned(),
                OwnedVariant::from(outcome.usage.prompt_tokens),
            ),
            (
                "completion_tokens".to_owned(),
                OwnedVariant::from(outcome.usage.completion_tokens),
            ),
            ("charged".to_owned(), OwnedVariant::from(outcome.charged)),
            ("endpoint".to_owned(), owned_str(&outcome.endpoint)),
            ("model".to_owned(), owned_str(&outcome.model)),
        ]);
        Ok((sink.0, usage))
    }

    async fn cancel(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
        request_path: ObjectPath<'_>,
    ) -> Result<(), DaemonError> {
        let sender = sender_of(&header)?;
        // Someone else's request, a finished one and no request at all look the same to the caller.
        let refused = || DaemonError::Unauthorized(format!("{request_path} is not a running request of the caller"));
        let request = server
            .interface::<_, RequestObject>(&request_path)
            .await
            .map_err(|_| refused())?;
        let request = request.get().await;
        if request.owner != sender || !request.progress.is_running() {
            return Err(refused());
        }
        request.cancel.cancel();
        Ok(())
    }
}

impl BrokerObject {
    /// Admits the request, or refuses it; a refusal for want of budget is also signalled to the
    /// caller (only), as `Budget.BudgetExhausted`.
    async fn admit(
        &self,
        connection: &Connection,
        caller: &Caller,
        options: ChatOptions,
    ) -> Result<crate::broker::Admitted, DaemonError> {
        match self.shared.broker.admit(&caller.app, options) {
            Ok(admitted) => Ok(admitted),
            Err(e) => {
                if e.name() == aiesim_dbus::ErrorName::BudgetExceeded {
                    budget_exhausted(&self.shared, connection, caller, &chain(&e)).await;
                }
                Err(e.into())
            }
        }
    }

    async fn caller(&self, header: &Header<'_>) -> Result<Caller, DaemonError> {
        let sender = sender_of(header)?;
        Ok(self.shared.identity.identify(&sender).await?)
    }
}

/// Tells the caller (only) that a request was refused for want of budget, at admission or
/// when its turn came.
async fn budget_exhausted(shared: &Shared, connection: &Connection, caller: &Caller, reason: &str) {
    let mut details = super::budget::mine(shared, &caller.app);
    details.insert("reason".to_owned(), owned_str(reason));
    if let Err(error) = connection
        .emit_signal(
            Some(caller.sender.as_str()),
            aiesim_dbus::ROOT_PATH,
            aiesim_dbus::iface::BUDGET,
            "BudgetExhausted",
            &(details,),
        )
        .await
    {
        tracing::debug!(error = %error, "BudgetExhausted not delivered");
    }
}

pub(super) fn sender_of(header: &Header<'_>) -> Result<String, DaemonError> {
    header
        .sender()
        .map(ToString::to_string)
        .ok_or_else(|| DaemonError::Unauthorized("the call has no sender".into()))
}

pub(super) fn owned_str(s: &str) -> OwnedVariant {
    Variant::from(s).try_into_owned().expect("strings hold no fds")
}

fn finished_dict(outcome: &Outcome) -> HashMap<String, OwnedVariant> {
    let mut d = HashMap::from([
        ("state".to_owned(), owned_str(outcome.state.as_str())),
        (
            "prompt_tokens".to_owned(),
            OwnedVariant::from(outcome.usage.prompt_tokens),
        ),
        (
            "completion_tokens".to_owned(),
            OwnedVariant::from(outcome.usage.completion_tokens),
        ),
        ("charged".to_owned(), OwnedVariant::from(outcome.charged)),
        ("endpoint".to_owned(), owned_str(&outcome.endpoint)),
        ("model".to_owned(), owned_str(&outcome.model)),
    ]);
    if let Some((name, message)) = &outcome.error {
        d.insert("error".to_owned(), owned_str(name.as_str()));
        d.insert("message".to_owned(), owned_str(message));
    }
    d
}

fn log_outcome(what: &str, caller: &Caller, o: &Outcome) {
    tracing::info!(
        request = what,
        app = %caller.app,
        state = o.state.as_str(),
        prompt_tokens = o.usage.prompt_tokens,
        completion_tokens = o.usage.completion_tokens,
        charged = o.charged,
        endpoint = %o.endpoint,
        "request ended"
    );
}

/// A future that resolves once `sender` has left the bus (at once if it already has).
async fn caller_gone(
    connection: &Connection,
    sender: &str,
) -> Result<impl std::future::Future<Output = ()> + use<>, DaemonError> {
    use futures_util::StreamExt as _;
    let dbus = zbus::fdo::DBusProxy::new(connection).await?;
    let mut changes = dbus.receive_name_owner_changed_with_args(&[(0, sender)]).await?;
    let name = zbus::names::BusName::try_from(sender.to_owned()).map_err(|e| DaemonError::Failed(e.to_string()))?;
    let present = dbus.name_has_owner(name).await?;
    Ok(async move {
        if !present {
            return;
        }
        while let Some(change) = changes.next().await {
            if change.args().is_ok_and(|a| a.new_owner().is_none()) {
                return;
            }
        }
    })
}

/// Resolves when the app closes its end of the stream socket.
async fn peer_closed(mut read: OwnedReadHalf) {
    let mut buf = [0u8; 256];
    // Apps have nothing to send; whatever they do send is read and dropped.
    while let Ok(n) = read.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Writes events to the app's stream socket and keeps the request's counters current.
struct SocketSink {
    write: OwnedWriteHalf,
    progress: Progress,
    /// How long a write may wait for the app to read.
    stall: Duration,
}

impl EventSink for SocketSink {
    fn dispatched(&mut self) {
        self.progress.streaming();
    }

    fn rerouted(&mut self, route: &crate::router::Route) {
        self.progress.rerouted(route);
    }

    async fn send(&mut self, event: &StreamEvent) -> Result<(), SinkClosed> {
        if matches!(event, StreamEvent::Delta { .. }) {
            self.progress.delta();
        }
        match tokio::time::timeout(self.stall, self.write.write_all(event.to_line().as_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SinkClosed("the app closed its stream")),
            Err(_) => Err(SinkClosed("the app stopped reading its stream")),
        }
    }
}

/// Collects an `Ask` answer.
struct TextSink(String);

impl EventSink for TextSink {
    async fn send(&mut self, event: &StreamEvent) -> Result<(), SinkClosed> {
        if let StreamEvent::Delta { text } = event {
            if self.0.len() + text.len() > ASK_MAX_BYTES {
                return Err(SinkClosed("the answer is too long for Ask; use Chat"));
            }
            self.0.push_str(text);
        }
        Ok(())
    }
}
