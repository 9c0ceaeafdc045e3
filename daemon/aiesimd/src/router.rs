//! Picks the endpoint that serves a request.
//!
//! The registry merges two sources: the endpoints the operator provisioned on the eSIM (zero
//! configuration) and those in the configuration file, which add to them or override one of the
//! same name. The card's list is replaced whenever the card is read again; health survives a
//! replacement for endpoints that stay.
//!
//! Choice: filter by model and health, score each candidate on its peak-EWMA time to the
//! first words (TTFT, queue time included, plus a few inter-token gaps) scaled by its queued
//! and running work and its price, then pick the better of two drawn at random (power of two
//! choices). An endpoint that fails cools down (for its `Retry-After` when it sent one), then
//! is half-open: one probe request decides whether it is back.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{clock::Clock, config::EndpointConfig};

/// Account tokens per 1000 model tokens where nobody set a price: one for one.
pub const DEFAULT_PRICE_PER_1K: u64 = 1_000;

/// Requests one (endpoint, model) serves at once where nobody said: a small server's batch.
pub const DEFAULT_MAX_CONCURRENT: usize = 4;

/// The longest an endpoint's `Retry-After` keeps it out of rotation; a larger ask is a bug or
/// an attack, and an hour is long enough to come back to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// How fast a latency estimate forgets a peak: the time constant of its decay.
const DECAY: Duration = Duration::from_secs(10);
/// How fast an estimate nobody refreshes drifts back to the best the endpoint ever did, so
/// that an endpoint left alone after a bad spell is tried again (the time constant).
const STALE: Duration = Duration::from_secs(15);
/// "The first words": TTFT plus this many inter-token gaps.
const FIRST_WORDS: f64 = 8.0;

/// How far away an endpoint sits in the operator's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Metro edge, about 1 ms away.
    Metro,
    /// Province, about 5 ms away.
    Province,
    /// National, about 20 ms away.
    National,
}

impl Tier {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Metro => "metro",
            Self::Province => "province",
            Self::National => "national",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    #[error("no endpoint is configured, and the eSIM provisions none")]
    NoEndpoints,
    #[error("no endpoint serves model \"{0}\"")]
    NoModel(String),
    #[error("every endpoint serving the request is cooling down after failures")]
    AllCoolingDown,
}

/// Where an endpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Card,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Card => "card",
        }
    }
}

/// One model an endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    /// The model's context window in tokens, when known.
    pub context_window: Option<u32>,
    /// The most completion tokens one request may ask for, when known.
    pub max_output: Option<u32>,
    /// Account tokens per 1000 model tokens.
    pub price_per_1k: u64,
}

/// One endpoint, from either source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub name: String,
    pub url: String,
    pub tier: Tier,
    /// The first is the default.
    pub models: Vec<ModelSpec>,
    /// Requests each of its models serves at once; more wait in the scheduler's line.
    pub max_concurrent: usize,
    pub source: Source,
}

impl From<&EndpointConfig> for EndpointSpec {
    fn from(e: &EndpointConfig) -> Self {
        Self {
            name: e.name.clone(),
            url: e.url.clone(),
            tier: e.tier,
            models: e
                .models
                .iter()
                .map(|name| ModelSpec {
                    name: name.clone(),
                    context_window: None,
                    max_output: None,
                    price_per_1k: e.price_per_1k,
                })
                .collect(),
            max_concurrent: e.max_concurrent,
            source: Source::Config,
        }
    }
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: String,
    pub url: String,
    pub model: String,
    /// The model's own limit on completion tokens, when known.
    pub max_output: Option<u32>,
    pub price_per_1k: u64,
    /// Requests the endpoint serves at once for this model.
    pub max_concurrent: usize,
    /// Set (to when it was picked) when this request is the one probe of an endpoint back from
    /// its cooldown: its answer or failure decides the endpoint's health, and a probe that ends
    /// with neither goes back with [`Router::release_probe`].
    pub probe: Option<Instant>,
}

/// Whether an endpoint takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Healthy,
    /// Failed; out of rotation until then, then half-open.
    Cooling {
        until: Instant,
    },
    /// One probe request is out; no other is sent until it ends (or is lost for a cooldown).
    Probing {
        since: Instant,
    },
}

impl Health {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Cooling { .. } => "cooling",
            Self::Probing { .. } => "probing",
        }
    }
}

/// A latency that jumps to a worse sample at once and decays towards better ones over
/// [`DECAY`] (Finagle's peak EWMA); without samples it drifts back to its best over [`STALE`].
#[derive(Debug, Clone, Copy)]
struct PeakEwma {
    ms: f64,
    at: Option<Instant>,
    /// The best sample seen (the prior before any).
    best: f64,
    /// Whether `best` is a sample rather than the prior.
    measured: bool,
}

impl PeakEwma {
    const fn prior(ms: f64) -> Self {
        Self {
            ms,
            at: None,
            best: ms,
            measured: false,
        }
    }

