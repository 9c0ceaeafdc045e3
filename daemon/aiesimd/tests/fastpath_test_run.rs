//! The classifier on synthetic packets, through the kernel's `BPF_PROG_TEST_RUN`.
//!
//! The kernel builds every test skb as an Ethernet frame, so the frames here carry a 14-byte
//! Ethernet header; the classifier reads from the network header and must not care.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use aiesim_fastpath_common::Destination;
use aiesimd::fastpath::{
    AiDestination, Classifier, DEFAULT_AI_PRIORITY, EndpointStatistics, Statistics, TestProgram, UnlistedStatistics,
};

const TC_ACT_UNSPEC: i32 = -1;
const TCP: u8 = 6;
const UDP: u8 = 17;

const DEVICE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const AI_V4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const DEVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const AI_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 1);
const AI_PORT: u16 = 8443;

/// Whether the kernel tests can run; in CI, not being able to is a failure.
fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    !aiesim_skip::skip("the fast-path tests need root (BPF and TC)")
}

fn classifier() -> Classifier {
    let mut classifier = Classifier::load().expect("load the classifier");
    classifier
        .set_ai_endpoints(&[
            SocketAddr::new(AI_V4.into(), AI_PORT),
            SocketAddr::new(AI_V6.into(), AI_PORT),
        ])
        .expect("configure the AI endpoints");
    classifier
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An L4 header with the ports where TCP and UDP both have them, padded to its real size.
fn l4(protocol: u8, src_port: u16, dst_port: u16, payload_len: usize) -> Vec<u8> {
    let header_len = if protocol == TCP { 20 } else { 8 };
    let mut segment = vec![0; header_len + payload_len];
    segment[..2].copy_from_slice(&src_port.to_be_bytes());
    segment[2..4].copy_from_slice(&dst_port.to_be_bytes());
    segment
}

fn ipv4_with(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, options: &[u8], fragment: u16, l4: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = u16::try_from(header_len + l4.len()).unwrap();
    let mut packet = vec![0x40 | u8::try_from(header_len / 4).unwrap(), 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    packet.extend_from_slice(&fragment.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(options);
    packet.extend_from_slice(l4);
    ethernet(0x0800, &packet)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, protocol, &[], 0, l4)
}

/// IPv6 with `next_header` and `rest` (extension headers and/or L4) after the fixed header.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, rest: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(&[next_header, 64]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(rest);
    ethernet(0x86dd, &packet)
}

/// Runs `frame` once through `program`, checks it is passed on, and returns the priority it got.
fn run(classifier: &mut Classifier, program: TestProgram, frame: &[u8]) -> u32 {
    let outcome = classifier.test_run(program, frame, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(outcome.verdict, TC_ACT_UNSPEC, "{program:?} must pass every packet on");
    outcome.priority
}

fn len<'a>(frames: impl IntoIterator<Item = &'a Vec<u8>>) -> u64 {
    frames.into_iter().map(|frame| frame.len() as u64).sum()
}

#[test]
fn egress_ai_traffic_is_counted_and_prioritised() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let ai = [
        ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 100)),
        ipv4(DEVICE_V4, AI_V4, UDP, &l4(UDP, 40000, AI_PORT, 1200)),
        ipv6(DEVICE_V6, AI_V6, TCP, &l4(TCP, 40000, AI_PORT, 0)),
        ipv6(DEVICE_V6, AI_V6, UDP, &l4(UDP, 40000, AI_PORT, 50)),
    ];
    let other = [
        // Right address, wrong port; right port, wrong address; the AI endpoint as *source*.
        ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, 443, 10)),
        ipv4(DEVICE_V4, Ipv4Addr::new(10, 9, 0, 2), UDP, &l4(UDP, 40000, AI_PORT, 10)),
        ipv6(AI_V6, DEVICE_V6, UDP, &l4(UDP, AI_PORT, 40000, 10)),
        // ICMP has no ports.
        ipv4(DEVICE_V4, AI_V4, 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for frame in &ai {
        assert_eq!(run(&mut classifier, TestProgram::Egress, frame), DEFAULT_AI_PRIORITY);
    }
    for frame in &other {
        assert_eq!(run(&mut classifier, TestProgram::Egress, frame), 0);
    }

    assert_eq!(
        classifier.statistics().unwrap(),
        Statistics {
            egress_packets: 8,
            egress_bytes: len(ai.iter().chain(&other)),
            ingress_packets: 0,
            ingress_bytes: 0,
            ai_packets: 4,
            ai_bytes: len(&ai),
        }
    );
}

