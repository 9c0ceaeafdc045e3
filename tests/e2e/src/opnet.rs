//! A simulated operator network: the device reaches three tiers of cloud endpoints (metro,
//! province, national, each in a namespace of its own behind the operator's core) over an L3
//! TUN uplink named like a cellular one, `wwan0`. The kernel here has no netem, so a forwarder
//! in this process carries every packet between the device's `wwan0` and the core's `core0`
//! through per-direction delay queues, adding each tier's one-way delay on the way out and on
//! the way back (so a round trip costs twice it). The uplink is rate-limited by a TBF qdisc on
//! `wwan0`. A second path, `eth0` (think Wi-Fi), reaches the same endpoints with a better route
//! metric and no delay: traffic takes `wwan0` only when it is bound to it.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs::{File, OpenOptions},
    io::{ErrorKind, Read as _, Write as _},
    net::Ipv4Addr,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{self, Netns};

/// The device's cellular uplink, and its address on it.
pub const UPLINK: &str = "wwan0";
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The device's other path to the same endpoints, preferred by the routing table.
pub const OTHER_PATH: &str = "eth0";
/// What TBF lets through the uplink.
pub const UPLINK_RATE: &str = "20mbit";
/// The port every tier's endpoint listens on.
pub const ENDPOINT_PORT: u16 = 8443;

/// One tier of the operator's endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Tier {
    pub name: &'static str,
    /// Added in each direction between the device and this tier.
    pub one_way: Duration,
    /// The endpoint's address (`198.18.N.2`, its gateway in the core `198.18.N.1`).
    pub addr: Ipv4Addr,
}

pub const TIERS: [Tier; 3] = [
    Tier {
        name: "metro",
        one_way: Duration::from_millis(1),
        addr: Ipv4Addr::new(198, 18, 1, 2),
    },
    Tier {
        name: "province",
        one_way: Duration::from_millis(5),
        addr: Ipv4Addr::new(198, 18, 2, 2),
    },
    Tier {
        name: "national",
        one_way: Duration::from_millis(20),
        addr: Ipv4Addr::new(198, 18, 3, 2),
    },
];

/// The delay a packet to or from `addr` gets: its tier's, none for anything else.
fn delay_for(addr: Ipv4Addr) -> Duration {
    TIERS
        .iter()
        .find(|t| t.addr == addr)
        .map_or(Duration::ZERO, |t| t.one_way)
}

/// The network; the forwarder stops and the tiers' namespaces go when it is dropped (the
/// device's and the core's belong to the caller).
pub struct OperatorNetwork {
    forwarder: Forwarder,
    tiers: Vec<Netns>,
}

impl OperatorNetwork {
    /// Builds it between the device's namespace and the operator core's.
    pub fn build(device: &Netns, core: &Netns) -> anyhow::Result<Self> {
        for ns in [device, core] {
            // No IPv6 chatter (router solicitations, MLD) on the links: counted packets are ours.
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        sysctl(core, "net.ipv4.ip_forward", "1")?;

        let uplink = tun_in(device, UPLINK)?;
        let core_end = tun_in(core, "core0")?;
        device.ip(["addr", "add", &format!("{UPLINK_ADDR}/32"), "dev", UPLINK])?;
        device.ip(["link", "set", UPLINK, "up"])?;
        // A rate-limited uplink, as a cellular one is.
        run(device.command("tc").args([
            "qdisc",
            "add",
            "dev",
            UPLINK,
            "root",
            "tbf",
            "rate",
            UPLINK_RATE,
            "burst",
            "32kb",
            "latency",
            "100ms",
        ]))?;
        core.ip(["addr", "add", "198.18.0.1/32", "dev", "core0"])?;
        core.ip(["link", "set", "core0", "up"])?;
        core.ip(["route", "add", &format!("{UPLINK_ADDR}/32"), "dev", "core0"])?;

        // The other path, which the routing table prefers.
        netns::link(device, OTHER_PATH, "192.168.77.2", core, "lan0", "192.168.77.1")?;
        device.ip([
            "route",
            "add",
            "198.18.0.0/16",
            "via",
            "192.168.77.1",
            "dev",
            OTHER_PATH,
            "metric",
            "10",
        ])?;
        device.ip(["route", "add", "198.18.0.0/16", "dev", UPLINK, "metric", "100"])?;

        let mut tiers = Vec::new();
        for (n, tier) in TIERS.iter().enumerate() {
            let ns = Netns::create(tier.name)?;
            let gateway = format!("198.18.{}.1", n + 1);
            netns::link(
                core,
                &format!("tier{}", n + 1),
                &gateway,
                &ns,
                "eth0",
                &tier.addr.to_string(),
            )?;
            ns.ip(["route", "add", "default", "via", &gateway])?;
            tiers.push(ns);
        }
        let forwarder = Forwarder::start(uplink, core_end)?;
        Ok(Self { forwarder, tiers })
    }

    /// The namespace of tier `name` (of [`TIERS`]).
    pub fn tier_netns(&self, name: &str) -> &Netns {
        let i = TIERS.iter().position(|t| t.name == name).expect("a known tier");
        &self.tiers[i]
    }

    /// Packets the forwarder carried up and down so far.
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.forwarder.counts[0].load(Ordering::Relaxed),
            self.forwarder.counts[1].load(Ordering::Relaxed),
        )
    }
}

