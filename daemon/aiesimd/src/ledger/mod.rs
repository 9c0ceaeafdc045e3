//! The token ledger: reserve before a request, charge real usage after, and owe the eSIM's token
//! account what was spent.
//!
//! One writer: a mutex around plain state, so concurrent requests can never spend the same
//! headroom twice, and every change is appended to the journal under that lock, so the journal's
//! order is the ledger's. The journal (`aiesim-journal`, records in [`record`]) is group-committed:
//! a request's tokens are journalled as delivered *before* they reach the app
//! ([`Reservation::progress`]), and its end before its final event ([`Reservation::commit`]).
//! After a crash, replay charges every request that was still open what it had delivered —
//! never less, and never twice — then writes a compact snapshot.
//!
//! A [`Reservation`] is a guard: dropped without a commit (a path that forgot, a panic), it
//! charges what was delivered and releases the rest. Nothing stays reserved.
//!
//! **The card as billing authority.** Once the eSIM's AI applet is known ([`Ledger::card_online`]),
//! every commit also owes the card `ceil(charged × price / 1000)` account tokens, queued as a
//! pending debit that the eSIM's biller takes to the card in order and settles with a verified
//! receipt. Admission then also needs `owed + cost ≤ balance`, and while the card is out of reach
//! `owed + cost ≤ the offline allowance`, where `owed` counts pending debits and what open
//! requests may still cost.
//!
//! **Budgets.** Each app (and, for `uid-N/unit`, also its user `uid-N`) and the device have a
//! lifetime total (`app_tokens`, `device_tokens`) and optional calendar budgets (daily, monthly,
//! in the configured time zone); a request must fit all of them. A request counts in the windows
//! it was admitted in ([`window`]), so a window rolls over without touching spend still landing
//! in the one before. A tokens-per-minute limit per app ([`rate`]) is a separate thing: a rate,
//! not a budget, kept in memory only. Administrators override an app's limits ([`policy`]), and
//! the device's under the name [`DEVICE`] (total and windows; a rate is per app); the overrides
//! are journalled.

pub mod policy;
pub mod rate;
pub mod record;
pub mod window;

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::{Arc, Mutex, MutexGuard, RwLock},
};

use aiesim_journal::{Journal, JournalError, Lsn};
use prost::Message as _;
use tokio::sync::Notify;

use self::{
    policy::{Key, Policy, PolicyError},
    rate::{RateError, TokenBucket},
    record::{
        AppPolicy, AppSpent, CardRecord, Commit, DebitDone, DebitSent, Kind, PendingRecord, Progress, Record, Reserve,
        Snapshot, WindowSpent,
    },
    window::{Calendar, Period, Windows},
};

/// The journal is compacted when it grows past this.
const COMPACT_AT: u64 = 1 << 20;
/// Receipts a snapshot keeps for reconciliation, newest last.
const RECEIPTS_KEPT: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("app \"{app}\" has {available} tokens left, the request needs up to {needed}")]
    AppExhausted { app: String, available: u64, needed: u64 },
    #[error("the device has {available} tokens left, the request needs up to {needed}")]
    DeviceExhausted { available: u64, needed: u64 },
    #[error("{who} has {available} tokens left {period} (until {ends}), the request needs up to {needed}")]
    WindowExhausted {
        /// `app "x"` or `the device`.
        who: String,
        period: Period,
        available: u64,
        needed: u64,
        ends: String,
    },
    #[error("app \"{app}\" is limited to {per_minute} tokens a minute")]
    RateLimited {
        app: String,
        per_minute: u64,
        #[source]
        source: RateError,
    },
    #[error("the budget policy is not valid")]
    Policy(#[from] PolicyError),
    #[error(
        "the eSIM's token account has {available} account tokens left after what is owed, the request may cost {needed}"
    )]
    CardExhausted { available: u64, needed: u64 },
    #[error(
        "the eSIM is out of reach: its offline allowance has {available} account tokens left, the request may cost {needed}"
    )]
    OfflineAllowance { available: u64, needed: u64 },
    #[error(
        "the request may cost {needed} account tokens, more than the card's largest debit ({max}); ask for fewer max_tokens"
    )]
    DebitTooLarge { needed: u64, max: u64 },
    #[error("spending is stopped: {0}")]
    CardFault(String),
    #[error("the ledger's journal cannot be written: {0}")]
    Journal(String),
    #[error("cannot open the ledger's journal")]
    Open(#[source] JournalError),
    #[error("record {index} of the ledger's journal cannot be read (written by a newer aiesimd?)")]
    Corrupt {
        index: usize,
        #[source]
        source: prost::DecodeError,
    },
}

/// Budgets the ledger enforces: the defaults for every app, and the device's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Each app's lifetime total (an app's policy may override it).
    pub app_tokens: u64,
    pub device_tokens: u64,
    /// Caps the card's offline allowance (`None`: the card's own).
    pub offline_tokens: Option<u64>,
    /// Each app's calendar budgets and rate limit (`None`: none).
    pub app_daily: Option<u64>,
    pub app_monthly: Option<u64>,
    pub app_per_minute: Option<u64>,
    pub device_daily: Option<u64>,
    pub device_monthly: Option<u64>,
}

impl Default for Budgets {
    /// No limits at all.
    fn default() -> Self {
        Self {
            app_tokens: u64::MAX,
            device_tokens: u64::MAX,
            offline_tokens: None,
            app_daily: None,
            app_monthly: None,
            app_per_minute: None,
            device_daily: None,
            device_monthly: None,
        }
    }
}

/// The account name `Budget.Set` and `List` give the device: no app id is a bare word (apps
/// are units, `NAME.service`, or users' `uid-N`).
pub const DEVICE: &str = "device";

