//! The modem through the whole stack: aiesimd's live session on the simulated modem, the
//! Modem object over the real bus (properties, `PropertiesChanged`, the policy), `aictl modem`,
//! and faults injected into the simulator while apps keep using the cloud.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aiesim_dbus::proxy::ModemProxy;
use aiesim_e2e::{SIM_IMEI, World, WorldOptions, output_text as text, skip_unless_ready};
use futures_util::StreamExt as _;
use zbus::{fdo::PropertiesProxy, names::InterfaceName};

const MODEM_PATH: &str = "/org/aiesim/AiEsim1/Modem/0";

#[tokio::test]
async fn aictl_modem_shows_the_live_session() {
    if skip_unless_ready("aictl_modem_shows_the_live_session") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let doc = world.aictl_json(&["modem"]);
    assert_eq!(doc["state"], "ready", "{doc:#}");
    assert_eq!(doc["imei"], SIM_IMEI);
    assert_eq!(doc["protocol"], "qmi");
    assert_eq!(doc["sim"], "ready");
    assert_eq!(doc["registration"], "home");
    assert_eq!(doc["data"]["state"], "disconnected");
    let quality = doc["signal"]["quality"].as_u64().unwrap();
    assert!((1..=100).contains(&quality), "{doc:#}");
    assert!(doc["signal"]["rssi_dbm"].as_i64().is_some_and(|r| r < -50), "{doc:#}");

    let out = world.aictl().arg("modem").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let human = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "state          ready",
        SIM_IMEI,
        "SIM            ready",
        "registration   home",
    ] {
        assert!(human.contains(expected), "{expected:?} missing from:\n{human}");
    }

    // Root may bring the data session up; the address shows everywhere.
    let out = world.aictl().args(["modem", "connect", "internet"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let doc = world.aictl_json(&["modem"]);
    assert_eq!(doc["data"]["state"], "connected", "{doc:#}");
    assert_eq!(doc["data"]["address"], "192.0.2.2", "{doc:#}");
    let conn = world.connect().await.unwrap();
    // Uncached: each read asks the daemon, as a fresh client would.
    let modem = ModemProxy::builder(&conn)
        .path(MODEM_PATH)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert_eq!(modem.ipv4_address().await.unwrap(), "192.0.2.2/24");
    assert!(
        world
            .modem_control("state")
            .unwrap()
            .contains(&"data up internet 192.0.2.2".to_owned())
    );
    let out = world.aictl().args(["modem", "disconnect"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(modem.data_session().await.unwrap(), "disconnected");
}

#[tokio::test]
async fn property_changes_are_signalled_as_the_modem_changes() {
    if skip_unless_ready("property_changes_are_signalled_as_the_modem_changes") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let conn = world.connect().await.unwrap();
    let properties = PropertiesProxy::builder(&conn)
        .destination(aiesim_dbus::BUS_NAME)
        .path(MODEM_PATH)
        .build()
        .await
        .unwrap();
    let mut changes = properties.receive_properties_changed().await.unwrap();

    world.modem_control("card remove").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(k, v): &(String, String)| k == "SimState" && v == "absent")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let signal = tokio::time::timeout(left, changes.next())
            .await
            .unwrap_or_else(|_| panic!("no SimState change signalled; saw {seen:?}"))
            .expect("the signal stream goes on");
        let args = signal.args().unwrap();
        // The path carries the Esim interface too, which changes with the card; not this test's.
        if args.interface_name != InterfaceName::from_static_str_unchecked("org.aiesim.AiEsim1.Modem") {
            continue;
        }
        for (name, value) in args.changed_properties() {
            seen.push(((*name).to_owned(), value.to_string().trim_matches('"').to_owned()));
        }
    }
    // Without the card the modem deregisters: one more property the same way.
    let doc = world.wait_json(&["modem"], "deregistered", |d| d["registration"] == "not-registered");
    assert_eq!(doc["sim"], "absent");
    world.modem_control("card insert").unwrap();
    world.wait_json(&["modem"], "registered again", |d| {
        d["registration"] == "home" && d["sim"] == "ready"
    });
}

#[tokio::test]
async fn a_modem_reset_is_reported_and_recovered_while_apps_keep_asking() {
    if skip_unless_ready("a_modem_reset_is_reported_and_recovered_while_apps_keep_asking") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    world.modem_control("reset 2000").unwrap();
    let doc = world.wait_json(&["modem"], "down", |d| d["state"] != "ready");
    assert!(!doc["last_error"].as_str().unwrap_or_default().is_empty(), "{doc:#}");

    // The modem is gone; the cloud is reached over whatever link exists, as before.
    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "4", "Say hi."])
        .output()
        .unwrap();
    assert!(out.status.success(), "asking during a modem reset: {}", text(&out));

    // Calls that need the modem say so, with the documented error.
    let out = world.aictl().args(["modem", "connect"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ModemUnavailable"),
        "{}",
        text(&out)
    );

    let doc = world.wait_json(&["modem"], "ready again", |d| d["state"] == "ready");
    assert_eq!(doc["imei"], SIM_IMEI);
    assert_eq!(doc["last_error"], "");
    let clients = world.modem_control("state").unwrap();
    let held: Vec<&String> = clients.iter().filter(|l| l.starts_with("clients ")).collect();
    assert!(
        held.iter().all(|l| !l.contains(',')),
        "one client id per service after the reset, none leaked: {held:?}"
    );
}

