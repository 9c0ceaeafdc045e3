//! `cargo xtask bench`'s measurements of the daemon's core, printed as ratios against a
//! baseline measured in the same run (the machines are noisy; absolute figures only inform).
//!
//! - ledger: reserve → commit through the durable, group-committed journal, from many
//!   concurrent requests, against the same work on the in-memory ledger;
//! - journal: how many commits one fsync carries;
//! - calendar budgets: the same in-memory work with daily and monthly budgets and a
//!   per-minute rate on every app and the device, against none;
//! - routing: time to first token with the router against a fixed national endpoint and an
//!   oracle that knows every endpoint's true TTFT, in simulated time under changing load;
//! - scheduling: interactive TTFT with background work queued, against the same requests in
//!   one first-come line;
//! - broker: time to first token through it against direct HTTP to the same (stub) endpoint,
//!   and streams carried at once (`bench/broker.rs`);
//! - fast path: classifier cost per packet, and AI round trips under a saturating upload
//!   (`bench/fastpath.rs`);
//! - idle radio: the daemon's own packets per hour on the simulated uplink while no app is
//!   active (`bench/idle.rs`).

#[path = "bench/broker.rs"]
mod broker;
#[path = "bench/fastpath.rs"]
mod fastpath;
#[path = "bench/idle.rs"]
mod idle;
#[path = "../tests/support/uplink.rs"]
mod uplink;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aiesim_e2e::bench::{Figure, Target};
use aiesim_wire::{ChatOptions, Message, Priority};
use aiesimd::{
    broker::{Broker, Limits},
    clock::ManualClock,
    cloud::{ChatRequest, ChatStream, Cloud, CloudError, CloudEvent},
    config::EndpointConfig,
    ledger::{Budgets, Ledger},
    router::{DEFAULT_PRICE_PER_1K, Router, Tier},
};

const WINDOW: Duration = Duration::from_secs(2);
/// The ledger with and without calendar budgets is measured in turns, this many rounds of one
/// second each, and each median kept: one window apart, the machine's noise was larger than
/// the difference.
const LEDGER_ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(1);
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

