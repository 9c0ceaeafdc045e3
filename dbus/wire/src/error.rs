//! The daemon's D-Bus error names.

use std::fmt;

/// A namespaced D-Bus error of the daemon (`org.aiesim.AiEsim1.Error.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorName {
    BudgetExceeded,
    Unauthorized,
    InvalidArgument,
    NoEndpoint,
    UpstreamFailed,
    Cancelled,
    ModemUnavailable,
    EsimError,
    /// A per-app or per-request bound was reached (requests in flight, live request objects,
    /// answer size, deadline).
    LimitExceeded,
    /// The app's tokens-per-minute rate is used up for now; the message says when to retry.
    RateLimited,
    /// A fault inside the daemon that is none of the above.
    Failed,
}

impl ErrorName {
    pub const ALL: [Self; 11] = [
        Self::BudgetExceeded,
        Self::Unauthorized,
        Self::InvalidArgument,
        Self::NoEndpoint,
        Self::UpstreamFailed,
        Self::Cancelled,
        Self::ModemUnavailable,
        Self::EsimError,
        Self::LimitExceeded,
        Self::RateLimited,
        Self::Failed,
    ];

    /// The full D-Bus error name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BudgetExceeded => "org.aiesim.AiEsim1.Error.BudgetExceeded",
            Self::Unauthorized => "org.aiesim.AiEsim1.Error.Unauthorized",
            Self::InvalidArgument => "org.aiesim.AiEsim1.Error.InvalidArgument",
            Self::NoEndpoint => "org.aiesim.AiEsim1.Error.NoEndpoint",
            Self::UpstreamFailed => "org.aiesim.AiEsim1.Error.UpstreamFailed",
            Self::Cancelled => "org.aiesim.AiEsim1.Error.Cancelled",
            Self::ModemUnavailable => "org.aiesim.AiEsim1.Error.ModemUnavailable",
            Self::EsimError => "org.aiesim.AiEsim1.Error.EsimError",
            Self::LimitExceeded => "org.aiesim.AiEsim1.Error.LimitExceeded",
            Self::RateLimited => "org.aiesim.AiEsim1.Error.RateLimited",
            Self::Failed => "org.aiesim.AiEsim1.Error.Failed",
        }
    }

    /// Parses a full D-Bus error name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in ErrorName::ALL {
            assert_eq!(ErrorName::from_name(e.as_str()), Some(e));
        }
        assert_eq!(ErrorName::from_name("org.aiesim.AiEsim1.Error.Nope"), None);
    }
}
