//! What the tests that drive aiesimd's modem session against the simulator share: the
//! simulator process with its control socket and captures, session options, and waiting.
//!
//! Needs `target/debug/aiesim-modemsim`: build it first with `cargo build -p aiesim-modemsim`.

#![allow(dead_code, reason = "each test binary uses its own part of these helpers")]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aiesimd::modem::{Availability, ModemOptions, ModemState, Protocol};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::sync::watch;

/// Every wait in these tests ends by itself after this long.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The simulator binary, built next to this test's own executable.
pub fn simulator_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/modem-<hash> → target/debug/aiesim-modemsim
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("aiesim-modemsim"))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p aiesim-modemsim`",
        bin.display()
    );
    bin
}

/// A running simulator with a control socket; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Simulator {
    pub child: Child,
    pub link: PathBuf,
    pub control: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Simulator {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_speaking(Protocol::Qmi, extra)
    }

    /// A simulator of `protocol`; an MBIM one captures every transfer aiesimd sends it.
    pub fn start_speaking(protocol: Protocol, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let capture = dir.path().join("host.pcap").display().to_string();
        let mut args = vec!["--protocol", protocol.as_str()];
        if protocol == Protocol::Mbim {
            args.extend(["--capture", capture.as_str()]);
        }
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_in(dir, "cdc-wdm0", &args)
    }

    /// tshark's dissection of what aiesimd sent (MBIM only): one row of `fields` per frame,
    /// after checking that tshark found nothing malformed. `None` when tshark is missing
    /// outside CI (reported as skipped).
    pub fn host_frames(&self, fields: &[&str]) -> Option<Vec<Vec<String>>> {
        let tshark = Path::new("/usr/bin/tshark");
        if !tshark.exists() {
            aiesim_skip::skip("checking aiesimd's MBIM frames needs tshark (cargo xtask setup installs it)");
            return None;
        }
        let pcap = self.dir.path().join("host.pcap");
        let dlt = r#"uat:user_dlts:"User 0 (DLT=147)","mbim.control","0","","0","""#;
        let complaints = Command::new(tshark)
            .arg("-r")
            .arg(&pcap)
            .args(["-o", dlt, "-Y", r#"_ws.malformed || _ws.expert.severity >= "warning""#])
            .output()
            .expect("tshark runs");
        assert!(
            complaints.status.success(),
            "{}",
            String::from_utf8_lossy(&complaints.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&complaints.stdout),
            "",
            "tshark found malformed frames among aiesimd's"
        );
        let mut command = Command::new(tshark);
        command
            .arg("-r")
            .arg(&pcap)
            .args(["-o", dlt, "-T", "fields", "-E", "separator=|"]);
        for field in fields {
            command.args(["-e", field]);
        }
        let out = command.output().expect("tshark runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|line| line.split('|').map(str::to_owned).collect())
                .collect(),
        )
    }

    pub fn start_in(dir: tempfile::TempDir, name: &str, extra: &[&str]) -> Self {
        let link = dir.path().join(name);
        let control = dir.path().join("control");
        let mut child = Command::new(simulator_binary())
            .arg("--link")
            .arg(&link)
            .arg("--control")
            .arg(&control)
            .args(extra)
            // Warnings only: the tests' own output stays readable; MODEMSIM_LOG=debug shows more.
            .env(
                "RUST_LOG",
                std::env::var("MODEMSIM_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("MODEMSIM_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::piped()
            })
            .spawn()
            .expect("the simulator starts");
        let mut announcement = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut announcement)
            .expect("the simulator's stdout is readable");
        if !announcement.starts_with("PTY /dev/pts/") {
            let mut stderr = String::new();
            let _ = child.kill();
            let _ = child.wait();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
            panic!("the simulator did not announce its pty (got {announcement:?}); stderr:\n{stderr}");
        }
        Self {
            child,
            link,
            control,
            dir,
        }
    }

    /// Sends one control command and returns the reply's lines before `ok`.
    pub fn command(&self, line: &str) -> Vec<String> {
        let mut stream = UnixStream::connect(&self.control).expect("the control socket answers");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        writeln!(stream, "{line}").unwrap();
        let mut lines = Vec::new();
        for reply in BufReader::new(stream).lines() {
            let reply = reply.expect("a reply line");
            if reply == "ok" {
                return lines;
            }
            assert!(!reply.starts_with("error:"), "{line:?} was refused: {reply}");
            lines.push(reply);
        }
        panic!("the control socket closed without an answer to {line:?}");
    }

    /// The client ids the simulated modem holds, as `service:ids` words.
    pub fn clients(&self) -> Vec<String> {
        self.command("state")
            .into_iter()
            .filter_map(|line| line.strip_prefix("clients ").map(str::to_owned))
            .filter(|entry| entry.split_once(' ').is_some_and(|(_, ids)| !ids.is_empty()))
            .collect()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"))
    }

    /// SIGTERM and wait up to `patience` for a clean exit.
    pub fn stop(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if self.stop(Duration::from_secs(2)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn options(link: &Path) -> ModemOptions {
    options_for(link, Protocol::Qmi)
}

pub fn options_for(link: &Path, protocol: Protocol) -> ModemOptions {
    let mut options = ModemOptions::for_device(link, protocol).with_request_timeout(Duration::from_secs(2));
    options.retry_max = Duration::from_millis(500);
    options
}

/// Waits until the published state satisfies `ready`, or fails with the last state seen.
pub async fn wait_for<T: std::fmt::Debug>(states: &mut watch::Receiver<T>, what: &str, ready: impl Fn(&T) -> bool) {
    let waited = tokio::time::timeout(PATIENCE, states.wait_for(|s| ready(s)))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(waited, "never {what}; last state: {:#?}", *states.borrow());
}

pub fn is_ready(s: &ModemState) -> bool {
    s.availability == Availability::Ready
}
