//! A pure MBIM control-message codec (with QMI-over-MBIM): bytes in, typed values out, no I/O.
//!
//! The same codec serves both ends of the link, so the daemon and the modem simulator encode
//! and decode with one set of types:
//!
//! * [`ControlMessage`] is one whole control message (OPEN … INDICATE_STATUS); it encodes as
//!   one transfer or as fragments of at most MaxControlTransfer bytes;
//! * [`Splitter`] cuts a byte stream (a pty, a proxy socket) into transfers and skips garbage;
//! * [`Reassembler`] turns transfers, fragmented or not, into whole messages;
//! * [`info`] reads and writes information buffers; [`Status`] and [`ProtocolError`] are the
//!   status and error codes;
//! * [`basic_connect`], [`basic_connect_ext`], [`uicc`], [`qmi`] and [`proxy_control`] hold the
//!   typed messages, each implementing [`Message`];
//! * [`pcap`] builds captures tshark dissects.
//!
//! Nothing here panics on any input: every length and offset is checked and every failure is a
//! [`DecodeError`], an [`EncodeError`] or a [`FragmentError`].

#![expect(
    clippy::doc_markdown,
    reason = "MBIM names (MaxControlTransfer, COMMAND_DONE, BASIC_CONNECT) are prose in these docs"
)]

pub mod basic_connect;
pub mod basic_connect_ext;
mod control;
mod error;
mod fragment;
pub mod info;
mod message;
pub mod pcap;
pub mod proxy_control;
pub mod qmi;
mod splitter;
mod status;
pub mod uicc;
mod uuid;

pub use control::{
    Body, Command, CommandDone, CommandType, ControlMessage, DEFAULT_MAX_CONTROL_TRANSFER, FRAGMENT_HEADER_LEN,
    HEADER_LEN, Indication, MIN_CONTROL_TRANSFER, MessageType, RawMessage,
};
pub use error::{DecodeError, EncodeError};
pub use fragment::{DEFAULT_MAX_MESSAGE_LEN, DEFAULT_MAX_PARTIAL, FragmentError, Reassembler};
pub use message::{Kind, Message, Request, Word};
pub use splitter::{DEFAULT_MAX_TRANSFER_LEN, Splitter};
pub use status::{ProtocolError, Status};
pub use uuid::{ParseUuidError, Uuid};
