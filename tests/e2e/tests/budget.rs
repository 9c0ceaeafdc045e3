//! Budgets as an app and an administrator see them: `aictl budget` (real aictl, JSON parsed),
//! and `Budget.BudgetExhausted` sent to the refused caller only — another client on the bus
//! hears nothing of it.

use std::time::Duration;

use aiesim_dbus::proxy::BudgetProxy;
use aiesim_e2e::{World, WorldOptions, output_text as text, skip_unless_ready};
use futures_util::StreamExt as _;

#[tokio::test]
async fn a_refused_app_alone_hears_budget_exhausted_and_aictl_budget_shows_it() {
    if skip_unless_ready("a_refused_app_alone_hears_budget_exhausted_and_aictl_budget_shows_it") {
        return;
    }
    let world = World::start(&WorldOptions {
        app_tokens: 60,
        ..WorldOptions::default()
    })
    .unwrap();
    let mine = world.aictl_json(&["budget"]);
    assert_eq!(mine["app"], "uid-0", "{mine:#}");
    assert_eq!(
        (mine["limit"].as_u64(), mine["spent"].as_u64()),
        (Some(60), Some(0)),
        "{mine:#}"
    );

    let refused = world.connect().await.unwrap();
    let mut heard = BudgetProxy::new(&refused)
        .await
        .unwrap()
        .receive_budget_exhausted()
        .await
        .unwrap();
    let bystander = world.connect().await.unwrap();
    let mut overheard = BudgetProxy::new(&bystander)
        .await
        .unwrap()
        .receive_budget_exhausted()
        .await
        .unwrap();

    // Spend from the refused connection until its app's budget refuses it.
    let broker = aiesim_dbus::proxy::BrokerProxy::new(&refused).await.unwrap();
    let (answered, error) = ask_until_refused(&broker, "a 60-token budget never ran out").await;
    assert!(answered >= 1);
    assert!(error.to_string().contains("BudgetExceeded"), "{error}");
    let signal = tokio::time::timeout(Duration::from_secs(10), heard.next())
        .await
        .expect("the refused caller hears BudgetExhausted")
        .unwrap();
    let budget = signal.args().unwrap().budget;
    assert_eq!(<&str>::try_from(&budget["app"]).unwrap(), "uid-0");
    assert!(
        <&str>::try_from(&budget["reason"]).unwrap().contains("tokens left"),
        "{budget:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), overheard.next())
            .await
            .is_err(),
        "another client overheard the signal"
    );

    let mine = world.aictl_json(&["budget"]);
    assert!(
        mine["spent"].as_u64().unwrap() > 0 && mine["available"].as_u64().unwrap() < 60,
        "{mine:#}"
    );
    assert_eq!(world.aictl_json(&["budget", "mine"]), mine, "`budget mine` is `budget`");
    let list = world.aictl_json(&["budget", "list"]);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["app"] == "uid-0")
        .expect("the app is listed");
    assert_eq!(row["spent"], mine["spent"], "{list:#}");
    let human = world.aictl().args(["budget", "list"]).output().unwrap();
    assert!(
        text(&human).contains("uid-0") && text(&human).contains("available"),
        "{}",
        text(&human)
    );
}

/// `busctl call … Budget Set` on the world's bus, as root.
fn busctl_set(world: &World, app: &str, policy: &[&str]) -> std::process::Output {
    std::process::Command::new("busctl")
        .arg(format!("--address={}", world.bus_address))
        .args([
            "call",
            aiesim_dbus::BUS_NAME,
            "/org/aiesim/AiEsim1",
            "org.aiesim.AiEsim1.Budget",
            "Set",
            "sa{sv}",
            app,
        ])
        .args(policy)
        .output()
        .expect("busctl runs")
}

/// Bad policies through busctl: each refused by name (as `InvalidArgument`), none applied.
fn refuses_bad_policies(world: &World) {
    for (policy, said) in [
        (&["1", "weekly", "t", "5"][..], "unknown policy key \"weekly\""),
        (
            &["1", "daily", "u", "5"][..],
            "policy key \"daily\" must have D-Bus type t, not u",
        ),
        (
            &["1", "per_minute", "t", "0"][..],
            "per_minute = 0 would refuse every request",
        ),
        (
            &["1", "monthly", "t", "18446744073709551615"][..],
            "is not a sensible limit",
        ),
        (&["0"][..], "the policy is empty"),
    ] {
        let out = busctl_set(world, "uid-0", policy);
        assert!(!out.status.success(), "{policy:?} was accepted");
        assert!(text(&out).contains(said), "{policy:?}: {}", text(&out));
    }
    let out = busctl_set(world, "not an app", &["1", "daily", "t", "5"]);
    assert!(text(&out).contains("is not an app id"), "{}", text(&out));
}

