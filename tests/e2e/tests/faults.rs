//! The fault campaign: scripted rounds over the simulated world, each injecting one fault while
//! an answer streams (modem reset, function restart, stall, garbage on the port, card removal,
//! failing card commands, `SIGKILL` or `SIGTERM` of aiesimd and a restart, a restart of the
//! bus daemon) or into the answer itself (the cloud's 5xx, a stall before or after the first
//! token, a broken stream, missing usage: `server.mjs --control`), then asking once more once
//! the world is back. After every round the invariants hold: the daemon answers on the bus
//! within a bound; every charge is what the app was told (or, for a stream cut by a crash or by
//! the loss of the bus, what reached it, as in `crash.rs`), never more than the budget; nothing
//! stays reserved; no request object is left running (and none at all once finished ones
//! stopped lingering, checked at the end); the modem holds no more QMI client ids and the
//! daemon no more file descriptors than after its first round. Cloud faults have their own:
//! one before the first token ends in a failover (the world names its cloud twice) or an
//! `UpstreamFailed` that charges nothing; one after tokens reached the app in `UpstreamFailed`
//! charging the prompt estimate plus the tokens delivered; an answer without usage is charged
//! the prompt estimate plus its tokens. A lost bus must end aiesimd with a failure (the unit's
//! `Restart=on-failure` brings it back). A table of rounds, faults, requests and violations is
//! printed; the test fails on any violation.
//!
//! `cargo xtask faults --rounds N` runs N rounds (`AIESIM_FAULT_ROUNDS`); the suite runs one
//! round per fault.

use aiesim_dbus::ChatDict as _;
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    time::Duration,
};

use aiesim_dbus::{
    ChatOptions, ErrorName, Message, StreamEvent, Usage,
    proxy::{BrokerProxy, BudgetProxy, RequestProxy},
};
use aiesim_e2e::{CloudOptions, World, WorldOptions, skip_unless_ready};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use zbus::OwnedVariant;

/// The app's budget: enough for every round, so that a refusal would be a violation too.
const APP_TOKENS: u64 = 1_000_000;
/// How long a finished request's object stays for its owner (the daemon's `LINGER`).
const LINGER: Duration = Duration::from_secs(60);
/// How long the daemon may take to answer a bus call after a round.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// The daemon's `cloud.idle_timeout_ms` here: how long a stalled cloud stream is waited for.
const CLOUD_IDLE_TIMEOUT_MS: u64 = 5_000;
/// Deltas a cloud fault after the first token lets through.
const DELTAS_BEFORE_CUT: u64 = 3;

#[derive(Debug, Clone, Copy)]
enum Fault {
    ModemReset,
    ModemForget,
    ModemStall,
    ModemGarbage,
    CardRemoved,
    CardFails,
    Sigkill,
    Sigterm,
    BusRestart,
    /// The cloud's 503 once: the request fails over to the other name.
    CloudOverloaded,
    /// The cloud's 503 to both attempts.
    CloudFails,
    CloudStallFirst,
    CloudStallAfter,
    CloudBreak,
    CloudNoUsage,
}

