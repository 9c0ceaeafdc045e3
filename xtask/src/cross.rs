//! `cargo xtask cross [--test]`: aiesimd and aictl for the reference boards (aarch64), built with
//! Debian's toolchain, and the pure unit tests run under qemu-user.
//!
//! Why this toolchain and runner (README, Development, has the whole story):
//! - Debian's `rustc-web` (rustup toolchain `debian-bpf`, already needed for the BPF program)
//!   with `libstd-rust-web-dev:arm64` from apt: reachable wherever apt is, unlike rustup's
//!   download server, and the same compiler for the BPF object and the userspace.
//! - Tests run as `qemu-aarch64-static -L / BINARY`, i.e. on the target's own glibc
//!   (`libc6:arm64`, multiarch): the cross glibc in `/usr/aarch64-linux-gnu` (libc6-arm64-cross
//!   2.36-8cross1) spins forever in the first `pthread_create` under qemu-user 7.2 and 10.0.

use std::{
    fmt,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{display, root, setup};

pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// The rustup name `cargo xtask setup` gives Debian's toolchain.
const TOOLCHAIN: &str = "debian-bpf";
const LINKER: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64-static";
/// Debian packages for the cross build and the runner; the target's std is added with the
/// version of the installed rustc-web (see [`install`]).
const PACKAGES: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    // The runner's loader and libc: the target's own, from the multiarch archive.
    "libc6:arm64",
    "qemu-user-static",
];
/// The crates whose tests need no root, bus, network or host tool: codecs, journal, credential,
/// the wire format.
const PURE_CRATES: &[&str] = &[
    "aiesim-qmi",
    "aiesim-mbim",
    "aiesim-apdu",
    "aiesim-es10",
    "aiesim-iot-safe",
    "aiesim-ai-applet",
    "aiesim-journal",
    "aiesim-credential",
    "aiesim-wire",
];
/// Test binaries of those crates that talk to host tools (tshark, python3); the native suite
/// runs them.
const NOT_PURE_TESTS: &[&str] = &["tshark", "interop"];
/// Test binaries left out of [`Tests::Suite`]: random sweeps, a minute under emulation.
const SLOW_TESTS: &[&str] = &["sweep"];
/// Tests that cannot pass under qemu-user for the emulator's sake, with why; they run natively in
/// the same suite.
const NOT_UNDER_QEMU: &[(&str, &str)] = &[(
    "identity::tests::our_own_cgroup_is_found_through_our_pidfd",
    "qemu-user does not pass the PIDFD_GET_INFO ioctl through (ENOTTY); runs natively",
)];
/// A test binary still running after this long under qemu is stuck: it fails.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Which aarch64 tests to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tests {
    /// All the pure ones (`--test`): the crates' unit and integration tests and the daemon's unit
    /// tests.
    All,
    /// What `cargo xtask test` runs (`--suite`), to stay within CI's time: the crates' unit and
    /// integration tests without the sweeps (slow under emulation; they run natively) and
    /// without the daemon's unit tests (their build costs more than the rest together).
    Suite,
}

pub struct Options {
    pub tests: Option<Tests>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let tests = match args {
            [] => None,
            [flag] if flag == "--test" => Some(Tests::All),
            [flag] if flag == "--suite" => Some(Tests::Suite),
            _ => bail!("usage: cargo xtask cross [--test | --suite]"),
        };
        Ok(Self { tests })
    }
}

/// The aarch64 tests' counts, for one crate or all.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Left out by `--skip` ([`NOT_UNDER_QEMU`]).
    pub filtered: u64,
}

impl Tally {
    fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.filtered += other.filtered;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} ignored, {} not under qemu",
            self.passed, self.failed, self.ignored, self.filtered
        )
    }
}

/// `cargo xtask cross [--test]`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    setup::run()?;
    install()?;
    build()?;
    if let Some(tests) = options.tests {
        let tally = test(tests)?;
        println!("cross: {TARGET}: {tally}");
        if tally.failed > 0 {
            bail!("{} aarch64 test(s) failed under qemu-user", tally.failed);
        }
    }
    Ok(())
}

/// The Debian packages and the multiarch architecture, each installed only when missing.
pub fn install() -> anyhow::Result<()> {
    eprintln!("cross: Debian packages for {TARGET}");
    let foreign = crate::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if !foreign.lines().any(|a| a.trim() == "arm64") {
        if !crate::is_root() {
            bail!("the arm64 architecture is not enabled in dpkg; run as root (dpkg --add-architecture arm64)");
        }
        crate::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    }
    // The target's std must come from the same build as the host compiler (else E0514).
    let version = dpkg_version("rustc-web").context("rustc-web is not installed; run cargo xtask setup")?;
    let std = format!("libstd-rust-web-dev:arm64={version}");
    let mut packages: Vec<&str> = PACKAGES.to_vec();
    if dpkg_version("libstd-rust-web-dev:arm64").as_ref() != Some(&version) {
        packages.push(&std);
    }
    setup::apt_install(&packages)
}

