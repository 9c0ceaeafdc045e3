//! `cargo xtask bench`: the daemon's core (the `bench` example), then, as root, the whole daemon
//! in the simulated world: start to READY and idle memory, each against a baseline measured in
//! the same run.

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

/// Everything, or with `daemon` only the whole daemon's figures.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) != Some("daemon") {
        crate::run(crate::cargo().args(["run", "--release", "-p", "aiesimd", "--example", "bench"]))?;
    }
    crate::build(true)?;
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
    let rss = world.daemon_rss_kib()?;
    let modem_manager = modem_manager_rss(world.dir())?;
    drop(world);

    println!("daemon start and idle memory (release build, private system bus, simulated QMI modem):");
    println!("  spawn and exit of `true` (baseline)           {spawn:>8.2} ms");
    println!(
        "  aiesimd start to READY=1, median of {STARTS}         {ready:>8.2} ms = {:.1} x baseline  (target <= {READY_TARGET_MS} ms)",
        ready / spawn
    );
    match modem_manager {
        Some((version, mm)) => {
            println!("  {version} idle RSS, no modem (baseline) {mm:>8} KiB");
            #[expect(clippy::cast_precision_loss, reason = "a ratio for people to read")]
            let ratio = rss as f64 / mm as f64;
            println!(
                "  aiesimd idle RSS, modem open and card read    {rss:>8} KiB = {ratio:.2} x baseline  (target <= {RSS_TARGET_KIB} KiB)"
            );
        }
        None => println!(
            "  aiesimd idle RSS, modem open and card read    {rss:>8} KiB  (target <= {RSS_TARGET_KIB} KiB; no {MODEM_MANAGER} to compare: `cargo xtask setup` installs it)"
        ),
    }
    Ok(())
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
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
fn modem_manager_rss(dir: &Path) -> anyhow::Result<Option<(String, u64)>> {
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
    let status = std::fs::read_to_string(format!("/proc/{}/status", mm.0.id())).context("ModemManager exited early")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS for ModemManager")?;
    Ok(Some((version, rss)))
}
