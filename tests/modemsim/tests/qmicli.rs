//! The simulator against the real `qmicli` (libqmi-utils): if libqmi accepts it, so will
//! ModemManager-style clients. Without qmicli these tests skip, or fail when `CI` is set.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const SIMULATOR: &str = env!("CARGO_BIN_EXE_aiesim-modemsim");
const IMEI: &str = "490154203237518";

/// Whether qmicli can run here; `false` means skip (after saying why).
fn qmicli_available() -> bool {
    let found = Command::new("qmicli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        aiesim_skip::skip("qmicli not found (apt-get install libqmi-utils)");
    }
    found
}

/// A running simulator; stopped with SIGTERM (SIGKILL if it lingers) and reaped on drop.
struct Simulator {
    child: Child,
    link: PathBuf,
    _dir: tempfile::TempDir,
}

impl Simulator {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let link = dir.path().join("cdc-wdm0");
        let mut child = Command::new(SIMULATOR)
            .arg("--link")
            .arg(&link)
            .args(args)
            // Warnings only: the tests' own output stays readable, real trouble still shows.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the simulator starts");
        let mut announcement = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut announcement)
            .expect("the simulator's stdout is readable");
        let sim = Self { child, link, _dir: dir };
        assert!(
            announcement.starts_with("PTY /dev/pts/"),
            "unexpected announcement {announcement:?}"
        );
        sim
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// What `qmicli <args>` printed on stdout (it must succeed).
    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.qmicli(args).stdout).into_owned()
    }

    /// Runs `qmicli -d <link> --device-open-qmi <args>` with a deadline.
    fn qmicli(&self, args: &[&str]) -> Output {
        let output = Command::new("timeout")
            .arg("20")
            .arg("qmicli")
            .arg("-d")
            .arg(&self.link)
            .arg("--device-open-qmi")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("qmicli runs");
        assert!(
            output.status.success(),
            "qmicli {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn qmicli_reads_the_imei() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&["--imei", IMEI]);
    let out = sim.qmicli(&["--dms-get-ids"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("IMEI: '{IMEI}'")), "{stdout}");
}

#[test]
fn qmicli_reads_versions_manufacturer_model_and_revision() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&[
        "--manufacturer",
        "Acme Wireless",
        "--model",
        "AW-5G",
        "--revision",
        "AW5G_01.002",
    ]);
    let versions = sim.qmicli(&["--get-service-version-info"]);
    let versions = String::from_utf8_lossy(&versions.stdout);
    for service in [
        "ctl (1.5)",
        "dms (1.14)",
        "nas (1.25)",
        "wds (1.67)",
        "uim (1.46)",
        "wda (1.16)",
    ] {
        assert!(versions.contains(service), "{service}: {versions}");
    }
    for (flag, expected) in [
        ("--dms-get-manufacturer", "Manufacturer: 'Acme Wireless'"),
        ("--dms-get-model", "Model: 'AW-5G'"),
        ("--dms-get-revision", "Revision: 'AW5G_01.002'"),
    ] {
        let out = sim.qmicli(&[flag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(expected), "{flag}: {stdout}");
    }
}

#[test]
fn qmicli_keeps_and_releases_client_ids() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&[]);
    // Keep a client id across two qmicli runs, then hand it back explicitly.
    let out = sim.qmicli(&["--dms-get-ids", "--client-no-release-cid"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cid = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("CID: '")?.strip_suffix('\''))
        .unwrap_or_else(|| panic!("qmicli names the kept client id: {stdout}"))
        .to_owned();
    sim.qmicli(&["--dms-get-model", "--client-cid", &cid, "--client-no-release-cid"]);
    sim.qmicli(&["--dms-noop", "--client-cid", &cid]);
    // Released now, so the simulator refuses it.
    let refused = Command::new("timeout")
        .args(["20", "qmicli", "-d"])
        .arg(&sim.link)
        .args(["--device-open-qmi", "--dms-get-model", "--client-cid", &cid])
        .output()
        .expect("qmicli runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a released client id must be refused");
    assert!(stderr.contains("InvalidClientId"), "{stderr}");
}

#[test]
fn sigterm_removes_the_link() {
    let mut sim = Simulator::start(&[]);
    assert!(sim.link.symlink_metadata().is_ok());
    let status = sim.terminate().expect("the simulator exits promptly");
    assert!(status.success(), "exit status {status}");
    assert!(sim.link.symlink_metadata().is_err(), "the link is gone");
}

/// The value qmicli prints after `key` on some line, without its quotes (`Mode: 'online'`).
fn field<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(key)?.trim_start();
        Some(rest.trim_matches('\''))
    })
}

