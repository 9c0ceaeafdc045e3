//! Finding the remote endpoint of a packet.
//!
//! Headers are read with `bpf_skb_load_bytes_relative(.., BPF_HDR_START_NET)`: offsets count from
//! the network header, so one path serves Ethernet devices and raw-IP ones (TUN, rmnet) alike, and
//! non-linear skbs need no pull.

use core::{ffi::c_void, mem::MaybeUninit};

use aiesim_fastpath_common::{Direction, EndpointKey, PROTOCOL_TCP, PROTOCOL_UDP};
use aya_ebpf::{
    bindings::bpf_hdr_start_off::BPF_HDR_START_NET, helpers::bpf_skb_load_bytes_relative,
    programs::TcContext,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// Extension headers followed before giving up; real traffic rarely carries more than two.
const MAX_IPV6_EXTENSION_HEADERS: usize = 4;

pub enum Remote {
    /// A TCP or UDP packet (or first fragment) and its remote end.
    Endpoint(EndpointKey),
    /// IP, but no ports to read: another protocol, a later fragment, a long extension chain.
    NoPorts,
    /// Not IP, or shorter than the headers claim.
    Unparsed,
}

#[inline(always)]
pub fn remote(ctx: &TcContext, direction: Direction) -> Remote {
    // SAFETY: the kernel hands every classifier a valid __sk_buff.
    let protocol = unsafe { (*ctx.skb.skb).protocol };
    // skb->protocol holds the EtherType in network byte order in its low 16 bits.
    #[expect(clippy::cast_possible_truncation, reason = "the field is a __be16")]
    let ethertype = u16::from_be(protocol as u16);
    match ethertype {
        ETH_P_IP => ipv4(ctx, direction),
        ETH_P_IPV6 => ipv6(ctx, direction),
        _ => Remote::Unparsed,
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, direction: Direction) -> Remote {
    let Some(header) = load::<IPV4_HEADER_LEN>(ctx, 0) else {
        return Remote::Unparsed;
    };
    let header_len = u32::from(header[0] & 0x0f) * 4;
    if header[0] >> 4 != 4 || header_len < IPV4_HEADER_LEN as u32 {
        return Remote::Unparsed;
    }
    // A non-zero fragment offset means the L4 header is in an earlier fragment.
    if u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0 {
        return Remote::NoPorts;
    }
    let protocol = header[9];
    let addr = match direction {
        Direction::Egress => [header[16], header[17], header[18], header[19]],
        Direction::Ingress => [header[12], header[13], header[14], header[15]],
    };
    endpoint(
        ctx,
        direction,
        EndpointKey::ipv4_mapped(addr),
        protocol,
        header_len,
    )
}

#[inline(always)]
fn ipv6(ctx: &TcContext, direction: Direction) -> Remote {
    let Some(header) = load::<IPV6_HEADER_LEN>(ctx, 0) else {
        return Remote::Unparsed;
    };
    if header[0] >> 4 != 6 {
        return Remote::Unparsed;
    }
    let mut addr = [0u8; 16];
    let start = match direction {
        Direction::Egress => 24,
        Direction::Ingress => 8,
    };
    addr.copy_from_slice(&header[start..start + 16]);

    let mut next = header[6];
    let mut offset = IPV6_HEADER_LEN as u32;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let Some([following, len]) = load::<2>(ctx, offset) else {
                    return Remote::Unparsed;
                };
                next = following;
                offset += (u32::from(len) + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let Some([following, len]) = load::<2>(ctx, offset) else {
                    return Remote::Unparsed;
                };
                next = following;
                offset += (u32::from(len) + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let Some([following, _, frag_hi, frag_lo]) = load::<4>(ctx, offset) else {
                    return Remote::Unparsed;
                };
                if u16::from_be_bytes([frag_hi, frag_lo]) & 0xfff8 != 0 {
                    return Remote::NoPorts;
                }
                next = following;
                offset += 8;
            }
            _ => break,
        }
    }
    endpoint(ctx, direction, addr, next, offset)
}

#[inline(always)]
fn endpoint(
    ctx: &TcContext,
    direction: Direction,
    addr: [u8; 16],
    protocol: u8,
    l4_offset: u32,
) -> Remote {
    if protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP {
        return Remote::NoPorts;
    }
    // TCP and UDP both start with the source port, then the destination port.
    let Some([src_hi, src_lo, dst_hi, dst_lo]) = load::<4>(ctx, l4_offset) else {
        return Remote::Unparsed;
    };
    let port = match direction {
        Direction::Egress => u16::from_be_bytes([dst_hi, dst_lo]),
        Direction::Ingress => u16::from_be_bytes([src_hi, src_lo]),
    };
    Remote::Endpoint(EndpointKey::new(addr, port, protocol))
}

/// Copies `N` bytes from `offset` past the network header, or `None` if the packet is shorter.
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: u32) -> Option<[u8; N]> {
    let mut buf = MaybeUninit::<[u8; N]>::uninit();
    // SAFETY: `buf` is N writable bytes; the helper fills all of them or fails.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const c_void,
            offset,
            buf.as_mut_ptr().cast(),
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    // SAFETY: a zero return means the helper wrote all N bytes.
    (ret == 0).then(|| unsafe { buf.assume_init() })
}
