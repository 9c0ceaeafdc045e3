//! The systemd watchdog (`WatchdogSec=`): `WATCHDOG=1` goes out only while the main loop turns
//! and the daemon's own bus connection answers it, so a stuck daemon is restarted.
//!
//! The check is a `Peer.Ping` the daemon sends itself through the bus: it needs the runtime (the
//! daemon runs on one thread), the connection's reader and the bus daemon, and nothing that wakes
//! the radio.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use zbus::Connection;

/// The watchdog period systemd asked for, if it asked (`WATCHDOG_USEC`, `WATCHDOG_PID`).
pub fn period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|period| !period.is_zero())
}

/// Pets the watchdog twice per `period` for as long as the daemon runs and answers itself; wakes
/// whoever waits on `petted` after each pet.
pub async fn run(connection: Connection, notifier: Arc<Notifier>, period: Duration, petted: Arc<Notify>) {
    let every = period / 2;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        ticks.tick().await;
        match tokio::time::timeout(every, ping_self(&connection)).await {
            Ok(Ok(())) => {
                if !healthy {
                    tracing::info!("the daemon answers itself again; petting the watchdog");
                    healthy = true;
                }
                notifier.send("WATCHDOG=1");
                petted.notify_waiters();
            }
            Ok(Err(error)) => {
                if healthy {
                    tracing::warn!(%error, "the daemon's own bus ping failed; not petting the watchdog");
                }
                healthy = false;
            }
            Err(_) => {
                if healthy {
                    tracing::warn!(after = ?every, "the daemon's own bus ping went unanswered; not petting the watchdog");
                }
                healthy = false;
            }
        }
    }
}

async fn ping_self(connection: &Connection) -> zbus::Result<()> {
    let me = connection
        .unique_name()
        .ok_or_else(|| zbus::Error::Failure("the connection has no unique name".into()))?
        .to_owned();
    connection
        .call_method(Some(me), "/", Some("org.freedesktop.DBus.Peer"), "Ping", &())
        .await
        .map(drop)
}

/// `NOTIFY_SOCKET`, written without ever blocking: a manager that does not read its socket
/// must not stall the daemon's one thread (a blocking send waits while the socket is full).
pub struct Notifier(std::os::unix::net::UnixDatagram);

impl Notifier {
    /// The service manager's socket, when the daemon runs under one.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("NOTIFY_SOCKET")?;
        Self::open()
            .inspect_err(|error| tracing::warn!(%error, "cannot reach the service manager's notify socket"))
            .ok()
    }

    fn open() -> std::io::Result<Self> {
        use std::os::linux::net::SocketAddrExt as _;
        let path = std::env::var_os("NOTIFY_SOCKET")
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "NOTIFY_SOCKET is not set"))?;
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let address = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?,
            None => std::os::unix::net::SocketAddr::from_pathname(&path)?,
        };
        socket.connect_addr(&address)?;
        Ok(Self(socket))
    }

    /// Sends one state line such as `READY=1`; a socket that takes nothing more loses it.
    pub fn send(&self, state: &str) {
        if let Err(error) = self.0.send(state.as_bytes()) {
            tracing::debug!(%error, state, "the service manager did not take a notification");
        }
    }
}
