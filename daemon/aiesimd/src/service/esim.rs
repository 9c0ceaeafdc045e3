//! `org.aiesim.AiEsim1.Esim` beside the Modem interface on `Modem/0`: the eSIM's state as
//! properties read from its watch channel, and a task turning each change into one
//! `PropertiesChanged` signal.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::watch;
use zbus::{Connection, OwnedVariant as OwnedValue, Variant as Value, interface, message::Header};

use super::{
    DaemonError,
    authority::{Action, authorize},
    broker::sender_of,
    changes::{self, Prop},
};
use crate::{
    broker::chain,
    esim::{Esim, EsimError, EsimState},
    ledger::Ledger,
};

const INTERFACE: &str = "org.aiesim.AiEsim1.Esim";

pub struct EsimObject {
    esim: Arc<Esim>,
    state: watch::Receiver<EsimState>,
    ledger: Ledger,
}

impl EsimObject {
    pub fn new(esim: Arc<Esim>, ledger: Ledger) -> Self {
        let state = esim.state();
        Self { esim, state, ledger }
    }

    fn now(&self) -> watch::Ref<'_, EsimState> {
        self.state.borrow()
    }
}

/// Every property of the interface, from one state; the names are the contract's.
fn properties(state: &EsimState) -> [(&'static str, Prop); 6] {
    [
        ("State", Prop::text(state.availability.as_str())),
        ("Eid", Prop::text(&state.eid)),
        ("Generation", Prop::text(&state.generation)),
        (
            "ActiveProfile",
            Prop::S(state.active_profile().map(|p| p.iccid.clone()).unwrap_or_default()),
        ),
        ("TokenBalance", Prop::T(state.account.as_ref().map_or(0, |a| a.balance))),
        ("LastError", Prop::text(&state.last_error)),
    ]
}

fn esim_error(error: &EsimError) -> DaemonError {
    DaemonError::EsimError(chain(error))
}

fn text(value: &str) -> OwnedValue {
    OwnedValue::from(zbus::Str::from(value.to_owned()))
}

#[interface(name = "org.aiesim.AiEsim1.Esim", spawn = false)]
impl EsimObject {
    #[zbus(property)]
    fn state(&self) -> String {
        self.now().availability.as_str().to_owned()
    }

    #[zbus(property)]
    fn eid(&self) -> String {
        self.now().eid.clone()
    }

    #[zbus(property)]
    fn generation(&self) -> String {
        self.now().generation.clone()
    }

    #[zbus(property)]
    fn active_profile(&self) -> String {
        self.now().active_profile().map(|p| p.iccid.clone()).unwrap_or_default()
    }

    #[zbus(property)]
    fn token_balance(&self) -> u64 {
        self.now().account.as_ref().map_or(0, |a| a.balance)
    }

    fn get_account(&self) -> HashMap<String, OwnedValue> {
        let state = self.now();
        let Some(account) = &state.account else {
            return HashMap::new();
        };
        let book = self.ledger.card();
        let billing = if book.fault.is_some() {
            "fault"
        } else if book.exhausted {
            "exhausted"
        } else if book.online {
            "online"
        } else {
            "offline"
        };
        let count = |n: usize| OwnedValue::from(u32::try_from(n).unwrap_or(u32::MAX));
        HashMap::from([
            ("balance".to_owned(), OwnedValue::from(account.balance)),
            ("sequence".to_owned(), OwnedValue::from(account.sequence)),
            ("state".to_owned(), text(&account.state)),
            ("owed".to_owned(), OwnedValue::from(book.owed)),
            ("pending_debits".to_owned(), count(book.pending)),
            ("receipts".to_owned(), count(book.receipts)),
            ("billing".to_owned(), text(billing)),
            ("billing_error".to_owned(), text(book.fault.as_deref().unwrap_or(""))),
        ])
    }

    fn list_endpoints(&self) -> Result<Vec<HashMap<String, OwnedValue>>, DaemonError> {
        let state = self.now();
        let Some(account) = &state.account else {
            return Ok(Vec::new());
        };
        account
            .endpoints
            .iter()
            .map(|e| {
                let models = OwnedValue::try_from(Value::from(e.models.clone()))
                    .map_err(|err| DaemonError::Failed(err.to_string()))?;
                Ok(HashMap::from([
                    ("name".to_owned(), text(&e.name)),
                    ("url".to_owned(), text(&e.url)),
                    ("tier".to_owned(), text(&e.tier)),
                    ("models".to_owned(), models),
                ]))
            })
            .collect()
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.now().last_error.clone()
    }

    fn get_info(&self) -> HashMap<String, OwnedValue> {
        let state = self.now();
        let mut info: HashMap<String, OwnedValue> = [
            ("eid", &state.eid),
            ("generation", &state.generation),
            ("svn", &state.svn),
            ("firmware", &state.firmware),
            ("default_dp_address", &state.default_dp_address),
            ("root_ds_address", &state.root_ds_address),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), text(value)))
        .collect();
        if let Some(free) = state.free_nvm {
            info.insert("free_nvm".to_owned(), OwnedValue::from(free));
        }
        for (key, ids) in [
            ("ci_pkid_verification", &state.ci_pkid_verification),
            ("ci_pkid_signing", &state.ci_pkid_signing),
        ] {
            if let Ok(ids) = OwnedValue::try_from(Value::from(ids.clone())) {
                info.insert(key.to_owned(), ids);
            }
        }
        info
    }

    fn list_profiles(&self) -> Vec<HashMap<String, OwnedValue>> {
        self.now()
            .profiles
            .iter()
            .map(|p| {
                let mut entry: HashMap<String, OwnedValue> = [
                    ("iccid", &p.iccid),
                    ("name", &p.name),
                    ("provider", &p.provider),
                    ("nickname", &p.nickname),
                    ("class", &p.class),
                    ("isdp_aid", &p.isdp_aid),
                ]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), text(value)))
                .collect();
                entry.insert("enabled".to_owned(), OwnedValue::from(p.enabled));
                entry
            })
            .collect()
    }

    async fn enable_profile(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        iccid: &str,
    ) -> Result<(), DaemonError> {
        authorize(connection, &sender_of(&header)?, Action::ManageEsim).await?;
        self.esim.enable(iccid).await.map_err(|e| esim_error(&e))
    }

    async fn disable_profile(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        iccid: &str,
    ) -> Result<(), DaemonError> {
        authorize(connection, &sender_of(&header)?, Action::ManageEsim).await?;
        self.esim.disable(iccid).await.map_err(|e| esim_error(&e))
    }
}

/// Signals every change of the eSIM's state until it stops or the object goes away.
pub async fn follow(connection: Connection, path: String, esim: Arc<Esim>) {
    let Ok(object) = connection
        .object_server()
        .interface::<_, EsimObject>(path.as_str())
        .await
    else {
        return;
    };
    let mut states = esim.state();
    let mut last = properties(&states.borrow_and_update());
    while states.changed().await.is_ok() {
        let now = properties(&states.borrow_and_update());
        if let Err(err) = changes::publish(object.signal_emitter(), INTERFACE, &last, &now).await {
            tracing::debug!(%err, "could not signal the eSIM's property changes");
        }
        last = now;
    }
}
