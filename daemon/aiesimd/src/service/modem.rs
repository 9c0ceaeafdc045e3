//! `org.aiesim.AiEsim1.Modem` objects.

use zbus::interface;

pub struct ModemObject {
    device: String,
    protocol: &'static str,
    info: crate::modem::ModemInfo,
}

impl From<super::ModemObject> for ModemObject {
    fn from(m: super::ModemObject) -> Self {
        let super::ModemObject { device, protocol, info } = m;
        Self {
            device,
            protocol: protocol.as_str(),
            info,
        }
    }
}

#[interface(name = "org.aiesim.AiEsim1.Modem", spawn = false)]
impl ModemObject {
    #[zbus(property)]
    fn device(&self) -> &str {
        &self.device
    }

    #[zbus(property)]
    fn protocol(&self) -> &str {
        self.protocol
    }

    #[zbus(property)]
    fn imei(&self) -> &str {
        &self.info.imei
    }

    #[zbus(property)]
    fn manufacturer(&self) -> &str {
        &self.info.manufacturer
    }

    #[zbus(property)]
    fn model(&self) -> &str {
        &self.info.model
    }

    #[zbus(property)]
    fn revision(&self) -> &str {
        &self.info.revision
    }
}
