//! Apps' own AI traffic counted per app: real processes (bash with `/dev/tcp`) in two app
//! cgroups, and one more sending elsewhere, talk TCP over a veth pair to a server in a peer
//! network namespace while the `cgroup_skb` programs watch a cgroup tree the test makes.
//!
//! Each test runs on a thread of its own that unshares its network namespace; the cgroups and
//! namespaces vanish with the test.

use std::{net::SocketAddr, thread, time::Duration};

#[path = "support/cgroups.rs"]
mod cgroups;
#[path = "support/echo.rs"]
mod echo;
#[path = "support/uplink.rs"]
mod uplink;

use aiesimd::fastpath::{AppStatistics, Fastpath};
use cgroups::CgroupTree;
use echo::{echo_server, exchange_from};
use uplink::{IFACE, PATIENCE, PEER, Uplink, in_network_namespace};

/// The AI endpoint (TCP) and a port that is not AI, both in the peer namespace.
const AI: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(PEER), 8443);
const OTHER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(PEER), 9100);

/// Whether the kernel tests can run; in CI, not being able to is a failure.
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    !aiesim_skip::skip("the per-app fast-path tests need root (BPF, cgroups and network namespaces)")
}

/// The per-app figures once two reads a while apart agree (the last ACKs and FINs are in).
fn settled(fastpath: &Fastpath) -> Vec<AppStatistics> {
    let mut last = fastpath.app_statistics().unwrap();
    for _ in 0..(PATIENCE.as_millis() / 200) {
        thread::sleep(Duration::from_millis(200));
        let now = fastpath.app_statistics().unwrap();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the per-app counters never settled: {last:?}");
}

#[test]
fn apps_own_ai_traffic_is_counted_per_app() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let uplink = Uplink::create();
        echo_server(&uplink, AI);
        echo_server(&uplink, OTHER);
        let alpha = "system.slice/alpha.service";
        let beta = "user.slice/user-1000.slice/user@1000.service/app.slice/app-beta.scope";
        let gamma = "system.slice/gamma.service";
        let tree = CgroupTree::make("fastpath-apps", &[alpha, beta, gamma]);

        let mut fastpath = Fastpath::attach(IFACE).expect("attach to veth0");
        fastpath.set_ai_endpoints(&[AI]).unwrap();
        fastpath.watch_apps(&tree.root).expect("watch the test's cgroup tree");
        assert_eq!(fastpath.watched_cgroup(), Some(tree.root.as_path()));

        let (alpha_bytes, beta_bytes) = (40_000, 120_000);
        exchange_from(&tree.procs(alpha), AI, alpha_bytes);
        exchange_from(&tree.procs(beta), AI, beta_bytes);
        // Not AI: counted by nobody.
        exchange_from(&tree.procs(gamma), OTHER, 50_000);

        let apps = settled(&fastpath);
        let names: Vec<_> = apps.iter().map(|a| a.app.as_str()).collect();
        assert_eq!(names, ["alpha.service", "uid-1000/app-beta.scope"], "{apps:#?}");
        for (app, payload) in apps.iter().zip([alpha_bytes, beta_bytes]) {
            let payload = payload as u64;
            // Each direction carried the payload with 40 to 60 bytes of IP and TCP headers per
            // packet, plus handshake, ACKs and FINs; sent in packets of at most 1500 bytes (the
            // receiver may see them coalesced).
            assert!(app.egress_packets >= payload.div_ceil(1448), "{app:?}");
            for (packets, bytes) in [
                (app.egress_packets, app.egress_bytes),
                (app.ingress_packets, app.ingress_bytes),
            ] {
                assert!(bytes >= payload + 40 * packets, "{app:?}");
                assert!(bytes <= payload + 60 * packets, "{app:?}");
            }
        }

        // The classifier on veth0 saw the same AI packets, each with its Ethernet header.
        let endpoint = fastpath.endpoint_statistics().unwrap();
        let [endpoint] = endpoint.as_slice() else {
            panic!("one AI endpoint: {endpoint:?}")
        };
        let sum = |f: fn(&AppStatistics) -> u64| apps.iter().map(f).sum::<u64>();
        assert_eq!(
            endpoint.egress_packets,
            sum(|a| a.egress_packets),
            "{endpoint:?} {apps:?}"
        );
        assert_eq!(
            endpoint.ingress_packets,
            sum(|a| a.ingress_packets),
            "{endpoint:?} {apps:?}"
        );
        assert_eq!(
            endpoint.egress_bytes,
            sum(|a| a.egress_bytes) + 14 * endpoint.egress_packets,
            "{endpoint:?} {apps:?}"
        );
        assert_eq!(
            endpoint.ingress_bytes,
            sum(|a| a.ingress_bytes) + 14 * endpoint.ingress_packets,
            "{endpoint:?} {apps:?}"
        );

        fastpath.detach().expect("detach");
    });
}
