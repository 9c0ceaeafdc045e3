//! Status words (ISO 7816-4 §5.6, ETSI TS 102 221 §10.2) and their typed classification.

use std::fmt;

/// The two trailing bytes of every response APDU, SW1 in the high byte.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    /// 9000: normal processing.
    pub const OK: Self = Self(0x9000);
    /// 6300: no information given; IoT SAFE uses it for "more data available, ask again".
    pub const MORE_DATA_AVAILABLE: Self = Self(0x6300);
    /// 6700: wrong length.
    pub const WRONG_LENGTH: Self = Self(0x6700);
    /// 6881: logical channel not supported.
    pub const CHANNEL_NOT_SUPPORTED: Self = Self(0x6881);
    /// 6982: security status not satisfied.
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    /// 6985: conditions of use not satisfied.
    pub const CONDITIONS_NOT_SATISFIED: Self = Self(0x6985);
    /// 6A80: incorrect parameters in the data field.
    pub const INCORRECT_DATA: Self = Self(0x6A80);
    /// 6A82: file or application not found.
    pub const NOT_FOUND: Self = Self(0x6A82);
    /// 6A84: not enough memory space.
    pub const NO_MEMORY: Self = Self(0x6A84);
    /// 6A86: incorrect P1 or P2.
    pub const INCORRECT_P1_P2: Self = Self(0x6A86);
    /// 6A88: referenced data not found.
    pub const REFERENCED_DATA_NOT_FOUND: Self = Self(0x6A88);
    /// 6D00: instruction not supported.
    pub const INS_NOT_SUPPORTED: Self = Self(0x6D00);
    /// 6E00: class not supported.
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6E00);
    /// 6F00: no precise diagnosis.
    pub const UNKNOWN: Self = Self(0x6F00);

    /// The status word `sw1 sw2`.
    pub const fn new(sw1: u8, sw2: u8) -> Self {
        Self(u16::from_be_bytes([sw1, sw2]))
    }

    /// The first byte, which gives the category (90, 61, 6A, ...).
    pub const fn sw1(self) -> u8 {
        self.0.to_be_bytes()[0]
    }

    /// The second byte, the detail within SW1's category.
    pub const fn sw2(self) -> u8 {
        self.0.to_be_bytes()[1]
    }

    /// The bytes as they end a response APDU.
    pub const fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    /// 61xx: `len` (1 to 256) more bytes wait for GET RESPONSE; 256 is sent as 00.
    pub const fn more_data(len: u16) -> Self {
        Self::new(0x61, len.to_be_bytes()[1])
    }

    /// 6Cxx: the command must be re-sent with Le = `len` (1 to 256; 256 is sent as 00).
    pub const fn wrong_le(len: u16) -> Self {
        Self::new(0x6C, len.to_be_bytes()[1])
    }

    /// Whether the command completed normally (9000, or 91xx with a proactive command pending).
    pub fn is_ok(self) -> bool {
        self.status() == Status::Ok
    }

    /// What the status word means.
    pub fn status(self) -> Status {
        let [sw1, sw2] = self.to_bytes();
        match sw1 {
            // 91xx completed too; the modem, not the daemon, fetches the proactive command.
            0x90 if sw2 == 0 => Status::Ok,
            0x91 => Status::Ok,
            0x61 => Status::MoreData(short_len(sw2)),
            0x6C => Status::WrongLe(short_len(sw2)),
            0x62 | 0x63 => Status::Warning(Warning::from_status_word(self)),
            _ => Status::Error(CardError::from_status_word(self)),
        }
    }

    /// `Ok(())` for a normal completion, otherwise the [`CardError`] that describes it.
    pub fn to_result(self) -> Result<(), CardError> {
        match self.status() {
            Status::Ok => Ok(()),
            Status::MoreData(available) => Err(CardError::MoreDataPending { available }),
            Status::WrongLe(exact) => Err(CardError::WrongLe { exact }),
            Status::Warning(warning) => Err(CardError::Warning(warning)),
            Status::Error(error) => Err(error),
        }
    }
}

/// SW2 of 61xx/6Cxx as a byte count: 00 stands for 256, like a short Le.
fn short_len(sw2: u8) -> u16 {
    if sw2 == 0 { 256 } else { u16::from(sw2) }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.0)
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({:#06X})", self.0)
    }
}

impl From<u16> for StatusWord {
    fn from(raw: u16) -> Self {
        Self(raw)
    }
}

impl From<[u8; 2]> for StatusWord {
    fn from([sw1, sw2]: [u8; 2]) -> Self {
        Self::new(sw1, sw2)
    }
}

