//! `cargo xtask bench`'s measurements of the daemon's core, printed as ratios against a
//! baseline measured in the same run (the machines are noisy; absolute figures only inform).
//!
//! - ledger: reserve → commit through the durable, group-committed journal, from many
//!   concurrent requests, against the same work on the in-memory ledger;
//! - journal: how many commits one fsync carries;
//! - calendar budgets: the same in-memory work with daily and monthly budgets and a
//!   per-minute rate on every app and the device, against none.
//! - fast path: classifier cost per packet, and AI round trips under a saturating upload
//!   (`bench/fastpath.rs`).

#[path = "bench/fastpath.rs"]
mod fastpath;
#[path = "../tests/support/uplink.rs"]
mod uplink;

use std::time::{Duration, Instant};

use aiesimd::ledger::{Budgets, Ledger};

const WINDOW: Duration = Duration::from_secs(2);
const CONCURRENCY: usize = 64;

fn budgets() -> Budgets {
    Budgets {
        app_tokens: u64::MAX / 4,
        device_tokens: u64::MAX / 4,
        ..Budgets::default()
    }
}

/// Budgets as large, with calendar windows and a rate that never bind.
fn windowed() -> Budgets {
    Budgets {
        app_daily: Some(u64::MAX / 4),
        app_monthly: Some(u64::MAX / 4),
        app_per_minute: Some(aiesimd::ledger::policy::MAX_PER_MINUTE),
        device_daily: Some(u64::MAX / 4),
        device_monthly: Some(u64::MAX / 4),
        ..budgets()
    }
}

/// Reserve + commit pairs per second, from `CONCURRENCY` tasks for `WINDOW`.
async fn ops_per_second(ledger: Ledger) -> (f64, u64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let app = format!("bench-{}", i % 8);
                let mut done = 0u64;
                while started.elapsed() < WINDOW {
                    let reservation = ledger.reserve(&app, 300, 1_000, [7; 32]).expect("an unlimited budget");
                    reservation.commit(120).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("a bench task");
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate for people to read")]
    let rate = total as f64 / started.elapsed().as_secs_f64();
    (rate, total)
}

fn main() -> anyhow::Result<()> {
    // `bench fastpath` measures only the fast path.
    if std::env::args().nth(1).as_deref() == Some("fastpath") {
        fastpath::main();
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::Builder::new()
        .prefix("aiesim-bench-")
        .tempdir_in(std::env::current_dir()?)?;
    let path = dir.path().join("ledger.journal");
    runtime.block_on(async {
        let (memory, _) = ops_per_second(Ledger::in_memory(budgets())).await;
        let (calendar, _) = ops_per_second(Ledger::in_memory(windowed())).await;
        let durable = Ledger::open(&path, budgets())?;
        let (journal, commits) = ops_per_second(durable.clone()).await;
        let fsyncs = durable.journal_stats().map_or(0, |s| s.fsyncs);
        println!(
            "ledger reserve+commit, {CONCURRENCY} concurrent requests, {} s each:",
            WINDOW.as_secs()
        );
        println!("  in memory (baseline)        {memory:>12.0} ops/s");
        println!(
            "  durable journal             {journal:>12.0} ops/s  = {:.3} x baseline  (target >= 20000 ops/s)",
            journal / memory
        );
        #[expect(clippy::cast_precision_loss, reason = "a ratio for people to read")]
        let per_fsync = commits as f64 / fsyncs.max(1) as f64;
        println!("  group commit                {per_fsync:>12.1} commits per fsync ({fsyncs} fsyncs)");
        println!(
            "  calendar budgets and a rate {calendar:>12.0} ops/s  = {:.3} x baseline  (target >= 0.8)",
            calendar / memory
        );
        anyhow::Ok(())
    })?;
    fastpath::main();
    Ok(())
}