/// In this order: a stalled first token cools its endpoint down (30 s), so faults before the
/// first token are spread apart (each may still end in a clean failure rather than a failover).
const FAULTS: [Fault; 15] = [
    Fault::ModemReset,
    Fault::CloudBreak,
    Fault::ModemGarbage,
    Fault::CloudOverloaded,
    Fault::Sigkill,
    Fault::CloudNoUsage,
    Fault::ModemForget,
    Fault::CloudStallFirst,
    Fault::CardRemoved,
    Fault::CloudStallAfter,
    Fault::ModemStall,
    Fault::CloudFails,
    Fault::CardFails,
    Fault::BusRestart,
    Fault::Sigterm,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::ModemReset => "modem reset 300 ms",
            Self::ModemForget => "modem function restart",
            Self::ModemStall => "modem stall 2 s",
            Self::ModemGarbage => "256 bytes of garbage",
            Self::CardRemoved => "card removed, inserted",
            Self::CardFails => "card fails 3 commands",
            Self::Sigkill => "SIGKILL aiesimd, restart",
            Self::Sigterm => "SIGTERM aiesimd, restart",
            Self::BusRestart => "bus daemon restart",
            Self::CloudOverloaded => "cloud 503 once",
            Self::CloudFails => "cloud 503 twice",
            Self::CloudStallFirst => "cloud stall before token",
            Self::CloudStallAfter => "cloud stall after 3 tokens",
            Self::CloudBreak => "cloud breaks after 3 tokens",
            Self::CloudNoUsage => "cloud sends no usage",
        }
    }

    /// The simulator commands that inject it after the first delta (none: a signal to the
    /// daemon or its bus, or a cloud fault).
    fn commands(self) -> &'static [&'static str] {
        match self {
            Self::ModemReset => &["reset 300"],
            Self::ModemForget => &["forget"],
            Self::ModemStall => &["stall 2000"],
            Self::ModemGarbage => &["garbage 256"],
            Self::CardRemoved => &["card remove"],
            Self::CardFails => &["card fail 6F00 3"],
            _ => &[],
        }
    }

    /// The cloud's control command that injects it into the next request(s) (503 with
    /// `Retry-After: 0` keeps the overloaded endpoint in rotation for the round's second
    /// request; another status would cool it down for 30 s).
    fn cloud_command(self) -> Option<String> {
        match self {
            Self::CloudOverloaded => Some("fail 503 1 0".into()),
            Self::CloudFails => Some("fail 503 2 0".into()),
            Self::CloudStallFirst => Some("stall 0".into()),
            Self::CloudStallAfter => Some(format!("stall {DELTAS_BEFORE_CUT}")),
            Self::CloudBreak => Some(format!("break {DELTAS_BEFORE_CUT}")),
            Self::CloudNoUsage => Some("nousage".into()),
            _ => None,
        }
    }

    /// A stream cut with the daemon: what reached the app is charged, as after a crash.
    fn crashes(self) -> bool {
        matches!(self, Self::Sigkill | Self::BusRestart)
    }

    /// What puts the world back once the round's stream is over.
    fn undo(self) -> &'static [&'static str] {
        match self {
            Self::CardRemoved => &["card insert"],
            Self::CardFails => &["card fail off"],
            _ => &[],
        }
    }
}

/// A system message long enough that the daemon's prompt estimate (about 3 bytes a token) stays
/// above the model's count with its chat template: nothing is learnt, so the estimate a cut
/// stream is charged stays the one the campaign measures first.
const SYSTEM: &str = "You answer on a small wearable device over a cellular link. Keep every answer short and \
plain: no lists, no markup, no greetings, no apologies and no explanations of what you are about to \
do. Write numbers as words. When asked to count, count exactly as asked and stop. Never repeat the \
question. Never add anything after the last item. The user reads your answer on a small screen.";

fn question() -> ChatOptions {
    ChatOptions {
        messages: vec![
            Message::new("system", SYSTEM),
            Message::new("user", "Count from one to ten in words."),
        ],
        max_tokens: Some(12),
        temperature: Some(0.0),
        ..ChatOptions::default()
    }
}

