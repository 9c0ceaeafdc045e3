//! aiesimd: serves cloud AI to the device's apps over D-Bus, with the modem and eSIM as the
//! device's connection, identity and token account.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use aiesim_dbus::BUS_NAME;
use aiesimd::{
    broker::{Broker, Limits, chain},
    clock::SystemClock,
    cloud::{HttpCloud, HttpOptions, SharedCredentials},
    config::{self, Bus, Config, CredentialChoice},
    esim::{Biller, CardCredentials, Esim, Requirement, provision_endpoints},
    fastpath::{Fastpath, Shaping, UplinkRate, names},
    ledger::{Ledger, window::Calendar},
    memory,
    modem::Modem,
    reload::Plan,
    router::Router,
    service,
};
use anyhow::Context as _;
use clap::Parser;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{Notify, watch},
};
use zbus::fdo::RequestNameFlags;

/// How long stopping may wait for the modem session to give its client ids back.
const MODEM_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a failing endpoint stays out of rotation.
const ENDPOINT_COOLDOWN: Duration = Duration::from_secs(30);

/// The aiesim daemon: cloud AI for the device's apps, over the cellular modem and its eSIM.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML). The default location may be absent: then defaults apply.
    #[arg(short, long, default_value = config::DEFAULT_PATH, env = "AIESIMD_CONFIG")]
    config: PathBuf,
    /// Bus to serve on: "system", "session" or a D-Bus address. Overrides the file's `bus`.
    #[arg(long)]
    bus: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Log filter, e.g. "info" or "aiesimd=debug"; overrides the file's `log` (and is not
    /// reloaded). `RUST_LOG` overrides both.
    #[arg(long, env = "AIESIMD_LOG")]
    log: Option<String>,
    /// Print the manual page (roff) and exit, as installed to man8/aiesimd.8.
    #[arg(long, hide = true)]
    print_manpage: bool,
    /// Print a completion script for this shell and exit.
    #[arg(long, hide = true, value_name = "SHELL")]
    print_completions: Option<clap_complete::Shell>,
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    if args.print_manpage {
        let man = clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).section("8");
        man.render(&mut std::io::stdout())?;
        return Ok(());
    }
    if let Some(shell) = args.print_completions {
        clap_complete::generate(
            shell,
            &mut <Args as clap::CommandFactory>::command(),
            "aiesimd",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let mut config = Config::load_or_default(&args.config).map_err(|e| anyhow::anyhow!(chain(&e)))?;
    if let Some(bus) = &args.bus {
        config.bus = Bus::from_arg(bus);
    }
    if args.check_config {
        // What only the running system can tell (the proxy group exists) is checked too.
        config
            .modem
            .options(&config.fastpath.interface)
            .map_err(|e| anyhow::anyhow!(chain(&e)))?;
        println!("{}: valid", args.config.display());
        return Ok(());
    }
    let log = init_logging(args.log.as_deref(), config.env_filter())?;
    raise_fd_limit();
    // One thread: the daemon waits on I/O, and a small device has little memory to spare.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let reload = Reload {
        path: args.config,
        bus: args.bus,
        log,
        started: config.clone(),
    };
    runtime.block_on(run(config, started, reload))
}

/// Raises the soft limit on open files to the hard one: systemd gives services 1024 (for
/// `select()`, which the daemon never uses), and each stream holds two (the app's socket and
/// its cloud connection), so 500 concurrent streams would not fit.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the limit on open files");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the limit on open files"),
    }
}

