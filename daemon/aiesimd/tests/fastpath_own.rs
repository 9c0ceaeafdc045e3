//! aiesimd's own sockets are AI wherever they connect. This test process plays aiesimd: it moves
//! alone into a cgroup it makes (as in systemd's `aiesimd.service`), finds its cgroup id the way
//! the daemon does, and talks TCP over a veth pair to an echo server in a peer network namespace
//! whose address is not in the AI list; bash in a sibling cgroup makes the same exchange and
//! stays other traffic.
//!
//! One test only: it moves the whole process between cgroups. It moves back, and the cgroups and
//! namespaces vanish, even when it fails.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

#[path = "support/cgroups.rs"]
mod cgroups;
#[path = "support/echo.rs"]
mod echo;
#[path = "support/uplink.rs"]
mod uplink;

use aiesimd::fastpath::{
    Fastpath, INTERACTIVE_CLASS, OwnCgroupError, Shaping, Statistics, UnlistedStatistics, own_cgroup,
};
use cgroups::CgroupTree;
use echo::{echo_server, exchange_from};
use uplink::{AI, IFACE, PATIENCE, PEER, Uplink, class_stats, in_network_namespace};

/// A TCP echo server in the peer namespace that is not in the AI list (the list holds `AI`).
const UNLISTED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(PEER), 9100);
const PAYLOAD: usize = 60_000;

/// Whether the kernel tests can run; in CI, not being able to is a failure.
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    !aiesim_skip::skip("the own-socket fast-path test needs root (BPF, cgroups and network namespaces)")
}

/// This process in another cgroup until dropped, then back where it was.
struct Moved {
    back: PathBuf,
}

impl Moved {
    fn to(procs: &Path, hierarchy: &Path) -> Self {
        let listing = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let here = listing
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .expect("in a cgroup v2");
        let back = hierarchy.join(here.trim_start_matches('/')).join("cgroup.procs");
        std::fs::write(procs, std::process::id().to_string()).expect("move into the test's cgroup");
        Self { back }
    }
}

impl Drop for Moved {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(&self.back, std::process::id().to_string()) {
            eprintln!("cannot move back to {}: {error}", self.back.display());
        }
    }
}

/// What aiesimd's cloud client does: sends `bytes` over TCP to `to` and reads them back.
fn exchange(to: SocketAddr, bytes: usize) {
    let mut stream = TcpStream::connect_timeout(&to, PATIENCE).expect("connect to the echo server");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let received = thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).map(|_| all.len())
    });
    stream.write_all(&vec![0x61; bytes]).expect("send");
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(received.join().unwrap().expect("read the echo"), bytes);
}

/// The counters once two reads a while apart agree (the last ACKs and FINs are in).
fn settled(fastpath: &Fastpath) -> (UnlistedStatistics, Statistics, (u64, u64)) {
    let read = || {
        let interactive = class_stats(&handle(INTERACTIVE_CLASS));
        (
            fastpath.unlisted_statistics().unwrap(),
            fastpath.statistics().unwrap(),
            (interactive.packets, interactive.bytes),
        )
    };
    let mut last = read();
    for _ in 0..(PATIENCE.as_millis() / 200) {
        thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the counters never settled: {last:?}");
}

fn handle(class: u32) -> String {
    format!("{:x}:{:x}", class >> 16, class & 0xffff)
}

#[test]
fn aiesimds_own_sockets_are_ai_wherever_they_connect() {
    if !privileged() {
        return;
    }
    let tree = CgroupTree::make("fastpath-own", &["aiesimd", "other"]);
    let hierarchy = tree.root.parent().unwrap().to_owned();
    let _moved = Moved::to(&tree.procs("aiesimd"), &hierarchy);

    // Alone in its cgroup: found, with the cgroup's id.
    assert_eq!(own_cgroup().expect("alone in the cgroup"), tree.id("aiesimd"));
    // A child shares it until it exits.
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    match own_cgroup() {
        Err(OwnCgroupError::NotAlone { path, others }) => {
            assert_eq!((path, others), (tree.dir("aiesimd"), 1));
        }
        other => panic!("a child shares the cgroup: {other:?}"),
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let own = own_cgroup().expect("alone again");

    in_network_namespace(|| {
        let uplink = Uplink::create();
        echo_server(&uplink, UNLISTED);
        let mut fastpath = Fastpath::attach(IFACE).expect("attach to veth0");
        fastpath.set_ai_endpoints(&[AI]).unwrap();
        assert!(fastpath.shape(Shaping { uplink_kbit: 200_000 }).unwrap());
        assert!(!fastpath.marks_own_sockets());
        fastpath.mark_own_sockets(Some(own)).unwrap();
        assert!(fastpath.marks_own_sockets());

        // Ours, to an address the list does not hold: AI both ways, sent through the
        // interactive class.
        exchange(UNLISTED, PAYLOAD);
        let (unlisted, stats, interactive) = settled(&fastpath);
        let payload = PAYLOAD as u64;
        assert!(unlisted.egress_packets >= payload.div_ceil(1448), "{unlisted:?}");
        for (packets, bytes) in [
            (unlisted.egress_packets, unlisted.egress_bytes),
            (unlisted.ingress_packets, unlisted.ingress_bytes),
        ] {
            // The payload plus Ethernet, IP and TCP headers per packet (a loaded machine may
            // add retransmissions, so no upper bound).
            assert!(bytes >= payload + 54 * packets, "{unlisted:?}");
        }
        assert_eq!(
            stats.ai_packets,
            unlisted.egress_packets + unlisted.ingress_packets,
            "{stats:?} {unlisted:?}"
        );
        // Every egress packet counted went through the interactive class, and only those.
        assert_eq!(
            interactive,
            (unlisted.egress_packets, unlisted.egress_bytes),
            "{unlisted:?}"
        );
        let listed = fastpath.endpoint_statistics().unwrap();
        assert!(listed.iter().all(|e| e.egress_packets == 0), "{listed:?}");

        // The same exchange from a process in another cgroup: other traffic.
        exchange_from(&tree.procs("other"), UNLISTED, PAYLOAD);
        let (after, stats_after, interactive_after) = settled(&fastpath);
        assert_eq!((after, interactive_after), (unlisted, interactive));
        assert_eq!(stats_after.ai_packets, stats.ai_packets);
        assert!(
            stats_after.egress_packets >= stats.egress_packets + payload.div_ceil(1448),
            "{stats_after:?}"
        );

        // Marking off: ours is other traffic too.
        fastpath.mark_own_sockets(None).unwrap();
        exchange(UNLISTED, PAYLOAD);
        let (off, stats_off, interactive_off) = settled(&fastpath);
        assert_eq!((off, interactive_off), (unlisted, interactive));
        assert_eq!(stats_off.ai_packets, stats.ai_packets);

        fastpath.detach().expect("detach");
    });
}
