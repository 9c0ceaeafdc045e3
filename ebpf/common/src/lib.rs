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

/// Per-CPU array of [`Counters`], indexed by [`stats_index`].
pub const MAP_STATS: &str = "STATS";
/// Hash map from [`EndpointKey`] to the endpoint's index in the configured list.
pub const MAP_AI_ENDPOINTS: &str = "AI_ENDPOINTS";
/// Single-entry array holding the [`Config`].
pub const MAP_CONFIG: &str = "CONFIG";

/// Capacity of [`MAP_AI_ENDPOINTS`]; each socket address takes one entry per protocol.
pub const MAX_AI_ENDPOINTS: u32 = 1024;

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
    pub const ALL: [Self; 2] = [Self::Egress, Self::Ingress];
}

/// What the classifier made of a packet.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// IPv4/IPv6 traffic to or from anything but a configured AI endpoint.
    Other = 0,
    /// Traffic to or from a configured AI endpoint.
    Ai = 1,
    /// Not IP, or too short to read the headers the classifier needs.
    Unparsed = 2,
}

impl Class {
    pub const ALL: [Self; 3] = [Self::Other, Self::Ai, Self::Unparsed];
}

/// Number of entries in [`MAP_STATS`].
pub const STATS_ENTRIES: u32 = (Direction::ALL.len() * Class::ALL.len()) as u32;

/// Index of the counters for one direction and class in [`MAP_STATS`].
#[inline(always)]
#[must_use]
pub const fn stats_index(direction: Direction, class: Class) -> u32 {
    direction as u32 * Class::ALL.len() as u32 + class as u32
}

/// Packet and byte counters of one CPU; userspace sums the CPUs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    /// `skb->len`: the bytes the interface carried, including any L2 header.
    pub bytes: u64,
}

/// A remote endpoint: IPv6 address (IPv4 as `::ffff:a.b.c.d`), port and L4 protocol.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub protocol: u8,
    /// Always zero; makes the padding explicit so keys hash identically on both sides.
    pub reserved: u8,
}

impl EndpointKey {
    #[inline(always)]
    #[must_use]
    pub const fn new(addr: [u8; 16], port: u16, protocol: u8) -> Self {
        Self {
            addr,
            port,
            protocol,
            reserved: 0,
        }
    }

    /// The IPv4-mapped IPv6 form of an IPv4 address, so both families share one map.
    #[inline(always)]
    #[must_use]
    pub const fn ipv4_mapped(octets: [u8; 4]) -> [u8; 16] {
        let [a, b, c, d] = octets;
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
    }
}

/// Settings userspace can change while the classifier runs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// `skb->priority` given to egress AI packets; 0 leaves the priority alone.
    pub ai_priority: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)], Copy, and have no padding or pointers.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
}

// Layouts the BPF program and userspace both rely on; a change must be deliberate.
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 20);
const _: () = assert!(core::mem::size_of::<Counters>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 4);