/// The app's `spent` and `in_flight`, read within [`ANSWER_BOUND`].
async fn mine(world: &World) -> Result<(u64, u32), String> {
    let call = async {
        let conn = world.connect().await.map_err(|e| e.to_string())?;
        let budget = BudgetProxy::new(&conn).await.map_err(|e| e.to_string())?;
        let mine: HashMap<String, OwnedVariant> = budget.get_mine().await.map_err(|e| e.to_string())?;
        let spent = u64::try_from(&mine["spent"]).map_err(|e| e.to_string())?;
        let in_flight = u32::try_from(&mine["in_flight"]).map_err(|e| e.to_string())?;
        Ok((spent, in_flight))
    };
    tokio::time::timeout(ANSWER_BOUND, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer on the bus in {ANSWER_BOUND:?}")))
}

/// The request objects the daemon exports, each with its state: the app's own (every request
/// goes out on `conn`, and only the connection that made a request may read it).
async fn request_objects(conn: &zbus::Connection) -> Result<Vec<(String, String)>, String> {
    let introspected = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination(aiesim_dbus::BUS_NAME)
        .path(aiesim_dbus::REQUEST_PATH_PREFIX)
        .build()
        .await
        .map_err(|e| e.to_string())?
        .introspect()
        .await;
    let xml = match introspected {
        Ok(xml) => xml,
        // With no request left, the parent node goes too.
        Err(zbus::fdo::Error::UnknownObject(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut objects = Vec::new();
    for name in xml.split("<node name=\"").skip(1).filter_map(|r| r.split('"').next()) {
        let path = format!("{}/{name}", aiesim_dbus::REQUEST_PATH_PREFIX);
        let state = RequestProxy::builder(conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| e.to_string())?
            .state()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        objects.push((path, state));
    }
    Ok(objects)
}

/// Client ids the simulated modem holds, per service.
fn client_ids(world: &World) -> HashMap<String, usize> {
    world
        .modem_control("state")
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.strip_prefix("clients "))
        .filter_map(|l| l.split_once(' '))
        .map(|(service, ids)| (service.to_owned(), ids.split(',').filter(|i| !i.is_empty()).count()))
        .collect()
}

/// What one stream delivered: deltas, and the final event's charge and usage if it came.
struct Delivered {
    deltas: u64,
    done: Option<u64>,
    usage: Option<Usage>,
    error: Option<String>,
}

/// Streams one answer; after its first delta runs `fault`.
async fn stream_with(conn: &zbus::Connection, fault: impl FnOnce()) -> Delivered {
    let mut delivered = Delivered {
        deltas: 0,
        done: None,
        usage: None,
        error: None,
    };
    let broker = BrokerProxy::new(conn).await.unwrap();
    let (_path, fd) = match broker.chat(question().to_chat_dict().unwrap()).await {
        Ok(answer) => answer,
        Err(e) => {
            delivered.error = Some(e.to_string());
            fault();
            return delivered;
        }
    };
    let socket = UnixStream::from(std::os::fd::OwnedFd::from(fd));
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut lines = BufReader::new(socket);
    let mut fault = Some(fault);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        match StreamEvent::from_line(&line) {
            Ok(StreamEvent::Delta { .. }) => delivered.deltas += 1,
            Ok(StreamEvent::Done { charged, usage, .. }) => {
                delivered.done = Some(charged);
                delivered.usage = Some(usage);
                break;
            }
            Ok(StreamEvent::Error { name, message }) => {
                delivered.error = Some(format!("{name}: {message}"));
                break;
            }
            Err(e) => {
                delivered.error = Some(format!("a bad line {line:?}: {e}"));
                break;
            }
        }
        if let Some(fault) = fault.take() {
            fault();
        }
    }
    if let Some(fault) = fault.take() {
        fault();
    }
    delivered
}

/// What the ledger must have charged for a stream: its `done`; for one cut by a crash what
/// reached the app (the prompt estimate plus its deltas, or one more when the crash fell
/// between journalling a token and sending it; nothing when nothing reached it); for one the
/// cloud failed (`UpstreamFailed`, without usage) the prompt estimate plus its deltas, or
/// nothing when none reached the app.
fn allowed_charges(delivered: &Delivered, crashed: bool, prompt: u64) -> Option<Vec<u64>> {
    let upstream = delivered
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with(ErrorName::UpstreamFailed.as_str()));
    match (delivered.done, crashed) {
        (Some(charged), _) => Some(vec![charged]),
        (None, true) if delivered.deltas == 0 => Some(vec![0, prompt + 1]),
        (None, true) => Some(vec![prompt + delivered.deltas, prompt + delivered.deltas + 1]),
        (None, false) if upstream && delivered.deltas == 0 => Some(vec![0]),
        (None, false) if upstream => Some(vec![prompt + delivered.deltas]),
        (None, false) => None,
    }
}

/// How a cloud fault must have ended the stream it hit (charges aside, which
/// [`allowed_charges`] covers); what breaks it.
fn cloud_outcome(fault: Fault, first: &Delivered, prompt: u64) -> Option<String> {
    let upstream_failed = first
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with(ErrorName::UpstreamFailed.as_str()));
    let how = || {
        format!(
            "{} deltas, done {:?}, error {:?}",
            first.deltas, first.done, first.error
        )
    };
    match fault {
        // Failed over to the other name, or (when it is cooling down) a clean failure.
        Fault::CloudOverloaded | Fault::CloudStallFirst => (!(first.done.is_some()
            || upstream_failed && first.deltas == 0))
            .then(|| format!("neither a failover nor UpstreamFailed before a token: {}", how())),
        Fault::CloudFails => {
            (!(upstream_failed && first.deltas == 0)).then(|| format!("not UpstreamFailed before a token: {}", how()))
        }
        Fault::CloudStallAfter | Fault::CloudBreak => (!(upstream_failed && first.deltas == DELTAS_BEFORE_CUT))
            .then(|| format!("not UpstreamFailed after {DELTAS_BEFORE_CUT} deltas: {}", how())),
        // Without usage: the prompt estimate and one token per delta.
        Fault::CloudNoUsage => {
            let expected = Usage {
                prompt_tokens: u32::try_from(prompt).unwrap(),
                completion_tokens: u32::try_from(first.deltas).unwrap(),
            };
            (first.usage != Some(expected) || first.done != Some(prompt + first.deltas)).then(|| {
                format!(
                    "not charged the estimate {expected:?}: {}, usage {:?}",
                    how(),
                    first.usage
                )
            })
        }
        _ => None,
    }
}