impl Budgets {
    /// The device's limits under its `policy` (set with [`DEVICE`]); it has no rate limit.
    fn for_device(&self, policy: Option<&Policy>) -> Policy {
        let p = policy.copied().unwrap_or_default();
        Policy {
            total: Some(p.total.unwrap_or(self.device_tokens)),
            daily: p.daily.or(self.device_daily),
            monthly: p.monthly.or(self.device_monthly),
            per_minute: None,
        }
    }

    /// The limits that apply to account `name` under `policy`.
    fn for_app(&self, policy: Option<&Policy>) -> Policy {
        let p = policy.copied().unwrap_or_default();
        Policy {
            total: Some(p.total.unwrap_or(self.app_tokens)),
            daily: p.daily.or(self.app_daily),
            monthly: p.monthly.or(self.app_monthly),
            per_minute: p.per_minute.or(self.app_per_minute),
        }
    }
}

fn window_limit(limits: &Policy, period: Period) -> Option<u64> {
    match period {
        Period::Day => limits.daily,
        Period::Month => limits.monthly,
    }
}

/// One calendar window of an account as it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowBalance {
    pub period: Period,
    pub limit: u64,
    pub spent: u64,
    pub reserved: u64,
    /// When it ends, local time.
    pub ends: String,
}

/// An app's rate limit as it stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBalance {
    pub per_minute: u64,
    pub available: u64,
}

/// Everything about one app's budgets, for `GetMine` and `List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppBudget {
    pub app: String,
    pub total: Balance,
    /// Its calendar budgets that have a limit.
    pub windows: Vec<WindowBalance>,
    pub rate: Option<RateBalance>,
    pub in_flight: usize,
    /// The most one request of the app could reserve now: the least left of each budget it
    /// spends from (its own, its user's, the device's).
    pub available: u64,
}

/// What one app has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub limit: u64,
    pub spent: u64,
    pub reserved: u64,
}

/// The card's token account as the biller read and verified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardView {
    pub card_id: [u8; 16],
    pub balance: u64,
    pub sequence: u32,
    /// What the operator lets the device spend without reaching the card.
    pub allowance: u64,
    /// The most one DEBIT may take: a request that could cost more is refused.
    pub max_debit: u64,
}

/// A debit owed to the card, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingDebit {
    pub id: u64,
    pub amount: u64,
    pub digest: [u8; 32],
    /// Set once a DEBIT was sent: resent with the same nonce.
    pub nonce: Option<[u8; 16]>,
}

/// One receipt as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalledReceipt {
    pub id: u64,
    pub amount: u64,
    pub balance: u64,
    pub sequence: u32,
    /// Empty when the card completed the debit but the receipt was lost in a crash.
    pub signature: Vec<u8>,
}

/// The card side of the ledger, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardBook {
    pub card: Option<CardView>,
    pub online: bool,
    pub exhausted: bool,
    pub fault: Option<String>,
    /// Pending debits to the current card (account tokens) and their count.
    pub owed: u64,
    pub pending: usize,
    pub receipts: usize,
}

/// Spend in the latest calendar window of one period; a later key starts a new window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    key: u32,
    spent: u64,
    reserved: u64,
}

impl Window {
    fn hold(&mut self, key: u32, amount: u64) {
        if key > self.key {
            *self = Self {
                key,
                spent: 0,
                reserved: amount,
            };
        } else if key == self.key {
            self.reserved = self.reserved.saturating_add(amount);
        }
        // An earlier key: a window already closed, where nothing is checked any more.
    }

    fn settle(&mut self, key: u32, amount: u64, charged: u64) {
        if key == self.key {
            self.reserved = self.reserved.saturating_sub(amount);
            self.spent = self.spent.saturating_add(charged);
        }
    }

