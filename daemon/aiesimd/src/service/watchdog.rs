//! The systemd watchdog (`WatchdogSec=`): `WATCHDOG=1` goes out only while the main loop turns
//! and the daemon's own bus connection answers it, so a stuck daemon is restarted.
//!
//! The check is a `Peer.Ping` the daemon sends itself through the bus: it needs the runtime (the
//! daemon runs on one thread), the connection's reader and the bus daemon, and nothing that wakes
//! the radio.

use std::time::Duration;

use zbus::Connection;

/// The watchdog period systemd asked for, if it asked (`WATCHDOG_USEC`, `WATCHDOG_PID`).
pub fn period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|period| !period.is_zero())
}

/// Pets the watchdog twice per `period` for as long as the daemon runs and answers itself.
pub async fn run(connection: Connection, period: Duration) {
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
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
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