fn wait_modem_ready(world: &World) {
    world.wait_json(&["modem"], "ready", |d| d["state"] == "ready");
}

/// The invariants after one round whose two streams were `delivered` (the first cut by a crash
/// when `crashed`) and that began with `before` spent; what breaks them.
async fn check_round(
    world: &World,
    conn: &zbus::Connection,
    before: u64,
    [first, second]: [&Delivered; 2],
    crashed: bool,
    prompt: u64,
    ids: &HashMap<String, usize>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let (after, in_flight) = match mine(world).await {
        Ok(m) => m,
        Err(e) => {
            violations.push(e);
            (before, 0)
        }
    };
    let grew = after.saturating_sub(before);
    match (
        allowed_charges(first, crashed, prompt),
        allowed_charges(second, false, prompt),
    ) {
        (Some(a), Some(b)) => {
            let sums: Vec<u64> = a.iter().map(|x| x + b[0]).collect();
            if !sums.contains(&grew) {
                violations.push(format!(
                    "charged {grew}, not one of {sums:?} (first {} deltas, second {})",
                    first.deltas, second.deltas
                ));
            }
        }
        _ => violations.push(format!(
            "a stream ended without done: {:?} / {:?}",
            first.error, second.error
        )),
    }
    if after > APP_TOKENS {
        violations.push(format!("spent {after} over the budget {APP_TOKENS}"));
    }
    if in_flight != 0 {
        violations.push(format!("{in_flight} requests still reserved"));
    }
    // Finished requests linger a minute for their owner; none may still be running.
    match request_objects(conn).await {
        Ok(objects) => violations.extend(
            objects
                .iter()
                .filter(|(_, state)| !matches!(state.as_str(), "done" | "failed" | "cancelled"))
                .map(|(path, state)| format!("{path} is still {state}")),
        ),
        Err(e) => violations.push(format!("cannot read the request objects: {e}")),
    }
    let held = client_ids(world);
    for (service, n) in &held {
        if *n > ids.get(service).copied().unwrap_or(0) {
            violations.push(format!("{n} {service} client ids held, {ids:?} at the start"));
        }
    }
    violations
}

/// Injects `fault` into one round of two requests; what breaks the invariants.
async fn one_round(
    world: &mut World,
    conn: &mut zbus::Connection,
    fault: Fault,
    prompt: u64,
    ids: &HashMap<String, usize>,
) -> Vec<String> {
    let mut violations: Vec<String> = Vec::new();
    let (before, _) = mine(world).await.unwrap();
    let pid = Pid::from_raw(i32::try_from(world.daemon.pid()).unwrap());
    let bus = Pid::from_raw(i32::try_from(world.bus.pid()).unwrap());
    if let Some(command) = fault.cloud_command() {
        world.cloud_control(&command).unwrap();
    }
    let first = stream_with(conn, || match fault {
        Fault::Sigkill => kill(pid, Signal::SIGKILL).unwrap(),
        // As `systemctl restart dbus` stops it; the new bus comes below.
        Fault::BusRestart => kill(bus, Signal::SIGTERM).unwrap(),
        // SIGTERM comes between requests, below: a clean stop ends what runs.
        Fault::Sigterm => {}
        _ => {
            for command in fault.commands() {
                world.modem_control(command).unwrap();
            }
        }
    })
    .await;
    for command in fault.undo() {
        world.modem_control(command).unwrap();
    }
    if fault.cloud_command().is_some() {
        // What the fault did not use up must not hit the second request.
        world.cloud_control("clear").unwrap();
        violations.extend(cloud_outcome(fault, &first, prompt));
    }
    match fault {
        Fault::Sigkill => world.restart_daemon(true).unwrap(),
        Fault::Sigterm => world.restart_daemon(false).unwrap(),
        Fault::BusRestart => {
            let mut old = world.restart_bus().unwrap();
            let status = old.try_wait().unwrap().expect("the old daemon exited");
            if status.success() {
                violations.push(format!("aiesimd exited with {status} on losing its bus, not a failure"));
            }
            // The test's own connection went with the old bus.
            *conn = world.connect().await.unwrap();
        }
        _ => wait_modem_ready(world),
    }
    let second = stream_with(conn, || {}).await;

    violations.extend(check_round(world, conn, before, [&first, &second], fault.crashes(), prompt, ids).await);
    violations
}

