//! MS_UICC_LOW_LEVEL_ACCESS (`c2f6588e-f037-4bc9-8665-f4d44bd09367`): the ATR and APDUs on
//! logical channels, the path to the eUICC's ISD-R. Byte arrays here are `{size, offset}`.

use crate::{
    DecodeError, Message, Request, Uuid,
    info::{Reader, Writer},
    message::{values, words_message},
};

pub const ATR: u32 = 1;
pub const OPEN_CHANNEL: u32 = 2;
pub const CLOSE_CHANNEL: u32 = 3;
pub const APDU: u32 = 4;
pub const TERMINAL_CAPABILITY: u32 = 5;
pub const RESET: u32 = 6;
pub const APPLICATION_LIST: u32 = 7;
pub const FILE_STATUS: u32 = 8;
pub const READ_BINARY: u32 = 9;
pub const READ_RECORD: u32 = 10;

const SERVICE: Uuid = Uuid::MS_UICC_LOW_LEVEL_ACCESS;

values!(
    /// `MbimUiccSecureMessaging`.
    SecureMessaging {
        NONE = 0 => "none",
        NO_HDR_AUTH = 1 => "no-hdr-auth",
    }
);

values!(
    /// `MbimUiccClassByteType`.
    ClassByteType {
        INTER_INDUSTRY = 0 => "inter-industry",
        EXTENDED = 1 => "extended",
    }
);

/// The card's status word as these messages carry it: SW1 in byte 0, SW2 in byte 1.
pub const fn status_word(status: u32) -> u16 {
    let [sw1, sw2, _, _] = status.to_le_bytes();
    u16::from_be_bytes([sw1, sw2])
}

/// The `Status` field for a status word, e.g. 0x9000 → 144.
pub const fn status_from_word(sw: u16) -> u32 {
    let [sw1, sw2] = sw.to_be_bytes();
    u32::from_le_bytes([sw1, sw2, 0, 0])
}

words_message!(
    /// Asks for the card's answer to reset.
    AtrQuery, SERVICE, ATR, Query, false, "MS_UICC_LOW_LEVEL_ACCESS ATR query", {}
);

impl Request for AtrQuery {
    type Response = AtrResponse;
}

/// The answer to reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtrResponse {
    pub atr: Vec<u8>,
}

impl Message for AtrResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = ATR;
    const KIND: crate::Kind = crate::Kind::Response;
    const NAME: &'static str = "MS_UICC_LOW_LEVEL_ACCESS ATR response";

    fn write(&self, out: &mut Writer) {
        let Self { atr } = self;
        out.uicc_bytes(atr);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            atr: info.uicc_bytes("Atr")?.to_vec(),
        })
    }
}

/// Opens a logical channel and selects `app_id` on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenChannelSet {
    pub app_id: Vec<u8>,
    /// P2 of the SELECT (0 returns the FCP template… as the card decides).
    pub select_p2_arg: u32,
    /// A tag the host uses to close all its channels at once.
    pub channel_group: u32,
}

impl Message for OpenChannelSet {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = OPEN_CHANNEL;
    const KIND: crate::Kind = crate::Kind::Set;
    const NAME: &'static str = "MS_UICC_LOW_LEVEL_ACCESS OPEN_CHANNEL set";

    fn write(&self, out: &mut Writer) {
        let Self {
            app_id,
            select_p2_arg,
            channel_group,
        } = self;
        out.uicc_bytes(app_id).u32(*select_p2_arg).u32(*channel_group);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            app_id: info.uicc_bytes("AppId")?.to_vec(),
            select_p2_arg: info.u32()?,
            channel_group: info.u32()?,
        })
    }
}

impl Request for OpenChannelSet {
    type Response = OpenChannelResponse;
}

/// The channel opened, and the card's answer to the SELECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenChannelResponse {
    /// The SELECT's status word (see [`status_word`]).
    pub status: u32,
    pub channel: u32,
    pub response: Vec<u8>,
}

impl Message for OpenChannelResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = OPEN_CHANNEL;
    const KIND: crate::Kind = crate::Kind::Response;
    const NAME: &'static str = "MS_UICC_LOW_LEVEL_ACCESS OPEN_CHANNEL response";

    fn write(&self, out: &mut Writer) {
        let Self {
            status,
            channel,
            response,
        } = self;
        out.u32(*status).u32(*channel).uicc_bytes(response);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            status: info.u32()?,
            channel: info.u32()?,
            response: info.uicc_bytes("Response")?.to_vec(),
        })
    }
}

words_message!(
    /// Closes one channel, or (channel 0) every channel of `channel_group`.
    CloseChannelSet, SERVICE, CLOSE_CHANNEL, Set, false, "MS_UICC_LOW_LEVEL_ACCESS CLOSE_CHANNEL set", {
        channel: u32,
        channel_group: u32,
    }
);
words_message!(
    /// The status word of the MANAGE CHANNEL close.
    CloseChannelResponse, SERVICE, CLOSE_CHANNEL, Response, false,
    "MS_UICC_LOW_LEVEL_ACCESS CLOSE_CHANNEL response", {
        status: u32,
    }
);

impl Request for CloseChannelSet {
    type Response = CloseChannelResponse;
}

/// Sends one command APDU on a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApduSet {
    pub channel: u32,
    pub secure_messaging: SecureMessaging,
    pub class_byte_type: ClassByteType,
    pub command: Vec<u8>,
}

impl Message for ApduSet {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = APDU;
    const KIND: crate::Kind = crate::Kind::Set;
    const NAME: &'static str = "MS_UICC_LOW_LEVEL_ACCESS APDU set";

    fn write(&self, out: &mut Writer) {
        let Self {
            channel,
            secure_messaging,
            class_byte_type,
            command,
        } = self;
        out.u32(*channel)
            .u32(secure_messaging.0)
            .u32(class_byte_type.0)
            .uicc_bytes(command);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            channel: info.u32()?,
            secure_messaging: SecureMessaging(info.u32()?),
            class_byte_type: ClassByteType(info.u32()?),
            command: info.uicc_bytes("Command")?.to_vec(),
        })
    }
}

impl Request for ApduSet {
    type Response = ApduResponse;
}

/// The response APDU: data in `response`, the status word in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApduResponse {
    pub status: u32,
    pub response: Vec<u8>,
}

impl Message for ApduResponse {
    const SERVICE: Uuid = SERVICE;
    const CID: u32 = APDU;
    const KIND: crate::Kind = crate::Kind::Response;
    const NAME: &'static str = "MS_UICC_LOW_LEVEL_ACCESS APDU response";

    fn write(&self, out: &mut Writer) {
        let Self { status, response } = self;
        out.u32(*status).uicc_bytes(response);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            status: info.u32()?,
            response: info.uicc_bytes("Response")?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words() {
        assert_eq!(status_from_word(0x9000), 144);
        assert_eq!(status_word(144), 0x9000);
        assert_eq!(status_word(status_from_word(0x6a82)), 0x6a82);
    }
}