/// The installed version of a Debian package.
fn dpkg_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Version}", package])
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&out.stdout);
    let (status, version) = out.split_once('\t')?;
    status
        .contains("install ok installed")
        .then(|| version.trim().to_owned())
}

/// The cargo of Debian's toolchain, with the cross linker and C compiler (ring), building into
/// `target/cross` (another compiler than the host build's, so nothing there can be shared).
fn cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN, "cargo"]).current_dir(root());
    crate::without_cargo_run_env(&mut c);
    c.env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", LINKER)
        .env("CC_aarch64_unknown_linux_gnu", LINKER)
        .env("AR_aarch64_unknown_linux_gnu", "aarch64-linux-gnu-ar");
    c
}

pub fn target_dir() -> PathBuf {
    root().join("target").join("cross")
}

/// Debug aiesimd and aictl (the profile the tests share), checked to be aarch64 ELF with the BPF
/// object inside aiesimd.
pub fn build() -> anyhow::Result<()> {
    crate::run(cargo().args(["build", "--target", TARGET, "-p", "aiesimd", "-p", "aictl"]))?;
    let out = target_dir().join(TARGET).join("debug");
    for bin in ["aiesimd", "aictl"] {
        let path = out.join(bin);
        let file = crate::output(Command::new("file").arg("-b").arg(&path))?;
        if !(file.contains("ELF 64-bit") && file.contains("ARM aarch64")) {
            bail!("{} is not an aarch64 ELF: {}", path.display(), file.trim());
        }
        eprintln!(
            "cross: {bin}: {}",
            file.split(',').take(2).collect::<Vec<_>>().join(",")
        );
    }
    let object = bpf_object(&out)?;
    let object_bytes = std::fs::read(&object).with_context(|| format!("cannot read {}", object.display()))?;
    let daemon = std::fs::read(out.join("aiesimd")).context("cannot read the aarch64 aiesimd")?;
    if object_bytes.is_empty() || !contains(&daemon, &object_bytes) {
        bail!("the aarch64 aiesimd does not embed the BPF object {}", object.display());
    }
    eprintln!(
        "cross: aiesimd embeds the BPF object ({} bytes, {})",
        object_bytes.len(),
        object.display()
    );
    Ok(())
}

/// The BPF object aiesimd's build script wrote last for this target.
fn bpf_object(out: &Path) -> anyhow::Result<PathBuf> {
    let build = out.join("build");
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&build).with_context(|| format!("cannot list {}", build.display()))? {
        let path = entry?.path().join("out").join("aiesim-fastpath");
        let is_aiesimd = path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with("aiesimd-"));
        if let (true, Ok(meta)) = (is_aiesimd, std::fs::metadata(&path)) {
            let modified = meta.modified()?;
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, path));
            }
        }
    }
    newest
        .map(|(_, path)| path)
        .with_context(|| format!("no BPF object under {}", build.display()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .any(|(i, _)| haystack.get(i..i + needle.len()) == Some(needle))
}

/// One test binary to run under qemu: its crate and its directory (the tests' working directory,
/// as under cargo).
struct TestBinary {
    krate: String,
    dir: PathBuf,
    path: PathBuf,
}

/// Builds the pure tests for aarch64 and runs them under qemu-user, printing one line per crate.
pub fn test(tests: Tests) -> anyhow::Result<Tally> {
    let mut binaries = test_binaries(PURE_CRATES, &["--lib", "--tests"])?;
    let left_out: &[&str] = if tests == Tests::All { &[] } else { SLOW_TESTS };
    binaries.retain(|b| {
        let stem = b
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        !NOT_PURE_TESTS
            .iter()
            .chain(left_out)
            .any(|t| stem.starts_with(&format!("{t}-")))
    });
    if tests == Tests::All {
        // The daemon's unit tests are pure too (ledger, router, broker, scheduler, config, …).
        binaries.extend(test_binaries(&["aiesimd"], &["--lib"])?);
    } else {
        println!("cross: the suite's set: no sweeps, no aiesimd unit tests (cargo xtask cross --test runs them)");
    }
    let mut per_crate: Vec<(String, Tally)> = Vec::new();
    for binary in &binaries {
        let tally = run_under_qemu(binary)?;
        match per_crate.iter_mut().find(|(k, _)| *k == binary.krate) {
            Some((_, t)) => t.add(tally),
            None => per_crate.push((binary.krate.clone(), tally)),
        }
    }
    let mut total = Tally::default();
    for (krate, tally) in &per_crate {
        println!("cross: {krate}: {tally}");
        total.add(*tally);
    }
    if total.passed == 0 {
        bail!("no aarch64 test ran");
    }
    // A stale entry would hide nothing; an unknown `--skip` match would hide a test unnoticed.
    let expected = if tests == Tests::All {
        NOT_UNDER_QEMU.len() as u64
    } else {
        0
    };
    if total.filtered != expected {
        bail!(
            "{} test(s) left out under qemu, {expected} expected from NOT_UNDER_QEMU",
            total.filtered
        );
    }
    if expected > 0 {
        for (test, why) in NOT_UNDER_QEMU {
            println!("cross: not under qemu: {test}: {why}");
        }
    }
    Ok(total)
}

/// Builds the tests of `crates` (cargo test `selection` --no-run) and lists the binaries.
fn test_binaries(crates: &[&str], selection: &[&str]) -> anyhow::Result<Vec<TestBinary>> {
    let mut c = cargo();
    c.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
        "--target",
        TARGET,
    ])
    .args(selection);
    for krate in crates {
        c.args(["-p", krate]);
    }
    eprintln!("+ {}", display(&c));
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the aarch64 tests failed ({})", out.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(path), Some(manifest)) = (message["executable"].as_str(), message["manifest_path"].as_str()) else {
            continue;
        };
        if message["profile"]["test"] != serde_json::Value::Bool(true) {
            continue;
        }
        // "path+file:///…/daemon/qmi#aiesim-qmi@0.1.0", or "…/aiesimd#0.1.0" when the name is the
        // directory's.
        let id = message["package_id"].as_str().unwrap_or_default();
        let dir = Path::new(manifest).parent().unwrap_or(Path::new(".")).to_owned();
        let krate = id
            .rsplit_once('#')
            .and_then(|(_, rest)| rest.split_once('@').map(|(name, _)| name.to_owned()))
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        binaries.push(TestBinary {
            krate,
            dir,
            path: PathBuf::from(path),
        });
    }
    Ok(binaries)
}

