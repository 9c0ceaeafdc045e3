//! Throwaway network namespaces, deleted on drop.

use std::{
    ffi::OsStr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `aiesim-<tag>-<pid>-<n>` with loopback up.
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let name = format!(
            "aiesim-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(["netns", "add", &name])?;
        let ns = Self { name };
        ip(["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `ip -n <ns> args…`.
    pub fn ip<'a>(&'a self, args: impl IntoIterator<Item = &'a str>) -> anyhow::Result<String> {
        let mut all: Vec<&str> = vec!["-n", self.name.as_str()];
        all.extend(args);
        ip(all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(["netns", "delete", &self.name]);
    }
}

/// Links two namespaces with a veth pair, `a_addr`/30 and `b_addr`/30, both up.
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) -> anyhow::Result<()> {
    ip([
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(["addr", "add", &format!("{a_addr}/30"), "dev", a_if])?;
    b.ip(["addr", "add", &format!("{b_addr}/30"), "dev", b_if])?;
    a.ip(["link", "set", a_if, "up"])?;
    b.ip(["link", "set", b_if, "up"])?;
    Ok(())
}

fn ip<'a>(args: impl IntoIterator<Item = &'a str>) -> anyhow::Result<String> {
    let args: Vec<&str> = args.into_iter().collect();
    let out = Command::new("ip")
        .args(&args)
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
