//! Types and names shared by the BPF classifier and its userspace loader.
//!
//! Everything here is `#[repr(C)]` without implicit padding: map keys are hashed byte for byte,
//! and the verifier refuses keys read from partly uninitialised stack.
#![no_std]

/// Program (function) name of the classifier attached on egress.
pub const PROGRAM_EGRESS: &str = "aiesim_egress";
/// Program (function) name of the classifier attached on ingress.
pub const PROGRAM_INGRESS: &str = "aiesim_ingress";
/// Program that returns at once: the reference cost when benchmarking the classifier.
pub const PROGRAM_BASELINE: &str = "aiesim_baseline";
/// `cgroup_skb` program counting apps' own AI traffic as their sockets send it.
pub const PROGRAM_APP_EGRESS: &str = "aiesim_app_egress";
/// `cgroup_skb` program counting apps' own AI traffic as their sockets receive it.
pub const PROGRAM_APP_INGRESS: &str = "aiesim_app_ingress";

/// Per-CPU array of [`Counters`], indexed by [`stats_index`]: traffic that is not AI.
pub const MAP_STATS: &str = "STATS";
/// LPM trie from [`Destination`] prefixes to the endpoint's index.
pub const MAP_AI_DESTINATIONS: &str = "AI_DESTINATIONS";
/// Per-CPU array of [`Counters`] per AI endpoint, indexed by [`endpoint_stats_index`].
pub const MAP_ENDPOINT_STATS: &str = "ENDPOINT_STATS";
/// Array of [`AI_FILTER_WORDS`] `u64`s: a bitmap of [`Destination::filter_bit`]s.
pub const MAP_AI_FILTER: &str = "AI_FILTER";
/// Array of [`EXACT_ENTRIES`] [`ExactEntry`]s at their [`Destination::exact_slot`]: the AI
/// destinations that are single addresses, found without the trie.
pub const MAP_AI_EXACT: &str = "AI_EXACT";
/// Single-entry array holding the [`Config`].
pub const MAP_CONFIG: &str = "CONFIG";
/// Per-CPU hash from a cgroup id to its [`AppCounters`]: AI traffic of the sockets in it.
pub const MAP_APP_STATS: &str = "APP_STATS";
/// LRU hash of [`OwnFlow`]s: flows aiesimd's own sockets opened to unlisted destinations, so
/// that their replies (TC sees no socket on ingress) are AI too.
pub const MAP_OWN_FLOWS: &str = "OWN_FLOWS";

/// Single-entry array holding an [`OwnFilter`]: the [`Destination::own_slot`]s of the remote
/// ends of [`MAP_OWN_FLOWS`], so that other ingress traffic skips the flow lookup.
pub const MAP_OWN_FILTER: &str = "OWN_FILTER";

/// Per-CPU array of one [`OwnFlow`]: the last own flow this CPU saw, so that a bulk transfer's
/// packets skip the [`MAP_OWN_FLOWS`] lookup.
pub const MAP_LAST_OWN_FLOW: &str = "LAST_OWN_FLOW";

/// Capacity of [`MAP_OWN_FLOWS`]: aiesimd keeps a few pooled connections; the least recently
/// used flow goes first.
pub const MAX_OWN_FLOWS: u32 = 1024;

/// Capacity of [`MAP_APP_STATS`]; once full, new cgroups count under [`OVERFLOW_CGROUP`].
pub const MAX_APP_CGROUPS: u32 = 4096;
/// The [`MAP_APP_STATS`] key counting cgroups that found the map full; no cgroup has id 0.
pub const OVERFLOW_CGROUP: u64 = 0;

/// Capacity of [`MAP_AI_DESTINATIONS`]; each endpoint takes one entry per protocol.
pub const MAX_AI_DESTINATIONS: u32 = 1024;
/// Endpoints counted apart; their index is below this.
pub const MAX_AI_ENDPOINTS: u32 = 256;
/// The [`MAP_ENDPOINT_STATS`] index counting aiesimd's own traffic to destinations not listed
/// (marked by its cgroup, [`Config::own_cgroup`]); past every endpoint's.
pub const UNLISTED_ENDPOINT: EndpointIndex = MAX_AI_ENDPOINTS;
/// Entries of [`MAP_ENDPOINT_STATS`]: every endpoint's and the unlisted ones'.
pub const ENDPOINT_STATS_ENTRIES: u32 = (MAX_AI_ENDPOINTS + 1) * Direction::COUNT;

/// Size of [`MAP_AI_FILTER`]: 65536 bits, so even a full destination map sets under 2 % of them.
pub const AI_FILTER_WORDS: u32 = 1024;

/// Size of [`MAP_AI_EXACT`], a power of two: every destination fits with room to spare, so
/// few share a slot (those that do are found through the trie).
pub const EXACT_ENTRIES: u32 = 4096;

