//! The status codes COMMAND_DONE carries and the protocol errors of HOST_ERROR / FUNCTION_ERROR.

use std::fmt;

/// Declares a code enum once, so names, numbers, messages and both conversions cannot drift apart.
macro_rules! codes {
    ($(#[$doc:meta])* $enum:ident, $label:literal, $($name:ident = $code:literal => $text:literal,)*) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $enum {
            $($name,)*
            /// A code this codec has no name for.
            Other(u32),
        }

        impl $enum {
            pub const fn from_code(code: u32) -> Self {
                match code {
                    $($code => Self::$name,)*
                    other => Self::Other(other),
                }
            }

            pub const fn code(self) -> u32 {
                match self {
                    $(Self::$name => $code,)*
                    Self::Other(code) => code,
                }
            }

            /// The name libmbim uses, e.g. `NoDeviceSupport`.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some(stringify!($name)),)*
                    Self::Other(_) => None,
                }
            }

            /// What the code means, as a sentence fragment for logs and errors.
            pub const fn message(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                    Self::Other(_) => "an unknown code",
                }
            }
        }

        impl fmt::Display for $enum {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => write!(f, "{} {name} ({:#x}): {}", $label, self.code(), self.message()),
                    None => write!(f, "{} {:#x}", $label, self.code()),
                }
            }
        }

        impl std::error::Error for $enum {}
    };
}

codes! {
    /// The status of a COMMAND_DONE (MBIM 1.0 table 9-3 plus the MS extension ranges).
    Status, "MBIM status",
    None = 0 => "the operation succeeded",
    Busy = 1 => "the device is busy",
    Failure = 2 => "the operation failed",
    SimNotInserted = 3 => "no SIM is inserted",
    BadSim = 4 => "the SIM is not usable",
    PinRequired = 5 => "a PIN is required",
    PinDisabled = 6 => "the PIN is disabled",
    NotRegistered = 7 => "the device is not registered with a network",
    ProvidersNotFound = 8 => "no providers were found",
    NoDeviceSupport = 9 => "the device does not support the operation",
    ProviderNotVisible = 10 => "the provider is not visible",
    DataClassNotAvailable = 11 => "the requested data class is not available",
    PacketServiceDetached = 12 => "packet service is detached",
    MaxActivatedContexts = 13 => "the maximum number of contexts is already active",
    NotInitialized = 14 => "the device is not initialized",
    VoiceCallInProgress = 15 => "a voice call is in progress",
    ContextNotActivated = 16 => "the context is not activated",
    ServiceNotActivated = 17 => "the service is not activated",
    InvalidAccessString = 18 => "the access string (APN) is invalid",
    InvalidUserNamePwd = 19 => "the user name or password is invalid",
    RadioPowerOff = 20 => "the radio is off",
    InvalidParameters = 21 => "the parameters are invalid",
    ReadFailure = 22 => "reading failed",
    WriteFailure = 23 => "writing failed",
    NoPhonebook = 25 => "there is no phonebook",
    ParameterTooLong = 26 => "a parameter is too long",
    StkBusy = 27 => "the SIM toolkit is busy",
    OperationNotAllowed = 28 => "the operation is not allowed",
    MemoryFailure = 29 => "device or SIM memory failed",
    InvalidMemoryIndex = 30 => "the memory index is invalid",
    MemoryFull = 31 => "the memory is full",
    FilterNotSupported = 32 => "the packet filter is not supported",
    DssInstanceLimit = 33 => "the device service session limit is reached",
    InvalidDeviceServiceOperation = 34 => "the device service operation is invalid",
    AuthIncorrectAutn = 35 => "the AUTN of the authentication challenge is incorrect",
    AuthSyncFailure = 36 => "authentication failed to synchronise",
    AuthAmfNotSet = 37 => "the AMF bit of the authentication challenge is not set",
    ContextNotSupported = 38 => "the context type is not supported",
    ShareabilityConditionError = 39 => "the UICC file shareability condition is not met",
    PinFailure = 40 => "PIN verification failed",
    NoLteAttachConfig = 41 => "there is no LTE attach configuration",
    SessionAlreadyExists = 42 => "the session already exists",
    SmsUnknownSmscAddress = 100 => "the SMS centre address is unknown",
    SmsNetworkTimeout = 101 => "the SMS network timed out",
    SmsLangNotSupported = 102 => "the SMS language is not supported",
    SmsEncodingNotSupported = 103 => "the SMS encoding is not supported",
    SmsFormatNotSupported = 104 => "the SMS format is not supported",
    SmsMoreData = 105 => "more SMS data follows",
    MatchingPduSessionFound = 200 => "a matching PDU session exists",
    DissociationNeededForApplication = 201 => "the application must be dissociated first",
    InvalidSlot = 202 => "the SIM slot is invalid",
    NoMatchingUrspRule = 203 => "no URSP rule matches",
    DefaultUrspRule = 204 => "the default URSP rule applies",
    MsNoLogicalChannels = 0x8743_0001 => "the UICC has no free logical channel",
    MsSelectFailed = 0x8743_0002 => "the UICC could not select the application",
    MsInvalidLogicalChannel = 0x8743_0003 => "the UICC logical channel is not open",
}

impl Status {
    pub const fn is_success(self) -> bool {
        matches!(self, Self::None)
    }

    pub fn into_result(self) -> Result<(), Self> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }
}

codes! {
    /// Why a HOST_ERROR or FUNCTION_ERROR was sent.
    ProtocolError, "MBIM protocol error",
    Invalid = 0 => "no protocol error (an invalid value)",
    TimeoutFragment = 1 => "a fragment did not arrive in time",
    FragmentOutOfSequence = 2 => "a fragment arrived out of sequence",
    LengthMismatch = 3 => "the information buffer length does not match the data",
    DuplicatedTid = 4 => "the transaction id is already in use",
    NotOpened = 5 => "the function is not opened",
    Unknown = 6 => "an unknown error occurred",
    Cancel = 7 => "the transaction was cancelled",
    MaxTransfer = 8 => "the message exceeds the maximum control transfer",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in (0..=300).chain(0x8743_0000..0x8743_0005) {
            assert_eq!(Status::from_code(code).code(), code);
            assert_eq!(ProtocolError::from_code(code).code(), code);
        }
        assert_eq!(Status::from_code(9), Status::NoDeviceSupport);
        assert_eq!(Status::from_code(0x8743_0002), Status::MsSelectFailed);
        assert_eq!(
            Status::NoDeviceSupport.to_string(),
            "MBIM status NoDeviceSupport (0x9): the device does not support the operation"
        );
        assert_eq!(Status::Other(24).to_string(), "MBIM status 0x18");
        assert_eq!(ProtocolError::from_code(5), ProtocolError::NotOpened);
        assert!(Status::None.into_result().is_ok());
        assert_eq!(Status::Busy.into_result(), Err(Status::Busy));
    }
}
