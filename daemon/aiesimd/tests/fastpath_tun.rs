//! The classifier attached to a real raw-IP device: a TUN "wwan0" in a throwaway network
//! namespace, with real packets sent out through it and written in from its file descriptor.
//!
//! Each test runs on a thread of its own that unshares its network namespace, so the device, its
//! addresses, routes and qdiscs vanish with the thread; nothing is sent outside that namespace.

use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    thread,
    time::Duration,
};

#[path = "support/uplink.rs"]
mod uplink;

use aiesimd::fastpath::{AttachMode, Fastpath, FastpathError, Statistics};
use aya::programs::{SchedClassifier, TcAttachType};
use uplink::{in_network_namespace, run};

const IFACE: &str = "wwan0";
const DEVICE_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const DEVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);
const AI_PORT: u16 = 8443;
const OTHER_PORT: u16 = 9000;

/// Whether the kernel tests can run; in CI, not being able to is a failure.
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    !aiesim_skip::skip("the fast-path tests need root (BPF, TC, TUN and network namespaces)")
}

fn has_tcx() -> bool {
    AttachMode::detect() == AttachMode::Tcx || !aiesim_skip::skip("this kernel has no TCX (Linux 6.6+)")
}

fn sysctl(path: &str, value: &str) {
    std::fs::write(format!("/proc/sys/net/{path}"), value)
        .unwrap_or_else(|error| panic!("failed to set {path}: {error}"));
}

/// An L3 TUN device, up, with IPv4 and IPv6 addresses; the device lives as long as the value.
struct Tun {
    file: File,
}

impl Tun {
    fn create() -> Self {
        // No link-local address, DAD or router solicitation: the device sends only our packets.
        sysctl("ipv6/conf/default/addr_gen_mode", "1");
        sysctl("ipv6/conf/default/accept_dad", "0");
        sysctl("ipv6/conf/default/router_solicitations", "0");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        // SAFETY: ifreq is plain data, zero is a valid value for all of it.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(IFACE.bytes()) {
            *dst = libc::c_char::from_ne_bytes([src]);
        }
        request.ifr_ifru.ifru_flags = i16::try_from(libc::IFF_TUN | libc::IFF_NO_PI).unwrap();
        // SAFETY: TUNSETIFF reads an ifreq, which `request` is.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut request) };
        assert_eq!(ret, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());

        run("ip", &["link", "set", "lo", "up"]);
        run("ip", &["addr", "add", "10.200.0.1/24", "dev", IFACE]);
        run("ip", &["-6", "addr", "add", "fd00:200::1/64", "dev", IFACE, "nodad"]);
        run("ip", &["link", "set", IFACE, "up"]);
        Self { file }
    }

    /// Every packet the kernel sent out through the device since the last call.
    fn sent(&mut self) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match self.file.read(&mut buf) {
                Ok(len) => packets.push(buf[..len].to_vec()),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return packets,
                Err(error) => panic!("read from the TUN device: {error}"),
            }
        }
    }

    /// Makes the device receive `packet`, as a modem handing up a downlink packet would.
    fn receive(&mut self, packet: &[u8]) {
        self.file.write_all(packet).expect("write to the TUN device");
    }
}

/// A UDP/IPv4 packet from `src` to `dst` with a valid header checksum.
fn udp_v4(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 addresses expected");
    };
    let total = u16::try_from(28 + payload.len()).unwrap();
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    let sum = packet
        .chunks(2)
        .map(|word| u32::from(u16::from_be_bytes([word[0], word[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(&[0, 0]); // no UDP checksum, allowed over IPv4
    packet.extend_from_slice(payload);
    packet
}

fn send(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) {
    let sent = socket.send_to(payload, to).expect("send through wwan0");
    assert_eq!(sent, payload.len());
}

fn total_len<'a>(packets: impl IntoIterator<Item = &'a Vec<u8>>) -> u64 {
    packets.into_iter().map(|packet| packet.len() as u64).sum()
}

/// Where a UDP packet read from the device was going.
fn udp_destination(packet: &[u8]) -> Option<SocketAddr> {
    let port = |at: usize| Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]));
    match packet.first()? >> 4 {
        4 if packet.get(9) == Some(&17) => {
            let l4 = usize::from(packet[0] & 0x0f) * 4;
            let addr: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(SocketAddr::new(addr.into(), port(l4 + 2)?))
        }
        6 if packet.get(6) == Some(&17) => {
            let addr: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(SocketAddr::new(addr.into(), port(42)?))
        }
        _ => None,
    }
}

