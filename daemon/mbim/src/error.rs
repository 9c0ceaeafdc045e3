//! The codec's errors: one enum for reading bytes, one for writing them.

use crate::{MessageType, Uuid};

/// Why bytes could not be read as MBIM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the message is truncated: {needed} bytes are needed but only {available} are present")]
    Truncated { needed: usize, available: usize },
    #[error("the header says the message is {declared} bytes long but {actual} bytes are present")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("{message_type:#010x} is not an MBIM control message type")]
    UnknownMessageType { message_type: u32 },
    #[error("the {message_type} is {len} bytes long; it must be at least {min}")]
    TooShort {
        message_type: MessageType,
        len: usize,
        min: usize,
    },
    #[error("the {message_type} is {len} bytes long; it is always {expected}")]
    FixedLength {
        message_type: MessageType,
        len: usize,
        expected: usize,
    },
    #[error("fragment {current} of {total} is not a valid fragment header")]
    FragmentHeader { total: u32, current: u32 },
    #[error("the message is fragment {current} of {total}; reassemble it first")]
    Fragmented { total: u32, current: u32 },
    #[error("InformationBufferLength says {declared} bytes but {actual} bytes follow")]
    InfoLengthMismatch { declared: usize, actual: usize },
    #[error("{command_type} is not a command type (0 query, 1 set)")]
    UnknownCommandType { command_type: u32 },
    #[error("the information buffer of {message} ends at {available} bytes but {needed} are needed")]
    InfoTruncated {
        message: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("{field} of {message} points at {size} bytes at offset {offset}, beyond the {len}-byte buffer")]
    OutOfBounds {
        message: &'static str,
        field: &'static str,
        offset: u32,
        size: u32,
        len: usize,
    },
    #[error("{field} of {message} is {size} bytes long; UTF-16 strings have an even length")]
    OddStringLength {
        message: &'static str,
        field: &'static str,
        size: u32,
    },
    #[error("{field} of {message} is {size} bytes long; each element takes {element}")]
    ElementSize {
        message: &'static str,
        field: &'static str,
        size: u32,
        element: usize,
    },
    #[error("expected {expected} but the message is CID {cid} of service {service}")]
    WrongMessage {
        expected: &'static str,
        service: Uuid,
        cid: u32,
    },
    #[error("expected {expected} but the message is a {actual}")]
    WrongKind {
        expected: &'static str,
        actual: &'static str,
    },
    #[error("skipped {skipped} bytes that are not part of an MBIM message")]
    Garbage { skipped: usize },
}

/// Why a value could not be written as MBIM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} is {len} bytes long; MBIM allows at most {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("a maximum control transfer of {max} bytes is below MBIM's minimum of {min}")]
    MaxControlTransfer { max: usize, min: usize },
    #[error("{message} is a {kind} and cannot be sent as a {wanted}")]
    WrongKind {
        message: &'static str,
        kind: &'static str,
        wanted: &'static str,
    },
}
