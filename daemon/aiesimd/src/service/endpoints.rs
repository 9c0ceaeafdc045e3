//! `org.aiesim.AiEsim1.Endpoints` on the root object: the router's and the scheduler's view.

use std::{collections::HashMap, sync::Arc};

use zbus::{OwnedVariant, interface};

use super::{Shared, broker::owned_str};
use crate::scheduler::Lane;

pub struct EndpointsObject {
    pub shared: Arc<Shared>,
}

#[interface(name = "org.aiesim.AiEsim1.Endpoints", spawn = false)]
impl EndpointsObject {
    fn get_statistics(&self) -> Vec<HashMap<String, OwnedVariant>> {
        let broker = &self.shared.broker;
        let load: HashMap<Lane, crate::scheduler::LaneLoad> = broker.scheduler().load().into_iter().collect();
        let limits: HashMap<String, usize> = broker
            .router()
            .endpoints()
            .into_iter()
            .map(|e| (e.name, e.max_concurrent))
            .collect();
        broker
            .router()
            .statistics()
            .into_iter()
            .map(|s| {
                let lane = load
                    .get(&Lane {
                        endpoint: s.endpoint.clone(),
                        model: s.model.clone(),
                    })
                    .copied()
                    .unwrap_or_default();
                let count = |n: usize| OwnedVariant::from(u32::try_from(n).unwrap_or(u32::MAX));
                let cooldown_ms = u64::try_from(s.cooldown_left.as_millis()).unwrap_or(u64::MAX);
                HashMap::from([
                    ("endpoint".to_owned(), owned_str(&s.endpoint)),
                    ("model".to_owned(), owned_str(&s.model)),
                    ("tier".to_owned(), owned_str(s.tier.as_str())),
                    ("source".to_owned(), owned_str(s.source.as_str())),
                    ("health".to_owned(), owned_str(s.health)),
                    ("cooldown_ms".to_owned(), OwnedVariant::from(cooldown_ms)),
                    ("ttft_ms".to_owned(), OwnedVariant::from(s.ttft_ms)),
                    ("inter_token_ms".to_owned(), OwnedVariant::from(s.inter_token_ms)),
                    ("picks".to_owned(), OwnedVariant::from(s.picks)),
                    ("successes".to_owned(), OwnedVariant::from(s.successes)),
                    ("failures".to_owned(), OwnedVariant::from(s.failures)),
                    ("running".to_owned(), count(lane.running)),
                    ("queued".to_owned(), count(lane.queued)),
                    (
                        "max_concurrent".to_owned(),
                        count(limits.get(&s.endpoint).copied().unwrap_or_default()),
                    ),
                ])
            })
            .collect()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn names(&self) -> Vec<String> {
        self.shared
            .broker
            .router()
            .endpoints()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn healthy(&self) -> u32 {
        let mut healthy: Vec<String> = self
            .shared
            .broker
            .router()
            .statistics()
            .into_iter()
            .filter(|s| s.health == "healthy")
            .map(|s| s.endpoint)
            .collect();
        healthy.dedup();
        u32::try_from(healthy.len()).unwrap_or(u32::MAX)
    }
}
