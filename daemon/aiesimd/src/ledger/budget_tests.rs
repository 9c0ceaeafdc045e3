//! Calendar budgets, rate limits and policies on the ledger, with a manual clock in
//! Europe/Paris, and the concurrency test: many identities racing for small budgets.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{policy::Key, rate::RateError, window::Calendar, *};
use crate::clock::ManualClock;

const D: [u8; 32] = [7; 32];
const MIN: Duration = Duration::from_secs(60);

fn at(rfc3339: &str) -> SystemTime {
    let ts: jiff::Timestamp = rfc3339.parse().unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(ts.as_second().try_into().unwrap())
}

fn paris(wall: &str) -> (Calendar, ManualClock) {
    let clock = ManualClock::at(at(wall));
    let zone = Calendar::zone("Europe/Paris").unwrap();
    (Calendar::new(zone, Arc::new(clock.clone())), clock)
}

fn unlimited() -> Budgets {
    Budgets::default()
}

/// An in-memory ledger whose apps have a daily budget and nothing else.
fn daily(limit: u64, calendar: Calendar) -> Ledger {
    Ledger::in_memory_on(
        Budgets {
            app_daily: Some(limit),
            ..unlimited()
        },
        calendar,
    )
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn day_of(l: &Ledger, app: &str) -> WindowBalance {
    l.budget(app)
        .windows
        .into_iter()
        .find(|w| w.period == Period::Day)
        .expect("a daily budget")
}

#[test]
fn a_daily_budget_refuses_until_local_midnight_then_starts_afresh() {
    block(async {
        // 23:30 in Paris (UTC+1).
        let (cal, clock) = paris("2026-12-01T22:30:00Z");
        let l = daily(100, cal);
        assert_eq!(l.reserve("a", 60, 1000, D).unwrap().commit(60).await, 60);
        let e = l.reserve("a", 50, 1000, D).unwrap_err();
        assert!(
            matches!(
                &e,
                LedgerError::WindowExhausted {
                    period: Period::Day,
                    available: 40,
                    needed: 50,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "app \"a\" has 40 tokens left today (until 2026-12-02 00:00 +01:00), the request needs up to 50"
        );
        assert_eq!(l.budget("a").available, 40);
        // 00:00 local is 23:00 UTC, not UTC midnight.
        clock.advance(Duration::from_secs(29 * 60 + 59));
        assert!(l.reserve("a", 50, 1000, D).is_err(), "still 1 December locally");
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.reserve("a", 100, 1000, D).unwrap().commit(100).await, 100);
        let day = day_of(&l, "a");
        assert_eq!((day.limit, day.spent, day.reserved), (100, 100, 0));
        assert_eq!(day.ends, "2026-12-03 00:00 +01:00");
        assert_eq!(l.balance("a").spent, 160, "the lifetime total keeps everything");
    });
}

#[test]
fn spend_landing_at_the_boundary_counts_in_the_window_it_was_admitted_in() {
    block(async {
        let (cal, clock) = paris("2026-12-01T22:59:59Z");
        let l = Ledger::in_memory_on(
            Budgets {
                app_daily: Some(100),
                device_daily: Some(150),
                ..unlimited()
            },
            cal,
        );
        // Admitted at 23:59:59 on the 1st, still streaming after midnight.
        let late = l.reserve("a", 80, 1000, D).unwrap();
        clock.advance(Duration::from_secs(2));
        // The new day is whole: the open request holds the old day's budget, not this one's.
        let early = l.reserve("a", 100, 1000, D).unwrap();
        assert_eq!(day_of(&l, "a").reserved, 100);
        // The old request ends in the new day: its charge lands in its own day and neither
        // overwrites nor adds to the new day's spend (LiteLLM #34733: a reset lost spend).
        assert_eq!(late.commit(70).await, 70);
        assert_eq!(early.commit(90).await, 90);
        let day = day_of(&l, "a");
        assert_eq!((day.spent, day.reserved), (90, 0));
        assert_eq!(l.balance("a").spent, 160);
        let e = l.reserve("a", 11, 1000, D).unwrap_err();
        assert!(matches!(e, LedgerError::WindowExhausted { available: 10, .. }), "{e}");
        let e = l.reserve("b", 61, 1000, D).unwrap_err();
        assert!(
            matches!(&e, LedgerError::WindowExhausted { who, available: 60, .. } if who == "the device"),
            "{e}"
        );
    });
}

#[test]
fn a_monthly_budget_spans_the_days_and_turns_on_the_first() {
    block(async {
        let (cal, clock) = paris("2026-12-30T12:00:00Z");
        let l = Ledger::in_memory_on(
            Budgets {
                app_daily: Some(100),
                app_monthly: Some(150),
                ..unlimited()
            },
            cal,
        );
        assert_eq!(l.reserve("a", 100, 1000, D).unwrap().commit(100).await, 100);
        clock.advance(Duration::from_secs(24 * 3600));
        let e = l.reserve("a", 60, 1000, D).unwrap_err();
        assert_eq!(
            e.to_string(),
            "app \"a\" has 50 tokens left this month (until 2027-01-01 00:00 +01:00), the request needs up to 60"
        );
        assert_eq!(l.budget("a").available, 50, "the least of the daily and monthly");
        // 1 January, 00:00 in Paris.
        clock.advance(Duration::from_secs(11 * 3600));
        assert_eq!(l.reserve("a", 100, 1000, D).unwrap().commit(100).await, 100);
    });
}

#[test]
fn a_dst_day_is_budgeted_as_one_local_day() {
    block(async {
        // 29 March 2026 in Paris has 23 hours: 23:00 UTC on the 28th to 22:00 UTC on the 29th.
        let (cal, clock) = paris("2026-03-28T22:30:00Z");
        let l = daily(100, cal);
        assert_eq!(l.reserve("a", 100, 1000, D).unwrap().commit(100).await, 100);
        clock.advance(Duration::from_secs(30 * 60));
        assert_eq!(
            l.reserve("a", 100, 1000, D).unwrap().commit(100).await,
            100,
            "midnight before the change: a new day"
        );
        assert_eq!(day_of(&l, "a").ends, "2026-03-30 00:00 +02:00");
        // 22 h 59 min later it is still the 29th locally (01:59 CET became 03:00 CEST).
        clock.advance(Duration::from_secs(22 * 3600 + 59 * 60));
        assert!(l.reserve("a", 1, 1000, D).is_err());
        clock.advance(MIN);
        assert!(l.reserve("a", 100, 1000, D).is_ok(), "the 23-hour day ended");
    });
}

#[test]
fn a_clock_stepped_back_reopens_no_window() {
    block(async {
        let (cal, _) = paris("2026-12-02T10:00:00Z");
        let l = daily(100, cal);
        assert_eq!(l.reserve("a", 100, 1000, D).unwrap().commit(100).await, 100);
        // The same state read by a calendar whose clock says yesterday.
        let (cal_back, back_clock) = paris("2026-12-01T10:00:00Z");
        let back = Ledger(Arc::new(Inner {
            budgets: RwLock::new(l.limits()),
            calendar: cal_back,
            state: Mutex::new(std::mem::take(&mut *l.lock())),
            journal: None,
            debits: Notify::new(),
        }));
        assert!(
            back.reserve("a", 1, 1000, D).is_err(),
            "yesterday's window is not reopened"
        );
        back_clock.advance(Duration::from_secs(48 * 3600));
        assert!(back.reserve("a", 100, 1000, D).is_ok());
    });
}

#[test]
fn windows_and_policies_survive_restart_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    let budgets = Budgets {
        app_daily: Some(100),
        app_monthly: Some(1_000),
        ..unlimited()
    };
    let (cal, clock) = paris("2026-12-02T09:00:00Z");
    block(async {
        let l = Ledger::open_on(&path, budgets, cal.clone()).unwrap();
        assert_eq!(l.reserve("a", 70, 1000, D).unwrap().commit(70).await, 70);
        l.set_policy("b", &[(Key::Daily, Some(10))]).await.unwrap();
        let mut open = l.reserve("c", 40, 1000, D).unwrap();
        open.progress(25).await.unwrap();
        // A crash while it streams.
        std::mem::forget(open);
    });
    for round in 0..2 {
        // Each open replays the journal, settles the open request and compacts to a snapshot:
        // the second round reads only the snapshot.
        let l = Ledger::open_on(&path, budgets, cal.clone()).unwrap();
        assert_eq!(day_of(&l, "a").spent, 70, "round {round}");
        assert_eq!(day_of(&l, "c").spent, 25, "round {round}: settled at its progress");
        assert!(l.reserve("a", 31, 1000, D).is_err(), "round {round}");
        assert_eq!(l.policy("b").daily, Some(10), "round {round}");
        assert!(l.reserve("b", 11, 1000, D).is_err(), "round {round}");
        assert_eq!(l.open_requests(), 0);
    }
    clock.advance(Duration::from_secs(24 * 3600));
    let l = Ledger::open_on(&path, budgets, cal).unwrap();
    assert!(l.reserve("a", 100, 1000, D).is_ok(), "a new day after the restart");
    let month = l
        .budget("a")
        .windows
        .into_iter()
        .find(|w| w.period == Period::Month)
        .unwrap();
    assert_eq!(month.spent, 70, "the month kept the first day's spend");
}

#[test]
fn a_policy_takes_effect_at_once_and_clearing_it_restores_the_default() {
    block(async {
        let (cal, _) = paris("2026-12-02T09:00:00Z");
        let l = Ledger::in_memory_on(
            Budgets {
                app_tokens: 1_000,
                ..unlimited()
            },
            cal,
        );
        let held = l.reserve("a", 30, 1000, D).unwrap();
        l.set_policy("a", &[(Key::Daily, Some(50)), (Key::Total, Some(40))])
            .await
            .unwrap();
        assert_eq!(l.balance("a").limit, 40);
        let e = l.reserve("a", 20, 1000, D).unwrap_err();
        assert!(matches!(e, LedgerError::AppExhausted { available: 10, .. }), "{e}");
        assert_eq!(held.commit(30).await, 30);
        l.set_policy("a", &[(Key::Total, None)]).await.unwrap();
        assert_eq!(l.balance("a").limit, 1_000);
        let e = l.reserve("a", 21, 1000, D).unwrap_err();
        assert!(matches!(e, LedgerError::WindowExhausted { available: 20, .. }), "{e}");
        l.set_policy("a", &[(Key::Daily, None)]).await.unwrap();
        assert!(l.reserve("a", 500, 1000, D).is_ok());
        assert!(l.policy("a").is_default());
    });
}

#[test]
fn bad_policies_are_refused_and_change_nothing() {
    block(async {
        let l = Ledger::in_memory(unlimited());
        l.set_policy("a", &[(Key::Daily, Some(10))]).await.unwrap();
        for (app, change) in [
            ("", (Key::Daily, Some(5))),
            ("a b", (Key::Daily, Some(5))),
            ("a", (Key::PerMinute, Some(0))),
            ("a", (Key::Monthly, Some(u64::MAX))),
        ] {
            let e = l.set_policy(app, &[(Key::Total, Some(1)), change]).await.unwrap_err();
            assert!(matches!(e, LedgerError::Policy(_)), "{e}");
        }
        assert_eq!(
            l.policy("a"),
            Policy {
                daily: Some(10),
                ..Policy::default()
            }
        );
    });
}

#[test]
fn a_users_policy_binds_every_app_in_its_tree() {
    block(async {
        let (cal, _) = paris("2026-12-02T09:00:00Z");
        let l = Ledger::in_memory_on(unlimited(), cal);
        l.set_policy("uid-1000", &[(Key::Daily, Some(100)), (Key::PerMinute, Some(1_000))])
            .await
            .unwrap();
        l.reserve("uid-1000/a.scope", 60, 1000, D).unwrap().commit(60).await;
        let e = l.reserve("uid-1000/b.scope", 41, 1000, D).unwrap_err();
        assert!(
            matches!(&e, LedgerError::WindowExhausted { who, available: 40, .. } if who == "app \"uid-1000\""),
            "{e}"
        );
        assert_eq!(l.budget("uid-1000/b.scope").available, 40);
        assert!(l.reserve("uid-1001/a.scope", 500, 1000, D).is_ok());
    });
}

#[test]
fn a_rate_limit_refuses_with_when_to_retry_and_refunds_what_was_not_used() {
    block(async {
        let (cal, clock) = paris("2026-12-02T09:00:00Z");
        let l = Ledger::in_memory_on(
            Budgets {
                app_per_minute: Some(120),
                ..unlimited()
            },
            cal,
        );
        // Reserved 100, used 10: 90 come back to the bucket.
        assert_eq!(l.reserve("a", 100, 1000, D).unwrap().commit(10).await, 10);
        assert_eq!(
            l.budget("a").rate,
            Some(RateBalance {
                per_minute: 120,
                available: 110
            })
        );
        let held = l.reserve("a", 100, 1000, D).unwrap();
        let e = l.reserve("a", 30, 1000, D).unwrap_err();
        let LedgerError::RateLimited {
            per_minute: 120,
            source: RateError::Wait { wait, .. },
            ..
        } = &e
        else {
            panic!("{e}");
        };
        // 20 missing at 2 a second.
        assert_eq!(*wait, Duration::from_secs(10));
        assert!(
            crate::broker::chain(&e).contains("30 tokens will be available in 10 s"),
            "{}",
            crate::broker::chain(&e)
        );
        assert!(l.reserve("b", 120, 1000, D).is_ok(), "another app has its own rate");
        clock.advance(Duration::from_secs(10));
        assert!(l.reserve("a", 30, 1000, D).is_ok());
        drop(held);
        let e = l.reserve("a", 121, 1000, D).unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::RateLimited {
                    source: RateError::TooLarge { .. },
                    ..
                }
            ),
            "{e}"
        );
        // A refusal for want of budget is not a rate refusal, and takes nothing from the rate.
        l.set_policy("a", &[(Key::Total, Some(0))]).await.unwrap();
        clock.advance(MIN);
        let e = l.reserve("a", 10, 1000, D).unwrap_err();
        assert!(matches!(e, LedgerError::AppExhausted { .. }), "{e}");
        assert_eq!(l.budget("a").rate.unwrap().available, 120);
    });
}

