//! `org.aiesim.AiEsim1.Budget` on the root object: the ledger's budgets, each app its own.

use std::{collections::HashMap, sync::Arc};

use zbus::{Connection, OwnedVariant, interface, message::Header, object_server::SignalEmitter};

use super::{
    DaemonError, Shared,
    authority::{Action, authorize},
    broker::{owned_str, sender_of},
};
use crate::{
    broker::chain,
    esim::{EsimError, parse_voucher},
    identity::Identify as _,
    ledger::Balance,
};

pub struct BudgetObject {
    pub shared: Arc<Shared>,
}

fn dict(app: &str, balance: Balance, in_flight: usize) -> HashMap<String, OwnedVariant> {
    let Balance { limit, spent, reserved } = balance;
    HashMap::from([
        ("app".to_owned(), owned_str(app)),
        ("limit".to_owned(), OwnedVariant::from(limit)),
        ("spent".to_owned(), OwnedVariant::from(spent)),
        ("reserved".to_owned(), OwnedVariant::from(reserved)),
        (
            "available".to_owned(),
            OwnedVariant::from(limit.saturating_sub(spent.saturating_add(reserved))),
        ),
        (
            "in_flight".to_owned(),
            OwnedVariant::from(u32::try_from(in_flight).unwrap_or(u32::MAX)),
        ),
    ])
}

/// `GetMine`'s dictionary for `app` (also `BudgetExhausted`'s).
pub(super) fn mine(shared: &Shared, app: &str) -> HashMap<String, OwnedVariant> {
    let ledger = shared.broker.ledger();
    let balance = ledger.balance(app);
    let device_available = ledger.device_available();
    let mut d = dict(app, balance, ledger.in_flight(app));
    let available = balance
        .limit
        .saturating_sub(balance.spent.saturating_add(balance.reserved))
        .min(device_available);
    d.insert("available".to_owned(), OwnedVariant::from(available));
    d.insert("device_available".to_owned(), OwnedVariant::from(device_available));
    d
}

#[interface(name = "org.aiesim.AiEsim1.Budget", spawn = false)]
impl BudgetObject {
    async fn get_mine(&self, #[zbus(header)] header: Header<'_>) -> Result<HashMap<String, OwnedVariant>, DaemonError> {
        let sender = sender_of(&header)?;
        let caller = self.shared.identity.identify(&sender).await?;
        Ok(mine(&self.shared, &caller.app))
    }

    async fn top_up(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        voucher: Vec<u8>,
    ) -> Result<HashMap<String, OwnedVariant>, DaemonError> {
        authorize(connection, &sender_of(&header)?, Action::ManageBudgets).await?;
        let voucher = parse_voucher(&voucher).map_err(|e| DaemonError::InvalidArgument(chain(&e)))?;
        let biller = self.shared.biller.as_ref().ok_or_else(|| {
            DaemonError::ModemUnavailable("no modem is configured, so there is no card to top up".into())
        })?;
        let top_up = biller.top_up(voucher).await.map_err(|e| match e {
            EsimError::BadVoucher(_) => DaemonError::InvalidArgument(chain(&e)),
            e => DaemonError::EsimError(chain(&e)),
        })?;
        Ok(HashMap::from([
            ("amount".to_owned(), OwnedVariant::from(top_up.amount)),
            ("balance".to_owned(), OwnedVariant::from(top_up.balance)),
            ("sequence".to_owned(), OwnedVariant::from(top_up.sequence)),
        ]))
    }

    /// Declared for introspection; the broker sends it to the refused caller only (unicast).
    #[zbus(signal)]
    async fn budget_exhausted(emitter: &SignalEmitter<'_>, budget: HashMap<String, OwnedVariant>) -> zbus::Result<()>;

    async fn list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DaemonError> {
        authorize(connection, &sender_of(&header)?, Action::ManageBudgets).await?;
        Ok(self
            .shared
            .broker
            .ledger()
            .apps()
            .into_iter()
            .map(|(app, balance, in_flight)| dict(&app, balance, in_flight))
            .collect())
    }
}
