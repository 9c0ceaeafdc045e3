//! `cargo xtask bench`: the daemon's core, fast path and idle radio (the `bench` example), then,
//! as root, the whole daemon in the simulated world: start to READY and idle memory; each figure
//! against a baseline measured in the same run, and all of them as one table at the end.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use aiesim_e2e::{
    World, WorldOptions,
    bench::{self, FIGURES_ENV, Figure, Target},
    missing_prerequisites, repo_root,
};
use anyhow::{Context as _, bail};

/// Starts measured per figure; the median is reported.
const STARTS: usize = 5;
/// How long a daemon sits idle before its resident set is read: past `requests.idle_trim_s`
/// (30 s by default), when it gives back the memory its start-up used, and then again after
/// each watchdog pet.
const IDLE: Duration = Duration::from_secs(40);
/// How long `ModemManager` runs before its resident set is read: it has nothing to give back,
/// and with no modem (`--test-no-udev`) it does not stay up for [`IDLE`].
const MM_IDLE: Duration = Duration::from_secs(3);
/// DESIGN.md's targets.
const READY_TARGET_MS: f64 = 150.0;
const RSS_TARGET_KIB: u64 = 6 * 1024;
const MODEM_MANAGER: &str = "/usr/sbin/ModemManager";

/// Everything, as one table of figures at the end (`--report FILE` also writes it as Markdown
/// with the machine it ran on); with `daemon` only the whole daemon's figures, with `classifier`
/// only the fast-path classifier's cost per packet.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut report = None;
    let mut part = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--report" => report = Some(args.next().context("--report needs a file")?.clone()),
            "daemon" | "classifier" if part.is_none() => part = Some(arg.clone()),
            other => bail!("bench: unknown argument {other:?} (bench [daemon|classifier] [--report FILE])"),
        }
    }
    let machine = Machine::read();
    let figures = tempfile::NamedTempFile::new().context("cannot create the figures file")?;
    // SAFETY: single-threaded here; the children inherit it.
    unsafe { std::env::set_var(FIGURES_ENV, figures.path()) };
    measure(part.as_deref())?;
    let figures = bench::read(figures.path())?;
    let table = bench::table(&figures);
    println!("\nall figures (ratios against baselines measured in this run):\n\n{table}");
    if let Some(path) = report {
        std::fs::write(&path, machine.report(&table, part.as_deref()))
            .with_context(|| format!("cannot write {path}"))?;
        println!("report written to {path}");
    }
    Ok(())
}

fn measure(part: Option<&str>) -> anyhow::Result<()> {
    if part == Some("classifier") {
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
    if part != Some("daemon") {
        crate::run(crate::cargo().args(["run", "--release", "-p", "aiesimd", "--example", "bench"]))?;
    }
    if let Some(why) = missing_prerequisites("release") {
        println!("daemon start and idle memory: not measured: {why}");
        return Ok(());
    }
    // As the shipped unit runs it: its watchdog period and the default log filter.
    let mut world = World::start(&WorldOptions {
        profile: "release".into(),
        watchdog: Some(shipped_watchdog()?),
        daemon_log: None,
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
    Figure::new(format!("aiesimd start to READY=1, median of {STARTS}"), ready, "ms")
        .against("spawn and exit of `true`", spawn)
        .target(Target::AtMost(READY_TARGET_MS))
        .record();
    #[expect(clippy::cast_precision_loss, reason = "KiB counts far below 2^52")]
    let kib = |v: u64| v as f64;
    let idle = Figure::new(format!("aiesimd idle RSS ({rss})"), kib(rss.total), "KiB")
        .target(Target::AtMost(kib(RSS_TARGET_KIB)));
    if let Some((version, mm)) = modem_manager {
        idle.against(format!("{version}, no modem; {mm}"), kib(mm.total))
            .record();
    } else {
        println!("  (no {MODEM_MANAGER} to compare: `cargo xtask setup` installs it)");
        idle.record();
    }
    Ok(())
}

/// What the figures were measured on.
struct Machine {
    date: String,
    commit: String,
    kernel: String,
    cpu: String,
    cores: usize,
    memory: String,
    load: String,
}

impl Machine {
    fn read() -> Self {
        let text =
            |command: &mut Command| crate::output(command).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            date: text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            commit: text(Command::new("git").args(["describe", "--always", "--dirty"])),
            kernel: text(Command::new("uname").args(["-sr"])),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map_or("?", |v| v.trim_start_matches([' ', '\t', ':']))
                .to_owned(),
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map_or("?", str::trim)
                .to_owned(),
            load: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn report(&self, table: &str, part: Option<&str>) -> String {
        let command = part.map_or_else(|| "cargo xtask bench".to_owned(), |p| format!("cargo xtask bench {p}"));
        format!(
            "# Benchmarks\n\n\
             Every figure is a ratio against a baseline measured in the same run, as `{command} --report \
             docs/BENCHMARKS.md` prints and writes it; absolute values only inform, since the machines are \
             noisy. The targets are DESIGN.md's and the issues'.\n\n\
             - date: {}\n- commit: {}\n- machine: {}, {} cores, {} memory, {}\n- load average at the start: {}\n\n{table}",
            self.date, self.commit, self.cpu, self.cores, self.memory, self.kernel, self.load
        )
    }
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

/// The shipped unit's `WatchdogSec=` (seconds, as it is written there).
fn shipped_watchdog() -> anyhow::Result<Duration> {
    let unit = repo_root().join("systemd/aiesimd.service");
    let text = std::fs::read_to_string(&unit).with_context(|| format!("cannot read {}", unit.display()))?;
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("WatchdogSec="))
        .with_context(|| format!("{} sets no WatchdogSec=", unit.display()))?;
    let seconds: u64 = value
        .trim()
        .trim_end_matches('s')
        .parse()
        .with_context(|| format!("WatchdogSec={value} in {} is not whole seconds", unit.display()))?;
    Ok(Duration::from_secs(seconds))
}

/// `ModemManager`'s version and resident set after [`MM_IDLE`] on a private system bus of its own
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
    sleep(MM_IDLE);
    Ok(Some((version, Rss::of(mm.0.id())?)))
}
