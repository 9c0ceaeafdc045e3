//! The modem: control-port transports and protocol clients.
//!
//! [`Modem::open`] opens the control port, allocates a DMS client id and reads the identity;
//! [`Modem::close`] gives the client ids back. `transport` owns the byte carriers and `qmi`
//! the QMI client; MBIM will sit beside them.

mod qmi;
mod transport;

use std::{path::Path, sync::Arc, time::Duration};

use aiesim_qmi::Service;

pub use self::{
    qmi::QmiError,
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

/// What the modem says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemInfo {
    pub imei: String,
    pub manufacturer: String,
    pub model: String,
    pub revision: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    #[error("the {} control protocol is not supported yet", .0.as_str())]
    Unsupported(Protocol),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the modem did not answer the {request} within {after:?}")]
    Timeout { request: &'static str, after: Duration },
    #[error("the modem's control channel is closed")]
    Disconnected(#[source] Option<Arc<TransportError>>),
    #[error(transparent)]
    Qmi(#[from] QmiError),
}

/// Tunables for [`Modem::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModemOptions {
    /// How long each request may wait for its answer before failing with
    /// [`ModemError::Timeout`].
    pub request_timeout: Duration,
}

impl Default for ModemOptions {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl ModemOptions {
    #[must_use]
    pub const fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// An open modem control channel.
pub struct Modem {
    info: ModemInfo,
    session: Session,
}

/// The protocol-specific state behind a [`Modem`].
enum Session {
    Qmi { client: qmi::QmiClient, dms: u8 },
}

impl Modem {
    /// Opens the control port and reads the modem's identity.
    pub async fn open(device: &Path, protocol: Protocol) -> Result<Self, ModemError> {
        Self::open_with(device, protocol, ModemOptions::default()).await
    }

    /// Like [`Modem::open`], with explicit [`ModemOptions`].
    pub async fn open_with(device: &Path, protocol: Protocol, options: ModemOptions) -> Result<Self, ModemError> {
        let ModemOptions { request_timeout } = options;
        match protocol {
            Protocol::Qmi => {}
            Protocol::Mbim => return Err(ModemError::Unsupported(protocol)),
        }
        let transport = CharDevice::open_qmux(device)?;
        let client = qmi::QmiClient::spawn(transport, request_timeout);
        let dms = client.allocate(Service::DMS).await?;
        let info = match qmi::read_info(&client, dms).await {
            Ok(info) => info,
            Err(err) => {
                // A silent or gone modem would only make the caller wait out one more timeout.
                let answering = !matches!(err, ModemError::Timeout { .. } | ModemError::Disconnected(_));
                if answering {
                    if let Err(release) = client.release(Service::DMS, dms).await {
                        tracing::debug!(error = %release, "could not release the DMS client id");
                    }
                }
                client.shutdown().await;
                return Err(err);
            }
        };
        tracing::info!(
            device = %device.display(),
            imei = %info.imei,
            manufacturer = %info.manufacturer,
            model = %info.model,
            revision = %info.revision,
            "modem opened"
        );
        Ok(Self {
            info,
            session: Session::Qmi { client, dms },
        })
    }

    pub fn info(&self) -> &ModemInfo {
        &self.info
    }

    /// Releases the client ids and closes the port. Dropping a `Modem` closes the port too,
    /// but leaves its client ids allocated on the modem.
    pub async fn close(self) -> Result<(), ModemError> {
        let Self { info: _, session } = self;
        match session {
            Session::Qmi { client, dms } => {
                let released = client.release(Service::DMS, dms).await;
                client.shutdown().await;
                released
            }
        }
    }
}