/// Swaps the log filter on reload.
type LogHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Starts logging with `RUST_LOG`, else `--log`, else the file's filter; only the file's is
/// reloadable, so only then is a handle returned.
fn init_logging(argument: Option<&str>, from_file: tracing_subscriber::EnvFilter) -> anyhow::Result<Option<LogHandle>> {
    use tracing_subscriber::{prelude::*, reload};
    let environment = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let fixed = match (environment, argument) {
        (Some(spec), _) => {
            Some(config::parse_log_filter(&spec).with_context(|| format!("RUST_LOG \"{spec}\" is not a log filter"))?)
        }
        (None, Some(spec)) => {
            Some(config::parse_log_filter(spec).with_context(|| format!("--log \"{spec}\" is not a log filter"))?)
        }
        (None, None) => None,
    };
    let reloadable = fixed.is_none();
    let (filter, handle) = reload::Layer::new(fixed.unwrap_or(from_file));
    // Under systemd, log to the journal with structured fields; elsewhere to stderr.
    let journal = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    if let Some(journal) = journal {
        registry.with(journal).init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    Ok(reloadable.then_some(handle))
}

/// What a reload needs: where the configuration is, what the command line overrides, and the
/// configuration the daemon started on.
struct Reload {
    path: PathBuf,
    bus: Option<String>,
    log: Option<LogHandle>,
    started: Config,
}

async fn run(config: Config, started: Instant, reload: Reload) -> anyhow::Result<()> {
    let connection = connect(&config.bus).await?;

    // The session opens the modem in the background: start-up never waits for it.
    let modem = config
        .modem
        .options(&config.fastpath.interface)
        .map_err(|e| anyhow::anyhow!(chain(&e)))?
        .map(|options| {
            let modem = Arc::new(Modem::spawn(options));
            let esim = Arc::new(Esim::spawn(Arc::clone(&modem)));
            (modem, esim)
        });
    let credentials = credentials(&config, modem.as_ref());
    let follow_modem = config.fastpath.enabled && config.fastpath.interface == config::FOLLOW_MODEM;
    if follow_modem && modem.is_none() {
        tracing::warn!("fastpath.interface = \"modem\" but no modem is configured: the fast path stays detached");
    }
    if matches!(config.fastpath.shaping(), Some(UplinkRate::Modem { .. })) && modem.is_none() {
        tracing::warn!(
            "fastpath.shape without fastpath.uplink_kbit takes the modem's rate, but no modem is configured: the uplink is not shaped"
        );
    }
    let (own_cgroup, mut fastpath) = start_fastpath(&config, follow_modem);
    memory::release_free_heap();

    let broker = Arc::new(broker(&config, credentials)?);
    // The fast path's AI destinations follow the endpoints in use, configured, then the card's:
    // IP literals at once, host names looked up as requests come, never while idle (radio).
    let (urls_tx, urls) = watch::channel(endpoint_urls(&broker));
    let urls_tx = Arc::new(urls_tx);
    let (destinations_tx, destinations) = watch::channel(names::literal_destinations(&urls.borrow()));
    let requests = broker.scheduler().watch();
    tokio::spawn(names::follow(urls, names::RESOLVE_INTERVAL, requests, destinations_tx));
    if let Some(fp) = &mut fastpath {
        if let Err(e) = fp.set_ai_endpoints(&destinations.borrow()) {
            tracing::warn!(error = %chain(&e), "cannot tell the fast path the AI endpoints");
        }
    }
    let biller = modem
        .as_ref()
        .map(|(_, esim)| Arc::new(Biller::spawn(Arc::clone(esim), broker.ledger().clone())));
    if let Some((_, esim)) = &modem {
        let broker = Arc::clone(&broker);
        let urls_tx = Arc::clone(&urls_tx);
        tokio::spawn(provision_endpoints(esim.state(), move |specs| {
            let changed = broker.router().set_provisioned(specs);
            if changed {
                urls_tx.send_replace(endpoint_urls(&broker));
            }
            changed
        }));
    }

    service::serve(
        &connection,
        Arc::clone(&broker),
        request_limits(&config),
        modem
            .clone()
            .zip(biller)
            .map(|((modem, esim), biller)| service::Cellular { modem, esim, biller }),
        service::FastpathSetup {
            fastpath,
            interface: if follow_modem {
                String::new()
            } else {
                config.fastpath.interface.clone()
            },
            follow_modem,
            shaping: config.fastpath.shaping(),
            apps_cgroup: config.fastpath.apps_cgroup(),
            pins: config.fastpath.pins(),
            dscp: config.fastpath.dscp(),
            attach: config.fastpath.attach_mode(),
            own_cgroup,
            destinations,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot serve the D-Bus objects: {e}"))?;
    connection
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
        .with_context(|| format!("cannot own the bus name {BUS_NAME} (is another aiesimd running?)"))?;

    // Each watchdog pet is the idle daemon's one chore: the idle trim gives its pages back.
    let petted = Arc::new(Notify::new());
    let notifier = announce_ready(&connection, &petted);
    tracing::info!(name = BUS_NAME, ready_ms = started.elapsed().as_millis(), "ready");
    spawn_idle_trim(config.requests.idle_trim_s, &broker, petted);

    let stop = until_stopped(&connection, notifier.as_deref(), &reload, config, &broker, &urls_tx).await?;
    if let Some(notifier) = &notifier {
        notifier.send("STOPPING=1");
    }
    tracing::info!("stopping");
    let _ = connection.release_name(BUS_NAME).await;
    service::shutdown(&connection).await;
    if let Some((modem, _esim)) = modem {
        stop_modem(&modem).await;
    }
    match stop {
        Stop::Signal => Ok(()),
        // A failure, so that the unit's Restart=on-failure brings the daemon back on the new bus.
        Stop::BusLost => anyhow::bail!("lost the connection to the bus (the bus daemon stopped or restarted)"),
    }
}

/// Why the daemon stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT: a clean stop.
    Signal,
    /// The bus connection closed: nothing can reach the daemon's objects or name any more.
    BusLost,
}

/// Serves until SIGTERM or SIGINT, or until the bus connection closes, reloading the
/// configuration on each SIGHUP.
async fn until_stopped(
    connection: &zbus::Connection,
    notifier: Option<&service::watchdog::Notifier>,
    reload: &Reload,
    config: Config,
    broker: &service::DaemonBroker,
    urls_tx: &watch::Sender<Vec<String>>,
) -> anyhow::Result<Stop> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut current = config;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = connection.closed() => {
                tracing::error!("lost the connection to the bus; stopping, for the service manager to start aiesimd again");
                return Ok(Stop::BusLost);
            }
            _ = hup.recv() => {
                if let Some(notifier) = notifier {
                    notifier.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                }
                let outcome = reload_config(reload, &mut current, broker, urls_tx);
                service::reloaded(connection, outcome).await;
                if let Some(notifier) = notifier {
                    notifier.send("READY=1");
                }
            }
        }
    }
    Ok(Stop::Signal)
}

