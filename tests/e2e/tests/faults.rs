//! The fault campaign: scripted rounds over the simulated world, each injecting one fault while
//! an answer streams (modem reset, function restart, stall, garbage on the port, card removal,
//! failing card commands, `SIGKILL` or `SIGTERM` of aiesimd and a restart), then asking once
//! more once the modem is back. After every round the invariants hold: the daemon answers on
//! the bus within a bound; every charge is what the app was told (or, for a stream cut by a
//! crash, what reached it, as in `crash.rs`), never more than the budget; nothing stays
//! reserved; no request object is left running (and none at all once finished ones stopped
//! lingering, checked at the end); the modem holds no more QMI client ids and the
//! daemon no more file descriptors than after its first round. A table of rounds, faults,
//! requests and violations is printed; the test fails on any violation.
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
    ChatOptions, Message, StreamEvent,
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
}

const FAULTS: [Fault; 8] = [
    Fault::ModemReset,
    Fault::ModemGarbage,
    Fault::Sigkill,
    Fault::ModemForget,
    Fault::CardRemoved,
    Fault::ModemStall,
    Fault::CardFails,
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
        }
    }

    /// The simulator commands that inject it (none: a signal to the daemon).
    fn commands(self) -> &'static [&'static str] {
        match self {
            Self::ModemReset => &["reset 300"],
            Self::ModemForget => &["forget"],
            Self::ModemStall => &["stall 2000"],
            Self::ModemGarbage => &["garbage 256"],
            Self::CardRemoved => &["card remove"],
            Self::CardFails => &["card fail 6F00 3"],
            Self::Sigkill | Self::Sigterm => &[],
        }
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

fn question() -> ChatOptions {
    ChatOptions {
        messages: vec![Message::new("user", "Count from one to ten in words.")],
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

/// What one stream delivered: deltas, and the final event's charge if it came.
struct Delivered {
    deltas: u64,
    done: Option<u64>,
    error: Option<String>,
}

/// Streams one answer; after its first delta runs `fault`.
async fn stream_with(conn: &zbus::Connection, fault: impl FnOnce()) -> Delivered {
    let mut delivered = Delivered {
        deltas: 0,
        done: None,
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
            Ok(StreamEvent::Done { charged, .. }) => {
                delivered.done = Some(charged);
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

/// What the ledger must have charged for a stream: its `done`, or for one cut by a crash what
/// reached the app (the prompt estimate plus its deltas, or one more when the crash fell
/// between journalling a token and sending it; nothing when nothing reached it).
fn allowed_charges(delivered: &Delivered, crashed: bool, prompt: u64) -> Option<Vec<u64>> {
    match (delivered.done, crashed) {
        (Some(charged), _) => Some(vec![charged]),
        (None, true) if delivered.deltas == 0 => Some(vec![0, prompt + 1]),
        (None, true) => Some(vec![prompt + delivered.deltas, prompt + delivered.deltas + 1]),
        (None, false) => None,
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

#[tokio::test]
async fn rounds_of_faults_break_no_invariant() {
    if skip_unless_ready("rounds_of_faults_break_no_invariant") {
        return;
    }
    let rounds: usize = std::env::var("AIESIM_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FAULTS.len());
    // Without usage from the cloud a charge is the prompt estimate plus one token per delta,
    // the measure the journal keeps, so a stream cut by a crash has a known price.
    let mut world = World::start(&WorldOptions {
        cloud: CloudOptions {
            no_usage: true,
            ..CloudOptions::default()
        },
        app_tokens: APP_TOKENS,
        ..WorldOptions::default()
    })
    .unwrap();

    // A clean request first: the prompt's price, and the daemon's resting fds and client ids.
    let (before, _) = mine(&world).await.unwrap();
    // One connection for every request: the bus outlives the daemon's restarts.
    let conn = world.connect().await.unwrap();
    let clean = stream_with(&conn, || {}).await;
    let charged = clean.done.expect("a clean request ends with done");
    assert_eq!(mine(&world).await.unwrap().0 - before, charged);
    let prompt = charged - clean.deltas;
    let ids = client_ids(&world);
    assert!(!ids.is_empty(), "the simulator lists the daemon's client ids");
    let mut fds = (world.daemon.pid(), world.daemon_fds());

    let mut table = String::from("round  fault                        requests  violations\n");
    let mut all = Vec::new();
    for round in 0..rounds {
        let fault = FAULTS[round % FAULTS.len()];
        let mut violations: Vec<String> = Vec::new();
        let (before, _) = mine(&world).await.unwrap();
        let pid = Pid::from_raw(i32::try_from(world.daemon.pid()).unwrap());
        let crashed = matches!(fault, Fault::Sigkill);
        let first = stream_with(&conn, || match fault {
            Fault::Sigkill => kill(pid, Signal::SIGKILL).unwrap(),
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
        match fault {
            Fault::Sigkill => world.restart_daemon(true).unwrap(),
            Fault::Sigterm => world.restart_daemon(false).unwrap(),
            _ => wait_modem_ready(&world),
        }
        let second = stream_with(&conn, || {}).await;

        violations.extend(check_round(&world, &conn, before, [&first, &second], crashed, prompt, &ids).await);
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
            "{round:>5}  {:<28} {:>8}  {:>10}",
            fault.name(),
            2,
            violations.len()
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