/// Reserve + commit pairs per second, from `CONCURRENCY` tasks for `window`.
async fn ops_per_second(ledger: Ledger, window: Duration) -> (f64, u64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let app = format!("bench-{}", i % 8);
                let mut done = 0u64;
                while started.elapsed() < window {
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

fn median_rate(rates: &mut [f64]) -> f64 {
    rates.sort_unstable_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// One simulated endpoint: `servers` requests at once, each taking `ttft` to its first token
/// (`degraded` instead while the metro is degraded) and `GENERATION` after it.
struct SimEndpoint {
    name: &'static str,
    tier: Tier,
    ttft: Duration,
    degraded: Duration,
    /// When each server is free again (simulated time since the start).
    free_at: Vec<Duration>,
    /// When each request on it ends, for its outstanding work.
    ends: Vec<Duration>,
}

const GENERATION: Duration = Duration::from_millis(300);
const ARRIVAL_EVERY: Duration = Duration::from_millis(100);
const SIMULATED: Duration = Duration::from_secs(120);
/// The metro endpoint is slow (overloaded by others, say) in this part of the run.
const DEGRADED: std::ops::Range<Duration> = Duration::from_secs(40)..Duration::from_secs(80);

impl SimEndpoint {
    fn new(name: &'static str, tier: Tier, ttft_ms: u64, degraded_ms: u64, servers: usize) -> Self {
        Self {
            name,
            tier,
            ttft: Duration::from_millis(ttft_ms),
            degraded: Duration::from_millis(degraded_ms),
            free_at: vec![Duration::ZERO; servers],
            ends: Vec::new(),
        }
    }

    fn base(&self, at: Duration) -> Duration {
        if DEGRADED.contains(&at) {
            self.degraded
        } else {
            self.ttft
        }
    }

    /// The true TTFT of a request arriving at `at`: its wait for a server, then the model's.
    fn ttft_at(&self, at: Duration) -> Duration {
        let free = self.free_at.iter().min().copied().unwrap_or_default();
        let start = free.max(at);
        start.saturating_sub(at) + self.base(start)
    }

    /// Serves a request arriving at `at`; returns its TTFT.
    fn serve(&mut self, at: Duration) -> Duration {
        let (i, free) = self
            .free_at
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, f)| *f)
            .unwrap_or_default();
        let start = free.max(at);
        let ttft = start.saturating_sub(at) + self.base(start);
        self.free_at[i] = start + self.base(start) + GENERATION;
        self.ends.push(self.free_at[i]);
        ttft
    }

    fn outstanding(&self, at: Duration) -> usize {
        self.ends.iter().filter(|end| **end > at).count()
    }
}

fn sim_endpoints() -> Vec<SimEndpoint> {
    vec![
        SimEndpoint::new("metro", Tier::Metro, 40, 900, 2),
        SimEndpoint::new("province", Tier::Province, 70, 70, 3),
        SimEndpoint::new("national", Tier::National, 250, 250, 16),
    ]
}

#[derive(Clone, Copy)]
enum Policy {
    Router,
    Fixed,
    Oracle,
}

/// TTFTs of every request in one simulated run, sorted.
fn simulate(policy: Policy) -> Vec<Duration> {
    let mut endpoints = sim_endpoints();
    let clock = ManualClock::default();
    let configs: Vec<EndpointConfig> = endpoints
        .iter()
        .map(|e| EndpointConfig {
            name: e.name.into(),
            url: format!("http://{}/v1", e.name),
            tier: e.tier,
            models: vec!["m".into()],
            price_per_1k: DEFAULT_PRICE_PER_1K,
            max_concurrent: e.free_at.len(),
        })
        .collect();
    let router = Router::new(&configs, clock.clone(), Duration::from_secs(30)).with_seed(1);
    // First tokens not yet seen by the router: (when, endpoint, ttft).
    let mut pending: Vec<(Duration, usize, Duration)> = Vec::new();
    let mut now = Duration::ZERO;
    let mut ttfts = Vec::new();
    let mut at = Duration::ZERO;
    while at < SIMULATED {
        pending.sort_by_key(|p| std::cmp::Reverse(p.0));
        while pending.last().is_some_and(|p| p.0 <= at) {
            let (when, i, ttft) = pending.pop().unwrap_or_default();
            clock.advance(when.saturating_sub(now));
            now = when;
            router.report_success(endpoints[i].name, "m", ttft, Some(Duration::from_millis(20)));
        }
        clock.advance(at.saturating_sub(now));
        now = at;
        let i = match policy {
            Policy::Fixed => 2,
            Policy::Oracle => (0..endpoints.len())
                .min_by_key(|i| endpoints[*i].ttft_at(at))
                .unwrap_or_default(),
            Policy::Router => {
                let route = router
                    .pick_with_load(None, |name, _| {
                        endpoints
                            .iter()
                            .find(|e| e.name == name)
                            .map_or(0, |e| e.outstanding(at))
                    })
                    .expect("three healthy endpoints");
                endpoints
                    .iter()
                    .position(|e| e.name == route.endpoint)
                    .unwrap_or_default()
            }
        };
        let ttft = endpoints[i].serve(at);
        pending.push((at + ttft, i, ttft));
        ttfts.push(ttft);
        at += ARRIVAL_EVERY;
    }
    ttfts.sort_unstable();
    ttfts
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}

/// A cloud that takes `FIRST_TOKEN` to its first token, then streams four more.
struct Sleepy;

const FIRST_TOKEN: Duration = Duration::from_millis(4);

impl Cloud for Sleepy {
    async fn chat(&self, _base_url: &str, _request: &ChatRequest) -> Result<ChatStream, CloudError> {
        tokio::time::sleep(FIRST_TOKEN).await;
        Ok(Box::pin(futures_util::stream::iter(
            (0..5).map(|i| Ok(CloudEvent::Delta(format!("t{i} ")))),
        )))
    }
}

/// Median TTFT of 10 interactive requests arriving while 40 background ones are queued on a
/// one-at-a-time endpoint; `background` says how the 40 are marked.
async fn interactive_ttft(background: Priority) -> f64 {
    let endpoint = EndpointConfig {
        name: "metro".into(),
        url: "http://metro/v1".into(),
        tier: Tier::Metro,
        models: vec!["m".into()],
        price_per_1k: DEFAULT_PRICE_PER_1K,
        max_concurrent: 1,
    };
    let broker = Arc::new(Broker::new(
        Sleepy,
        Ledger::in_memory(budgets()),
        Router::new(&[endpoint], aiesimd::clock::SystemClock, Duration::from_secs(30)),
        Limits {
            default_max_tokens: 16,
            max_tokens_cap: 16,
            max_in_flight: 1_000,
            deadline: Duration::from_secs(60),
            max_answer_bytes: 1 << 20,
            failover_attempts: 1,
            hedge_after: None,
        },
    ));
    let ask = |priority| ChatOptions {
        messages: vec![Message::new("user", "hi")],
        priority,
        ..ChatOptions::default()
    };
    let run = |app: &str, priority| {
        let admitted = broker.admit(app, ask(priority)).expect("an unlimited budget");
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sink = broker::FirstDelta(None);
            broker.run(admitted, &mut sink, std::future::pending()).await;
            sink.0.map_or(Duration::MAX, |first| first - started)
        })
    };
    // One app, so only the priority orders the line (apps take turns otherwise).
    let queued: Vec<_> = (0..40).map(|_| run("app.service", background)).collect();
    let mut interactive = Vec::new();
    for _ in 0..10 {
        interactive.push(run("app.service", Priority::Interactive));
        tokio::time::sleep(FIRST_TOKEN * 2).await;
    }
    let mut ttfts = Vec::new();
    for task in interactive {
        ttfts.push(task.await.expect("a bench task"));
    }
    for task in queued {
        task.await.expect("a bench task");
    }
    ttfts.sort_unstable();
    percentile(&ttfts, 50)
}

