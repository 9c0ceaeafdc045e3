//! Project tasks: `cargo xtask <setup|build|demo|test|cross|install>`.

mod bench;
mod cross;
mod deb;
mod demo;
mod fuzz;
mod install;
mod setup;
mod world;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const HELP: &str = "\
cargo xtask — aiesim project tasks

USAGE: cargo xtask <TASK> [OPTIONS]

TASKS:
  setup                 Install everything the project needs on this machine (Debian packages,
                        bpf-linker, the test cloud's model and runtime). Idempotent.
  build [--release]     Build every binary (the BPF program is built and embedded by aiesimd).
  demo                  setup + release build, then run the whole stack on the simulated modem
                        and a local model as the cloud: ask a question, print the streamed
                        answer and the tokens charged. Cleans up after itself.
  world [--mbim] [--for SECONDS]
                        setup + release build, then start the simulated world (a private bus,
                        the simulated modem (QMI, or MBIM) with its AI-eSIM, the operator network
                        with the real model as the card's endpoint, aiesimd) and keep it up until
                        Ctrl-C; prints the one line that points aictl, busctl, gdbus and
                        qmicli/mbimcli at it. Cleans up after itself.
  test                  setup + format check + clippy + build + the aarch64 cross step (below,
                        with --suite) + the whole test suite (unit and end-to-end; end-to-end
                        tests need root); with CI set, the fuzz smoke pass too. The summary
                        counts the aarch64 tests with the native ones.
  cross [--test | --suite]
                        aiesimd and aictl (debug) for aarch64-unknown-linux-gnu, the reference
                        boards, with Debian's toolchain (installs the arm64 packages it needs
                        with apt, as root); checks they are aarch64 ELF and that aiesimd embeds
                        the BPF object. With --test, builds the pure tests (codecs, journal,
                        credential, wire, aiesimd's unit tests) for aarch64 and runs them under
                        qemu-user, one line per crate; --suite runs test's cheaper set (no
                        sweeps, no aiesimd unit tests). Builds in target/cross; docs/aarch64.md.
  fuzz [--seconds N | --runs N | --smoke] [--only CRATE[/TARGET]]...
                        Run every cargo-fuzz target (or those named) for N seconds each (default
                        60), N inputs each, or in the smoke pass (its corpus, then 4000 inputs),
                        and print executions, coverage and findings per target. Works on the
                        stable toolchain; installs cargo-fuzz into .tools on first use. Builds
                        in target/fuzz, logs in target/fuzz/logs, each run added to
                        target/fuzz/history.tsv. `test` runs the smoke pass when CI is set.
  faults [--rounds N]   The fault campaign over the simulated world (root): N rounds (default 15,
                        one per fault), each injecting a fault while an answer streams (modem
                        reset, function restart, stall, garbage; card removal, failing card
                        commands; SIGKILL or SIGTERM of aiesimd and a restart; a bus daemon
                        restart) or into the answer (the cloud's 503, a stall before or after
                        the first token, a broken stream, no usage), then checking the
                        invariants (bus answers in 5 s, charges match what the app was told or
                        received or the ledger's rule for a failed stream, budget, nothing
                        reserved or running, QMI client ids, fds); prints a table of rounds,
                        faults, requests and violations.
  load [--seconds N] [--apps N] [--streams N]
                        Load through the real bus (root): N apps (default 50), each a process in
                        a cgroup of its own, keep N streams (default 500) open at once in waves
                        for N seconds (default 180) against the release daemon, the test cloud's
                        stub standing in for the model; prints samples of the daemon's RSS, fds,
                        D-Bus objects and streams in flight, then checks that every stream ended
                        with its answer or a named error, each app's charges are what it was
                        told and the device's their sum, nothing stays reserved, fds and objects
                        come back to idle and RSS stays bounded.
  bench [daemon|classifier] [--report FILE]
                        Release build, then measure the daemon's core against baselines taken
                        in the same run (ledger with its durable journal vs in memory; commits
                        per fsync; routing; scheduling; the fast path as root; the daemon's own
                        packets per idle hour on the simulated operator network), and, as root,
                        the whole daemon in the simulated world: start to READY=1 against
                        spawning `true`, idle RSS against ModemManager's on a private bus
                        (`daemon`: only these; `classifier`: only the fast-path classifier's
                        cost per packet against an empty TC program, as root). Ends with one
                        table of every figure: value, baseline, ratio, target, met; --report
                        writes it as Markdown with the machine it ran on (docs/BENCHMARKS.md).
  deb [--out DIR] [--debug] [--no-build]
                        A Debian package (dpkg-deb) of the install tree with the /usr prefix:
                        the configuration is a conffile; postinst creates the users and the
                        state directory (systemd-sysusers, systemd-tmpfiles) and reloads the bus;
                        purge removes /var/lib/aiesim. Written to target/deb by default.
  install --destdir DIR [--prefix /usr] [--release] [--no-build]
                        Lay out the install tree under DIR (a staging root for packaging):
                        binaries, manual pages and shell completions (bash, zsh, fish) generated
                        by the binaries, the systemd unit, sysusers.d, tmpfiles.d, the D-Bus
                        policy, activation file and interface XML, the polkit actions, and the
                        example configuration in /etc/aiesim.
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        print!("{HELP}");
        bail!("no task given");
    };
    let rest = &args[1..];
    match task.as_str() {
        "setup" => setup::run(),
        "build" => build(rest.iter().any(|a| a == "--release")),
        "demo" => {
            setup::run()?;
            build(true)?;
            demo::run()
        }
        "world" => {
            let options = world::Options::parse(rest)?;
            setup::run()?;
            build(true)?;
            world::run(&options)
        }
        "test" => test(),
        "cross" => cross::run(&cross::Options::parse(rest)?),
        "fuzz" => fuzz::run(&fuzz::Options::parse(rest)?),
        "bench" => bench::run(rest),
        "faults" => faults(rest),
        "load" => load(rest),
        "deb" => deb::run(rest).map(drop),
        "install" => install::run(&install::Options::parse(rest)?).map(drop),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        other => {
            print!("{HELP}");
            bail!("unknown task \"{other}\"")
        }
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    without_cargo_run_env(&mut c);
    c
}