#[test]
fn a_rate_limit_is_no_budget_a_budget_is_no_rate() {
    block(async {
        let (cal, clock) = paris("2026-12-02T09:00:00Z");
        let l = Ledger::in_memory_on(
            Budgets {
                app_per_minute: Some(100),
                app_daily: Some(250),
                ..unlimited()
            },
            cal,
        );
        // At the rate, the day's budget is spent in three minutes and stays spent.
        let mut spent = 0;
        for _ in 0..10 {
            if let Ok(r) = l.reserve("a", 100, 1000, D) {
                spent += r.commit(100).await;
            }
            clock.advance(MIN);
        }
        assert_eq!(spent, 200, "two whole requests fit the day");
        let e = l.reserve("a", 100, 1000, D).unwrap_err();
        assert!(matches!(e, LedgerError::WindowExhausted { .. }), "{e}");
    });
}

/// 200 concurrent streams from 20 identities (10 apps of two users, 10 system units) on the
/// durable journal, against small per-app daily and lifetime budgets, a per-user budget and a
/// device budget: nothing overshoots, every refusal is for want of budget, nothing stays
/// reserved, and a replay finds the same totals.
#[test]
fn concurrent_streams_from_many_identities_never_overshoot_any_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    let (cal, _) = paris("2026-12-02T09:00:00Z");
    let budgets = Budgets {
        app_tokens: 900,
        app_daily: Some(700),
        device_tokens: 1_000_000,
        device_daily: Some(9_000),
        ..unlimited()
    };
    let l = Ledger::open_on(&path, budgets, cal.clone()).unwrap();
    let apps: Vec<String> = (0..20)
        .map(|i| {
            if i < 10 {
                format!("uid-{}/app-{i}.scope", 1000 + i % 2)
            } else {
                format!("unit-{i}.service")
            }
        })
        .collect();
    block(async {
        l.set_policy("uid-1000", &[(Key::Daily, Some(1_500)), (Key::Total, Some(1_500))])
            .await
            .unwrap();
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<(String, Result<u64, String>)> = runtime.block_on(async {
        let tasks: Vec<_> = (0..200u64)
            .map(|n| {
                let l = l.clone();
                let app = apps[usize::try_from(n % 20).unwrap()].clone();
                tokio::spawn(async move { (app.clone(), stream(&l, &app, n).await) })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    let refused = results.iter().filter(|(_, r)| r.is_err()).count();
    assert!(refused > 0, "the budgets are small enough to refuse some");
    assert!(refused < 200, "and large enough to admit some");
    let mut device = 0;
    for app in &apps {
        let charged: u64 = results
            .iter()
            .filter(|(a, _)| a == app)
            .filter_map(|(_, r)| r.as_ref().ok())
            .sum();
        let b = l.budget(app);
        assert_eq!(
            b.total.spent, charged,
            "{app}: the ledger charged what the streams used"
        );
        assert!(charged <= 700, "{app}: {charged} over its daily 700");
        assert_eq!((b.total.reserved, b.in_flight), (0, 0), "{app}: nothing stays reserved");
        device += charged;
    }
    for (user, limit) in [("uid-1000", 1_500), ("uid-1001", 700)] {
        let b = l.budget(user);
        assert!(b.total.spent <= limit, "{user}: {} over {limit}", b.total.spent);
        assert_eq!(b.total.reserved, 0);
    }
    assert!(device <= 9_000);
    assert_eq!(l.device_available(), 1_000_000 - device);
    assert_eq!(l.open_requests(), 0);
    drop(l);
    let replayed = Ledger::open_on(&path, budgets, cal).unwrap();
    for app in &apps {
        let charged: u64 = results
            .iter()
            .filter(|(a, _)| a == app)
            .filter_map(|(_, r)| r.as_ref().ok())
            .sum();
        assert_eq!(replayed.balance(app).spent, charged, "{app} after replay");
        assert_eq!(day_of(&replayed, app).spent, charged, "{app}'s day after replay");
    }
}

/// One stream of the concurrency test: reserve, deliver in steps, commit (or drop) what it used.
async fn stream(l: &Ledger, app: &str, n: u64) -> Result<u64, String> {
    // Varying sizes and usage: some use all, some part, some fail early.
    let amount = 40 + (n * 37) % 160;
    match l.reserve(app, amount, 1000, D) {
        Ok(mut r) => {
            let used = match n % 4 {
                0 => amount,
                1 => amount / 2,
                2 => 0,
                _ => amount * 3,
            };
            for step in 1..=4 {
                r.progress(used.min(amount) * step / 4).await.unwrap();
                tokio::task::yield_now().await;
            }
            if n.is_multiple_of(7) {
                drop(r);
                Ok(used.min(amount))
            } else {
                Ok(r.commit(used).await)
            }
        }
        Err(
            e @ (LedgerError::AppExhausted { .. }
            | LedgerError::WindowExhausted { .. }
            | LedgerError::DeviceExhausted { .. }),
        ) => Err(e.to_string()),
        Err(other) => panic!("a refusal that is not for want of budget: {other}"),
    }
}

#[test]
fn the_devices_policy_binds_every_app_is_listed_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    let budgets = Budgets {
        device_daily: Some(1_000),
        ..unlimited()
    };
    let (cal, _clock) = paris("2026-12-02T09:00:00Z");
    block(async {
        let l = Ledger::open_on(&path, budgets, cal.clone()).unwrap();
        // The device has no rate, and a refused change changes nothing.
        let e = l
            .set_policy(DEVICE, &[(Key::Daily, Some(100)), (Key::PerMinute, Some(60))])
            .await
            .unwrap_err();
        assert!(matches!(e, LedgerError::Policy(PolicyError::DeviceRate)), "{e}");
        assert_eq!(l.policy(DEVICE), Policy::default());

        l.set_policy(DEVICE, &[(Key::Daily, Some(100))]).await.unwrap();
        assert_eq!(l.reserve("a.service", 60, 1000, D).unwrap().commit(60).await, 60);
        let e = l.reserve("b.service", 41, 1000, D).unwrap_err();
        assert!(
            matches!(&e, LedgerError::WindowExhausted { who, available: 40, .. } if who == "the device"),
            "{e}"
        );
        assert_eq!(
            l.budget("b.service").available,
            40,
            "an app's available is the device's"
        );
        let list = l.budgets();
        let device = list.iter().find(|b| b.app == DEVICE).expect("the device is listed");
        assert_eq!(device.total.spent, 60);
        let day = device.windows.iter().find(|w| w.period == Period::Day).unwrap();
        assert_eq!((day.limit, day.spent), (100, 60));
        assert_eq!(device.available, 40);
        assert!(
            list.iter().all(|b| b.app != "b.service"),
            "b spent nothing and has no policy"
        );
    });
    // Journalled: the policy holds after a restart; cleared, the configured limit is back.
    let l = Ledger::open_on(&path, budgets, cal).unwrap();
    assert!(l.reserve("c.service", 41, 1000, D).is_err());
    block(l.set_policy(DEVICE, &[(Key::Daily, None)])).unwrap();
    let held = l
        .reserve("c.service", 900, 1000, D)
        .expect("back to the configured 1000 a day");
    assert!(
        l.reserve("c.service", 41, 1000, D).is_err(),
        "60 spent and 900 held of 1000"
    );
    drop(held);
}
