//! The errors the daemon replies with, named as `org.aiesim.AiEsim1.Error.*`.

use aiesim_dbus::{ErrorName, OptionsError};

use crate::{
    broker::{BrokerError, chain},
    identity::IdentityError,
};

/// A D-Bus error reply. Variant names are the last part of the error name; the string is the
/// human message.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.aiesim.AiEsim1.Error")]
pub enum DaemonError {
    #[zbus(error)]
    ZBus(zbus::Error),
    BudgetExceeded(String),
    Unauthorized(String),
    InvalidArgument(String),
    NoEndpoint(String),
    UpstreamFailed(String),
    Cancelled(String),
    ModemUnavailable(String),
    EsimError(String),
    LimitExceeded(String),
    RateLimited(String),
    Failed(String),
}

impl DaemonError {
    pub fn new(name: ErrorName, message: String) -> Self {
        match name {
            ErrorName::BudgetExceeded => Self::BudgetExceeded(message),
            ErrorName::Unauthorized => Self::Unauthorized(message),
            ErrorName::InvalidArgument => Self::InvalidArgument(message),
            ErrorName::NoEndpoint => Self::NoEndpoint(message),
            ErrorName::UpstreamFailed => Self::UpstreamFailed(message),
            ErrorName::Cancelled => Self::Cancelled(message),
            ErrorName::ModemUnavailable => Self::ModemUnavailable(message),
            ErrorName::EsimError => Self::EsimError(message),
            ErrorName::LimitExceeded => Self::LimitExceeded(message),
            ErrorName::RateLimited => Self::RateLimited(message),
            ErrorName::Failed => Self::Failed(message),
        }
    }
}

impl From<BrokerError> for DaemonError {
    fn from(e: BrokerError) -> Self {
        Self::new(e.name(), chain(&e))
    }
}

impl From<OptionsError> for DaemonError {
    fn from(e: OptionsError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<IdentityError> for DaemonError {
    fn from(e: IdentityError) -> Self {
        Self::Unauthorized(chain(&e))
    }
}

impl From<zbus::fdo::Error> for DaemonError {
    fn from(e: zbus::fdo::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<std::io::Error> for DaemonError {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.to_string())
    }
}
