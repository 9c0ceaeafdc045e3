//! The walking skeleton end to end: real bus with the project's policy, the modem simulator,
//! aiesimd with its classifier on the device's wwan0, and a real model as the cloud.

use aiesim_dbus::ChatDict as _;
use std::{collections::HashMap, process::Command, time::Duration};

use aiesim_dbus::{
    ChatOptions, ErrorName, Message, StreamEvent, iface,
    proxy::{BrokerProxy, FastpathProxy, ModemProxy, RequestProxy},
};
use aiesim_e2e::{Account, CloudOptions, SIM_IMEI, World, WorldOptions, output_text as text, skip_unless_ready};
use futures_util::StreamExt as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use zbus::OwnedVariant;

fn question(max_tokens: u32) -> ChatOptions {
    ChatOptions {
        messages: vec![Message::new("user", "Name one colour of the sky.")],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatOptions::default()
    }
}

/// Reads the stream socket to its final event.
async fn read_events(fd: zbus::OwnedFd) -> Vec<StreamEvent> {
    let std = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
    std.set_nonblocking(true).unwrap();
    let mut lines = BufReader::new(tokio::net::UnixStream::from_std(std).unwrap()).lines();
    let mut events = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("stream stalled")
        .unwrap()
    {
        let e = StreamEvent::from_line(&line).unwrap_or_else(|err| panic!("bad event line {line:?}: {err}"));
        let last = e.is_final();
        events.push(e);
        if last {
            break;
        }
    }
    events
}

#[tokio::test]
async fn chat_streams_a_real_answer_and_only_its_owner_hears_of_it() {
    if skip_unless_ready("chat_streams_a_real_answer_and_only_its_owner_hears_of_it") {
        return;
    }
    // Before the bus starts: its policy names the group.
    let apps = Account::group("aiesim-apps").unwrap();
    let world = World::start(&WorldOptions::default()).unwrap();
    let conn = world.connect().await.unwrap();
    let other = world.connect().await.unwrap();
    let mut mine = aiesim_e2e::finished_signals(&conn).await;
    let mut theirs = aiesim_e2e::finished_signals(&other).await;

    let broker = BrokerProxy::new(&conn).await.unwrap();
    let (path, fd) = broker.chat(question(12).to_chat_dict().unwrap()).await.unwrap();
    assert!(path.as_str().starts_with(aiesim_dbus::REQUEST_PATH_PREFIX), "{path}");
    let events = read_events(fd).await;

    let (last, deltas) = events.split_last().unwrap();
    let answer: String = deltas
        .iter()
        .map(|e| match e {
            StreamEvent::Delta { text } => text.as_str(),
            other => panic!("only deltas before the final event, got {other:?}"),
        })
        .collect();
    assert!(!answer.trim().is_empty(), "the model said nothing: {events:?}");
    let StreamEvent::Done {
        usage,
        charged,
        endpoint,
        model,
    } = last
    else {
        panic!("expected done, got {last:?}")
    };
    assert!(
        usage.completion_tokens > 0 && usage.completion_tokens <= 12,
        "{usage:?}"
    );
    assert!(usage.prompt_tokens > 0, "{usage:?}");
    assert_eq!(*charged, u64::from(usage.prompt_tokens + usage.completion_tokens));
    assert_eq!(endpoint, "metro");
    assert_eq!(model, aiesim_e2e::MODEL_NAME);

    // Finished reaches the owner, with the same accounting…
    let msg = tokio::time::timeout(Duration::from_secs(10), mine.next())
        .await
        .expect("no Finished")
        .unwrap()
        .unwrap();
    assert_eq!(msg.header().path().unwrap().as_str(), path.as_str());
    let result: HashMap<String, OwnedVariant> = msg.body().deserialize().unwrap();
    assert_eq!(u64::try_from(&result["charged"]).unwrap(), *charged);
    assert_eq!(String::try_from(result["state"].clone()).unwrap(), "done");
    // …and nobody else, though they listen for it.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), theirs.next())
            .await
            .is_err(),
        "Finished was broadcast"
    );

    // The request object shows its owner the final accounting, and refuses anyone else.
    let req = RequestProxy::builder(&conn).path(path.clone()).build().await.unwrap();
    assert_eq!(req.state().await.unwrap(), "done");
    assert_eq!(req.charged().await.unwrap(), *charged);
    assert_eq!(req.completion_tokens().await.unwrap(), usage.completion_tokens);
    let req_other = RequestProxy::builder(&other).path(path.clone()).build().await.unwrap();
    let err = req_other.state().await.unwrap_err();
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    let err = BrokerProxy::new(&other)
        .await
        .unwrap()
        .cancel(&path.as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, zbus::Error::MethodError(n, _, _) if n.as_str() == ErrorName::Unauthorized.as_str()),
        "{err}"
    );

    // The answer's packets crossed the classifier on wwan0 and counted as AI traffic.
    let fastpath = FastpathProxy::new(&conn).await.unwrap();
    assert!(fastpath.attached().await.unwrap());
    assert_eq!(fastpath.interface().await.unwrap(), "wwan0");
    let stats = fastpath.get_statistics().await.unwrap();
    let stat = |k: &str| u64::try_from(&stats[k]).unwrap();
    assert!(stat("ai_packets") > 0 && stat("ai_bytes") > 0, "{stats:?}");
    assert!(stat("egress_packets") >= stat("ai_packets") / 2, "{stats:?}");
    assert!(stat("ingress_packets") > 0, "{stats:?}");

    endpoint_figures_are_for_administrators(&world, &apps, &fastpath, stat("ai_bytes")).await;
    relayed_figures_agree_with_the_classifier(&world, &apps, &fastpath).await;
}

