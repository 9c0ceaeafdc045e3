//! A pure QMI (QMUX) codec: bytes in, typed values out, no I/O.
//!
//! The same codec serves both directions, so the daemon's client and the modem simulator
//! encode and decode with one set of types:
//!
//! * [`Frame`] is one QMUX frame (marker, header, CTL or service SDU, raw TLVs);
//! * [`Splitter`] cuts a byte stream (a pty, a proxy socket) into whole frames and skips garbage;
//! * [`tlv`] iterates and builds TLVs; [`QmiResult`] is the result TLV 0x02 with its typed
//!   [`ProtocolError`];
//! * [`ctl`], [`dms`], [`nas`], [`wds`], [`wda`] and [`uim`] hold the typed messages, one
//!   module per service, each message implementing [`Message`]; enumerated fields are
//!   newtypes with named constants, so values this codec does not name still round-trip.
//!
//! Nothing here panics on any input: every length is checked and every failure is a
//! [`DecodeError`] or an [`EncodeError`].

pub mod ctl;
pub mod dms;
mod error;
mod frame;
mod message;
pub mod nas;
mod result;
mod splitter;
pub mod tlv;
pub mod uim;
pub mod wda;
pub mod wds;

pub use error::{DecodeError, EncodeError};
pub use frame::{BROADCAST_CLIENT_ID, CTL_CLIENT_ID, Frame, MAX_FRAME_LEN, MessageKind, QMUX_MARKER, Service};
pub use message::{Message, Request};
pub use result::{ProtocolError, QmiResult, RESULT_TLV};
pub use splitter::Splitter;