/// A `'-71 dBm'`-style value as a number.
fn number(stdout: &str, key: &str) -> i32 {
    let value = field(stdout, key).unwrap_or_else(|| panic!("{key} missing from {stdout}"));
    value
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {stdout}"))
}

#[test]
fn qmicli_low_power_takes_the_modem_off_the_network() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&["--rssi", "-70"]);
    let mode = sim.stdout(&["--dms-get-operating-mode"]);
    assert_eq!(field(&mode, "Mode:"), Some("online"), "{mode}");
    let serving = sim.stdout(&["--nas-get-serving-system"]);
    assert_eq!(field(&serving, "Registration state:"), Some("registered"), "{serving}");
    let signal = sim.stdout(&["--nas-get-signal-info"]);
    assert!(signal.contains("LTE:"), "{signal}");

    let set = sim.stdout(&["--dms-set-operating-mode=low-power"]);
    assert!(set.contains("Operating mode set successfully"), "{set}");
    let mode = sim.stdout(&["--dms-get-operating-mode"]);
    assert_eq!(field(&mode, "Mode:"), Some("low-power"), "{mode}");
    let signal = sim.stdout(&["--nas-get-signal-info"]);
    assert!(!signal.contains("RSSI"), "no radio, no signal: {signal}");
    let serving = sim.stdout(&["--nas-get-serving-system"]);
    assert_eq!(
        field(&serving, "Registration state:"),
        Some("not-registered"),
        "{serving}"
    );
    assert_eq!(field(&serving, "PS:"), Some("detached"), "{serving}");
    assert!(!serving.contains("Current PLMN"), "{serving}");
    let system = sim.stdout(&["--nas-get-system-info"]);
    assert_eq!(field(&system, "Status:"), Some("power-save"), "{system}");

    sim.stdout(&["--dms-set-operating-mode=online"]);
    let serving = sim.stdout(&["--nas-get-serving-system"]);
    assert_eq!(field(&serving, "Registration state:"), Some("registered"), "{serving}");
    let signal = sim.stdout(&["--nas-get-signal-info"]);
    assert!((-75..=-70).contains(&number(&signal, "RSSI:")), "{signal}");
}

#[test]
fn qmicli_reads_signal_serving_system_and_system_info() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&["--rssi", "-80"]);
    let signal = sim.stdout(&["--nas-get-signal-info"]);
    let rssi = number(&signal, "RSSI:");
    // The signal drifts up to 5 dB below its base; RSRP follows 25 dB under RSSI.
    assert!((-85..=-80).contains(&rssi), "{signal}");
    assert_eq!(number(&signal, "RSRP:"), rssi - 25, "{signal}");
    assert_eq!(number(&signal, "RSRQ:"), -10, "{signal}");

    let serving = sim.stdout(&["--nas-get-serving-system"]);
    assert_eq!(field(&serving, "Selected network:"), Some("3gpp"), "{serving}");
    assert_eq!(field(&serving, "[0]:"), Some("lte"), "{serving}");
    assert_eq!(field(&serving, "MCC:"), Some("1"), "{serving}");
    assert_eq!(
        field(&serving, "Description:"),
        Some("aiesim test network"),
        "{serving}"
    );
    assert_eq!(field(&serving, "LTE tracking area code:"), Some("42"), "{serving}");

    let system = sim.stdout(&["--nas-get-system-info"]);
    assert_eq!(field(&system, "Status:"), Some("available"), "{system}");
    assert_eq!(field(&system, "MCC:"), Some("001"), "{system}");
    assert_eq!(field(&system, "MNC:"), Some("01"), "{system}");
    assert_eq!(field(&system, "Roaming status:"), Some("off"), "{system}");
}

/// One command on the simulator's control socket (`--control PATH`); fails unless it says ok.
fn control(socket: &std::path::Path, command: &str) {
    use std::io::Write as _;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("the control socket accepts");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(stream, "{command}").unwrap();
    let mut reply = String::new();
    let mut reader = BufReader::new(stream);
    while !(reply.ends_with("ok\n") || reply.contains("error:")) {
        if reader.read_line(&mut reply).unwrap() == 0 {
            break;
        }
    }
    assert!(reply.ends_with("ok\n"), "{command}: {reply}");
}

/// A `'50000000bps'`-style rate as a number.
fn bps(stdout: &str, key: &str) -> u64 {
    let value = field(stdout, key).unwrap_or_else(|| panic!("no {key} in {stdout}"));
    value
        .trim_end_matches("bps")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} {value:?} is not a rate"))
}

