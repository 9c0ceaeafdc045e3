//! Typed proxies for apps. Method and property names follow `dbus/interfaces/*.xml`.

use std::collections::HashMap;

use zbus::{ObjectPath, OwnedFd, OwnedObjectPath, OwnedVariant as OwnedValue, proxy};

#[proxy(
    interface = "org.aiesim.AiEsim1.Broker",
    default_service = "org.aiesim.AiEsim1",
    default_path = "/org/aiesim/AiEsim1"
)]
pub trait Broker {
    /// Starts a streamed request; see [`crate::StreamEvent`] for what the fd carries.
    fn chat(&self, request: HashMap<String, OwnedValue>) -> zbus::Result<(OwnedObjectPath, OwnedFd)>;

    /// Asks one question and waits for the whole answer.
    fn ask(
        &self,
        prompt: &str,
        options: HashMap<String, OwnedValue>,
    ) -> zbus::Result<(String, HashMap<String, OwnedValue>)>;

    /// Cancels a request of the caller's.
    fn cancel(&self, request_path: &ObjectPath<'_>) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.aiesim.AiEsim1.Budget",
    default_service = "org.aiesim.AiEsim1",
    default_path = "/org/aiesim/AiEsim1"
)]
pub trait Budget {
    /// The caller's own budget.
    fn get_mine(&self) -> zbus::Result<HashMap<String, OwnedValue>>;

    /// Every app's budget (administrators).
    fn list(&self) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    /// Changes an app's limits: `total`, `daily`, `monthly`, `per_minute` (t), `clear` (as)
    /// (administrators).
    fn set(&self, app: &str, policy: HashMap<String, OwnedValue>) -> zbus::Result<()>;

    /// Redeems an operator voucher on the eSIM (administrators).
    fn top_up(&self, voucher: &[u8]) -> zbus::Result<HashMap<String, OwnedValue>>;

    /// A request of the caller's app was refused for want of budget (sent to the caller only).
    #[zbus(signal)]
    fn budget_exhausted(&self, budget: HashMap<String, OwnedValue>) -> zbus::Result<()>;
}

#[proxy(interface = "org.aiesim.AiEsim1.Request", default_service = "org.aiesim.AiEsim1")]
pub trait Request {
    fn cancel(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn finished(&self, result: HashMap<String, OwnedValue>) -> zbus::Result<()>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn endpoint(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn model(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn prompt_tokens(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn completion_tokens(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn charged(&self) -> zbus::Result<u64>;
}

#[proxy(interface = "org.aiesim.AiEsim1.Modem", default_service = "org.aiesim.AiEsim1")]
pub trait Modem {
    /// The last signal measurement (no radio activity).
    fn get_signal(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    /// The data session's state and, while connected, its IP settings.
    fn get_data_settings(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    /// Brings the data session up; an empty APN uses the configured one. Root only.
    fn connect(&self, apn: &str) -> zbus::Result<()>;
    /// Takes the data session down. Root only.
    fn disconnect(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn device(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn protocol(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn imei(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn manufacturer(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn model(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn revision(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sim_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn signal_quality(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn registration(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn operator(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn data_session(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn ipv4_address(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
}

#[proxy(interface = "org.aiesim.AiEsim1.Esim", default_service = "org.aiesim.AiEsim1")]
pub trait Esim {
    /// EID, generation, versions, free memory and configured addresses.
    fn get_info(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    /// One dictionary per profile, in card order.
    fn list_profiles(&self) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;
    /// Enables a profile by ICCID. Root only.
    fn enable_profile(&self, iccid: &str) -> zbus::Result<()>;
    /// Disables a profile by ICCID. Root only.
    fn disable_profile(&self, iccid: &str) -> zbus::Result<()>;
    /// The token account: balance, sequence and state; empty without an AI applet.
    fn get_account(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    /// The cloud AI endpoints the operator provisioned on the card.
    fn list_endpoints(&self) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    #[zbus(property)]
    fn token_balance(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn eid(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn generation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_profile(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.aiesim.AiEsim1.Daemon",
    default_service = "org.aiesim.AiEsim1",
    default_path = "/org/aiesim/AiEsim1"
)]
pub trait Daemon {
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    /// Reloads asked for since start (SIGHUP).
    #[zbus(property)]
    fn reloads(&self) -> zbus::Result<u32>;
    /// "applied: …" or "refused: …"; empty before the first reload.
    #[zbus(property)]
    fn last_reload(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.aiesim.AiEsim1.Endpoints",
    default_service = "org.aiesim.AiEsim1",
    default_path = "/org/aiesim/AiEsim1"
)]
pub trait Endpoints {
    /// One dictionary per endpoint and model: health, latency estimates, counts, load.
    fn get_statistics(&self) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    #[zbus(property)]
    fn names(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn healthy(&self) -> zbus::Result<u32>;
}

#[proxy(
    interface = "org.aiesim.AiEsim1.Fastpath",
    default_service = "org.aiesim.AiEsim1",
    default_path = "/org/aiesim/AiEsim1"
)]
pub trait Fastpath {
    fn get_statistics(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    fn get_endpoint_statistics(&self) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;
    fn get_app_statistics(&self) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    #[zbus(property)]
    fn interface(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn attached(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn attach_mode(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn uplink_kbit(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn uplink_source(&self) -> zbus::Result<String>;
}
