//! The aiesim TC classifier on the cellular interface.
//!
//! One classifier per direction, sharing one code path: count every packet per direction and
//! class, recognise traffic to or from a configured AI endpoint, and on egress give it the
//! configured `skb->priority`. It never drops or redirects: it returns `TC_ACT_UNSPEC`, which is
//! `TCX_NEXT` under TCX, so programs attached after it still run.
#![no_std]
#![no_main]

mod parse;

use aiesim_fastpath_common::{
    AI_FILTER_WORDS, Class, Config, Counters, Direction, EndpointKey, MAX_AI_ENDPOINTS, STATS_ENTRIES, stats_index,
};
use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};

use crate::parse::Remote;

#[map]
static STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

#[map]
static AI_ENDPOINTS: HashMap<EndpointKey, u32> = HashMap::with_max_entries(MAX_AI_ENDPOINTS, 0);

#[map]
static AI_FILTER: Array<u64> = Array::with_max_entries(AI_FILTER_WORDS, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

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

#[inline(always)]
fn classify(ctx: &TcContext, direction: Direction) -> i32 {
    let class = match parse::remote(ctx, direction) {
        Remote::Endpoint(key) if maybe_ai(&key) && AI_ENDPOINTS.get_ptr(&key).is_some() => Class::Ai,
        Remote::Endpoint(_) | Remote::NoPorts => Class::Other,
        Remote::Unparsed => Class::Unparsed,
    };
    if class == Class::Ai && direction == Direction::Egress {
        prioritise(ctx);
    }
    count(direction, class, ctx.len());
    TC_ACT_UNSPEC
}

/// False only for keys that are certainly not AI endpoints: userspace sets the bit of each.
#[inline(always)]
fn maybe_ai(key: &EndpointKey) -> bool {
    let bit = key.filter_bit();
    AI_FILTER
        .get(bit / 64)
        .is_some_and(|word| word & (1u64 << (bit % 64)) != 0)
}

#[inline(always)]
fn prioritise(ctx: &TcContext) {
    let Some(config) = CONFIG.get(0) else { return };
    let Config { ai_priority } = *config;
    if ai_priority != 0 {
        // SAFETY: the kernel hands every classifier a valid __sk_buff whose priority is writable.
        unsafe { (*ctx.skb.skb).priority = ai_priority };
    }
}

#[inline(always)]
fn count(direction: Direction, class: Class, len: u32) {
    if let Some(counters) = STATS.get_ptr_mut(stats_index(direction, class)) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and TC runs with BHs disabled.
        let counters = unsafe { &mut *counters };
        counters.packets = counters.packets.wrapping_add(1);
        counters.bytes = counters.bytes.wrapping_add(u64::from(len));
    }
}

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
