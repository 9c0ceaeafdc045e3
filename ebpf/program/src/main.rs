//! The aiesim TC classifier on the cellular interface.
//!
//! One classifier per direction, sharing one code path: recognise traffic to or from a
//! configured AI endpoint (an address prefix with a port, in an LPM trie behind a bit filter),
//! count it per endpoint and direction, and on egress give it the configured `skb->priority`
//! (and, when configured, a DSCP in its IP header);
//! count everything else per direction and class. When userspace names aiesimd's cgroup, its own
//! sockets' packets are AI wherever they go: on egress by the socket's cgroup, on ingress by the
//! flow egress remembered (TC sees no socket there). Each packet updates one counter pair. It
//! never drops or redirects: it returns `TC_ACT_UNSPEC`, which is `TCX_NEXT` under TCX, so
//! programs attached after it still run.
//!
//! Two `cgroup_skb` programs count apps' own AI traffic per cgroup, with the same parser and the
//! same destinations: TC sees no socket on ingress, the cgroup hooks see the receiving socket's
//! cgroup on both sides. They always let the packet through.
#![no_std]
#![no_main]

mod parse;

use aiesim_fastpath_common::{
    AI_FILTER_WORDS, AppCounters, Class, Config, Counters, DSCP_ENABLED, Destination, Direction,
    ENDPOINT_STATS_ENTRIES, EXACT_ENTRIES, EndpointIndex, ExactEntry, MAX_AI_DESTINATIONS, MAX_APP_CGROUPS,
    MAX_OWN_FLOWS, OVERFLOW_CGROUP, OwnFilter, OwnFlow, STATS_ENTRIES, UNLISTED_ENDPOINT, endpoint_stats_index,
    stats_index,
};
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::bpf_skb_cgroup_id,
    macros::{cgroup_skb, classifier, map},
    maps::{
        Array, LruHashMap, PerCpuArray, PerCpuHashMap,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SkBuffContext, TcContext, sk_buff::SkBuff},
};

use crate::parse::Remote;

#[map]
static STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

#[map]
static AI_DESTINATIONS: LpmTrie<Destination, EndpointIndex> = LpmTrie::with_max_entries(MAX_AI_DESTINATIONS, 0);

#[map]
static ENDPOINT_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(ENDPOINT_STATS_ENTRIES, 0);

#[map]
static AI_EXACT: Array<ExactEntry> = Array::with_max_entries(EXACT_ENTRIES, 0);

#[map]
static AI_FILTER: Array<u64> = Array::with_max_entries(AI_FILTER_WORDS, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static OWN_FILTER: Array<OwnFilter> = Array::with_max_entries(1, 0);

#[map]
static LAST_OWN_FLOW: PerCpuArray<OwnFlow> = PerCpuArray::with_max_entries(1, 0);

#[map]
static OWN_FLOWS: LruHashMap<OwnFlow, u32> = LruHashMap::with_max_entries(MAX_OWN_FLOWS, 0);

#[map]
static APP_STATS: PerCpuHashMap<u64, AppCounters> = PerCpuHashMap::with_max_entries(MAX_APP_CGROUPS, 0);

/// A `cgroup_skb` verdict letting the packet through.
const CGROUP_SKB_PASS: i32 = 1;

#[classifier]
pub fn aiesim_egress(ctx: TcContext) -> i32 {
    classify(&ctx, Direction::Egress)
}

#[classifier]
pub fn aiesim_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, Direction::Ingress)
}

/// Does nothing: `BPF_PROG_TEST_RUN` on it gives the fixed cost the classifier is compared with.
#[classifier]
pub fn aiesim_baseline(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cgroup_skb(egress)]
pub fn aiesim_app_egress(ctx: SkBuffContext) -> i32 {
    account_app(&ctx.skb, Direction::Egress)
}

#[cgroup_skb(ingress)]
pub fn aiesim_app_ingress(ctx: SkBuffContext) -> i32 {
    account_app(&ctx.skb, Direction::Ingress)
}

