//! Reading and writing the classifier's maps.

use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, SocketAddr},
};

use aiesim_fastpath_common::{
    AI_FILTER_WORDS, Class, Config, Counters, Direction, EndpointKey, MAP_AI_ENDPOINTS, MAP_AI_FILTER, MAP_CONFIG,
    MAP_STATS, MAX_AI_ENDPOINTS, PROTOCOL_TCP, PROTOCOL_UDP, stats_index,
};
use aya::maps::{Array, HashMap, Map, MapError, PerCpuArray};

use super::{Classifier, Statistics};

/// Each endpoint is matched over TCP (HTTP/1, HTTP/2) and UDP (QUIC).
const PROTOCOLS: [u8; 2] = [PROTOCOL_TCP, PROTOCOL_UDP];

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("the BPF object has no map named {0}")]
    Missing(&'static str),
    #[error("the map {name} does not have the expected type or layout")]
    Layout {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("failed to read the map {name}")]
    Read {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("failed to update the map {name}")]
    Write {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{requested} AI endpoints given, at most {} fit", MAX_AI_ENDPOINTS as usize / PROTOCOLS.len())]
    TooManyEndpoints { requested: usize },
}

impl Classifier {
    /// Sums the per-CPU counters of both directions and all classes.
    pub fn statistics(&self) -> Result<Statistics, MapsError> {
        let stats: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(self.map(MAP_STATS)?).map_err(|source| MapsError::Layout {
                name: MAP_STATS,
                source,
            })?;
        let mut total = Statistics::default();
        for direction in Direction::ALL {
            for class in Class::ALL {
                let per_cpu = stats
                    .get(&stats_index(direction, class), 0)
                    .map_err(|source| MapsError::Read {
                        name: MAP_STATS,
                        source,
                    })?;
                let Counters { packets, bytes } = per_cpu.iter().fold(Counters::default(), add);
                let (direction_packets, direction_bytes) = match direction {
                    Direction::Egress => (&mut total.egress_packets, &mut total.egress_bytes),
                    Direction::Ingress => (&mut total.ingress_packets, &mut total.ingress_bytes),
                };
                *direction_packets = direction_packets.wrapping_add(packets);
                *direction_bytes = direction_bytes.wrapping_add(bytes);
                if class == Class::Ai {
                    total.ai_packets = total.ai_packets.wrapping_add(packets);
                    total.ai_bytes = total.ai_bytes.wrapping_add(bytes);
                }
            }
        }
        Ok(total)
    }

    /// Replaces the AI endpoints. New entries go in before old ones go out, and the filter in
    /// front of the map always covers every key in it, so an endpoint in both sets never stops
    /// matching.
    pub fn set_ai_endpoints(&mut self, endpoints: &[SocketAddr]) -> Result<(), MapsError> {
        if endpoints.len() * PROTOCOLS.len() > MAX_AI_ENDPOINTS as usize {
            return Err(MapsError::TooManyEndpoints {
                requested: endpoints.len(),
            });
        }
        let wanted: StdHashMap<EndpointKey, u32> = endpoints
            .iter()
            .zip(0u32..)
            .flat_map(|(endpoint, index)| PROTOCOLS.map(|protocol| (endpoint_key(endpoint, protocol), index)))
            .collect();

        let current = self.filter()?;
        let target = filter_of(wanted.keys());
        let union: Vec<u64> = current
            .iter()
            .zip(&target)
            .map(|(current, target)| current | target)
            .collect();
        self.write_filter(&current, &union)?;

        let mut map: HashMap<_, EndpointKey, u32> =
            HashMap::try_from(self.map_mut(MAP_AI_ENDPOINTS)?).map_err(|source| MapsError::Layout {
                name: MAP_AI_ENDPOINTS,
                source,
            })?;
        let stale = map
            .keys()
            .filter(|key| !key.as_ref().is_ok_and(|key| wanted.contains_key(key)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| MapsError::Read {
                name: MAP_AI_ENDPOINTS,
                source,
            })?;
        for (key, index) in &wanted {
            map.insert(key, index, 0).map_err(|source| MapsError::Write {
                name: MAP_AI_ENDPOINTS,
                source,
            })?;
        }
        for key in &stale {
            map.remove(key).map_err(|source| MapsError::Write {
                name: MAP_AI_ENDPOINTS,
                source,
            })?;
        }

        self.write_filter(&union, &target)
    }

    /// Sets the `skb->priority` given to egress AI packets; 0 leaves it alone.
    pub fn set_ai_priority(&mut self, priority: u32) -> Result<(), MapsError> {
        let mut config: Array<_, Config> =
            Array::try_from(self.map_mut(MAP_CONFIG)?).map_err(|source| MapsError::Layout {
                name: MAP_CONFIG,
                source,
            })?;
        let value = Config { ai_priority: priority };
        config.set(0, value, 0).map_err(|source| MapsError::Write {
            name: MAP_CONFIG,
            source,
        })
    }

    /// The filter as the classifier sees it.
    fn filter(&self) -> Result<Vec<u64>, MapsError> {
        let filter: Array<_, u64> = Array::try_from(self.map(MAP_AI_FILTER)?).map_err(|source| MapsError::Layout {
            name: MAP_AI_FILTER,
            source,
        })?;
        filter
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| MapsError::Read {
                name: MAP_AI_FILTER,
                source,
            })
    }

    /// Writes the words of `to` that differ from `from`, the filter's present content.
    fn write_filter(&mut self, from: &[u64], to: &[u64]) -> Result<(), MapsError> {
        let mut filter: Array<_, u64> =
            Array::try_from(self.map_mut(MAP_AI_FILTER)?).map_err(|source| MapsError::Layout {
                name: MAP_AI_FILTER,
                source,
            })?;
        for (index, (from, to)) in (0u32..).zip(from.iter().zip(to)) {
            if from != to {
                filter.set(index, to, 0).map_err(|source| MapsError::Write {
                    name: MAP_AI_FILTER,
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn map(&self, name: &'static str) -> Result<&Map, MapsError> {
        self.ebpf.map(name).ok_or(MapsError::Missing(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, MapsError> {
        self.ebpf.map_mut(name).ok_or(MapsError::Missing(name))
    }
}

fn add(total: Counters, cpu: &Counters) -> Counters {
    Counters {
        packets: total.packets.wrapping_add(cpu.packets),
        bytes: total.bytes.wrapping_add(cpu.bytes),
    }
}

/// The filter bitmap with the bit of each of `keys` set.
fn filter_of<'a>(keys: impl IntoIterator<Item = &'a EndpointKey>) -> Vec<u64> {
    let mut words = vec![0u64; AI_FILTER_WORDS as usize];
    for key in keys {
        let bit = key.filter_bit();
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// The map key for `endpoint`; IPv4 is stored IPv4-mapped, as the classifier looks it up.
fn endpoint_key(endpoint: &SocketAddr, protocol: u8) -> EndpointKey {
    let addr = match endpoint.ip() {
        IpAddr::V4(v4) => EndpointKey::ipv4_mapped(u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => EndpointKey::ipv6(v6.octets()),
    };
    EndpointKey::new(addr, endpoint.port(), protocol)
}
