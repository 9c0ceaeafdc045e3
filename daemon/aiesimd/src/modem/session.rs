//! The session's lifecycle: find the port, run the protocol on it, and start over when it
//! breaks, with a bounded backoff; answer callers with `Unavailable` whenever nothing runs.

use std::time::{Duration, Instant};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{
    Availability, Channel, DeviceChoice, ModemError, ModemOptions, ModemState, Port, Protocol, discover, mbim, qmi,
};

/// Calls queued for the session before callers wait for room.
const COMMAND_DEPTH: usize = 16;
/// A session that stayed up this long starts the next retry from the shortest backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// What callers ask of the session; each carries the channel its answer goes back on.
pub(super) enum Command {
    Connect {
        apn: Option<String>,
        reply: oneshot::Sender<Result<(), ModemError>>,
    },
    Disconnect {
        reply: oneshot::Sender<Result<(), ModemError>>,
    },
    OpenChannel {
        aid: Vec<u8>,
        reply: oneshot::Sender<Result<Channel, ModemError>>,
    },
    Transmit {
        channel: u8,
        apdu: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, ModemError>>,
    },
    CloseChannel {
        channel: u8,
        reply: oneshot::Sender<Result<(), ModemError>>,
    },
}

impl Command {
    /// Answers the caller with `error` (no session can serve the command).
    pub(super) fn refuse(self, error: impl Fn() -> ModemError) {
        match self {
            Self::Connect { reply, .. } | Self::Disconnect { reply } | Self::CloseChannel { reply, .. } => {
                drop(reply.send(Err(error())));
            }
            Self::OpenChannel { reply, .. } => drop(reply.send(Err(error()))),
            Self::Transmit { reply, .. } => drop(reply.send(Err(error()))),
        }
    }
}

/// What a protocol's session works with.
pub(super) struct Context<'a> {
    pub options: &'a ModemOptions,
    pub port: &'a Port,
    pub state: &'a watch::Sender<ModemState>,
    pub commands: &'a mut mpsc::Receiver<Command>,
    pub cancel: &'a CancellationToken,
}

/// The daemon's modem: a handle on the session task.
pub struct Modem {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ModemState>,
    cancel: CancellationToken,
    _task: JoinHandle<()>,
}

impl Modem {
    /// Starts the session; it runs until [`Modem::shutdown`]. Must be called within a runtime.
    pub fn spawn(options: ModemOptions) -> Self {
        let (commands, queue) = mpsc::channel(COMMAND_DEPTH);
        let (state_tx, state) = watch::channel(ModemState::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(options, state_tx, queue, cancel.clone()));
        Self {
            commands,
            state,
            cancel,
            _task: task,
        }
    }

    /// The modem's state now and every change to come.
    pub fn state(&self) -> watch::Receiver<ModemState> {
        self.state.clone()
    }

    /// Brings the data session up (on `apn`, or the configured one).
    pub async fn connect(&self, apn: Option<String>) -> Result<(), ModemError> {
        self.ask(|reply| Command::Connect { apn, reply }).await
    }

    /// Takes the data session down.
    pub async fn disconnect(&self) -> Result<(), ModemError> {
        self.ask(|reply| Command::Disconnect { reply }).await
    }

    /// Opens a logical channel on the UICC and selects the application `aid` on it.
    pub async fn open_channel(&self, aid: &[u8]) -> Result<Channel, ModemError> {
        let aid = aid.to_vec();
        self.ask(|reply| Command::OpenChannel { aid, reply }).await
    }

    /// Sends one command APDU on `channel`; the answer is the response data ‖ SW1 SW2.
    pub async fn transmit(&self, channel: u8, apdu: &[u8]) -> Result<Vec<u8>, ModemError> {
        let apdu = apdu.to_vec();
        self.ask(|reply| Command::Transmit { channel, apdu, reply }).await
    }

    pub async fn close_channel(&self, channel: u8) -> Result<(), ModemError> {
        self.ask(|reply| Command::CloseChannel { channel, reply }).await
    }

