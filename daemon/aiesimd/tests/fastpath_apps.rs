//! Apps' own AI traffic counted per app: real processes (bash with `/dev/tcp`) in two app
//! cgroups, and one more sending elsewhere, talk TCP over a veth pair to a server in a peer
//! network namespace while the `cgroup_skb` programs watch a cgroup tree the test makes.
//!
//! Each test runs on a thread of its own that unshares its network namespace; the cgroups and
//! namespaces vanish with the test.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

#[path = "support/uplink.rs"]
mod uplink;

use aiesimd::fastpath::{AppStatistics, Fastpath};
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

/// A cgroup v2 tree the test makes under the hierarchy's root and removes.
struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    fn make(paths: &[&str]) -> Self {
        // `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid system.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|line| {
                let (before, after) = line.split_once(" - ")?;
                (after.split_whitespace().next()? == "cgroup2").then(|| before.split_whitespace().nth(4))?
            })
            .expect("cgroup v2 is mounted");
        let root = Path::new(mount).join(format!("aiesim-fastpath-apps-{}", std::process::id()));
        for path in paths {
            std::fs::create_dir_all(root.join(path)).expect("make a cgroup");
        }
        Self { root }
    }

    fn procs(&self, path: &str) -> PathBuf {
        self.root.join(path).join("cgroup.procs")
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        // Deepest first; the processes in them have exited.
        let mut dirs = vec![self.root.clone()];
        let mut i = 0;
        while i < dirs.len() {
            let children: Vec<_> = std::fs::read_dir(&dirs[i])
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            dirs.extend(children);
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A TCP server in the peer namespace echoing every connection back until it ends.
fn echo_server(uplink: &Uplink, at: SocketAddr) {
    let listener = uplink.in_peer(|| TcpListener::bind(at).expect("bind in the peer namespace"));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(len) = stream.read(&mut buf) {
                    if len == 0 || stream.write_all(&buf[..len]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Runs bash in cgroup `procs`: it sends `bytes` to `to` over TCP and reads them back.
fn exchange_from(procs: &Path, to: SocketAddr, bytes: usize) {
    let script = format!(
        "echo $$ > {procs} && exec 3<>/dev/tcp/{ip}/{port} && head -c {bytes} /dev/zero >&3 && head -c {bytes} <&3 | wc -c",
        procs = procs.display(),
        ip = to.ip(),
        port = to.port(),
    );
    let output = Command::new("bash").args(["-c", &script]).output().expect("run bash");
    assert!(
        output.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), bytes.to_string());
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
        let tree = CgroupTree::make(&[alpha, beta, gamma]);

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