fn main() -> anyhow::Result<()> {
    // `bench fastpath` measures only the fast path.
    if std::env::args().nth(1).as_deref() == Some("fastpath") {
        fastpath::main();
        return Ok(());
    }
    // `bench classifier` measures only the classifier's cost per packet.
    if std::env::args().nth(1).as_deref() == Some("classifier") {
        fastpath::classifier_cost();
        return Ok(());
    }
    // `bench idle` measures only the radio while no app is active.
    if std::env::args().nth(1).as_deref() == Some("idle") {
        idle::main();
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
        let (plain, calendars) = (Ledger::in_memory(budgets()), Ledger::in_memory(windowed()));
        let (mut memory, mut calendar) = (Vec::new(), Vec::new());
        for _ in 0..LEDGER_ROUNDS {
            memory.push(ops_per_second(plain.clone(), ROUND).await.0);
            calendar.push(ops_per_second(calendars.clone(), ROUND).await.0);
        }
        let (memory, calendar) = (median_rate(&mut memory), median_rate(&mut calendar));
        let durable = Ledger::open(&path, budgets())?;
        let (journal, commits) = ops_per_second(durable.clone(), WINDOW).await;
        let fsyncs = durable.journal_stats().map_or(0, |s| s.fsyncs);
        println!(
            "ledger reserve+commit, {CONCURRENCY} concurrent requests, {} s on the journal, in memory the median of {LEDGER_ROUNDS} rounds of {} s taken in turns:",
            WINDOW.as_secs(),
            ROUND.as_secs()
        );
        Figure::new("ledger ops/s, durable journal", journal, "ops/s")
            .against("in memory", memory)
            .target(Target::AtLeast(20_000.0))
            .record();
        #[expect(clippy::cast_precision_loss, reason = "a ratio for people to read")]
        let per_fsync = commits as f64 / fsyncs.max(1) as f64;
        Figure::new("ledger group commit, commits per fsync", per_fsync, "commits").record();
        Figure::new("ledger ops/s, calendar budgets and a rate", calendar, "ops/s")
            .against("no budgets", memory)
            .target(Target::RatioAtLeast(0.8))
            .record();

        let results: HashMap<&str, Vec<Duration>> = [
            ("oracle", Policy::Oracle),
            ("router", Policy::Router),
            ("fixed", Policy::Fixed),
        ]
        .into_iter()
        .map(|(name, policy)| (name, simulate(policy)))
        .collect();
        println!(
            "routing TTFT, simulated {} s, a request every {} ms, metro degraded {}-{} s:",
            SIMULATED.as_secs(),
            ARRIVAL_EVERY.as_millis(),
            DEGRADED.start.as_secs(),
            DEGRADED.end.as_secs()
        );
        let (oracle, router, fixed) = (&results["oracle"], &results["router"], &results["fixed"]);
        for (name, p) in [("p50", 50), ("p99", 99)] {
            let router = percentile(router, p);
            // The router must beat the fixed endpoint: its ratio to the fixed one below 1.
            Figure::new(format!("routing TTFT {name}, router"), router, "ms")
                .against("oracle", percentile(oracle, p))
                .target(if p == 50 {
                    Target::RatioAtMost(1.2)
                } else {
                    Target::None
                })
                .record();
            Figure::new(format!("routing TTFT {name}, router vs fixed national"), router, "ms")
                .against("fixed national", percentile(fixed, p))
                .target(Target::RatioAtMost(1.0))
                .record();
        }

        let fifo = interactive_ttft(Priority::Interactive).await;
        let scheduled = interactive_ttft(Priority::Background).await;
        println!("interactive TTFT p50 with 40 requests queued on a one-at-a-time endpoint:");
        Figure::new("interactive TTFT p50, background queued behind", scheduled, "ms")
            .against("one first-come line", fifo)
            .target(Target::RatioAtMost(0.2))
            .record();

        broker::report().await;
        anyhow::Ok(())
    })?;
    fastpath::main();
    idle::main();
    Ok(())
}
