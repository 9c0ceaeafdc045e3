//! `org.aiesim.AiEsim1.Budget` on the root object: the ledger's budgets, each app its own.

use std::{collections::HashMap, sync::Arc};

use zbus::{Connection, OwnedVariant, Variant, interface, message::Header, object_server::SignalEmitter};

use super::{
    DaemonError, Shared,
    authority::{Action, authorize},
    broker::{owned_str, sender_of},
};
use crate::{
    broker::chain,
    esim::{EsimError, parse_voucher},
    identity::Identify as _,
    ledger::{AppBudget, Balance, policy::Key},
};

pub struct BudgetObject {
    pub shared: Arc<Shared>,
}

fn dict(budget: &AppBudget, zone: &str) -> HashMap<String, OwnedVariant> {
    let AppBudget {
        app,
        total: Balance { limit, spent, reserved },
        windows,
        rate,
        in_flight,
        available,
    } = budget;
    let mut d = HashMap::from([
        ("app".to_owned(), owned_str(app)),
        ("limit".to_owned(), OwnedVariant::from(*limit)),
        ("spent".to_owned(), OwnedVariant::from(*spent)),
        ("reserved".to_owned(), OwnedVariant::from(*reserved)),
        ("available".to_owned(), OwnedVariant::from(*available)),
        (
            "in_flight".to_owned(),
            OwnedVariant::from(u32::try_from(*in_flight).unwrap_or(u32::MAX)),
        ),
        ("timezone".to_owned(), owned_str(zone)),
    ]);
    for w in windows {
        let name = w.period.name();
        let left = w.limit.saturating_sub(w.spent.saturating_add(w.reserved));
        d.insert(format!("{name}_limit"), OwnedVariant::from(w.limit));
        d.insert(format!("{name}_spent"), OwnedVariant::from(w.spent));
        d.insert(format!("{name}_reserved"), OwnedVariant::from(w.reserved));
        d.insert(format!("{name}_available"), OwnedVariant::from(left));
        d.insert(format!("{name}_ends"), owned_str(&w.ends));
    }
    if let Some(rate) = rate {
        d.insert("per_minute".to_owned(), OwnedVariant::from(rate.per_minute));
        d.insert("per_minute_available".to_owned(), OwnedVariant::from(rate.available));
    }
    d
}

/// `GetMine`'s dictionary for `app` (also `BudgetExhausted`'s).
pub(super) fn mine(shared: &Shared, app: &str) -> HashMap<String, OwnedVariant> {
    let ledger = shared.broker.ledger();
    let mut d = dict(&ledger.budget(app), &ledger.time_zone());
    d.insert(
        "device_available".to_owned(),
        OwnedVariant::from(ledger.device_available()),
    );
    d
}