/// Counts an AI packet of a socket against the socket's cgroup.
#[inline(always)]
fn account_app(skb: &SkBuff, direction: Direction) -> i32 {
    let Remote::Endpoint(destination, _) = parse::remote(skb, direction) else {
        return CGROUP_SKB_PASS;
    };
    if ai_endpoint(&destination).is_none() {
        return CGROUP_SKB_PASS;
    }
    // SAFETY: the kernel hands every cgroup_skb program a valid __sk_buff; the helper (not
    // GPL-only) reads the cgroup of the socket that owns it.
    let cgroup = unsafe { bpf_skb_cgroup_id(skb.skb) };
    let counters = APP_STATS.get_ptr_mut(cgroup).or_else(|| {
        // First packet of this cgroup: zeroes on every CPU. A full map counts it under the
        // overflow key, which userspace creates before attaching.
        // Failing is fine: another CPU may have added it just now.
        let _ = APP_STATS.insert(cgroup, AppCounters::default(), u64::from(BPF_NOEXIST));
        APP_STATS
            .get_ptr_mut(cgroup)
            .or_else(|| APP_STATS.get_ptr_mut(OVERFLOW_CGROUP))
    });
    if let Some(counters) = counters {
        // SAFETY: a per-CPU value is only touched by this CPU; the indexes are constants.
        let counters = unsafe { &mut (*counters).directions[direction as usize] };
        counters.packets = counters.packets.wrapping_add(1);
        counters.bytes = counters.bytes.wrapping_add(u64::from(skb.len()));
    }
    CGROUP_SKB_PASS
}

#[inline(always)]
fn classify(ctx: &TcContext, direction: Direction) -> i32 {
    let config = CONFIG.get(0);
    let l2_len = config.map(|config| config.l2_len);
    if let Some(remote) = parse::common_ipv4(&ctx.skb, direction, l2_len) {
        return account(ctx, config, direction, remote);
    }
    if let Some(remote) = parse::common_ipv6(&ctx.skb, direction, l2_len) {
        return account(ctx, config, direction, remote);
    }
    account(ctx, config, direction, parse::remote(&ctx.skb, direction))
}

/// Classifies a packet by its remote end and counts it. Inlined three times: each common case
/// (IPv4, IPv6, read from the linear data) has a copy of its own, in which what its parser
/// knows (the constant words of an IPv4-mapped address) folds into the hashes and comparisons
/// and nothing waits on the other cases; one copy for every case cost AI packets a tenth more.
#[inline(always)]
fn account(ctx: &TcContext, config: Option<&Config>, direction: Direction, remote: Remote) -> i32 {
    let counters = match remote {
        Remote::Endpoint(destination, local_port) => match ai_endpoint(&destination)
            .or_else(|| own_flow(ctx, config?.own_cgroup, direction, destination, local_port))
        {
            Some(endpoint) => {
                if let (Direction::Egress, Some(config)) = (direction, config) {
                    prioritise(ctx, config, &destination);
                }
                ENDPOINT_STATS.get_ptr_mut(endpoint_stats_index(endpoint, direction))
            }
            None => STATS.get_ptr_mut(stats_index(direction, Class::Other)),
        },
        Remote::NoPorts => STATS.get_ptr_mut(stats_index(direction, Class::Other)),
        Remote::Unparsed => STATS.get_ptr_mut(stats_index(direction, Class::Unparsed)),
    };
    if let Some(counters) = counters {
        // SAFETY: a per-CPU slot is only touched by this CPU, and TC runs with BHs disabled.
        let counters = unsafe { &mut *counters };
        counters.packets = counters.packets.wrapping_add(1);
        counters.bytes = counters.bytes.wrapping_add(u64::from(ctx.len()));
    }
    TC_ACT_UNSPEC
}