/// Packets sent and received on `dev` in `ns`, from the kernel's counters.
pub fn link_packets(ns: &Netns, dev: &str) -> anyhow::Result<(u64, u64)> {
    let json = ns.ip(["-j", "-s", "link", "show", "dev", dev])?;
    let doc: serde_json::Value = serde_json::from_str(&json).context("ip -j output")?;
    let stats = &doc[0]["stats64"];
    let tx = stats["tx"]["packets"].as_u64().context("no tx packets")?;
    let rx = stats["rx"]["packets"].as_u64().context("no rx packets")?;
    Ok((tx, rx))
}

fn sysctl(ns: &Netns, key: &str, value: &str) -> anyhow::Result<()> {
    run(ns.command("sysctl").args(["-qw", &format!("{key}={value}")]))
}

fn run(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", crate::output_text(&out));
    }
    Ok(())
}

/// An L3 TUN device (no packet information header) made in `ns`; non-blocking.
fn tun_in(ns: &Netns, name: &str) -> anyhow::Result<File> {
    let path = format!("/run/netns/{}", ns.name());
    let target = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    let name = name.to_owned();
    thread::spawn(move || -> anyhow::Result<File> {
        // This thread alone enters the namespace; the device stays there, the fd works anywhere.
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .context("cannot open /dev/net/tun")?;
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = libc::c_char::from_ne_bytes([src]);
        }
        request.ifr_ifru.ifru_flags = i16::try_from(libc::IFF_TUN | libc::IFF_NO_PI)?;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` is.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut request) };
        if ret != 0 {
            bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
        }
        Ok(file)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the TUN thread panicked"))?
}

/// Carries packets between two TUN devices, each after its tier's delay.
struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Packets carried up (device to core) and down.
    counts: Arc<[std::sync::atomic::AtomicU64; 2]>,
}

/// A packet waiting for its time: (due, arrival order, bytes).
type Delayed = Reverse<(Instant, u64, Vec<u8>)>;

impl Forwarder {
    fn start(device: File, core: File) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new([
            std::sync::atomic::AtomicU64::new(0),
            std::sync::atomic::AtomicU64::new(0),
        ]);
        let mut threads = Vec::new();
        // Up: the tier is the destination (IPv4 bytes 16..20); down: the source (12..16).
        for (from, to, field, direction) in [(device.try_clone()?, core.try_clone()?, 16, 0), (core, device, 12, 1)] {
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let stop_reading = Arc::clone(&stop);
            threads.push(thread::spawn(move || read_loop(&from, field, &tx, &stop_reading)));
            let counts = Arc::clone(&counts);
            threads.push(thread::spawn(move || write_loop(to, &rx, &counts[direction])));
        }
        Ok(Self { stop, threads, counts })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads packets until told to stop, stamping each with the time it is due.
fn read_loop(from: &File, field: usize, queue: &mpsc::Sender<(Instant, Vec<u8>)>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    let mut reader = from;
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length given.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, 100) };
        if ready <= 0 {
            continue;
        }
        loop {
            match reader.read(&mut buf) {
                Ok(len) => {
                    let packet = buf[..len].to_vec();
                    // IPv4 only (IPv6 is off on these links); anything else goes at once.
                    let delay = match packet.get(field..field + 4) {
                        Some(a) if packet[0] >> 4 == 4 => delay_for(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                        _ => Duration::ZERO,
                    };
                    if queue.send((Instant::now() + delay, packet)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // The device went away (its namespace was deleted): nothing more to carry.
                Err(_) => return,
            }
        }
    }
}

/// Writes each packet when it is due, in the order due (ties in arrival order).
fn write_loop(mut to: File, queue: &mpsc::Receiver<(Instant, Vec<u8>)>, count: &std::sync::atomic::AtomicU64) {
    let mut waiting: BinaryHeap<Delayed> = BinaryHeap::new();
    let mut arrivals = 0u64;
    loop {
        let now = Instant::now();
        while waiting.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
            let Reverse((_, _, packet)) = waiting.pop().expect("peeked");
            // A full queue or a device that is down drops the packet, as a link would.
            let _ = to.write(&packet);
            count.fetch_add(1, Ordering::Relaxed);
        }
        let wait = waiting
            .peek()
            .map_or(Duration::from_millis(100), |Reverse((due, _, _))| {
                due.saturating_duration_since(now)
            });
        match queue.recv_timeout(wait) {
            Ok((due, packet)) => {
                arrivals += 1;
                waiting.push(Reverse((due, arrivals, packet)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
