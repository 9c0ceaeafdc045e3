//! aictl: the command line for the aiesim daemon.

mod chat;
mod watch;

use aiesim_dbus::ChatDict as _;
use std::{fmt::Write as _, io::Write as _, process::ExitCode};

use std::collections::HashMap;

use aiesim_dbus::{
    ChatOptions, ErrorName, Message, Priority, StreamEvent,
    proxy::{BrokerProxy, DaemonProxy, EsimProxy, FastpathProxy, ModemProxy},
};
use anyhow::{Context as _, bail};
use clap::{CommandFactory, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use zbus::Connection;
use zbus::{OwnedVariant as OwnedValue, fdo::PropertiesProxy, names::InterfaceName};

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
#[expect(
    clippy::doc_markdown,
    reason = "these doc comments are the --help text, where backticks would show"
)]
enum Command {
    /// Show the daemon (version, last configuration reload), its modem and fast path (attach
    /// mode, the uplink shaping rate and where it comes from).
    ///
    /// With --json: {"daemon": {"version", "reloads", "last_reload"}, "modem", "fastpath"}.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show each AI endpoint's traffic through the fast path since it was configured
    /// (administrators), and as "unlisted" aiesimd's own connections to addresses not in the
    /// list (fastpath.mark_own_sockets); with --apps, each app's AI traffic (an app sees its own).
    ///
    /// With --json: [{"destination", "egress_packets", "egress_bytes", "ingress_packets",
    /// "ingress_bytes"}]; with --apps --json: [{"app", "egress_packets", "egress_bytes",
    /// "ingress_packets", "ingress_bytes" (the app's own sockets), "relayed_requests",
    /// "relayed_sent_bytes", "relayed_received_bytes" (its requests through aiesimd)}].
    Stats {
        /// Per app instead of per endpoint.
        #[arg(long)]
        apps: bool,
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
        /// An image to ask about (PNG, JPEG, WebP or GIF), after the question; repeatable.
        /// The open file is passed to the daemon, which reads it.
        #[arg(long = "image", value_name = "FILE")]
        images: Vec<std::path::PathBuf>,
    },
    /// Show the modem: state, identity, SIM, signal, registration, data session.
    ///
    /// With --json: {"state", "device", "protocol", "interface", "imei", "manufacturer", "model",
    /// "revision", "sim", "registration", "operator", "signal": {"quality", and as reported
    /// "rssi_dbm", "rsrp_dbm", "rsrq_db", "snr_db"}, "data": {"state", and while connected
    /// "address", "prefix", "gateway", "dns", "mtu"}, "last_error"}. "state" is "ready",
    /// "opening", "unavailable", "absent", or "not-configured" when aiesimd has no modem.
    /// Exit status 0 whenever aiesimd answered, whatever the modem's state.
    Modem {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<ModemAction>,
    },
    /// Show this caller's token budget (`mine`, the default), every app's (`list`, administrators), change an app's
    /// limits (`set`, administrators), or top up the eSIM's token account (`top-up`,
    /// administrators).
    ///
    /// With --json: {"app", "limit", "spent", "reserved", "available", "in_flight",
    /// "device_available", "timezone"}, and with a daily budget "daily_limit", "daily_spent",
    /// "daily_reserved", "daily_available", "daily_ends" (the same with "monthly_"), with a
    /// rate limit "per_minute", "per_minute_available"; `list --json` and `set --json`: the
    /// same per app without "device_available" (a list for `list`).
    Budget {
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: Option<BudgetAction>,
    },
    /// Show the eSIM (EID, generation, profiles), or switch its profiles.
    ///
    /// With --json: {"state", "eid", "generation", "svn", "firmware", "free_nvm",
    /// "ci_pkid_verification", "ci_pkid_signing" (lists of hex key ids),
    /// "default_dp_address", "root_ds_address", "active_profile", "last_error", "profiles":
    /// [{"iccid", "name", "provider", "nickname", "class", "isdp_aid", "enabled"}], "account":
    /// {"balance", "sequence", "state", "owed", "pending_debits", "receipts", "billing",
    /// "billing_error"} or null without an AI applet, "endpoints": [{"name",
    /// "url", "tier", "models": [{"name", "context_window", "max_output", "price_per_1k"}]}]}.
    /// "state" is "ready", "reading", "absent", "not-euicc", "error", or "not-configured"
    /// without a modem.
    Esim {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<EsimAction>,
    },
    /// Talk with the cloud AI: each line read is a turn, answered in the context of the
    /// session's earlier turns (kept for this session only). /reset forgets them; /quit or
    /// end of input ends. Exit status 1 if any turn failed.
    Chat {
        /// Model to ask for (default: the chosen endpoint's first model).
        #[arg(long)]
        model: Option<String>,
        /// Most tokens per answer (default and cap set by the daemon).
        #[arg(long)]
        max_tokens: Option<u32>,
        /// A system message to put first in every request.
        #[arg(long)]
        system: Option<String>,
        /// Print only the answers, not the usage lines on stderr.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the daemon's state changes as they happen (PropertiesChanged of every object:
    /// modem, eSIM, fast path, budgets, requests), one line each, until Ctrl-C.
    ///
    /// With --json, one document per line: {"path", "interface", "changed": {property:
    /// value}, "invalidated": [property]}.
    Watch {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show the cloud AI endpoints in use and what the router knows of each model on them.
    ///
    /// With --json: [{"endpoint", "model", "tier", "source" ("card" or "config"), "health"
    /// ("healthy", "cooling" or "probing"), "cooldown_ms", "ttft_ms" (peak-EWMA time to first
    /// token, queue time included), "inter_token_ms", "picks", "successes", "failures",
    /// "running", "queued", "max_concurrent"}], nearest tier first.
    Endpoints {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), as installed to man1/aictl.1.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Subcommand)]
enum EsimAction {
    /// Enable the profile with this ICCID (root only); the enabled one is disabled.
    Enable { iccid: String },
    /// Disable the profile with this ICCID (root only).
    Disable { iccid: String },
    /// Redeem an operator voucher on the card's token account (root only): VOUCHER is its 112
    /// bytes in hex. Prints the amount and the new balance from the card's verified receipt.
    TopUp { voucher: String },
}

#[derive(Debug, Subcommand)]
enum BudgetAction {
    /// This caller's own budget (what `aictl budget` alone shows).
    Mine,
    /// Every app that has spent, holds tokens or has limits set (administrators: root or polkit
    /// manage-budgets).
    List,
    /// Redeem an operator voucher (hex) on the eSIM's token account, as `aictl esim top-up`.
    TopUp { voucher: String },
    /// Change APP's limits (administrators: root or polkit manage-budgets); APP as `list`
    /// shows it, `uid-N` for all of a user's apps, `device` for the whole device (no
    /// --per-minute). Takes effect at once, survives restarts.
    Set {
        app: String,
        /// Tokens per local day (0 refuses every request).
        #[arg(long)]
        daily: Option<u64>,
        /// Tokens per local month.
        #[arg(long)]
        monthly: Option<u64>,
        /// Tokens per minute, a rate (at least 1).
        #[arg(long)]
        per_minute: Option<u64>,
        /// Tokens over the app's lifetime.
        #[arg(long)]
        total: Option<u64>,
        /// Return a limit to the configured default: `daily`, `monthly`, `per_minute` or `total`.
        #[arg(long, value_name = "KEY")]
        clear: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ModemAction {
    /// Bring the data session up (root only).
    Connect {
        /// The access point name; default: the configured modem.apn.
        apn: Option<String>,
    },
    /// Take the data session down (root only).
    Disconnect,
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
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "aictl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Manpage => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let connection = connect(&cli.bus).await?;
    match cli.command {
        Command::Status { json } => status(&connection, json).await,
        Command::Stats { apps: false, json } => stats(&connection, json).await,
        Command::Stats { apps: true, json } => app_stats(&connection, json).await,
        Command::Ask {
            prompt,
            model,
            max_tokens,
            temperature,
            system,
            background,
            quiet,
            images,
        } => {
            let images = images
                .iter()
                .map(|path| {
                    std::fs::File::open(path).with_context(|| format!("cannot open the image {}", path.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
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
            let images: Vec<_> = images.iter().map(std::os::fd::AsFd::as_fd).collect();
            ask(&connection, &options, &images, quiet).await
        }
        Command::Modem { json, action } => match action {
            None => modem(&connection, json).await,
            Some(action) => modem_action(&connection, action).await,
        },
        Command::Budget { json, action } => budget(&connection, json, action).await,
        Command::Endpoints { json } => endpoints(&connection, json).await,
        Command::Esim { json, action } => match action {
            None => esim(&connection, json).await,
            Some(action) => esim_action(&connection, action).await,
        },
        Command::Chat {
            model,
            max_tokens,
            system,
            quiet,
        } => {
            let options = chat::Options {
                model,
                max_tokens,
                system,
                quiet,
            };
            chat::run(&connection, options).await
        }
        Command::Watch { json, count } => watch::run(&connection, json, count).await,
        Command::Completions { .. } | Command::Manpage => unreachable!("handled above"),
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
    let (attach_mode, uplink_kbit, uplink_source) = (
        fastpath.attach_mode().await?,
        fastpath.uplink_kbit().await?,
        fastpath.uplink_source().await?,
    );
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

    let daemon = DaemonProxy::new(connection).await?;
    let (version, reloads, last_reload) = (
        daemon.version().await?,
        daemon.reloads().await?,
        daemon.last_reload().await?,
    );
    let modem = modem_doc(connection).await?;
    if json {
        let doc = serde_json::json!({
            "daemon": { "version": version, "reloads": reloads, "last_reload": last_reload },
            "modem": modem,
            "fastpath": {
                "interface": interface, "attached": attached, "attach_mode": attach_mode,
                "uplink_kbit": uplink_kbit, "uplink_source": uplink_source,
                "egress_packets": stat("egress_packets"), "egress_bytes": stat("egress_bytes"),
                "ingress_packets": stat("ingress_packets"), "ingress_bytes": stat("ingress_bytes"),
                "ai_packets": stat("ai_packets"), "ai_bytes": stat("ai_bytes"),
            },
        });
        println!("{doc:#}");
        return Ok(ExitCode::SUCCESS);
    }
    match reloads {
        0 => println!("daemon    aiesimd {version}, configuration as started"),
        n => println!("daemon    aiesimd {version}, reload {n}: {last_reload}"),
    }
    let m = |key: &str| modem[key].as_str().unwrap_or_default().to_owned();
    match m("state").as_str() {
        "ready" => {
            println!("modem     {} {} (rev {})", m("manufacturer"), m("model"), m("revision"));
            println!("          IMEI {}, {} on {}", m("imei"), m("protocol"), m("device"));
            println!(
                "          SIM {}, {}, signal {}%, data {}",
                m("sim"),
                m("registration"),
                modem["signal"]["quality"].as_u64().unwrap_or(0),
                modem["data"]["state"].as_str().unwrap_or("unknown")
            );
        }
        "not-configured" => println!("modem     not configured"),
        other => println!("modem     {other}: {}", m("last_error")),
    }
    if attached {
        println!("fastpath  attached to {interface} ({attach_mode})");
        match uplink_kbit {
            0 => println!("          uplink not shaped"),
            kbit => println!("          uplink shaped at {kbit} kbit/s, AI first (rate from the {uplink_source})"),
        }
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

async fn stats(connection: &Connection, as_json: bool) -> anyhow::Result<ExitCode> {
    let endpoints = match FastpathProxy::new(connection).await?.get_endpoint_statistics().await {
        Ok(endpoints) => endpoints,
        Err(e) => {
            eprintln!("aictl: {}", describe(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let docs: Vec<_> = endpoints.iter().map(dict_json).collect();
    if as_json {
        let list: Vec<serde_json::Value> = docs.into_iter().map(Into::into).collect();
        println!("{:#}", serde_json::Value::from(list));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:>10} {:>12} {:>10} {:>12}",
        "AI endpoint", "out pkts", "out bytes", "in pkts", "in bytes"
    );
    for d in &docs {
        let n = |k: &str| d.get(k).map(ToString::to_string).unwrap_or_default();
        println!(
            "{:<40} {:>10} {:>12} {:>10} {:>12}",
            d.get("destination").and_then(|v| v.as_str()).unwrap_or_default(),
            n("egress_packets"),
            n("egress_bytes"),
            n("ingress_packets"),
            n("ingress_bytes")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn app_stats(connection: &Connection, as_json: bool) -> anyhow::Result<ExitCode> {
    let apps = match FastpathProxy::new(connection).await?.get_app_statistics().await {
        Ok(apps) => apps,
        Err(e) => {
            eprintln!("aictl: {}", describe(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let docs: Vec<_> = apps.iter().map(dict_json).collect();
    if as_json {
        let list: Vec<serde_json::Value> = docs.into_iter().map(Into::into).collect();
        println!("{:#}", serde_json::Value::from(list));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:>12} {:>12} {:>9} {:>12} {:>12}",
        "app", "own out B", "own in B", "requests", "relayed out", "relayed in"
    );
    for d in &docs {
        let n = |k: &str| d.get(k).map(ToString::to_string).unwrap_or_default();
        println!(
            "{:<40} {:>12} {:>12} {:>9} {:>12} {:>12}",
            d.get("app").and_then(|v| v.as_str()).unwrap_or_default(),
            n("egress_bytes"),
            n("ingress_bytes"),
            n("relayed_requests"),
            n("relayed_sent_bytes"),
            n("relayed_received_bytes")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn ask(
    connection: &Connection,
    options: &ChatOptions,
    images: &[std::os::fd::BorrowedFd<'_>],
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    Ok(match stream_answer(connection, options, images, quiet).await? {
        Answer::Done(_) => ExitCode::SUCCESS,
        Answer::Failed => ExitCode::FAILURE,
        Answer::Cancelled => ExitCode::from(130),
    })
}

/// How a streamed answer ended.
enum Answer {
    /// The whole answer's text.
    Done(String),
    /// The daemon said why on stderr.
    Failed,
    /// Ctrl-C.
    Cancelled,
}

/// Asks, printing the answer as it streams and the usage (unless `quiet`) at the end.
/// `images` go with the last user message.
async fn stream_answer(
    connection: &Connection,
    options: &ChatOptions,
    images: &[std::os::fd::BorrowedFd<'_>],
    quiet: bool,
) -> anyhow::Result<Answer> {
    let broker = BrokerProxy::new(connection).await?;
    let (_path, fd) = broker
        .chat(options.to_chat_dict_with_images(images)?)
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?;
    let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
    stream.set_nonblocking(true)?;
    let mut lines = BufReader::new(tokio::net::UnixStream::from_std(stream)?).lines();
    let mut stdout = std::io::stdout().lock();
    let mut answer = String::new();
    // Ctrl-C drops the stream, which tells the daemon to cancel.
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l.context("the answer stream broke")?,
            _ = tokio::signal::ctrl_c() => { eprintln!("\naictl: cancelled"); return Ok(Answer::Cancelled); }
        };
        let Some(line) = line else {
            bail!("the daemon closed the stream without a final event")
        };
        match StreamEvent::from_line(&line).with_context(|| format!("the daemon sent a bad event: {line}"))? {
            StreamEvent::Delta { text } => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
                answer.push_str(&text);
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
                return Ok(Answer::Done(answer));
            }
            StreamEvent::Error { name, message } => {
                writeln!(stdout)?;
                let short = name.rsplit('.').next().unwrap_or(&name).to_owned();
                eprintln!("aictl: {short}: {message}");
                return Ok(Answer::Failed);
            }
        }
    }
}

async fn modem_proxy(connection: &Connection) -> anyhow::Result<ModemProxy<'static>> {
    Ok(ModemProxy::builder(connection)
        .path(format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX))
        .build()
        .await?)
}

/// Every Modem property in one round trip; `None` when the daemon has no modem configured.
async fn modem_properties(connection: &Connection) -> anyhow::Result<Option<HashMap<String, OwnedValue>>> {
    let properties = PropertiesProxy::builder(connection)
        .destination(aiesim_dbus::BUS_NAME)
        .path(format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX))
        .build()
        .await?;
    match properties
        .get_all(InterfaceName::from_static_str_unchecked("org.aiesim.AiEsim1.Modem"))
        .await
    {
        Ok(all) => Ok(Some(all)),
        Err(zbus::fdo::Error::UnknownObject(_) | zbus::fdo::Error::UnknownInterface(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("aiesimd is not reachable: {e}")),
    }
}

fn text(all: &HashMap<String, OwnedValue>, key: &str) -> String {
    all.get(key)
        .and_then(|v| <&str>::try_from(v).ok())
        .unwrap_or_default()
        .to_owned()
}

/// The `aictl modem --json` document (stable schema, see `aictl modem --help`).
async fn modem_doc(connection: &Connection) -> anyhow::Result<serde_json::Value> {
    let Some(all) = modem_properties(connection).await? else {
        return Ok(serde_json::json!({ "state": "not-configured" }));
    };
    let proxy = modem_proxy(connection).await?;
    let signal = proxy.get_signal().await.map_err(|e| anyhow::anyhow!(describe(&e)))?;
    let data = proxy
        .get_data_settings()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?;
    let json = |map: &HashMap<String, OwnedValue>| -> serde_json::Map<String, serde_json::Value> {
        map.iter()
            .filter_map(|(k, v)| {
                let value = if let Ok(s) = <&str>::try_from(v) {
                    serde_json::Value::from(s)
                } else if let Ok(n) = u32::try_from(v) {
                    serde_json::Value::from(n)
                } else if let Ok(n) = i32::try_from(v) {
                    serde_json::Value::from(n)
                } else if let Ok(n) = u8::try_from(v) {
                    serde_json::Value::from(n)
                } else if let Ok(d) = f64::try_from(v) {
                    serde_json::Value::from(d)
                } else if let Ok(list) = <Vec<String>>::try_from(v.clone()) {
                    serde_json::Value::from(list)
                } else {
                    return None;
                };
                Some((k.clone(), value))
            })
            .collect()
    };
    Ok(serde_json::json!({
        "state": text(&all, "State"),
        "device": text(&all, "Device"),
        "protocol": text(&all, "Protocol"),
        "interface": text(&all, "Interface"),
        "imei": text(&all, "Imei"),
        "manufacturer": text(&all, "Manufacturer"),
        "model": text(&all, "Model"),
        "revision": text(&all, "Revision"),
        "sim": text(&all, "SimState"),
        "registration": text(&all, "Registration"),
        "operator": text(&all, "Operator"),
        "signal": json(&signal),
        "data": json(&data),
        "last_error": text(&all, "LastError"),
    }))
}

async fn modem(connection: &Connection, as_json: bool) -> anyhow::Result<ExitCode> {
    let doc = modem_doc(connection).await?;
    if as_json {
        println!("{doc:#}");
        return Ok(ExitCode::SUCCESS);
    }
    let field = |path: &[&str]| {
        let mut v = &doc;
        for key in path {
            v = &v[*key];
        }
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let state = field(&["state"]);
    if state == "not-configured" {
        println!("modem          not configured (modem.device is empty)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("state          {state}");
    if !field(&["last_error"]).is_empty() {
        println!("last error     {}", field(&["last_error"]));
    }
    if !field(&["device"]).is_empty() {
        println!("port           {} ({})", field(&["device"]), field(&["protocol"]));
    }
    if !field(&["interface"]).is_empty() {
        println!("interface      {}", field(&["interface"]));
    }
    if !field(&["imei"]).is_empty() {
        println!(
            "modem          {} {} (rev {})",
            field(&["manufacturer"]),
            field(&["model"]),
            field(&["revision"])
        );
        println!("IMEI           {}", field(&["imei"]));
    }
    println!("SIM            {}", field(&["sim"]));
    let mut signal = format!("{}%", field(&["signal", "quality"]));
    for (key, unit) in [
        ("rssi_dbm", "dBm RSSI"),
        ("rsrp_dbm", "dBm RSRP"),
        ("rsrq_db", "dB RSRQ"),
        ("snr_db", "dB SNR"),
    ] {
        let value = field(&["signal", key]);
        if !value.is_empty() {
            let _ = write!(signal, ", {value} {unit}");
        }
    }
    println!("signal         {signal}");
    let operator = field(&["operator"]);
    println!(
        "registration   {}{}",
        field(&["registration"]),
        if operator.is_empty() {
            String::new()
        } else {
            format!(" ({operator})")
        }
    );
    let data = field(&["data", "state"]);
    match field(&["data", "address"]) {
        address if !address.is_empty() => println!(
            "data           {data}, {address}/{} via {}, MTU {}",
            field(&["data", "prefix"]),
            field(&["data", "gateway"]),
            field(&["data", "mtu"])
        ),
        _ => println!("data           {data}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn modem_action(connection: &Connection, action: ModemAction) -> anyhow::Result<ExitCode> {
    let proxy = modem_proxy(connection).await?;
    let result = match action {
        ModemAction::Connect { apn } => proxy.connect(apn.as_deref().unwrap_or("")).await,
        ModemAction::Disconnect => proxy.disconnect().await,
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("aictl: {}", describe(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn esim_proxy(connection: &Connection) -> anyhow::Result<EsimProxy<'static>> {
    Ok(EsimProxy::builder(connection)
        .path(format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX))
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// A D-Bus dictionary as JSON (strings, numbers and booleans; other values are left out).
fn dict_json(map: &HashMap<String, OwnedValue>) -> serde_json::Map<String, serde_json::Value> {
    map.iter()
        .filter_map(|(k, v)| {
            let value = if let Ok(s) = <&str>::try_from(v) {
                serde_json::Value::from(s)
            } else if let Ok(b) = bool::try_from(v) {
                serde_json::Value::from(b)
            } else if let Ok(n) = u64::try_from(v) {
                serde_json::Value::from(n)
            } else if let Ok(n) = u32::try_from(v) {
                serde_json::Value::from(n)
            } else if let Ok(n) = i64::try_from(v) {
                serde_json::Value::from(n)
            } else if let Ok(n) = i32::try_from(v) {
                serde_json::Value::from(n)
            } else if let Ok(n) = f64::try_from(v) {
                serde_json::Value::from(n)
            } else if let Ok(list) = <Vec<String>>::try_from(v.clone()) {
                serde_json::Value::from(list)
            } else {
                return None;
            };
            Some((k.clone(), value))
        })
        .collect()
}

/// The `aictl esim --json` document (schema in `aictl esim --help`).
async fn esim_doc(connection: &Connection) -> anyhow::Result<serde_json::Value> {
    let proxy = esim_proxy(connection).await?;
    let state = match proxy.state().await {
        Ok(state) => state,
        Err(zbus::Error::FDO(e))
            if matches!(
                *e,
                zbus::fdo::Error::UnknownObject(_) | zbus::fdo::Error::UnknownInterface(_)
            ) =>
        {
            return Ok(serde_json::json!({ "state": "not-configured" }));
        }
        Err(e) => bail!("aiesimd is not reachable: {}", describe(&e)),
    };
    let mut doc = serde_json::Map::new();
    doc.insert("state".into(), state.into());
    doc.insert("active_profile".into(), proxy.active_profile().await?.into());
    doc.insert("last_error".into(), proxy.last_error().await?.into());
    // Info and profiles are root's; others see the state only.
    match (proxy.get_info().await, proxy.list_profiles().await) {
        (Ok(info), Ok(profiles)) => {
            doc.extend(dict_json(&info));
            let profiles: Vec<serde_json::Value> = profiles.iter().map(|p| dict_json(p).into()).collect();
            doc.insert("profiles".into(), profiles.into());
        }
        (Err(e), _) | (_, Err(e)) => {
            doc.insert("last_error".into(), describe(&e).into());
        }
    }
    if let (Ok(account), Ok(endpoints)) = (proxy.get_account().await, proxy.list_endpoints().await) {
        let account = (!account.is_empty()).then(|| serde_json::Value::from(dict_json(&account)));
        doc.insert("account".into(), account.into());
        let endpoints: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|e| {
                let mut entry = dict_json(e);
                let models: Vec<(String, u32, u32, u64)> = e
                    .get("models")
                    .and_then(|m| <Vec<(String, u32, u32, u64)>>::try_from(m.clone()).ok())
                    .unwrap_or_default();
                let models: Vec<serde_json::Value> = models
                    .into_iter()
                    .map(|(name, context_window, max_output, price_per_1k)| {
                        serde_json::json!({
                            "name": name, "context_window": context_window,
                            "max_output": max_output, "price_per_1k": price_per_1k,
                        })
                    })
                    .collect();
                entry.insert("models".into(), models.into());
                entry.into()
            })
            .collect();
        doc.insert("endpoints".into(), endpoints.into());
    }
    Ok(doc.into())
}

async fn esim(connection: &Connection, as_json: bool) -> anyhow::Result<ExitCode> {
    let doc = esim_doc(connection).await?;
    if as_json {
        println!("{doc:#}");
        return Ok(ExitCode::SUCCESS);
    }
    let field = |key: &str| match &doc[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    println!("state          {}", field("state"));
    if !field("last_error").is_empty() {
        println!("last error     {}", field("last_error"));
    }
    if !field("eid").is_empty() {
        println!("EID            {}", field("eid"));
        println!(
            "generation     {} (SGP.22 {}, firmware {})",
            field("generation"),
            field("svn"),
            field("firmware")
        );
    }
    let ids = |key: &str| {
        doc[key]
            .as_array()
            .map(|l| l.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    if !ids("ci_pkid_verification").is_empty() {
        println!(
            "CI keys        verify {}; sign {}",
            ids("ci_pkid_verification"),
            ids("ci_pkid_signing")
        );
    }
    if !field("default_dp_address").is_empty() {
        println!("SM-DP+         {}", field("default_dp_address"));
    }
    if let Some(account) = doc["account"].as_object() {
        println!(
            "tokens         {} ({}, {} operations)",
            account.get("balance").map(ToString::to_string).unwrap_or_default(),
            account.get("state").and_then(|s| s.as_str()).unwrap_or("unknown"),
            account.get("sequence").map(ToString::to_string).unwrap_or_default()
        );
        let billing = account.get("billing").and_then(|s| s.as_str()).unwrap_or("unknown");
        println!(
            "billing        {billing}, {} owed in {} pending debits, {} receipts journalled",
            account.get("owed").map(ToString::to_string).unwrap_or_default(),
            account
                .get("pending_debits")
                .map(ToString::to_string)
                .unwrap_or_default(),
            account.get("receipts").map(ToString::to_string).unwrap_or_default()
        );
        if let Some(error) = account
            .get("billing_error")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
        {
            println!("billing error  {error}");
        }
    }
    for endpoint in doc["endpoints"].as_array().into_iter().flatten() {
        let models: Vec<&str> = endpoint["models"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .collect();
        println!(
            "endpoint       {} ({}) {} [{}]",
            endpoint["name"].as_str().unwrap_or_default(),
            endpoint["tier"].as_str().unwrap_or_default(),
            endpoint["url"].as_str().unwrap_or_default(),
            models.join(", ")
        );
    }
    if let Some(profiles) = doc["profiles"].as_array() {
        for profile in profiles {
            let p = |key: &str| profile[key].as_str().unwrap_or_default().to_owned();
            let mark = if profile["enabled"].as_bool() == Some(true) {
                "*"
            } else {
                " "
            };
            println!(
                "profile      {mark} {}  {} ({}, {})",
                p("iccid"),
                if p("name").is_empty() { p("nickname") } else { p("name") },
                p("provider"),
                p("class")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn budget(connection: &Connection, as_json: bool, action: Option<BudgetAction>) -> anyhow::Result<ExitCode> {
    let proxy = aiesim_dbus::proxy::BudgetProxy::new(connection).await?;
    let fail = |e: &zbus::Error| {
        eprintln!("aictl: {}", describe(e));
        Ok(ExitCode::FAILURE)
    };
    let header = budget_header();
    match action {
        None | Some(BudgetAction::Mine) => match proxy.get_mine().await {
            Ok(mine) => {
                let doc = dict_json(&mine);
                if as_json {
                    println!("{:#}", serde_json::Value::from(doc));
                } else {
                    println!("{header}\n{}{}", budget_row(&doc), budget_limits(&doc));
                    if let Some(device) = doc.get("device_available") {
                        println!("the device may spend {device} more tokens");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => fail(&e),
        },
        Some(BudgetAction::List) => match proxy.list().await {
            Ok(all) => {
                let docs: Vec<_> = all.iter().map(dict_json).collect();
                if as_json {
                    let list: Vec<serde_json::Value> = docs.into_iter().map(Into::into).collect();
                    println!("{:#}", serde_json::Value::from(list));
                } else {
                    println!("{header}");
                    for d in &docs {
                        println!("{}{}", budget_row(d), budget_limits(d));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => fail(&e),
        },
        Some(BudgetAction::TopUp { voucher }) => esim_action(connection, EsimAction::TopUp { voucher }).await,
        Some(BudgetAction::Set {
            app,
            daily,
            monthly,
            per_minute,
            total,
            clear,
        }) => {
            let policy = [
                ("daily", daily),
                ("monthly", monthly),
                ("per_minute", per_minute),
                ("total", total),
            ];
            budget_set(&proxy, as_json, &app, policy, clear).await
        }
    }
}

/// `aictl budget set`: the policy as `Budget.Set` takes it, then the app's budget as `List`
/// shows it.
async fn budget_set(
    proxy: &aiesim_dbus::proxy::BudgetProxy<'_>,
    as_json: bool,
    app: &str,
    limits: [(&str, Option<u64>); 4],
    clear: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let fail = |e: &zbus::Error| {
        eprintln!("aictl: {}", describe(e));
        Ok(ExitCode::FAILURE)
    };
    let mut policy: HashMap<String, OwnedValue> = limits
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), OwnedValue::from(v?))))
        .collect();
    if !clear.is_empty() {
        let keys = zbus::Variant::from(clear).try_into_owned()?;
        policy.insert("clear".to_owned(), keys);
    }
    if let Err(e) = proxy.set(app, policy).await {
        return fail(&e);
    }
    let doc = match proxy.list().await {
        Ok(all) => all
            .iter()
            .map(dict_json)
            .find(|d| d.get("app").and_then(|a| a.as_str()) == Some(app)),
        Err(e) => return fail(&e),
    };
    let doc = doc.unwrap_or_else(|| serde_json::Map::from_iter([("app".to_owned(), app.into())]));
    if as_json {
        println!("{:#}", serde_json::Value::from(doc));
    } else {
        println!("{}\n{}{}", budget_header(), budget_row(&doc), budget_limits(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

fn budget_header() -> String {
    format!(
        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>5}",
        "app", "limit", "spent", "reserved", "available", "busy"
    )
}

fn budget_row(d: &serde_json::Map<String, serde_json::Value>) -> String {
    let n = |k: &str| d.get(k).map(ToString::to_string).unwrap_or_default();
    format!(
        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>5}",
        d.get("app").and_then(|a| a.as_str()).unwrap_or_default(),
        n("limit"),
        n("spent"),
        n("reserved"),
        n("available"),
        n("in_flight")
    )
}

/// The calendar budgets and the rate, on a line of their own when an app has any.
fn budget_limits(d: &serde_json::Map<String, serde_json::Value>) -> String {
    let n = |k: &str| d.get(k).map(ToString::to_string).unwrap_or_default();
    let mut parts = Vec::new();
    for period in ["daily", "monthly"] {
        if d.contains_key(&format!("{period}_limit")) {
            parts.push(format!(
                "{period} {} of {} left until {}",
                n(&format!("{period}_available")),
                n(&format!("{period}_limit")),
                d.get(&format!("{period}_ends"))
                    .and_then(|e| e.as_str())
                    .unwrap_or_default()
            ));
        }
    }
    if d.contains_key("per_minute") {
        parts.push(format!(
            "{} tokens a minute ({} now)",
            n("per_minute"),
            n("per_minute_available")
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("\n{:<32} {}", "", parts.join("; "))
    }
}

async fn endpoints(connection: &Connection, as_json: bool) -> anyhow::Result<ExitCode> {
    let proxy = aiesim_dbus::proxy::EndpointsProxy::new(connection).await?;
    let stats = match proxy.get_statistics().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aictl: {}", describe(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    let docs: Vec<_> = stats.iter().map(dict_json).collect();
    if as_json {
        let list: Vec<serde_json::Value> = docs.into_iter().map(Into::into).collect();
        println!("{:#}", serde_json::Value::from(list));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<20} {:<9} {:<8} {:>9} {:>7} {:>7} {:>6} {:>9}",
        "endpoint", "model", "tier", "health", "ttft ms", "picks", "ok", "failed", "busy"
    );
    for d in &docs {
        let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or_default();
        let health = match (s("health").as_str(), n("cooldown_ms")) {
            ("cooling", ms) if ms > 0 => format!("cooling {}s", ms.div_ceil(1000)),
            (h, _) => h.to_owned(),
        };
        println!(
            "{:<16} {:<20} {:<9} {:<8} {:>9.0} {:>7} {:>7} {:>6} {:>9}",
            s("endpoint"),
            s("model"),
            s("tier"),
            health,
            d.get("ttft_ms").and_then(serde_json::Value::as_f64).unwrap_or_default(),
            n("picks"),
            n("successes"),
            n("failures"),
            format!("{}+{}/{}", n("running"), n("queued"), n("max_concurrent")),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Hex digits (either case, spaces ignored) as bytes.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

async fn esim_action(connection: &Connection, action: EsimAction) -> anyhow::Result<ExitCode> {
    let proxy = esim_proxy(connection).await?;
    let result = match &action {
        EsimAction::Enable { iccid } => proxy.enable_profile(iccid).await,
        EsimAction::Disable { iccid } => proxy.disable_profile(iccid).await,
        EsimAction::TopUp { voucher } => {
            let Some(bytes) = parse_hex(voucher) else {
                eprintln!("aictl: the voucher must be hex digits (112 bytes: 224 digits)");
                return Ok(ExitCode::from(2));
            };
            let budget = aiesim_dbus::proxy::BudgetProxy::new(connection).await?;
            budget.top_up(&bytes).await.map(|result| {
                let get = |k: &str| result.get(k).and_then(|v| u64::try_from(v).ok()).unwrap_or_default();
                println!("topped up {} tokens; balance {}", get("amount"), get("balance"));
            })
        }
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("aictl: {}", describe(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}