#[test]
fn ingress_ai_traffic_is_matched_on_its_source() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let ai = [
        ipv4(AI_V4, DEVICE_V4, TCP, &l4(TCP, AI_PORT, 40000, 1000)),
        ipv6(AI_V6, DEVICE_V6, UDP, &l4(UDP, AI_PORT, 40000, 10)),
    ];
    // Addressed *to* the endpoint, as seen on ingress: not traffic from it.
    let other = ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 10));
    for frame in &ai {
        // Priority only matters on the way out; ingress leaves it alone.
        assert_eq!(run(&mut classifier, TestProgram::Ingress, frame), 0);
    }
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &other), 0);

    let stats = classifier.statistics().unwrap();
    assert_eq!(stats.ingress_packets, 3);
    assert_eq!(stats.ingress_bytes, len(ai.iter().chain([&other])));
    assert_eq!((stats.ai_packets, stats.ai_bytes), (2, len(&ai)));
    assert_eq!((stats.egress_packets, stats.egress_bytes), (0, 0));
}

#[test]
fn headers_beyond_the_basic_ones_are_followed() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    // IPv4 with a 4-byte option (IHL 6).
    let with_options = ipv4_with(DEVICE_V4, AI_V4, UDP, &[1, 1, 1, 0], 0, &l4(UDP, 1, AI_PORT, 0));
    // IPv6 hop-by-hop (8 bytes) then a first fragment (offset 0, more fragments) then UDP.
    let mut rest = vec![44, 0, 1, 4, 0, 0, 0, 0];
    rest.extend_from_slice(&[UDP, 0, 0, 1, 0, 0, 0, 7]);
    rest.extend_from_slice(&l4(UDP, 1, AI_PORT, 0));
    let extended = ipv6(DEVICE_V6, AI_V6, 0, &rest);
    for frame in [&with_options, &extended] {
        assert_eq!(run(&mut classifier, TestProgram::Egress, frame), DEFAULT_AI_PRIORITY);
    }
    assert_eq!(classifier.statistics().unwrap().ai_packets, 2);
}

#[test]
fn later_fragments_non_ip_and_truncated_packets_pass_and_are_not_ai() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let udp = l4(UDP, 1, AI_PORT, 16);
    let mut ipv6_later_fragment = vec![UDP, 0, 0, 0x10, 0, 0, 0, 7];
    ipv6_later_fragment.extend_from_slice(&udp);
    let ipv4_full = ipv4(DEVICE_V4, AI_V4, UDP, &udp);
    let ipv6_full = ipv6(DEVICE_V6, AI_V6, UDP, &udp);
    let frames = [
        // Later fragments: bytes where the ports would be are payload.
        ipv4_with(DEVICE_V4, AI_V4, UDP, &[], 0x0002, &udp),
        ipv6(DEVICE_V6, AI_V6, 44, &ipv6_later_fragment),
        // ARP. (The kernel refuses to test an IP frame cut inside the IP header; the TUN test
        // sends such packets for real.)
        ethernet(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]),
        // Cut inside the ports.
        ipv4_full[..14 + 20 + 3].to_vec(),
        ipv6_full[..14 + 40 + 2].to_vec(),
        // An IHL of 15 claims 60 header bytes: the ports would lie past the end.
        {
            let mut long_ihl = ipv4_full.clone();
            long_ihl[14] = 0x4f;
            long_ihl
        },
        // EtherType IPv4 carrying an IPv6 header, and an IHL below the minimum.
        ethernet(0x0800, &ipv6_full[14..]),
        {
            let mut bad_ihl = ipv4_full.clone();
            bad_ihl[14] = 0x44;
            bad_ihl
        },
    ];
    for frame in &frames {
        assert_eq!(run(&mut classifier, TestProgram::Egress, frame), 0, "{frame:02x?}");
    }
    let stats = classifier.statistics().unwrap();
    assert_eq!(stats.egress_packets, frames.len() as u64, "every packet is counted");
    assert_eq!(stats.egress_bytes, len(&frames));
    assert_eq!((stats.ai_packets, stats.ai_bytes), (0, 0));
}