#[tokio::test]
async fn an_administrators_set_applies_at_once_and_bad_policies_change_nothing() {
    if skip_unless_ready("an_administrators_set_applies_at_once_and_bad_policies_change_nothing") {
        return;
    }
    let mut world = World::start(&WorldOptions {
        budget_config: "timezone = \"Europe/Paris\"".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    refuses_bad_policies(&world);
    let mine = world.aictl_json(&["budget"]);
    assert!(mine.get("daily_limit").is_none(), "nothing was applied: {mine:#}");
    assert_eq!(mine["timezone"], "Europe/Paris", "{mine:#}");

    // A daily budget set by root through busctl; the app sees it at once in GetMine.
    let out = busctl_set(&world, "uid-0", &["1", "daily", "t", "40"]);
    assert!(out.status.success(), "{}", text(&out));
    let mine = world.aictl_json(&["budget"]);
    assert_eq!(mine["daily_limit"], 40, "{mine:#}");
    assert_eq!(mine["daily_available"], 40, "{mine:#}");
    assert!(
        mine["daily_ends"].as_str().unwrap().ends_with(" 00:00 +01:00")
            || mine["daily_ends"].as_str().unwrap().ends_with(" 00:00 +02:00"),
        "{mine:#}"
    );

    // Its requests are refused past it, as BudgetExceeded naming the day.
    let app = world.connect().await.unwrap();
    let broker = aiesim_dbus::proxy::BrokerProxy::new(&app).await.unwrap();
    let (answered, error) = ask_until_refused(&broker, "a 40-token day never ran out").await;
    assert!(answered >= 1, "{error}");
    let said = error.to_string();
    assert!(
        said.contains("BudgetExceeded") && said.contains("tokens left today"),
        "{said}"
    );
    let mine = world.aictl_json(&["budget"]);
    assert!(mine["daily_spent"].as_u64().unwrap() <= 40, "{mine:#}");
    assert_eq!(mine["daily_spent"], mine["spent"], "{mine:#}");

    // A rate limit set with aictl: a request larger than a minute's worth is RateLimited.
    let set = world.aictl_json(&["budget", "set", "uid-0", "--clear", "daily", "--per-minute", "50"]);
    assert_eq!(set["per_minute"], 50, "{set:#}");
    assert!(set.get("daily_limit").is_none(), "{set:#}");
    let big = std::collections::HashMap::from([("max_tokens".to_owned(), zbus::OwnedVariant::from(200u32))]);
    let said = broker.ask("Say hi.", big).await.unwrap_err().to_string();
    assert!(
        said.contains("RateLimited") && said.contains("50 tokens a minute"),
        "{said}"
    );
    let small = std::collections::HashMap::from([("max_tokens".to_owned(), zbus::OwnedVariant::from(8u32))]);
    broker
        .ask("Say hi.", small)
        .await
        .expect("a small request fits the rate");
    let human = world.aictl().args(["budget"]).output().unwrap();
    assert!(text(&human).contains("50 tokens a minute"), "{}", text(&human));

    // The policy and the day's spend are journalled: a restart keeps both.
    let before = world.aictl_json(&["budget"]);
    drop((broker, app));
    world.restart_daemon(false).unwrap();
    let after = world.aictl_json(&["budget"]);
    assert_eq!(after["per_minute"], 50, "{after:#}");
    assert!(after.get("daily_limit").is_none(), "{after:#}");
    assert_eq!(after["spent"], before["spent"], "{after:#}");
    let app = world.connect().await.unwrap();
    let broker = aiesim_dbus::proxy::BrokerProxy::new(&app).await.unwrap();
    let big = std::collections::HashMap::from([("max_tokens".to_owned(), zbus::OwnedVariant::from(200u32))]);
    assert!(
        broker
            .ask("Say hi.", big)
            .await
            .unwrap_err()
            .to_string()
            .contains("RateLimited"),
        "the rate applies after the restart"
    );

    // Bad input from aictl is refused the same way.
    let out = world
        .aictl()
        .args(["budget", "set", "uid-0", "--clear", "hourly"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("\"hourly\", which is not a policy key"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn the_devices_budget_is_set_like_an_apps_and_binds_every_app() {
    if skip_unless_ready("the_devices_budget_is_set_like_an_apps_and_binds_every_app") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    // The device's own budget: no rate, a day that binds every app.
    let out = world
        .aictl()
        .args(["budget", "set", "device", "--per-minute", "5"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("the device has no per_minute rate"),
        "{}",
        text(&out)
    );
    let app = world.connect().await.unwrap();
    let broker = aiesim_dbus::proxy::BrokerProxy::new(&app).await.unwrap();
    broker
        .ask("Say hi.", std::collections::HashMap::new())
        .await
        .expect("an answer before the device's day is set");
    let device = |list: &serde_json::Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["app"] == "device")
            .cloned()
            .unwrap_or_else(|| panic!("the device is listed: {list:#}"))
    };
    // Without a daily limit there is no daily row; all of this world's spending was today.
    let spent_today = device(&world.aictl_json(&["budget", "list"]))["spent"]
        .as_u64()
        .unwrap();
    let day = spent_today + 30;
    let set = world.aictl_json(&["budget", "set", "device", "--daily", &day.to_string()]);
    assert_eq!(set["daily_limit"], day, "{set:#}");
    let (answered, error) = ask_until_refused(&broker, "the device's day never ran out").await;
    assert!(answered >= 1, "{error}");
    let said = error.to_string();
    assert!(
        said.contains("BudgetExceeded") && said.contains("the device has") && said.contains("today"),
        "{said}"
    );
    let after = device(&world.aictl_json(&["budget", "list"]));
    assert!(after["daily_spent"].as_u64().unwrap() <= day, "{after:#}");
    assert_eq!(
        world.aictl_json(&["budget"])["available"].as_u64(),
        after["daily_available"].as_u64()
    );
}

/// Asks short questions until the daemon refuses one (at most 20): how many were answered, and
/// the refusal.
async fn ask_until_refused(broker: &aiesim_dbus::proxy::BrokerProxy<'_>, never: &str) -> (u32, zbus::Error) {
    let options = std::collections::HashMap::from([("max_tokens".to_owned(), zbus::OwnedVariant::from(8u32))]);
    let mut answered = 0;
    loop {
        match broker.ask("Say hi.", options.clone()).await {
            Ok(_) => answered += 1,
            Err(e) => return (answered, e),
        }
        assert!(answered < 20, "{never}");
    }
}
