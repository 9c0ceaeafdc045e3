//! The typed-message contract shared by every service module.

use crate::{DecodeError, EncodeError, Frame, MessageKind, QmiResult, Service, tlv};

/// A typed QMI message: one (service, message id, kind) and its TLVs.
pub trait Message: Sized {
    const SERVICE: Service;
    const MESSAGE_ID: u16;
    const KIND: MessageKind;
    /// What logs and errors call it, e.g. "DMS Get IDs response".
    const NAME: &'static str;

    /// Appends this message's TLVs (never the result TLV, which [`Message::to_response`] adds).
    fn write_tlvs(&self, out: &mut tlv::Writer) -> Result<(), EncodeError>;

    /// Reads this message from a TLV section; unknown TLVs are ignored, as QMI requires.
    fn read_tlvs(tlvs: &[u8]) -> Result<Self, DecodeError>;

    /// Reads this message from a frame, checking that the frame really is this message.
    fn from_frame(frame: &Frame) -> Result<Self, DecodeError> {
        if frame.service != Self::SERVICE || frame.message_id != Self::MESSAGE_ID || frame.kind != Self::KIND {
            return Err(DecodeError::WrongMessage {
                expected: Self::NAME,
                service: frame.service,
                message_id: frame.message_id,
            });
        }
        Self::read_tlvs(&frame.tlvs)
    }

    /// A request or indication frame carrying this message.
    ///
    /// Requests carry their TLVs highest id first, as libqmi sends them, so a request encoded
    /// here is byte for byte what `qmicli` sends for it.
    fn to_frame(&self, client_id: u8, transaction: u16) -> Result<Frame, EncodeError> {
        let mut out = tlv::Writer::new();
        self.write_tlvs(&mut out)?;
        let tlvs = if Self::KIND == MessageKind::Request {
            highest_id_first(out.as_bytes())?
        } else {
            out.into_bytes()
        };
        Ok(Frame {
            service: Self::SERVICE,
            client_id,
            kind: Self::KIND,
            transaction,
            message_id: Self::MESSAGE_ID,
            tlvs,
        })
    }

    /// A successful response to `request` carrying this message.
    fn to_response(&self, request: &Frame) -> Result<Frame, EncodeError> {
        let mut out = tlv::Writer::new();
        QmiResult::Success.write(&mut out);
        self.write_tlvs(&mut out)?;
        Ok(Frame {
            service: Self::SERVICE,
            client_id: request.client_id,
            kind: MessageKind::Response,
            transaction: request.transaction,
            message_id: Self::MESSAGE_ID,
            tlvs: out.into_bytes(),
        })
    }

    /// A failed response to `request` that still carries this message's TLVs, as modems send
    /// call-end reasons or card status words along with the error.
    fn to_error_response(&self, request: &Frame, error: crate::ProtocolError) -> Result<Frame, EncodeError> {
        let mut out = tlv::Writer::new();
        QmiResult::Failure(error).write(&mut out);
        self.write_tlvs(&mut out)?;
        Ok(Frame {
            service: Self::SERVICE,
            client_id: request.client_id,
            kind: MessageKind::Response,
            transaction: request.transaction,
            message_id: Self::MESSAGE_ID,
            tlvs: out.into_bytes(),
        })
    }
}

/// Reorders a TLV section highest id first (stable for repeated ids).
fn highest_id_first(tlvs: &[u8]) -> Result<Vec<u8>, EncodeError> {
    // The section was just written by `tlv::Writer`, so every TLV is well formed.
    let mut all: Vec<tlv::Tlv<'_>> = tlv::iter(tlvs).filter_map(Result::ok).collect();
    all.sort_by_key(|t| std::cmp::Reverse(t.id));
    let mut out = tlv::Writer::new();
    for t in all {
        out.put(t.id, t.value)?;
    }
    Ok(out.into_bytes())
}

/// A request and the response type it is answered with.
pub trait Request: Message {
    type Response: Message;
}

impl Frame {
    /// A response to `request` that carries only a failed result TLV.
    pub fn error_response(request: &Self, error: crate::ProtocolError) -> Self {
        let mut out = tlv::Writer::new();
        QmiResult::Failure(error).write(&mut out);
        Self {
            service: request.service,
            client_id: request.client_id,
            kind: MessageKind::Response,
            transaction: request.transaction,
            message_id: request.message_id,
            tlvs: out.into_bytes(),
        }
    }
}