#[test]
fn replacing_the_endpoints_takes_effect_and_priority_is_configurable() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let to_old = ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 0));
    let new_endpoint = SocketAddr::new(Ipv4Addr::new(10, 9, 0, 7).into(), 443);
    let to_new = ipv4(DEVICE_V4, Ipv4Addr::new(10, 9, 0, 7), UDP, &l4(UDP, 40000, 443, 0));

    classifier.set_ai_endpoints(&[new_endpoint]).unwrap();
    classifier.set_ai_priority(0x0001_0010).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &to_old), 0);
    assert_eq!(run(&mut classifier, TestProgram::Egress, &to_new), 0x0001_0010);

    classifier.set_ai_priority(0).unwrap();
    assert_eq!(
        run(&mut classifier, TestProgram::Egress, &to_new),
        0,
        "0 leaves priority alone"
    );

    classifier.set_ai_endpoints(&[]).unwrap();
    classifier.set_ai_priority(DEFAULT_AI_PRIORITY).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &to_new), 0);
    assert_eq!(classifier.statistics().unwrap().ai_packets, 2);

    let too_many: Vec<_> = (0..=256u16).map(|port| SocketAddr::new(AI_V4.into(), port)).collect();
    let error = classifier.set_ai_endpoints(&too_many).unwrap_err();
    assert!(error.to_string().contains("257 AI destinations"), "{error}");
}

/// An egress frame from the device to `remote`.
fn towards(remote: SocketAddr, protocol: u8) -> Vec<u8> {
    let segment = l4(protocol, 40000, remote.port(), 0);
    match remote {
        SocketAddr::V4(v4) => ipv4(DEVICE_V4, *v4.ip(), protocol, &segment),
        SocketAddr::V6(v6) => ipv6(DEVICE_V6, *v6.ip(), protocol, &segment),
    }
}

#[test]
fn every_configured_endpoint_matches_and_only_those() {
    if !privileged() {
        return;
    }
    let mut classifier = Classifier::load().unwrap();
    let endpoints: Vec<SocketAddr> = (0..256u16)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            let addr = if i % 2 == 0 {
                Ipv4Addr::new(10, 9, hi, lo).into()
            } else {
                Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, i).into()
            };
            SocketAddr::new(addr, 443 + i)
        })
        .collect();
    let is_ai = |classifier: &mut Classifier, remote: SocketAddr, protocol| {
        run(classifier, TestProgram::Egress, &towards(remote, protocol)) == DEFAULT_AI_PRIORITY
    };

    classifier.set_ai_endpoints(&endpoints).unwrap();
    for &endpoint in &endpoints {
        assert!(is_ai(&mut classifier, endpoint, TCP), "{endpoint}");
        assert!(is_ai(&mut classifier, endpoint, UDP), "{endpoint}");
        let neighbour = SocketAddr::new(endpoint.ip(), endpoint.port() + 1000);
        assert!(!is_ai(&mut classifier, neighbour, TCP), "{neighbour}");
    }

    let (dropped, kept) = endpoints.split_at(128);
    classifier.set_ai_endpoints(kept).unwrap();
    for &endpoint in dropped {
        assert!(!is_ai(&mut classifier, endpoint, TCP), "{endpoint} was removed");
    }
    for &endpoint in kept {
        assert!(is_ai(&mut classifier, endpoint, UDP), "{endpoint}");
    }
    assert_eq!(classifier.statistics().unwrap().ai_packets, 2 * 256 + 128);
}

#[test]
fn repeated_runs_count_every_run() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let frame = ipv4(DEVICE_V4, AI_V4, UDP, &l4(UDP, 40000, AI_PORT, 100));
    let outcome = classifier.test_run(TestProgram::Egress, &frame, 1000).unwrap();
    assert_eq!(outcome.verdict, TC_ACT_UNSPEC);
    let stats = classifier.statistics().unwrap();
    assert_eq!((stats.egress_packets, stats.ai_packets), (1000, 1000));
    assert_eq!(stats.egress_bytes, 1000 * frame.len() as u64);
}

fn prefix(addr: &str, prefix_len: u8, port: u16) -> AiDestination {
    AiDestination {
        addr: addr.parse().unwrap(),
        prefix_len,
        port,
    }
}

