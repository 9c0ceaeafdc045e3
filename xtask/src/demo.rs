//! `cargo xtask demo`: the whole stack on the simulated modem, with a real model as the cloud.

use std::{process::Command, time::Instant};

use aiesim_e2e::{MODEL_FILE, World, WorldOptions, missing_prerequisites};
use anyhow::{Context as _, bail};

const QUESTION: &str = "What is an eSIM? Answer in one short sentence.";

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(why) = missing_prerequisites("release") {
        bail!("the demo cannot run here: {why}");
    }
    println!("== aiesim demo: simulated QMI modem, {MODEL_FILE} as the cloud, a private system bus");
    let world = World::start(&WorldOptions {
        profile: "release".into(),
        ..WorldOptions::default()
    })
    .context("cannot start the demo's world")?;
    println!("   bus      {}", world.bus_address);
    println!(
        "   cloud    {} (in network namespace {})",
        world.cloud_url,
        world.operator_netns().name()
    );
    println!(
        "   aiesimd  pid {} in namespace {}, READY after {} ms, idle RSS {} KiB",
        world.daemon.pid(),
        world.device_netns().name(),
        world.ready_after.as_millis(),
        world.daemon_rss_kib()?
    );

    show(world.aictl().arg("status"), "aictl status")?;
    show(
        world.aictl().arg("modem"),
        "aictl modem   # the live QMI session on the simulated modem",
    )?;
    show(
        world.aictl().args(["ask", "--max-tokens", "48", QUESTION]),
        &format!("aictl ask \"{QUESTION}\""),
    )?;
    show(
        world.aictl().arg("status"),
        "aictl status   # the answer's packets crossed wwan0's classifier",
    )?;

    drop(world);
    println!(
        "== demo finished in {:.1} s; everything it started is stopped",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn show(cmd: &mut Command, title: &str) -> anyhow::Result<()> {
    println!("\n$ {title}");
    let status = cmd.status().context("cannot run aictl")?;
    if !status.success() {
        bail!("`{title}` failed ({status})");
    }
    Ok(())
}
