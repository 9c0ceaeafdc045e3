//! Logical channels (ISO 7816-4 §5.4.1, ETSI TS 102 221 §10.1.1): the channel number in the
//! class byte, and the MANAGE CHANNEL commands that open and close channels.

use crate::{CardError, Command, Le, Response, ins};

/// The highest logical channel a class byte can address.
pub const MAX_CHANNEL: u8 = 19;

/// b7 set: the further interindustry coding (channels 4 to 19).
const FURTHER: u8 = 0x40;
/// b8 set: a proprietary class with the interindustry channel coding (8x, Cx, ...).
const PROPRIETARY: u8 = 0x80;
/// b5: command chaining, the same bit in both codings.
const CHAINING: u8 = 0x10;
/// b6 of the further coding: secure messaging without header authentication.
const FURTHER_SM: u8 = 0x20;
/// b4-b3 of the first coding.
const FIRST_SM_MASK: u8 = 0x0C;
/// b4-b3 = 10 in the first coding: the one secure messaging mode the further coding has too.
const FIRST_SM_NO_HEADER_AUTH: u8 = 0x08;
/// b6 of the first coding, RFU in ISO (set in the GSM class A0), which the further coding lacks.
const FIRST_RFU: u8 = 0x20;

/// Why a class byte or a MANAGE CHANNEL exchange does not work out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("logical channel {channel} does not exist; class bytes address channels 0 to 19")]
    OutOfRange { channel: u8 },
    #[error("class byte 0xff is not a valid class (it is reserved for PPS)")]
    InvalidClass,
    #[error(
        "class byte {cla:#04x} cannot address channel {channel}: its secure messaging or RFU bits \
         have no place in the further interindustry class"
    )]
    Unrepresentable { cla: u8, channel: u8 },
    #[error("the basic channel 0 is always open and cannot be closed")]
    CloseBasic,
    #[error("the card did not open a logical channel")]
    OpenRefused(#[source] CardError),
    #[error("the MANAGE CHANNEL response carries {len} bytes instead of one channel number")]
    OpenResponseLength { len: usize },
    #[error("the card says it opened channel {channel}, which is not between 1 and 19")]
    OpenedOutOfRange { channel: u8 },
}

/// `cla` moved to `channel`, keeping its proprietary, chaining and secure messaging bits.
///
/// Channels 0 to 3 use the first interindustry coding (`cla & 0xFC | channel`); 4 to 19 the
/// further one (`0x40 | (channel - 4)`, b6 for secure messaging). Either coding may come in.
pub fn with_channel(cla: u8, channel: u8) -> Result<u8, ChannelError> {
    if channel > MAX_CHANNEL {
        return Err(ChannelError::OutOfRange { channel });
    }
    if cla == 0xFF {
        return Err(ChannelError::InvalidClass);
    }
    let kept = cla & (PROPRIETARY | CHAINING);
    let further_in = cla & FURTHER != 0;
    let moved = match (further_in, channel) {
        (false, 0..=3) => cla & !0x03 | channel,
        (true, 0..=3) => {
            let sm = if cla & FURTHER_SM != 0 {
                FIRST_SM_NO_HEADER_AUTH
            } else {
                0
            };
            kept | sm | channel
        }
        (false, _) => {
            let sm = match cla & FIRST_SM_MASK {
                0 => 0,
                FIRST_SM_NO_HEADER_AUTH => FURTHER_SM,
                _ => return Err(ChannelError::Unrepresentable { cla, channel }),
            };
            if cla & FIRST_RFU != 0 {
                return Err(ChannelError::Unrepresentable { cla, channel });
            }
            kept | FURTHER | sm | (channel - 4)
        }
        (true, _) => cla & 0xF0 | (channel - 4),
    };
    // Proprietary, chained, secure messaging on channel 19 would spell the invalid class FF.
    if moved == 0xFF {
        return Err(ChannelError::Unrepresentable { cla, channel });
    }
    Ok(moved)
}

/// The logical channel `cla` addresses.
pub fn channel_of(cla: u8) -> Result<u8, ChannelError> {
    match cla {
        0xFF => Err(ChannelError::InvalidClass),
        _ if cla & FURTHER != 0 => Ok((cla & 0x0F) + 4),
        _ => Ok(cla & 0x03),
    }
}

/// MANAGE CHANNEL open, `00 70 00 00 01`: the card picks the channel and returns it in one byte.
pub fn open_command() -> Command {
    Command::new(0x00, ins::MANAGE_CHANNEL, 0x00, 0x00).with_le(Le::from_short(1))
}

/// The channel the card opened, from its answer to [`open_command`].
pub fn opened_channel(response: &Response) -> Result<u8, ChannelError> {
    let Response { data, sw } = response;
    sw.to_result().map_err(ChannelError::OpenRefused)?;
    let &[channel] = data.as_slice() else {
        return Err(ChannelError::OpenResponseLength { len: data.len() });
    };
    if channel == 0 || channel > MAX_CHANNEL {
        return Err(ChannelError::OpenedOutOfRange { channel });
    }
    Ok(channel)
}

