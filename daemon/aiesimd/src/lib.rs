//! aiesimd: the aiesim daemon as a library, so that its parts are tested on their own.
//!
//! The core (`broker`, `ledger`, `router`) is plain Rust and never knows who called it; the
//! D-Bus front end in `service` only translates. The modem, the cloud, the clock and the
//! caller's identity come in through traits so tests control them.

pub mod broker;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod esim;
pub mod fastpath;
pub mod identity;
pub mod ledger;
pub mod memory;
pub mod modem;
pub mod reload;
pub mod router;
pub mod scheduler;
pub mod service;

#[cfg(test)]
mod layers {
    /// The core (broker, ledger, router, cloud client, eSIM, modem, fast path) knows nothing of
    /// D-Bus: only the front end (`service/`), the caller identity (bus credentials) and the
    /// binary may name zbus or the D-Bus crate.
    #[test]
    fn the_core_knows_nothing_of_dbus() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src.clone()];
        let mut checked = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if rel != "service" {
                        stack.push(path);
                    }
                    continue;
                }
                if ["identity.rs", "main.rs", "lib.rs"].contains(&rel.as_str()) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for word in ["zbus", "aiesim_dbus"] {
                    assert!(!text.contains(word), "{rel} names {word}");
                }
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} core files found");
    }
}
