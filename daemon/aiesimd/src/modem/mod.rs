//! The modem: one live session per control port, over QMI or MBIM, for the daemon's lifetime.
//!
//! [`Modem::spawn`] starts the session task, which finds the port (`discovery`), opens it
//! (`transport`), speaks the protocol (`qmi`, `mbim`), publishes what it learns as one
//! [`ModemState`] on a watch channel, and reopens the port after an unplug, a reset or a hang.
//! Callers act on the modem (data session, UICC channels) through the [`Modem`] handle; while
//! there is no usable modem they get [`ModemError::Unavailable`] at once, never a hang.

mod discovery;
mod mbim;
mod proxy;
mod qmi;
mod session;
mod state;
mod transport;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use self::{
    discovery::{Port, Roots, discover},
    mbim::{MbimError, proxy_replay_for_fuzzing as mbim_proxy_replay_for_fuzzing},
    proxy::{ProxyError, ProxyOptions},
    qmi::{QmiError, proxy_replay_for_fuzzing as qmi_proxy_replay_for_fuzzing},
    session::Modem,
    state::{Availability, DataSession, IpSettings, ModemInfo, ModemState, Registration, Signal, SimState},
    transport::{CharDevice, Transport, TransportError},
};

/// How long a request may wait for its answer unless [`ModemOptions`] say otherwise.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The control protocol spoken on a modem's control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Qmi,
    Mbim,
}

impl Protocol {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Qmi => "qmi",
            Self::Mbim => "mbim",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the modem did not answer the {request} within {after:?}")]
    Timeout { request: &'static str, after: Duration },
    #[error("the modem's control channel is closed")]
    Disconnected(#[source] Option<Arc<TransportError>>),
    #[error(transparent)]
    Qmi(#[from] QmiError),
    #[error(transparent)]
    Mbim(#[from] MbimError),
    #[error("the modem is not available ({0})")]
    Unavailable(String),
    #[error("the modem has no {0} service")]
    MissingService(&'static str),
    #[error("the modem session has stopped")]
    Stopped,
    #[error("the modem reset and released every client id")]
    Reset,
    #[error("{}", aiesim_apdu::CardError::from_status_word(aiesim_apdu::StatusWord(*.0)))]
    CardRefused(u16),
    #[error("the modem's {0} carries no answer")]
    MissingAnswer(&'static str),
}

/// Which control port to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first port sysfs shows (of the configured protocol, if one is).
    Auto,
    Path(PathBuf),
}

/// How the session finds and drives the modem.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModemOptions {
    pub device: DeviceChoice,
    /// `None`: whatever the port's driver says (a fixed path without sysfs entry: QMI).
    pub protocol: Option<Protocol>,
    /// The network interface to report when sysfs names none (e.g. a simulator's).
    pub interface: Option<String>,
    /// How long each request may wait for its answer before failing with
    /// [`ModemError::Timeout`].
    pub request_timeout: Duration,
    /// Bring the data session up once the modem is registered.
    pub connect: bool,
    /// The APN to connect with; empty lets the network choose.
    pub apn: String,
    pub roots: Roots,
    /// The `qmi-proxy` socket served while a QMI session is up; `None`: not shared.
    pub qmi_proxy: Option<ProxyOptions>,
    /// The `mbim-proxy` socket served while an MBIM session is up; `None`: not shared.
    pub mbim_proxy: Option<ProxyOptions>,
    /// MBIM's `MaxControlTransfer`; `None`: what the cdc-wdm node reports, or 4096.
    pub mbim_max_control_transfer: Option<usize>,
    /// The first retry after a failure waits this long, doubling up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for ModemOptions {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            protocol: None,
            interface: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect: false,
            apn: String::new(),
            roots: Roots::default(),
            qmi_proxy: None,
            mbim_proxy: None,
            mbim_max_control_transfer: None,
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
        }
    }
}

impl ModemOptions {
    /// Options for one fixed control port.
    #[must_use]
    pub fn for_device(path: impl Into<PathBuf>, protocol: Protocol) -> Self {
        Self {
            device: DeviceChoice::Path(path.into()),
            protocol: Some(protocol),
            ..Self::default()
        }
    }

    #[must_use]
    pub const fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    #[must_use]
    pub fn with_data_session(mut self, apn: impl Into<String>) -> Self {
        self.connect = true;
        self.apn = apn.into();
        self
    }

    #[must_use]
    pub fn with_interface(mut self, interface: impl Into<String>) -> Self {
        self.interface = Some(interface.into());
        self
    }
}

/// A logical channel opened on the UICC, with the answer to its SELECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub number: u8,
    /// The SELECT response (FCI) followed by SW1 SW2.
    pub select_response: Vec<u8>,
}