/// Runs one test binary as `qemu-aarch64-static -L / BINARY`, echoing its result lines, and
/// counts its results; a binary that crashes, prints no result or outlives [`TEST_TIMEOUT`]
/// counts as one failure.
fn run_under_qemu(binary: &TestBinary) -> anyhow::Result<Tally> {
    let mut cmd = Command::new(QEMU);
    // `-L /`: the target's own loader and glibc (multiarch), never the cross one.
    cmd.args(["-L", "/"]).arg(&binary.path);
    for (test, _) in NOT_UNDER_QEMU {
        cmd.args(["--skip", test]);
    }
    cmd.current_dir(&binary.dir)
        .env_remove("QEMU_LD_PREFIX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ (cd {} && {})", binary.dir.display(), display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {QEMU}"))?;
    // Read both pipes on threads so a chatty test cannot block on a full pipe.
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > TEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let mut tally = Tally::default();
    let mut reported = false;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("test result: ") {
            reported = true;
            println!("{line}");
            // "ok. 120 passed; 0 failed; 0 ignored; 0 measured; 23 filtered out; finished in 5s"
            for part in rest.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                let (n, kind) = match words.as_slice() {
                    [.., n, "filtered", "out"] => (n, "filtered"),
                    [.., n, kind] => (n, *kind),
                    _ => continue,
                };
                let n: u64 = n.parse().unwrap_or(0);
                match kind {
                    "passed" => tally.passed += n,
                    "failed" => tally.failed += n,
                    "ignored" => tally.ignored += n,
                    "filtered" => tally.filtered += n,
                    _ => {}
                }
            }
        }
    }
    let name = binary.path.file_name().unwrap_or_default().to_string_lossy();
    let failed_run = match status {
        None => Some(format!("still running after {} s: killed", TEST_TIMEOUT.as_secs())),
        Some(s) if !s.success() || !reported => Some(format!("ended with {s}")),
        Some(_) => None,
    };
    if let Some(why) = failed_run {
        println!("{out}{err}");
        println!("cross: {} ({name}) {why}", binary.krate);
        if tally.failed == 0 {
            tally.failed = 1;
        }
    }
    Ok(tally)
}

/// What the cross step adds to `cargo xtask test`'s summary.
#[derive(Default)]
pub struct InSuite {
    pub tally: Tally,
    /// "test\treason" for what did not run: the whole step when it could not (outside CI
    /// only), else the tests qemu-user cannot run. None of them counted as passed.
    pub skipped: Vec<String>,
}

/// The cross step of `cargo xtask test`: build and the pure tests under qemu-user. Missing
/// packages that cannot be installed (not root) skip it outside CI and fail it under CI; a build
/// that fails fails.
pub fn in_suite(ci: bool) -> anyhow::Result<InSuite> {
    if let Err(e) = install() {
        if ci {
            return Err(e.context("the aarch64 cross step cannot run"));
        }
        eprintln!("cross: skipped: {e:#}");
        return Ok(InSuite {
            tally: Tally::default(),
            skipped: vec![format!("cross ({TARGET})\t{}", format!("{e:#}").replace('\n', " "))],
        });
    }
    build()?;
    let tally = test(Tests::Suite)?;
    println!("cross: {TARGET}: {tally}");
    // The suite's set holds none of NOT_UNDER_QEMU's tests; should it one day, they are listed.
    let listed: &[(&str, &str)] = if tally.filtered > 0 { NOT_UNDER_QEMU } else { &[] };
    let skipped = listed
        .iter()
        .map(|(test, why)| format!("{test} (aarch64, qemu-user)\t{why}"))
        .collect();
    Ok(InSuite { tally, skipped })
}