/// The index of the AI endpoint `destination` belongs to, if any: the longest matching prefix.
#[inline(always)]
fn ai_endpoint(destination: &Destination) -> Option<EndpointIndex> {
    let bit = destination.filter_bit();
    // False only for destinations that are certainly not AI: userspace sets the bit of each.
    let maybe = AI_FILTER
        .get(bit / 64)
        .is_some_and(|word| word & (1u64 << (bit % 64)) != 0);
    if !maybe {
        return None;
    }
    // Single addresses first: an inlined array read where the trie is a helper call. A full
    // match is the longest prefix there is.
    if let Some(entry) = AI_EXACT.get(destination.exact_slot()) {
        if entry.endpoint != 0 && same(&entry.destination, destination) {
            return Some(entry.endpoint - 1);
        }
    }
    let [port, a0, a1, a2, a3] = destination.words();
    let mut key = MaybeUninit::uninit();
    let key: &Key<Destination> = from_words(&mut key, [FULL_PREFIX, port, a0, a1, a2, a3]);
    AI_DESTINATIONS.get(key).copied()
}

/// Room for a map key, aligned for [`from_words`].
#[repr(C, align(4))]
struct Aligned<T>(T);

/// A map key built in `slot` from its 32-bit words in memory order, each stored on its own
/// (volatile), and used where it lies: of plain stores, or of a copy, LLVM merges an IPv4 key's
/// zero words into a call to `memset`, which BPF only has as a function the program calls, or
/// into a wider store the verifier refuses on the stack when it is not aligned to its width.
///
/// `T` must be `N` words of plain integers (any bits valid), as every key type here is.
#[inline(always)]
fn from_words<T, const N: usize>(slot: &mut MaybeUninit<Aligned<T>>, words: [u32; N]) -> &T {
    const { assert!(core::mem::size_of::<T>() == N * 4) };
    let base = slot.as_mut_ptr().cast::<u32>();
    let mut i = 0;
    while i < N {
        // SAFETY: `base` is 4-aligned (`Aligned`) with room for N words (asserted above).
        unsafe { base.add(i).write_volatile(words[i]) };
        i += 1;
    }
    // SAFETY: every byte was written, and any bits make a valid `T` (the contract above).
    unsafe { &slot.assume_init_ref().0 }
}

/// [`UNLISTED_ENDPOINT`] for a packet of aiesimd's own (cgroup `own`, 0: off) to or from a
/// destination not listed: on egress the socket's cgroup says, and the flow is remembered for
/// ingress, where the flow is all there is to go by.
#[inline(always)]
fn own_flow(
    ctx: &TcContext,
    own: u64,
    direction: Direction,
    remote: Destination,
    local_port: [u8; 2],
) -> Option<EndpointIndex> {
    if own == 0 {
        return None;
    }
    // What other traffic pays comes first: the cgroup on egress, the filter on ingress.
    match direction {
        Direction::Egress => {
            // SAFETY: the kernel hands every classifier a valid __sk_buff; the helper (not
            // GPL-only) reads the cgroup of the socket that sent it, 0 when there is none.
            if unsafe { bpf_skb_cgroup_id(ctx.skb.skb) } != own {
                return None;
            }
        }
        Direction::Ingress => {
            // aiesimd's few remote ends set few marks.
            let slot = remote.own_slot() as usize;
            if OWN_FILTER.get(0).is_none_or(|filter| filter.marks[slot] == 0) {
                return None;
            }
        }
    }
    let [port, a0, a1, a2, a3] = remote.words();
    let local = u32::from_ne_bytes([local_port[0], local_port[1], 0, 0]);
    let mut flow = MaybeUninit::uninit();
    let flow: &OwnFlow = from_words(&mut flow, [port, a0, a1, a2, a3, local]);
    let last = LAST_OWN_FLOW.get_ptr_mut(0);
    // SAFETY: a per-CPU value is only touched by this CPU, and TC runs with BHs disabled.
    if last.is_some_and(|last| same_flow(unsafe { &*last }, flow)) {
        // This CPU's last own flow, listed and marked when it became the last.
        return Some(UNLISTED_ENDPOINT);
    }
    match direction {
        Direction::Egress => {
            // Looked up first: an LRU update allocates even when the key is there. A full map
            // evicts its least recently used flow; failing only loses replies.
            if OWN_FLOWS.get_ptr(flow).is_none() {
                let _ = OWN_FLOWS.insert(flow, &0, 0);
            }
            if let Some(filter) = OWN_FILTER.get_ptr_mut(0) {
                // SAFETY: an array value, valid while the program runs; a byte store, so a
                // mark another CPU sets at once in the same word is kept.
                unsafe { (*filter).marks[remote.own_slot() as usize] = 1 };
            }
        }
        Direction::Ingress => {
            OWN_FLOWS.get_ptr(flow)?;
        }
    }
    if let Some(last) = last {
        // SAFETY: as above.
        unsafe { *last = *flow };
    }
    Some(UNLISTED_ENDPOINT)
}