/// `Set`'s policy dictionary as changes: a limit key (`t`) sets it, `clear` (`as`) names keys
/// to return to the configured default.
fn policy_changes(policy: &HashMap<String, OwnedVariant>) -> Result<Vec<(Key, Option<u64>)>, DaemonError> {
    let bad = |m: String| DaemonError::InvalidArgument(m);
    let keys = || Key::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
    if policy.is_empty() {
        return Err(bad(format!(
            "the policy is empty: give at least one of {}, or clear",
            keys()
        )));
    }
    let mut changes = Vec::new();
    for (name, value) in policy {
        // Callers sometimes wrap a value twice (a variant in a variant); accept one level.
        let value = match &**value {
            Variant::Variant(v) => &**v,
            v => v,
        };
        if name == "clear" {
            let wrong = || {
                bad(format!(
                    "policy key \"clear\" must have D-Bus type as, not {}",
                    value.value_signature()
                ))
            };
            let Variant::Array(list) = value else {
                return Err(wrong());
            };
            for item in list.iter() {
                let Variant::Str(key) = item else { return Err(wrong()) };
                let key = Key::from_name(key.as_str()).ok_or_else(|| {
                    bad(format!(
                        "clear names \"{}\", which is not a policy key ({})",
                        key.as_str().escape_debug(),
                        keys()
                    ))
                })?;
                changes.push((key, None));
            }
            continue;
        }
        let key = Key::from_name(name).ok_or_else(|| {
            bad(format!(
                "unknown policy key \"{}\": use {} or clear",
                name.escape_debug(),
                keys()
            ))
        })?;
        let Variant::U64(n) = value else {
            return Err(bad(format!(
                "policy key \"{name}\" must have D-Bus type t, not {}",
                value.value_signature()
            )));
        };
        changes.push((key, Some(*n)));
    }
    let mut named: Vec<Key> = changes.iter().map(|(k, _)| *k).collect();
    named.sort_by_key(|k| k.name());
    if let Some(twice) = named.windows(2).find_map(|w| (w[0] == w[1]).then_some(w[0])) {
        return Err(bad(format!("policy key \"{twice}\" is both set and cleared")));
    }
    Ok(changes)
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
        let ledger = self.shared.broker.ledger();
        let zone = ledger.time_zone();
        Ok(ledger.budgets().iter().map(|b| dict(b, &zone)).collect())
    }

    async fn set(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        app: String,
        policy: HashMap<String, OwnedVariant>,
    ) -> Result<(), DaemonError> {
        authorize(connection, &sender_of(&header)?, Action::ManageBudgets).await?;
        let changes = policy_changes(&policy)?;
        self.shared
            .broker
            .ledger()
            .set_policy(&app, &changes)
            .await
            .map_err(|e| match e {
                crate::ledger::LedgerError::Policy(_) => DaemonError::InvalidArgument(chain(&e)),
                e => DaemonError::Failed(chain(&e)),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: Vec<(&str, Variant<'_>)>) -> HashMap<String, OwnedVariant> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.try_into_owned().unwrap()))
            .collect()
    }

    fn refused(entries: Vec<(&str, Variant<'_>)>) -> String {
        match policy_changes(&policy(entries)) {
            Err(DaemonError::InvalidArgument(m)) => m,
            other => panic!("not refused as InvalidArgument: {other:?}"),
        }
    }

    #[test]
    fn limits_set_and_keys_cleared() {
        let mut changes = policy_changes(&policy(vec![
            ("daily", Variant::from(500u64)),
            ("per_minute", Variant::Variant(Box::new(Variant::from(60u64)))),
            ("clear", Variant::from(vec!["monthly", "total"])),
        ]))
        .unwrap();
        changes.sort_by_key(|(k, _)| k.name());
        assert_eq!(
            changes,
            [
                (Key::Daily, Some(500)),
                (Key::Monthly, None),
                (Key::PerMinute, Some(60)),
                (Key::Total, None)
            ]
        );
    }

    #[test]
    fn bad_keys_and_types_are_named() {
        assert_eq!(
            refused(vec![("weekly", Variant::from(5u64))]),
            "unknown policy key \"weekly\": use total, daily, monthly, per_minute or clear"
        );
        assert_eq!(
            refused(vec![("daily", Variant::from(5u32))]),
            "policy key \"daily\" must have D-Bus type t, not u"
        );
        assert_eq!(
            refused(vec![("daily", Variant::from("5"))]),
            "policy key \"daily\" must have D-Bus type t, not s"
        );
        assert_eq!(
            refused(vec![("clear", Variant::from("daily"))]),
            "policy key \"clear\" must have D-Bus type as, not s"
        );
        assert!(
            refused(vec![("clear", Variant::from(vec!["hourly"]))]).contains("\"hourly\", which is not a policy key")
        );
        assert!(refused(vec![]).starts_with("the policy is empty"));
        assert_eq!(
            refused(vec![
                ("daily", Variant::from(5u64)),
                ("clear", Variant::from(vec!["daily"]))
            ]),
            "policy key \"daily\" is both set and cleared"
        );
    }
}