#[test]
fn qmicli_reads_the_channel_rates_the_network_grants() {
    if !qmicli_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control");
    let sim = Simulator::start(&["--control", socket.to_str().unwrap()]);
    let rates = sim.stdout(&["--wds-get-channel-rates"]);
    assert_eq!(bps(&rates, "Current TX rate:"), 50_000_000, "{rates}");
    assert_eq!(bps(&rates, "Current RX rate:"), 150_000_000, "{rates}");
    assert_eq!(bps(&rates, "Max TX rate:"), 50_000_000, "{rates}");

    // A congested cell: libqmi decodes the new uplink and downlink from the same TLV.
    control(&socket, "rates 1500 6000");
    let rates = sim.stdout(&["--wds-get-channel-rates"]);
    assert_eq!(bps(&rates, "Current TX rate:"), 1_500_000, "{rates}");
    assert_eq!(bps(&rates, "Current RX rate:"), 6_000_000, "{rates}");

    // Off the network there is no channel: the current rates are zero, the maximum stays.
    control(&socket, "register none");
    let rates = sim.stdout(&["--wds-get-channel-rates"]);
    assert_eq!(bps(&rates, "Current TX rate:"), 0, "{rates}");
    assert_eq!(bps(&rates, "Max TX rate:"), 1_500_000, "{rates}");
}

#[test]
fn qmicli_starts_and_stops_a_data_session() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&[
        "--ipv4",
        "198.51.100.7/28",
        "--gateway",
        "198.51.100.1",
        "--mtu",
        "1430",
    ]);
    let status = sim.stdout(&["--wds-get-packet-service-status"]);
    assert!(status.contains("Connection status: 'disconnected'"), "{status}");

    let started = sim.stdout(&["--wds-start-network=apn=internet,ip-type=4", "--client-no-release-cid"]);
    let handle = field(&started, "Packet data handle:")
        .unwrap_or_else(|| panic!("qmicli names the handle: {started}"))
        .to_owned();
    let cid = field(&started, "CID:")
        .unwrap_or_else(|| panic!("qmicli names the kept client id: {started}"))
        .to_owned();

    let settings = sim.stdout(&["--wds-get-current-settings"]);
    assert_eq!(field(&settings, "IPv4 address:"), Some("198.51.100.7"), "{settings}");
    assert_eq!(
        field(&settings, "IPv4 subnet mask:"),
        Some("255.255.255.240"),
        "{settings}"
    );
    assert_eq!(
        field(&settings, "IPv4 gateway address:"),
        Some("198.51.100.1"),
        "{settings}"
    );
    assert_eq!(field(&settings, "IPv4 primary DNS:"), Some("192.0.2.53"), "{settings}");
    assert_eq!(field(&settings, "MTU:"), Some("1430"), "{settings}");
    let status = sim.stdout(&["--wds-get-packet-service-status"]);
    assert!(status.contains("Connection status: 'connected'"), "{status}");

    let stop = format!("--wds-stop-network={handle}");
    let stopped = sim.stdout(&[&stop, "--client-cid", &cid]);
    assert!(stopped.contains("Network stopped"), "{stopped}");
    let status = sim.stdout(&["--wds-get-packet-service-status"]);
    assert!(status.contains("Connection status: 'disconnected'"), "{status}");
}

#[test]
fn qmicli_reads_data_format_card_and_slot_status() {
    if !qmicli_available() {
        return;
    }
    let sim = Simulator::start(&[]);
    let format = sim.stdout(&["--wda-get-data-format"]);
    assert_eq!(field(&format, "Link layer protocol:"), Some("raw-ip"), "{format}");
    let card = sim.stdout(&["--uim-get-card-status"]);
    assert_eq!(field(&card, "Card state:"), Some("present"), "{card}");
    assert_eq!(field(&card, "Application type:"), Some("usim (2)"), "{card}");
    assert_eq!(field(&card, "Application state:"), Some("ready"), "{card}");
    assert!(card.contains("Primary GW:   slot '1', application '1'"), "{card}");
    let slots = sim.stdout(&["--uim-get-slot-status"]);
    assert_eq!(field(&slots, "Card status:"), Some("present"), "{slots}");
    assert_eq!(field(&slots, "ICCID:"), Some("8988211000000000017"), "{slots}");
    assert_eq!(field(&slots, "Is eUICC:"), Some("yes"), "{slots}");
    assert_eq!(
        field(&slots, "EID:"),
        Some("89049032002026120100000000000123"),
        "{slots}"
    );

    let empty = Simulator::start(&["--no-card"]);
    let card = empty.stdout(&["--uim-get-card-status"]);
    assert_eq!(field(&card, "Card state:"), Some("absent"), "{card}");
    assert!(!card.contains("Application ["), "{card}");
    let slots = empty.stdout(&["--uim-get-slot-status"]);
    assert_eq!(field(&slots, "Card status:"), Some("absent"), "{slots}");
    let serving = empty.stdout(&["--nas-get-serving-system"]);
    assert_eq!(
        field(&serving, "Registration state:"),
        Some("not-registered"),
        "{serving}"
    );
}
