//! The card as the applet protocols see it: APDUs on logical channels, carried by whichever
//! modem session is up (QMI UIM or MBIM UICC low-level access); a PC/SC reader would be one more
//! [`Transmit`] implementation.

use aiesim_apdu::Transmit;

use crate::modem::{Modem, ModemError};

/// The modem's UICC as a [`Transmit`] transport.
pub struct ModemCard<'a> {
    modem: &'a Modem,
}

impl<'a> ModemCard<'a> {
    pub const fn new(modem: &'a Modem) -> Self {
        Self { modem }
    }
}

impl Transmit for ModemCard<'_> {
    type Error = ModemError;

    fn transmit(&mut self, channel: u8, apdu: &[u8]) -> impl Future<Output = Result<Vec<u8>, ModemError>> + Send {
        self.modem.transmit(channel, apdu)
    }
}

/// A logical channel with an application selected, closed again by [`Session::close`] — or,
/// when the session is dropped first (its caller was cancelled), in the background.
pub struct Session<'a> {
    pub card: ModemCard<'a>,
    pub channel: u8,
    modem: &'a Modem,
    closed: bool,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if !self.closed {
            self.modem.close_channel_detached(self.channel);
        }
    }
}

impl<'a> Session<'a> {
    /// Opens a channel and selects `aid` on it.
    pub async fn open(modem: &'a Modem, aid: &[u8]) -> Result<Self, ModemError> {
        let channel = modem.open_channel(aid).await?.number;
        Ok(Self {
            card: ModemCard::new(modem),
            channel,
            modem,
            closed: false,
        })
    }

    /// Closes the channel; a failure only costs a channel until the card resets, so it is
    /// logged rather than returned.
    pub async fn close(mut self) {
        self.closed = true;
        if let Err(error) = self.modem.close_channel(self.channel).await {
            tracing::debug!(channel = self.channel, error = %crate::broker::chain(&error), "could not close a card channel");
        }
    }
}