/// The classification of a [`StatusWord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 9000 or 91xx: the command completed.
    Ok,
    /// 61xx: this many bytes (1 to 256) are waiting for GET RESPONSE.
    MoreData(u16),
    /// 6Cxx: the card wants the command again with exactly this Le (1 to 256).
    WrongLe(u16),
    /// 62xx or 63xx: the command completed, with a warning.
    Warning(Warning),
    /// Anything else: the command failed.
    Error(CardError),
}

/// A 62xx/63xx status: the command completed, but the card has something to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Warning {
    #[error("the card completed the command with a warning and no further information (SW 6200)")]
    NoInformation,
    #[error("the card warns that part of the returned data may be corrupted (SW 6281)")]
    DataMayBeCorrupted,
    #[error("the end of the file or record was reached before Le bytes were read (SW 6282)")]
    EndOfFile,
    #[error("the selected file or application is deactivated (SW 6283)")]
    Deactivated,
    #[error("the file control information is not formatted according to ISO 7816-4 (SW 6284)")]
    FciNotFormatted,
    #[error("the selected file or application is in its termination state (SW 6285)")]
    Terminated,
    /// 6300: ISO's "no information given"; IoT SAFE's object list says "ask again with P2 = 01".
    #[error("the card has more data available for a follow-up command (SW 6300)")]
    MoreDataAvailable,
    #[error("the file was filled up by the last write (SW 6381)")]
    FileFilledUp,
    /// 63Cx: typically a failed verification with x tries left.
    #[error("the card reports counter value {0}, usually the tries left (SW 63C{0:X})")]
    Counter(u8),
    #[error("the card completed the command with warning SW {0}")]
    Other(StatusWord),
}

impl Warning {
    /// Classifies a 62xx/63xx status word; other status words become [`Warning::Other`].
    pub fn from_status_word(sw: StatusWord) -> Self {
        match sw.0 {
            0x6200 => Self::NoInformation,
            0x6281 => Self::DataMayBeCorrupted,
            0x6282 => Self::EndOfFile,
            0x6283 => Self::Deactivated,
            0x6284 => Self::FciNotFormatted,
            0x6285 => Self::Terminated,
            0x6300 => Self::MoreDataAvailable,
            0x6381 => Self::FileFilledUp,
            0x63C0..=0x63CF => Self::Counter(sw.sw2() & 0x0F),
            _ => Self::Other(sw),
        }
    }

    /// The status word this warning stands for, so the simulator can answer with it.
    pub fn status_word(self) -> StatusWord {
        StatusWord(match self {
            Self::NoInformation => 0x6200,
            Self::DataMayBeCorrupted => 0x6281,
            Self::EndOfFile => 0x6282,
            Self::Deactivated => 0x6283,
            Self::FciNotFormatted => 0x6284,
            Self::Terminated => 0x6285,
            Self::MoreDataAvailable => 0x6300,
            Self::FileFilledUp => 0x6381,
            Self::Counter(count) => 0x63C0 | u16::from(count & 0x0F),
            Self::Other(sw) => sw.0,
        })
    }
}

