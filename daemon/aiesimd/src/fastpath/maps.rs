//! Reading and writing the classifier's maps.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use aiesim_fastpath_common::{
    AI_FILTER_WORDS, Class, Config, Counters, DSCP_ENABLED, Destination, Direction, EXACT_ENTRIES, EndpointIndex,
    ExactEntry, FILTER_BITS_V4, FILTER_BITS_V6, L4_PREFIX_BITS, MAP_AI_DESTINATIONS, MAP_AI_EXACT, MAP_AI_FILTER,
    MAP_CONFIG, MAP_ENDPOINT_STATS, MAP_LAST_OWN_FLOW, MAP_OWN_FILTER, MAP_STATS, MAX_AI_DESTINATIONS,
    MAX_AI_ENDPOINTS, OwnFilter, OwnFlow, PROTOCOL_TCP, PROTOCOL_UDP, UNLISTED_ENDPOINT, endpoint_stats_index,
    stats_index,
};
use aya::maps::{
    Array, Map, MapError, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};

use super::{Classifier, Statistics};

/// Each endpoint is matched over TCP (HTTP/1, HTTP/2) and UDP (QUIC).
const PROTOCOLS: [u8; 2] = [PROTOCOL_TCP, PROTOCOL_UDP];
/// The prefix length of a trie key that is one address, port and protocol.
const FULL_KEY_BITS: u32 = L4_PREFIX_BITS + 128;
/// A prefix shorter than the filter looks at sets one filter bit per value of the missing bits,
/// up to this many; beyond, the filter lets everything through to the trie (correct, slower).
const MAX_FILTER_EXPANSION: u32 = 1 << 12;

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
    #[error("failed to count the CPUs ({what})")]
    Cpus {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{requested} AI destinations given, at most {MAX_AI_ENDPOINTS} fit")]
    TooManyEndpoints { requested: usize },
    #[error("prefix length {prefix_len} is too long for {addr}")]
    PrefixLength { addr: IpAddr, prefix_len: u8 },
}

/// Traffic that is AI: addresses in a prefix (one address: its full length), on one port, over
/// TCP and UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AiDestination {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub port: u16,
}

impl AiDestination {
    /// One address and port.
    pub fn host(endpoint: SocketAddr) -> Self {
        let prefix_len = if endpoint.is_ipv4() { 32 } else { 128 };
        Self {
            addr: endpoint.ip(),
            prefix_len,
            port: endpoint.port(),
        }
    }