/// MANAGE CHANNEL close, `00 70 80 ch 00`, to be sent on the basic channel.
///
/// The trailing 00 is the P3 the host libraries send; read as Le = 256 it asks for nothing a
/// card would return.
pub fn close_command(channel: u8) -> Result<Command, ChannelError> {
    match channel {
        0 => Err(ChannelError::CloseBasic),
        1..=MAX_CHANNEL => Ok(Command::new(0x00, ins::MANAGE_CHANNEL, 0x80, channel).with_le(Le::SHORT_MAX)),
        _ => Err(ChannelError::OutOfRange { channel }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StatusWord, test_support::hex};

    #[test]
    fn first_interindustry_channels_keep_the_other_bits() {
        assert_eq!(with_channel(0x00, 1), Ok(0x01));
        assert_eq!(with_channel(0x80, 1), Ok(0x81));
        assert_eq!(with_channel(0x81, 3), Ok(0x83));
        assert_eq!(with_channel(0x83, 0), Ok(0x80));
        // Chaining (b5) and secure messaging (b4-b3) stay.
        assert_eq!(with_channel(0x1C, 2), Ok(0x1E));
        assert_eq!(with_channel(0xA0, 0), Ok(0xA0));
        for cla in [0x00, 0x01, 0x80, 0x83, 0x1C, 0x90] {
            for channel in 0..=3 {
                assert_eq!(channel_of(with_channel(cla, channel).unwrap()), Ok(channel));
            }
        }
    }

    #[test]
    fn further_interindustry_channels() {
        assert_eq!(with_channel(0x00, 4), Ok(0x40));
        assert_eq!(with_channel(0x01, 19), Ok(0x4F));
        assert_eq!(with_channel(0x80, 4), Ok(0xC0));
        assert_eq!(with_channel(0x81, 19), Ok(0xCF));
        // SM without header authentication (b4-b3 = 10) becomes b6; chaining stays b5.
        assert_eq!(with_channel(0x08, 5), Ok(0x61));
        assert_eq!(with_channel(0x10, 6), Ok(0x52));
        // And back to the first coding.
        assert_eq!(with_channel(0x61, 1), Ok(0x09));
        assert_eq!(with_channel(0xCF, 0), Ok(0x80));
        assert_eq!(with_channel(0x4F, 7), Ok(0x43));
        assert_eq!(channel_of(0x40), Ok(4));
        assert_eq!(channel_of(0x4F), Ok(19));
        assert_eq!(channel_of(0xCF), Ok(19));
        assert_eq!(channel_of(0x6A), Ok(14));
    }

    #[test]
    fn unreachable_channels_and_classes_are_errors() {
        assert_eq!(with_channel(0x00, 20), Err(ChannelError::OutOfRange { channel: 20 }));
        assert_eq!(with_channel(0xFF, 1), Err(ChannelError::InvalidClass));
        assert_eq!(channel_of(0xFF), Err(ChannelError::InvalidClass));
        // Header-authenticated and proprietary SM have no further-coding equivalent.
        assert_eq!(
            with_channel(0x0C, 4),
            Err(ChannelError::Unrepresentable { cla: 0x0C, channel: 4 })
        );
        assert_eq!(
            with_channel(0x04, 4),
            Err(ChannelError::Unrepresentable { cla: 0x04, channel: 4 })
        );
        assert_eq!(
            with_channel(0xA0, 4),
            Err(ChannelError::Unrepresentable { cla: 0xA0, channel: 4 })
        );
        assert_eq!(
            with_channel(0x98, 19),
            Err(ChannelError::Unrepresentable { cla: 0x98, channel: 19 })
        );
    }

    #[test]
    fn every_class_and_channel_is_consistent() {
        for cla in 0..=u8::MAX {
            for channel in 0..=MAX_CHANNEL + 1 {
                if let Ok(moved) = with_channel(cla, channel) {
                    assert_eq!(channel_of(moved), Ok(channel), "{cla:#04x} -> {channel}");
                    assert_eq!(moved & PROPRIETARY, cla & PROPRIETARY);
                    assert_eq!(moved & CHAINING, cla & CHAINING);
                }
            }
        }
    }

    #[test]
    fn manage_channel_commands() {
        assert_eq!(open_command().encode().unwrap(), hex("0070000001"));
        assert_eq!(close_command(1).unwrap().encode().unwrap(), hex("0070800100"));
        assert_eq!(close_command(19).unwrap().encode().unwrap(), hex("0070801300"));
        assert_eq!(close_command(0), Err(ChannelError::CloseBasic));
        assert_eq!(close_command(20), Err(ChannelError::OutOfRange { channel: 20 }));

        assert_eq!(opened_channel(&Response::decode(&hex("01 9000")).unwrap()), Ok(1));
        assert_eq!(
            opened_channel(&Response::status(StatusWord::CHANNEL_NOT_SUPPORTED)),
            Err(ChannelError::OpenRefused(CardError::ChannelNotSupported))
        );
        assert_eq!(
            opened_channel(&Response::ok(Vec::new())),
            Err(ChannelError::OpenResponseLength { len: 0 })
        );
        assert_eq!(
            opened_channel(&Response::ok([0x14])),
            Err(ChannelError::OpenedOutOfRange { channel: 20 })
        );
    }
}
