//! One `mbim-proxy` client: OPEN, CLOSE and the `PROXY_CONTROL` configuration answered here (the
//! daemon keeps the device open for everyone), its commands forwarded over the daemon's session
//! with its own transaction ids restored, and the notifications it subscribed to passed on.
//!
//! A client's `DEVICE_SERVICE_SUBSCRIBE_LIST` is merged with the daemon's and every other
//! client's before it reaches the modem, so no client can switch off what another one needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use aiesim_mbim::{
    Body, Command, CommandDone, ControlMessage, DEFAULT_MAX_CONTROL_TRANSFER, Indication, Message, ProtocolError,
    Reassembler, Splitter, Status, Uuid, basic_connect as bc, proxy_control,
};
use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
    sync::broadcast,
};

use super::{MbimClient, MbimError, client::Event};
use crate::modem::ModemError;

/// Every party's notification wishes, keyed by who holds them (0 is the daemon).
#[derive(Debug, Default)]
pub struct Subscriptions {
    by_party: Mutex<BTreeMap<u64, BTreeMap<Uuid, BTreeSet<u32>>>>,
    next_party: std::sync::atomic::AtomicU64,
}

impl Subscriptions {
    pub fn new(daemon: &[bc::EventEntry]) -> Arc<Self> {
        let this = Self::default();
        this.next_party.store(1, std::sync::atomic::Ordering::Relaxed);
        this.set(0, daemon);
        Arc::new(this)
    }

    fn join(&self) -> u64 {
        self.next_party.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, party: u64, events: &[bc::EventEntry]) {
        let wishes = events
            .iter()
            .map(|entry| (entry.service, entry.cids.iter().copied().collect()))
            .collect();
        self.lock().insert(party, wishes);
    }

    fn leave(&self, party: u64) {
        self.lock().remove(&party);
    }

    fn wants(&self, party: u64, indication: &Indication) -> bool {
        match self.lock().get(&party) {
            Some(wishes) => wishes
                .get(&indication.service)
                .is_some_and(|cids| cids.contains(&indication.cid)),
            // A client that chose nothing hears what a modem sends by default: BASIC_CONNECT's.
            None => indication.service == Uuid::BASIC_CONNECT,
        }
    }

