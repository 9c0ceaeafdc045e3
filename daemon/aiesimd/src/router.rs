//! Picks the endpoint that serves a request.
//!
//! The registry merges two sources: the endpoints the operator provisioned on the eSIM (zero
//! configuration) and those in the configuration file, which add to them or override one of the
//! same name. The card's list is replaced whenever the card is read again; health survives a
//! replacement for endpoints that stay.
//!
//! Choice is thin for now: filter by model and health, then prefer the nearest tier. Failing
//! endpoints cool down for a while. Latency-scored choice (peak-EWMA TTFT, P2C, hedging) grows
//! here.

use std::{
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

/// The endpoints' addresses the fast path can match on: those whose URL names an IP literal
/// (host names resolve per flow later), with the URL's port or its scheme's.
pub fn ip_destinations(endpoints: &[EndpointSpec]) -> Vec<std::net::SocketAddr> {
    let mut addrs: Vec<std::net::SocketAddr> = endpoints
        .iter()
        .filter_map(|e| {
            let url = reqwest::Url::parse(&e.url).ok()?;
            let ip: std::net::IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
            Some(std::net::SocketAddr::new(ip, url.port_or_known_default()?))
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
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
}

struct Entry {
    spec: EndpointSpec,
    cooldown_until: Option<Instant>,
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
                let cooldown_until = old
                    .iter()
                    .find(|o| o.spec.name == spec.name && o.spec.url == spec.url)
                    .and_then(|o| o.cooldown_until);
                Entry { spec, cooldown_until }
            })
            .collect();
    }
}

pub struct Router<K> {
    registry: Mutex<Registry>,
    clock: K,
    cooldown: Duration,
}

impl<K: Clock> Router<K> {
    pub fn new(configured: &[EndpointConfig], clock: K, cooldown: Duration) -> Self {
        let mut registry = Registry {
            configured: configured.iter().map(EndpointSpec::from).collect(),
            provisioned: Vec::new(),
            merged: Vec::new(),
        };
        registry.rebuild();
        Self {
            registry: Mutex::new(registry),
            clock,
            cooldown,
        }
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

    /// The endpoints in use, nearest tier first.
    pub fn endpoints(&self) -> Vec<EndpointSpec> {
        let registry = self.registry.lock().expect("router lock");
        registry.merged.iter().map(|e| e.spec.clone()).collect()
    }

    /// Chooses an endpoint for `model` (or each endpoint's default model).
    pub fn pick(&self, model: Option<&str>) -> Result<Route, RouterError> {
        let now = self.clock.now();
        let registry = self.registry.lock().expect("router lock");
        if registry.merged.is_empty() {
            return Err(RouterError::NoEndpoints);
        }
        let mut serving = 0;
        for entry in &registry.merged {
            let e = &entry.spec;
            let chosen = match model {
                Some(m) => match e.models.iter().find(|x| x.name == m) {
                    Some(x) => x,
                    None => continue,
                },
                None => &e.models[0],
            };
            serving += 1;
            if entry.cooldown_until.is_some_and(|t| now < t) {
                continue;
            }
            return Ok(Route {
                endpoint: e.name.clone(),
                url: e.url.clone(),
                model: chosen.name.clone(),
                max_output: chosen.max_output,
                price_per_1k: chosen.price_per_1k,
                max_concurrent: e.max_concurrent,
            });
        }
        match (serving, model) {
            (0, Some(m)) => Err(RouterError::NoModel(m.to_owned())),
            _ => Err(RouterError::AllCoolingDown),
        }
    }

    /// Takes an endpoint out of rotation for the cooldown period, or for as long as it asked
    /// (`Retry-After`, at most [`MAX_RETRY_AFTER`]).
    pub fn report_failure(&self, endpoint: &str, retry_after: Option<Duration>) {
        let pause = retry_after.map_or(self.cooldown, |r| r.min(MAX_RETRY_AFTER));
        let until = self.clock.now() + pause;
        self.set_cooldown(endpoint, Some(until));
    }

    pub fn report_success(&self, endpoint: &str) {
        self.set_cooldown(endpoint, None);
    }

    fn set_cooldown(&self, endpoint: &str, until: Option<Instant>) {
        let mut registry = self.registry.lock().expect("router lock");
        if let Some(entry) = registry.merged.iter_mut().find(|e| e.spec.name == endpoint) {
            entry.cooldown_until = until;
        }
    }
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
        r.report_failure("metro", None);
        assert_eq!(r.pick(None).unwrap().endpoint, "prov");
        r.report_failure("prov", None);
        assert_eq!(r.pick(Some("m")).unwrap_err(), RouterError::AllCoolingDown);
        clock.advance(Duration::from_secs(31));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
    }

    #[test]
    fn retry_after_keeps_an_endpoint_out_for_as_long_as_it_asked_within_a_bound() {
        let clock = ManualClock::default();
        let r = Router::new(
            &[ep("metro", Tier::Metro, &["m"]), ep("prov", Tier::Province, &["m"])],
            clock.clone(),
            Duration::from_secs(30),
        );
        r.report_failure("metro", Some(Duration::from_secs(120)));
        clock.advance(Duration::from_secs(119));
        assert_eq!(r.pick(None).unwrap().endpoint, "prov", "still inside its Retry-After");
        clock.advance(Duration::from_secs(2));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
        r.report_failure("metro", Some(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            r.pick(None).unwrap().endpoint,
            "metro",
            "a short Retry-After beats the cooldown"
        );
        r.report_failure("metro", Some(Duration::from_secs(u64::from(u32::MAX))));
        clock.advance(MAX_RETRY_AFTER + Duration::from_secs(1));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro", "a huge Retry-After is bounded");
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
        r.report_failure("metro", None);
        r.set_provisioned(vec![
            card("metro", Tier::Metro, "s", 256, 1),
            card("prov", Tier::Province, "s", 256, 1),
            card("nat", Tier::National, "s", 256, 1),
        ]);
        assert_eq!(r.pick(None).unwrap().endpoint, "prov");
    }
}
