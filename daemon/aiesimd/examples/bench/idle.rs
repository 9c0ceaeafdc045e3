//! The radio while no app is active, for `cargo xtask bench` (needs root and the simulated
//! world: network namespaces, the model, the built binaries).
//!
//! The daemon runs on the simulated operator network (`aiesim_e2e::opnet`) bound to its
//! `wwan0`; one app asks once, then nobody asks. Every packet the device sends on the uplink
//! after the keep-alive window is counted over [`IDLE`] and extrapolated to an hour; the
//! baseline is what the one request itself sent.

use std::time::Duration;

use aiesim_e2e::{
    CloudOptions, CloudTls, World, WorldOptions,
    bench::{Figure, Target},
    opnet::{UPLINK, link_packets},
};

/// How long the idle uplink is watched.
const IDLE: Duration = Duration::from_secs(30);
/// `cloud.keepalive_window_ms` as shipped, and a margin for the connection's close to finish.
const WINDOW: Duration = Duration::from_secs(30);
const MARGIN: Duration = Duration::from_secs(3);

pub fn main() {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    if let Some(why) = aiesim_e2e::missing_prerequisites(profile) {
        println!("idle radio: skipped ({why})");
        return;
    }
    if let Err(e) = measure(profile) {
        println!("idle radio: failed ({e:#})");
    }
}

fn measure(profile: &str) -> anyhow::Result<()> {
    let world = World::start(&WorldOptions {
        profile: profile.to_owned(),
        operator_network: true,
        cloud: CloudOptions {
            tls: CloudTls::Trusted,
            ..CloudOptions::default()
        },
        ..WorldOptions::default()
    })?;
    let sent = || link_packets(world.device_netns(), UPLINK).map(|(tx, _)| tx);
    let before = sent()?;
    let out = world.aictl().args(["ask", "--max-tokens", "4", "Say hi."]).output()?;
    anyhow::ensure!(out.status.success(), "{}", aiesim_e2e::output_text(&out));
    let request = sent()? - before;
    std::thread::sleep(WINDOW + MARGIN);
    let start = sent()?;
    std::thread::sleep(IDLE);
    let idle = sent()? - start;
    #[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
    let per_hour = idle as f64 * 3_600.0 / IDLE.as_secs_f64();
    println!(
        "radio while no app is active ({} s watched after the {} s keep-alive window, {UPLINK} on the simulated operator network):",
        IDLE.as_secs(),
        WINDOW.as_secs()
    );
    #[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
    let request = request as f64;
    Figure::new("idle radio packets per hour, no app active", per_hour, "packets")
        .against("one request's packets", request)
        .target(Target::AtMost(0.0))
        .record();
    Ok(())
}