    /// The estimate at `now`: what was learned, less trusted the older it is.
    fn estimate(&self, now: Instant) -> f64 {
        let Some(at) = self.at else {
            return self.ms;
        };
        let w = (-now.saturating_duration_since(at).as_secs_f64() / STALE.as_secs_f64()).exp();
        self.best + (self.ms - self.best) * w
    }

    fn observe(&mut self, now: Instant, sample: Duration) {
        let sample = sample.as_secs_f64() * 1_000.0;
        self.best = if self.measured { self.best.min(sample) } else { sample };
        self.measured = true;
        match self.at {
            Some(at) if sample < self.ms => {
                let w = (-now.saturating_duration_since(at).as_secs_f64() / DECAY.as_secs_f64()).exp();
                self.ms = self.ms * w + sample * (1.0 - w);
            }
            _ => self.ms = sample,
        }
        self.at = Some(now);
    }

    /// The latency is at least `floor` (a wait that ended before the answer): a worse estimate
    /// jumps to it, a better one stays, and the best seen is untouched, so it is forgotten as
    /// it ages like any peak.
    fn raise(&mut self, now: Instant, floor: Duration) {
        let floor = floor.as_secs_f64() * 1_000.0;
        if floor > self.estimate(now) {
            self.ms = floor;
            self.at = Some(now);
        }
    }
}

impl Learned {
    /// Requests served at once: the learned limit, within 1 and the configured one.
    fn concurrency(&self, configured: usize) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive limit of at most 1024"
        )]
        self.limit
            .map_or(configured, |l| (l.floor() as usize).clamp(1, configured.max(1)))
    }
}

/// What the router learned of one model on one endpoint.
#[derive(Debug, Clone, Copy)]
struct Learned {
    ttft: PeakEwma,
    itl: PeakEwma,
    picks: u64,
    successes: u64,
    failures: u64,
    /// Requests it serves at once, learned (AIMD) below the configured `max_concurrent`;
    /// `None` until it first said it was overloaded.
    limit: Option<f64>,
}

impl Learned {
    /// Before any sample, the tier's network distance orders the endpoints.
    const fn new(tier: Tier) -> Self {
        let ttft = match tier {
            Tier::Metro => 100.0,
            Tier::Province => 150.0,
            Tier::National => 250.0,
        };
        Self {
            ttft: PeakEwma::prior(ttft),
            itl: PeakEwma::prior(0.0),
            picks: 0,
            successes: 0,
            failures: 0,
            limit: None,
        }
    }
}

/// One (endpoint, model) as `Endpoints.GetStatistics` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    pub endpoint: String,
    pub model: String,
    pub tier: Tier,
    pub source: Source,
    /// "healthy", "cooling" or "probing".
    pub health: &'static str,
    /// Until the endpoint is tried again, while cooling.
    pub cooldown_left: Duration,
    /// Peak-EWMA time to first token, queue time included; the tier's prior before a sample.
    pub ttft_ms: f64,
    pub inter_token_ms: f64,
    pub picks: u64,
    pub successes: u64,
    pub failures: u64,
}

struct Entry {
    spec: EndpointSpec,
    health: Health,
    learned: HashMap<String, Learned>,
}

impl Entry {
    fn learned(&mut self, model: &str) -> &mut Learned {
        let tier = self.spec.tier;
        self.learned
            .entry(model.to_owned())
            .or_insert_with(|| Learned::new(tier))
    }
}

struct Registry {
    configured: Vec<EndpointSpec>,
    provisioned: Vec<EndpointSpec>,
    /// Nearest tier first; within a tier, configured before provisioned, each in its order.
    merged: Vec<Entry>,
}

impl Registry {
    fn rebuild(&mut self) {
        let old = std::mem::take(&mut self.merged);
        let overridden = |p: &EndpointSpec| self.configured.iter().any(|c| c.name == p.name);
        let mut specs: Vec<EndpointSpec> = self.configured.clone();
        specs.extend(self.provisioned.iter().filter(|p| !overridden(p)).cloned());
        // Stable sort keeps the source order within a tier.
        specs.sort_by_key(|e| e.tier);
        self.merged = specs
            .into_iter()
            .map(|spec| {
                let known = old.iter().find(|o| o.spec.name == spec.name && o.spec.url == spec.url);
                Entry {
                    health: known.map_or(Health::Healthy, |o| o.health),
                    learned: known.map(|o| o.learned.clone()).unwrap_or_default(),
                    spec,
                }
            })
            .collect();
    }
}

pub struct Router<K> {
    registry: Mutex<Registry>,
    clock: K,
    cooldown: Duration,
    /// splitmix64 state for the power of two choices; seeded from the OS, or by tests.
    dice: Mutex<u64>,
}

impl<K: Clock> Router<K> {
    pub fn new(configured: &[EndpointConfig], clock: K, cooldown: Duration) -> Self {
        let mut registry = Registry {
            configured: configured.iter().map(EndpointSpec::from).collect(),
            provisioned: Vec::new(),
            merged: Vec::new(),
        };
        registry.rebuild();
        let mut seed = [0u8; 8];
        // Without OS randomness the choice is still fair, just predictable.
        let _ = getrandom::getrandom(&mut seed);
        Self {
            registry: Mutex::new(registry),
            clock,
            cooldown,
            dice: Mutex::new(u64::from_le_bytes(seed)),
        }
    }