/// The broker's per-app view of the daemon's cloud traffic (HTTP body bytes per request) and
/// the classifier's per-endpoint view of the same packets agree: the classifier sees the bodies
/// plus per-packet link, IP and TCP headers (at most 100 bytes each, options included) and
/// per-request HTTP headers (at most 2 KiB each way: the eSIM's bearer token is most of it).
/// An app sees only its own figures.
async fn relayed_figures_agree_with_the_classifier(world: &World, apps: &Account, fastpath: &FastpathProxy<'_>) {
    let n = |d: &HashMap<String, OwnedVariant>, k: &str| u64::try_from(&d[k]).unwrap();
    let per_app = fastpath.get_app_statistics().await.unwrap();
    let relayed: Vec<_> = per_app.iter().filter(|a| n(a, "relayed_requests") > 0).collect();
    let [mine] = relayed.as_slice() else {
        panic!("one app made requests: {per_app:?}")
    };
    let me = String::try_from(mine["app"].clone()).unwrap();
    let (requests, sent, received) = (
        n(mine, "relayed_requests"),
        n(mine, "relayed_sent_bytes"),
        n(mine, "relayed_received_bytes"),
    );
    assert!(sent > 0 && received > 0, "{per_app:?}");
    let endpoints = fastpath.get_endpoint_statistics().await.unwrap();
    let total = |k: &str| endpoints.iter().map(|e| n(e, k)).sum::<u64>();
    for (body, packets, bytes) in [
        (sent, total("egress_packets"), total("egress_bytes")),
        (received, total("ingress_packets"), total("ingress_bytes")),
    ] {
        assert!(
            body <= bytes && bytes <= body + 100 * packets + 2048 * requests,
            "bodies {body} B vs {bytes} B in {packets} packets for {requests} requests: {per_app:?} {endpoints:?}"
        );
    }
    // An app is no administrator: it gets its own figures (none here), not this one's.
    let asked = world.gdbus_as(
        65534,
        Some(apps.gid),
        "/org/aiesim/AiEsim1",
        "org.aiesim.AiEsim1.Fastpath.GetAppStatistics",
        &[],
    );
    let said = text(&asked);
    assert!(asked.status.success() && !said.contains(&me), "{said}");
}

/// Per endpoint, for the administrator: the answer came from the one endpoint in use; an app
/// is no administrator.
async fn endpoint_figures_are_for_administrators(
    world: &World,
    apps: &Account,
    fastpath: &FastpathProxy<'_>,
    ai_bytes: u64,
) {
    let endpoints = fastpath.get_endpoint_statistics().await.unwrap();
    let carried: Vec<_> = endpoints
        .iter()
        .filter(|e| u64::try_from(&e["ingress_packets"]).unwrap() > 0)
        .map(|e| String::try_from(e["destination"].clone()).unwrap())
        .collect();
    assert_eq!(carried.len(), 1, "{endpoints:?}");
    let ingress: u64 = endpoints
        .iter()
        .map(|e| u64::try_from(&e["ingress_bytes"]).unwrap())
        .sum();
    assert!(ingress > 0 && ingress <= ai_bytes, "{endpoints:?}");
    // An app is no administrator: without polkit's yes it sees no one's traffic.
    let refused = world.gdbus_as(
        65534,
        Some(apps.gid),
        "/org/aiesim/AiEsim1",
        "org.aiesim.AiEsim1.Fastpath.GetEndpointStatistics",
        &[],
    );
    let said = text(&refused);
    assert!(
        !refused.status.success() && said.contains("Unauthorized") && said.contains("read-traffic"),
        "{said}"
    );
}

