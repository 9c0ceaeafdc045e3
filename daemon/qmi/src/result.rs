//! The result TLV 0x02 every response carries, and the QMI protocol error codes.

use std::fmt;

use crate::{DecodeError, tlv};

/// The id of the result TLV.
pub const RESULT_TLV: u8 = 0x02;

const STATUS_SUCCESS: u16 = 0;
const STATUS_FAILURE: u16 = 1;

/// Declares the error codes once, so names, numbers and both conversions cannot drift apart.
macro_rules! protocol_errors {
    ($($name:ident = $code:literal,)*) => {
        /// A QMI protocol error code (libqmi's `QmiProtocolError` numbering).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProtocolError {
            $($name,)*
            /// A code this codec has no name for.
            Other(u16),
        }

        impl ProtocolError {
            pub const fn from_code(code: u16) -> Self {
                match code {
                    $($code => Self::$name,)*
                    other => Self::Other(other),
                }
            }

            pub const fn code(self) -> u16 {
                match self {
                    $(Self::$name => $code,)*
                    Self::Other(code) => code,
                }
            }

            /// The name libqmi prints, e.g. `InvalidClientId`.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some(stringify!($name)),)*
                    Self::Other(_) => None,
                }
            }
        }
    };
}

protocol_errors! {
    None = 0,
    MalformedMessage = 1,
    NoMemory = 2,
    Internal = 3,
    Aborted = 4,
    ClientIdsExhausted = 5,
    UnabortableTransaction = 6,
    InvalidClientId = 7,
    NoThresholdsProvided = 8,
    InvalidHandle = 9,
    InvalidProfile = 10,
    InvalidPinId = 11,
    IncorrectPin = 12,
    NoNetworkFound = 13,
    CallFailed = 14,
    OutOfCall = 15,
    NotProvisioned = 16,
    MissingArgument = 17,
    ArgumentTooLong = 19,
    InvalidTransactionId = 22,
    DeviceInUse = 23,
    NetworkUnsupported = 24,
    DeviceUnsupported = 25,
    NoEffect = 26,
    NoFreeProfile = 27,
    InvalidPdpType = 28,
    InvalidTechnologyPreference = 29,
    InvalidProfileType = 30,
    InvalidServiceType = 31,
    InvalidRegisterAction = 32,
    InvalidPsAttachAction = 33,
    AuthenticationFailed = 34,
    PinBlocked = 35,
    PinAlwaysBlocked = 36,
    UimUninitialized = 37,
    InvalidDataFormat = 45,
    GeneralError = 46,
    UnknownError = 47,
    InvalidArgument = 48,
    InvalidIndex = 49,
    NoEntry = 50,
    DeviceStorageFull = 51,
    DeviceNotReady = 52,
    NetworkNotReady = 53,
    InvalidTransition = 60,
    SessionInactive = 65,
    SessionInvalid = 66,
    SessionOwnership = 67,
    InsufficientResources = 68,
    Disabled = 69,
    InvalidOperation = 70,
    InvalidQmiCommand = 71,
    InformationUnavailable = 74,
    AccessDenied = 82,
    HardwareRestricted = 83,
    IncompatibleState = 90,
    NoRadio = 93,
    NotSupported = 94,
    NoSubscription = 95,
    NoSim = 102,
    DeviceMemoryError = 114,
    NoPermission = 115,
    OperationInProgress = 118,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "QMI error {name} ({})", self.code()),
            None => write!(f, "QMI error {}", self.code()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The outcome a response reports in its result TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QmiResult {
    Success,
    Failure(ProtocolError),
}

impl QmiResult {
    const MESSAGE: &'static str = "a QMI response";

    /// Reads the result TLV of a response's TLV section.
    pub fn decode(tlvs: &[u8]) -> Result<Self, DecodeError> {
        let value = tlv::require(tlvs, RESULT_TLV, Self::MESSAGE)?;
        let [s0, s1, e0, e1] = tlv::fixed::<4>(value, RESULT_TLV, Self::MESSAGE, "4")?;
        // Like libqmi, only the status decides; the error code merely explains a failure.
        Ok(match u16::from_le_bytes([s0, s1]) {
            STATUS_SUCCESS => Self::Success,
            _ => Self::Failure(ProtocolError::from_code(u16::from_le_bytes([e0, e1]))),
        })
    }

    /// Appends the result TLV; responses write it first, as modems do.
    pub fn write(self, out: &mut tlv::Writer) {
        let (status, error) = match self {
            Self::Success => (STATUS_SUCCESS, ProtocolError::None),
            Self::Failure(error) => (STATUS_FAILURE, error),
        };
        let [s0, s1] = status.to_le_bytes();
        let [e0, e1] = error.code().to_le_bytes();
        out.put_fixed(RESULT_TLV, &[s0, s1, e0, e1]);
    }

    pub fn into_result(self) -> Result<(), ProtocolError> {
        match self {
            Self::Success => Ok(()),
            Self::Failure(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=200 {
            assert_eq!(ProtocolError::from_code(code).code(), code);
        }
        assert_eq!(ProtocolError::from_code(7), ProtocolError::InvalidClientId);
        assert_eq!(ProtocolError::from_code(71), ProtocolError::InvalidQmiCommand);
        assert_eq!(
            ProtocolError::InvalidClientId.to_string(),
            "QMI error InvalidClientId (7)"
        );
        assert_eq!(ProtocolError::Other(999).to_string(), "QMI error 999");
    }

    #[test]
    fn result_tlv() {
        let mut w = tlv::Writer::new();
        QmiResult::Failure(ProtocolError::ClientIdsExhausted).write(&mut w);
        assert_eq!(w.as_bytes(), [0x02, 4, 0, 1, 0, 5, 0]);
        assert_eq!(
            QmiResult::decode(w.as_bytes()),
            Ok(QmiResult::Failure(ProtocolError::ClientIdsExhausted))
        );
        assert_eq!(QmiResult::decode(&[0x02, 4, 0, 0, 0, 0, 0]), Ok(QmiResult::Success));
        assert!(matches!(
            QmiResult::decode(&[0x02, 3, 0, 0, 0, 0]),
            Err(DecodeError::TlvSize { actual: 3, .. })
        ));
        assert!(matches!(
            QmiResult::decode(&[]),
            Err(DecodeError::MissingTlv { tlv: 0x02, .. })
        ));
    }
}