#[test]
fn prefixes_match_every_address_in_them_on_their_port_only() {
    if !privileged() {
        return;
    }
    let mut classifier = Classifier::load().unwrap();
    classifier
        .set_ai_destinations(&[
            prefix("10.9.0.0", 16, 443),
            prefix("fd00:9::", 32, 443),
            // Shorter than the filter's /16: it lists the 256 /16s inside.
            prefix("172.16.0.0", 8, 8443),
            // A host inside a prefix, on another port: both match, each on its own port.
            AiDestination::host(SocketAddr::new(Ipv4Addr::new(10, 9, 0, 1).into(), 8443)),
        ])
        .unwrap();
    let is_ai = |classifier: &mut Classifier, remote: &str, protocol| {
        let remote: SocketAddr = remote.parse().unwrap();
        run(classifier, TestProgram::Egress, &towards(remote, protocol)) == DEFAULT_AI_PRIORITY
    };
    for remote in [
        "10.9.0.0:443",
        "10.9.255.255:443",
        "[fd00:9::1]:443",
        "[fd00:9:ffff::7]:443",
        "172.0.0.1:8443",
        "172.255.1.2:8443",
        "10.9.0.1:8443",
    ] {
        assert!(is_ai(&mut classifier, remote, TCP), "{remote}");
        assert!(is_ai(&mut classifier, remote, UDP), "{remote}");
    }
    for remote in [
        "10.8.255.255:443",
        "10.10.0.0:443",
        "10.9.0.2:8443",
        "10.9.1.1:80",
        "[fd00:8::1]:443",
        "[fd00:9::1]:444",
        "173.0.0.1:8443",
        "172.1.1.1:443",
    ] {
        assert!(!is_ai(&mut classifier, remote, TCP), "{remote}");
    }
    // A prefix too short for the filter to list opens it: still exact, through the trie alone.
    classifier.set_ai_destinations(&[prefix("0.0.0.0", 0, 443)]).unwrap();
    assert!(is_ai(&mut classifier, "198.51.100.7:443", TCP));
    assert!(!is_ai(&mut classifier, "198.51.100.7:80", TCP));
    assert!(
        !is_ai(&mut classifier, "[fd00:9::1]:443", TCP),
        "an IPv4 prefix holds no IPv6"
    );

    let error = classifier
        .set_ai_destinations(&[prefix("10.0.0.0", 33, 443)])
        .unwrap_err();
    assert!(error.to_string().contains("prefix length 33"), "{error}");
}

