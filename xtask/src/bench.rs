//! `cargo xtask bench`: the daemon's core and its idle radio (the `bench` example), then, as
//! root, the whole daemon in the simulated world: start to READY and idle memory, each against a
//! baseline measured in the same run.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use aiesim_e2e::{World, WorldOptions, missing_prerequisites};
use anyhow::{Context as _, bail};

/// Starts measured per figure; the median is reported.
const STARTS: usize = 5;
/// How long a daemon sits idle before its resident set is read.
const IDLE: Duration = Duration::from_secs(3);
/// DESIGN.md's targets.
const READY_TARGET_MS: f64 = 150.0;
const RSS_TARGET_KIB: u64 = 6 * 1024;
const MODEM_MANAGER: &str = "/usr/sbin/ModemManager";

/// Everything, with `daemon` only the whole daemon's figures, with `classifier` only the fast-path
/// classifier's cost per packet.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("classifier") {
        return crate::run(crate::cargo().args([
            "run",
            "--release",
            "-p",
            "aiesimd",
            "--example",
            "bench",
            "--",
            "classifier",
        ]));
    }
    // Before the example too: its idle-radio figure runs the daemon, aictl and the simulator in
    // the simulated world.
    crate::build(true)?;
    if args.first().map(String::as_str) != Some("daemon") {
        crate::run(crate::cargo().args(["run", "--release", "-p", "aiesimd", "--example", "bench"]))?;
    }
    if let Some(why) = missing_prerequisites("release") {
        println!("daemon start and idle memory: not measured: {why}");
        return Ok(());
    }
    let mut world = World::start(&WorldOptions {
        profile: "release".into(),
        ..WorldOptions::default()
    })
    .context("cannot start the simulated world")?;

    let mut ready = vec![world.ready_after];
    for _ in 1..STARTS {
        world.restart_daemon(false)?;
        ready.push(world.ready_after);
    }
    let mut spawn = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let status = Command::new("true").status().context("cannot run true")?;
        spawn.push(started.elapsed());
        if !status.success() {
            bail!("true failed");
        }
    }
    let (ready, spawn) = (median_ms(&mut ready), median_ms(&mut spawn));
    sleep(IDLE);
    let rss = Rss::of(world.daemon.pid())?;
    let modem_manager = modem_manager_rss(world.dir())?;
    drop(world);

    println!("daemon start and idle memory (release build, private system bus, simulated QMI modem):");
    println!("  spawn and exit of `true` (baseline)           {spawn:>8.2} ms");
    println!(
        "  aiesimd start to READY=1, median of {STARTS}         {ready:>8.2} ms = {:.1} x baseline  (target <= {READY_TARGET_MS} ms)",
        ready / spawn
    );
    let target = format!("target <= {RSS_TARGET_KIB} KiB; {rss}");
    match modem_manager {
        Some((version, mm)) => {
            println!("  {version} idle RSS, no modem (baseline) {:>8} KiB  ({mm})", mm.total);
            #[expect(clippy::cast_precision_loss, reason = "a ratio for people to read")]
            let ratio = rss.total as f64 / mm.total as f64;
            println!(
                "  aiesimd idle RSS, modem open and card read    {:>8} KiB = {ratio:.2} x baseline  ({target})",
                rss.total
            );
        }
        None => println!(
            "  aiesimd idle RSS, modem open and card read    {:>8} KiB  ({target}; no {MODEM_MANAGER} to compare: `cargo xtask setup` installs it)",
            rss.total
        ),
    }
    Ok(())
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// A process's resident set, in KiB: all of it, and its anonymous and file-backed parts (the
/// latter mostly code and libraries, shared with other processes that map them).
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} for process {pid}"))
        };
        Ok(Self {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "anonymous {} KiB, file-backed {} KiB", self.anon, self.file)
    }
}

/// A child process that is killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ModemManager`'s version and resident set after [`IDLE`] on a private system bus of its own
/// (it owns its name there; udev is not consulted, so it finds no modem), if it is installed.
fn modem_manager_rss(dir: &Path) -> anyhow::Result<Option<(String, Rss)>> {
    if !Path::new(MODEM_MANAGER).exists() {
        return Ok(None);
    }
    let socket = dir.join("modem-manager-bus");
    let config = dir.join("modem-manager-bus.conf");
    std::fs::write(
        &config,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>system</type>\
             <listen>unix:path={}</listen><auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>\
             <allow own=\"*\"/><allow send_destination=\"*\"/></policy></busconfig>\n",
            socket.display()
        ),
    )?;
    let _bus = Reaped(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run dbus-daemon")?,
    );
    let started = Instant::now();
    while !socket.exists() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the bus for ModemManager did not come up");
        }
        sleep(Duration::from_millis(10));
    }
    let version = crate::output(Command::new(MODEM_MANAGER).arg("--version"))?
        .lines()
        .next()
        .unwrap_or("ModemManager")
        .trim()
        .to_owned();
    let mm = Reaped(
        Command::new(MODEM_MANAGER)
            .arg("--test-no-udev")
            .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run ModemManager")?,
    );
    sleep(IDLE);
    Ok(Some((version, Rss::of(mm.0.id())?)))
}
