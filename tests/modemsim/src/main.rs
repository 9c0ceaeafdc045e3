//! aiesim-modemsim: a simulated cellular modem on a pseudo-terminal.
//!
//! It exposes a control port like a modem's `/dev/cdc-wdm0` and answers QMI on it, so the
//! daemon, the end-to-end tests and real `qmicli` can talk to it without hardware. The
//! transport (`pty`), the byte pump (`control`) and the device models (`qmi`) are separate so
//! that MBIM, a simulated eUICC and fault injection slot in beside them.

mod control;
mod euicc;
mod mbim;
mod pty;
mod qmi;
mod world;

use std::{io::IsTerminal as _, net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Serve a simulated modem's control port on a pseudo-terminal.
///
/// Prints `PTY /dev/pts/N` on stdout once clients may open the port (and again whenever the
/// port comes back after a simulated reset), then serves until SIGTERM or SIGINT, and removes
/// the --link symlink on the way out. Faults are injected at run time through --control: one
/// command per line (`echo help | socat - UNIX:PATH` lists them). Logs go to stderr
/// (RUST_LOG, default info).
#[derive(Debug, Parser)]
#[command(version)]
#[expect(
    clippy::doc_markdown,
    reason = "these doc comments are the --help text, where backticks would show"
)]
struct Args {
    /// The control protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Qmi)]
    protocol: Protocol,
    /// Where to create a symlink to the pseudo-terminal (like /dev/cdc-wdm0).
    #[arg(long)]
    link: PathBuf,
    /// The IMEI DMS Get IDs reports (15 digits).
    #[arg(long, default_value = "356938035643809", value_parser = parse_imei)]
    imei: String,
    /// What DMS Get Manufacturer reports.
    #[arg(long, default_value = "aiesim")]
    manufacturer: String,
    /// What DMS Get Model reports.
    #[arg(long, default_value = "AI-eSIM simulated modem")]
    model: String,
    /// What DMS Get Revision reports.
    #[arg(long, default_value = concat!("aiesim-modemsim ", env!("CARGO_PKG_VERSION")))]
    revision: String,
    /// A UNIX socket taking fault-injection commands (reset, stall, garbage, card remove, ...).
    #[arg(long)]
    control: Option<PathBuf>,
    /// The signal's base level, RSSI in dBm; it drifts a few dB below that over time.
    #[arg(long, default_value_t = -65, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i8).range(-113..=-51))]
    rssi: i8,
    /// The IPv4 address and prefix length the data session reports.
    #[arg(long, default_value = "192.0.2.2/24", value_parser = parse_prefix)]
    ipv4: (Ipv4Addr, u8),
    /// The data session's gateway.
    #[arg(long, default_value = "192.0.2.1")]
    gateway: Ipv4Addr,
    /// The data session's DNS servers (two).
    #[arg(long, num_args = 2, default_values = ["192.0.2.53", "192.0.2.54"])]
    dns: Vec<Ipv4Addr>,
    /// The data session's MTU.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// At most this many QMI client ids per service (fewer exhausts them sooner).
    #[arg(long, default_value_t = 32)]
    max_clients: usize,
    /// Every answer waits this many milliseconds (a slow modem).
    #[arg(long, default_value_t = 0)]
    answer_delay_ms: u64,
    /// Start with the SIM card removed.
    #[arg(long)]
    no_card: bool,
    /// Write every MBIM transfer the host sends to this pcap (linktype USER0, for tshark).
    #[arg(long)]
    capture: Option<PathBuf>,
    #[command(flatten)]
    card: euicc::Options,
}

fn parse_prefix(value: &str) -> Result<(Ipv4Addr, u8), String> {
    let (address, prefix) = value
        .split_once('/')
        .ok_or_else(|| format!("expected ADDRESS/PREFIX, not {value:?}"))?;
    let address = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IPv4 address"))?;
    let prefix = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-32)"))?;
    Ok((address, prefix))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Qmi,
    Mbim,
}

fn parse_imei(value: &str) -> Result<String, String> {
    if value.len() == 15 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err(format!("an IMEI is 15 decimal digits, not {value:?}"))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let Args {
        protocol,
        link,
        imei,
        manufacturer,
        model,
        revision,
        control,
        rssi,
        ipv4: (address, prefix_len),
        gateway,
        dns,
        mtu,
        max_clients,
        answer_delay_ms,
        no_card,
        capture,
        card,
    } = args;
    let identity = world::Identity {
        imei,
        manufacturer,
        model,
        revision,
    };
    let addressing = world::Addressing {
        address,
        prefix_len,
        gateway,
        dns: [dns[0], dns[1]],
        mtu,
    };
    let mut world = world::World::new(identity, addressing, rssi);
    world.uicc.configure_euicc(&card.into())?;
    world.faults.max_clients_per_service = max_clients;
    world.set_card_present(!no_card);
    world.take_changes();

    // Signals are taken before the port is announced, so a prompt SIGTERM still cleans up.
    let signals = control::Signals::new().context("could not take over SIGTERM and SIGINT")?;
    let control = control.as_deref().map(control::ControlSocket::bind).transpose()?;
    let port = control::Port::open(&link)?;
    let answer_delay = Duration::from_millis(answer_delay_ms);
    if capture.is_some() && protocol != Protocol::Mbim {
        bail!("--capture records MBIM transfers; tshark has no QMI dissector to check them with");
    }
    let capture = capture.as_deref().map(control::HostCapture::create).transpose()?;
    match protocol {
        Protocol::Qmi => control::serve(control::Simulator {
            port,
            signals: &signals,
            device: qmi::Device::new(),
            world,
            control,
            answer_delay,
            capture,
        }),
        Protocol::Mbim => control::serve(control::Simulator {
            port,
            signals: &signals,
            device: mbim::Device::new(),
            world,
            control,
            answer_delay,
            capture,
        }),
    }
}