    /// Closes `channel` without waiting for the answer: for a card session dropped before it
    /// could close (its caller gave up), so no channel leaks.
    pub fn close_channel_detached(&self, channel: u8) {
        let (reply, _answer) = oneshot::channel();
        let command = Command::CloseChannel { channel, reply };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let commands = self.commands.clone();
            runtime.spawn(async move {
                let _ = commands.send(command).await;
            });
        } else {
            let _ = self.commands.try_send(command);
        }
    }

    /// Ends the session: the data session it started goes down and its client ids are
    /// released. Returns once the session task has finished.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        // The task holds the only receiver: the channel closes when the task is done.
        self.commands.closed().await;
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ModemError>>) -> Command,
    ) -> Result<T, ModemError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ModemError::Stopped)?;
        answer.await.map_err(|_| ModemError::Stopped)?
    }
}

impl Drop for Modem {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The port to use now, if there is one.
fn find(options: &ModemOptions) -> Option<Port> {
    match &options.device {
        DeviceChoice::Auto => discover(&options.roots, options.protocol).into_iter().next(),
        DeviceChoice::Path(path) => {
            // A fixed path may still be a sysfs-known node; then sysfs knows its protocol and netdev.
            let canonical = std::fs::canonicalize(path).ok()?;
            let known = discover(&options.roots, None)
                .into_iter()
                .find(|port| std::fs::canonicalize(&port.path).is_ok_and(|p| p == canonical));
            Some(Port {
                path: path.clone(),
                protocol: options
                    .protocol
                    .or(known.as_ref().map(|port| port.protocol))
                    .unwrap_or(Protocol::Qmi),
                interface: known.and_then(|port| port.interface),
            })
        }
    }
}

async fn supervise(
    options: ModemOptions,
    state: watch::Sender<ModemState>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    let mut backoff = options.retry_min;
    loop {
        let Some(mut port) = find(&options) else {
            state.send_if_modified(|s| {
                let absent = ModemState {
                    last_error: "no modem control port was found".into(),
                    ..ModemState::default()
                };
                let changed = *s != absent;
                *s = absent;
                changed
            });
            if idle(&mut commands, &cancel, backoff, "no modem is present").await {
                return;
            }
            backoff = (backoff * 2).min(options.retry_max);
            continue;
        };
        if port.interface.is_none() {
            port.interface.clone_from(&options.interface);
        }
        state.send_modify(|s| {
            *s = ModemState {
                availability: Availability::Opening,
                device: port.path.display().to_string(),
                protocol: Some(port.protocol),
                interface: port.interface.clone().unwrap_or_default(),
                ..ModemState::default()
            };
        });
        tracing::info!(device = %port.path.display(), protocol = port.protocol.as_str(), "opening the modem");
        let started = Instant::now();
        let context = Context {
            options: &options,
            port: &port,
            state: &state,
            commands: &mut commands,
            cancel: &cancel,
        };
        let result = match port.protocol {
            Protocol::Qmi => qmi::run(context).await,
            Protocol::Mbim => mbim::run(context).await,
        };
        let error = match result {
            Ok(()) => return,
            Err(error) => error,
        };
        let reason = crate::broker::chain(&error);
        tracing::warn!(device = %port.path.display(), error = %reason, "the modem session stopped; retrying");
        state.send_modify(|s| {
            s.availability = Availability::Unavailable;
            s.data = super::DataSession::Disconnected;
            s.last_error.clone_from(&reason);
        });
        if started.elapsed() >= STABLE_AFTER {
            backoff = options.retry_min;
        }
        if idle(&mut commands, &cancel, backoff, &reason).await {
            return;
        }
        backoff = (backoff * 2).min(options.retry_max);
    }
}

/// Runs `work` (a session's set-up) while refusing the commands that arrive meanwhile, so no
/// caller waits behind a modem that may never answer.
pub(super) async fn refusing<T>(commands: &mut mpsc::Receiver<Command>, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            Some(command) = commands.recv() => {
                command.refuse(|| ModemError::Unavailable("the modem session is still being set up".into()));
            }
        }
    }
}

/// Waits `pause` while refusing every command; true when the session is to end.
async fn idle(
    commands: &mut mpsc::Receiver<Command>,
    cancel: &CancellationToken,
    pause: Duration,
    reason: &str,
) -> bool {
    let until = tokio::time::sleep(pause);
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return true,
            () = &mut until => return false,
            command = commands.recv() => match command {
                Some(command) => command.refuse(|| ModemError::Unavailable(reason.to_owned())),
                None => return true,
            },
        }
    }
}