#[test]
fn traffic_is_counted_per_endpoint_and_direction() {
    if !privileged() {
        return;
    }
    let mut classifier = Classifier::load().unwrap();
    let host = AiDestination::host(SocketAddr::new(AI_V4.into(), AI_PORT));
    let v6_prefix = prefix("fd00:9::", 32, AI_PORT);
    classifier.set_ai_destinations(&[host, v6_prefix]).unwrap();

    let out_v4 = ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 100));
    let in_v4 = ipv4(AI_V4, DEVICE_V4, TCP, &l4(TCP, AI_PORT, 40000, 1000));
    let out_v6 = ipv6(DEVICE_V6, AI_V6, UDP, &l4(UDP, 40000, AI_PORT, 10));
    let other = ipv4(DEVICE_V4, Ipv4Addr::new(10, 1, 2, 3), TCP, &l4(TCP, 40000, AI_PORT, 10));
    for frame in [&out_v4, &out_v4, &out_v6, &other] {
        run(&mut classifier, TestProgram::Egress, frame);
    }
    run(&mut classifier, TestProgram::Ingress, &in_v4);

    let by_endpoint = classifier.endpoint_statistics().unwrap();
    let size = |frame: &Vec<u8>| frame.len() as u64;
    assert_eq!(
        by_endpoint,
        [
            EndpointStatistics {
                destination: host,
                egress_packets: 2,
                egress_bytes: 2 * size(&out_v4),
                ingress_packets: 1,
                ingress_bytes: size(&in_v4),
            },
            EndpointStatistics {
                destination: v6_prefix,
                egress_packets: 1,
                egress_bytes: size(&out_v6),
                ingress_packets: 0,
                ingress_bytes: 0,
            },
        ]
    );
    let totals = classifier.statistics().unwrap();
    assert_eq!(
        (totals.ai_packets, totals.egress_packets, totals.ingress_packets),
        (4, 4, 1)
    );

    // The v4 host goes and a new endpoint comes: it starts from zero, in a slot no key of the
    // old one still points at; the v6 prefix keeps its figures.
    let newcomer = AiDestination::host(SocketAddr::new(Ipv4Addr::new(10, 9, 0, 7).into(), 443));
    classifier.set_ai_destinations(&[v6_prefix, newcomer]).unwrap();
    run(&mut classifier, TestProgram::Egress, &out_v4);
    let by_endpoint = classifier.endpoint_statistics().unwrap();
    assert_eq!(by_endpoint.len(), 2);
    assert!(by_endpoint.iter().all(|e| e.destination != host));
    let find = |d: AiDestination| *by_endpoint.iter().find(|e| e.destination == d).unwrap();
    assert_eq!(find(v6_prefix).egress_packets, 1);
    assert_eq!((find(newcomer).egress_packets, find(newcomer).ingress_packets), (0, 0));
    // Totals since loading keep what the removed endpoint carried.
    assert_eq!(classifier.statistics().unwrap().ai_packets, 4);

    // Once its old keys are gone, a slot is reused: its figures start from zero again.
    let third = AiDestination::host(SocketAddr::new(Ipv4Addr::new(10, 9, 0, 8).into(), 443));
    classifier.set_ai_destinations(&[v6_prefix, newcomer, third]).unwrap();
    let to_third = ipv4(DEVICE_V4, Ipv4Addr::new(10, 9, 0, 8), TCP, &l4(TCP, 40000, 443, 0));
    run(&mut classifier, TestProgram::Egress, &to_third);
    let by_endpoint = classifier.endpoint_statistics().unwrap();
    let third_stats = by_endpoint.iter().find(|e| e.destination == third).unwrap();
    assert_eq!(
        (third_stats.egress_packets, third_stats.egress_bytes),
        (1, size(&to_third))
    );
}

#[test]
fn addresses_sharing_an_exact_slot_are_each_found_and_counted_apart() {
    if !privileged() {
        return;
    }
    let slot = |addr: Ipv4Addr, port: u16| {
        Destination::new(Destination::ipv4_mapped(u32::from_ne_bytes(addr.octets())), port, TCP).exact_slot()
    };
    // Another address and port whose TCP key hashes to the first one's slot: it goes to the trie.
    let neighbour_addr = Ipv4Addr::new(10, 9, 0, 2);
    let port = (1..=u16::MAX)
        .find(|&port| port != AI_PORT && slot(neighbour_addr, port) == slot(AI_V4, AI_PORT))
        .expect("4096 slots, 65535 ports");
    let first = SocketAddr::new(AI_V4.into(), AI_PORT);
    let neighbour = SocketAddr::new(neighbour_addr.into(), port);
    let mut classifier = Classifier::load().unwrap();
    classifier.set_ai_endpoints(&[first, neighbour]).unwrap();
    for remote in [first, neighbour, first, neighbour] {
        assert_eq!(
            run(&mut classifier, TestProgram::Egress, &towards(remote, TCP)),
            DEFAULT_AI_PRIORITY,
            "{remote}"
        );
    }
    // Neither stands in for the other.
    let crossed = SocketAddr::new(AI_V4.into(), port);
    assert_eq!(run(&mut classifier, TestProgram::Egress, &towards(crossed, TCP)), 0);
    let by_endpoint = classifier.endpoint_statistics().unwrap();
    for remote in [first, neighbour] {
        let stats = by_endpoint
            .iter()
            .find(|e| e.destination == AiDestination::host(remote))
            .unwrap();
        assert_eq!(stats.egress_packets, 2, "{remote}");
    }
    // The one left takes the slot.
    classifier.set_ai_endpoints(&[neighbour]).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &towards(first, TCP)), 0);
    assert_eq!(
        run(&mut classifier, TestProgram::Egress, &towards(neighbour, TCP)),
        DEFAULT_AI_PRIORITY
    );
}

/// AF41 (RFC 2597): class 4, low drop precedence.
const AF41: u8 = 34;
/// EF (RFC 3246).
const EF: u8 = 46;
const ECN_CE: u8 = 0b11;
const ECN_ECT1: u8 = 0b01;