    /// The same destination with the address bits beyond the prefix cleared, or an error for a
    /// prefix longer than the address.
    fn normalised(self) -> Result<Self, MapsError> {
        let invalid = || MapsError::PrefixLength {
            addr: self.addr,
            prefix_len: self.prefix_len,
        };
        let addr = match self.addr {
            IpAddr::V4(v4) => {
                let len = 32u32.checked_sub(u32::from(self.prefix_len)).ok_or_else(invalid)?;
                let mask = u32::MAX.checked_shl(len).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let len = 128u32.checked_sub(u32::from(self.prefix_len)).ok_or_else(invalid)?;
                let mask = u128::MAX.checked_shl(len).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Ok(Self { addr, ..self })
    }

    /// The trie key of this destination over `protocol`.
    fn key(&self, protocol: u8) -> Key<Destination> {
        let (addr, prefix_len) = self.mapped();
        Key::new(L4_PREFIX_BITS + prefix_len, Destination::new(addr, self.port, protocol))
    }

    /// The destination a trie key was made from.
    fn from_key(key: &Key<Destination>) -> Self {
        let data = key.data();
        let bits = key.prefix_len().saturating_sub(L4_PREFIX_BITS);
        let (addr, prefix_len) = if data.is_ipv4() {
            (
                IpAddr::V4(Ipv4Addr::from(data.addr[3].to_ne_bytes())),
                bits.saturating_sub(96),
            )
        } else {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(data.addr) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            (IpAddr::V6(Ipv6Addr::from(octets)), bits)
        };
        Self {
            addr,
            prefix_len: u8::try_from(prefix_len).unwrap_or(u8::MAX),
            port: u16::from_be_bytes(data.port),
        }
    }

    /// The address as the classifier sees it (IPv4-mapped) and the prefix length over it.
    fn mapped(&self) -> ([u32; 4], u32) {
        match self.addr {
            IpAddr::V4(v4) => (
                Destination::ipv4_mapped(u32::from_ne_bytes(v4.octets())),
                96 + u32::from(self.prefix_len),
            ),
            IpAddr::V6(v6) => (Destination::ipv6(v6.octets()), u32::from(self.prefix_len)),
        }
    }

    /// The filter bits of every packet this destination matches over `protocol`, or `None`
    /// when the prefix is too short to list them.
    fn filter_bits(&self, protocol: u8) -> Option<Vec<u32>> {
        let (addr, prefix_len) = self.mapped();
        let filtered = if self.addr.is_ipv4() {
            FILTER_BITS_V4
        } else {
            FILTER_BITS_V6
        };
        let free = filtered.saturating_sub(prefix_len);
        if (1u32 << free.min(31)) > MAX_FILTER_EXPANSION {
            return None;
        }
        // The filtered part of the address (the first 16 bits of IPv4, 32 of IPv6), big-endian.
        let (word, width) = if self.addr.is_ipv4() {
            (u32::from_be_bytes(addr[3].to_ne_bytes()) >> 16, 16)
        } else {
            (u32::from_be_bytes(addr[0].to_ne_bytes()), 32)
        };
        Some(
            (0..1u32 << free)
                .map(|low| {
                    let value = word | low;
                    let mut addr = addr;
                    if width == 16 {
                        addr[3] = u32::from_ne_bytes((value << 16).to_be_bytes());
                    } else {
                        addr[0] = u32::from_ne_bytes(value.to_be_bytes());
                    }
                    Destination::new(addr, self.port, protocol).filter_bit()
                })
                .collect(),
        )
    }
}

impl fmt::Display for AiDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.prefix_len) {
            (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128) => SocketAddr::new(self.addr, self.port).fmt(f),
            (IpAddr::V4(addr), len) => write!(f, "{addr}/{len}:{}", self.port),
            (IpAddr::V6(addr), len) => write!(f, "[{addr}/{len}]:{}", self.port),
        }
    }
}

/// One AI destination's traffic since it was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStatistics {
    pub destination: AiDestination,
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
}

/// The `destination` the D-Bus endpoint statistics give [`UnlistedStatistics`].
pub const UNLISTED_DESTINATION: &str = "unlisted";

/// aiesimd's own traffic to and from destinations not listed (marked by its cgroup) since the
/// classifier's maps were made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnlistedStatistics {
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
}

/// A destination's place in the per-endpoint counters, and what they held when it got it (the
/// counters are never written from here, so totals only grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    destination: AiDestination,
    base: [Counters; Direction::COUNT as usize],
}

impl Classifier {
    /// Sums the per-CPU counters of both directions and all classes.
    pub fn statistics(&self) -> Result<Statistics, MapsError> {
        let stats = self.per_cpu(MAP_STATS)?;
        let endpoints = self.per_cpu(MAP_ENDPOINT_STATS)?;
        let mut total = Statistics::default();
        for direction in Direction::ALL {
            let mut add = |counters: Counters, ai: bool| {
                let (packets, bytes) = match direction {
                    Direction::Egress => (&mut total.egress_packets, &mut total.egress_bytes),
                    Direction::Ingress => (&mut total.ingress_packets, &mut total.ingress_bytes),
                };
                *packets = packets.wrapping_add(counters.packets);
                *bytes = bytes.wrapping_add(counters.bytes);
                if ai {
                    total.ai_packets = total.ai_packets.wrapping_add(counters.packets);
                    total.ai_bytes = total.ai_bytes.wrapping_add(counters.bytes);
                }
            };
            for class in Class::ALL {
                add(
                    read(&stats, MAP_STATS, stats_index(direction, class))?,
                    class == Class::Ai,
                );
            }
            // Slots never used have counted nothing.
            for endpoint in (0..).take(self.slots.len()).chain([UNLISTED_ENDPOINT]) {
                let index = endpoint_stats_index(endpoint, direction);
                add(read(&endpoints, MAP_ENDPOINT_STATS, index)?, true);
            }
        }
        Ok(total)
    }