/// The packets that went out and the counters, taken when both agree on egress.
///
/// The kernel may send IPv6 control packets of its own at any time; retrying until the counters
/// match what the device delivered makes the comparison exact without assuming there are none.
fn settled(fastpath: &Fastpath, tun: &mut Tun) -> (Vec<Vec<u8>>, Statistics) {
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent.extend(tun.sent());
        let stats = fastpath.statistics().unwrap();
        if stats.egress_packets == sent.len() as u64 && tun.sent().is_empty() {
            return (sent, stats);
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "egress counters never matched the {} packets wwan0 delivered",
        sent.len()
    );
}

/// The TCX programs on one hook of the device, by name.
fn tcx_programs(hook: TcAttachType) -> Vec<String> {
    let (_, programs) = SchedClassifier::query_tcx(IFACE, hook).expect("query TCX");
    programs
        .iter()
        .map(|program| program.name_as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Real traffic through wwan0 is counted per direction, and AI traffic as AI, in `mode`.
fn counts_real_traffic(mode: AttachMode) {
    let mut tun = Tun::create();
    let mut fastpath = Fastpath::attach_with(IFACE, mode).expect("attach to wwan0");
    assert_eq!(fastpath.interface(), IFACE);
    assert_eq!(fastpath.attach_mode(), mode);
    let ai_v4 = SocketAddr::new(PEER_V4.into(), AI_PORT);
    let ai_v6 = SocketAddr::new(PEER_V6.into(), AI_PORT);
    fastpath.set_ai_endpoints(&[ai_v4, ai_v6]).unwrap();

    let socket_v4 = UdpSocket::bind((DEVICE_V4, 0)).unwrap();
    let socket_v6 = UdpSocket::bind((DEVICE_V6, 0)).unwrap();
    for _ in 0..3 {
        send(&socket_v4, ai_v4, &[1; 100]);
    }
    send(&socket_v6, ai_v6, &[2; 300]);
    for _ in 0..2 {
        send(&socket_v4, SocketAddr::new(PEER_V4.into(), OTHER_PORT), &[3; 50]);
    }
    send(&socket_v6, SocketAddr::new(PEER_V6.into(), OTHER_PORT), &[4; 10]);

    // Downlink: a packet from the AI endpoint and one from elsewhere, both to a bound port so that
    // no ICMP error goes back out.
    let _receiver = UdpSocket::bind((DEVICE_V4, 5555)).unwrap();
    let from_ai = udp_v4(ai_v4, SocketAddr::new(DEVICE_V4.into(), 5555), &[5; 700]);
    let from_other = udp_v4(
        SocketAddr::new(PEER_V4.into(), OTHER_PORT),
        SocketAddr::new(DEVICE_V4.into(), 5555),
        &[6; 20],
    );
    // And two cut inside their IP header, which only a raw-IP device hands up like this.
    let cut_v4 = from_ai[..10].to_vec();
    let cut_v6 = [0x60, 0, 0, 0, 0, 8, 17, 64, 0xfd, 0];
    for packet in [&from_ai[..], &from_other, &cut_v4, &cut_v6] {
        tun.receive(packet);
    }

    let (sent, stats) = settled(&fastpath, &mut tun);
    let ours = |port| {
        sent.iter()
            .filter(move |packet| udp_destination(packet).is_some_and(|to| to.port() == port))
    };
    assert_eq!(
        (ours(AI_PORT).count(), ours(OTHER_PORT).count()),
        (4, 3),
        "what was sent went out through wwan0"
    );
    assert_eq!(stats.egress_bytes, total_len(&sent), "{stats:?}");
    assert_eq!(
        (stats.ingress_packets, stats.ingress_bytes),
        (
            4,
            (from_ai.len() + from_other.len() + cut_v4.len() + cut_v6.len()) as u64
        ),
        "{stats:?}"
    );
    assert_eq!(
        (stats.ai_packets, stats.ai_bytes),
        (5, total_len(ours(AI_PORT)) + from_ai.len() as u64),
        "{stats:?}"
    );
    let to = |endpoint: SocketAddr| {
        sent.iter()
            .filter(move |packet| udp_destination(packet) == Some(endpoint))
    };
    let by_endpoint: Vec<_> = fastpath
        .endpoint_statistics()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.destination.to_string(),
                e.egress_packets,
                e.egress_bytes,
                e.ingress_packets,
                e.ingress_bytes,
            )
        })
        .collect();
    assert_eq!(
        by_endpoint,
        [
            (ai_v4.to_string(), 3, total_len(to(ai_v4)), 1, from_ai.len() as u64),
            (ai_v6.to_string(), 1, total_len(to(ai_v6)), 0, 0),
        ]
    );
    drop(fastpath);
    drop(tun);
}