#[tokio::test]
async fn apps_may_read_the_modem_but_not_drive_it() {
    if skip_unless_ready("apps_may_read_the_modem_but_not_drive_it") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let as_nobody = |method: &str, args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "gdbus", "call"])
            .args(["--address", &world.bus_address, "--dest", aiesim_dbus::BUS_NAME])
            .args(["--object-path", MODEM_PATH, "--method", method])
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody("org.aiesim.AiEsim1.Modem.Connect", &["internet"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("AccessDenied"), "{}", text(&out));
    let out = as_nobody("org.aiesim.AiEsim1.Modem.GetSignal", &[]);
    assert!(!out.status.success(), "strangers are denied everything: {}", text(&out));
    assert!(world.modem_control("state").unwrap().contains(&"data down".to_owned()));
}

/// No libqmi/libmbim proxy of their own may have stepped in: the tools talked to aiesimd's.
fn assert_no_foreign_proxy(name: &str) {
    let out = Command::new("pgrep").args(["-x", name]).output().unwrap();
    assert!(
        !out.status.success(),
        "a {name} process runs: the tool did not use aiesimd's socket"
    );
}

#[tokio::test]
async fn qmicli_shares_the_modem_through_the_daemons_qmi_proxy() {
    if skip_unless_ready("qmicli_shares_the_modem_through_the_daemons_qmi_proxy") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let qmicli = |args: &[&str]| {
        world
            .device_netns()
            .command("qmicli")
            .args(["-p", "--device-open-qmi"])
            .arg("-d")
            .arg(world.modem_link())
            .args(args)
            .output()
            .unwrap()
    };
    // Client ids only: the eSIM's reads open and close card channels meanwhile.
    let clients = || -> Vec<String> {
        world
            .modem_control("state")
            .unwrap()
            .into_iter()
            .filter(|line| line.starts_with("clients "))
            .collect()
    };
    let daemons = clients();
    let out = qmicli(&["--dms-get-ids"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(SIM_IMEI),
        "{}",
        text(&out)
    );
    assert_no_foreign_proxy("qmi-proxy");

    // A client that keeps its id and disconnects: the proxy gives the id back for it.
    let out = qmicli(&["--nas-get-signal-info", "--client-no-release-cid"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("RSSI"), "{}", text(&out));
    let started = Instant::now();
    while clients() != daemons {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the proxied client's ids were not released: {:?} vs {daemons:?}",
            clients()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon kept its own session all along.
    assert_eq!(world.aictl_json(&["modem"])["state"], "ready");
    assert!(
        world.daemon.log().contains("qmi-proxy client opened the modem"),
        "{}",
        world.daemon.log()
    );
}

#[tokio::test]
async fn mbimcli_shares_the_modem_through_the_daemons_mbim_proxy() {
    if skip_unless_ready("mbimcli_shares_the_modem_through_the_daemons_mbim_proxy") {
        return;
    }
    let world = World::start(&WorldOptions {
        modem_protocol: "mbim",
        ..WorldOptions::default()
    })
    .unwrap();
    assert_eq!(world.aictl_json(&["modem"])["protocol"], "mbim");
    let mbimcli = |args: &[&str]| {
        world
            .device_netns()
            .command("mbimcli")
            .arg("-p")
            .arg("-d")
            .arg(world.modem_link())
            .args(args)
            .output()
            .unwrap()
    };
    let out = mbimcli(&["--query-device-caps"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(SIM_IMEI),
        "{}",
        text(&out)
    );
    let out = mbimcli(&["--query-signal-state"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("RSSI"), "{}", text(&out));
    assert_no_foreign_proxy("mbim-proxy");
    assert!(
        world.daemon.log().contains("mbim-proxy client opened the modem"),
        "{}",
        world.daemon.log()
    );

    // The daemon's session never closed: it still follows the modem.
    world.modem_control("register roaming").unwrap();
    world.wait_json(&["modem"], "roaming", |d| d["registration"] == "roaming");
}

#[tokio::test]
async fn qmicli_over_mbim_shares_the_modem_through_the_daemons_mbim_proxy() {
    if skip_unless_ready("qmicli_over_mbim_shares_the_modem_through_the_daemons_mbim_proxy") {
        return;
    }
    let world = World::start(&WorldOptions {
        modem_protocol: "mbim",
        ..WorldOptions::default()
    })
    .unwrap();
    // QMI-over-MBIM through the proxy: libqmi opens the port via libmbim's proxy protocol.
    let out = world
        .device_netns()
        .command("qmicli")
        .args(["-p", "--device-open-mbim", "-d"])
        .arg(world.modem_link())
        .arg("--dms-get-ids")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(SIM_IMEI),
        "{}",
        text(&out)
    );
    assert_no_foreign_proxy("mbim-proxy");
    assert_no_foreign_proxy("qmi-proxy");
    assert_eq!(world.aictl_json(&["modem"])["state"], "ready");
}

#[tokio::test]
async fn the_fast_path_follows_the_modems_interface() {
    if skip_unless_ready("the_fast_path_follows_the_modems_interface") {
        return;
    }
    // The simulated modem has no sysfs node, so the configuration names its netdev.
    let world = World::start(&WorldOptions {
        modem_config: "interface = \"wwan0\"".into(),
        fastpath_interface: "modem",
        ..WorldOptions::default()
    })
    .unwrap();
    assert_eq!(world.aictl_json(&["modem"])["interface"], "wwan0");
    let started = Instant::now();
    let status = loop {
        let doc = world.aictl_json(&["status"]);
        if doc["fastpath"]["attached"] == true {
            break doc;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never attached: {doc:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["fastpath"]["interface"], "wwan0");
    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "4", "Say hi."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status = world.aictl_json(&["status"]);
    assert!(status["fastpath"]["ai_packets"].as_u64().unwrap() > 0, "{status:#}");
}
