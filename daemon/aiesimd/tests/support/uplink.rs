//! A rate-limited uplink in network namespaces, shared by the shaping test and `cargo xtask
//! bench`: the calling thread's namespace is the device, with `veth0` towards a peer namespace
//! that serves an AI echo endpoint (UDP, small request → small answer) and a sink for a bulk TCP
//! upload. Nothing leaves these namespaces; they vanish with the thread and the values here.

#![allow(dead_code, reason = "the test and the bench each use their own part")]

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

pub const IFACE: &str = "veth0";
pub const DEVICE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
pub const AI: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(PEER), 8443);
pub const BULK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(PEER), 9000);
/// Every wait here ends by itself after this long; it guards against hangs, it measures nothing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Runs `f` on a new thread inside a network namespace of its own, which dies with the thread.
pub fn in_network_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare takes no pointers; CLONE_NEWNET is allowed in a multi-threaded process.
                let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(ret, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs a command in the calling thread's network namespace, which its child inherits.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("failed to run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The peer's namespace, the veth pair into it and the two servers there.
pub struct Uplink {
    peer: File,
    echo: Option<JoinHandle<()>>,
    stop_echo: Arc<AtomicBool>,
    /// How long the echo endpoint holds each answer, in µs: the network beyond the uplink.
    answer_delay_us: Arc<AtomicU64>,
    sink: TcpListener,
}

impl Uplink {
    /// Builds it from the calling thread, whose (private) network namespace is the device's.
    pub fn create() -> Self {
        let peer = thread::spawn(|| {
            // SAFETY: as in `in_network_namespace`; the file keeps the namespace alive.
            let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            File::open("/proc/thread-self/ns/net").expect("open the peer namespace")
        })
        .join()
        .expect("create the peer namespace");
        let peer_path = format!("/proc/{}/fd/{}", std::process::id(), peer.as_raw_fd());
        // One segment per packet, as on a cellular uplink: the queue is counted in real packets.
        run(
            "ip",
            &[
                "link",
                "add",
                IFACE,
                "gso_max_segs",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                "veth1",
                "netns",
                &peer_path,
            ],
        );
        run("ip", &["link", "set", "lo", "up"]);
        run("ip", &["addr", "add", "10.201.0.1/24", "dev", IFACE]);
        run("ip", &["link", "set", IFACE, "up"]);

        let (sink, echo) = in_namespace_of(&peer, || {
            run("ip", &["link", "set", "lo", "up"]);
            run("ip", &["addr", "add", "10.201.0.2/24", "dev", "veth1"]);
            run("ip", &["link", "set", "veth1", "up"]);
            (
                TcpListener::bind(BULK).expect("bind the bulk sink"),
                UdpSocket::bind(AI).expect("bind the AI endpoint"),
            )
        });
        echo.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let delay = Arc::new(AtomicU64::new(0));
        let mut uplink = Self {
            peer,
            echo: None,
            stop_echo: Arc::clone(&stop),
            answer_delay_us: Arc::clone(&delay),
            sink,
        };
        uplink.echo = Some(thread::spawn(move || {
            // Wake-ups to the microsecond, not the default 50 µs slack, for the held answers.
            // SAFETY: PR_SET_TIMERSLACK takes a plain number and affects this thread only.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((len, from)) = echo.recv_from(&mut buf) {
                    let hold = Duration::from_micros(delay.load(Ordering::SeqCst));
                    if !hold.is_zero() {
                        thread::sleep(hold);
                    }
                    let _ = echo.send_to(&buf[..len], from);
                }
            }
        }));
        uplink
    }

    /// Makes the echo endpoint hold each answer `delay`: the round trip beyond the uplink, to a
    /// cloud tier (the metro tier is 1 ms each way).
    pub fn set_answer_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.answer_delay_us.store(us, Ordering::SeqCst);
    }

    /// Runs `f` on a thread inside the peer's namespace: sockets it creates live there.
    pub fn in_peer<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace_of(&self.peer, f)
    }

    /// Starts a bulk TCP upload from the device to the peer's sink, as fast as the uplink takes.
    pub fn start_upload(&self) -> Upload {
        let stream = TcpStream::connect_timeout(&BULK, PATIENCE).expect("connect to the sink");
        // Accepted here, so that this upload's reader reads this upload's connection.
        let (mut accepted, _) = self.sink.accept().expect("accept the upload");
        let received = thread::spawn(move || {
            let mut total = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(len) = accepted.read(&mut buf) {
                if len == 0 {
                    break;
                }
                total += len as u64;
            }
            total
        });
        let writer = stream.try_clone().expect("clone the upload stream");
        let sender = thread::spawn(move || {
            let mut writer = writer;
            let chunk = vec![0x5a; 16 * 1024];
            while writer.write_all(&chunk).is_ok() {}
        });
        Upload {
            stream,
            sender: Some(sender),
            received: Some(received),
        }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.stop_echo.store(true, Ordering::SeqCst);
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
    }
}

