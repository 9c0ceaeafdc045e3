//! `org.aiesim.AiEsim1.Modem` at `Modem/0`: the session's state as properties, read from the
//! session's watch channel (so a reply never shows a stale state), and a task that turns each
//! new state into one `PropertiesChanged` signal.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::watch;
use zbus::{Connection, OwnedVariant as OwnedValue, Variant as Value, interface};

use super::{
    DaemonError,
    changes::{self, Prop},
};
use crate::{
    broker::chain,
    modem::{DataSession, Modem, ModemError, ModemState},
};

const INTERFACE: &str = "org.aiesim.AiEsim1.Modem";

pub struct ModemObject {
    modem: Arc<Modem>,
    state: watch::Receiver<ModemState>,
}

impl ModemObject {
    pub fn new(modem: Arc<Modem>) -> Self {
        let state = modem.state();
        Self { modem, state }
    }

    fn now(&self) -> watch::Ref<'_, ModemState> {
        self.state.borrow()
    }
}

/// Every property of the interface, from one state; the names are the contract's.
fn properties(state: &ModemState) -> Vec<(&'static str, Prop)> {
    let ModemState {
        availability,
        device,
        protocol,
        interface,
        info,
        sim,
        signal,
        registration,
        operator,
        data,
        // Shown where it is used: the fast path's shaper (Fastpath.UplinkKbit).
        uplink_bps: _,
        last_error,
    } = state;
    let s = Prop::text;
    vec![
        ("State", s(availability.as_str())),
        ("Device", s(device)),
        ("Protocol", s(protocol.map_or("", |p| p.as_str()))),
        ("Interface", s(interface)),
        ("Imei", s(&info.imei)),
        ("Manufacturer", s(&info.manufacturer)),
        ("Model", s(&info.model)),
        ("Revision", s(&info.revision)),
        ("SimState", s(sim.as_str())),
        ("SignalQuality", Prop::U(signal.quality())),
        ("Registration", s(registration.as_str())),
        ("Operator", s(operator)),
        ("DataSession", s(data.as_str())),
        ("Ipv4Address", Prop::S(ipv4_address(data))),
        ("LastError", s(last_error)),
    ]
}

/// "address/prefix" while connected with an address, empty otherwise.
fn ipv4_address(data: &DataSession) -> String {
    match data {
        DataSession::Connected(ip) => ip.address.map(|a| format!("{a}/{}", ip.prefix_len)).unwrap_or_default(),
        _ => String::new(),
    }
}

fn unavailable(error: &ModemError) -> DaemonError {
    match error {
        ModemError::Unavailable(_) | ModemError::Stopped => DaemonError::ModemUnavailable(chain(error)),
        _ => DaemonError::Failed(chain(error)),
    }
}

#[interface(name = "org.aiesim.AiEsim1.Modem", spawn = false)]
impl ModemObject {
    #[zbus(property)]
    fn state(&self) -> String {
        self.now().availability.as_str().to_owned()
    }

    #[zbus(property)]
    fn device(&self) -> String {
        self.now().device.clone()
    }

    #[zbus(property)]
    fn protocol(&self) -> String {
        self.now().protocol.map_or("", |p| p.as_str()).to_owned()
    }

    #[zbus(property)]
    fn interface(&self) -> String {
        self.now().interface.clone()
    }

    #[zbus(property)]
    fn imei(&self) -> String {
        self.now().info.imei.clone()
    }

    #[zbus(property)]
    fn manufacturer(&self) -> String {
        self.now().info.manufacturer.clone()
    }

    #[zbus(property)]
    fn model(&self) -> String {
        self.now().info.model.clone()
    }

    #[zbus(property)]
    fn revision(&self) -> String {
        self.now().info.revision.clone()
    }

    #[zbus(property)]
    fn sim_state(&self) -> String {
        self.now().sim.as_str().to_owned()
    }

    #[zbus(property)]
    fn signal_quality(&self) -> u32 {
        self.now().signal.quality()
    }

    #[zbus(property)]
    fn registration(&self) -> String {
        self.now().registration.as_str().to_owned()
    }

    #[zbus(property)]
    fn operator(&self) -> String {
        self.now().operator.clone()
    }

    #[zbus(property)]
    fn data_session(&self) -> String {
        self.now().data.as_str().to_owned()
    }

    #[zbus(property)]
    fn ipv4_address(&self) -> String {
        ipv4_address(&self.now().data)
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.now().last_error.clone()
    }

    fn get_signal(&self) -> HashMap<String, OwnedValue> {
        let signal = self.now().signal;
        let mut out = HashMap::new();
        out.insert("quality".to_owned(), OwnedValue::from(signal.quality()));
        for (key, value) in [
            ("rssi_dbm", signal.rssi_dbm),
            ("rsrp_dbm", signal.rsrp_dbm),
            ("rsrq_db", signal.rsrq_db),
        ] {
            if let Some(value) = value {
                out.insert(key.to_owned(), OwnedValue::from(i32::from(value)));
            }
        }
        if let Some(snr) = signal.snr_db {
            out.insert("snr_db".to_owned(), OwnedValue::from(snr));
        }
        out
    }

    fn get_data_settings(&self) -> Result<HashMap<String, OwnedValue>, DaemonError> {
        let mut out = HashMap::new();
        let data = self.now().data.clone();
        out.insert("state".to_owned(), OwnedValue::from(zbus::Str::from(data.as_str())));
        if let DataSession::Connected(ip) = &data {
            let owned = |v: Value<'_>| OwnedValue::try_from(v).map_err(|e| DaemonError::Failed(e.to_string()));
            if let Some(address) = ip.address {
                out.insert("address".to_owned(), owned(Value::from(address.to_string()))?);
                out.insert("prefix".to_owned(), OwnedValue::from(ip.prefix_len));
            }
            if let Some(gateway) = ip.gateway {
                out.insert("gateway".to_owned(), owned(Value::from(gateway.to_string()))?);
            }
            let dns: Vec<String> = ip.dns.iter().map(ToString::to_string).collect();
            out.insert("dns".to_owned(), owned(Value::from(dns))?);
            if let Some(mtu) = ip.mtu {
                out.insert("mtu".to_owned(), OwnedValue::from(mtu));
            }
        }
        Ok(out)
    }

    async fn connect(&self, apn: &str) -> Result<(), DaemonError> {
        let apn = Some(apn.to_owned()).filter(|a| !a.is_empty());
        self.modem.connect(apn).await.map_err(|e| unavailable(&e))
    }

    async fn disconnect(&self) -> Result<(), DaemonError> {
        self.modem.disconnect().await.map_err(|e| unavailable(&e))
    }
}

/// Signals every change of the modem's state until the session ends or the object goes away.
pub async fn follow(connection: Connection, path: String, modem: Arc<Modem>) {
    let Ok(object) = connection
        .object_server()
        .interface::<_, ModemObject>(path.as_str())
        .await
    else {
        return;
    };
    let mut states = modem.state();
    let mut last = properties(&states.borrow_and_update());
    while states.changed().await.is_ok() {
        let now = properties(&states.borrow_and_update());
        if let Err(err) = changes::publish(object.signal_emitter(), INTERFACE, &last, &now).await {
            tracing::debug!(%err, "could not signal the modem's property changes");
        }
        last = now;
    }
}
