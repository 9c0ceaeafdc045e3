//! Before the first token, in the simulated operator network where province and national serve
//! the real model. Failover: metro answers every chat with 503; the request the router sends
//! there is answered by another tier, charged once, its Request object names the tier that
//! answered, and `aictl endpoints` shows metro's failure. Hedging: metro sends its headers and
//! never a token; past `cloud.hedge_after_ms` the request is also sent to another tier, which
//! answers, charged once, and metro is not failed for losing, though the router learns that it
//! is slow. A slow first token: metro, learned to be the best, is restarted to hold its first
//! token back far past the hedge delay; the requests it still gets are hedged and answered by
//! another tier, and its picks move away. After the first token: metro cuts its streams after
//! two deltas; the app has words, so the request is not sent again but ends in `UpstreamFailed`
//! with what was delivered charged once, and metro is not failed. A hedge the app's budget cannot
//! cover alongside the first request is not sent: metro's slow first token is waited for, and
//! the app spends no more than its budget. Real dbus-daemon, real aictl,
//! the real model over TLS on the bound uplink.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    time::Duration,
};

use aiesim_dbus::{
    ChatDict as _, ChatOptions, ErrorName, Message, StreamEvent,
    proxy::{BrokerProxy, BudgetProxy, RequestProxy},
};
use aiesim_e2e::{CloudOptions, CloudStub, CloudTls, World, WorldOptions, skip_if_missing, skip_unless_ready, which};
use zbus::{OwnedVariant, proxy::CacheProperties};

async fn spent(conn: &zbus::Connection) -> u64 {
    let mine: HashMap<String, OwnedVariant> = BudgetProxy::new(conn).await.unwrap().get_mine().await.unwrap();
    u64::try_from(&mine["spent"]).unwrap()
}

/// One endpoint's row of `aictl endpoints --json`.
fn row(world: &World, endpoint: &str) -> serde_json::Value {
    let stats = world.aictl_json(&["endpoints"]);
    stats
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["endpoint"] == endpoint))
        .unwrap_or_else(|| panic!("no {endpoint} in {stats:#}"))
        .clone()
}

/// Reads a request's stream to its end: the deltas it carried and its last event.
fn read_stream(fd: zbus::OwnedFd) -> (u32, StreamEvent) {
    let socket = UnixStream::from(std::os::fd::OwnedFd::from(fd));
    socket.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut lines = BufReader::new(socket);
    let mut deltas = 0;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "the stream ended without a final event"
        );
        match StreamEvent::from_line(&line).unwrap() {
            StreamEvent::Delta { .. } => deltas += 1,
            last => return (deltas, last),
        }
    }
}

/// The world: an operator network whose metro cloud behaves as `metro` says.
fn world(metro: &CloudOptions, extra_config: &str) -> World {
    let tls = CloudOptions {
        tls: CloudTls::Trusted,
        ..CloudOptions::default()
    };
    World::start(&WorldOptions {
        operator_network: true,
        metro_cloud: Some(CloudOptions {
            tls: CloudTls::Trusted,
            ..metro.clone()
        }),
        cloud: tls,
        extra_config: extra_config.into(),
        ..WorldOptions::default()
    })
    .unwrap()
}

/// Streams one short answer; asserts it came from the real model, was charged once, and that
/// its Request object names the endpoint that answered, which it returns.
async fn answered(world: &World, conn: &zbus::Connection) -> String {
    let broker = BrokerProxy::new(conn).await.unwrap();
    let question = ChatOptions {
        messages: vec![Message::new("user", "Say hi.")],
        max_tokens: Some(4),
        temperature: Some(0.0),
        ..ChatOptions::default()
    };
    let before = spent(conn).await;
    let (path, fd) = broker.chat(question.to_chat_dict().unwrap()).await.unwrap();
    let (deltas, last) = read_stream(fd);
    let StreamEvent::Done {
        usage,
        charged,
        endpoint,
        ..
    } = last
    else {
        panic!("{last:?}\n{}", world.daemon.log());
    };
    assert!(deltas > 0, "the real model answered");
    // The reservation caps it while the chat template's tokens are not yet learnt.
    let used = u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
    assert!(charged > 0 && charged <= used, "charged {charged} for {usage:?}");
    assert_eq!(spent(conn).await - before, charged, "charged once");
    let request = RequestProxy::builder(conn)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert_eq!(request.state().await.unwrap(), "done");
    assert_eq!(
        request.endpoint().await.unwrap(),
        endpoint,
        "the endpoint that answered"
    );
    endpoint
}

