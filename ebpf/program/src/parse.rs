//! Finding the remote endpoint of a packet.
//!
//! The TC classifier reads the common case (IPv4 without options, IPv6 without extension
//! headers, TCP or UDP) straight from the skb's linear data, at the link header length userspace
//! configured: a helper call costs more than the rest of the classifier. Everything else, and
//! packets whose headers are not all in the linear part, goes through
//! `bpf_skb_load_bytes_relative(.., BPF_HDR_START_NET)`: offsets count from the network header, so
//! one path serves Ethernet devices and raw-IP ones (TUN, rmnet) alike, and non-linear skbs need
//! no pull. That path reads the IP header and the ports in one call where it can.

use core::{
    ffi::c_void,
    mem::{MaybeUninit, size_of},
};

use aiesim_fastpath_common::{Destination, Direction, PROTOCOL_TCP, PROTOCOL_UDP};
use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET, helpers::bpf_skb_load_bytes_relative, programs::sk_buff::SkBuff,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// Extension headers followed before giving up; real traffic rarely carries more than two.
const MAX_IPV6_EXTENSION_HEADERS: usize = 4;

/// Plain-data headers that [`load`] may fill from packet bytes.
///
/// # Safety
///
/// Every bit pattern must be a valid value of the type: only integers and arrays of them.
unsafe trait Header: Copy {}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Header {
    version_ihl: u8,
    _tos: u8,
    _total_len: [u8; 2],
    _id: [u8; 2],
    fragment: [u8; 2],
    _ttl: u8,
    protocol: u8,
    _check: [u8; 2],
    src: u32,
    dst: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4WithPorts {
    ip: Ipv4Header,
    ports: Ports,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Header {
    version_class_flow: [u8; 4],
    _payload_len: [u8; 2],
    next_header: u8,
    _hop_limit: u8,
    src: [u32; 4],
    dst: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6WithPorts {
    ip: Ipv6Header,
    ports: Ports,
}

/// The first bytes of every IPv6 extension header this parser follows.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtensionHeader {
    next_header: u8,
    len: u8,
    fragment: [u8; 2],
}

// SAFETY: all of these are #[repr(C)] structs of integers and integer arrays.
unsafe impl Header for Ports {}
// SAFETY: as above.
unsafe impl Header for Ipv4Header {}
// SAFETY: as above.
unsafe impl Header for Ipv4WithPorts {}
// SAFETY: as above.
unsafe impl Header for Ipv6Header {}
// SAFETY: as above.
unsafe impl Header for Ipv6WithPorts {}
// SAFETY: as above.
unsafe impl Header for ExtensionHeader {}

pub enum Remote {
    /// A TCP or UDP packet (or first fragment), its remote end and its local port (network
    /// byte order).
    Endpoint(Destination, [u8; 2]),
    /// IP, but no ports to read: another protocol, a later fragment, a long extension chain.
    NoPorts,
    /// Not IP, or shorter than the headers claim.
    Unparsed,
}

/// Bytes before the IP header in the linear data of the skbs TC sees on an Ethernet device.
const ETHERNET_HEADER_LEN: u32 = 14;

/// The remote end of a packet, read through `bpf_skb_load_bytes_relative`: whatever the
/// link type, and whether or not the headers are in the linear data.
#[inline(always)]
pub fn remote(skb: &SkBuff, direction: Direction) -> Remote {
    match ethertype(skb) {
        ETH_P_IP => ipv4(skb, direction),
        ETH_P_IPV6 => ipv6(skb, direction),
        _ => Remote::Unparsed,
    }
}

/// A common case alone: IPv4 from the linear data, as [`ipv4_linear`], where the IP header
/// starts `l2_len` bytes in (TC: 0 or 14); `None` for anything else, which [`remote`] reads.
#[inline(always)]
pub fn common_ipv4(skb: &SkBuff, direction: Direction, l2_len: Option<u32>) -> Option<Remote> {
    linear(skb, ETH_P_IP, l2_len, |at| ipv4_linear(skb, direction, at))
}

/// The other common case alone: IPv6 from the linear data, as [`ipv6_linear`].
#[inline(always)]
pub fn common_ipv6(skb: &SkBuff, direction: Direction, l2_len: Option<u32>) -> Option<Remote> {
    linear(skb, ETH_P_IPV6, l2_len, |at| ipv6_linear(skb, direction, at))
}

/// `read` at the IP header of a packet of `ethertype`: constant offsets, one copy per link
/// type, what the verifier checks most simply.
#[inline(always)]
fn linear(
    skb: &SkBuff,
    ethertype_wanted: u16,
    l2_len: Option<u32>,
    read: impl Fn(usize) -> Option<Remote>,
) -> Option<Remote> {
    if ethertype(skb) != ethertype_wanted {
        return None;
    }
    match l2_len {
        Some(0) => read(0),
        Some(ETHERNET_HEADER_LEN) => read(ETHERNET_HEADER_LEN as usize),
        _ => None,
    }
}

/// The packet's EtherType.
#[inline(always)]
fn ethertype(skb: &SkBuff) -> u16 {
    // SAFETY: the kernel hands every classifier a valid __sk_buff.
    let protocol = unsafe { (*skb.skb).protocol };
    // skb->protocol holds the EtherType in network byte order in its low 16 bits.
    #[expect(clippy::cast_possible_truncation, reason = "the field is a __be16")]
    u16::from_be(protocol as u16)
}

/// The common IPv4 case, from the linear data: no options, not a later fragment, TCP or UDP,
/// all of it linear. `None` for anything else, which [`ipv4`] then reads in full.
#[inline(always)]
fn ipv4_linear(skb: &SkBuff, direction: Direction, l2_len: usize) -> Option<Remote> {
    let header = Linear::at(skb, l2_len, size_of::<Ipv4WithPorts>())?;
    if header.byte(0) != 0x45 || u16::from_be_bytes([header.byte(6), header.byte(7)]) & 0x1fff != 0 {
        return None;
    }
    let protocol = header.byte(9);
    if protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP {
        return None;
    }
    let (addr, port, local) = match direction {
        Direction::Egress => (header.word(16), 22, 20),
        Direction::Ingress => (header.word(12), 20, 22),
    };
    Some(Remote::Endpoint(
        Destination::new(
            Destination::ipv4_mapped(addr),
            u16::from_be_bytes([header.byte(port), header.byte(port + 1)]),
            protocol,
        ),
        [header.byte(local), header.byte(local + 1)],
    ))
}

/// The common IPv6 case, from the linear data: TCP or UDP right after the fixed header, all
/// of it linear. `None` for anything else, which [`ipv6`] then reads in full.
#[inline(always)]
fn ipv6_linear(skb: &SkBuff, direction: Direction, l2_len: usize) -> Option<Remote> {
    let header = Linear::at(skb, l2_len, size_of::<Ipv6WithPorts>())?;
    let protocol = header.byte(6);
    if header.byte(0) >> 4 != 6 || (protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP) {
        return None;
    }
    let (addr, port, local) = match direction {
        Direction::Egress => (24, 42, 40),
        Direction::Ingress => (8, 40, 42),
    };
    let addr = [
        header.word(addr),
        header.word(addr + 4),
        header.word(addr + 8),
        header.word(addr + 12),
    ];
    Some(Remote::Endpoint(
        Destination::new(
            addr,
            u16::from_be_bytes([header.byte(port), header.byte(port + 1)]),
            protocol,
        ),
        [header.byte(local), header.byte(local + 1)],
    ))
}

/// Bytes of the skb's linear data that the verifier has seen bounds-checked.
#[derive(Clone, Copy)]
struct Linear {
    start: *const u8,
}

impl Linear {
    /// `len` bytes from `offset` in the linear data, if they are all there.
    #[inline(always)]
    fn at(skb: &SkBuff, offset: usize, len: usize) -> Option<Self> {
        // SAFETY: the kernel hands every classifier a valid __sk_buff; the verifier turns these
        // two fields into the packet's bounds.
        let (data, data_end) = unsafe { ((*skb.skb).data as usize, (*skb.skb).data_end as usize) };
        // The comparison the verifier learns the packet's length from: keep it in this form.
        if data + offset + len > data_end {
            return None;
        }
        Some(Self {
            start: (data + offset) as *const u8,
        })
    }

    /// The byte at `offset`, which must be below the length `at` checked (the verifier refuses
    /// the program otherwise).
    #[inline(always)]
    fn byte(self, offset: usize) -> u8 {
        // SAFETY: `at` checked that `len` bytes from `start` lie inside the packet.
        unsafe { *self.start.add(offset) }
    }

    /// Four bytes at `offset` as a word in memory order, as [`Destination`] keeps addresses:
    /// one load (the object is built to read packets unaligned).
    #[inline(always)]
    fn word(self, offset: usize) -> u32 {
        // SAFETY: `at` checked that `len` bytes from `start` lie inside the packet, and
        // `offset + 4` is within them (the verifier refuses the program otherwise).
        unsafe { self.start.add(offset).cast::<u32>().read_unaligned() }
    }
}

#[inline(always)]
fn ipv4(skb: &SkBuff, direction: Direction) -> Remote {
    let (header, ports) = match load::<Ipv4WithPorts>(skb, 0) {
        Some(Ipv4WithPorts { ip, ports }) => (ip, Some(ports)),
        None => match load::<Ipv4Header>(skb, 0) {
            Some(ip) => (ip, None),
            None => return Remote::Unparsed,
        },
    };
    let header_len = u32::from(header.version_ihl & 0x0f) * 4;
    if header.version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Header>() as u32 {
        return Remote::Unparsed;
    }
    // A non-zero fragment offset means the L4 header is in an earlier fragment.
    if u16::from_be_bytes(header.fragment) & 0x1fff != 0 {
        return Remote::NoPorts;
    }
    let protocol = header.protocol;
    if protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP {
        return Remote::NoPorts;
    }
    // With options, the ports are further on than the first read reached.
    let ports = if header_len == size_of::<Ipv4Header>() as u32 {
        ports
    } else {
        load::<Ports>(skb, header_len)
    };
    let Some(ports) = ports else {
        return Remote::Unparsed;
    };
    let addr = match direction {
        Direction::Egress => header.dst,
        Direction::Ingress => header.src,
    };
    endpoint(direction, Destination::ipv4_mapped(addr), protocol, ports)
}

#[inline(always)]
fn ipv6(skb: &SkBuff, direction: Direction) -> Remote {
    let (header, ports) = match load::<Ipv6WithPorts>(skb, 0) {
        Some(Ipv6WithPorts { ip, ports }) => (ip, Some(ports)),
        None => match load::<Ipv6Header>(skb, 0) {
            Some(ip) => (ip, None),
            None => return Remote::Unparsed,
        },
    };
    if header.version_class_flow[0] >> 4 != 6 {
        return Remote::Unparsed;
    }
    let addr = match direction {
        Direction::Egress => header.dst,
        Direction::Ingress => header.src,
    };

    let mut next = header.next_header;
    if let (PROTOCOL_TCP | PROTOCOL_UDP, Some(ports)) = (next, ports) {
        return endpoint(direction, addr, next, ports);
    }
    // Extension headers, or a packet cut inside its ports, which the first pass finds again.
    let mut offset = size_of::<Ipv6Header>() as u32;
    for _ in 0..=MAX_IPV6_EXTENSION_HEADERS {
        if next == PROTOCOL_TCP || next == PROTOCOL_UDP {
            return match load::<Ports>(skb, offset) {
                Some(ports) => endpoint(direction, addr, next, ports),
                None => Remote::Unparsed,
            };
        }
        if !matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT
        ) {
            return Remote::NoPorts;
        }
        let Some(extension) = load::<ExtensionHeader>(skb, offset) else {
            return Remote::Unparsed;
        };
        offset += match next {
            NEXTHDR_AUTH => (u32::from(extension.len) + 2) * 4,
            // A non-zero fragment offset means the L4 header is in an earlier fragment.
            NEXTHDR_FRAGMENT if u16::from_be_bytes(extension.fragment) & 0xfff8 != 0 => return Remote::NoPorts,
            NEXTHDR_FRAGMENT => 8,
            _ => (u32::from(extension.len) + 1) * 8,
        };
        next = extension.next_header;
    }
    Remote::NoPorts
}

#[inline(always)]
fn endpoint(direction: Direction, addr: [u32; 4], protocol: u8, ports: Ports) -> Remote {
    let (remote, local) = match direction {
        Direction::Egress => (ports.dst, ports.src),
        Direction::Ingress => (ports.src, ports.dst),
    };
    Remote::Endpoint(Destination::new(addr, u16::from_be_bytes(remote), protocol), local)
}

/// Copies a `T` from `offset` past the network header, or `None` if the packet is shorter.
#[inline(always)]
fn load<T: Header>(skb: &SkBuff, offset: u32) -> Option<T> {
    let mut buf = MaybeUninit::<T>::uninit();
    // SAFETY: `buf` has room for a T; the helper fills all of it or fails.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            skb.skb as *const c_void,
            offset,
            buf.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    // SAFETY: a zero return means the helper wrote all of `buf`, and any bytes are a valid T
    // (the `Header` contract).
    (ret == 0).then(|| unsafe { buf.assume_init() })
}