/// Reads the configuration again and applies what may change while running (see
/// `aiesimd::reload`); on any mistake nothing is applied. Returns the outcome's summary.
fn reload_config(
    reload: &Reload,
    current: &mut Config,
    broker: &service::DaemonBroker,
    urls: &watch::Sender<Vec<String>>,
) -> Result<String, String> {
    let mut new = match Config::load_or_default(&reload.path) {
        Ok(new) => new,
        Err(e) => {
            let why = chain(&e);
            tracing::error!(error = %why, "reload refused; the configuration in effect stays");
            return Err(why);
        }
    };
    if let Some(bus) = &reload.bus {
        new.bus = Bus::from_arg(bus);
    }
    let mut plan = Plan::new(&reload.started, current, &new);
    if plan.log {
        if let Some(handle) = &reload.log {
            if let Err(e) = handle.reload(new.env_filter()) {
                tracing::warn!(error = %e, "the log filter could not be replaced");
            }
        } else {
            tracing::info!("log: --log, AIESIMD_LOG or RUST_LOG set the filter; the file's is not used");
            plan.log = false;
        }
    }
    if plan.endpoints && broker.router().set_configured(&new.endpoints) {
        urls.send_replace(endpoint_urls(broker));
    }
    if plan.budgets {
        broker.ledger().set_budgets(new.budget.budgets());
    }
    let summary = plan.summary();
    if plan.needs_restart.is_empty() {
        tracing::info!(result = %summary, "configuration reloaded");
    } else {
        tracing::warn!(result = %summary, "configuration reloaded; some changes wait for a restart");
    }
    *current = new;
    Ok(summary)
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd wants it with `RELOADING=1`.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
    })
}

/// The bounds on one app's requests and what they carry.
fn request_limits(config: &Config) -> service::RequestLimits {
    let r = &config.requests;
    service::RequestLimits {
        max_objects_per_app: r.max_objects_per_app,
        linger: Duration::from_secs(r.linger_s),
        stall_timeout: Duration::from_millis(r.stall_timeout_ms),
        stream_buffer: r.stream_buffer_bytes,
        images: aiesim_dbus::ImageLimits {
            max_image_bytes: r.max_image_bytes,
            max_request_bytes: r.max_request_image_bytes,
            max_images: r.max_images,
        },
    }
}

