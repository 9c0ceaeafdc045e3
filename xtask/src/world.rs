//! `cargo xtask world`: the simulated world kept up for trying things by hand — a private
//! system bus, the simulated modem with its AI-eSIM, the operator network with the real model as
//! the card's cloud endpoint, and aiesimd — until Ctrl-C.

use std::time::Duration;

use aiesim_e2e::{MODEL_NAME, World, WorldOptions, missing_prerequisites};
use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal};

/// What the card's account starts with.
const TOKENS: u64 = 100_000;

/// How the world is started.
#[derive(Debug, Default)]
pub struct Options {
    pub mbim: bool,
    /// Stop after this long instead of waiting for a signal (for scripts).
    pub stop_after: Option<Duration>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--mbim" => options.mbim = true,
                "--for" => {
                    let seconds = args.next().context("--for takes a number of seconds")?;
                    let seconds: u64 = seconds
                        .parse()
                        .with_context(|| format!("--for takes a number of seconds, not {seconds:?}"))?;
                    options.stop_after = Some(Duration::from_secs(seconds));
                }
                other => bail!("unknown option {other:?} for world (try --mbim or --for SECONDS)"),
            }
        }
        Ok(options)
    }
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if let Some(why) = missing_prerequisites("release") {
        bail!("the world cannot run here: {why}");
    }
    let world = World::start(&WorldOptions {
        profile: "release".into(),
        modem_protocol: if options.mbim { "mbim" } else { "qmi" },
        // Zero configuration: the card provisions the endpoint and holds the token account.
        config_endpoints: false,
        sim_args: vec![
            "--endpoint".into(),
            format!("metro,{{cloud_url}},metro,{MODEL_NAME}:2048:512,1"),
            "--tokens".into(),
            TOKENS.to_string(),
        ],
        ..WorldOptions::default()
    })
    .context("cannot start the world")?;
    let tool = if options.mbim { "mbimcli" } else { "qmicli" };
    println!("== aiesim world is up (Ctrl-C stops it and removes everything it started)");
    println!(
        "   aiesimd  pid {}, in network namespace {}",
        world.daemon.pid(),
        world.device_netns().name()
    );
    println!(
        "   cloud    {} (the real model, in namespace {})",
        world.cloud_url,
        world.operator_netns().name()
    );
    println!(
        "   modem    {} ({tool} through aiesimd's proxy)",
        world.modem_link().display()
    );
    println!(
        "   faults   the simulator's control socket {} (one command a line; help lists them)",
        world.dir().join("modem-control").display()
    );
    println!("\nIn another shell, paste this line, then try aictl status, aictl esim, aictl ask \"Hi\":\n");
    println!(
        "export AIESIM_BUS='{bus}' DBUS_SYSTEM_BUS_ADDRESS='{bus}'; alias {tool}='ip netns exec {ns} {tool} -p{open} -d {link}'",
        bus = world.bus_address,
        ns = world.device_netns().name(),
        link = world.modem_link().display(),
        // A pseudo-terminal has no USB driver to tell qmicli the protocol.
        open = if options.mbim { "" } else { " --device-open-qmi" },
    );
    wait(options.stop_after)?;
    println!("\n== stopping the world");
    drop(world);
    Ok(())
}

/// Until SIGINT or SIGTERM, or `stop_after`.
fn wait(stop_after: Option<Duration>) -> anyhow::Result<()> {
    if let Some(after) = stop_after {
        std::thread::sleep(after);
        return Ok(());
    }
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    // Blocked only now, so the world's processes did not inherit the mask.
    signals.thread_block().context("cannot block SIGINT and SIGTERM")?;
    signals.wait().context("cannot wait for a signal")?;
    Ok(())
}
