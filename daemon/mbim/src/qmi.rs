//! QMI (`d1a30bc2-f97a-6e43-bf65-c7e24fb0f0d3`): QMUX frames tunnelled over MBIM. The
//! information buffer is one raw QMUX frame, 0x01 marker included, without padding.

use crate::{
    DecodeError, Message, Request, Uuid,
    info::{Reader, Writer},
};

pub const MSG: u32 = 1;

/// A QMUX request frame for the modem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsgSet {
    pub qmux: Vec<u8>,
}

/// A QMUX response frame, or (as a notification) a QMUX indication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsgResponse {
    pub qmux: Vec<u8>,
}

/// Declares the two messages that share the raw-frame layout.
macro_rules! qmux {
    ($name:ident, $kind:ident, $notification:literal, $label:literal) => {
        impl Message for $name {
            const SERVICE: Uuid = Uuid::QMI;
            const CID: u32 = MSG;
            const KIND: crate::Kind = crate::Kind::$kind;
            const NOTIFICATION: bool = $notification;
            const NAME: &'static str = $label;

            fn write(&self, out: &mut Writer) {
                let Self { qmux } = self;
                out.raw(qmux);
            }

            fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self {
                    qmux: info.rest().to_vec(),
                })
            }
        }
    };
}

qmux!(MsgSet, Set, false, "QMI MSG set");
qmux!(MsgResponse, Response, true, "QMI MSG response");

impl Request for MsgSet {
    type Response = MsgResponse;
}
