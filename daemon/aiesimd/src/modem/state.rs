//! What the daemon knows of its modem at any moment: one snapshot, published on a watch channel
//! by the session and translated into D-Bus properties by the front end.

use std::net::Ipv4Addr;

use super::Protocol;

/// Whether the modem can be used right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Availability {
    /// No control port was found (or none is configured).
    #[default]
    Absent,
    /// A port was found and the session is being set up.
    Opening,
    /// The session is up: the modem answers.
    Ready,
    /// The session broke (unplug, reset, hang); the daemon retries on its own.
    Unavailable,
}

impl Availability {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Opening => "opening",
            Self::Ready => "ready",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What the modem says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemInfo {
    pub imei: String,
    pub manufacturer: String,
    pub model: String,
    pub revision: String,
}

/// The SIM / eUICC as the modem sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SimState {
    #[default]
    Unknown,
    Absent,
    /// Present, not (yet) usable: initialising, locked or faulty.
    NotReady,
    Ready,
    /// An eUICC without an enabled profile.
    NoProfile,
    Error,
}

impl SimState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Absent => "absent",
            Self::NotReady => "not-ready",
            Self::Ready => "ready",
            Self::NoProfile => "no-profile",
            Self::Error => "error",
        }
    }
}

/// Registration with the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Registration {
    #[default]
    Unknown,
    NotRegistered,
    Searching,
    Home,
    Roaming,
    Denied,
}

impl Registration {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::NotRegistered => "not-registered",
            Self::Searching => "searching",
            Self::Home => "home",
            Self::Roaming => "roaming",
            Self::Denied => "denied",
        }
    }

    pub const fn is_registered(self) -> bool {
        matches!(self, Self::Home | Self::Roaming)
    }
}

/// Signal as last reported; `None` fields were not reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signal {
    pub rssi_dbm: Option<i16>,
    pub rsrp_dbm: Option<i16>,
    pub rsrq_db: Option<i16>,
    pub snr_db: Option<f64>,
}

/// The smallest move of a signal figure worth telling apps. Radio signal wanders by a dB or two
/// all the time, a level sitting on one of the modem's reporting thresholds is reported every
/// second, and each change published wakes every listener on the bus.
pub const SIGNAL_STEP_DB: f64 = 3.0;

impl Signal {
    /// Whether this report differs from the `published` one by enough to publish it: a figure
    /// appeared or went, or one moved by [`SIGNAL_STEP_DB`] or more.
    pub fn differs_enough(&self, published: &Self) -> bool {
        let moved = |now: Option<f64>, then: Option<f64>| match (now, then) {
            (Some(now), Some(then)) => (now - then).abs() >= SIGNAL_STEP_DB,
            (None, None) => false,
            _ => true,
        };
        let db = |v: Option<i16>| v.map(f64::from);
        moved(db(self.rssi_dbm), db(published.rssi_dbm))
            || moved(db(self.rsrp_dbm), db(published.rsrp_dbm))
            || moved(db(self.rsrq_db), db(published.rsrq_db))
            || moved(self.snr_db, published.snr_db)
    }

    /// 0–100 from RSSI, the scale phones show: -113 dBm is 0, -51 dBm and above is 100.
    pub fn quality(&self) -> u32 {
        self.rssi_dbm.map_or(0, |rssi| {
            let clamped = i32::from(rssi).clamp(-113, -51);
            u32::try_from((clamped + 113) * 100 / 62).unwrap_or(0)
        })
    }
}

/// The data session (one IPv4 bearer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataSession {
    #[default]
    Disconnected,
    Connecting,
    Connected(IpSettings),
}

impl DataSession {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected(_) => "connected",
        }
    }
}

/// What the network assigned to the data session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSettings {
    pub address: Option<Ipv4Addr>,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u32>,
}

/// The whole picture, as the front end shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModemState {
    pub availability: Availability,
    /// The control port in use (or last used), e.g. `/dev/cdc-wdm0`.
    pub device: String,
    pub protocol: Option<Protocol>,
    /// The modem's network interface (raw IP), e.g. `wwan0`; empty when unknown.
    pub interface: String,
    pub info: ModemInfo,
    pub sim: SimState,
    pub signal: Signal,
    pub registration: Registration,
    /// The operator's name or MCC-MNC, when registered.
    pub operator: String,
    pub data: DataSession,
    /// The uplink rate the modem reports (bit/s): QMI's current channel TX rate, MBIM's
    /// packet-service uplink speed; `None` until first reported (a report of 0 keeps the last).
    pub uplink_bps: Option<u64>,
    /// Why the modem is not ready, in words; empty when it is.
    pub last_error: String,
}

/// Sets `slot` to the reported `signal` when it [differs enough](Signal::differs_enough); true
/// when that changed it (for `watch::Sender::send_if_modified`).
pub(super) fn replace_signal(slot: &mut Signal, signal: Signal) -> bool {
    signal.differs_enough(slot) && {
        *slot = signal;
        true
    }
}

/// Sets `slot` to `value`; true when that changed it (for `watch::Sender::send_if_modified`).
pub(super) fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lte(rssi: i16, rsrp: i16, snr: f64) -> Signal {
        Signal {
            rssi_dbm: Some(rssi),
            rsrp_dbm: Some(rsrp),
            rsrq_db: Some(-10),
            snr_db: Some(snr),
        }
    }

    #[test]
    fn a_signal_wandering_by_a_db_or_two_is_not_published_and_a_real_move_is() {
        let mut published = Signal::default();
        // The first report: figures appeared.
        assert!(replace_signal(&mut published, lte(-65, -90, 12.0)));
        // Flapping across a threshold, a dB either way, the other figures likewise: kept.
        for report in [lte(-66, -91, 11.0), lte(-65, -89, 13.5), lte(-67, -92, 10.5)] {
            assert!(!replace_signal(&mut published, report), "{report:?}");
        }
        assert_eq!(published, lte(-65, -90, 12.0));
        // Three dB on any figure is a move.
        assert!(replace_signal(&mut published, lte(-68, -90, 12.0)));
        assert!(replace_signal(&mut published, lte(-68, -87, 12.0)));
        assert!(replace_signal(&mut published, lte(-68, -87, 9.0)));
        // A figure that goes (RSSI only, as MBIM and GSM report) or comes back.
        let rssi_only = Signal {
            rssi_dbm: Some(-68),
            ..Signal::default()
        };
        assert!(replace_signal(&mut published, rssi_only));
        assert!(!replace_signal(&mut published, rssi_only));
        assert!(replace_signal(&mut published, Signal::default()));
        assert!(!replace_signal(&mut published, Signal::default()));
    }
}
