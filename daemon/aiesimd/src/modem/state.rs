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

impl Signal {
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

/// Sets `slot` to `value`; true when that changed it (for `watch::Sender::send_if_modified`).
pub(super) fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}
