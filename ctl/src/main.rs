//! aictl: the command line for the aiesim daemon.

use std::{io::Write as _, process::ExitCode};

use aiesim_dbus::{
    ChatOptions, ErrorName, Message, Priority, StreamEvent,
    proxy::{BrokerProxy, FastpathProxy, ModemProxy},
};
use anyhow::{Context as _, bail};
use clap::{CommandFactory, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use zbus::Connection;

/// Command line for aiesimd, the device's cloud AI service on the cellular eSIM.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Bus where aiesimd runs: "system", "session" or a D-Bus address.
    #[arg(long, global = true, env = "AIESIM_BUS", default_value = "system")]
    bus: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's modem and fast path.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the cloud AI and stream the answer to stdout.
    Ask {
        /// The question; several words are joined with spaces.
        #[arg(required = true)]
        prompt: Vec<String>,
        /// Model to ask for (default: the chosen endpoint's first model).
        #[arg(long)]
        model: Option<String>,
        /// Most tokens to generate (default and cap set by the daemon).
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature, 0.0 to 2.0.
        #[arg(long)]
        temperature: Option<f64>,
        /// A system message to put first.
        #[arg(long)]
        system: Option<String>,
        /// Run as background work (the daemon schedules interactive work first).
        #[arg(long)]
        background: bool,
        /// Print only the answer, not the usage line on stderr.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aictl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aictl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "aictl", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    let connection = connect(&cli.bus).await?;
    match cli.command {
        Command::Status { json } => status(&connection, json).await,
        Command::Ask {
            prompt,
            model,
            max_tokens,
            temperature,
            system,
            background,
            quiet,
        } => {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message::new("system", s));
            }
            messages.push(Message::new("user", prompt.join(" ")));
            let priority = if background {
                Priority::Background
            } else {
                Priority::Interactive
            };
            let options = ChatOptions {
                messages,
                model,
                max_tokens,
                temperature,
                priority,
            };
            ask(&connection, &options, quiet).await
        }
        Command::Completions { .. } => unreachable!("handled above"),
    }
}

async fn connect(bus: &str) -> anyhow::Result<Connection> {
    let builder = match bus {
        "system" => zbus::connection::Builder::system(),
        "session" => zbus::connection::Builder::session(),
        address => zbus::connection::Builder::address(address),
    };
    builder
        .build()
        .await
        .with_context(|| format!("cannot connect to the {bus} bus"))
}

/// The D-Bus error of a failed call as "Name: message".
fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            let short = ErrorName::from_name(name.as_str())
                .map_or(name.as_str(), |n| n.as_str().rsplit('.').next().unwrap_or(""));
            format!("{short}: {}", message.as_deref().unwrap_or("(no message)"))
        }
        other => other.to_string(),
    }
}

async fn status(connection: &Connection, json: bool) -> anyhow::Result<ExitCode> {
    let fastpath = FastpathProxy::new(connection).await?;
    let interface = fastpath
        .interface()
        .await
        .map_err(|e| anyhow::anyhow!("aiesimd is not reachable: {}", describe(&e)))?;
    let attached = fastpath.attached().await?;
    let stats = if attached {
        Some(
            fastpath
                .get_statistics()
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))?,
        )
    } else {
        None
    };
    let stat = |k: &str| {
        stats
            .as_ref()
            .and_then(|s| s.get(k))
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    };

    let modem = ModemProxy::builder(connection)
        .path(format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX))
        .build()
        .await?;
    let modem_info = match modem.imei().await {
        Ok(imei) => Some((
            imei,
            modem.manufacturer().await?,
            modem.model().await?,
            modem.revision().await?,
            modem.device().await?,
            modem.protocol().await?,
        )),
        Err(_) => None,
    };

    if json {
        let doc = serde_json::json!({
            "modem": modem_info.as_ref().map(|(imei, manufacturer, model, revision, device, protocol)| serde_json::json!({
                "imei": imei, "manufacturer": manufacturer, "model": model, "revision": revision,
                "device": device, "protocol": protocol,
            })),
            "fastpath": {
                "interface": interface, "attached": attached,
                "egress_packets": stat("egress_packets"), "egress_bytes": stat("egress_bytes"),
                "ingress_packets": stat("ingress_packets"), "ingress_bytes": stat("ingress_bytes"),
                "ai_packets": stat("ai_packets"), "ai_bytes": stat("ai_bytes"),
            },
        });
        println!("{doc:#}");
        return Ok(ExitCode::SUCCESS);
    }
    match &modem_info {
        Some((imei, manufacturer, model_name, revision, device, protocol)) => {
            println!("modem     {manufacturer} {model_name} (rev {revision})");
            println!("          IMEI {imei}, {protocol} on {device}");
        }
        None => println!("modem     unavailable"),
    }
    if attached {
        println!("fastpath  attached to {interface}");
        println!(
            "          egress {} pkts / {} B, ingress {} pkts / {} B, AI {} pkts / {} B",
            stat("egress_packets"),
            stat("egress_bytes"),
            stat("ingress_packets"),
            stat("ingress_bytes"),
            stat("ai_packets"),
            stat("ai_bytes")
        );
    } else {
        println!("fastpath  not attached ({interface})");
    }
    Ok(ExitCode::SUCCESS)
}

async fn ask(connection: &Connection, options: &ChatOptions, quiet: bool) -> anyhow::Result<ExitCode> {
    let broker = BrokerProxy::new(connection).await?;
    let (_path, fd) = broker
        .chat(options.to_chat_dict())
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?;
    let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
    stream.set_nonblocking(true)?;
    let mut lines = BufReader::new(tokio::net::UnixStream::from_std(stream)?).lines();
    let mut stdout = std::io::stdout().lock();
    // Ctrl-C drops the stream, which tells the daemon to cancel.
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l.context("the answer stream broke")?,
            _ = tokio::signal::ctrl_c() => { eprintln!("\naictl: cancelled"); return Ok(ExitCode::from(130)); }
        };
        let Some(line) = line else {
            bail!("the daemon closed the stream without a final event")
        };
        match StreamEvent::from_line(&line).with_context(|| format!("the daemon sent a bad event: {line}"))? {
            StreamEvent::Delta { text } => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            StreamEvent::Done {
                usage,
                charged,
                endpoint,
                model,
            } => {
                writeln!(stdout)?;
                if !quiet {
                    eprintln!(
                        "-- {charged} tokens charged ({} prompt + {} completion) via {endpoint} ({model})",
                        usage.prompt_tokens, usage.completion_tokens
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            StreamEvent::Error { name, message } => {
                writeln!(stdout)?;
                let short = name.rsplit('.').next().unwrap_or(&name).to_owned();
                eprintln!("aictl: {short}: {message}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}
