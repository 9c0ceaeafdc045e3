//! Picks the endpoint that serves a request.
//!
//! Thin for now: filter by model and health, then prefer the nearest tier. Failing endpoints
//! cool down for a while. Latency-scored choice (peak-EWMA TTFT, P2C, hedging) grows here.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{clock::Clock, config::EndpointConfig};

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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    #[error("no endpoint is configured")]
    NoEndpoints,
    #[error("no endpoint serves model \"{0}\"")]
    NoModel(String),
    #[error("every endpoint serving the request is cooling down after failures")]
    AllCoolingDown,
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: String,
    pub url: String,
    pub model: String,
}

struct Health {
    cooldown_until: Option<Instant>,
}

pub struct Router<K> {
    endpoints: Vec<EndpointConfig>,
    health: Mutex<Vec<Health>>,
    clock: K,
    cooldown: Duration,
}

impl<K: Clock> Router<K> {
    pub fn new(mut endpoints: Vec<EndpointConfig>, clock: K, cooldown: Duration) -> Self {
        // Stable sort keeps the configured order within a tier.
        endpoints.sort_by_key(|e| e.tier);
        let health = endpoints.iter().map(|_| Health { cooldown_until: None }).collect();
        Self {
            endpoints,
            health: Mutex::new(health),
            clock,
            cooldown,
        }
    }

    pub fn endpoints(&self) -> &[EndpointConfig] {
        &self.endpoints
    }

    /// Chooses an endpoint for `model` (or each endpoint's default model).
    pub fn pick(&self, model: Option<&str>) -> Result<Route, RouterError> {
        if self.endpoints.is_empty() {
            return Err(RouterError::NoEndpoints);
        }
        let now = self.clock.now();
        let health = self.health.lock().expect("router lock");
        let mut serving = 0;
        for (e, h) in self.endpoints.iter().zip(health.iter()) {
            let chosen = match model {
                Some(m) if e.models.iter().any(|x| x == m) => m,
                Some(_) => continue,
                None => &e.models[0],
            };
            serving += 1;
            if h.cooldown_until.is_some_and(|t| now < t) {
                continue;
            }
            return Ok(Route {
                endpoint: e.name.clone(),
                url: e.url.clone(),
                model: chosen.to_owned(),
            });
        }
        match (serving, model) {
            (0, Some(m)) => Err(RouterError::NoModel(m.to_owned())),
            _ => Err(RouterError::AllCoolingDown),
        }
    }

    /// Takes an endpoint out of rotation for the cooldown period.
    pub fn report_failure(&self, endpoint: &str) {
        let until = self.clock.now() + self.cooldown;
        self.set_cooldown(endpoint, Some(until));
    }

    pub fn report_success(&self, endpoint: &str) {
        self.set_cooldown(endpoint, None);
    }

    fn set_cooldown(&self, endpoint: &str, until: Option<Instant>) {
        let mut health = self.health.lock().expect("router lock");
        if let Some(i) = self.endpoints.iter().position(|e| e.name == endpoint) {
            health[i].cooldown_until = until;
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
        }
    }

    #[test]
    fn prefers_nearest_tier_serving_the_model() {
        let r = Router::new(
            vec![
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
                model: "big".into()
            }
        );
        assert_eq!(r.pick(Some("huge")).unwrap_err(), RouterError::NoModel("huge".into()));
    }

    #[test]
    fn failed_endpoint_cools_down_then_returns() {
        let clock = ManualClock::default();
        let r = Router::new(
            vec![ep("metro", Tier::Metro, &["m"]), ep("prov", Tier::Province, &["m"])],
            clock.clone(),
            Duration::from_secs(30),
        );
        r.report_failure("metro");
        assert_eq!(r.pick(None).unwrap().endpoint, "prov");
        r.report_failure("prov");
        assert_eq!(r.pick(Some("m")).unwrap_err(), RouterError::AllCoolingDown);
        clock.advance(Duration::from_secs(31));
        assert_eq!(r.pick(None).unwrap().endpoint, "metro");
    }

    #[test]
    fn no_endpoints_is_its_own_error() {
        let r = Router::new(vec![], ManualClock::default(), Duration::from_secs(1));
        assert_eq!(r.pick(None).unwrap_err(), RouterError::NoEndpoints);
    }
}
