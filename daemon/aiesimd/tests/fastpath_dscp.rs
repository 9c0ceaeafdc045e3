//! DSCP marking seen where the network sees it: tshark captures on the far end of a veth pair
//! (in a peer network namespace) while the device sends AI and other UDP over IPv4 and IPv6.
//! The peer's echo answering the IPv4 AI request proves the rewritten header checksum is right:
//! the peer's kernel drops an IPv4 packet whose checksum does not verify.

#[path = "support/uplink.rs"]
mod uplink;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsFd as _,
    process::{Command, Stdio},
};

use aiesimd::fastpath::Fastpath;
use nix::sys::socket::{setsockopt, sockopt};
use uplink::{AI, DEVICE, IFACE, PATIENCE, PEER, Uplink, in_network_namespace, run};

const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 2);
/// AF41 (RFC 2597): class 4, low drop precedence.
const AF41: u8 = 34;
/// What the sockets ask for: CS1 with ECT(0), so ECN has something to keep.
const SENT_TOS: u8 = 8 << 2 | 0b10;
const OTHER_PORT: u16 = 9100;

fn privileged() -> bool {
    nix::unistd::geteuid().is_root() || !aiesim_skip::skip("the DSCP test needs root (BPF, TC and network namespaces)")
}

fn socket_v4() -> UdpSocket {
    let socket = UdpSocket::bind((DEVICE, 0)).unwrap();
    setsockopt(&socket.as_fd(), sockopt::Ipv4Tos, &i32::from(SENT_TOS)).unwrap();
    socket
}

fn socket_v6() -> UdpSocket {
    let socket = UdpSocket::bind("[fd00:201::1]:0").unwrap();
    setsockopt(&socket.as_fd(), sockopt::Ipv6TClass, &i32::from(SENT_TOS)).unwrap();
    socket
}

#[test]
fn ai_packets_leave_with_the_configured_dscp_and_others_untouched() {
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/usr/bin/tshark").exists() {
        aiesim_skip::skip("tshark is not installed (apt-get install tshark, or cargo xtask setup)");
        return;
    }
    in_network_namespace(|| {
        let uplink = Uplink::create();
        run("ip", &["-6", "addr", "add", "fd00:201::1/64", "dev", IFACE, "nodad"]);
        uplink.in_peer(|| run("ip", &["-6", "addr", "add", "fd00:201::2/64", "dev", "veth1", "nodad"]));
        let ai_v6 = SocketAddr::new(PEER_V6.into(), AI.port());
        let mut fastpath = Fastpath::attach(IFACE).expect("attach to veth0");
        fastpath.set_ai_endpoints(&[AI, ai_v6]).unwrap();
        fastpath.set_ai_dscp(Some(AF41)).unwrap();

        // Only what the device sends (the echo answers from port 8443); four packets, then it
        // stops by itself. The autostop only guards against a hang.
        let filter = format!("udp and (dst port {} or dst port {OTHER_PORT})", AI.port());
        let mut capture = uplink.in_peer(|| {
            Command::new("tshark")
                .args(["-i", "veth1", "-l", "-n", "-c", "4", "-a"])
                .arg(format!("duration:{}", PATIENCE.as_secs()))
                .args(["-f", &filter, "-T", "fields", "-e", "udp.dstport"])
                .args(["-e", "ip.dsfield.dscp", "-e", "ip.dsfield.ecn"])
                .args(["-e", "ipv6.tclass.dscp", "-e", "ipv6.tclass.ecn"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run tshark")
        });
        // tshark says on stderr when dumpcap has started capturing ("Capturing on" comes before).
        let mut stderr = BufReader::new(capture.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("Capture started") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "tshark did not start capturing"
            );
        }

        let v4 = socket_v4();
        v4.set_read_timeout(Some(PATIENCE)).unwrap();
        v4.send_to(&[1; 64], AI).unwrap();
        let mut answer = [0u8; 128];
        let (len, from) = v4
            .recv_from(&mut answer)
            .expect("the peer answers the marked IPv4 request");
        assert_eq!((len, from), (64, AI));
        v4.send_to(&[2; 64], SocketAddr::new(PEER.into(), OTHER_PORT)).unwrap();
        let v6 = socket_v6();
        v6.send_to(&[3; 64], ai_v6).unwrap();
        v6.send_to(&[4; 64], SocketAddr::new(PEER_V6.into(), OTHER_PORT))
            .unwrap();

        let mut output = String::new();
        capture.stdout.take().unwrap().read_to_string(&mut output).unwrap();
        let status = capture.wait().unwrap();
        assert!(status.success(), "tshark: {status}");
        let mut seen: Vec<(String, String)> = output
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                assert_eq!(fields.len(), 5, "{line:?}");
                // The IPv4 fields or the IPv6 ones are set, never both.
                let (dscp, ecn) = if fields[1].is_empty() {
                    (fields[3], fields[4])
                } else {
                    (fields[1], fields[2])
                };
                (fields[0].to_owned(), format!("{dscp}/{ecn}"))
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [("8443", "34/2"), ("8443", "34/2"), ("9100", "8/2"), ("9100", "8/2")]
                .map(|(port, ds)| (port.to_owned(), ds.to_owned())),
            "AI packets marked AF41 on IPv4 and IPv6 with their ECN kept, others as sent"
        );
    });
}