/// The RFC 1071 checksum of an IPv4 header, its checksum field taken as zero.
fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .enumerate()
        .filter(|&(i, _)| i != 5)
        .map(|(_, word)| u32::from(u16::from_be_bytes([word[0], word[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = sum as u16;
    !folded
}

/// An IPv4 frame's header, after the Ethernet header.
fn ipv4_header(frame: &[u8]) -> &[u8] {
    let header_len = usize::from(frame[14] & 0x0f) * 4;
    &frame[14..14 + header_len]
}

/// `frame` (IPv4) with a TOS byte of `dscp` and `ecn` and a correct header checksum.
fn with_tos(mut frame: Vec<u8>, dscp: u8, ecn: u8) -> Vec<u8> {
    frame[15] = dscp << 2 | ecn;
    let checksum = ipv4_header_checksum(ipv4_header(&frame));
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// `frame` (IPv6) with a traffic class of `dscp` and `ecn` and a flow label of `flow`.
fn with_traffic_class(mut frame: Vec<u8>, dscp: u8, ecn: u8, flow: u32) -> Vec<u8> {
    let word = 6 << 28 | u32::from(dscp << 2 | ecn) << 20 | (flow & 0xf_ffff);
    frame[14..18].copy_from_slice(&word.to_be_bytes());
    frame
}

/// The DSCP and ECN of an IPv4 or IPv6 frame.
fn ds_field(frame: &[u8]) -> (u8, u8) {
    let class = match frame[14] >> 4 {
        4 => frame[15],
        6 => (frame[14] << 4) | (frame[15] >> 4),
        version => panic!("IP version {version}"),
    };
    (class >> 2, class & 0b11)
}

/// Runs `frame` once through `program` and returns the packet as the program left it.
fn run_packet(classifier: &mut Classifier, program: TestProgram, frame: &[u8]) -> Vec<u8> {
    let outcome = classifier.test_run(program, frame, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(outcome.verdict, TC_ACT_UNSPEC, "{program:?} must pass every packet on");
    assert_eq!(outcome.packet.len(), frame.len(), "the packet keeps its length");
    outcome.packet
}

/// The bytes where two frames differ.
fn changed(before: &[u8], after: &[u8]) -> Vec<usize> {
    (0..before.len()).filter(|&i| before[i] != after[i]).collect()
}

#[test]
fn egress_ai_packets_get_the_configured_dscp_with_ecn_and_checksum_kept_right() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    classifier.set_ai_dscp(Some(AF41)).unwrap();

    let v4 = [
        with_tos(ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 100)), 0, ECN_CE),
        with_tos(ipv4(DEVICE_V4, AI_V4, UDP, &l4(UDP, 40000, AI_PORT, 30)), EF, ECN_ECT1),
        // Options: the header is longer, the DS field and the checksum where they always are.
        with_tos(
            ipv4_with(DEVICE_V4, AI_V4, UDP, &[1, 1, 1, 0], 0, &l4(UDP, 1, AI_PORT, 0)),
            CS1,
            0,
        ),
    ];
    for frame in &v4 {
        let out = run_packet(&mut classifier, TestProgram::Egress, frame);
        let ecn = ds_field(frame).1;
        assert_eq!(ds_field(&out), (AF41, ecn), "{out:02x?}");
        let checksum = u16::from_be_bytes([out[24], out[25]]);
        assert_eq!(checksum, ipv4_header_checksum(ipv4_header(&out)), "{out:02x?}");
        let changed = changed(frame, &out);
        assert!(
            changed.contains(&15) && changed.iter().all(|i| [15, 24, 25].contains(i)),
            "only the TOS and the checksum change: {changed:?}"
        );
    }

    let v6 = [
        with_traffic_class(
            ipv6(DEVICE_V6, AI_V6, TCP, &l4(TCP, 40000, AI_PORT, 0)),
            0,
            ECN_CE,
            0xabcde,
        ),
        with_traffic_class(
            ipv6(DEVICE_V6, AI_V6, UDP, &l4(UDP, 40000, AI_PORT, 50)),
            EF,
            ECN_ECT1,
            1,
        ),
    ];
    for frame in &v6 {
        let out = run_packet(&mut classifier, TestProgram::Egress, frame);
        assert_eq!(ds_field(&out), (AF41, ds_field(frame).1), "{out:02x?}");
        assert_eq!(
            u32::from_be_bytes([out[14], out[15], out[16], out[17]]) & 0xf_ffff,
            u32::from_be_bytes([frame[14], frame[15], frame[16], frame[17]]) & 0xf_ffff,
            "the flow label is kept"
        );
        assert!(changed(frame, &out).iter().all(|&i| i == 14 || i == 15), "{out:02x?}");
    }

    // DSCP 0 (CS0) is a mark too: it clears another one.
    classifier.set_ai_dscp(Some(0)).unwrap();
    let out = run_packet(&mut classifier, TestProgram::Egress, &v4[1]);
    assert_eq!(ds_field(&out), (0, ECN_ECT1));
    assert_eq!(
        u16::from_be_bytes([out[24], out[25]]),
        ipv4_header_checksum(ipv4_header(&out))
    );
    let out = run_packet(&mut classifier, TestProgram::Egress, &v6[1]);
    assert_eq!(ds_field(&out), (0, ECN_ECT1));

    // The priority is given as before, and every packet counted once.
    assert_eq!(run(&mut classifier, TestProgram::Egress, &v4[0]), DEFAULT_AI_PRIORITY);
    assert_eq!(classifier.statistics().unwrap().ai_packets, 8);
}

/// CS1 (RFC 2474 class selector 1).
const CS1: u8 = 8;

#[test]
fn other_packets_ingress_and_an_unset_dscp_leave_headers_alone() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let ai_v4 = with_tos(ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 10)), EF, ECN_CE);
    let ai_v6 = with_traffic_class(
        ipv6(DEVICE_V6, AI_V6, UDP, &l4(UDP, 40000, AI_PORT, 10)),
        CS1,
        ECN_ECT1,
        7,
    );
    let other = [
        with_tos(ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, 443, 10)), CS1, ECN_CE),
        with_tos(
            ipv4(DEVICE_V4, Ipv4Addr::new(10, 9, 0, 2), UDP, &l4(UDP, 40000, AI_PORT, 10)),
            0,
            0,
        ),
        with_traffic_class(ipv6(DEVICE_V6, AI_V6, UDP, &l4(UDP, 40000, 53, 10)), EF, ECN_CE, 3),
        ai_v4.clone(),
        ai_v6.clone(),
    ];
    let ingress = [
        with_tos(ipv4(AI_V4, DEVICE_V4, TCP, &l4(TCP, AI_PORT, 40000, 10)), CS1, ECN_CE),
        with_traffic_class(
            ipv6(AI_V6, DEVICE_V6, UDP, &l4(UDP, AI_PORT, 40000, 10)),
            0,
            ECN_ECT1,
            9,
        ),
    ];

    // Off (the default): AI packets keep their DS field too.
    for dscp in [None, Some(AF41)] {
        classifier.set_ai_dscp(dscp).unwrap();
        let egress_other = if dscp.is_some() { &other[..3] } else { &other[..] };
        for frame in egress_other {
            assert_eq!(
                &run_packet(&mut classifier, TestProgram::Egress, frame),
                frame,
                "{dscp:?}"
            );
        }
        for frame in &ingress {
            assert_eq!(
                &run_packet(&mut classifier, TestProgram::Ingress, frame),
                frame,
                "{dscp:?}"
            );
        }
    }
    // Six of those were AI (both directions with marking off, ingress with it on): recognised,
    // only not marked.
    assert_eq!(classifier.statistics().unwrap().ai_packets, 2 + 2 + 2);
    // An AI packet that already carries the mark is left as it is.
    classifier.set_ai_dscp(Some(EF)).unwrap();
    assert_eq!(run_packet(&mut classifier, TestProgram::Egress, &ai_v4), ai_v4);
    classifier.set_ai_dscp(Some(CS1)).unwrap();
    assert_eq!(run_packet(&mut classifier, TestProgram::Egress, &ai_v6), ai_v6);
}