    /// Makes the random draws repeatable (tests, benchmarks).
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        *self.dice.lock().expect("dice lock") = seed;
        self
    }

    pub fn clock(&self) -> &K {
        &self.clock
    }

    /// A number below `n` (n > 0).
    fn roll(&self, n: usize) -> usize {
        let mut state = self.dice.lock().expect("dice lock");
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        usize::try_from(z % n as u64).unwrap_or(0)
    }

    /// Replaces the endpoints the eSIM provisions (an empty list when the card is gone).
    /// Returns whether anything changed.
    pub fn set_provisioned(&self, endpoints: Vec<EndpointSpec>) -> bool {
        let mut registry = self.registry.lock().expect("router lock");
        if registry.provisioned == endpoints {
            return false;
        }
        registry.provisioned = endpoints;
        registry.rebuild();
        true
    }

    /// Replaces the configured endpoints (a reload); an endpoint kept with the same name and
    /// URL keeps its health and what was learned of it. Returns whether anything changed.
    pub fn set_configured(&self, endpoints: &[EndpointConfig]) -> bool {
        let endpoints: Vec<EndpointSpec> = endpoints.iter().map(EndpointSpec::from).collect();
        let mut registry = self.registry.lock().expect("router lock");
        if registry.configured == endpoints {
            return false;
        }
        registry.configured = endpoints;
        registry.rebuild();
        true
    }

    /// The endpoints in use, nearest tier first.
    pub fn endpoints(&self) -> Vec<EndpointSpec> {
        let registry = self.registry.lock().expect("router lock");
        registry.merged.iter().map(|e| e.spec.clone()).collect()
    }

    /// Chooses an endpoint for `model` (or each endpoint's default model), as if idle.
    pub fn pick(&self, model: Option<&str>) -> Result<Route, RouterError> {
        self.pick_with_load(model, |_, _| 0)
    }

    /// Chooses an endpoint for `model` (or each endpoint's default model); `load` tells the
    /// requests queued or running on an (endpoint, model).
    pub fn pick_with_load(
        &self,
        model: Option<&str>,
        load: impl Fn(&str, &str) -> usize,
    ) -> Result<Route, RouterError> {
        self.pick_except(model, load, &[])
    }

    /// Like [`Self::pick_with_load`], never choosing one of the endpoints named in `tried`
    /// (those that already failed the request).
    pub fn pick_except(
        &self,
        model: Option<&str>,
        load: impl Fn(&str, &str) -> usize,
        tried: &[String],
    ) -> Result<Route, RouterError> {
        let now = self.clock.now();
        let mut registry = self.registry.lock().expect("router lock");
        if registry.merged.is_empty() {
            return Err(RouterError::NoEndpoints);
        }
        let mut serving = 0;
        // (entry index, model index, score): lower is better.
        let mut candidates: Vec<(usize, usize, f64)> = Vec::new();
        for (i, entry) in registry.merged.iter_mut().enumerate() {
            let m = match model {
                Some(m) => match entry.spec.models.iter().position(|x| x.name == m) {
                    Some(m) => m,
                    None => continue,
                },
                None => 0,
            };
            serving += 1;
            if tried.contains(&entry.spec.name) {
                continue;
            }
            let takes = match entry.health {
                Health::Healthy => true,
                Health::Cooling { until } => now >= until,
                Health::Probing { since } => now >= since + self.cooldown,
            };
            if !takes {
                continue;
            }
            let spec = &entry.spec.models[m];
            let (name, price, configured) = (spec.name.clone(), spec.price_per_1k, entry.spec.max_concurrent);
            let outstanding = load(&entry.spec.name, &name);
            let learned = entry.learned(&name);
            let limit = learned.concurrency(configured);
            candidates.push((i, m, score(learned, now, outstanding, limit, price)));
        }
        let chosen = match candidates.len() {
            0 => {
                return match (serving, model) {
                    (0, Some(m)) => Err(RouterError::NoModel(m.to_owned())),
                    _ => Err(RouterError::AllCoolingDown),
                };
            }
            1 => candidates[0],
            n => {
                let a = self.roll(n);
                let mut b = self.roll(n - 1);
                if b >= a {
                    b += 1;
                }
                // Ties go to the earlier entry: the nearer tier.
                let (a, b) = (candidates[a.min(b)], candidates[a.max(b)]);
                if b.2 < a.2 { b } else { a }
            }
        };
        let entry = &mut registry.merged[chosen.0];
        let configured = entry.spec.max_concurrent;
        let probe = (entry.health != Health::Healthy).then(|| {
            entry.health = Health::Probing { since: now };
            tracing::info!(endpoint = %entry.spec.name, "probing an endpoint after its cooldown");
            now
        });
        let spec = entry.spec.models[chosen.1].clone();
        let learned = entry.learned(&spec.name);
        learned.picks += 1;
        let max_concurrent = learned.concurrency(configured);
        let e = &entry.spec;
        Ok(Route {
            endpoint: e.name.clone(),
            url: e.url.clone(),
            model: spec.name,
            max_output: spec.max_output,
            price_per_1k: spec.price_per_1k,
            max_concurrent,
            probe,
        })
    }

    /// A probe ended with no verdict: cancelled (a lost hedge race, the app gone, refused by the
    /// budget, or never sent) or failed on the device's side. That says nothing of the endpoint,
    /// so it is half-open again, as before the probe, and the next request probes it; left
    /// "probing" it would be shut out for another cooldown for no fault of its own. A probe
    /// already decided (answered or failed), or one an earlier probe outlived, is left alone.
    pub fn release_probe(&self, route: &Route) {
        let Some(since) = route.probe else { return };
        self.with_entry(&route.endpoint, |entry| {
            if entry.health == (Health::Probing { since }) {
                // Picked once its cooldown was over: cooling "until" then is over now too.
                entry.health = Health::Cooling { until: since };
                tracing::debug!(endpoint = %route.endpoint, "a probe ended without a verdict");
            }
        });
    }

    /// Takes an endpoint out of rotation for the cooldown period, or for as long as it asked
    /// (`Retry-After`, at most [`MAX_RETRY_AFTER`]).
    pub fn report_failure(&self, endpoint: &str, model: &str, retry_after: Option<Duration>) {
        let pause = retry_after.map_or(self.cooldown, |r| r.min(MAX_RETRY_AFTER));
        let until = self.clock.now() + pause;
        self.with_entry(endpoint, |entry| {
            entry.health = Health::Cooling { until };
            entry.learned(model).failures += 1;
        });
    }

    /// The endpoint said it is overloaded for `model` (429 or 503): it serves half as many at
    /// once from now on (multiplicative decrease; at least one).
    pub fn report_overload(&self, endpoint: &str, model: &str) {
        self.with_entry(endpoint, |entry| {
            let configured = entry.spec.max_concurrent;
            let learned = entry.learned(model);
            #[expect(clippy::cast_precision_loss, reason = "limits are at most 1024")]
            let now = learned.limit.unwrap_or(configured as f64);
            learned.limit = Some((now / 2.0).max(1.0));
            tracing::info!(
                endpoint,
                model,
                limit = learned.concurrency(configured),
                "endpoint overloaded: fewer requests at once"
            );
        });
    }

    /// A request was answered: `ttft` from admission (queue time included) to the first
    /// token, and the mean gap between tokens after it when there were several.
    pub fn report_success(&self, endpoint: &str, model: &str, ttft: Duration, inter_token: Option<Duration>) {
        let now = self.clock.now();
        self.with_entry(endpoint, |entry| {
            entry.health = Health::Healthy;
            let learned = entry.learned(model);
            learned.successes += 1;
            // Additive increase: one more at once after about a limit's worth of answers.
            if let Some(limit) = learned.limit {
                learned.limit = Some(limit + 1.0 / limit);
            }
            learned.ttft.observe(now, ttft);
            if let Some(gap) = inter_token {
                learned.itl.observe(now, gap);
            }
        });
    }

    /// A request gave up on `endpoint` after `waited` without its first token, because another
    /// endpoint answered first (a hedge race): its time to first token is at least that. Not a
    /// failure, yet without it a hedged endpoint that is slow would never be learned to be
    /// slow, and would be picked, and hedged, again and again.
    pub fn report_unanswered(&self, endpoint: &str, model: &str, waited: Duration) {
        let now = self.clock.now();
        self.with_entry(endpoint, |entry| entry.learned(model).ttft.raise(now, waited));
    }

    /// The endpoint answered, though not with an answer (it refused the request's content):
    /// it is up, so a probe of it succeeded; nothing is learned of its latency.
    pub fn report_alive(&self, endpoint: &str) {
        self.with_entry(endpoint, |entry| {
            if matches!(entry.health, Health::Probing { .. }) {
                entry.health = Health::Healthy;
            }
        });
    }

    /// What the router knows of every (endpoint, model), in registry order.
    pub fn statistics(&self) -> Vec<Statistics> {
        let now = self.clock.now();
        let registry = self.registry.lock().expect("router lock");
        let mut out = Vec::new();
        for entry in &registry.merged {
            for model in &entry.spec.models {
                let learned = entry
                    .learned
                    .get(&model.name)
                    .copied()
                    .unwrap_or_else(|| Learned::new(entry.spec.tier));
                out.push(Statistics {
                    endpoint: entry.spec.name.clone(),
                    model: model.name.clone(),
                    tier: entry.spec.tier,
                    source: entry.spec.source,
                    health: entry.health.as_str(),
                    cooldown_left: match entry.health {
                        Health::Cooling { until } => until.saturating_duration_since(now),
                        _ => Duration::ZERO,
                    },
                    ttft_ms: learned.ttft.estimate(now),
                    inter_token_ms: learned.itl.estimate(now),
                    picks: learned.picks,
                    successes: learned.successes,
                    failures: learned.failures,
                });
            }
        }
        out
    }

    fn with_entry(&self, endpoint: &str, f: impl FnOnce(&mut Entry)) {
        let mut registry = self.registry.lock().expect("router lock");
        if let Some(entry) = registry.merged.iter_mut().find(|e| e.spec.name == endpoint) {
            f(entry);
        }
    }
}