#[tokio::test]
async fn rounds_of_faults_break_no_invariant() {
    if skip_unless_ready("rounds_of_faults_break_no_invariant") {
        return;
    }
    let rounds: usize = std::env::var("AIESIM_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FAULTS.len());
    // The cloud is named twice (a failover has somewhere to go), and a stalled stream is given
    // up on soon.
    let mut world = World::start(&WorldOptions {
        cloud: CloudOptions::default(),
        app_tokens: APP_TOKENS,
        endpoint_aliases: vec!["metro-b"],
        extra_config: format!("[cloud]\nidle_timeout_ms = {CLOUD_IDLE_TIMEOUT_MS}\n"),
        ..WorldOptions::default()
    })
    .unwrap();

    // Clean requests first: without usage from the cloud, the prompt estimate (the measure the
    // journal keeps, so a stream cut by a crash has a known price); with it, the real prompt,
    // which must stay below the estimate; and the daemon's resting fds and client ids.
    let (before, _) = mine(&world).await.unwrap();
    // One connection for every request: it outlives the daemon's restarts (not the bus's).
    let mut conn = world.connect().await.unwrap();
    world.cloud_control("nousage").unwrap();
    let clean = stream_with(&conn, || {}).await;
    let charged = clean.done.expect("a clean request ends with done");
    assert_eq!(mine(&world).await.unwrap().0 - before, charged);
    let prompt = charged - clean.deltas;
    let reported = stream_with(&conn, || {}).await;
    let real_prompt = reported.usage.expect("a clean request ends with done").prompt_tokens;
    assert!(
        u64::from(real_prompt) <= prompt,
        "the model counts {real_prompt} prompt tokens, over the estimate {prompt}: lengthen SYSTEM"
    );
    let ids = client_ids(&world);
    assert!(!ids.is_empty(), "the simulator lists the daemon's client ids");
    let mut fds = (world.daemon.pid(), world.daemon_fds());

    let mut table = String::from("round  fault                        requests  violations  seconds\n");
    let mut all = Vec::new();
    for round in 0..rounds {
        let fault = FAULTS[round % FAULTS.len()];
        let started = std::time::Instant::now();
        let mut violations = one_round(&mut world, &mut conn, fault, prompt, &ids).await;
        // A restarted daemon's resting point is its first round's end.
        if fds.0 == world.daemon.pid() {
            let now = world.daemon_fds();
            if now > fds.1 {
                violations.push(format!("{now} open fds, {} after its first round", fds.1));
            }
        } else {
            fds = (world.daemon.pid(), world.daemon_fds());
        }

        writeln!(
            table,
            "{round:>5}  {:<28} {:>8}  {:>10}  {:>7.1}",
            fault.name(),
            2,
            violations.len(),
            started.elapsed().as_secs_f64()
        )
        .unwrap();
        all.extend(
            violations
                .into_iter()
                .map(|v| format!("round {round} ({}): {v}", fault.name())),
        );
    }
    println!("{table}");
    // Past the linger every request object is gone.
    tokio::time::sleep(LINGER + Duration::from_secs(2)).await;
    match request_objects(&conn).await {
        Ok(objects) if objects.is_empty() => {}
        Ok(objects) => all.push(format!("after the linger: {objects:?} left on the bus")),
        Err(e) => all.push(format!("after the linger: {e}")),
    }
    assert!(all.is_empty(), "{}\n{}", all.join("\n"), world.daemon.log());
}
