//! What a reload (SIGHUP) may change while the daemon runs: the endpoints, the budgets and the
//! log filter take effect at once. Everything else (the bus, the modem, the fast path, the cloud
//! client, request limits, the journal, the time zone, token caps) is read at start only; a
//! reload that changes it says which keys wait for a restart.

use crate::config::Config;

/// What a newly read configuration changes, against the one in effect and the one started with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The `[[endpoint]]` list differs: the router takes the new one.
    pub endpoints: bool,
    /// The budget limits differ: the ledger takes the new ones.
    pub budgets: bool,
    /// The log filter differs.
    pub log: bool,
    /// Keys (tables or `table.key`) that differ from the started configuration and are only
    /// read at start.
    pub needs_restart: Vec<&'static str>,
}

impl Plan {
    /// Compares `new` with `current` (in effect now) and with `started` (what the daemon was
    /// started on, for what only a restart applies).
    pub fn new(started: &Config, current: &Config, new: &Config) -> Self {
        let b = (&started.budget, &new.budget);
        let at_start = [
            ("bus", started.bus != new.bus),
            ("modem", started.modem != new.modem),
            ("fastpath", started.fastpath != new.fastpath),
            ("cloud", started.cloud != new.cloud),
            ("requests", started.requests != new.requests),
            ("budget.journal", b.0.journal != b.1.journal),
            ("budget.timezone", b.0.timezone != b.1.timezone),
            (
                "budget.default_max_tokens",
                b.0.default_max_tokens != b.1.default_max_tokens,
            ),
            ("budget.max_tokens_cap", b.0.max_tokens_cap != b.1.max_tokens_cap),
        ];
        Self {
            endpoints: current.endpoints != new.endpoints,
            budgets: current.budget.budgets() != new.budget.budgets(),
            log: current.log_filter() != new.log_filter(),
            needs_restart: at_start
                .into_iter()
                .filter_map(|(key, differs)| differs.then_some(key))
                .collect(),
        }
    }

    /// One line for the log and for D-Bus, e.g. "applied: endpoints, budgets; needs a
    /// restart: modem".
    pub fn summary(&self) -> String {
        let applied: Vec<&str> = [
            ("endpoints", self.endpoints),
            ("budgets", self.budgets),
            ("log", self.log),
        ]
        .into_iter()
        .filter_map(|(what, changed)| changed.then_some(what))
        .collect();
        let mut line = if applied.is_empty() {
            "applied: nothing changed".to_owned()
        } else {
            format!("applied: {}", applied.join(", "))
        };
        if !self.needs_restart.is_empty() {
            line.push_str("; needs a restart: ");
            line.push_str(&self.needs_restart.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).unwrap()
    }

    #[test]
    fn what_applies_now_and_what_waits_for_a_restart() {
        let started = config("[budget]\napp_tokens = 100\n");
        let same = Plan::new(&started, &started, &started.clone());
        assert_eq!(same, Plan::default());
        assert_eq!(same.summary(), "applied: nothing changed");

        let new = config(
            "log = \"debug\"\n[budget]\napp_tokens = 200\nmax_tokens_cap = 4096\n[modem]\ndevice = \"\"\n\n[[endpoint]]\nname = \"a\"\nurl = \"http://a/v1\"\ntier = \"metro\"\nmodels = [\"m\"]\n",
        );
        let plan = Plan::new(&started, &started, &new);
        assert!(plan.endpoints && plan.budgets && plan.log);
        assert_eq!(plan.needs_restart, ["modem", "budget.max_tokens_cap"]);
        assert_eq!(
            plan.summary(),
            "applied: endpoints, budgets, log; needs a restart: modem, budget.max_tokens_cap"
        );
        // Applied once, the same file again changes nothing more, yet still waits for a restart.
        let again = Plan::new(&started, &new, &new);
        assert!(!again.endpoints && !again.budgets && !again.log);
        assert_eq!(again.needs_restart, ["modem", "budget.max_tokens_cap"]);
        // A calendar budget or a rate is a budget too; the time zone is not reloaded.
        let windows = config("[budget]\napp_tokens = 100\napp_daily_tokens = 50\ntimezone = \"UTC\"\n");
        let plan = Plan::new(&started, &started, &windows);
        assert!(plan.budgets);
        assert_eq!(plan.needs_restart, ["budget.timezone"]);
    }
}
