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
    fn to_frame(&self, client_id: u8, transaction: u16) -> Result<Frame, EncodeError> {
        let mut out = tlv::Writer::new();
        self.write_tlvs(&mut out)?;
        Ok(Frame {
            service: Self::SERVICE,
            client_id,
            kind: Self::KIND,
            transaction,
            message_id: Self::MESSAGE_ID,
            tlvs: out.into_bytes(),
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