    /// The traffic of each configured AI destination since it was configured.
    pub fn endpoint_statistics(&self) -> Result<Vec<EndpointStatistics>, MapsError> {
        let endpoints = self.per_cpu(MAP_ENDPOINT_STATS)?;
        let mut all = Vec::new();
        for (endpoint, slot) in (0..).zip(&self.slots) {
            let Some(Slot { destination, base }) = slot else {
                continue;
            };
            let [egress, ingress] = [Direction::Egress, Direction::Ingress].map(|direction| {
                read(
                    &endpoints,
                    MAP_ENDPOINT_STATS,
                    endpoint_stats_index(endpoint, direction),
                )
                .map(|now| {
                    let base = base[direction as usize];
                    (
                        now.packets.wrapping_sub(base.packets),
                        now.bytes.wrapping_sub(base.bytes),
                    )
                })
            });
            let ((egress_packets, egress_bytes), (ingress_packets, ingress_bytes)) = (egress?, ingress?);
            all.push(EndpointStatistics {
                destination: *destination,
                egress_packets,
                egress_bytes,
                ingress_packets,
                ingress_bytes,
            });
        }
        Ok(all)
    }

    /// aiesimd's own traffic to destinations not listed, counted while its cgroup is set
    /// ([`Classifier::set_own_cgroup`]).
    pub fn unlisted_statistics(&self) -> Result<UnlistedStatistics, MapsError> {
        let endpoints = self.per_cpu(MAP_ENDPOINT_STATS)?;
        let [egress, ingress] = Direction::ALL.map(|direction| {
            read(
                &endpoints,
                MAP_ENDPOINT_STATS,
                endpoint_stats_index(UNLISTED_ENDPOINT, direction),
            )
        });
        let (egress, ingress) = (egress?, ingress?);
        Ok(UnlistedStatistics {
            egress_packets: egress.packets,
            egress_bytes: egress.bytes,
            ingress_packets: ingress.packets,
            ingress_bytes: ingress.bytes,
        })
    }

    /// Replaces the AI endpoints with single addresses; see [`Classifier::set_ai_destinations`].
    pub fn set_ai_endpoints(&mut self, endpoints: &[SocketAddr]) -> Result<(), MapsError> {
        let destinations: Vec<_> = endpoints.iter().copied().map(AiDestination::host).collect();
        self.set_ai_destinations(&destinations)
    }

