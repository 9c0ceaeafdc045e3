//! aiesim-modemsim: a simulated cellular modem on a pseudo-terminal.
//!
//! It exposes a control port like a modem's `/dev/cdc-wdm0` and answers QMI on it, so the
//! daemon, the end-to-end tests and real `qmicli` can talk to it without hardware. The
//! transport (`pty`), the byte pump (`control`) and the device models (`qmi`) are separate so
//! that MBIM, a simulated eUICC and fault injection slot in beside them.

mod control;
mod pty;
mod qmi;

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Serve a simulated modem's control port on a pseudo-terminal.
///
/// Prints `PTY /dev/pts/N` on stdout once clients may open the port, then serves until
/// SIGTERM or SIGINT, and removes the --link symlink on the way out. Logs go to stderr
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
    } = args;
    let mut device = match protocol {
        Protocol::Qmi => qmi::Device::new(qmi::Identity {
            imei,
            manufacturer,
            model,
            revision,
        }),
        Protocol::Mbim => bail!("the MBIM protocol is not implemented yet; use --protocol qmi"),
    };

    // Signals are taken before the port is announced, so a prompt SIGTERM still cleans up.
    let signals = control::Signals::new().context("could not take over SIGTERM and SIGINT")?;
    let port = pty::Pty::open().context("could not open a pseudo-terminal")?;
    let link = pty::Link::create(&link, port.path())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "PTY {}", port.path().display())
        .and_then(|()| stdout.flush())
        .context("could not announce the pseudo-terminal on stdout")?;
    drop(stdout);
    tracing::info!(pty = %port.path().display(), link = %link.path().display(), "serving QMI");

    let served = control::serve(&port, &signals, &mut device);
    drop(link);
    served
}