fn in_namespace_of<T: Send>(namespace: &File, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the peer namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A running bulk upload; [`Upload::stop`] ends it and says how much the sink received.
pub struct Upload {
    stream: TcpStream,
    sender: Option<JoinHandle<()>>,
    received: Option<JoinHandle<u64>>,
}

impl Upload {
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        // Unblocks the writer at once; the sink then sees the connection end.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
        self.received.take().map_or(0, |received| received.join().unwrap_or(0))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A UDP socket on the device for AI request/answer exchanges with the peer's echo endpoint.
pub struct AiClient {
    socket: UdpSocket,
    sequence: u32,
}

impl AiClient {
    pub fn new() -> Self {
        let socket = UdpSocket::bind((DEVICE, 0)).expect("bind the AI client");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Self { socket, sequence: 0 }
    }

    /// One request and its answer; returns the round-trip time.
    pub fn exchange(&mut self) -> Duration {
        self.sequence += 1;
        let mut request = [0u8; 200];
        request[..4].copy_from_slice(&self.sequence.to_be_bytes());
        let started = Instant::now();
        self.socket.send_to(&request, AI).expect("send an AI request");
        let mut answer = [0u8; 2048];
        loop {
            let (len, _) = self
                .socket
                .recv_from(&mut answer)
                .expect("an AI answer within the patience");
            // An answer to an earlier request that timed out is not this one's.
            if len == request.len() && answer[..4] == request[..4] {
                return started.elapsed();
            }
        }
    }
}

/// One HTB class's counters, read with `tc -s class show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub bytes: u64,
    pub packets: u64,
    /// Packets waiting in the class's queue.
    pub queued: u64,
}

/// The counters of HTB class `handle` (e.g. `ae51:10`) on [`IFACE`].
pub fn class_stats(handle: &str) -> ClassStats {
    let text = run("tc", &["-s", "class", "show", "dev", IFACE]);
    parse_class_stats(&text, handle).unwrap_or_else(|| panic!("no class {handle} in:\n{text}"))
}

fn parse_class_stats(text: &str, handle: &str) -> Option<ClassStats> {
    let block = text
        .split("class htb ")
        .find(|block| block.split_whitespace().next() == Some(handle))?;
    let number_before = |marker: &str, unit: &str| -> Option<u64> {
        let (_, after) = block.split_once(marker)?;
        after
            .split_whitespace()
            .find_map(|word| word.strip_suffix(unit)?.parse().ok())
    };
    let sent = block.split_once(" Sent ")?.1;
    let mut words = sent.split_whitespace();
    let bytes = words.next()?.parse().ok()?;
    let packets = words.nth(1)?.parse().ok()?;
    Some(ClassStats {
        bytes,
        packets,
        queued: number_before(" backlog ", "p")?,
    })
}

/// Waits until the class holds at least `packets` in its queue.
pub fn wait_for_queue(handle: &str, packets: u64) -> ClassStats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = class_stats(handle);
        if stats.queued >= packets {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "class {handle} never queued {packets} packets: {stats:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