    /// Replaces the AI destinations. A destination in both sets keeps its counters and never
    /// stops matching: new entries go in before old ones go out, the filter in front of the trie
    /// always covers every key in it, and a new destination never takes the counters of one
    /// still in the trie.
    pub fn set_ai_destinations(&mut self, destinations: &[AiDestination]) -> Result<(), MapsError> {
        let mut wanted = Vec::with_capacity(destinations.len());
        for destination in destinations {
            let destination = destination.normalised()?;
            if !wanted.contains(&destination) {
                wanted.push(destination);
            }
        }
        if wanted.len() > MAX_AI_ENDPOINTS as usize || wanted.len() * PROTOCOLS.len() > MAX_AI_DESTINATIONS as usize {
            return Err(MapsError::TooManyEndpoints {
                requested: wanted.len(),
            });
        }

        let current = self.filter()?;
        let target = filter_of(&wanted);
        let union: Vec<u64> = current
            .iter()
            .zip(&target)
            .map(|(current, target)| current | target)
            .collect();
        self.write_filter(&current, &union)?;

        // Kept destinations keep their slots; new ones take slots free before this call.
        let mut slots = self.slots.clone();
        let mut later = Vec::new();
        for destination in &wanted {
            if slots.iter().flatten().any(|slot| slot.destination == *destination) {
                continue;
            }
            match free_slot(&mut slots) {
                Some(free) => {
                    slots[free] = Some(self.new_slot(*destination, free)?);
                    self.insert(*destination, free)?;
                }
                None => later.push(*destination),
            }
        }
        // Removed destinations leave the exact table before their slots can be reused below.
        let live: Vec<Option<Slot>> = slots
            .iter()
            .map(|slot| slot.filter(|slot| wanted.contains(&slot.destination)))
            .collect();
        self.write_exact(&live)?;
        let wanted_keys: HashSet<_> = wanted
            .iter()
            .flat_map(|destination| PROTOCOLS.map(|protocol| KeyBytes::of(&destination.key(protocol))))
            .collect();
        self.remove_stale(&wanted_keys)?;
        for slot in &mut slots {
            if slot.is_some_and(|slot| !wanted.contains(&slot.destination)) {
                *slot = None;
            }
        }
        // Slots freed just now: their old keys are gone, so reusing them mixes no traffic.
        for destination in later {
            let free = free_slot(&mut slots).expect("at most MAX_AI_ENDPOINTS destinations are wanted");
            slots[free] = Some(self.new_slot(destination, free)?);
            self.insert(destination, free)?;
        }
        self.write_exact(&slots)?;
        self.slots = slots;

        self.write_filter(&union, &target)
    }