    /// The union of everyone's wishes, as the modem is to be told.
    pub fn merged(&self) -> Vec<bc::EventEntry> {
        let mut union: BTreeMap<Uuid, BTreeSet<u32>> = BTreeMap::new();
        for wishes in self.lock().values() {
            for (service, cids) in wishes {
                union.entry(*service).or_default().extend(cids);
            }
        }
        union
            .into_iter()
            .map(|(service, cids)| bc::EventEntry {
                service,
                cids: cids.into_iter().collect(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, BTreeMap<Uuid, BTreeSet<u32>>>> {
        // A panic while holding it left plain data behind, still usable.
        self.by_party.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serves one connected client until it disconnects or the session ends.
pub async fn serve(mut stream: UnixStream, client: Arc<MbimClient>, subscriptions: Arc<Subscriptions>) {
    let party = subscriptions.join();
    if let Err(err) = serve_inner(&mut stream, &client, &subscriptions, party).await {
        tracing::debug!(%err, "mbim-proxy client gone");
    }
    let subscribed = subscriptions.lock().contains_key(&party);
    subscriptions.leave(party);
    if subscribed {
        push_subscriptions(&client, &subscriptions).await;
    }
}

/// Tells the modem the merged subscription list.
pub async fn push_subscriptions(client: &MbimClient, subscriptions: &Subscriptions) {
    let set = bc::DeviceServiceSubscribeListSet {
        events: subscriptions.merged(),
    };
    if let Err(error) = client.call(&set).await {
        tracing::warn!(error = %crate::broker::chain(&error), "could not update the modem's notification list");
    }
}

async fn serve_inner(
    stream: &mut UnixStream,
    client: &MbimClient,
    subscriptions: &Subscriptions,
    party: u64,
) -> std::io::Result<()> {
    let mut splitter = Splitter::new();
    let mut reassembler = Reassembler::new();
    let mut events = client.events();
    let mut in_flight = FuturesUnordered::new();
    let mut configured = false;
    let mut buf = [0; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buf[..splitter.room().min(4096)]) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                splitter.push(&buf[..n]);
                while let Some(transfer) = splitter.next_transfer() {
                    let message = match transfer.map_err(|e| e.to_string()).and_then(|t| reassembler.push(&t).map_err(|e| e.to_string())) {
                        Ok(Some(message)) => message,
                        Ok(None) => continue,
                        Err(err) => {
                            tracing::debug!(%err, "mbim-proxy client sent a bad transfer");
                            continue;
                        }
                    };
                    let tid = message.transaction_id;
                    match local_answer(message, &mut configured) {
                        Local::Answer(answer) => write(stream, answer).await?,
                        Local::Subscribe(command) => {
                            let answer = subscribe(client, subscriptions, party, &command).await;
                            write(stream, answer.map_or_else(
                                |status| done(tid, &command, status, Vec::new()),
                                |info| done(tid, &command, Status::None, info),
                            )).await?;
                        }
                        Local::Forward(command) => {
                            in_flight.push(async move { (tid, client.command_raw(command, "proxied MBIM command").await) });
                        }
                        Local::Ignore => tracing::debug!("ignoring a non-host message from an mbim-proxy client"),
                    }
                }
            }
            Some((tid, answered)) = in_flight.next(), if !in_flight.is_empty() => {
                let body = match answered {
                    Ok(done) => Body::CommandDone(done),
                    Err(ModemError::Mbim(MbimError::Function { error, .. })) => Body::FunctionError(error),
                    Err(ModemError::Disconnected(_)) => return Ok(()),
                    Err(error) => {
                        tracing::debug!(error = %crate::broker::chain(&error), "a proxied command failed");
                        Body::FunctionError(ProtocolError::Unknown)
                    }
                };
                write(stream, ControlMessage::new(tid, body)).await?;
            }
            event = events.recv() => match event {
                Ok(Event::Indication(indication)) if configured && subscriptions.wants(party, &indication) => {
                    write(stream, ControlMessage::new(0, Body::IndicateStatus((*indication).clone()))).await?;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "an mbim-proxy client missed notifications");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// What the proxy does with one message from its client.
enum Local {
    Answer(ControlMessage),
    Subscribe(Command),
    Forward(Command),
    Ignore,
}

/// OPEN, CLOSE and the `PROXY_CONTROL` handshake are answered here; no command goes further
/// before the handshake; a subscription list is merged, not forwarded.
fn local_answer(message: ControlMessage, configured: &mut bool) -> Local {
    let tid = message.transaction_id;
    match message.body {
        Body::Open { .. } => Local::Answer(ControlMessage::new(tid, Body::OpenDone(Status::None))),
        Body::Close => Local::Answer(ControlMessage::new(tid, Body::CloseDone(Status::None))),
        Body::Command(command) if command.service == Uuid::PROXY_CONTROL => {
            let status = configure(&command);
            *configured |= status.is_success();
            Local::Answer(done(tid, &command, status, Vec::new()))
        }
        Body::Command(_) if !*configured => {
            Local::Answer(ControlMessage::new(tid, Body::FunctionError(ProtocolError::NotOpened)))
        }
        Body::Command(command)
            if command.service == Uuid::BASIC_CONNECT && command.cid == bc::DEVICE_SERVICE_SUBSCRIBE_LIST =>
        {
            Local::Subscribe(command)
        }
        Body::Command(command) => Local::Forward(command),
        _ => Local::Ignore,
    }
}

/// A client's bytes through the proxy's own rules, a second client and the daemon holding
/// wishes beside it: what the `mbim_proxy` fuzz target drives. Panics if a command would reach
/// the modem before the handshake, if the merged list lost another party's wish, or if an
/// answer the proxy makes cannot be sent.
pub fn replay_for_fuzzing(bytes: &[u8]) {
    let daemon = [bc::EventEntry {
        service: Uuid::BASIC_CONNECT,
        cids: vec![bc::SUBSCRIBER_READY_STATUS, bc::PACKET_SERVICE],
    }];
    let subscriptions = Subscriptions::new(&daemon);
    let (other, party) = (subscriptions.join(), subscriptions.join());
    subscriptions.set(
        other,
        &[bc::EventEntry {
            service: Uuid::MS_UICC_LOW_LEVEL_ACCESS,
            cids: vec![1],
        }],
    );
    let mut splitter = Splitter::new();
    let mut reassembler = Reassembler::new();
    let mut configured = false;
    let mut rest = bytes;
    loop {
        let taken = splitter.push(rest);
        rest = &rest[taken..];
        while let Some(transfer) = splitter.next_transfer() {
            let Ok(Ok(Some(message))) = transfer.map(|t| reassembler.push(&t)) else {
                continue;
            };
            let tid = message.transaction_id;
            let answer = match local_answer(message, &mut configured) {
                Local::Answer(answer) => answer,
                Local::Subscribe(command) => {
                    assert!(configured, "subscribed before the handshake");
                    let answer = record_wishes(&subscriptions, party, &command);
                    let merged = subscriptions.merged();
                    let has =
                        |service: Uuid, cid: u32| merged.iter().any(|e| e.service == service && e.cids.contains(&cid));
                    assert!(
                        has(Uuid::BASIC_CONNECT, bc::PACKET_SERVICE),
                        "the daemon's wish was lost"
                    );
                    assert!(has(Uuid::MS_UICC_LOW_LEVEL_ACCESS, 1), "another client's wish was lost");
                    answer.map_or_else(
                        |status| done(tid, &command, status, Vec::new()),
                        |info| done(tid, &command, Status::None, info),
                    )
                }
                Local::Forward(command) => {
                    assert!(configured, "forwarded before the handshake");
                    assert_ne!(command.service, Uuid::PROXY_CONTROL);
                    continue;
                }
                Local::Ignore => continue,
            };
            answer
                .encode_fragments(DEFAULT_MAX_CONTROL_TRANSFER)
                .expect("a local answer encodes");
        }
        if taken == 0 {
            break;
        }
    }
}

/// The answer to `PROXY_CONTROL`: only a `CONFIGURATION` set is understood; any device path is
/// this modem, the one the daemon serves.
fn configure(command: &Command) -> Status {
    match proxy_control::ConfigurationSet::from_command(command) {
        Ok(config) => {
            tracing::debug!(path = %config.device_path, "mbim-proxy client opened the modem");
            Status::None
        }
        Err(_) => Status::InvalidParameters,
    }
}

/// Records the client's wishes, tells the modem the union, and echoes the client's own list.
async fn subscribe(
    client: &MbimClient,
    subscriptions: &Subscriptions,
    party: u64,
    command: &Command,
) -> Result<Vec<u8>, Status> {
    let answer = record_wishes(subscriptions, party, command)?;
    push_subscriptions(client, subscriptions).await;
    Ok(answer)
}

/// Records the client's wishes and makes the echo of its own list.
fn record_wishes(subscriptions: &Subscriptions, party: u64, command: &Command) -> Result<Vec<u8>, Status> {
    let set = bc::DeviceServiceSubscribeListSet::from_command(command).map_err(|_| Status::InvalidParameters)?;
    subscriptions.set(party, &set.events);
    bc::DeviceServiceSubscribeListResponse { events: set.events }
        .to_info()
        .map_err(|_| Status::Failure)
}

fn done(tid: u32, command: &Command, status: Status, info: Vec<u8>) -> ControlMessage {
    ControlMessage::new(
        tid,
        Body::CommandDone(CommandDone {
            service: command.service,
            cid: command.cid,
            status,
            info,
        }),
    )
}

async fn write(stream: &mut UnixStream, message: ControlMessage) -> std::io::Result<()> {
    match message.encode_fragments(DEFAULT_MAX_CONTROL_TRANSFER) {
        Ok(fragments) => {
            for fragment in fragments {
                stream.write_all(&fragment).await?;
            }
            Ok(())
        }
        Err(err) => {
            tracing::warn!(%err, "could not encode a message for an mbim-proxy client");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: Uuid, cids: &[u32]) -> bc::EventEntry {
        bc::EventEntry {
            service,
            cids: cids.to_vec(),
        }
    }

    #[test]
    fn wishes_are_merged_and_forgotten_per_party() {
        let subscriptions = Subscriptions::new(&[entry(Uuid::BASIC_CONNECT, &[2, 11])]);
        let a = subscriptions.join();
        let b = subscriptions.join();
        subscriptions.set(a, &[entry(Uuid::BASIC_CONNECT, &[9]), entry(Uuid::QMI, &[1])]);
        subscriptions.set(b, &[entry(Uuid::BASIC_CONNECT, &[11])]);
        let merged: BTreeMap<Uuid, Vec<u32>> = subscriptions
            .merged()
            .into_iter()
            .map(|e| (e.service, e.cids))
            .collect();
        assert_eq!(
            merged,
            BTreeMap::from([(Uuid::BASIC_CONNECT, vec![2, 9, 11]), (Uuid::QMI, vec![1])])
        );
        let signal = Indication {
            service: Uuid::BASIC_CONNECT,
            cid: 11,
            info: vec![],
        };
        assert!(subscriptions.wants(b, &signal));
        assert!(!subscriptions.wants(a, &signal), "a asked for 9 only");
        subscriptions.leave(a);
        assert_eq!(subscriptions.merged(), [entry(Uuid::BASIC_CONNECT, &[2, 11])]);
        let fresh = subscriptions.join();
        assert!(subscriptions.wants(fresh, &signal), "no list: BASIC_CONNECT by default");
    }
}