#[tokio::test]
async fn a_request_metro_fails_with_503_is_answered_by_another_tier_and_charged_once() {
    let test = "a_request_metro_fails_with_503_is_answered_by_another_tier_and_charged_once";
    if skip_unless_ready(test)
        || skip_if_missing(test, which("openssl").is_none().then(|| "openssl not installed".into()))
    {
        return;
    }
    let metro = CloudOptions {
        fail_status: Some(503),
        ..CloudOptions::default()
    };
    let world = world(&metro, "");
    let conn = world.connect().await.unwrap();

    // With nothing learned metro wins whenever it is drawn (two pairs in three), so it is
    // picked within a few requests; every request, that one included, is answered.
    let mut answered_n = 0;
    let mut failed_over = None;
    for _ in 0..12 {
        let endpoint = answered(&world, &conn).await;
        answered_n += 1;
        assert_ne!(endpoint, "metro", "metro answers nothing but 503");
        if row(&world, "metro")["failures"].as_u64() == Some(1) {
            failed_over = Some(endpoint);
            break;
        }
    }
    let failed_over = failed_over.unwrap_or_else(|| panic!("metro was never picked\n{}", world.daemon.log()));
    eprintln!("failed over to {failed_over} on request {answered_n}");
    assert!(
        world.daemon.log().contains("failing over before the first token"),
        "{}",
        world.daemon.log()
    );

    // The router's view: metro was picked once, failed once and cools down; the others answered
    // every request.
    let metro = row(&world, "metro");
    assert_eq!(
        (
            metro["health"].as_str(),
            metro["picks"].as_u64(),
            metro["successes"].as_u64(),
            metro["failures"].as_u64()
        ),
        (Some("cooling"), Some(1), Some(0), Some(1)),
        "{metro:#}"
    );
    let served: u64 = ["province", "national"]
        .iter()
        .map(|e| row(&world, e)["successes"].as_u64().unwrap())
        .sum();
    assert_eq!(served, answered_n);
    assert!(row(&world, &failed_over)["successes"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn a_request_metro_leaves_without_a_token_is_hedged_to_another_tier_and_charged_once() {
    let test = "a_request_metro_leaves_without_a_token_is_hedged_to_another_tier_and_charged_once";
    if skip_unless_ready(test)
        || skip_if_missing(test, which("openssl").is_none().then(|| "openssl not installed".into()))
    {
        return;
    }
    let metro = CloudOptions {
        stall_after: Some(0),
        ..CloudOptions::default()
    };
    let world = world(&metro, "[cloud]\nhedge_after_ms = 1500\n");
    let conn = world.connect().await.unwrap();

    // With nothing learned metro wins whenever it is drawn (two pairs in three); the request it
    // gets is hedged and answered by another tier. Metro is never failed (it is only slow), but
    // the race it lost tells the router its first token takes at least that long.
    let mut answered_n = 0;
    for _ in 0..12 {
        let endpoint = answered(&world, &conn).await;
        answered_n += 1;
        assert_ne!(endpoint, "metro", "metro never sends a token");
        if row(&world, "metro")["picks"].as_u64() >= Some(1) {
            break;
        }
    }
    let metro = row(&world, "metro");
    assert!(metro["picks"].as_u64() >= Some(1), "metro was never picked\n{metro:#}");
    // At least the 1.5 s it was waited on, aging from then (towards its prior) as it is read:
    // checked against 1 s, still far above any real answer's here.
    assert!(
        metro["ttft_ms"].as_f64() >= Some(1_000.0),
        "the lost race counts as a slow first token: {metro:#}"
    );
    assert_eq!(
        (
            metro["health"].as_str(),
            metro["successes"].as_u64(),
            metro["failures"].as_u64(),
            metro["running"].as_u64()
        ),
        (Some("healthy"), Some(0), Some(0), Some(0)),
        "losing a race is no failure, and the loser was cancelled: {metro:#}"
    );
    let hedged = world.daemon.log().matches("no first token yet: hedging").count();
    assert_eq!(
        u64::try_from(hedged).ok(),
        metro["picks"].as_u64(),
        "{}",
        world.daemon.log()
    );
    let served: u64 = ["province", "national"]
        .iter()
        .map(|e| row(&world, e)["successes"].as_u64().unwrap())
        .sum();
    assert_eq!(served, answered_n);
}

/// Requests hedged away from metro so far, from the daemon's log (its colours taken out).
fn hedged_from_metro(world: &World) -> u64 {
    let mut plain = String::new();
    let mut in_escape = false;
    for c in world.daemon.log().chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (false, c) => plain.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    let n = plain
        .lines()
        .filter(|l| l.contains("no first token yet: hedging") && l.contains("first=metro"))
        .count();
    u64::try_from(n).unwrap()
}

fn picks(world: &World) -> [u64; 3] {
    ["metro", "province", "national"].map(|e| row(world, e)["picks"].as_u64().unwrap())
}

#[tokio::test]
async fn a_tier_slow_to_its_first_token_is_hedged_to_another_and_loses_its_picks() {
    let test = "a_tier_slow_to_its_first_token_is_hedged_to_another_and_loses_its_picks";
    if skip_unless_ready(test)
        || skip_if_missing(test, which("openssl").is_none().then(|| "openssl not installed".into()))
    {
        return;
    }
    // The hedge delay is far above the model's time to a first token here (well under a second
    // for a 4-token answer, a little more on a loaded machine), and metro's held-back first
    // token far above the hedge delay, so only metro's requests are hedged, and always.
    let mut world = world(&CloudOptions::default(), "[cloud]\nhedge_after_ms = 3000\n");
    let conn = world.connect().await.unwrap();

    // Learning: metro, nearest and as fast as the others, wins the pairs it is drawn in.
    for _ in 0..20 {
        answered(&world, &conn).await;
        if row(&world, "metro")["successes"].as_u64() >= Some(3) {
            break;
        }
    }
    let learned = row(&world, "metro");
    assert!(
        learned["successes"].as_u64() >= Some(3),
        "metro answered under 3 of 20: {:#}",
        world.aictl_json(&["endpoints"])
    );

    // Metro turns slow: it holds every first token back 30 s (its answers would still come).
    world
        .restart_cloud_with(CloudOptions {
            tls: CloudTls::Trusted,
            first_token_ms: Some(30_000),
            ..CloudOptions::default()
        })
        .unwrap();
    let before = picks(&world);
    let hedged_before = hedged_from_metro(&world);
    // It is still the best on paper, so it is picked within a few requests (2 in 3 each); that
    // request is hedged and answered by another tier.
    let mut slow_picked = false;
    for _ in 0..12 {
        let endpoint = answered(&world, &conn).await;
        assert_ne!(endpoint, "metro", "metro's first token comes long after the hedge's");
        if picks(&world)[0] > before[0] {
            slow_picked = true;
            break;
        }
    }
    assert!(
        slow_picked,
        "metro was not picked in 12 requests after it turned slow: {:#}",
        world.aictl_json(&["endpoints"])
    );
    let metro = row(&world, "metro");
    // At least the 3 s it was waited on, aging from then as it is read: checked against 2 s.
    assert!(
        metro["ttft_ms"].as_f64() >= Some(2_000.0),
        "the lost race counts as a slow first token: {metro:#}"
    );

    // Now the picks move away. Were metro still taken for the best it would win about 2 in 3
    // (5 or more of 8 expected); learned slow it loses every pair until that ages (its estimate
    // takes tens of seconds to fall back below another tier's), so allow 2 for a loaded machine.
    let from = picks(&world);
    let n = 8;
    for _ in 0..n {
        let endpoint = answered(&world, &conn).await;
        assert_ne!(endpoint, "metro");
    }
    let to = picks(&world);
    eprintln!("picks: learned {before:?}, slow {from:?}, after {to:?}");
    assert!(
        to[0] - from[0] <= 2,
        "metro still picked {} of {n}: {from:?} → {to:?} {:#}",
        to[0] - from[0],
        world.aictl_json(&["endpoints"])
    );
    // Every request of metro's was hedged and answered elsewhere; losing is no failure.
    assert_eq!(
        hedged_from_metro(&world) - hedged_before,
        to[0] - before[0],
        "{}",
        world.daemon.log()
    );
    let metro = row(&world, "metro");
    assert_eq!(
        (
            metro["health"].as_str(),
            metro["failures"].as_u64(),
            metro["running"].as_u64()
        ),
        (Some("healthy"), Some(0), Some(0)),
        "{metro:#}"
    );
}

#[tokio::test]
async fn a_stream_metro_breaks_after_its_first_tokens_ends_upstream_failed_and_charges_what_was_delivered() {
    let test = "a_stream_metro_breaks_after_its_first_tokens_ends_upstream_failed_and_charges_what_was_delivered";
    if skip_unless_ready(test)
        || skip_if_missing(test, which("openssl").is_none().then(|| "openssl not installed".into()))
    {
        return;
    }
    let metro = CloudOptions {
        break_after: Some(2),
        ..CloudOptions::default()
    };
    let world = world(&metro, "");
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let question = ChatOptions {
        messages: vec![Message::new("user", "Count from one to ten.")],
        max_tokens: Some(8),
        temperature: Some(0.0),
        ..ChatOptions::default()
    };

    // Metro's stream breaks after a token, which is no failure of metro's: it stays the best on
    // paper and is drawn within a few requests (2 in 3 each); the others answer in full.
    let mut cut = None;
    for _ in 0..12 {
        let before = spent(&conn).await;
        let (path, fd) = broker.chat(question.to_chat_dict().unwrap()).await.unwrap();
        let (deltas, last) = read_stream(fd);
        let charged = spent(&conn).await - before;
        let request = RequestProxy::builder(&conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .unwrap();
        match last {
            StreamEvent::Done {
                endpoint,
                charged: told,
                ..
            } => {
                assert_ne!(endpoint, "metro", "metro cuts every stream");
                assert_eq!(charged, told, "charged once, what the app was told");
            }
            StreamEvent::Error { name, message } => {
                assert_eq!(name, ErrorName::UpstreamFailed.as_str(), "{message}");
                assert!(message.contains("metro"), "{message}");
                assert_eq!(request.state().await.unwrap(), "failed");
                assert_eq!(request.endpoint().await.unwrap(), "metro", "not sent elsewhere");
                assert_eq!(request.charged().await.unwrap(), charged, "charged once");
                cut = Some((deltas, charged, request.completion_tokens().await.unwrap()));
                break;
            }
            delta @ StreamEvent::Delta { .. } => panic!("not a last event: {delta:?}"),
        }
    }
    let (deltas, charged, completion) = cut.unwrap_or_else(|| panic!("metro was never picked\n{}", world.daemon.log()));
    // Two deltas left metro before the cut; the usage chunk never came, so the daemon counts
    // the prompt it estimated and the tokens the app got: never zero.
    assert_eq!(deltas, 2, "{}", world.daemon.log());
    assert_eq!(completion, 2);
    assert!(charged > 2, "the prompt is charged too: {charged}");
    assert!(
        !world.daemon.log().contains("failing over"),
        "a stream is never sent again after a token: {}",
        world.daemon.log()
    );
    let metro = row(&world, "metro");
    assert_eq!(
        (
            metro["failures"].as_u64(),
            metro["health"].as_str(),
            metro["running"].as_u64()
        ),
        (Some(0), Some("healthy"), Some(0)),
        "{metro:#}"
    );
}

#[tokio::test]
async fn a_hedge_the_budget_cannot_cover_is_not_sent_and_nothing_overshoots() {
    let test = "a_hedge_the_budget_cannot_cover_is_not_sent_and_nothing_overshoots";
    if skip_unless_ready(test)
        || skip_if_missing(test, which("openssl").is_none().then(|| "openssl not installed".into()))
    {
        return;
    }
    // The configuration of the hedging test above, but the app's budget covers one reservation
    // (the prompt and 900 tokens) and not two: metro's slow first token is waited for, not
    // raced, and the app never spends past its budget. The test server's stub answers (five
    // tokens, as max_tokens allows) stand in for the model, which would use all 900.
    let budget = 1_500;
    let trusted = CloudOptions {
        tls: CloudTls::Trusted,
        stub: Some(CloudStub {
            tokens: 5,
            interval_ms: 20,
        }),
        ..CloudOptions::default()
    };
    let world = World::start(&WorldOptions {
        operator_network: true,
        metro_cloud: Some(CloudOptions {
            first_token_ms: Some(4_000),
            ..trusted.clone()
        }),
        cloud: trusted,
        app_tokens: budget,
        extra_config: "[cloud]\nhedge_after_ms = 1000\n".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let question = ChatOptions {
        messages: vec![Message::new("user", "Say hi.")],
        max_tokens: Some(900),
        temperature: Some(0.0),
        ..ChatOptions::default()
    };
    // Metro, nearest, wins two pairs in three with nothing learned.
    let mut by_metro = false;
    let mut charged_total = 0;
    for _ in 0..8 {
        let (_, fd) = broker.chat(question.to_chat_dict().unwrap()).await.unwrap();
        let (_, last) = read_stream(fd);
        let StreamEvent::Done { charged, endpoint, .. } = last else {
            panic!("{last:?}\n{}", world.daemon.log());
        };
        charged_total += charged;
        if endpoint == "metro" {
            by_metro = true;
            break;
        }
    }
    assert!(by_metro, "metro never answered: {:#}", world.aictl_json(&["endpoints"]));
    assert_eq!(
        hedged_from_metro(&world),
        0,
        "a hedge was sent the budget could not cover\n{}",
        world.daemon.log()
    );
    let metro = row(&world, "metro");
    assert_eq!(
        (metro["successes"].as_u64(), metro["failures"].as_u64()),
        (Some(1), Some(0)),
        "{metro:#}"
    );
    let spent = spent(&conn).await;
    assert_eq!(spent, charged_total, "charged once each");
    assert!(spent <= budget, "spent {spent} of {budget}");
}
