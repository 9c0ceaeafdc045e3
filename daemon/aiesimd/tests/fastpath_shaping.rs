//! AI-first shaping on a real, rate-limited uplink: a veth pair between two network namespaces
//! the tests create, the classifier attached to the device's end and the daemon's HTB root qdisc
//! on it, a bulk TCP upload saturating it while AI request/answer exchanges run.
//!
//! Nothing here is timed: precedence is read from the qdisc's own class counters and from how
//! many bulk packets left while an AI exchange was under way.

#[path = "support/uplink.rs"]
mod uplink;

use aiesimd::fastpath::{AttachMode, BULK_CLASS, Fastpath, INTERACTIVE_CLASS, Shaping};
use uplink::{AI, AiClient, IFACE, Uplink, class_stats, in_network_namespace, run, wait_for_queue};

const UPLINK_KBIT: u32 = 1000;
const EXCHANGES: u64 = 20;
/// Bulk packets queued before the AI exchanges start: what an AI packet would wait behind in FIFO.
const BULK_BACKLOG: u64 = 20;

/// Whether the kernel tests can run; in CI, not being able to is a failure.
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    !aiesim_skip::skip("the shaping tests need root (BPF, TC, veth and network namespaces)")
}

fn handle(class: u32) -> String {
    format!("{:x}:{:x}", class >> 16, class & 0xffff)
}

fn root_qdisc() -> String {
    run("tc", &["qdisc", "show", "dev", IFACE, "root"])
}

fn shaped_fastpath(mode: AttachMode) -> Fastpath {
    let mut fastpath = Fastpath::attach_with(IFACE, mode).expect("attach to veth0");
    fastpath.set_ai_endpoints(&[AI]).unwrap();
    let installed = fastpath
        .shape(Shaping {
            uplink_kbit: UPLINK_KBIT,
        })
        .expect("shape veth0");
    assert!(installed, "veth0 had only the kernel's default qdisc: {}", root_qdisc());
    assert!(fastpath.shaped());
    fastpath
}

/// AI exchanges overtake a bulk backlog: they leave through the interactive class, each while
/// fewer bulk packets leave than were queued ahead of it, and the bulk class carries the upload.
fn ai_overtakes_the_bulk_upload(mode: AttachMode) {
    let uplink = Uplink::create();
    let fastpath = shaped_fastpath(mode);
    let (interactive, bulk) = (handle(INTERACTIVE_CLASS), handle(BULK_CLASS));
    let qdisc = root_qdisc();
    assert!(qdisc.starts_with("qdisc htb ae51: "), "{qdisc}");

    let upload = uplink.start_upload();
    wait_for_queue(&bulk, BULK_BACKLOG);
    let mut client = AiClient::new();
    for exchange in 0..EXCHANGES {
        let before = class_stats(&bulk);
        client.exchange();
        let after = class_stats(&bulk);
        assert!(
            before.queued > 0,
            "exchange {exchange}: the upload keeps a backlog ({before:?})"
        );
        // In FIFO order the request would wait for every queued bulk packet to leave first.
        assert!(
            after.packets - before.packets < before.queued,
            "exchange {exchange}: {} bulk packets left before the AI answer came, {} were queued ahead",
            after.packets - before.packets,
            before.queued
        );
    }
    let still_queued = class_stats(&bulk).queued;
    let uploaded = upload.stop();

    let (ai, bulk_stats) = (class_stats(&interactive), class_stats(&bulk));
    assert_eq!(ai.packets, EXCHANGES, "one request packet per exchange: {ai:?}");
    assert!(still_queued > 0, "the exchanges all ended while bulk was still queued");
    assert!(
        bulk_stats.bytes >= uploaded && uploaded > 0,
        "the upload ({uploaded} bytes received) went through the bulk class: {bulk_stats:?}"
    );
    let stats = fastpath.statistics().unwrap();
    assert_eq!(stats.ai_packets, 2 * EXCHANGES, "requests out, answers in: {stats:?}");

    fastpath.detach().expect("detach");
    let qdisc = root_qdisc();
    assert!(!qdisc.contains("htb"), "the shaper went with the fast path: {qdisc}");
    drop(uplink);
}

#[test]
fn ai_overtakes_a_bulk_upload_with_tcx() {
    if !privileged() || AttachMode::detect() != AttachMode::Tcx {
        return;
    }
    in_network_namespace(|| ai_overtakes_the_bulk_upload(AttachMode::Tcx));
}

#[test]
fn ai_overtakes_a_bulk_upload_with_clsact() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| ai_overtakes_the_bulk_upload(AttachMode::Clsact));
}

#[test]
fn a_root_qdisc_someone_configured_stays() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let _uplink = Uplink::create();
        run(
            "tc",
            &[
                "qdisc", "add", "dev", IFACE, "root", "handle", "7:", "tbf", "rate", "5mbit", "burst", "10kb",
                "latency", "50ms",
            ],
        );
        let mut fastpath = Fastpath::attach(IFACE).unwrap();
        let installed = fastpath
            .shape(Shaping {
                uplink_kbit: UPLINK_KBIT,
            })
            .unwrap();
        assert!(!installed);
        assert!(!fastpath.shaped());
        assert!(root_qdisc().starts_with("qdisc tbf 7: "), "{}", root_qdisc());
        fastpath.detach().unwrap();
        assert!(root_qdisc().starts_with("qdisc tbf 7: "), "{}", root_qdisc());
    });
}

#[test]
fn a_shaper_left_behind_is_taken_over_and_removed() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let _uplink = Uplink::create();
        // What a daemon that was killed leaves: its qdisc, without the classes it may not have made.
        run("tc", &["qdisc", "add", "dev", IFACE, "root", "handle", "ae51:", "htb"]);
        let mut fastpath = Fastpath::attach(IFACE).unwrap();
        assert!(
            fastpath
                .shape(Shaping {
                    uplink_kbit: UPLINK_KBIT
                })
                .unwrap()
        );
        assert_eq!(class_stats(&handle(INTERACTIVE_CLASS)).packets, 0);
        drop(fastpath);
        assert!(!root_qdisc().contains("htb"), "{}", root_qdisc());
    });
}

#[test]
fn a_rate_out_of_range_is_refused() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let _uplink = Uplink::create();
        let mut fastpath = Fastpath::attach(IFACE).unwrap();
        let error = fastpath.shape(Shaping { uplink_kbit: 0 }).unwrap_err();
        assert!(
            std::error::Error::source(&error).is_some_and(|e| e.to_string().contains("0 kbit/s")),
            "{error}"
        );
        assert!(!root_qdisc().contains("htb"), "{}", root_qdisc());
    });
}