#[tokio::test]
async fn aictl_status_and_ask_work_against_the_daemon() {
    if skip_unless_ready("aictl_status_and_ask_work_against_the_daemon") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();

    let out = world.aictl().arg("status").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(SIM_IMEI), "{}", text(&out));
    assert!(stdout.contains("attached to wwan0"), "{}", text(&out));

    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "8", "Say hello."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tokens charged"),
        "{}",
        text(&out)
    );

    let out = world.aictl().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["modem"]["imei"], SIM_IMEI);
    assert_eq!(doc["modem"]["protocol"], "qmi");
    assert!(doc["fastpath"]["ai_packets"].as_u64().unwrap() > 0, "{doc}");
    // Per endpoint (root is an administrator): the one endpoint the answer came from.
    let out = world.aictl().args(["stats", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let endpoints: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let carried: Vec<_> = endpoints
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ingress_bytes"].as_u64().unwrap() > 0)
        .collect();
    assert_eq!(carried.len(), 1, "{endpoints}");
    let out = world.aictl().arg("stats").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let destination = carried[0]["destination"].as_str().unwrap();
    assert!(
        table.starts_with("AI endpoint") && table.contains(destination),
        "{table}"
    );

    // The modem object over the bus, as an app would read it.
    let conn = world.connect().await.unwrap();
    let modem = ModemProxy::builder(&conn)
        .path(format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX))
        .build()
        .await
        .unwrap();
    assert_eq!(modem.imei().await.unwrap(), SIM_IMEI);
}

fn gdbus(world: &World, method: &str, args: &[&str]) -> Command {
    let mut c = Command::new("gdbus");
    c.args([
        "call",
        "--address",
        &world.bus_address,
        "--dest",
        aiesim_dbus::BUS_NAME,
        "--object-path",
        aiesim_dbus::ROOT_PATH,
    ])
    .args(["--method", method])
    .args(args);
    c
}

