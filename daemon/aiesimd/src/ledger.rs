//! The token ledger: reserve before a request, reconcile to real usage after.
//!
//! One serialized writer (a mutex around plain state), so concurrent requests can never spend
//! the same headroom twice. Thin for now: balances live in memory; the append-only journal and
//! the eSIM account as billing authority grow here.

use std::{collections::HashMap, sync::Mutex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("app \"{app}\" has {available} tokens left, the request needs up to {needed}")]
    AppExhausted { app: String, available: u64, needed: u64 },
    #[error("the device has {available} tokens left, the request needs up to {needed}")]
    DeviceExhausted { available: u64, needed: u64 },
}

/// Tokens held for one request until it ends.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be committed or its tokens stay held"]
pub struct Reservation {
    app: String,
    amount: u64,
}

impl Reservation {
    pub fn amount(&self) -> u64 {
        self.amount
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Account {
    spent: u64,
    reserved: u64,
}

#[derive(Debug, Default)]
struct State {
    apps: HashMap<String, Account>,
    device: Account,
}

/// What one app has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub limit: u64,
    pub spent: u64,
    pub reserved: u64,
}

pub struct Ledger {
    app_limit: u64,
    device_limit: u64,
    state: Mutex<State>,
}

impl Ledger {
    pub fn new(app_limit: u64, device_limit: u64) -> Self {
        Self {
            app_limit,
            device_limit,
            state: Mutex::new(State::default()),
        }
    }

    /// Holds `amount` tokens for `app`, or refuses if the app or the device cannot afford it.
    pub fn reserve(&self, app: &str, amount: u64) -> Result<Reservation, LedgerError> {
        let mut s = self.state.lock().expect("ledger lock");
        let device_free = self.device_limit.saturating_sub(s.device.spent + s.device.reserved);
        let acct = s.apps.get(app).copied().unwrap_or_default();
        let app_free = self.app_limit.saturating_sub(acct.spent + acct.reserved);
        if amount > app_free {
            return Err(LedgerError::AppExhausted {
                app: app.to_owned(),
                available: app_free,
                needed: amount,
            });
        }
        if amount > device_free {
            return Err(LedgerError::DeviceExhausted {
                available: device_free,
                needed: amount,
            });
        }
        s.apps.entry(app.to_owned()).or_default().reserved += amount;
        s.device.reserved += amount;
        Ok(Reservation {
            app: app.to_owned(),
            amount,
        })
    }

    /// Ends a reservation, charging `used` tokens (at most the reserved amount) and releasing
    /// the rest. Returns what was charged.
    pub fn commit(&self, reservation: Reservation, used: u64) -> u64 {
        let Reservation { app, amount } = reservation;
        // The reservation bounds the charge: the request was capped at it, so more is a miscount.
        let charged = used.min(amount);
        let mut s = self.state.lock().expect("ledger lock");
        let acct = s.apps.entry(app).or_default();
        acct.reserved -= amount;
        acct.spent += charged;
        s.device.reserved -= amount;
        s.device.spent += charged;
        charged
    }

    pub fn balance(&self, app: &str) -> Balance {
        let s = self.state.lock().expect("ledger lock");
        let a = s.apps.get(app).copied().unwrap_or_default();
        Balance {
            limit: self.app_limit,
            spent: a.spent,
            reserved: a.reserved,
        }
    }

    /// Tokens the device can still spend, outstanding reservations included as spent.
    pub fn device_available(&self) -> u64 {
        let s = self.state.lock().expect("ledger lock");
        self.device_limit.saturating_sub(s.device.spent + s.device.reserved)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn reserve_then_commit_charges_usage_and_releases_the_rest() {
        let l = Ledger::new(100, 1000);
        let r = l.reserve("a", 60).unwrap();
        assert_eq!(
            l.balance("a"),
            Balance {
                limit: 100,
                spent: 0,
                reserved: 60
            }
        );
        assert_eq!(
            l.reserve("a", 50).unwrap_err(),
            LedgerError::AppExhausted {
                app: "a".into(),
                available: 40,
                needed: 50
            }
        );
        assert_eq!(l.commit(r, 25), 25);
        assert_eq!(
            l.balance("a"),
            Balance {
                limit: 100,
                spent: 25,
                reserved: 0
            }
        );
        assert_eq!(l.device_available(), 975);
        let r = l.reserve("a", 75).unwrap();
        assert_eq!(l.commit(r, 500), 75, "a charge never exceeds its reservation");
        assert_eq!(l.balance("a").spent, 100);
    }

    #[test]
    fn device_limit_binds_across_apps() {
        let l = Ledger::new(100, 150);
        let _a = l.reserve("a", 100).unwrap();
        assert_eq!(
            l.reserve("b", 60).unwrap_err(),
            LedgerError::DeviceExhausted {
                available: 50,
                needed: 60
            }
        );
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let l = Arc::new(Ledger::new(1_000, 1_000_000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    let mut granted = 0u64;
                    for _ in 0..200 {
                        if let Ok(r) = l.reserve("app", 7) {
                            granted += l.commit(r, 7);
                        }
                    }
                    granted
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(total <= 1_000, "granted {total}");
        assert_eq!(total, 994, "every affordable reservation is granted");
        assert_eq!(l.balance("app").spent, total);
    }
}