    /// Spent and reserved in window `key` (nothing if this is an earlier one).
    fn at(self, key: u32) -> (u64, u64) {
        if self.key == key {
            (self.spent, self.reserved)
        } else {
            (0, 0)
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Account {
    spent: u64,
    reserved: u64,
    day: Window,
    month: Window,
}

impl Account {
    fn window(&self, period: Period) -> Window {
        match period {
            Period::Day => self.day,
            Period::Month => self.month,
        }
    }

    fn hold(&mut self, windows: Windows, amount: u64) {
        self.reserved = self.reserved.saturating_add(amount);
        self.day.hold(windows.day, amount);
        self.month.hold(windows.month, amount);
    }

    fn settle(&mut self, windows: Windows, amount: u64, charged: u64) {
        self.reserved = self.reserved.saturating_sub(amount);
        self.spent = self.spent.saturating_add(charged);
        self.day.settle(windows.day, amount, charged);
        self.month.settle(windows.month, amount, charged);
    }

    /// Tokens left under `limit` in the window of `period` that `now` is in.
    fn window_free(&self, period: Period, now: Windows, limit: u64) -> u64 {
        let (spent, reserved) = self.window(period).at(now.key(period));
        limit.saturating_sub(spent.saturating_add(reserved))
    }

    fn windows_spent(&self) -> WindowSpent {
        WindowSpent {
            day: self.day.key,
            day_spent: self.day.spent,
            month: self.month.key,
            month_spent: self.month.spent,
        }
    }

    fn from_spent(spent: u64, w: Option<WindowSpent>) -> Self {
        let w = w.unwrap_or_default();
        Self {
            spent,
            reserved: 0,
            day: Window {
                key: w.day,
                spent: w.day_spent,
                reserved: 0,
            },
            month: Window {
                key: w.month,
                spent: w.month_spent,
                reserved: 0,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Open {
    app: String,
    amount: u64,
    used: u64,
    price_per_1k: u64,
    digest: Vec<u8>,
    windows: Windows,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    apps: HashMap<String, Account>,
    device: Account,
    open: HashMap<u64, Open>,
    pending: VecDeque<PendingRecord>,
    receipts: VecDeque<DebitDone>,
    card: Option<CardRecord>,
    online: bool,
    exhausted: bool,
    fault: Option<String>,
    /// The journal failed: nothing more can be spent durably.
    failed: Option<String>,
    /// Administrators' overrides, by account.
    policies: HashMap<String, Policy>,
    /// Rate limits by account (not journalled: a restart refills them).
    rates: HashMap<String, TokenBucket>,
}

/// The accounts a request of `app` spends from: the app's own, and for `uid-N/unit` also the
/// user's `uid-N` (identity.rs namespaces what users name by their uid).
fn accounts(app: &str) -> impl Iterator<Item = &str> {
    let parent = app.split_once('/').map(|(user, _)| user);
    std::iter::once(app).chain(parent)
}

/// Account tokens for `tokens` model tokens at `price_per_1k`, rounded up.
fn cost(tokens: u64, price_per_1k: u64) -> u64 {
    let c = (u128::from(tokens) * u128::from(price_per_1k)).div_ceil(1000);
    u64::try_from(c).unwrap_or(u64::MAX)
}

impl State {
    /// Folds one journalled record in; replay and the live path share it. Records naming
    /// unknown requests are ignored, so a damaged journal cannot make replay panic.
    fn apply(&mut self, kind: Kind) {
        match kind {
            Kind::Reserve(Reserve {
                id,
                app,
                amount,
                price_per_1k,
                digest,
                day,
                month,
            }) => {
                self.next_id = self.next_id.max(id.saturating_add(1));
                let windows = Windows { day, month };
                for name in accounts(&app) {
                    self.apps.entry(name.to_owned()).or_default().hold(windows, amount);
                }
                self.device.hold(windows, amount);
                self.open.insert(
                    id,
                    Open {
                        app,
                        amount,
                        used: 0,
                        price_per_1k,
                        digest,
                        windows,
                    },
                );
            }
            Kind::Progress(Progress { id, used }) => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.used = open.used.max(used.min(open.amount));
                }
            }
            Kind::Commit(Commit {
                id,
                charged,
                debit,
                card_id,
            }) => {
                let Some(open) = self.open.remove(&id) else { return };
                let charged = charged.min(open.amount);
                for name in accounts(&open.app) {
                    let acct = self.apps.entry(name.to_owned()).or_default();
                    acct.settle(open.windows, open.amount, charged);
                }
                self.device.settle(open.windows, open.amount, charged);
                if debit > 0 {
                    self.pending.push_back(PendingRecord {
                        id,
                        amount: debit,
                        digest: open.digest,
                        card_id,
                        nonce: Vec::new(),
                    });
                }
            }
            Kind::DebitSent(DebitSent { id, nonce }) => {
                if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
                    p.nonce = nonce;
                }
            }
            Kind::DebitDone(done) => {
                let Some(i) = self.pending.iter().position(|p| p.id == done.id) else {
                    return;
                };
                self.pending.remove(i);
                if let Some(card) = self.card.as_mut().filter(|c| c.card_id == done.card_id) {
                    card.balance = done.balance;
                    card.sequence = done.sequence;
                }
                self.receipts.push_back(done);
                while self.receipts.len() > RECEIPTS_KEPT {
                    self.receipts.pop_front();
                }
            }
            Kind::Snapshot(snapshot) => *self = Self::from_snapshot(snapshot),
            Kind::Policy(p) => {
                let policy = Policy {
                    total: p.total,
                    daily: p.daily,
                    monthly: p.monthly,
                    per_minute: p.per_minute,
                };
                if policy.is_default() {
                    self.policies.remove(&p.app);
                } else {
                    self.policies.insert(p.app, policy);
                }
            }
            Kind::TopUp(top_up) => {
                if let Some(card) = self.card.as_mut().filter(|c| c.card_id == top_up.card_id) {
                    card.balance = top_up.balance;
                    card.sequence = top_up.sequence;
                }
            }
        }
    }

    fn from_snapshot(snapshot: Snapshot) -> Self {
        let Snapshot {
            next_id,
            apps,
            device_spent,
            card,
            pending,
            receipts,
            device_windows,
            policies,
        } = snapshot;
        Self {
            next_id,
            apps: apps
                .into_iter()
                .map(|a| (a.app, Account::from_spent(a.spent, a.windows)))
                .collect(),
            device: Account::from_spent(device_spent, device_windows),
            card,
            pending: pending.into(),
            receipts: receipts.into(),
            policies: policies
                .into_iter()
                .map(|p| {
                    let policy = Policy {
                        total: p.total,
                        daily: p.daily,
                        monthly: p.monthly,
                        per_minute: p.per_minute,
                    };
                    (p.app, policy)
                })
                .collect(),
            ..Self::default()
        }
    }

    fn snapshot(&self) -> Vec<Record> {
        let mut apps: Vec<AppSpent> = self
            .apps
            .iter()
            .filter(|(_, a)| a.spent > 0)
            .map(|(app, a)| AppSpent {
                app: app.clone(),
                spent: a.spent,
                windows: Some(a.windows_spent()),
            })
            .collect();
        apps.sort_by(|a, b| a.app.cmp(&b.app));
        let mut policies: Vec<AppPolicy> = self.policies.iter().map(|(app, p)| app_policy(app, p)).collect();
        policies.sort_by(|a, b| a.app.cmp(&b.app));
        let mut records = vec![Record {
            kind: Some(Kind::Snapshot(Snapshot {
                next_id: self.next_id,
                apps,
                device_spent: self.device.spent,
                card: self.card.clone(),
                pending: self.pending.iter().cloned().collect(),
                receipts: self.receipts.iter().cloned().collect(),
                device_windows: Some(self.device.windows_spent()),
                policies,
            })),
        }];
        let mut open: Vec<_> = self.open.iter().collect();
        open.sort_by_key(|(id, _)| **id);
        for (id, o) in open {
            records.push(Record {
                kind: Some(Kind::Reserve(Reserve {
                    id: *id,
                    app: o.app.clone(),
                    amount: o.amount,
                    price_per_1k: o.price_per_1k,
                    digest: o.digest.clone(),
                    day: o.windows.day,
                    month: o.windows.month,
                })),
            });
            if o.used > 0 {
                records.push(Record {
                    kind: Some(Kind::Progress(Progress { id: *id, used: o.used })),
                });
            }
        }
        records
    }

    /// The record that ends open request `id` having used `used` tokens: the charge (at most
    /// the reservation) and, when a card bills, what it owes the card.
    fn commit_for(&self, id: u64, used: u64) -> Option<Commit> {
        let open = self.open.get(&id)?;
        let charged = used.min(open.amount);
        let (debit, card_id) = match self.card_id() {
            Some(card_id) if charged > 0 => (cost(charged, open.price_per_1k), card_id.to_vec()),
            _ => (0, Vec::new()),
        };
        Some(Commit {
            id,
            charged,
            debit,
            card_id,
        })
    }

    /// The latest windows any request was admitted in: every reserve moves the device's.
    fn latest(&self) -> Windows {
        Windows {
            day: self.device.day.key,
            month: self.device.month.key,
        }
    }

    /// Tokens one more request of `app` may reserve under the app's (and its user's) budgets
    /// and the device's, at windows `now`; the first budget that binds, if any binds below
    /// `needed`, as the error.
    fn free(
        &self,
        budgets: &Budgets,
        calendar: &Calendar,
        app: &str,
        now: Windows,
        needed: u64,
    ) -> Result<u64, LedgerError> {
        let mut free = u64::MAX;
        for name in accounts(app) {
            let acct = self.apps.get(name).copied().unwrap_or_default();
            let limits = budgets.for_app(self.policies.get(name));
            let total = limits.total.unwrap_or(u64::MAX);
            let app_free = total.saturating_sub(acct.spent.saturating_add(acct.reserved));
            if needed > app_free {
                return Err(LedgerError::AppExhausted {
                    app: name.to_owned(),
                    available: app_free,
                    needed,
                });
            }
            free = free.min(app_free);
            for period in Period::ALL {
                let Some(limit) = window_limit(&limits, period) else {
                    continue;
                };
                let available = acct.window_free(period, now, limit);
                if needed > available {
                    return Err(LedgerError::WindowExhausted {
                        who: format!("app \"{name}\""),
                        period,
                        available,
                        needed,
                        ends: calendar.ends(period, now.key(period)),
                    });
                }
                free = free.min(available);
            }
        }
        self.device_free(budgets, calendar, now, needed)
            .map(|device| free.min(device))
    }

    /// Tokens one more request may reserve under the device's budgets.
    fn device_free(
        &self,
        budgets: &Budgets,
        calendar: &Calendar,
        now: Windows,
        needed: u64,
    ) -> Result<u64, LedgerError> {
        let limits = budgets.for_device(self.policies.get(DEVICE));
        let device_free = limits
            .total
            .unwrap_or(u64::MAX)
            .saturating_sub(self.device.spent.saturating_add(self.device.reserved));
        if needed > device_free {
            return Err(LedgerError::DeviceExhausted {
                available: device_free,
                needed,
            });
        }
        let mut free = device_free;
        for period in Period::ALL {
            let Some(limit) = window_limit(&limits, period) else {
                continue;
            };
            let available = self.device.window_free(period, now, limit);
            if needed > available {
                return Err(LedgerError::WindowExhausted {
                    who: "the device".to_owned(),
                    period,
                    available,
                    needed,
                    ends: calendar.ends(period, now.key(period)),
                });
            }
            free = free.min(available);
        }
        Ok(free)
    }

    /// Checks (and refills) the rate limits `app` spends from; takes nothing.
    fn check_rates(
        &mut self,
        budgets: &Budgets,
        app: &str,
        needed: u64,
        now: std::time::Instant,
    ) -> Result<(), LedgerError> {
        for name in accounts(app) {
            let Some(per_minute) = budgets.for_app(self.policies.get(name)).per_minute else {
                self.rates.remove(name);
                continue;
            };
            if !self.rates.contains_key(name) {
                self.rates.insert(name.to_owned(), TokenBucket::new(per_minute, now));
            }
            let bucket = self.rates.get_mut(name).expect("inserted above");
            if bucket.per_minute() != per_minute {
                bucket.set_per_minute(per_minute, now);
            }
            bucket.check(needed, now).map_err(|source| LedgerError::RateLimited {
                app: name.to_owned(),
                per_minute,
                source,
            })?;
        }
        Ok(())
    }

    fn card_id(&self) -> Option<&[u8]> {
        self.card.as_ref().map(|c| c.card_id.as_slice())
    }

    /// Account tokens owed to the current card: pending debits plus what open requests may
    /// still cost.
    fn owed(&self) -> u64 {
        let Some(card_id) = self.card_id() else { return 0 };
        let pending: u64 = self
            .pending
            .iter()
            .filter(|p| p.card_id == card_id)
            .map(|p| p.amount)
            .sum();
        let open: u64 = self.open.values().map(|o| cost(o.amount, o.price_per_1k)).sum();
        pending.saturating_add(open)
    }
}

fn app_policy(app: &str, p: &Policy) -> AppPolicy {
    let Policy {
        total,
        daily,
        monthly,
        per_minute,
    } = *p;
    AppPolicy {
        app: app.to_owned(),
        total,
        daily,
        monthly,
        per_minute,
    }
}

struct Inner {
    /// From the configuration; replaced as a whole on reload.
    budgets: RwLock<Budgets>,
    calendar: Calendar,
    state: Mutex<State>,
    journal: Option<Journal>,
    /// Wakes the biller when a debit is queued.
    debits: Notify,
}

/// The ledger; clones share it.
#[derive(Clone)]
pub struct Ledger(Arc<Inner>);

impl Ledger {
    /// A ledger that keeps nothing across restarts (tests, and `--no-journal` style setups),
    /// on the machine's clocks and local time zone.
    pub fn in_memory(budgets: Budgets) -> Self {
        Self::in_memory_on(budgets, Calendar::default())
    }

    /// As [`Ledger::in_memory`], with calendar windows read from `calendar`.
    pub fn in_memory_on(budgets: Budgets, calendar: Calendar) -> Self {
        Self(Arc::new(Inner {
            budgets: RwLock::new(budgets),
            calendar,
            state: Mutex::new(State::default()),
            journal: None,
            debits: Notify::new(),
        }))
    }

    /// Opens the journal at `path` and replays it: requests that were open when the daemon
    /// stopped are charged what they had delivered, then the journal is compacted.
    pub fn open(path: &Path, budgets: Budgets) -> Result<Self, LedgerError> {
        Self::open_on(path, budgets, Calendar::default())
    }

    /// As [`Ledger::open`], with calendar windows read from `calendar`.
    pub fn open_on(path: &Path, budgets: Budgets, calendar: Calendar) -> Result<Self, LedgerError> {
        let (journal, replay) = Journal::open(path).map_err(LedgerError::Open)?;
        let mut state = State::default();
        for (index, bytes) in replay.records.iter().enumerate() {
            let record = Record::decode(bytes.as_slice()).map_err(|source| LedgerError::Corrupt { index, source })?;
            if let Some(kind) = record.kind {
                state.apply(kind);
            }
        }
        let settled = settle_replayed(&mut state);
        if replay.dropped_bytes > 0 {
            tracing::warn!(
                journal = %path.display(),
                dropped_bytes = replay.dropped_bytes,
                "the journal ended in a torn record (a crash while writing); it was cut there"
            );
        }
        tracing::info!(
            journal = %path.display(),
            records = replay.records.len(),
            settled_requests = settled,
            device_spent = state.device.spent,
            pending_debits = state.pending.len(),
            "ledger replayed"
        );
        let records: Vec<Vec<u8>> = state.snapshot().iter().map(prost::Message::encode_to_vec).collect();
        journal
            .compact(records.iter().map(Vec::as_slice))
            .map_err(LedgerError::Open)?;
        Ok(Self(Arc::new(Inner {
            budgets: RwLock::new(budgets),
            calendar,
            state: Mutex::new(state),
            journal: Some(journal),
            debits: Notify::new(),
        })))
    }

    /// The configured budgets as they stand.
    fn limits(&self) -> Budgets {
        *self.0.budgets.read().expect("budgets lock")
    }

    /// Replaces the configured budgets (a reload). What was spent stays spent: a lower limit
    /// refuses new requests at once, and requests already admitted finish.
    pub fn set_budgets(&self, budgets: Budgets) {
        *self.0.budgets.write().expect("budgets lock") = budgets;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().expect("ledger lock")
    }

    /// Appends under the state lock (so the journal's order is the ledger's); a failure stops
    /// all further spending.
    fn append(&self, state: &mut State, kind: Kind) -> Result<Option<Lsn>, LedgerError> {
        let Some(journal) = &self.0.journal else {
            state.apply(kind);
            return Ok(None);
        };
        if let Some(failed) = &state.failed {
            return Err(LedgerError::Journal(failed.clone()));
        }
        let bytes = Record {
            kind: Some(kind.clone()),
        }
        .encode_to_vec();
        match journal.append(&bytes) {
            Ok(lsn) => {
                state.apply(kind);
                if journal.size() > COMPACT_AT {
                    Self::compact(state, journal);
                }
                Ok(Some(lsn))
            }
            Err(e) => {
                let reason = crate::broker::chain(&e);
                tracing::error!(error = %reason, "the ledger's journal failed; no more spending");
                state.failed = Some(reason.clone());
                Err(LedgerError::Journal(reason))
            }
        }
    }

    fn compact(state: &State, journal: &Journal) {
        let records: Vec<Vec<u8>> = state.snapshot().iter().map(prost::Message::encode_to_vec).collect();
        if let Err(e) = journal.compact(records.iter().map(Vec::as_slice)) {
            // The old journal is still whole; the next append tries again.
            tracing::warn!(error = %crate::broker::chain(&e), "could not compact the ledger's journal");
        }
    }

    async fn durable(&self, lsn: Option<Lsn>) -> Result<(), LedgerError> {
        match (&self.0.journal, lsn) {
            (Some(journal), Some(lsn)) => journal
                .durable(lsn)
                .await
                .map_err(|e| LedgerError::Journal(crate::broker::chain(&e))),
            _ => Ok(()),
        }
    }

    /// Holds `amount` tokens for `app`, or refuses if the app, the device or the card's account
    /// cannot afford it. `price_per_1k` converts to account tokens; `digest` names the request
    /// in the card's receipt.
    pub fn reserve(
        &self,
        app: &str,
        amount: u64,
        price_per_1k: u64,
        digest: [u8; 32],
    ) -> Result<Reservation, LedgerError> {
        let budgets = self.limits();
        let calendar = &self.0.calendar;
        // Read outside the lock: a time zone lookup is not the ledger's critical section.
        let (instant, today) = (calendar.clock().now(), calendar.now());
        let mut s = self.lock();
        if let Some(failed) = &s.failed {
            return Err(LedgerError::Journal(failed.clone()));
        }
        // Never earlier than a window already used: a clock stepped back reopens nothing.
        let windows = today.latest(s.latest());
        // An app inside a user's tree also spends from that user's account.
        s.free(&budgets, calendar, app, windows, amount)?;
        if let Some(card) = &s.card {
            if let Some(fault) = &s.fault {
                return Err(LedgerError::CardFault(fault.clone()));
            }
            let needed = cost(amount, price_per_1k);
            if card.max_debit > 0 && needed > card.max_debit {
                return Err(LedgerError::DebitTooLarge {
                    needed,
                    max: card.max_debit,
                });
            }
            let owed = s.owed();
            let balance_free = if s.exhausted {
                0
            } else {
                card.balance.saturating_sub(owed)
            };
            if needed > balance_free {
                return Err(LedgerError::CardExhausted {
                    available: balance_free,
                    needed,
                });
            }
            if !s.online {
                let allowance = budgets
                    .offline_tokens
                    .map_or(card.allowance, |cap| cap.min(card.allowance));
                let offline_free = allowance.saturating_sub(owed);
                if needed > offline_free {
                    return Err(LedgerError::OfflineAllowance {
                        available: offline_free,
                        needed,
                    });
                }
            }
        }
        // A rate, checked last: a spent budget is the better answer than "retry later".
        s.check_rates(&budgets, app, amount, instant)?;
        let id = s.next_id;
        let reserve = Reserve {
            id,
            app: app.to_owned(),
            amount,
            price_per_1k,
            digest: digest.to_vec(),
            day: windows.day,
            month: windows.month,
        };
        self.append(&mut s, Kind::Reserve(reserve))?;
        for name in accounts(app) {
            if let Some(bucket) = s.rates.get_mut(name) {
                // Checked just above under the same lock: cannot fail.
                let _ = bucket.take(amount, instant);
            }
        }
        Ok(Reservation {
            ledger: self.clone(),
            id,
            amount,
            used: 0,
            settled: false,
        })
    }

    /// Ends request `id`, charging `used` (at most its reservation); returns the charge.
    fn settle(&self, id: u64, used: u64) -> (u64, Option<Lsn>) {
        let mut s = self.lock();
        let Some(commit) = s.commit_for(id, used) else {
            return (0, None);
        };
        let (charged, debit) = (commit.charged, commit.debit);
        let State { open, rates, .. } = &mut *s;
        if let Some(open) = open.get(&id).filter(|_| !rates.is_empty()) {
            // What the request reserved and did not use counts against no rate.
            for name in accounts(&open.app) {
                if let Some(bucket) = rates.get_mut(name) {
                    bucket.give_back(open.amount - charged);
                }
            }
        }
        let lsn = if let Ok(lsn) = self.append(&mut s, Kind::Commit(commit.clone())) {
            lsn
        } else {
            // Not durable, but the live state must still end the request.
            s.apply(Kind::Commit(commit));
            None
        };
        drop(s);
        if debit > 0 {
            self.0.debits.notify_one();
        }
        (charged, lsn)
    }

    /// The app's lifetime total.
    pub fn balance(&self, app: &str) -> Balance {
        let s = self.lock();
        let a = s.apps.get(app).copied().unwrap_or_default();
        Balance {
            limit: self.limits().for_app(s.policies.get(app)).total.unwrap_or(u64::MAX),
            spent: a.spent,
            reserved: a.reserved,
        }
    }

    /// Every budget of `app` as it stands now.
    pub fn budget(&self, app: &str) -> AppBudget {
        let mut s = self.lock();
        self.budget_locked(&mut s, app)
    }

    fn budget_locked(&self, s: &mut State, app: &str) -> AppBudget {
        let budgets = &self.limits();
        let calendar = &self.0.calendar;
        let now = calendar.now().latest(s.latest());
        let device = app == DEVICE;
        let a = if device {
            s.device
        } else {
            s.apps.get(app).copied().unwrap_or_default()
        };
        let limits = if device {
            budgets.for_device(s.policies.get(app))
        } else {
            budgets.for_app(s.policies.get(app))
        };
        let windows = Period::ALL
            .into_iter()
            .filter_map(|period| {
                let limit = window_limit(&limits, period)?;
                let (spent, reserved) = a.window(period).at(now.key(period));
                Some(WindowBalance {
                    period,
                    limit,
                    spent,
                    reserved,
                    ends: calendar.ends(period, now.key(period)),
                })
            })
            .collect();
        let instant = calendar.clock().now();
        let rate = limits.per_minute.map(|per_minute| RateBalance {
            per_minute,
            available: s
                .rates
                .get_mut(app)
                .filter(|b| b.per_minute() == per_minute)
                .map_or(per_minute, |b| b.available(instant)),
        });
        // The least left of every budget: probing with 0 never refuses.
        let available = if device {
            s.device_free(budgets, calendar, now, 0)
        } else {
            s.free(budgets, calendar, app, now, 0)
        }
        .unwrap_or(0);
        AppBudget {
            app: app.to_owned(),
            total: Balance {
                limit: limits.total.unwrap_or(u64::MAX),
                spent: a.spent,
                reserved: a.reserved,
            },
            windows,
            rate,
            in_flight: s.open.values().filter(|o| device || o.app == app).count(),
            available,
        }
    }

    /// Every app that has spent, holds tokens or has a policy, by app id.
    pub fn budgets(&self) -> Vec<AppBudget> {
        let mut s = self.lock();
        let mut names: Vec<String> = s
            .apps
            .iter()
            .filter(|(_, a)| a.spent > 0 || a.reserved > 0)
            .map(|(app, _)| app.clone())
            .chain(s.policies.keys().cloned())
            .collect();
        names.push(DEVICE.to_owned());
        names.sort();
        names.dedup();
        names.iter().map(|app| self.budget_locked(&mut s, app)).collect()
    }

    /// The configured time zone's name, for status.
    pub fn time_zone(&self) -> String {
        self.0.calendar.zone_name()
    }

    /// Changes `app`'s policy (`Some`: set a limit, `None`: back to the configured default),
    /// effective at once and durable when this returns; returns the policy now in force.
    pub async fn set_policy(&self, app: &str, changes: &[(Key, Option<u64>)]) -> Result<Policy, LedgerError> {
        policy::check_app(app)?;
        if app == DEVICE && changes.iter().any(|(key, _)| *key == Key::PerMinute) {
            return Err(PolicyError::DeviceRate.into());
        }
        let (policy, lsn) = {
            let mut s = self.lock();
            let policy = s.policies.get(app).copied().unwrap_or_default().with(changes)?;
            let lsn = self.append(&mut s, Kind::Policy(app_policy(app, &policy)))?;
            (policy, lsn)
        };
        self.durable(lsn).await?;
        tracing::info!(app, ?policy, "budget policy set");
        Ok(policy)
    }

    /// The overrides set for `app`.
    pub fn policy(&self, app: &str) -> Policy {
        self.lock().policies.get(app).copied().unwrap_or_default()
    }

    /// Tokens the device can still spend, outstanding reservations included as spent.
    pub fn device_available(&self) -> u64 {
        let s = self.lock();
        self.limits()
            .for_device(s.policies.get(DEVICE))
            .total
            .unwrap_or(u64::MAX)
            .saturating_sub(s.device.spent + s.device.reserved)
    }

    /// Every app that has spent or holds tokens, by app id: (app, balance, requests in flight).
    pub fn apps(&self) -> Vec<(String, Balance, usize)> {
        let s = self.lock();
        let mut apps: Vec<(String, Balance, usize)> = s
            .apps
            .iter()
            .filter(|(_, a)| a.spent > 0 || a.reserved > 0)
            .map(|(app, a)| {
                let in_flight = s.open.values().filter(|o| &o.app == app).count();
                (
                    app.clone(),
                    Balance {
                        limit: self.limits().for_app(s.policies.get(app)).total.unwrap_or(u64::MAX),
                        spent: a.spent,
                        reserved: a.reserved,
                    },
                    in_flight,
                )
            })
            .collect();
        apps.sort_by(|a, b| a.0.cmp(&b.0));
        apps
    }

    /// Requests of `app` holding tokens now.
    pub fn in_flight(&self, app: &str) -> usize {
        self.lock().open.values().filter(|o| o.app == app).count()
    }

    /// The journal's counters (appends, fsyncs); `None` for an in-memory ledger.
    pub fn journal_stats(&self) -> Option<aiesim_journal::Stats> {
        self.0.journal.as_ref().map(Journal::stats)
    }

    /// Requests holding tokens now.
    pub fn open_requests(&self) -> usize {
        self.lock().open.len()
    }

    // ---- the card side, driven by the eSIM's biller ----

    /// The card was read and its account verified: it is the billing authority from now on.
    /// A card seen for the first time (or another card) is journalled at once.
    pub fn card_online(&self, view: CardView) {
        let mut s = self.lock();
        let known = s.card.as_ref().is_some_and(|c| c.card_id == view.card_id);
        let record = CardRecord {
            card_id: view.card_id.to_vec(),
            balance: view.balance,
            sequence: view.sequence,
            allowance: view.allowance,
            max_debit: view.max_debit,
        };
        if !known {
            s.exhausted = false;
        }
        s.card = Some(record);
        s.online = true;
        // A balance above what is owed (a top-up) lifts an exhaustion.
        if s.exhausted && view.balance > s.owed() {
            s.exhausted = false;
        }
        if !known && let Some(journal) = &self.0.journal {
            Self::compact(&s, journal);
        }
    }

    /// The card is out of reach: spending goes on within the offline allowance.
    pub fn card_offline(&self) {
        self.lock().online = false;
    }

    /// The card refused a debit for want of balance: no new request is admitted until a read
    /// shows more.
    pub fn card_exhausted(&self) {
        self.lock().exhausted = true;
    }

    /// The card's answer failed verification: a card fault or an attack. Spending stops until
    /// the daemon restarts.
    pub fn card_fault(&self, reason: String) {
        tracing::error!(reason = %reason, "stopping all spending");
        self.lock().fault = Some(reason);
    }

    /// The card as the ledger knows it (also across restarts).
    pub fn card(&self) -> CardBook {
        let s = self.lock();
        let card_id = s.card_id();
        let pending: Vec<&PendingRecord> = s
            .pending
            .iter()
            .filter(|p| Some(p.card_id.as_slice()) == card_id)
            .collect();
        CardBook {
            card: s.card.as_ref().and_then(card_view),
            online: s.online,
            exhausted: s.exhausted,
            fault: s.fault.clone(),
            owed: pending.iter().map(|p| p.amount).sum(),
            pending: pending.len(),
            receipts: s.receipts.len(),
        }
    }

    /// The oldest debit owed to `card_id`.
    pub fn next_debit(&self, card_id: &[u8; 16]) -> Option<PendingDebit> {
        let s = self.lock();
        let p = s.pending.iter().find(|p| p.card_id == card_id)?;
        Some(PendingDebit {
            id: p.id,
            amount: p.amount,
            digest: p.digest.as_slice().try_into().unwrap_or([0; 32]),
            nonce: p.nonce.as_slice().try_into().ok(),
        })
    }

    /// Resolves when a debit may have been queued.
    pub async fn debit_queued(&self) {
        self.0.debits.notified().await;
    }

    /// Journals (durably) that debit `id` goes to the card with `nonce`, before it is sent.
    pub async fn debit_sent(&self, id: u64, nonce: [u8; 16]) -> Result<(), LedgerError> {
        let lsn = {
            let mut s = self.lock();
            self.append(
                &mut s,
                Kind::DebitSent(DebitSent {
                    id,
                    nonce: nonce.to_vec(),
                }),
            )?
        };
        self.durable(lsn).await
    }

    /// Journals (durably) the card's verified receipt for debit `id`; the card's balance and
    /// sequence follow it.
    pub async fn debit_done(&self, id: u64, receipt: JournalledReceipt) -> Result<(), LedgerError> {
        let lsn = {
            let mut s = self.lock();
            let Some(p) = s.pending.iter().find(|p| p.id == id).cloned() else {
                return Ok(());
            };
            let done = DebitDone {
                id,
                balance: receipt.balance,
                sequence: receipt.sequence,
                signature: receipt.signature,
                card_id: p.card_id,
                amount: p.amount,
                digest: p.digest,
                nonce: p.nonce,
            };
            self.append(&mut s, Kind::DebitDone(done))?
        };
        self.durable(lsn).await
    }

    /// Journals (durably) a voucher the card redeemed, with its verified receipt: the card's
    /// balance and sequence follow it, and an exhausted account may spend again.
    pub async fn topped_up(&self, done: record::TopUpDone) -> Result<(), LedgerError> {
        let lsn = {
            let mut s = self.lock();
            let lsn = self.append(&mut s, Kind::TopUp(done))?;
            s.exhausted = false;
            lsn
        };
        self.durable(lsn).await
    }

    /// The journalled receipts, oldest first.
    pub fn receipts(&self) -> Vec<JournalledReceipt> {
        self.lock()
            .receipts
            .iter()
            .map(|d| JournalledReceipt {
                id: d.id,
                amount: d.amount,
                balance: d.balance,
                sequence: d.sequence,
                signature: d.signature.clone(),
            })
            .collect()
    }
}

fn card_view(c: &CardRecord) -> Option<CardView> {
    Some(CardView {
        card_id: c.card_id.as_slice().try_into().ok()?,
        balance: c.balance,
        sequence: c.sequence,
        allowance: c.allowance,
        max_debit: c.max_debit,
    })
}

/// Charges every request left open by a stop what it had delivered (journalled before
/// delivery); returns how many there were.
fn settle_replayed(state: &mut State) -> usize {
    let mut open: Vec<(u64, u64)> = state.open.iter().map(|(id, o)| (*id, o.used)).collect();
    open.sort_unstable();
    for (id, used) in &open {
        if let Some(commit) = state.commit_for(*id, *used) {
            state.apply(Kind::Commit(commit));
        }
    }
    open.len()
}

/// Replays raw journal records into a fresh ledger state and reports the totals: what the
/// fuzz target drives. Never panics on any input.
pub fn replay_for_fuzzing(records: &[&[u8]]) -> Result<(u64, usize), LedgerError> {
    let mut state = State::default();
    for (index, bytes) in records.iter().enumerate() {
        let record = Record::decode(*bytes).map_err(|source| LedgerError::Corrupt { index, source })?;
        if let Some(kind) = record.kind {
            state.apply(kind);
        }
    }
    settle_replayed(&mut state);
    let _ = state.owed();
    let _ = state.snapshot();
    Ok((state.device.spent, state.pending.len()))
}

/// Tokens held for one request until it ends. Commit it with what was used; dropped without
/// a commit, it charges what [`Reservation::progress`] recorded and releases the rest.
#[must_use = "a dropped reservation charges only what was recorded as delivered"]
pub struct Reservation {
    ledger: Ledger,
    id: u64,
    amount: u64,
    used: u64,
    settled: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("id", &self.id)
            .field("amount", &self.amount)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Records, durably, that `used` tokens (prompt included) have been delivered; call it
    /// before they reach the app. A crash then charges at least these.
    pub async fn progress(&mut self, used: u64) -> Result<(), LedgerError> {
        let used = used.min(self.amount);
        if used <= self.used {
            return Ok(());
        }
        self.used = used;
        let lsn = {
            let mut s = self.ledger.lock();
            self.ledger
                .append(&mut s, Kind::Progress(Progress { id: self.id, used }))?
        };
        self.ledger.durable(lsn).await
    }

    /// Ends the reservation, charging `used` tokens (at most the reserved amount) and
    /// releasing the rest; returns once that is durable. Returns what was charged.
    pub async fn commit(mut self, used: u64) -> u64 {
        self.settled = true;
        let (charged, lsn) = self.ledger.settle(self.id, used);
        if let Err(e) = self.ledger.durable(lsn).await {
            tracing::error!(error = %crate::broker::chain(&e), "a request's charge is not durable");
        }
        charged
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            // Durable with the next group commit; the journalled progress bounds it anyway.
            let _ = self.ledger.settle(self.id, self.used);
        }
    }
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod tests;
