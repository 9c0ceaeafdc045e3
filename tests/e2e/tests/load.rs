//! Load through the real bus: 50 apps (each a process in a cgroup of its own, so the daemon knows
//! it as a distinct app) keep 10 `Chat` streams each open at once, 500 at the peak, in waves for
//! a while, while the daemon's RSS, open fds and exported D-Bus objects are sampled. Then:
//! every stream ended with `done` or a named error (or was refused with one); each stream's
//! `done` agrees with its `Finished`; each app's charges in `Budget.List` are what its streams
//! were told, the device's are their sum, nothing stays reserved; fds and objects come back to
//! the idle level; RSS after the run is within a generous bound of RSS after the first wave.
//!
//! The cloud is the test cloud's stub (`--stub-tokens`: canned tokens at a fixed pace, real
//! usage): the model serves one request at a time on this CPU, and 500 concurrent model streams
//! are beyond this machine. Everything else is real: dbus-daemon, aiesimd (as the unit runs it,
//! with systemd's 1024 soft limit on open files), its ledger and journal, the simulated card.
//!
//! `cargo xtask load [--seconds N] [--apps N] [--streams N]` runs it for minutes (release
//! daemon) and prints the samples; the suite runs it short (`AIESIM_LOAD_*` unset).

use std::{
    collections::HashMap,
    fmt::Write as _,
    process::{Child, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aiesim_e2e::{
    Account, Cgroups, CloudOptions, CloudStub, World, WorldOptions, missing_prerequisites, output_text, skip_if_missing,
};

/// Who the apps run as (in aiesim-apps); each is its own system unit.
const APP_UID: u32 = 1;
/// The stub's answer: tokens and the pace, so one stream lasts a few seconds and the streams of
/// one wave overlap.
const TOKENS: u32 = 32;
const TOKEN_INTERVAL_MS: u32 = 100;
/// How long finished request objects linger and idle cloud connections stay, short so that the
/// run can see both go; the defaults (60 s, 30 s) only change when that happens.
const LINGER_S: u64 = 1;
const KEEPALIVE_MS: u64 = 1_000;
/// RSS after the run may exceed RSS after the first wave by this factor plus this much. The
/// first wave already made every per-stream structure (buffers, HTTP connections, objects) at
/// the full width; what the allocator keeps after that is fragmentation, bounded, while a leak
/// grows with every stream (thousands in the run) and crosses the bound.
const RSS_GROWTH: f64 = 1.5;
const RSS_SLACK_KIB: u64 = 4_096;

struct Load {
    seconds: u64,
    apps: usize,
    streams: usize,
    profile: String,
}

impl Load {
    fn from_env() -> Self {
        let var = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Self {
            seconds: var("AIESIM_LOAD_SECONDS", 7),
            apps: usize::try_from(var("AIESIM_LOAD_APPS", 50)).unwrap(),
            streams: usize::try_from(var("AIESIM_LOAD_STREAMS", 500)).unwrap(),
            profile: std::env::var("AIESIM_LOAD_PROFILE").unwrap_or_else(|_| "debug".into()),
        }
    }
}

/// One sample of the daemon.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    objects: usize,
    in_flight: u64,
}

impl Sample {
    async fn take(world: &World, conn: &zbus::Connection, since: Instant) -> Self {
        let device = device_row(world);
        Self {
            at: since.elapsed(),
            rss_kib: world.daemon_rss_kib().unwrap(),
            fds: world.daemon_fds(),
            objects: World::daemon_objects(conn).await.unwrap(),
            in_flight: device["in_flight"].as_u64().unwrap_or(0),
        }
    }

    fn row(&self, table: &mut String, what: &str) {
        writeln!(
            table,
            "{:>7.1}  {:>8}  {:>5}  {:>7}  {:>9}  {what}",
            self.at.as_secs_f64(),
            self.rss_kib,
            self.fds,
            self.objects,
            self.in_flight
        )
        .unwrap();
    }
}

fn device_row(world: &World) -> serde_json::Value {
    budget_rows(world).remove("device").unwrap_or_default()
}

fn budget_rows(world: &World) -> HashMap<String, serde_json::Value> {
    world
        .aictl_json(&["budget", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["app"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn epoch_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// One app: the load helper in the cgroup of `unit`.
fn app(world: &World, cgroups: &Cgroups, unit: &str, gid: u32, streams: usize, seconds: u64, start_at: u64) -> Child {
    cgroups
        .command_as(
            &format!("/system.slice/{unit}"),
            APP_UID,
            gid,
            env!("CARGO_BIN_EXE_aiesim-load-app"),
        )
        .args(["--bus", &world.bus_address])
        .args(["--streams", &streams.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--max-tokens", &TOKENS.to_string()])
        .args(["--start-at", &start_at.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The most intervals open at one instant.
fn peak(intervals: &[[u64; 2]]) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals.iter().flat_map(|[a, b]| [(*a, 1), (*b, -1)]).collect();
    // Ends before starts at the same millisecond: touching streams do not overlap.
    edges.sort_unstable();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    usize::try_from(most).unwrap()
}

fn start_world(load: &Load) -> World {
    let per_app = load.streams.div_ceil(load.apps);
    World::start(&WorldOptions {
        profile: load.profile.clone(),
        daemon_user: Some("aiesim"),
        cloud: CloudOptions {
            stub: Some(CloudStub {
                tokens: TOKENS,
                interval_ms: TOKEN_INTERVAL_MS,
            }),
            ..CloudOptions::default()
        },
        endpoint_max_concurrent: load.streams * 2,
        app_tokens: 1_000_000_000,
        budget_config: "device_tokens = 100000000000".into(),
        extra_config: format!(
            "[requests]\nmax_in_flight_per_app = {per_app}\nmax_objects_per_app = 10000\nlinger_s = {LINGER_S}\n\n[cloud]\nkeepalive_window_ms = {KEEPALIVE_MS}\n"
        ),
        sim_args: vec!["--tokens".into(), "1000000000000".into()],
        // Per-request debug lines would be most of the work.
        daemon_log: Some("info"),
        ..WorldOptions::default()
    })
    .unwrap()
}

/// The run as sampled: the table, the sample after the first wave, the settled one, and how
/// long the apps ran.
struct Samples {
    table: String,
    idle: Sample,
    first: Sample,
    settled: Sample,
    seconds: f64,
}

/// Starts every app at once and samples the daemon until they are done and it has settled;
/// each app's output is added to `outputs`.
async fn run_apps(
    world: &World,
    cgroups: &Cgroups,
    (load, units, gid): (&Load, &[String], u32),
    idle: Sample,
    since: Instant,
    outputs: &mut Vec<(String, std::process::Output)>,
) -> Samples {
    let conn = world.connect().await.unwrap();
    let mut table = String::from("      s  RSS KiB    fds  objects  in flight\n");
    idle.row(&mut table, "idle, after one request");
    let per_app = load.streams.div_ceil(load.apps);
    let start_at = epoch_ms() + 2_000;
    let started = since.elapsed() + Duration::from_secs(2);
    let mut apps: Vec<(String, Child)> = units
        .iter()
        .map(|u| (u.clone(), app(world, cgroups, u, gid, per_app, load.seconds, start_at)))
        .collect();
    // Samples until every app is done: one after the first wave, then evenly.
    let first_wave = started + Duration::from_millis(u64::from(TOKENS * TOKEN_INTERVAL_MS) + 3_000);
    let every = Duration::from_secs((load.seconds / 12).max(1));
    let mut first = None;
    while !apps.is_empty() {
        tokio::time::sleep(if first.is_none() && since.elapsed() < first_wave {
            Duration::from_secs(1)
        } else {
            every
        })
        .await;
        let sample = Sample::take(world, &conn, since).await;
        if first.is_none() && since.elapsed() >= first_wave {
            sample.row(&mut table, "after the first wave");
            first = Some(sample);
        } else {
            sample.row(
                &mut table,
                if since.elapsed() < started {
                    "apps connecting"
                } else {
                    "load"
                },
            );
        }
        let mut still = Vec::new();
        for (unit, mut child) in apps {
            if child.try_wait().unwrap().is_some() {
                outputs.push((unit, child.wait_with_output().unwrap()));
            } else {
                still.push((unit, child));
            }
        }
        apps = still;
    }
    let ended = since.elapsed();
    // Back to idle: objects linger LINGER_S, pooled connections KEEPALIVE_MS; allowed 15 s.
    let settled = loop {
        let sample = Sample::take(world, &conn, since).await;
        if (sample.fds <= idle.fds && sample.objects <= idle.objects)
            || since.elapsed() > ended + Duration::from_secs(15)
        {
            break sample;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    settled.row(&mut table, "after, settled");
    Samples {
        table,
        idle,
        first: first.expect("a sample after the first wave"),
        settled,
        seconds: ended.saturating_sub(started).as_secs_f64(),
    }
}

/// What the apps said: their streams' ends, what each app was told, and what is wrong.
#[derive(Default)]
struct Tally {
    opened: u64,
    done: u64,
    refused: u64,
    failed: u64,
    told: HashMap<String, u64>,
    intervals: Vec<[u64; 2]>,
    problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, unit: &str, out: &std::process::Output, load_app: bool) {
        if !out.status.success() {
            self.problems
                .push(format!("{unit}: the app failed: {}", output_text(out)));
            return;
        }
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        self.opened += r["opened"].as_u64().unwrap();
        self.done += r["done"].as_u64().unwrap();
        self.told.insert(unit.to_owned(), r["charged"].as_u64().unwrap());
        for (key, count) in [("cut", &r["cut"]), ("no Finished", &r["no_finished"])] {
            if count.as_u64() != Some(0) {
                self.problems.push(format!("{unit}: {count} streams {key}"));
            }
        }
        if r["mismatches"].as_array().is_some_and(|m| !m.is_empty()) {
            self.problems
                .push(format!("{unit}: done and Finished disagree: {}", r["mismatches"]));
        }
        for kind in ["refused", "failed"] {
            for (name, n) in r[kind].as_object().unwrap() {
                let n = n.as_u64().unwrap();
                *(if kind == "refused" {
                    &mut self.refused
                } else {
                    &mut self.failed
                }) += n;
                if !name.starts_with("org.aiesim.AiEsim1.Error.") {
                    self.problems
                        .push(format!("{unit}: {n} {kind} without a stated error: {name}"));
                }
            }
        }
        if load_app {
            self.intervals.extend(
                r["intervals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| [i[0].as_u64().unwrap(), i[1].as_u64().unwrap()]),
            );
        }
    }

    /// Checks the ledger against what the apps were told; returns the device's row and the
    /// apps' sum.
    fn check_ledger(&mut self, world: &World, units: &[String]) -> (serde_json::Value, u64) {
        let rows = budget_rows(world);
        let mut sum = 0;
        for unit in units {
            let row = rows.get(unit.as_str()).cloned().unwrap_or_default();
            let spent = row["spent"].as_u64().unwrap_or(0);
            sum += spent;
            if spent != self.told.get(unit).copied().unwrap_or(0) {
                self.problems
                    .push(format!("{unit}: charged {spent}, told {:?}", self.told.get(unit)));
            }
            if row["reserved"].as_u64().unwrap_or(0) != 0 || row["in_flight"].as_u64().unwrap_or(0) != 0 {
                self.problems.push(format!("{unit}: still reserved: {row}"));
            }
        }
        let device = rows["device"].clone();
        if device["spent"].as_u64() != Some(sum) {
            self.problems
                .push(format!("the device spent {}, its apps {sum}", device["spent"]));
        }
        if device["reserved"].as_u64().unwrap_or(0) != 0 || device["in_flight"].as_u64().unwrap_or(0) != 0 {
            self.problems.push(format!("the device still holds: {device}"));
        }
        (device, sum)
    }
}

#[tokio::test]
async fn many_apps_many_streams_leave_nothing_behind() {
    let load = Load::from_env();
    if skip_if_missing(
        "many_apps_many_streams_leave_nothing_behind",
        missing_prerequisites(&load.profile),
    ) {
        return;
    }
    let group = Account::group("aiesim-apps").unwrap();
    let _daemon_user = Account::user("aiesim").unwrap();
    let units: Vec<String> = (0..load.apps)
        .map(|i| format!("aiesim-load-{i}.service"))
        .chain(["aiesim-load-warmup.service".to_owned()])
        .collect();
    let paths: Vec<String> = units.iter().map(|u| format!("/system.slice/{u}")).collect();
    let cgroups = Cgroups::make("load", &paths.iter().map(String::as_str).collect::<Vec<_>>());
    let world = start_world(&load);
    let since = Instant::now();

    // One request first, so that what is made once (the pool, the card's session) is made;
    // the idle level is what stays once its object and connection are gone.
    let warmup = &units[load.apps];
    let out = app(&world, &cgroups, warmup, group.gid, 1, 0, 0)
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let mut outputs = vec![(warmup.clone(), out)];
    tokio::time::sleep(Duration::from_millis(LINGER_S * 1000 + KEEPALIVE_MS + 1_000)).await;
    let idle = Sample::take(&world, &world.connect().await.unwrap(), since).await;
    let Samples {
        table,
        idle,
        first,
        settled,
        seconds,
    } = run_apps(
        &world,
        &cgroups,
        (&load, &units[..load.apps], group.gid),
        idle,
        since,
        &mut outputs,
    )
    .await;

    let mut tally = Tally::default();
    for (unit, out) in &outputs {
        tally.add(unit, out, unit != warmup);
    }
    let (device, sum) = tally.check_ledger(&world, &units);
    let concurrent = peak(&tally.intervals);
    let mut problems = std::mem::take(&mut tally.problems);
    if concurrent < load.streams {
        problems.push(format!("at most {concurrent} streams at once, not {}", load.streams));
    }
    if settled.fds > idle.fds {
        problems.push(format!("{} fds after, {} idle", settled.fds, idle.fds));
    }
    if settled.objects > idle.objects {
        problems.push(format!("{} objects after, {} idle", settled.objects, idle.objects));
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "KiB"
    )]
    let bound = (first.rss_kib as f64 * RSS_GROWTH) as u64 + RSS_SLACK_KIB;
    if settled.rss_kib > bound {
        problems.push(format!(
            "RSS {} KiB after, {} KiB after the first wave (bound {bound})",
            settled.rss_kib, first.rss_kib
        ));
    }

    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = tally.done as f64 / seconds;
    println!(
        "{table}\n{} apps, {} streams opened in {seconds:.0} s ({rate:.0}/s done), at most {concurrent} at once: \
         {} done, {} failed, {} refused\ncharges: {} apps, {sum} tokens, each app's as told, the device's \
         {} (their sum), reserved {}\nRSS {} KiB after the first wave, {} KiB after (bound {bound}); fds {} idle, {} after; \
         objects {} idle, {} after",
        load.apps,
        tally.opened,
        tally.done,
        tally.failed,
        tally.refused,
        tally.told.len(),
        device["spent"],
        device["reserved"],
        first.rss_kib,
        settled.rss_kib,
        idle.fds,
        settled.fds,
        idle.objects,
        settled.objects,
    );
    assert!(tally.done > 0, "no stream completed");
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), world.daemon.log());
    drop(world);
    drop(cgroups);
}