/// Bits of a [`Destination`] before its address: port, protocol and a reserved byte.
pub const L4_PREFIX_BITS: u32 = 32;
/// Address bits the filter looks at in an IPv4(-mapped) address: its first 16 bits (a /16).
pub const FILTER_BITS_V4: u32 = 96 + 16;
/// Address bits the filter looks at in an IPv6 address: its first 32 bits (a /32).
pub const FILTER_BITS_V6: u32 = 32;

/// IANA protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;

/// The hook a packet was seen on.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Egress = 0,
    Ingress = 1,
}

impl Direction {
    pub const COUNT: u32 = 2;
    pub const ALL: [Self; Self::COUNT as usize] = [Self::Egress, Self::Ingress];
}

/// What the classifier made of a packet.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// IPv4/IPv6 traffic to or from anything but a configured AI endpoint.
    Other = 0,
    /// Traffic to or from a configured AI endpoint; counted per endpoint in
    /// [`MAP_ENDPOINT_STATS`], so its [`MAP_STATS`] entries stay zero.
    Ai = 1,
    /// Not IP, or too short to read the headers the classifier needs.
    Unparsed = 2,
}

impl Class {
    pub const COUNT: u32 = 3;
    pub const ALL: [Self; Self::COUNT as usize] = [Self::Other, Self::Ai, Self::Unparsed];
}

/// Number of entries in [`MAP_STATS`].
pub const STATS_ENTRIES: u32 = Direction::COUNT * Class::COUNT;

/// Index of the counters for one direction and class in [`MAP_STATS`].
#[inline]
#[must_use]
pub const fn stats_index(direction: Direction, class: Class) -> u32 {
    direction as u32 * Class::COUNT + class as u32
}

/// Packet and byte counters of one CPU; userspace sums the CPUs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    /// `skb->len`: the bytes the interface carried, including any L2 header.
    pub bytes: u64,
}

/// One cgroup's AI traffic on one CPU, both directions in one 32-byte value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCounters {
    /// Indexed by [`Direction`].
    pub directions: [Counters; Direction::COUNT as usize],
}

/// Where a packet goes (egress) or comes from (ingress), as the data of an LPM key: port and
/// protocol first, so that a prefix of the key is a port, a protocol and an address prefix.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Network byte order, like everything the trie compares.
    pub port: [u8; 2],
    pub protocol: u8,
    /// Always zero; makes the padding explicit so keys compare identically on both sides.
    pub reserved: u8,
    /// The address as the packet carries it (IPv4 as `::ffff:a.b.c.d`), in four 32-bit words:
    /// word-sized copies in BPF.
    pub addr: [u32; 4],
}

/// The value of an [`MAP_AI_DESTINATIONS`] entry.
pub type EndpointIndex = u32;

impl Destination {
    #[inline]
    #[must_use]
    pub const fn new(addr: [u32; 4], port: u16, protocol: u8) -> Self {
        Self {
            port: port.to_be_bytes(),
            protocol,
            reserved: 0,
            addr,
        }
    }

    /// Whether the address is IPv4(-mapped).
    #[inline]
    #[must_use]
    pub const fn is_ipv4(&self) -> bool {
        let [a, b, c, _] = self.addr;
        a == 0 && b == 0 && c == V4_MAPPED_WORD
    }

    /// This destination's bit in [`MAP_AI_FILTER`], from its port, protocol and the first
    /// [`FILTER_BITS_V4`] / [`FILTER_BITS_V6`] bits of its address. The trie lookup costs
    /// several times the rest of the classifier; the filter, an inlined array read, spares it
    /// to almost all packets that are not AI.
    #[inline]
    #[must_use]
    pub const fn filter_bit(&self) -> u32 {
        let [a, _, _, d] = self.addr;
        let prefix = if self.is_ipv4() { d & V4_FILTER_MASK } else { a };
        let [p0, p1] = self.port;
        let l4 = u32::from_ne_bytes([p0, p1, self.protocol, 0]);
        // Fibonacci hashing: the top bits of the product depend on every input bit.
        (prefix ^ l4.rotate_left(16)).wrapping_mul(0x9e37_79b1) >> 16
    }

    /// This destination's slot in [`MAP_AI_EXACT`], from all of it.
    #[inline]
    #[must_use]
    pub const fn exact_slot(&self) -> u32 {
        self.fold_hash() >> (32 - EXACT_ENTRIES.trailing_zeros())
    }

    /// This remote end's mark in an [`OwnFilter`], from all of it: aiesimd talks to few, so
    /// few are set and other traffic rarely shares one.
    #[inline]
    #[must_use]
    pub const fn own_slot(&self) -> u32 {
        self.fold_hash() >> (32 - OWN_FILTER_MARKS.trailing_zeros())
    }

    /// Fibonacci hashing on a fold of every word: a plain one (BPF has no rotate, and each
    /// costs the classifier three instructions); destinations that share a slot are found
    /// through the trie, remote ends that share a mark cost a lookup.
    #[inline]
    const fn fold_hash(&self) -> u32 {
        let [a, b, c, d] = self.addr;
        let [p0, p1] = self.port;
        let l4 = u32::from_ne_bytes([p0, p1, self.protocol, 0]);
        (a ^ b ^ c ^ d ^ l4).wrapping_mul(0x9e37_79b1)
    }