/// Tells the service manager (if any) that the daemon is ready, and starts petting its
/// watchdog when it asked for one.
fn announce_ready(connection: &zbus::Connection, petted: &Arc<Notify>) -> Option<Arc<service::watchdog::Notifier>> {
    let notifier = Arc::new(service::watchdog::Notifier::from_env()?);
    notifier.send("READY=1");
    if let Some(period) = service::watchdog::period() {
        tracing::info!(?period, "petting the systemd watchdog");
        tokio::spawn(service::watchdog::run(
            connection.clone(),
            Arc::clone(&notifier),
            period,
            Arc::clone(petted),
        ));
    }
    Some(notifier)
}

/// The core: cloud client, durable ledger, router and limits, as configured.
fn broker(config: &Config, credentials: Option<SharedCredentials>) -> anyhow::Result<service::DaemonBroker> {
    let cloud = HttpCloud::new(HttpOptions {
        bind_interface: Some(config.cloud.bind_interface.clone()).filter(|s| !s.is_empty()),
        ca_file: Some(config.cloud.ca_file.clone()).filter(|p| !p.as_os_str().is_empty()),
        connect_timeout: config.cloud.connect_timeout(),
        first_byte_timeout: config.cloud.first_byte_timeout(),
        idle_timeout: config.cloud.idle_timeout(),
        keepalive_window: config.cloud.keepalive_window(),
        credentials,
    })
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    Ok(Broker::new(
        cloud,
        open_ledger(config)?,
        Router::new(&config.endpoints, SystemClock, ENDPOINT_COOLDOWN),
        Limits {
            default_max_tokens: config.budget.default_max_tokens,
            max_tokens_cap: config.budget.max_tokens_cap,
            max_in_flight: config.requests.max_in_flight_per_app,
            deadline: Duration::from_secs(config.requests.deadline_s),
            max_answer_bytes: config.requests.max_answer_bytes,
            failover_attempts: config.cloud.failover_attempts,
            hedge_after: config.cloud.hedge_after(),
        },
    ))
}

/// The ledger on its journal (`budget.journal`), or in memory when that is empty.
fn open_ledger(config: &Config) -> anyhow::Result<Ledger> {
    let budgets = config.budget.budgets();
    let zone = Calendar::zone(&config.budget.timezone).map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let calendar = Calendar::new(zone, std::sync::Arc::new(SystemClock));
    tracing::info!(timezone = %calendar.zone_name(), "budgets count days and months in this zone");
    if config.budget.journal.as_os_str().is_empty() {
        tracing::warn!("budget.journal is empty: spending is kept in memory and lost on restart");
        return Ok(Ledger::in_memory_on(budgets, calendar));
    }
    // Under systemd, StateDirectory= made it; by hand, make it here.
    if let Some(parent) = config.budget.journal.parent() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
            .create(parent)
            .with_context(|| format!("cannot make the journal's directory {}", parent.display()))?;
    }
    Ledger::open_on(&config.budget.journal, budgets, calendar)
        .map_err(|e| anyhow::anyhow!("{} (journal {})", chain(&e), config.budget.journal.display()))
}

/// Loading the classifier parses the kernel's BTF (tens of MiB, freed right after); hand that
/// memory back to the system instead of keeping it in the allocator for the daemon's lifetime.
/// Closes the modem session, giving up after `MODEM_SHUTDOWN_TIMEOUT`.
async fn stop_modem(modem: &Modem) {
    if tokio::time::timeout(MODEM_SHUTDOWN_TIMEOUT, modem.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the modem session did not stop in time");
    }
}

/// Starts giving memory back after `seconds` idle (0: never).
fn spawn_idle_trim(seconds: u64, broker: &Arc<service::DaemonBroker>, petted: Arc<Notify>) {
    if seconds > 0 {
        tokio::spawn(trim_when_idle(Arc::clone(broker), Duration::from_secs(seconds), petted));
    }
}