/// The cgroup v2 id of this process's cgroup: its directory's inode.
fn this_cgroup() -> u64 {
    let mount = aiesimd::identity::cgroup2_root().expect("cgroup v2 is mounted");
    let listing = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = listing
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("in a cgroup v2");
    let dir = mount.join(path.trim_start_matches('/'));
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir).unwrap())
}

#[test]
fn own_sockets_are_marked_by_cgroup_and_their_replies_by_flow() {
    if !privileged() {
        return;
    }
    let mut classifier = classifier();
    let unlisted = Ipv4Addr::new(10, 9, 0, 77);
    let out = ipv4(DEVICE_V4, unlisted, TCP, &l4(TCP, 40000, 443, 100));
    let back = ipv4(unlisted, DEVICE_V4, TCP, &l4(TCP, 443, 40000, 300));
    // The same remote end, another local port: another flow.
    let stranger = ipv4(unlisted, DEVICE_V4, TCP, &l4(TCP, 443, 40001, 300));
    let ai = ipv4(DEVICE_V4, AI_V4, TCP, &l4(TCP, 40000, AI_PORT, 100));

    // Off by default; then a cgroup no socket is in: nothing changes, listed endpoints are AI.
    assert_eq!(classifier.own_cgroup().unwrap(), 0);
    classifier.set_own_cgroup(u64::MAX).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), 0);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(run(&mut classifier, TestProgram::Egress, &ai), DEFAULT_AI_PRIORITY);
    let stats = classifier.statistics().unwrap();
    assert_eq!((stats.ai_packets, stats.ai_bytes), (1, len([&ai])));
    assert_eq!(classifier.unlisted_statistics().unwrap(), UnlistedStatistics::default());

    // The kernel gives each test skb a socket made by the calling process, in its cgroup: with
    // that cgroup set, the unlisted destination is AI, and so are the replies of that flow.
    let own = this_cgroup();
    classifier.set_own_cgroup(own).unwrap();
    assert_eq!(classifier.own_cgroup().unwrap(), own);
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), DEFAULT_AI_PRIORITY);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &stranger), 0);
    assert_eq!(
        classifier.unlisted_statistics().unwrap(),
        UnlistedStatistics {
            egress_packets: 1,
            egress_bytes: len([&out]),
            ingress_packets: 1,
            ingress_bytes: len([&back]),
        }
    );
    let stats = classifier.statistics().unwrap();
    assert_eq!((stats.ai_packets, stats.ai_bytes), (3, len([&ai, &out, &back])));
    assert_eq!(stats.egress_packets + stats.ingress_packets, 6);
    // Listed endpoints keep their own counts.
    assert_eq!(classifier.endpoint_statistics().unwrap()[0].egress_packets, 1);

    // Off again: neither the cgroup nor the remembered flow counts.
    classifier.set_own_cgroup(0).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), 0);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(classifier.unlisted_statistics().unwrap().egress_packets, 1);
}

