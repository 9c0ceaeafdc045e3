//! The codec's errors: one enum for reading bytes, one for writing them.

use crate::frame::{MessageKind, Service};

/// Why bytes could not be read as QMI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the frame starts with {marker:#04x}, not the QMUX marker 0x01")]
    NotQmux { marker: u8 },
    #[error("the frame is truncated: {needed} bytes are needed but only {available} are present")]
    Truncated { needed: usize, available: usize },
    #[error("the QMUX length field says {declared} bytes follow the marker but {actual} do")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("the SDU header says its TLVs take {declared} bytes but {actual} remain")]
    TlvLengthMismatch { declared: usize, actual: usize },
    #[error("unknown QMUX control flags {flags:#04x}")]
    ControlFlags { flags: u8 },
    #[error("unknown SDU flags {flags:#04x} for service {service}")]
    SduFlags { service: Service, flags: u8 },
    #[error("compound QMI messages (SDU flags {flags:#04x}) are not supported")]
    Compound { flags: u8 },
    #[error("a {kind} must not carry QMUX control flags {control:#04x}")]
    DirectionMismatch { kind: MessageKind, control: u8 },
    #[error("the TLV at offset {offset} needs {needed} bytes but only {available} remain")]
    TruncatedTlv {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{message} lacks its mandatory TLV {tlv:#04x}")]
    MissingTlv { message: &'static str, tlv: u8 },
    #[error("TLV {tlv:#04x} of {message} is {actual} bytes long; expected {expected}")]
    TlvSize {
        message: &'static str,
        tlv: u8,
        expected: &'static str,
        actual: usize,
    },
    #[error("TLV {tlv:#04x} of {message} ends inside a field: {needed} bytes needed at offset {offset} of {len}")]
    FieldTruncated {
        message: &'static str,
        tlv: u8,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("expected {expected} but the frame is message {message_id:#06x} of service {service}")]
    WrongMessage {
        expected: &'static str,
        service: Service,
        message_id: u16,
    },
    #[error("skipped {skipped} bytes that are not part of a QMUX frame")]
    Garbage { skipped: usize },
}

/// Why a value could not be written as QMI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{what} is {len} bytes long; QMI allows at most {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("transaction id {transaction} does not fit the one-byte CTL transaction field")]
    CtlTransaction { transaction: u16 },
}