/// Why the card did not complete a command, as a sentence an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CardError {
    #[error("the card rejected the length of the command (SW 6700)")]
    WrongLength,
    #[error("the card does not support that logical channel (SW 6881)")]
    ChannelNotSupported,
    #[error("the card does not support secure messaging (SW 6882)")]
    SecureMessagingNotSupported,
    #[error("the card expected the last command of a chain (SW 6883)")]
    LastCommandExpected,
    #[error("the card does not support command chaining (SW 6884)")]
    ChainingNotSupported,
    #[error("the card requires authentication first: security status not satisfied (SW 6982)")]
    SecurityStatusNotSatisfied,
    #[error("the card has blocked the authentication method (SW 6983)")]
    AuthenticationBlocked,
    #[error("the card cannot use the referenced data in its current state (SW 6984)")]
    ReferenceDataNotUsable,
    #[error("the card's conditions of use are not satisfied (SW 6985)")]
    ConditionsOfUseNotSatisfied,
    #[error("the card does not allow the command without a current file (SW 6986)")]
    NoCurrentFile,
    #[error("the card found incorrect parameters in the command data (SW 6A80)")]
    IncorrectData,
    #[error("the card does not support that function (SW 6A81)")]
    FunctionNotSupported,
    #[error("the card has no file or application with that identifier (SW 6A82)")]
    NotFound,
    #[error("the card has no such record (SW 6A83)")]
    RecordNotFound,
    #[error("the card has not enough memory left (SW 6A84)")]
    NoMemory,
    #[error("the card rejected the P1 or P2 parameter (SW 6A86)")]
    IncorrectP1P2,
    #[error("the card did not find the referenced data (SW 6A88)")]
    ReferencedDataNotFound,
    #[error("the card rejected the P1 or P2 parameter (SW 6B00)")]
    WrongP1P2,
    #[error("the card does not support that instruction, or the application is not selected (SW 6D00)")]
    InsNotSupported,
    #[error("the card does not support that class byte (SW 6E00)")]
    ClaNotSupported,
    #[error("the card failed the command without a precise diagnosis (SW 6F00)")]
    Unknown,
    #[error("the card rejected the authentication: the MAC or cryptogram is wrong (SW 9862)")]
    AuthenticationFailed,
    #[error("the card's security session or association has expired (SW 9863)")]
    SecuritySessionExpired,
    /// Other 98xx codes of ETSI TS 102 221 (PIN, key and authentication states).
    #[error("the card failed a security check (SW 98{0:02X})")]
    Security(u8),
    /// 61xx reached the caller; [`crate::exchange()`] normally follows it with GET RESPONSE.
    #[error("the card still holds {available} bytes of response data for GET RESPONSE (SW 61xx)")]
    MoreDataPending { available: u16 },
    /// 6Cxx reached the caller; [`crate::exchange()`] normally re-sends once with that Le.
    #[error("the card wants the command re-sent with Le = {exact} (SW 6Cxx)")]
    WrongLe { exact: u16 },
    /// A 62xx/63xx warning, which [`crate::Response::into_result`] does not treat as success.
    #[error(transparent)]
    Warning(Warning),
    #[error("the card failed the command with status word {0}")]
    Other(StatusWord),
}

impl CardError {
    /// Classifies a status word that is neither success, 61xx, 6Cxx nor a warning.
    pub fn from_status_word(sw: StatusWord) -> Self {
        match sw.0 {
            0x6700 => Self::WrongLength,
            0x6881 => Self::ChannelNotSupported,
            0x6882 => Self::SecureMessagingNotSupported,
            0x6883 => Self::LastCommandExpected,
            0x6884 => Self::ChainingNotSupported,
            0x6982 => Self::SecurityStatusNotSatisfied,
            0x6983 => Self::AuthenticationBlocked,
            0x6984 => Self::ReferenceDataNotUsable,
            0x6985 => Self::ConditionsOfUseNotSatisfied,
            0x6986 => Self::NoCurrentFile,
            0x6A80 => Self::IncorrectData,
            0x6A81 => Self::FunctionNotSupported,
            0x6A82 => Self::NotFound,
            0x6A83 => Self::RecordNotFound,
            0x6A84 => Self::NoMemory,
            0x6A86 => Self::IncorrectP1P2,
            0x6A88 => Self::ReferencedDataNotFound,
            0x6B00 => Self::WrongP1P2,
            0x6D00 => Self::InsNotSupported,
            0x6E00 => Self::ClaNotSupported,
            0x6F00 => Self::Unknown,
            0x9862 => Self::AuthenticationFailed,
            0x9863 => Self::SecuritySessionExpired,
            0x9800..=0x98FF => Self::Security(sw.sw2()),
            _ => Self::Other(sw),
        }
    }

