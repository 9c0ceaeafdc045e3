//! Streaming that cannot be abused: a reader that never reads, a caller that opens and closes
//! ten thousand Chats, and a caller that leaves the bus in the middle of an Ask are each
//! bounded and billed for what they were sent, and another app is served meanwhile. Real
//! dbus-daemon, real gdbus for the other app, the real model.

use aiesim_dbus::ChatDict as _;
use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aiesim_dbus::{
    ChatOptions, ErrorName, Message,
    proxy::{BrokerProxy, BudgetProxy},
};
use aiesim_e2e::{Account, World, WorldOptions, output_text as text, skip_unless_ready};
use futures_util::StreamExt as _;
use zbus::OwnedVariant;

fn long_question(max_tokens: u32) -> ChatOptions {
    ChatOptions {
        messages: vec![Message::new(
            "user",
            "Write a long story about a lighthouse keeper and the sea.",
        )],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatOptions::default()
    }
}

async fn in_flight_and_spent(world: &World) -> (u32, u64) {
    let conn = world.connect().await.unwrap();
    let mine: HashMap<String, OwnedVariant> = BudgetProxy::new(&conn).await.unwrap().get_mine().await.unwrap();
    (
        u32::try_from(&mine["in_flight"]).unwrap(),
        u64::try_from(&mine["spent"]).unwrap(),
    )
}

/// Another app (user nobody in aiesim-apps) asks something short with real gdbus.
fn other_app_asks(world: &World, group: &Account) {
    let out = world.gdbus_as(
        65534,
        Some(group.gid),
        aiesim_dbus::ROOT_PATH,
        "org.aiesim.AiEsim1.Broker.Ask",
        &["Say hi.", "{'max_tokens': <uint32 4>}"],
    );
    assert!(out.status.success(), "the other app was not served: {}", text(&out));
}

#[tokio::test]
async fn a_reader_that_never_reads_is_cancelled_and_billed_for_what_was_sent() {
    if skip_unless_ready("a_reader_that_never_reads_is_cancelled_and_billed_for_what_was_sent") {
        return;
    }
    let group = Account::group("aiesim-apps").unwrap();
    let world = World::start(&WorldOptions {
        extra_config: "[requests]\nstall_timeout_ms = 1000\nstream_buffer_bytes = 4096\n".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = world.connect().await.unwrap();
    let mut finished = aiesim_e2e::finished_signals(&conn).await;
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let started = Instant::now();
    // The fd is held and never read.
    let (_path, _fd) = broker.chat(long_question(600).to_chat_dict().unwrap()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(90), finished.next())
        .await
        .expect("the stalled request never ended")
        .unwrap()
        .unwrap();
    let result: HashMap<String, OwnedVariant> = msg.body().deserialize().unwrap();
    let field = |k: &str| <&str>::try_from(&result[k]).unwrap().to_owned();
    assert_eq!(field("state"), "cancelled", "{result:?}");
    assert!(field("message").contains("stopped reading"), "{result:?}");
    let charged = u64::try_from(&result["charged"]).unwrap();
    let completion = u32::try_from(&result["completion_tokens"]).unwrap();
    assert!(charged > 0 && completion > 0, "billed for what was sent: {result:?}");
    assert!(completion < 600, "it stopped long before the answer's end: {result:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(in_flight_and_spent(&world).await.0, 0, "nothing stays reserved");
    other_app_asks(&world, &group);
}

#[tokio::test]
async fn ten_thousand_chats_opened_and_closed_are_bounded_and_cost_nothing() {
    if skip_unless_ready("ten_thousand_chats_opened_and_closed_are_bounded_and_cost_nothing") {
        return;
    }
    let group = Account::group("aiesim-apps").unwrap();
    let world = World::start(&WorldOptions::default()).unwrap();
    let rss_before = world.daemon_rss_kib().unwrap();
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let spent_before = in_flight_and_spent(&world).await.1;
    let (mut admitted, mut refused) = (0u32, 0u32);
    for _ in 0..10_000 {
        match broker.chat(long_question(16).to_chat_dict().unwrap()).await {
            Ok((_path, fd)) => {
                drop(fd);
                admitted += 1;
            }
            Err(zbus::Error::MethodError(name, message, _)) => {
                assert_eq!(name.as_str(), ErrorName::LimitExceeded.as_str(), "{message:?}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Objects linger a minute for their owner, and an app may hold 64.
    assert!((64..=64 * 3).contains(&admitted), "{admitted} admitted");
    assert_eq!(admitted + refused, 10_000);
    let (in_flight, spent) = in_flight_and_spent(&world).await;
    assert_eq!(in_flight, 0);
    assert_eq!(spent, spent_before, "a Chat closed at once costs nothing");
    let rss_after = world.daemon_rss_kib().unwrap();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    other_app_asks(&world, &group);
}

#[tokio::test]
async fn a_caller_that_leaves_the_bus_mid_ask_has_its_request_cancelled() {
    if skip_unless_ready("a_caller_that_leaves_the_bus_mid_ask_has_its_request_cancelled") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let mut asker = Command::new("gdbus")
        .args(["call", "--address", &world.bus_address, "--dest", aiesim_dbus::BUS_NAME])
        .args([
            "--object-path",
            aiesim_dbus::ROOT_PATH,
            "--method",
            "org.aiesim.AiEsim1.Broker.Ask",
        ])
        .args([
            "Write a long story about a lighthouse keeper and the sea.",
            "{'max_tokens': <uint32 600>}",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the request is streaming, then the caller dies.
    let started = Instant::now();
    while in_flight_and_spent(&world).await.0 == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the Ask never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    asker.kill().unwrap();
    asker.wait().unwrap();
    let left = Instant::now();
    while in_flight_and_spent(&world).await.0 != 0 {
        assert!(
            left.elapsed() < Duration::from_secs(5),
            "the request went on for its caller that left:\n{}",
            world.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The reservation is released before the end is logged: wait for the line.
    let ended = loop {
        let log = world.daemon.log();
        if let Some(line) = log
            .lines()
            .rev()
            .find(|l| l.contains("request ended") && l.contains("ask"))
        {
            break line.to_owned();
        }
        assert!(left.elapsed() < Duration::from_secs(10), "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ended.contains("cancelled"), "{ended}");
    // Billed for what was generated before the caller left (nothing, if it left before the
    // first token): never the whole reservation of 600 completion tokens.
    let spent = in_flight_and_spent(&world).await.1;
    assert!(spent < 600, "charged {spent} for an answer cut short");
}