/// Expected time to the first words, stretched by the work ahead in the endpoint's line and
/// by price: an endpoint at twice the default price must be 1.5 times as fast to be chosen.
fn score(learned: &Learned, now: Instant, outstanding: usize, limit: usize, price_per_1k: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "counts and prices are far below 2^52")]
    let (outstanding, limit, price) = (
        outstanding as f64,
        limit.max(1) as f64,
        price_per_1k as f64 / DEFAULT_PRICE_PER_1K as f64,
    );
    let first_words = learned.ttft.estimate(now) + FIRST_WORDS * learned.itl.estimate(now);
    first_words * (1.0 + outstanding / limit) * f64::midpoint(1.0, price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ep(name: &str, tier: Tier, models: &[&str]) -> EndpointConfig {
        EndpointConfig {
            name: name.into(),
            url: format!("http://{name}/v1"),
            tier,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            price_per_1k: DEFAULT_PRICE_PER_1K,
            max_concurrent: 2,
        }
    }

    fn card(name: &str, tier: Tier, model: &str, max_output: u32, price: u64) -> EndpointSpec {
        EndpointSpec {
            name: name.into(),
            url: format!("http://card-{name}/v1"),
            tier,
            models: vec![ModelSpec {
                name: model.into(),
                context_window: Some(2048),
                max_output: Some(max_output),
                price_per_1k: price,
            }],
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            source: Source::Card,
        }
    }

    #[test]
    fn prefers_nearest_tier_serving_the_model() {
        let r = Router::new(
            &[
                ep("nat", Tier::National, &["big", "small"]),
                ep("metro", Tier::Metro, &["small"]),
            ],
            ManualClock::default(),
            Duration::from_secs(30),
        );
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
        assert_eq!(
            r.pick(Some("big")).unwrap(),
            Route {
                endpoint: "nat".into(),
                url: "http://nat/v1".into(),
                model: "big".into(),
                max_output: None,
                price_per_1k: DEFAULT_PRICE_PER_1K,
                max_concurrent: 2,
                probe: None,
            }
        );
        assert_eq!(r.pick(Some("huge")).unwrap_err(), RouterError::NoModel("huge".into()));
    }

    #[test]
    fn failed_endpoint_cools_down_then_returns() {
        let clock = ManualClock::default();
        let r = Router::new(
            &[ep("metro", Tier::Metro, &["m"]), ep("prov", Tier::Province, &["m"])],
            clock.clone(),
            Duration::from_secs(30),
        );
        r.report_failure("metro", "m", None);
        assert_eq!(r.pick(None).unwrap().endpoint, "prov");
        r.report_failure("prov", "m", None);
        assert_eq!(r.pick(Some("m")).unwrap_err(), RouterError::AllCoolingDown);
        clock.advance(Duration::from_secs(31));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
    }

    #[test]
    fn a_failover_never_goes_back_to_an_endpoint_that_failed_the_request() {
        let clock = ManualClock::default();
        let r = three(&clock);
        let tried = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        // metro failed with a Retry-After of 0: healthy again, yet not for this request.
        r.report_failure("metro", "m", Some(Duration::ZERO));
        for _ in 0..50 {
            let pick = r.pick_except(None, |_, _| 0, &tried(&["metro"])).unwrap();
            assert_ne!(pick.endpoint, "metro");
        }
        assert_eq!(
            r.pick_except(None, |_, _| 0, &tried(&["metro", "prov"]))
                .unwrap()
                .endpoint,
            "nat"
        );
        assert_eq!(
            r.pick_except(Some("m"), |_, _| 0, &tried(&["metro", "prov", "nat"])),
            Err(RouterError::AllCoolingDown)
        );
        assert!(
            (0..50).any(|_| r.pick(None).unwrap().endpoint == "metro"),
            "other requests still go there"
        );
    }

    #[test]
    fn retry_after_keeps_an_endpoint_out_for_as_long_as_it_asked_within_a_bound() {
        let clock = ManualClock::default();
        let r = Router::new(
            &[ep("metro", Tier::Metro, &["m"]), ep("prov", Tier::Province, &["m"])],
            clock.clone(),
            Duration::from_secs(30),
        );
        r.report_failure("metro", "m", Some(Duration::from_secs(120)));
        clock.advance(Duration::from_secs(119));
        assert_eq!(r.pick(None).unwrap().endpoint, "prov", "still inside its Retry-After");
        clock.advance(Duration::from_secs(2));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
        r.report_failure("metro", "m", Some(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            r.pick(None).unwrap().endpoint,
            "metro",
            "a short Retry-After beats the cooldown"
        );
        r.report_failure("metro", "m", Some(Duration::from_secs(u64::from(u32::MAX))));
        clock.advance(MAX_RETRY_AFTER + Duration::from_secs(1));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro", "a huge Retry-After is bounded");
    }

    fn three(clock: &ManualClock) -> Router<ManualClock> {
        Router::new(
            &[
                ep("metro", Tier::Metro, &["m"]),
                ep("prov", Tier::Province, &["m"]),
                ep("nat", Tier::National, &["m"]),
            ],
            clock.clone(),
            Duration::from_secs(30),
        )
        .with_seed(7)
    }

    /// Picks `n` times with `load` and counts the picks per endpoint.
    fn count(r: &Router<ManualClock>, n: usize, load: impl Fn(&str, &str) -> usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            *counts
                .entry(r.pick_with_load(None, &load).unwrap().endpoint)
                .or_default() += 1;
        }
        counts
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn converges_on_the_fastest_and_moves_away_when_it_degrades() {
        let clock = ManualClock::default();
        let r = three(&clock);
        let before = count(&r, 300, |_, _| 0);
        assert_eq!(
            before.get("nat"),
            None,
            "with nothing learned the tiers decide: {before:?}"
        );
        r.report_success("metro", "m", ms(400), Some(ms(20)));
        r.report_success("prov", "m", ms(60), Some(ms(20)));
        r.report_success("nat", "m", ms(120), Some(ms(20)));
        let fast = count(&r, 300, |_, _| 0);
        // The best wins every draw it is in (two of three), the worst none.
        assert!(fast["prov"] > 180, "{fast:?}");
        assert_eq!(fast.get("metro"), None, "{fast:?}");
        // A peak counts at once; better samples count as time passes.
        r.report_success("prov", "m", ms(2_000), Some(ms(20)));
        let degraded = count(&r, 300, |_, _| 0);
        assert!(degraded["nat"] > 180 && !degraded.contains_key("prov"), "{degraded:?}");
        for _ in 0..10 {
            clock.advance(Duration::from_secs(5));
            r.report_success("prov", "m", ms(60), Some(ms(20)));
        }
        let recovered = count(&r, 300, |_, _| 0);
        assert!(recovered["prov"] > 180, "{recovered:?}");
    }

    #[test]
    fn an_endpoint_left_alone_after_a_bad_spell_is_tried_again() {
        let clock = ManualClock::default();
        let r = three(&clock);
        r.report_success("metro", "m", ms(50), None);
        r.report_success("prov", "m", ms(100), None);
        r.report_success("nat", "m", ms(100), None);
        r.report_success("metro", "m", ms(3_000), None);
        let shunned = count(&r, 300, |_, _| 0);
        assert_eq!(shunned.get("metro"), None, "{shunned:?}");
        // Nobody refreshes metro's estimate (it is not picked); the others' stay fresh.
        for _ in 0..9 {
            clock.advance(Duration::from_secs(10));
            r.report_success("prov", "m", ms(100), None);
            r.report_success("nat", "m", ms(100), None);
        }
        let again = count(&r, 300, |_, _| 0);
        assert!(again["metro"] > 180, "{again:?}");
    }

    #[test]
    fn queued_work_and_price_weigh_against_an_endpoint() {
        let clock = ManualClock::default();
        let r = three(&clock);
        for name in ["metro", "prov", "nat"] {
            r.report_success(name, "m", ms(100), None);
        }
        let busy = count(&r, 300, |e, _| if e == "metro" { 6 } else { 0 });
        assert_eq!(busy.get("metro"), None, "a line of 6 at 2 at once: {busy:?}");
        let costly = Router::new(
            &[
                EndpointConfig {
                    price_per_1k: 2 * DEFAULT_PRICE_PER_1K,
                    ..ep("metro", Tier::Metro, &["m"])
                },
                ep("prov", Tier::Province, &["m"]),
            ],
            clock.clone(),
            Duration::from_secs(30),
        );
        costly.report_success("metro", "m", ms(100), None);
        costly.report_success("prov", "m", ms(140), None);
        assert_eq!(
            costly.pick(None).unwrap().endpoint,
            "prov",
            "1.4 times slower at half the price"
        );
        costly.report_success("prov", "m", ms(160), None);
        assert_eq!(
            costly.pick(None).unwrap().endpoint,
            "metro",
            "1.6 times slower is too slow"
        );
    }

    #[test]
    fn concurrency_halves_on_overload_and_grows_back_one_at_a_time_to_the_configured_limit() {
        let mut wide = ep("metro", Tier::Metro, &["m"]);
        wide.max_concurrent = 8;
        let r = Router::new(&[wide], ManualClock::default(), Duration::from_secs(1));
        let limit = |r: &Router<ManualClock>| r.pick(None).unwrap().max_concurrent;
        assert_eq!(limit(&r), 8, "the configured limit until told otherwise");
        r.report_success("metro", "m", ms(50), None);
        assert_eq!(limit(&r), 8, "never above the configured limit");
        r.report_overload("metro", "m");
        assert_eq!(limit(&r), 4);
        r.report_overload("metro", "m");
        r.report_overload("metro", "m");
        r.report_overload("metro", "m");
        assert_eq!(limit(&r), 1, "at least one");
        // About `limit` answers add one (+1/limit each): 1 → 2 after one, → 3 after three more.
        let mut grown = Vec::new();
        for _ in 0..6 {
            r.report_success("metro", "m", ms(50), None);
            grown.push(limit(&r));
        }
        assert_eq!(grown, [2, 2, 2, 3, 3, 3]);
        for _ in 0..100 {
            r.report_success("metro", "m", ms(50), None);
        }
        assert_eq!(limit(&r), 8, "back to the configured limit, not past it");
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
    }

    #[test]
    fn a_failed_endpoint_is_probed_once_after_its_cooldown_then_returns() {
        let clock = ManualClock::default();
        let r = three(&clock);
        r.report_success("metro", "m", ms(50), None);
        r.report_success("prov", "m", ms(200), None);
        r.report_success("nat", "m", ms(300), None);
        r.report_failure("metro", "m", None);
        let cooling = count(&r, 100, |_, _| 0);
        assert_eq!(cooling.get("metro"), None, "{cooling:?}");
        assert_eq!(r.statistics()[0].health, "cooling");
        clock.advance(Duration::from_secs(31));
        let half_open = count(&r, 100, |_, _| 0);
        assert_eq!(half_open.get("metro"), Some(&1), "exactly one probe: {half_open:?}");
        assert_eq!(r.statistics()[0].health, "probing");
        r.report_success("metro", "m", ms(50), None);
        let back = count(&r, 100, |_, _| 0);
        assert!(back["metro"] > 50, "{back:?}");
        // A failed probe cools it again; a lost one (no report) is retried after a cooldown.
        r.report_failure("metro", "m", None);
        clock.advance(Duration::from_secs(31));
        assert_eq!(count(&r, 100, |_, _| 0).get("metro"), Some(&1));
        clock.advance(Duration::from_secs(31));
        assert_eq!(count(&r, 100, |_, _| 0).get("metro"), Some(&1));
        let stats = &r.statistics()[0];
        assert_eq!((stats.failures, stats.successes), (2, 2), "{stats:?}");
        // A probe the endpoint refuses for its content still shows it is up.
        r.report_failure("metro", "m", None);
        r.report_alive("metro");
        assert_eq!(r.statistics()[0].health, "cooling", "only a probe's answer decides");
        clock.advance(Duration::from_secs(31));
        assert_eq!(count(&r, 100, |_, _| 0).get("metro"), Some(&1));
        r.report_alive("metro");
        assert_eq!(r.statistics()[0].health, "healthy");
    }

    #[test]
    fn a_probe_that_ends_without_a_verdict_leaves_the_endpoint_to_the_next_request() {
        let clock = ManualClock::default();
        let r = three(&clock);
        let only_metro = ["prov".to_owned(), "nat".to_owned()];
        let metro = |r: &Router<ManualClock>| r.pick_except(None, |_, _| 0, &only_metro);
        let healthy = metro(&r).unwrap();
        assert_eq!(healthy.probe, None, "a healthy endpoint is no probe");
        r.release_probe(&healthy);
        assert_eq!(r.statistics()[0].health, "healthy");
        r.report_failure("metro", "m", None);
        clock.advance(Duration::from_secs(31));
        let probe = metro(&r).unwrap();
        assert!(probe.probe.is_some());
        assert_eq!(metro(&r), Err(RouterError::AllCoolingDown), "one probe at a time");
        // Cancelled: neither passed nor failed; the next request probes it, without a cooldown.
        r.release_probe(&probe);
        let stats = &r.statistics()[0];
        assert_eq!(
            (stats.health, stats.cooldown_left, stats.failures),
            ("cooling", Duration::ZERO, 1)
        );
        let again = metro(&r).unwrap();
        assert!(again.probe.is_some());
        // A probe lost for a cooldown is probed anew; the old one, ending late, changes nothing.
        clock.advance(Duration::from_secs(31));
        let newer = metro(&r).unwrap();
        r.release_probe(&again);
        assert_eq!(r.statistics()[0].health, "probing", "the newer probe is still out");
        // Decided ones stay decided.
        r.report_success("metro", "m", ms(50), None);
        r.release_probe(&newer);
        assert_eq!(r.statistics()[0].health, "healthy");
        r.report_failure("metro", "m", None);
        clock.advance(Duration::from_secs(31));
        let failing = metro(&r).unwrap();
        r.report_failure("metro", "m", None);
        r.release_probe(&failing);
        let stats = &r.statistics()[0];
        assert_eq!(stats.health, "cooling");
        assert!(stats.cooldown_left > Duration::from_secs(29), "{stats:?}");
    }

    #[test]
    fn an_endpoint_that_lost_a_hedge_race_is_known_to_be_slow_until_that_ages() {
        let clock = ManualClock::default();
        let r = three(&clock);
        r.report_success("metro", "m", ms(50), None);
        r.report_success("prov", "m", ms(100), None);
        r.report_success("nat", "m", ms(100), None);
        // Metro was waited on for 2 s and another answered first: it takes at least that.
        r.report_unanswered("metro", "m", ms(2_000));
        let shunned = count(&r, 300, |_, _| 0);
        assert_eq!(shunned.get("metro"), None, "{shunned:?}");
        assert!(r.statistics()[0].ttft_ms >= 2_000.0);
        // A short wait says nothing: it never lowers an estimate; nor is it a failure.
        r.report_unanswered("prov", "m", ms(10));
        let prov = &r.statistics()[1];
        assert_eq!((prov.ttft_ms, prov.failures, prov.health), (100.0, 0, "healthy"));
        for _ in 0..9 {
            clock.advance(Duration::from_secs(10));
            r.report_success("prov", "m", ms(100), None);
            r.report_success("nat", "m", ms(100), None);
        }
        let again = count(&r, 300, |_, _| 0);
        assert!(again["metro"] > 180, "back to its best: {again:?}");
        // Never answered before: it drifts back to its tier's prior, not to the wait.
        let fresh = three(&clock);
        fresh.report_unanswered("metro", "m", ms(2_000));
        assert_eq!(count(&fresh, 100, |_, _| 0).get("metro"), None);
        clock.advance(Duration::from_secs(90));
        let prior = fresh.statistics()[0].ttft_ms;
        assert!((100.0..110.0).contains(&prior), "{:?}", fresh.statistics()[0]);
    }

    #[test]
    fn a_reload_replaces_the_configured_endpoints_and_keeps_what_was_learned_of_the_rest() {
        let clock = ManualClock::default();
        let r = Router::new(
            &[ep("metro", Tier::Metro, &["m"]), ep("nat", Tier::National, &["m"])],
            clock.clone(),
            Duration::from_secs(30),
        );
        r.report_failure("nat", "m", None);
        assert!(!r.set_configured(&[ep("metro", Tier::Metro, &["m"]), ep("nat", Tier::National, &["m"])]));
        // metro goes, province comes, nat stays as it was: still cooling down.
        assert!(r.set_configured(&[ep("prov", Tier::Province, &["m"]), ep("nat", Tier::National, &["m"])]));
        let names: Vec<String> = r.endpoints().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["prov", "nat"]);
        let nat = r.statistics().into_iter().find(|s| s.endpoint == "nat").unwrap();
        assert_eq!((nat.health, nat.failures), ("cooling", 1));
        assert_eq!(r.pick(None).unwrap().endpoint, "prov");
        assert!(r.set_configured(&[]));
        assert_eq!(r.pick(None).unwrap_err(), RouterError::NoEndpoints);
    }

    #[test]
    fn no_endpoints_is_its_own_error() {
        let r = Router::new(&[], ManualClock::default(), Duration::from_secs(1));
        assert_eq!(r.pick(None).unwrap_err(), RouterError::NoEndpoints);
    }

    #[test]
    fn card_endpoints_serve_with_no_configuration_and_go_with_the_card() {
        let r = Router::new(&[], ManualClock::default(), Duration::from_secs(30));
        assert!(r.set_provisioned(vec![
            card("nat", Tier::National, "s", 512, 2_000),
            card("metro", Tier::Metro, "s", 256, 1_500),
        ]));
        let route = r.pick(None).unwrap();
        assert_eq!(
            (route.endpoint.as_str(), route.max_output, route.price_per_1k),
            ("metro", Some(256), 1_500)
        );
        assert!(r.set_provisioned(Vec::new()));
        assert_eq!(r.pick(None).unwrap_err(), RouterError::NoEndpoints);
    }

    #[test]
    fn configuration_overrides_a_card_endpoint_of_the_same_name_and_adds_others() {
        let r = Router::new(
            &[
                ep("metro", Tier::Metro, &["local"]),
                ep("extra", Tier::Province, &["x"]),
            ],
            ManualClock::default(),
            Duration::from_secs(30),
        );
        r.set_provisioned(vec![
            card("metro", Tier::Metro, "s", 256, 1_500),
            card("nat", Tier::National, "s", 512, 2_000),
        ]);
        let names: Vec<_> = r.endpoints().into_iter().map(|e| (e.name, e.source)).collect();
        assert_eq!(
            names,
            [
                ("metro".to_owned(), Source::Config),
                ("extra".to_owned(), Source::Config),
                ("nat".to_owned(), Source::Card)
            ]
        );
        assert_eq!(
            r.pick(Some("s")).unwrap().endpoint,
            "nat",
            "the override serves only its own models"
        );
    }

    #[test]
    fn health_survives_a_new_card_list() {
        let r = Router::new(&[], ManualClock::default(), Duration::from_secs(30));
        r.set_provisioned(vec![
            card("metro", Tier::Metro, "s", 256, 1),
            card("nat", Tier::National, "s", 256, 1),
        ]);
        r.report_failure("metro", "m", None);
        r.set_provisioned(vec![
            card("metro", Tier::Metro, "s", 256, 1),
            card("prov", Tier::Province, "s", 256, 1),
            card("nat", Tier::National, "s", 256, 1),
        ]);
        assert_eq!(r.pick(None).unwrap().endpoint, "prov");
    }
}
