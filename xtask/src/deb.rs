//! `cargo xtask deb [--out DIR] [--debug] [--no-build]`: a Debian package built with dpkg-deb
//! from the install tree (`/usr` prefix), with the configuration as a conffile and maintainer
//! scripts that create the users (sysusers.d), the state directory (tmpfiles.d) and tell the
//! system bus and systemd about the new files.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{install, root};

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    systemd-sysusers /usr/lib/sysusers.d/aiesim.conf
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/aiesim.conf
    # The configuration names no secret, but stays readable by the daemon's group only.
    chgrp aiesim /etc/aiesim/aiesimd.toml
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
    # The bus reads the new policy and activation file.
    dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
fi
exit 0
"#;

const PRERM: &str = r"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl stop aiesimd.service >/dev/null 2>&1 || true
fi
exit 0
";

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
    # The ledger journal: the device's spending record; purge means the device forgets it.
    rm -rf /var/lib/aiesim
fi
exit 0
"#;

/// Builds the package; returns its path.
pub fn run(args: &[String]) -> anyhow::Result<PathBuf> {
    let mut out_dir = root().join("target/deb");
    let (mut release, mut build) = (true, true);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out_dir = PathBuf::from(args.next().context("--out takes a directory")?),
            "--debug" => release = false,
            "--no-build" => build = false,
            other => bail!("unknown option {other:?} for deb (--out DIR, --debug, --no-build)"),
        }
    }
    let staging = staging_dir(&out_dir)?;
    let files = install::run(&install::Options {
        destdir: staging.clone(),
        prefix: "/usr".into(),
        release,
        build,
    })?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = crate::output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let installed_kib: u64 = files
        .iter()
        .map(|f| std::fs::metadata(staging.join(f)).map_or(0, |m| m.len()))
        .sum::<u64>()
        .div_ceil(1024);
    let debian = staging.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: aiesim\nVersion: {version}\nArchitecture: {arch}\nMaintainer: aiesim developers <aiesim@localhost>\n\
             Installed-Size: {installed_kib}\nDepends: libc6, dbus, systemd\nRecommends: polkitd\nSection: net\nPriority: optional\n\
             Description: cloud AI for devices with an AI-eSIM\n aiesimd talks to the cellular modem and its eSIM over QMI or MBIM, serves\n \
             cloud AI to the device's apps over D-Bus with token budgets, and prioritises AI\n traffic with an eBPF classifier; aictl is its command line.\n"
        ),
    )?;
    std::fs::write(debian.join("conffiles"), "/etc/aiesim/aiesimd.toml\n")?;
    for (name, text) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        let path = debian.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let deb = out_dir.join(format!("aiesim_{version}_{arch}.deb"));
    crate::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&staging)
            .arg(&deb),
    )?;
    std::fs::remove_dir_all(&staging)?;
    println!("built {}", deb.display());
    Ok(deb)
}

/// A fresh staging directory under `out`.
fn staging_dir(out: &std::path::Path) -> anyhow::Result<PathBuf> {
    let staging = out.join(format!("staging-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot make {}", staging.display()))?;
    Ok(staging)
}