#[test]
fn a_flow_is_its_own_again_both_ways_when_its_cgroup_is_set_back() {
    if !privileged() {
        return;
    }
    // One CPU for every run: the classifier remembers each CPU's last own flow, and takes that
    // flow as marked for its replies without marking it again.
    let mut one_cpu = nix::sched::CpuSet::new();
    one_cpu.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one_cpu).expect("pin the test to CPU 0");
    let mut classifier = classifier();
    let unlisted = Ipv4Addr::new(203, 0, 113, 7);
    let out = ipv4(DEVICE_V4, unlisted, TCP, &l4(TCP, 40002, 443, 100));
    let back = ipv4(unlisted, DEVICE_V4, TCP, &l4(TCP, 443, 40002, 300));
    let own = this_cgroup();
    let counted = |classifier: &Classifier| {
        let unlisted = classifier.unlisted_statistics().unwrap();
        (unlisted.egress_packets, unlisted.ingress_packets)
    };

    classifier.set_own_cgroup(own).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), DEFAULT_AI_PRIORITY);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(counted(&classifier), (1, 1));

    // Another cgroup's sockets: the flow is nobody's, its marks are cleared.
    classifier.set_own_cgroup(own + 1).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), 0);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(counted(&classifier), (1, 1));

    // Back to this cgroup: the flow's next packet marks it again, so its reply is own too.
    classifier.set_own_cgroup(own).unwrap();
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), DEFAULT_AI_PRIORITY);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(counted(&classifier), (2, 2));
    // And its next packets, the CPU's last own flow now, stay its own both ways.
    assert_eq!(run(&mut classifier, TestProgram::Egress, &out), DEFAULT_AI_PRIORITY);
    assert_eq!(run(&mut classifier, TestProgram::Ingress, &back), 0);
    assert_eq!(counted(&classifier), (3, 3));
}