    /// The status word this error stands for, so the simulator can answer with it.
    pub fn status_word(self) -> StatusWord {
        StatusWord(match self {
            Self::WrongLength => 0x6700,
            Self::ChannelNotSupported => 0x6881,
            Self::SecureMessagingNotSupported => 0x6882,
            Self::LastCommandExpected => 0x6883,
            Self::ChainingNotSupported => 0x6884,
            Self::SecurityStatusNotSatisfied => 0x6982,
            Self::AuthenticationBlocked => 0x6983,
            Self::ReferenceDataNotUsable => 0x6984,
            Self::ConditionsOfUseNotSatisfied => 0x6985,
            Self::NoCurrentFile => 0x6986,
            Self::IncorrectData => 0x6A80,
            Self::FunctionNotSupported => 0x6A81,
            Self::NotFound => 0x6A82,
            Self::RecordNotFound => 0x6A83,
            Self::NoMemory => 0x6A84,
            Self::IncorrectP1P2 => 0x6A86,
            Self::ReferencedDataNotFound => 0x6A88,
            Self::WrongP1P2 => 0x6B00,
            Self::InsNotSupported => 0x6D00,
            Self::ClaNotSupported => 0x6E00,
            Self::Unknown => 0x6F00,
            Self::AuthenticationFailed => 0x9862,
            Self::SecuritySessionExpired => 0x9863,
            Self::Security(sw2) => 0x9800 | u16::from(sw2),
            Self::MoreDataPending { available } => return StatusWord::more_data(available),
            Self::WrongLe { exact } => return StatusWord::wrong_le(exact),
            Self::Warning(warning) => return warning.status_word(),
            Self::Other(sw) => sw.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_common_status_words() {
        assert_eq!(StatusWord(0x9000).status(), Status::Ok);
        assert_eq!(StatusWord(0x9110).status(), Status::Ok);
        assert_eq!(StatusWord(0x6114).status(), Status::MoreData(0x14));
        assert_eq!(StatusWord(0x6100).status(), Status::MoreData(256));
        assert_eq!(StatusWord(0x6C08).status(), Status::WrongLe(8));
        assert_eq!(StatusWord(0x6C00).status(), Status::WrongLe(256));
        assert_eq!(StatusWord(0x6300).status(), Status::Warning(Warning::MoreDataAvailable));
        assert_eq!(StatusWord(0x63C2).status(), Status::Warning(Warning::Counter(2)));
        assert_eq!(StatusWord(0x6282).status(), Status::Warning(Warning::EndOfFile));
        assert_eq!(
            StatusWord(0x62F1).status(),
            Status::Warning(Warning::Other(StatusWord(0x62F1)))
        );
        let errors = [
            (0x6700, CardError::WrongLength),
            (0x6881, CardError::ChannelNotSupported),
            (0x6882, CardError::SecureMessagingNotSupported),
            (0x6982, CardError::SecurityStatusNotSatisfied),
            (0x6985, CardError::ConditionsOfUseNotSatisfied),
            (0x6A80, CardError::IncorrectData),
            (0x6A82, CardError::NotFound),
            (0x6A84, CardError::NoMemory),
            (0x6A86, CardError::IncorrectP1P2),
            (0x6A88, CardError::ReferencedDataNotFound),
            (0x6D00, CardError::InsNotSupported),
            (0x6E00, CardError::ClaNotSupported),
            (0x6F00, CardError::Unknown),
            (0x9862, CardError::AuthenticationFailed),
            (0x9863, CardError::SecuritySessionExpired),
            (0x9840, CardError::Security(0x40)),
            (0x6989, CardError::Other(StatusWord(0x6989))),
            (0x1234, CardError::Other(StatusWord(0x1234))),
            (0x9001, CardError::Other(StatusWord(0x9001))),
        ];
        for (raw, error) in errors {
            assert_eq!(StatusWord(raw).status(), Status::Error(error), "{raw:04X}");
            assert_eq!(error.status_word(), StatusWord(raw));
        }
    }

    #[test]
    fn every_status_word_round_trips_through_its_classification() {
        for raw in 0..=u16::MAX {
            let sw = StatusWord(raw);
            let back = match sw.status() {
                // 9000 and 91xx share one class, so only 9000 comes back from it.
                Status::Ok => {
                    assert!(raw == 0x9000 || raw >> 8 == 0x91, "{sw}");
                    assert_eq!(sw.to_result(), Ok(()));
                    continue;
                }
                Status::MoreData(len) => StatusWord::more_data(len),
                Status::WrongLe(len) => StatusWord::wrong_le(len),
                Status::Warning(warning) => warning.status_word(),
                Status::Error(error) => error.status_word(),
            };
            assert_eq!(back, sw);
            assert_eq!(sw.to_result().map_err(CardError::status_word), Err(sw));
        }
    }

    #[test]
    fn messages_are_sentences_with_the_status_word() {
        assert_eq!(
            CardError::NotFound.to_string(),
            "the card has no file or application with that identifier (SW 6A82)"
        );
        assert_eq!(
            CardError::Other(StatusWord(0x6989)).to_string(),
            "the card failed the command with status word 6989"
        );
        assert_eq!(
            CardError::Warning(Warning::Counter(0xF)).to_string(),
            "the card reports counter value 15, usually the tries left (SW 63CF)"
        );
        assert_eq!(
            CardError::Security(0x04).to_string(),
            "the card failed a security check (SW 9804)"
        );
        assert_eq!(format!("{:?}", StatusWord::OK), "StatusWord(0x9000)");
        assert_eq!(StatusWord::from([0x6A, 0x82]), StatusWord::NOT_FOUND);
    }
}
