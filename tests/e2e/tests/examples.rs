//! The API examples in docs/examples and dbus/examples, in Python (python3-dbus), C (sd-bus)
//! and Rust (the client crate's typed proxies), run against a live daemon as an app would.

use std::process::Command;

use aiesim_e2e::{
    World, WorldOptions, bin_dir, output_text as text, repo_root, skip_if_missing, skip_unless_ready, which,
};

fn charged(out: &std::process::Output) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("charged "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no charge printed: {}", text(out)))
}

#[test]
fn the_api_examples_ask_and_are_charged() {
    let test = "the_api_examples_ask_and_are_charged";
    if skip_unless_ready(test) {
        return;
    }
    // `cargo xtask test` builds it (`cargo build -p aiesim-dbus --examples`).
    let rust = bin_dir("debug").join("examples/ask");
    // Debian's python3, which has python3-dbus (`cargo xtask setup` installs it).
    let python = "/usr/bin/python3";
    let missing = [
        ("python3", !std::path::Path::new(python).exists()),
        ("cc", which("cc").is_none()),
    ]
    .iter()
    .find(|(_, missing)| *missing)
    .map(|(tool, _)| format!("{tool} is not installed"))
    .or_else(|| {
        (!rust.exists()).then(|| "the Rust example is not built (cargo build -p aiesim-dbus --examples)".into())
    });
    if skip_if_missing(test, missing) {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c_binary = dir.path().join("ask");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libsystemd"])
        .output()
        .unwrap();
    assert!(flags.status.success(), "libsystemd-dev: {}", text(&flags));
    let build = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(&c_binary)
        .arg(repo_root().join("docs/examples/ask.c"))
        .args(String::from_utf8_lossy(&flags.stdout).split_whitespace())
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));

    let mut python = Command::new(python);
    python.arg(repo_root().join("docs/examples/ask.py"));
    let mut c = Command::new(&c_binary);
    let mut rust = Command::new(&rust);
    for (name, command) in [("python", &mut python), ("c", &mut c), ("rust", &mut rust)] {
        let out = command
            .arg("Say hi.")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus_address)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}\n{}", text(&out), world.daemon.log());
        assert!(charged(&out) > 0, "{name}: {}", text(&out));
    }
}
