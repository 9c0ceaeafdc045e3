//! PROXY_CONTROL (`838cf7fb-8d0d-4d7f-871e-d71dbefbb39b`): libmbim's mbim-proxy handshake, in
//! which a client names the device it wants after connecting to `@mbim-proxy`.

use crate::{
    DecodeError, Message, Request, Uuid,
    info::{Reader, Writer},
    message::words_message,
};

pub const CONFIGURATION: u32 = 1;

/// Which device the client wants and how long (seconds) the proxy should wait for answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigurationSet {
    pub device_path: String,
    pub timeout: u32,
}

impl Message for ConfigurationSet {
    const SERVICE: Uuid = Uuid::PROXY_CONTROL;
    const CID: u32 = CONFIGURATION;
    const KIND: crate::Kind = crate::Kind::Set;
    const NAME: &'static str = "PROXY_CONTROL CONFIGURATION set";

    fn write(&self, out: &mut Writer) {
        let Self { device_path, timeout } = self;
        out.string(device_path).u32(*timeout);
    }

    fn read(info: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            device_path: info.string("DevicePath")?,
            timeout: info.u32()?,
        })
    }
}

words_message!(
    /// The proxy accepted the configuration.
    ConfigurationResponse, Uuid::PROXY_CONTROL, CONFIGURATION, Response, false,
    "PROXY_CONTROL CONFIGURATION response", {}
);

impl Request for ConfigurationSet {
    type Response = ConfigurationResponse;
}