#[inline(always)]
fn same_flow(a: &OwnFlow, b: &OwnFlow) -> bool {
    a.local_port == b.local_port && same(&a.remote, &b.remote)
}

/// Word by word: BPF has no memcmp to call.
#[inline(always)]
fn same(a: &Destination, b: &Destination) -> bool {
    let l4 = |d: &Destination| u32::from_ne_bytes([d.port[0], d.port[1], d.protocol, d.reserved]);
    let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (a.addr, b.addr);
    l4(a) == l4(b) && a0 == b0 && a1 == b1 && a2 == b2 && a3 == b3
}

/// A full-length key: port, protocol and the whole address.
const FULL_PREFIX: u32 = (core::mem::size_of::<Destination>() * 8) as u32;

#[inline(always)]
fn prioritise(ctx: &TcContext, config: &Config, destination: &Destination) {
    let Config {
        ai_priority,
        ai_dscp,
        l2_len,
        ..
    } = *config;
    if ai_priority != 0 {
        // SAFETY: the kernel hands every classifier a valid __sk_buff whose priority is writable.
        unsafe { (*ctx.skb.skb).priority = ai_priority };
    }
    if ai_dscp & DSCP_ENABLED != 0 {
        // The DS field, not skb->mark: rmnet picks bearer queues from the mark.
        #[expect(clippy::cast_possible_truncation, reason = "masked to six bits")]
        mark_dscp(ctx, destination.is_ipv4(), (ai_dscp & 0x3f) as u8, l2_len as usize);
    }
}

/// Writes `dscp` into the IP header, keeping the ECN bits; IPv4's header checksum follows.
/// A failure leaves the packet as it was.
#[inline(always)]
fn mark_dscp(ctx: &TcContext, ipv4: bool, dscp: u8, l2_len: usize) {
    // IPv4: version and IHL, then TOS. IPv6: version, the traffic class across both bytes, then
    // the flow label.
    let Ok(old) = ctx.load::<[u8; 2]>(l2_len) else { return };
    // A wrong l2_len would put the write elsewhere: the version must be the one parsed.
    if old[0] >> 4 != if ipv4 { 4 } else { 6 } {
        return;
    }
    let new = if ipv4 {
        [old[0], (dscp << 2) | (old[1] & 0x03)]
    } else {
        let class = (dscp << 2) | ((old[1] >> 4) & 0x03);
        [(old[0] & 0xf0) | (class >> 4), (class << 4) | (old[1] & 0x0f)]
    };
    if new == old {
        return;
    }
    if ipv4 {
        // The helper takes both 16-bit words as they lie in the packet.
        let [from, to] = [old, new].map(|bytes| u64::from(u16::from_ne_bytes(bytes)));
        if ctx.l3_csum_replace(l2_len + IPV4_CHECKSUM_OFFSET, from, to, 2).is_err() {
            return;
        }
    }
    let _ = ctx.store(l2_len, &new, 0);
}

/// Offset of the header checksum in an IPv4 header.
const IPV4_CHECKSUM_OFFSET: usize = 10;

/// The kernel-visible licence of the object; this program calls no GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}
