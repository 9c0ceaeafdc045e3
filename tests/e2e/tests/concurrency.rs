//! 200 concurrent `Ask`s through the real bus from 20 identities (10 system units of one user,
//! 10 scopes in another user's tree, each caller a real gdbus in its own cgroup) against small
//! budgets: a daily and a lifetime budget per app, the same for the scopes' user, and a daily
//! budget for the device. Nothing overshoots, every refusal is `BudgetExceeded`, every charge the
//! callers were told of is what the ledger holds, and nothing stays reserved.

use std::{
    collections::HashMap,
    process::{Child, Stdio},
};

use aiesim_e2e::{Account, Cgroups, World, WorldOptions, output_text as text, skip_unless_ready};

const DAEMON_UID: u32 = 1;
const NOBODY_UID: u32 = 65534;
const APP_DAILY: u64 = 60;
const DEVICE_DAILY: u64 = 450;
const STREAMS: usize = 200;

/// The 20 identities: (cgroup path, uid, the app id the daemon must know it by).
fn identities() -> Vec<(String, u32, String)> {
    (0..10)
        .map(|i| {
            (
                format!("/system.slice/aiesim-cc-{i}.service"),
                DAEMON_UID,
                format!("aiesim-cc-{i}.service"),
            )
        })
        .chain((0..10).map(|i| {
            (
                format!("/user.slice/user-65534.slice/user@65534.service/app.slice/app-cc-{i}.scope"),
                NOBODY_UID,
                format!("uid-65534/app-cc-{i}.scope"),
            )
        }))
        .collect()
}

/// One caller: gdbus `Broker.Ask` as `uid` in the aiesim-apps group, from inside the cgroup `path`.
fn ask(world: &World, cgroups: &Cgroups, path: &str, uid: u32, gid: u32) -> Child {
    cgroups
        .command_as(path, uid, gid, "gdbus")
        .args(["call", "--timeout", "600", "--address", &world.bus_address])
        .args(["--dest", "org.aiesim.AiEsim1", "--object-path", "/org/aiesim/AiEsim1"])
        .args([
            "--method",
            "org.aiesim.AiEsim1.Broker.Ask",
            "Say hi.",
            "{'max_tokens': <uint32 8>}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The `charged` of `Ask`'s usage dictionary as gdbus prints it.
fn charged(answer: &str) -> u64 {
    let at = answer.find("'charged': <uint64 ").expect("Ask's usage has charged") + "'charged': <uint64 ".len();
    answer[at..].split('>').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn concurrent_streams_from_many_identities_never_overshoot_a_budget() {
    if skip_unless_ready("concurrent_streams_from_many_identities_never_overshoot_a_budget") {
        return;
    }
    let apps = Account::group("aiesim-apps").unwrap();
    let _daemon_user = Account::user("aiesim").unwrap();
    let ids = identities();
    let paths: Vec<&str> = ids.iter().map(|(p, _, _)| p.as_str()).collect();
    let cgroups = Cgroups::make("concurrency", &paths);
    let world = World::start(&WorldOptions {
        daemon_user: Some("aiesim"),
        app_tokens: 80,
        budget_config: format!("app_daily_tokens = {APP_DAILY}\ndevice_daily_tokens = {DEVICE_DAILY}"),
        // Ten streams per app at once: the in-flight cap must not be what refuses them.
        extra_config: "[requests]\nmax_in_flight_per_app = 16".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let device_before = world.aictl_json(&["budget"])["device_available"].as_u64().unwrap();

    let callers: Vec<(usize, Child)> = (0..STREAMS)
        .map(|n| {
            let (path, uid, _) = &ids[n % ids.len()];
            (n % ids.len(), ask(&world, &cgroups, path, *uid, apps.gid))
        })
        .collect();
    let mut told: HashMap<&str, u64> = HashMap::new();
    let (mut answered, mut refused) = (0, 0);
    for (id, caller) in callers {
        let out = caller.wait_with_output().unwrap();
        let app = ids[id].2.as_str();
        if out.status.success() {
            answered += 1;
            *told.entry(app).or_default() += charged(&String::from_utf8_lossy(&out.stdout));
        } else {
            refused += 1;
            assert!(
                text(&out).contains("org.aiesim.AiEsim1.Error.BudgetExceeded"),
                "{app}: a refusal that is not BudgetExceeded: {}\n{}",
                text(&out),
                world.daemon.log()
            );
        }
    }
    assert!(answered > 0 && refused > 0, "{answered} answered, {refused} refused");

    let list = world.aictl_json(&["budget", "list"]);
    let row = |app: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["app"] == app)
            .cloned()
            .unwrap_or_default()
    };
    let mut total = 0;
    for (_, _, app) in &ids {
        let r = row(app);
        let spent = r["spent"].as_u64().unwrap_or(0);
        assert_eq!(spent, told.get(app.as_str()).copied().unwrap_or(0), "{app}: {r:#}");
        assert!(spent <= APP_DAILY, "{app} spent {spent}, over its day's {APP_DAILY}");
        if spent > 0 {
            assert_eq!(r["daily_spent"], spent, "{app}: {r:#}");
            assert_eq!(
                (r["reserved"].as_u64(), r["in_flight"].as_u64()),
                (Some(0), Some(0)),
                "{app}: {r:#}"
            );
        }
        total += spent;
    }
    let user = row("uid-65534");
    let scopes: u64 = ids
        .iter()
        .filter(|(_, uid, _)| *uid == NOBODY_UID)
        .map(|(_, _, app)| told.get(app.as_str()).copied().unwrap_or(0))
        .sum();
    assert_eq!(user["spent"].as_u64().unwrap_or(0), scopes, "{user:#}");
    assert!(scopes <= APP_DAILY, "the scopes' user spent {scopes}");
    assert!(total <= DEVICE_DAILY, "the device spent {total}");
    let device_after = world.aictl_json(&["budget"])["device_available"].as_u64().unwrap();
    assert_eq!(device_before - device_after, total, "the device's spend is the apps'");
    println!("{answered} answered, {refused} refused, {total} tokens charged: {told:?}");
    drop(world);
    drop(cgroups);
}