    /// Makes the exact table hold the single-address destinations of `slots` (both protocols),
    /// each in its [`Destination::exact_slot`] unless another took it first: that one is found
    /// through the trie, as are prefixes.
    fn write_exact(&mut self, slots: &[Option<Slot>]) -> Result<(), MapsError> {
        let mut target = vec![ExactEntry::default(); EXACT_ENTRIES as usize];
        for (index, slot) in slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let endpoint = EndpointIndex::try_from(index + 1).expect("below MAX_AI_ENDPOINTS");
            for protocol in PROTOCOLS {
                let key = slot.destination.key(protocol);
                if key.prefix_len() != FULL_KEY_BITS {
                    continue;
                }
                let destination = key.data();
                let entry = &mut target[destination.exact_slot() as usize];
                if entry.endpoint == 0 {
                    *entry = ExactEntry { destination, endpoint };
                }
            }
        }
        let mut exact: Array<_, ExactEntry> =
            Array::try_from(self.map_mut(MAP_AI_EXACT)?).map_err(|source| MapsError::Layout {
                name: MAP_AI_EXACT,
                source,
            })?;
        let current = exact
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| MapsError::Read {
                name: MAP_AI_EXACT,
                source,
            })?;
        let changed: Vec<usize> = (0..target.len()).filter(|&i| current[i] != target[i]).collect();
        // Changed entries are emptied first, then filled (endpoint last in memory): a packet
        // never pairs one destination with another's endpoint.
        let empty = changed
            .iter()
            .filter(|&&i| current[i].endpoint != 0)
            .map(|&i| (i, ExactEntry::default()));
        let fill = changed
            .iter()
            .filter(|&&i| target[i].endpoint != 0)
            .map(|&i| (i, target[i]));
        for (index, value) in empty.chain(fill) {
            let index = u32::try_from(index).expect("below EXACT_ENTRIES");
            exact.set(index, value, 0).map_err(|source| MapsError::Write {
                name: MAP_AI_EXACT,
                source,
            })?;
        }
        Ok(())
    }

    /// The destinations a previous run left in the pinned trie, in their counter slots. Counted
    /// from zero, so their figures go on from that run's.
    pub(super) fn pinned_slots(&mut self) -> Result<Vec<Option<Slot>>, MapsError> {
        let trie = self.trie()?;
        let mut slots: Vec<Option<Slot>> = Vec::new();
        for entry in &trie {
            let (key, index) = entry.map_err(|source| MapsError::Read {
                name: MAP_AI_DESTINATIONS,
                source,
            })?;
            let Ok(index) = usize::try_from(index) else { continue };
            if index >= MAX_AI_ENDPOINTS as usize {
                continue;
            }
            if slots.len() <= index {
                slots.resize(index + 1, None);
            }
            slots[index] = Some(Slot {
                destination: AiDestination::from_key(&key),
                base: [Counters::default(); Direction::COUNT as usize],
            });
        }
        Ok(slots)
    }

    /// Sets the `skb->priority` given to egress AI packets; 0 leaves it alone.
    pub fn set_ai_priority(&mut self, priority: u32) -> Result<(), MapsError> {
        self.update_config(|config| config.ai_priority = priority)
    }

    /// Sets the DSCP written into egress AI packets (IPv4 TOS with its checksum, IPv6 traffic
    /// class; ECN bits kept); `None` leaves the headers alone.
    pub fn set_ai_dscp(&mut self, dscp: Option<u8>) -> Result<(), MapsError> {
        let value = dscp.map_or(0, |dscp| DSCP_ENABLED | u32::from(dscp & 0x3f));
        self.update_config(|config| config.ai_dscp = value)
    }

    /// Makes the packets of sockets in cgroup `id` (aiesimd's own, found by `own_cgroup`) AI
    /// wherever they go, and the replies of their flows; 0 turns it off.
    pub fn set_own_cgroup(&mut self, id: u64) -> Result<(), MapsError> {
        if self.own_cgroup()? != id {
            // Another cgroup's remote ends would only cost their traffic a lookup.
            self.forget_own_flows()?;
        }
        self.update_config(|config| config.own_cgroup = id)
    }

    /// The cgroup whose sockets are marked, 0 for none.
    pub fn own_cgroup(&self) -> Result<u64, MapsError> {
        let map: Array<_, Config> = Array::try_from(self.map(MAP_CONFIG)?).map_err(|source| MapsError::Layout {
            name: MAP_CONFIG,
            source,
        })?;
        map.get(&0, 0)
            .map(|config| config.own_cgroup)
            .map_err(|source| MapsError::Read {
                name: MAP_CONFIG,
                source,
            })
    }

    /// Tells the classifier how many bytes precede the IP header on its device.
    pub(super) fn set_l2_len(&mut self, l2_len: u32) -> Result<(), MapsError> {
        self.update_config(|config| config.l2_len = l2_len)
    }

    fn update_config(&mut self, change: impl FnOnce(&mut Config)) -> Result<(), MapsError> {
        let mut map: Array<_, Config> =
            Array::try_from(self.map_mut(MAP_CONFIG)?).map_err(|source| MapsError::Layout {
                name: MAP_CONFIG,
                source,
            })?;
        let mut config = map.get(&0, 0).map_err(|source| MapsError::Read {
            name: MAP_CONFIG,
            source,
        })?;
        change(&mut config);
        map.set(0, config, 0).map_err(|source| MapsError::Write {
            name: MAP_CONFIG,
            source,
        })
    }

    fn new_slot(&self, destination: AiDestination, index: usize) -> Result<Slot, MapsError> {
        let endpoints = self.per_cpu(MAP_ENDPOINT_STATS)?;
        let index = EndpointIndex::try_from(index).expect("below MAX_AI_ENDPOINTS");
        let base = [Direction::Egress, Direction::Ingress]
            .map(|direction| read(&endpoints, MAP_ENDPOINT_STATS, endpoint_stats_index(index, direction)));
        let [egress, ingress] = base;
        Ok(Slot {
            destination,
            base: [egress?, ingress?],
        })
    }

    fn insert(&mut self, destination: AiDestination, index: usize) -> Result<(), MapsError> {
        let index = EndpointIndex::try_from(index).expect("below MAX_AI_ENDPOINTS");
        let mut trie = self.trie()?;
        for protocol in PROTOCOLS {
            trie.insert(&destination.key(protocol), index, 0)
                .map_err(|source| MapsError::Write {
                    name: MAP_AI_DESTINATIONS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Removes every key of the trie that is not wanted, including any left by a failed update.
    fn remove_stale(&mut self, wanted: &HashSet<KeyBytes>) -> Result<(), MapsError> {
        let mut trie = self.trie()?;
        let stale = trie
            .keys()
            .filter(|key| !key.as_ref().is_ok_and(|key| wanted.contains(&KeyBytes::of(key))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| MapsError::Read {
                name: MAP_AI_DESTINATIONS,
                source,
            })?;
        for key in &stale {
            trie.remove(key).map_err(|source| MapsError::Write {
                name: MAP_AI_DESTINATIONS,
                source,
            })?;
        }
        Ok(())
    }

    fn trie(&mut self) -> Result<LpmTrie<&mut aya::maps::MapData, Destination, EndpointIndex>, MapsError> {
        LpmTrie::try_from(self.map_mut(MAP_AI_DESTINATIONS)?).map_err(|source| MapsError::Layout {
            name: MAP_AI_DESTINATIONS,
            source,
        })
    }

    fn per_cpu(&self, name: &'static str) -> Result<PerCpuArray<&aya::maps::MapData, Counters>, MapsError> {
        PerCpuArray::try_from(self.map(name)?).map_err(|source| MapsError::Layout { name, source })
    }

    /// The filter as the classifier sees it.
    fn filter(&self) -> Result<Vec<u64>, MapsError> {
        self.words(MAP_AI_FILTER)
    }

    /// Writes the words of `to` that differ from `from`, the filter's present content.
    fn write_filter(&mut self, from: &[u64], to: &[u64]) -> Result<(), MapsError> {
        self.write_words(MAP_AI_FILTER, from, to)
    }

    /// The remote ends of aiesimd's own flows, as the classifier sees them.
    /// Clears the own filter and every CPU's last own flow, which the classifier takes as
    /// marked in the filter.
    fn forget_own_flows(&mut self) -> Result<(), MapsError> {
        let name = MAP_OWN_FILTER;
        let mut filter: Array<_, OwnFilter> =
            Array::try_from(self.map_mut(name)?).map_err(|source| MapsError::Layout { name, source })?;
        filter
            .set(0, OwnFilter::default(), 0)
            .map_err(|source| MapsError::Write { name, source })?;
        let cpus = aya::util::nr_cpus().map_err(|(what, source)| MapsError::Cpus { what, source })?;
        let nothing = PerCpuValues::try_from(vec![OwnFlow::default(); cpus]).map_err(|source| MapsError::Cpus {
            what: "per-CPU values",
            source,
        })?;
        let name = MAP_LAST_OWN_FLOW;
        let mut last: PerCpuArray<_, OwnFlow> =
            PerCpuArray::try_from(self.map_mut(name)?).map_err(|source| MapsError::Layout { name, source })?;
        last.set(0, nothing, 0)
            .map_err(|source| MapsError::Write { name, source })
    }

    fn words(&self, name: &'static str) -> Result<Vec<u64>, MapsError> {
        let words: Array<_, u64> =
            Array::try_from(self.map(name)?).map_err(|source| MapsError::Layout { name, source })?;
        words
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| MapsError::Read { name, source })
    }

    fn write_words(&mut self, name: &'static str, from: &[u64], to: &[u64]) -> Result<(), MapsError> {
        let mut words: Array<_, u64> =
            Array::try_from(self.map_mut(name)?).map_err(|source| MapsError::Layout { name, source })?;
        for (index, (from, to)) in (0u32..).zip(from.iter().zip(to)) {
            if from != to {
                words
                    .set(index, to, 0)
                    .map_err(|source| MapsError::Write { name, source })?;
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

/// The lowest free slot, growing the table (up to [`MAX_AI_ENDPOINTS`]) when none is.
fn free_slot(slots: &mut Vec<Option<Slot>>) -> Option<usize> {
    if let Some(free) = slots.iter().position(Option::is_none) {
        return Some(free);
    }
    (slots.len() < MAX_AI_ENDPOINTS as usize).then(|| {
        slots.push(None);
        slots.len() - 1
    })
}

/// A trie key as bytes: aya's key type is packed and implements neither `Eq` nor `Hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyBytes(u32, Destination);

impl KeyBytes {
    fn of(key: &Key<Destination>) -> Self {
        Self(key.prefix_len(), key.data())
    }
}

/// One counter summed over the CPUs.
fn read(
    map: &PerCpuArray<&aya::maps::MapData, Counters>,
    name: &'static str,
    index: u32,
) -> Result<Counters, MapsError> {
    let per_cpu = map.get(&index, 0).map_err(|source| MapsError::Read { name, source })?;
    Ok(per_cpu.iter().fold(Counters::default(), |total, cpu| Counters {
        packets: total.packets.wrapping_add(cpu.packets),
        bytes: total.bytes.wrapping_add(cpu.bytes),
    }))
}

/// The filter bitmap with the bit of every packet of `destinations` set.
fn filter_of(destinations: &[AiDestination]) -> Vec<u64> {
    let mut words = vec![0u64; AI_FILTER_WORDS as usize];
    for destination in destinations {
        for protocol in PROTOCOLS {
            let Some(bits) = destination.filter_bits(protocol) else {
                // Too short a prefix to list: every packet goes on to the trie.
                return vec![u64::MAX; AI_FILTER_WORDS as usize];
            };
            for bit in bits {
                words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(addr: &str, prefix_len: u8, port: u16) -> AiDestination {
        AiDestination {
            addr: addr.parse().unwrap(),
            prefix_len,
            port,
        }
    }

    #[test]
    fn a_prefix_covers_the_filter_bits_of_its_addresses() {
        let cases = [
            (destination("10.9.0.0", 16, 443), "10.9.200.7"),
            (destination("10.0.0.0", 8, 443), "10.77.1.2"),
            (destination("fd00:9::", 32, 443), "fd00:9::abcd"),
            (destination("fd00::", 24, 443), "fd00:ff:1::2"),
            (destination("10.9.0.1", 32, 443), "10.9.0.1"),
        ];
        for (destination, inside) in cases {
            let inside: IpAddr = inside.parse().unwrap();
            let addr = match inside {
                IpAddr::V4(v4) => Destination::ipv4_mapped(u32::from_ne_bytes(v4.octets())),
                IpAddr::V6(v6) => Destination::ipv6(v6.octets()),
            };
            let bit = Destination::new(addr, 443, PROTOCOL_TCP).filter_bit();
            let bits = destination.filter_bits(PROTOCOL_TCP).unwrap();
            assert!(bits.contains(&bit), "{destination} covers {inside}");
        }
        // A /4 would need 4096+ bits: the filter opens instead.
        assert!(destination("0.0.0.0", 0, 443).filter_bits(PROTOCOL_TCP).is_none());
        assert_eq!(filter_of(&[destination("0.0.0.0", 0, 443)])[7], u64::MAX);
    }

    #[test]
    fn a_destination_is_read_back_from_its_key() {
        for d in [
            destination("10.9.0.0", 16, 443),
            destination("10.9.0.1", 32, 8443),
            destination("fd00:1:2::", 48, 443),
            AiDestination::host("[fd00::1]:8443".parse().unwrap()),
        ] {
            assert_eq!(AiDestination::from_key(&d.key(PROTOCOL_UDP)), d);
        }
    }

    #[test]
    fn destinations_are_normalised_and_printed() {
        let d = destination("10.9.3.4", 16, 443).normalised().unwrap();
        assert_eq!(d.addr, "10.9.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(d.to_string(), "10.9.0.0/16:443");
        assert_eq!(
            destination("0.0.0.0", 0, 1).normalised().unwrap().to_string(),
            "0.0.0.0/0:1"
        );
        assert_eq!(
            AiDestination::host("[fd00::1]:8443".parse().unwrap()).to_string(),
            "[fd00::1]:8443"
        );
        assert_eq!(
            destination("fd00:1:2::", 48, 443).normalised().unwrap().to_string(),
            "[fd00:1:2::/48]:443"
        );
        assert!(destination("10.0.0.0", 33, 443).normalised().is_err());
        assert!(destination("fd00::", 129, 443).normalised().is_err());
    }
}
