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
        assert!(
            std::env::var_os("CI").is_none(),
            "qmicli is required in CI: apt-get install libqmi-utils"
        );
        eprintln!("skipping: qmicli not found (apt-get install libqmi-utils)");
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
    assert!(versions.contains("ctl (1.5)"), "{versions}");
    assert!(versions.contains("dms (1.14)"), "{versions}");
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

#[test]
fn mbim_is_not_implemented_yet() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(SIMULATOR)
        .args(["--protocol", "mbim", "--link"])
        .arg(dir.path().join("wdm"))
        .output()
        .expect("the simulator runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented yet"));
    assert!(out.stdout.is_empty());
}