#[tokio::test]
async fn bad_input_gets_namespaced_errors_and_the_policy_denies_strangers() {
    if skip_unless_ready("bad_input_gets_namespaced_errors_and_the_policy_denies_strangers") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();

    // A real client (gdbus) sends a wrongly typed option.
    let out = gdbus(
        &world,
        "org.aiesim.AiEsim1.Broker.Ask",
        &["hi", "{'max_tokens': <'ten'>}"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("org.aiesim.AiEsim1.Error.InvalidArgument"),
        "{}",
        text(&out)
    );
    assert!(err.contains("max_tokens") && err.contains("type u"), "{}", text(&out));

    let out = gdbus(
        &world,
        "org.aiesim.AiEsim1.Broker.Chat",
        &["{'messages': <[('robot', 'x')]>}"],
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.aiesim.AiEsim1.Error.InvalidArgument"),
        "{}",
        text(&out)
    );
    let out = gdbus(&world, "org.aiesim.AiEsim1.Broker.Chat", &["{'bogus': <1>}"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown option"),
        "{}",
        text(&out)
    );
    let out = gdbus(
        &world,
        "org.aiesim.AiEsim1.Broker.Ask",
        &["hi", "{'model': <'no-such-model'>}"],
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.aiesim.AiEsim1.Error.NoEndpoint"),
        "{}",
        text(&out)
    );

    // busctl, another real client, reads a property.
    let out = Command::new("busctl")
        .args([
            "--address",
            &world.bus_address,
            "get-property",
            aiesim_dbus::BUS_NAME,
            "/org/aiesim/AiEsim1/Modem/0",
        ])
        .args([iface::MODEM, "Imei"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(SIM_IMEI),
        "{}",
        text(&out)
    );

    // A user outside the allowed group is stopped by the bus policy before reaching the daemon.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "gdbus",
            "call",
            "--address",
            &world.bus_address,
        ])
        .args(["--dest", aiesim_dbus::BUS_NAME, "--object-path", aiesim_dbus::ROOT_PATH])
        .args(["--method", "org.aiesim.AiEsim1.Broker.Ask", "hi", "{}"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AccessDenied"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn closing_the_stream_cancels_and_budgets_refuse_before_the_call() {
    if skip_unless_ready("closing_the_stream_cancels_and_budgets_refuse_before_the_call") {
        return;
    }
    let world = World::start(&WorldOptions {
        app_tokens: 400,
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = world.connect().await.unwrap();
    let mut finished = aiesim_e2e::finished_signals(&conn).await;
    let broker = BrokerProxy::new(&conn).await.unwrap();

    // Closing the fd at once cancels the request.
    let (path, fd) = broker.chat(question(200).to_chat_dict().unwrap()).await.unwrap();
    drop(fd);
    let msg = tokio::time::timeout(Duration::from_secs(60), finished.next())
        .await
        .expect("no Finished")
        .unwrap()
        .unwrap();
    assert_eq!(msg.header().path().unwrap().as_str(), path.as_str());
    let result: HashMap<String, OwnedVariant> = msg.body().deserialize().unwrap();
    assert_eq!(
        String::try_from(result["state"].clone()).unwrap(),
        "cancelled",
        "{result:?}"
    );
    assert_eq!(
        String::try_from(result["error"].clone()).unwrap(),
        ErrorName::Cancelled.as_str()
    );

    // A request the budget cannot cover is refused up front, naming the numbers.
    let err = broker
        .ask("Tell me a long story.", question(390).to_ask_dict())
        .await
        .unwrap_err();
    let zbus::Error::MethodError(name, Some(message), _) = &err else {
        panic!("{err}")
    };
    assert_eq!(name.as_str(), ErrorName::BudgetExceeded.as_str());
    assert!(message.contains("tokens left"), "{message}");
}

#[tokio::test]
async fn failing_cloud_and_missing_usage_are_handled() {
    if skip_unless_ready("failing_cloud_and_missing_usage_are_handled") {
        return;
    }
    let failing = World::start(&WorldOptions {
        cloud: CloudOptions {
            fail_status: Some(503),
            no_usage: false,
            require_jwt: false,
            ..CloudOptions::default()
        },
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = failing.connect().await.unwrap();
    let err = BrokerProxy::new(&conn)
        .await
        .unwrap()
        .ask("hi", question(4).to_ask_dict())
        .await
        .unwrap_err();
    let zbus::Error::MethodError(name, Some(message), _) = &err else {
        panic!("{err}")
    };
    assert_eq!(name.as_str(), ErrorName::UpstreamFailed.as_str());
    assert!(message.contains("503"), "{message}");
    drop(failing);

    // A provider that sends no usage is still billed: counted prompt + delivered tokens.
    let silent = World::start(&WorldOptions {
        cloud: CloudOptions {
            no_usage: true,
            fail_status: None,
            require_jwt: false,
            ..CloudOptions::default()
        },
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = silent.connect().await.unwrap();
    let (answer, usage) = BrokerProxy::new(&conn)
        .await
        .unwrap()
        .ask("Say hi.", question(6).to_ask_dict())
        .await
        .unwrap();
    assert!(!answer.is_empty());
    let charged = u64::try_from(&usage["charged"]).unwrap();
    let completion = u32::try_from(&usage["completion_tokens"]).unwrap();
    assert!(completion > 0 && charged > u64::from(completion), "{usage:?}");
}

/// The apps' group, created for the test when the system has none, and removed after.
#[tokio::test]
async fn apps_in_the_allowed_group_may_ask_but_not_change_state() {
    if skip_unless_ready("apps_in_the_allowed_group_may_ask_but_not_change_state") {
        return;
    }
    // The bus resolves the policy's group name when it starts, so the group comes first.
    let group = aiesim_e2e::Account::group("aiesim-apps").unwrap();
    let world = World::start(&WorldOptions::default()).unwrap();
    let as_app = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                &format!("--groups={}", group.gid),
                "gdbus",
                "call",
            ])
            .args(["--address", &world.bus_address, "--dest", aiesim_dbus::BUS_NAME])
            .args(args)
            .output()
            .unwrap()
    };

    let out = as_app(&[
        "--object-path",
        aiesim_dbus::ROOT_PATH,
        "--method",
        "org.aiesim.AiEsim1.Broker.Ask",
        "Say hi.",
        "{'max_tokens': <uint32 4>}",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("'charged'"),
        "{}",
        text(&out)
    );

    let out = as_app(&[
        "--object-path",
        "/org/aiesim/AiEsim1/Modem/0",
        "--method",
        "org.freedesktop.DBus.Properties.Get",
        iface::MODEM,
        "Imei",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Not on the allowlist: refused by the bus itself.
    let out = as_app(&[
        "--object-path",
        "/org/aiesim/AiEsim1/Modem/0",
        "--method",
        "org.freedesktop.DBus.Properties.Set",
        iface::MODEM,
        "Imei",
        "<'0'>",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AccessDenied"),
        "{}",
        text(&out)
    );
    drop(world);
}