/// Drops the variables `cargo run` set for xtask itself: build scripts that watch them (ring's)
/// would otherwise rebuild whenever a build alternates between xtask and a plain cargo call.
fn without_cargo_run_env(c: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(key);
        }
    }
}

/// Runs a command, echoing it first, and fails if it fails.
/// What a command printed, or why it failed.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", display(cmd));
    let status = cmd.status().with_context(|| format!("cannot run {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn build(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "--workspace", "--bins"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)
}

fn test() -> anyhow::Result<()> {
    // CI is set to anything but empty, false or 0 (aiesim-skip's rule, which the tests follow).
    let ci = std::env::var("CI").is_ok_and(|v| !(v.is_empty() || v == "false" || v == "0"));
    if ci && !is_root() {
        bail!("CI runs the kernel and D-Bus tests, which need root");
    }
    setup::run()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    build(false)?;
    // The API examples run against a live daemon in the end-to-end tests.
    run(cargo().args(["build", "-p", "aiesim-dbus", "--examples"]))?;
    // The reference boards are aarch64: the cross build and the pure tests under qemu-user.
    let cross = cross::in_suite(ci)?;
    if ci {
        // Every fuzz target over its corpus and a few thousand fresh inputs; before the tests so
        // that their summary stays the last line.
        fuzz::run(&fuzz::Options::parse(&["--smoke".to_owned()])?)?;
    }
    cargo_test(&cross, ci)
}

/// The fault campaign (`tests/e2e/tests/faults.rs`) for `--rounds N` rounds (default: one per
/// fault), its table printed.
fn faults(args: &[String]) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["test", "-p", "aiesim-e2e", "--test", "faults", "--", "--nocapture"]);
    match args {
        [] => {}
        [flag, n] if flag == "--rounds" => {
            let n: u32 = n.parse().context("--rounds needs a number")?;
            c.env("AIESIM_FAULT_ROUNDS", n.to_string());
        }
        _ => bail!("usage: cargo xtask faults [--rounds N]"),
    }
    if !is_root() {
        bail!("the fault campaign runs the simulated world, which needs root");
    }
    build(false)?;
    run(&mut c)
}

/// The load run (`tests/e2e/tests/load.rs`) for minutes against the release daemon.
fn load(args: &[String]) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["test", "-p", "aiesim-e2e", "--test", "load", "--", "--nocapture"])
        .env("AIESIM_LOAD_PROFILE", "release")
        .env("AIESIM_LOAD_SECONDS", "180");
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let var = match flag.as_str() {
            "--seconds" => "AIESIM_LOAD_SECONDS",
            "--apps" => "AIESIM_LOAD_APPS",
            "--streams" => "AIESIM_LOAD_STREAMS",
            _ => bail!("usage: cargo xtask load [--seconds N] [--apps N] [--streams N]"),
        };
        let n: u32 = rest
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{flag} needs a number"))?;
        c.env(var, n.to_string());
    }
    if !is_root() {
        bail!("the load run uses the simulated world, which needs root");
    }
    build(true)?;
    run(&mut c)
}

/// Runs the workspace's tests, echoing their output, and ends with one summary line over all
/// test binaries (cargo prints one per binary, the last often a doc-test run of none) and the
/// aarch64 tests run before.
fn cargo_test(cross: &cross::InSuite, ci: bool) -> anyhow::Result<()> {
    // Tests that skip for a missing prerequisite say so in this file (aiesim-skip).
    let skips_file = root().join("target").join("test-skips");
    let _ = std::fs::remove_file(&skips_file);
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .env("AIESIM_SKIPS", &skips_file)
        .stdout(std::process::Stdio::piped());
    eprintln!("+ {}", display(&cmd));
    let mut child = cmd.spawn().context("cannot run cargo test")?;
    let out = child.stdout.take().context("cargo test's stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    passed += cross.tally.passed;
    failed += cross.tally.failed;
    ignored += cross.tally.ignored;
    // A skipped test returned early, so cargo counted it as passed.
    let skips = std::fs::read_to_string(&skips_file).unwrap_or_default();
    let mut skipped: Vec<&str> = skips.lines().collect();
    skipped.sort_unstable();
    skipped.dedup_by(|a, b| a.split('\t').next() == b.split('\t').next());
    let native_skips = u64::try_from(skipped.len()).unwrap_or(u64::MAX);
    // The aarch64 tests left out never ran: nothing to take off `passed` for them.
    skipped.extend(cross.skipped.iter().map(String::as_str));
    for line in &skipped {
        let (test, reason) = line.split_once('\t').unwrap_or((line, ""));
        println!("skipped: {test}: {reason}");
    }
    let passed = passed.saturating_sub(native_skips);
    let ignored = ignored + u64::try_from(skipped.len()).unwrap_or(u64::MAX);
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if cross.tally.failed > 0 {
        bail!("{} aarch64 test(s) failed under qemu-user", cross.tally.failed);
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    // Skipped or #[ignore]d, a test CI did not run is a failure there (aiesim-skip fails a
    // native skip itself; this catches the rest).
    if ci && ignored > 0 {
        bail!("{ignored} test(s) skipped or ignored under CI");
    }
    Ok(())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
