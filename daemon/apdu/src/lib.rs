//! A pure ISO 7816-4 APDU layer: bytes in, typed values out, no I/O.
//!
//! The daemon (over QMI UIM "Send APDU" or MBIM UICC "APDU") and the modem simulator share
//! these types, so one side encodes exactly what the other decodes:
//!
//! * [`Command`] encodes and decodes command APDUs, all four cases, short and extended length;
//! * [`Response`] is the card's answer, data and a [`StatusWord`] whose [`Status`]
//!   classification turns failures into a typed [`CardError`];
//! * [`channel`] puts logical channels 0 to 19 into class bytes and builds MANAGE CHANNEL;
//! * [`exchange()`] runs one command over any [`Transmit`] implementation, following 61xx with
//!   GET RESPONSE and 6Cxx with a re-send; [`store_data_chained`] sends ES10 STORE DATA chains;
//! * [`tlv`] parses BER-TLV without copying, builds it with minimal lengths, and reads the
//!   one-byte simple-TLVs of the IoT SAFE applet.
//!
//! Nothing here panics on any input: every length is checked and every failure is one of the
//! modules' error enums.

pub mod channel;
mod command;
mod exchange;
mod response;
mod status;
pub mod tlv;

pub use channel::{ChannelError, MAX_CHANNEL, channel_of, with_channel};
pub use command::{Command, CommandError, Le, Length, MAX_DATA_LEN, MAX_SHORT_DATA_LEN, SelectP2, ins};
pub use exchange::{
    ExchangeError, Limits, MAX_STORE_DATA_BLOCK, Transmit, exchange, exchange_with, store_data_chained,
};
pub use response::{Response, ResponseError};
pub use status::{CardError, Status, StatusWord, Warning};

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod sweep;
