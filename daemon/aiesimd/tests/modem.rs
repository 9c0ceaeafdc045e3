//! `Modem` against the real simulator binary, and against a port nobody answers.
//!
//! Needs `target/debug/aiesim-modemsim`: build it first with `cargo build -p aiesim-modemsim`.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aiesimd::modem::{Modem, ModemError, ModemInfo, ModemOptions, Protocol, TransportError};
use nix::{
    fcntl::OFlag,
    pty::{grantpt, posix_openpt, ptsname_r, unlockpt},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The simulator binary, built next to this test's own executable.
fn simulator_binary() -> PathBuf {
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

/// A running simulator; stopped (SIGTERM, then SIGKILL) and reaped on drop.
struct Simulator {
    child: Child,
    link: PathBuf,
    _dir: tempfile::TempDir,
}

impl Simulator {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let link = dir.path().join("cdc-wdm0");
        let mut child = Command::new(simulator_binary())
            .arg("--link")
            .arg(&link)
            .args(extra)
            // Warnings only: the tests' own output stays readable, real trouble still shows.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        Self { child, link, _dir: dir }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"))
    }

    /// SIGTERM and wait up to `patience` for a clean exit.
    fn stop(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
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

#[tokio::test]
async fn open_reads_the_configured_identity() {
    let sim = Simulator::start(&[
        "--imei",
        "490154203237518",
        "--manufacturer",
        "Acme Wireless",
        "--model",
        "AW-5G glasses module",
        "--revision",
        "AW5G_01.002.03",
    ]);
    let modem = Modem::open(&sim.link, Protocol::Qmi).await.expect("the modem opens");
    assert_eq!(
        modem.info(),
        &ModemInfo {
            imei: "490154203237518".into(),
            manufacturer: "Acme Wireless".into(),
            model: "AW-5G glasses module".into(),
            revision: "AW5G_01.002.03".into(),
        }
    );
    modem.close().await.expect("the client id is released");

    // A second session works, so the first one left the port usable.
    let modem = Modem::open(&sim.link, Protocol::Qmi)
        .await
        .expect("the modem opens again");
    assert_eq!(modem.info().imei, "490154203237518");
    modem.close().await.expect("the client id is released");
}

#[tokio::test]
async fn many_sessions_do_not_exhaust_client_ids() {
    let sim = Simulator::start(&[]);
    // More sessions than the simulator has client ids: close must give them back.
    for _ in 0..40 {
        let modem = Modem::open(&sim.link, Protocol::Qmi).await.expect("the modem opens");
        assert_eq!(modem.info().imei, "356938035643809");
        modem.close().await.expect("the client id is released");
    }
}

#[tokio::test]
async fn a_silent_port_times_out() {
    // A pty nobody serves: the master is held open but never read.
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).expect("posix_openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let slave = PathBuf::from(ptsname_r(&master).expect("ptsname_r"));

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = Modem::open_with(
        &slave,
        Protocol::Qmi,
        ModemOptions::default().with_request_timeout(timeout),
    )
    .await;
    let Err(err) = result else {
        panic!("a silent modem must not open");
    };
    assert!(
        matches!(err, ModemError::Timeout { after, .. } if after == timeout),
        "expected a timeout, got {err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the modem did not answer the CTL Allocate CID request within 300ms"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_simulator_that_dies_disconnects_the_modem() {
    let mut sim = Simulator::start(&[]);
    let modem = Modem::open_with(
        &sim.link,
        Protocol::Qmi,
        ModemOptions::default().with_request_timeout(Duration::from_secs(2)),
    )
    .await
    .expect("the modem opens");
    let _ = kill(sim.pid(), Signal::SIGKILL);
    let _ = sim.child.wait();
    let err = modem.close().await.expect_err("nobody can release the id");
    assert!(
        matches!(
            err,
            ModemError::Disconnected(Some(ref source))
                if matches!(**source, TransportError::Closed { .. })
        ),
        "expected a closed port, got {err:?}"
    );
}

#[tokio::test]
async fn the_simulator_removes_its_link_on_sigterm() {
    let mut sim = Simulator::start(&[]);
    let link = sim.link.clone();
    assert!(link.symlink_metadata().is_ok());
    let status = sim.stop(Duration::from_secs(5)).expect("it exits promptly");
    assert!(status.success(), "exit status {status}");
    assert!(link.symlink_metadata().is_err(), "the link is gone");
}

#[tokio::test]
async fn mbim_is_not_supported_yet() {
    let err = Modem::open(Path::new("/dev/null"), Protocol::Mbim)
        .await
        .err()
        .expect("MBIM is refused");
    assert_eq!(err.to_string(), "the mbim control protocol is not supported yet");
}

#[tokio::test]
async fn a_missing_port_names_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("cdc-wdm9");
    let err = Modem::open(&path, Protocol::Qmi)
        .await
        .err()
        .expect("a missing port does not open");
    assert_eq!(
        err.to_string(),
        format!("could not open the control port {}", path.display())
    );
    let source = std::error::Error::source(&err).expect("the OS error is the source");
    assert!(source.to_string().contains("No such file"), "{source}");
}
