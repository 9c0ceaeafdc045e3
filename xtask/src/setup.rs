//! `cargo xtask setup`: everything the project needs on a fresh Debian bookworm machine.

use std::{process::Command, thread::sleep, time::Duration};

use anyhow::{Context as _, bail};

use crate::{output, root};

/// Debian packages, except the LLVM development package, whose major version must match the
/// LLVM of rustc-web and is read from it once installed.
const PACKAGES: &[&str] = &[
    // The BPF program: Debian's rustc with a prebuilt core for bpfel-unknown-none.
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    // Network namespaces, veth and tun for the data path; ping for checks.
    "iproute2",
    "iputils-ping",
    // A real bus, polkit and bus clients for the D-Bus tests.
    "dbus",
    "dbus-bin",
    "polkitd",
    "libglib2.0-bin",
    "python3-dbus",
    // The C example of the API (docs/examples/ask.c) builds against sd-bus.
    "libsystemd-dev",
    "pkg-config",
    "python3-cryptography",
    // Real modem peers for the simulator.
    "libqmi-utils",
    "libmbim-utils",
    "tshark",
    // `cargo xtask bench` compares the daemon's idle memory with ModemManager's.
    "modemmanager",
    // The test cloud: the model comes from a PyPI wheel, its runtime from npm.
    "python3-pip",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    eprintln!("setup: Debian packages");
    apt_install(PACKAGES)?;
    let llvm = rustc_web_llvm_major()?;
    apt_install(&[&format!("llvm-{llvm}-dev")])?;

    eprintln!("setup: the Debian toolchain as rustup toolchain \"debian-bpf\"");
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if toolchains.lines().any(|l| l.starts_with("debian-bpf")) {
        eprintln!("  already linked");
    } else {
        crate::run(Command::new("rustup").args(["toolchain", "link", "debian-bpf", "/usr"]))?;
    }

    eprintln!("setup: bpf-linker {BPF_LINKER_VERSION} into .tools/bin");
    let tools = root().join(".tools");
    let linker = tools.join("bin/bpf-linker");
    let have = Command::new(&linker)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have.as_deref().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        eprintln!("  already installed");
    } else {
        crate::run(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--no-default-features",
                ])
                .args(["--features", &format!("llvm-{llvm}")])
                .arg("--root")
                .arg(&tools)
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}")),
        )?;
    }

    eprintln!("setup: the test cloud (model and runtime)");
    crate::run(Command::new("sh").arg(root().join("tests/cloud/setup.sh")).arg(root()))?;
    eprintln!("setup: done");
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("  all installed: {}", packages.join(" "));
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "missing Debian packages ({}); run setup as root or install them with apt-get",
            missing.join(" ")
        );
    }
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

/// Runs apt-get, waiting for another apt run's lock to go away.
fn apt(args: &[&str]) -> anyhow::Result<()> {
    for attempt in 1..=30 {
        let mut cmd = Command::new("apt-get");
        cmd.args(["-o", "DPkg::Lock::Timeout=60"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        eprintln!("+ apt-get {}", args.join(" "));
        let out = cmd.output().context("cannot run apt-get")?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("lock") && attempt < 30 {
            eprintln!("  apt is busy (another apt run holds the lock); retrying in 10 s");
            sleep(Duration::from_secs(10));
            continue;
        }
        bail!(
            "apt-get {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            err
        );
    }
    unreachable!("the last attempt returns")
}

/// The LLVM major version rustc-web was built with, from `/usr/bin/rustc -vV`.
fn rustc_web_llvm_major() -> anyhow::Result<String> {
    let v = output(Command::new("/usr/bin/rustc").arg("-vV"))?;
    let llvm = v
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("/usr/bin/rustc -vV names no LLVM version")?;
    Ok(llvm.to_owned())
}