#[test]
fn counts_real_traffic_with_tcx() {
    if !privileged() || !has_tcx() {
        return;
    }
    in_network_namespace(|| counts_real_traffic(AttachMode::Tcx));
}

#[test]
fn counts_real_traffic_with_clsact() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| counts_real_traffic(AttachMode::Clsact));
}

#[test]
fn tcx_links_go_with_the_fastpath() {
    if !privileged() || !has_tcx() {
        return;
    }
    in_network_namespace(|| {
        let _tun = Tun::create();
        let fastpath = Fastpath::attach(IFACE).unwrap();
        assert_eq!(fastpath.attach_mode(), AttachMode::Tcx);
        assert_eq!(tcx_programs(TcAttachType::Egress), ["aiesim_egress"]);
        assert_eq!(tcx_programs(TcAttachType::Ingress), ["aiesim_ingress"]);
        assert!(!run("tc", &["qdisc", "show", "dev", IFACE]).contains("clsact"));
        drop(fastpath);
        assert!(tcx_programs(TcAttachType::Egress).is_empty());
        assert!(tcx_programs(TcAttachType::Ingress).is_empty());
    });
}

#[test]
fn clsact_qdisc_and_filters_go_with_the_fastpath() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let _tun = Tun::create();
        let fastpath = Fastpath::attach_with(IFACE, AttachMode::Clsact).unwrap();
        assert!(run("tc", &["qdisc", "show", "dev", IFACE]).contains("clsact"));
        for hook in ["egress", "ingress"] {
            let filters = run("tc", &["filter", "show", "dev", IFACE, hook]);
            assert!(filters.contains(&format!("aiesim_{hook}")), "{filters}");
        }
        fastpath.detach().expect("detach");
        assert!(!run("tc", &["qdisc", "show", "dev", IFACE]).contains("clsact"));
    });
}

#[test]
fn a_clsact_qdisc_that_was_there_stays() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let _tun = Tun::create();
        run("tc", &["qdisc", "add", "dev", IFACE, "clsact"]);
        let fastpath = Fastpath::attach_with(IFACE, AttachMode::Clsact).unwrap();
        drop(fastpath);
        assert!(run("tc", &["qdisc", "show", "dev", IFACE]).contains("clsact"));
        for hook in ["egress", "ingress"] {
            assert_eq!(run("tc", &["filter", "show", "dev", IFACE, hook]), "");
        }
    });
}

#[test]
fn ai_packets_reach_the_htb_class_named_by_their_priority() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let _tun = Tun::create();
        run(
            "tc",
            &[
                "qdisc", "replace", "dev", IFACE, "root", "handle", "1:", "htb", "default", "20",
            ],
        );
        for class in ["1:10", "1:20"] {
            run(
                "tc",
                &[
                    "class", "add", "dev", IFACE, "parent", "1:", "classid", class, "htb", "rate", "100mbit",
                ],
            );
        }
        let mut fastpath = Fastpath::attach(IFACE).unwrap();
        let ai = SocketAddr::new(PEER_V4.into(), AI_PORT);
        fastpath.set_ai_endpoints(&[ai]).unwrap();
        fastpath.set_ai_priority(0x0001_0010).unwrap();

        let socket = UdpSocket::bind((DEVICE_V4, 0)).unwrap();
        for _ in 0..4 {
            send(&socket, ai, &[1; 64]);
        }
        send(&socket, SocketAddr::new(PEER_V4.into(), OTHER_PORT), &[2; 64]);

        let classes = run("tc", &["-s", "class", "show", "dev", IFACE]);
        let sent_by = |class: &str| {
            let stats = classes
                .split("class htb ")
                .find(|block| block.starts_with(class))
                .unwrap_or_else(|| panic!("no class {class} in {classes}"));
            stats
                .split_once(" pkt")
                .and_then(|(before, _)| before.rsplit(' ').next())
                .and_then(|packets| packets.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no packet count for {class} in {classes}"))
        };
        assert_eq!((sent_by("1:10 "), sent_by("1:20 ")), (4, 1), "{classes}");
    });
}

#[test]
fn attaching_to_a_missing_interface_says_so() {
    if !privileged() {
        return;
    }
    in_network_namespace(|| {
        let error = Fastpath::attach(IFACE).err().expect("no wwan0 in a new namespace");
        assert!(matches!(error, FastpathError::Attach { .. }), "{error:?}");
        let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("wwan0"), "{chain}");
    });
}