    /// The destination as the five 32-bit words it is in memory: port, protocol and the
    /// reserved byte, then the address.
    #[inline]
    #[must_use]
    pub const fn words(&self) -> [u32; 5] {
        let [p0, p1] = self.port;
        let [a, b, c, d] = self.addr;
        [u32::from_ne_bytes([p0, p1, self.protocol, self.reserved]), a, b, c, d]
    }

    /// The key form of an IPv6 address.
    #[inline]
    #[must_use]
    pub const fn ipv6(octets: [u8; 16]) -> [u32; 4] {
        let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3] = octets;
        [
            u32::from_ne_bytes([a0, a1, a2, a3]),
            u32::from_ne_bytes([b0, b1, b2, b3]),
            u32::from_ne_bytes([c0, c1, c2, c3]),
            u32::from_ne_bytes([d0, d1, d2, d3]),
        ]
    }

    /// The key form of an IPv4 address (given as its four octets in memory order, i.e. as
    /// `u32::from_ne_bytes(octets)`): IPv4-mapped, so both families share one map.
    #[inline]
    #[must_use]
    pub const fn ipv4_mapped(addr: u32) -> [u32; 4] {
        [0, 0, V4_MAPPED_WORD, addr]
    }
}

/// The third word of an IPv4-mapped address, `::ffff:0:0`.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
/// The first 16 bits of an IPv4 address in its key word.
const V4_FILTER_MASK: u32 = u32::from_ne_bytes([0xff, 0xff, 0, 0]);

/// An entry of [`MAP_AI_EXACT`]: an AI destination that is one address, port and protocol.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactEntry {
    pub destination: Destination,
    /// The endpoint's index plus one; 0: the slot is empty.
    pub endpoint: u32,
}

/// Index of one endpoint's counters for one direction in [`MAP_ENDPOINT_STATS`]: both
/// directions of an endpoint side by side, 32 bytes, one cache line.
#[inline]
#[must_use]
pub const fn endpoint_stats_index(endpoint: EndpointIndex, direction: Direction) -> u32 {
    endpoint * Direction::COUNT + direction as u32
}

/// Settings userspace can change while the classifier runs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// `skb->priority` given to egress AI packets; 0 leaves the priority alone.
    pub ai_priority: u32,
    /// The DSCP written into egress AI packets' IP headers, plus [`DSCP_ENABLED`]; 0 leaves
    /// them alone.
    pub ai_dscp: u32,
    /// Bytes before the IP header where TC sees packets: 14 on Ethernet, 0 on raw-IP devices.
    pub l2_len: u32,
    /// Always zero; makes the padding before `own_cgroup` explicit.
    pub reserved: u32,
    /// aiesimd's cgroup v2 id: egress packets of its sockets are AI wherever they go (and their
    /// flows' replies); 0: off.
    pub own_cgroup: u64,
}

/// A flow of aiesimd's own to a destination not listed, as an [`MAP_OWN_FLOWS`] key: its remote
/// end and its local port, read the same way from egress and ingress packets. The local address
/// is left out: the cellular link has one per family.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OwnFlow {
    pub remote: Destination,
    /// Network byte order.
    pub local_port: [u8; 2],
    /// Always zero, as [`Destination::reserved`].
    pub reserved: [u8; 2],
}

/// Marks in an [`OwnFilter`], a power of two.
pub const OWN_FILTER_MARKS: u32 = 8192;

/// The value of [`MAP_OWN_FILTER`]: one byte per [`Destination::own_slot`], non-zero once a
/// flow of aiesimd's own went to a remote end with that slot. Bytes, not bits: CPUs marking at
/// once store to different bytes, so none loses another's mark (5.10 has no atomic OR).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnFilter {
    pub marks: [u8; OWN_FILTER_MARKS as usize],
}

impl Default for OwnFilter {
    fn default() -> Self {
        Self {
            marks: [0; OWN_FILTER_MARKS as usize],
        }
    }
}

/// Set in [`Config::ai_dscp`] when marking is on (DSCP 0 is a valid mark).
pub const DSCP_ENABLED: u32 = 1 << 8;
/// `l2_len` of Ethernet devices, and of the frames `BPF_PROG_TEST_RUN` builds.
pub const ETHERNET_HEADER_LEN: u32 = 14;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)], Copy, and have no padding or pointers.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Destination {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AppCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExactEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OwnFlow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OwnFilter {}
}

// Layouts the BPF program and userspace both rely on; a change must be deliberate.
const _: () = assert!(core::mem::size_of::<Destination>() == 20);
const _: () = assert!(core::mem::size_of::<Counters>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 24);
const _: () = assert!(core::mem::size_of::<OwnFlow>() == 24);
const _: () = assert!(core::mem::size_of::<AppCounters>() == 32);
const _: () = assert!(core::mem::size_of::<ExactEntry>() == 24);
const _: () = assert!(EXACT_ENTRIES.is_power_of_two());
const _: () = assert!(OWN_FILTER_MARKS.is_power_of_two());