/// Gives the memory of finished work back once no request has been seen for `period` (see
/// `memory`): a check each `period`, a timer on the CPU only. Within an idle spell it trims
/// again after each watchdog pet (`petted`), whose bus round trip maps megabytes of code back
/// for a moment.
async fn trim_when_idle(broker: Arc<service::DaemonBroker>, period: Duration, petted: Arc<Notify>) {
    let mut last = broker.scheduler().activity().1;
    let mut trimmed = false;
    loop {
        let after_pet = tokio::select! {
            () = tokio::time::sleep(period) => false,
            () = petted.notified(), if trimmed => true,
        };
        let (held, taken) = broker.scheduler().activity();
        let idle = held == 0 && last == taken;
        last = taken;
        if !idle {
            trimmed = false;
        } else if !trimmed || after_pet {
            let first = !trimmed;
            trimmed = true;
            match memory::trim() {
                Ok(bytes) if first => {
                    tracing::debug!(
                        mapped_bytes = bytes,
                        "idle: unmapped the code pages and trimmed the heap"
                    );
                }
                Ok(bytes) => {
                    tracing::trace!(target: "aiesimd::idle", mapped_bytes = bytes, "idle: gave back what the watchdog pet mapped");
                }
                Err(e) => tracing::warn!(error = %chain(&e), "idle: cannot give memory back"),
            }
        }
    }
}

async fn connect(bus: &Bus) -> anyhow::Result<zbus::Connection> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    builder
        .build()
        .await
        .with_context(|| format!("cannot connect to the {bus:?} bus"))
}

/// The bearer tokens the cloud client sends: signed on the eSIM, as configured.
fn credentials(config: &Config, modem: Option<&(Arc<Modem>, Arc<Esim>)>) -> Option<SharedCredentials> {
    let requirement = match config.cloud.credential {
        CredentialChoice::None => return None,
        CredentialChoice::Auto => Requirement::IfAvailable,
        CredentialChoice::IotSafe => Requirement::Required,
    };
    let Some((modem, esim)) = modem else {
        if requirement == Requirement::Required {
            tracing::warn!("cloud.credential = \"iot-safe\" but no modem is configured: every request will fail");
        }
        return None;
    };
    Some(Arc::new(CardCredentials::new(
        Arc::clone(modem),
        esim.state(),
        config.cloud.iot_safe_aid(),
        requirement,
    )))
}

/// The URLs of the endpoints in use, whose destinations the fast path classifies as AI.
fn endpoint_urls(broker: &service::DaemonBroker) -> Vec<String> {
    broker.router().endpoints().into_iter().map(|e| e.url).collect()
}

/// aiesimd's cgroup if its sockets are to be marked (found once, logged), and the fast path
/// attached to its fixed interface unless it follows the modem's.
fn start_fastpath(config: &Config, follow_modem: bool) -> (Option<u64>, Option<Fastpath>) {
    let own_cgroup = config.fastpath.own_cgroup();
    let fastpath = if follow_modem {
        None
    } else {
        attach_fastpath(config, own_cgroup)
    };
    (own_cgroup, fastpath)
}

fn attach_fastpath(config: &Config, own_cgroup: Option<u64>) -> Option<Fastpath> {
    if !config.fastpath.enabled {
        return None;
    }
    let mode = config.fastpath.attach_mode();
    match Fastpath::attach_pinned(&config.fastpath.interface, mode, config.fastpath.pins()) {
        Ok(mut fp) => {
            // A rate from the modem is applied once the modem reports one (service::fastpath).
            if let Some(UplinkRate::Fixed(uplink_kbit)) = config.fastpath.shaping() {
                if let Err(e) = fp.shape(Shaping { uplink_kbit }) {
                    tracing::warn!(interface = %config.fastpath.interface, error = %chain(&e), "uplink not shaped; AI packets keep their priority only");
                }
            }
            if let Err(e) = fp.set_ai_dscp(config.fastpath.dscp()) {
                tracing::warn!(error = %chain(&e), "AI packets not marked with a DSCP");
            }
            // Set either way: pinned maps may hold a previous run's cgroup.
            if let Err(e) = fp.mark_own_sockets(own_cgroup) {
                tracing::warn!(error = %chain(&e), "aiesimd's own sockets not marked");
            }
            if let Some(cgroup) = config.fastpath.apps_cgroup() {
                if let Err(e) = fp.watch_apps(&cgroup) {
                    tracing::warn!(cgroup = %cgroup.display(), error = %chain(&e), "apps' own AI traffic not counted");
                }
            }
            Some(fp)
        }
        Err(e) => {
            tracing::warn!(interface = %config.fastpath.interface, error = %chain(&e), "fast path not attached; going on without it");
            None
        }
    }
}