/// Declares a message without TLVs of its own.
macro_rules! empty_message {
    ($(#[$doc:meta])* $name:ident, $service:expr, $id:expr, $kind:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $crate::Message for $name {
            const SERVICE: $crate::Service = $service;
            const MESSAGE_ID: u16 = $id;
            const KIND: $crate::MessageKind = $crate::MessageKind::$kind;
            const NAME: &'static str = $label;

            fn write_tlvs(&self, _out: &mut $crate::tlv::Writer) -> Result<(), $crate::EncodeError> {
                Ok(())
            }

            fn read_tlvs(tlvs: &[u8]) -> Result<Self, $crate::DecodeError> {
                // Still walk the TLVs, so a malformed section is reported rather than ignored.
                $crate::tlv::iter(tlvs).try_for_each(|tlv| tlv.map(drop))?;
                Ok(Self)
            }
        }
    };
}
pub(crate) use empty_message;

/// A TLV layout several messages share (a response and its indication, say).
pub(crate) trait Body: Sized {
    fn write_body(&self, out: &mut tlv::Writer) -> Result<(), EncodeError>;
    fn read_body(tlvs: &[u8], message: &'static str) -> Result<Self, DecodeError>;
}

/// Declares a message whose TLVs are a [`Body`] it wraps.
macro_rules! body_message {
    ($(#[$doc:meta])* $name:ident($body:ty), $service:expr, $id:expr, $kind:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name(pub $body);

        impl $crate::Message for $name {
            const SERVICE: $crate::Service = $service;
            const MESSAGE_ID: u16 = $id;
            const KIND: $crate::MessageKind = $crate::MessageKind::$kind;
            const NAME: &'static str = $label;

            fn write_tlvs(&self, out: &mut $crate::tlv::Writer) -> Result<(), $crate::EncodeError> {
                $crate::message::Body::write_body(&self.0, out)
            }

            fn read_tlvs(tlvs: &[u8]) -> Result<Self, $crate::DecodeError> {
                <$body as $crate::message::Body>::read_body(tlvs, Self::NAME).map(Self)
            }
        }
    };
}
pub(crate) use body_message;

/// Declares a message whose TLVs are all optional booleans (event and indication switches).
macro_rules! switches_message {
    (
        $(#[$doc:meta])* $name:ident, $service:expr, $id:expr, $kind:ident, $label:literal,
        { $($(#[$fdoc:meta])* $field:ident = $tlv:literal,)* }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: Option<bool>,)*
        }

        impl $crate::Message for $name {
            const SERVICE: $crate::Service = $service;
            const MESSAGE_ID: u16 = $id;
            const KIND: $crate::MessageKind = $crate::MessageKind::$kind;
            const NAME: &'static str = $label;

            fn write_tlvs(&self, out: &mut $crate::tlv::Writer) -> Result<(), $crate::EncodeError> {
                let Self { $($field,)* } = *self;
                $(out.put_opt($tlv, $field, $crate::tlv::Writer::put_bool);)*
                Ok(())
            }

            fn read_tlvs(tlvs: &[u8]) -> Result<Self, $crate::DecodeError> {
                Ok(Self {
                    $($field: $crate::tlv::find_bool(tlvs, $tlv, Self::NAME)?,)*
                })
            }
        }
    };
}
pub(crate) use switches_message;

/// Declares a `u8`/`u16`/`u32` newtype with named values, so values this codec has no name
/// for still round-trip (like [`crate::Service`]).
macro_rules! named_values {
    ($(#[$doc:meta])* $name:ident($repr:ty) { $($(#[$vdoc:meta])* $value:ident = $code:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$vdoc])* pub const $value: Self = Self($code);)*

            /// The constant's name (e.g. `LOW_POWER`), if this codec knows the value.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$value => Some(stringify!($value)),)*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            /// As libqmi prints it: `low-power`; unnamed values as their number.
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(&name.to_ascii_lowercase().replace('_', "-")),
                    None => write!(f, "{}", self.0),
                }
            }
        }
    };
}
pub(crate) use named_values;
