//! Scheduling requests to the real model, which serves one at a time: a request the endpoint
//! refuses for its content is its app's error and takes the service from no one; interactive
//! requests overtake queued background ones; sixty requests at once from one app are each
//! answered or refused for want of budget, with the budget spent before the first refusal.
//! Real dbus-daemon, real gdbus for the other app, the real model.

use std::{collections::HashMap, time::Duration};

use aiesim_dbus::{
    ChatDict as _, ChatOptions, ErrorName, Message, Priority,
    proxy::{BrokerProxy, BudgetProxy, RequestProxy},
};
use aiesim_e2e::{Account, World, WorldOptions, output_text as text, skip_unless_ready};
use futures_util::StreamExt as _;
use zbus::{OwnedVariant, proxy::CacheProperties};

async fn spent(conn: &zbus::Connection) -> u64 {
    let mine: HashMap<String, OwnedVariant> = BudgetProxy::new(conn).await.unwrap().get_mine().await.unwrap();
    u64::try_from(&mine["spent"]).unwrap()
}

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
        other => panic!("not a method error: {other}"),
    }
}

#[tokio::test]
async fn a_request_the_endpoint_refuses_for_its_content_is_the_callers_error_and_the_next_app_is_served() {
    if skip_unless_ready(
        "a_request_the_endpoint_refuses_for_its_content_is_the_callers_error_and_the_next_app_is_served",
    ) {
        return;
    }
    let group = Account::group("aiesim-apps").unwrap();
    let world = World::start(&WorldOptions::default()).unwrap();
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    // Clamped to the cap of 2048, which with the prompt overflows the model's 2048-token context.
    let hostile = HashMap::from([("max_tokens".to_owned(), OwnedVariant::from(999_999_999u32))]);
    let e = broker.ask("Say hi.", hostile).await.unwrap_err();
    assert_eq!(error_name(&e), ErrorName::InvalidArgument.as_str(), "{e}");
    assert!(
        e.to_string().contains("context"),
        "the endpoint's reason is passed on: {e}"
    );
    assert_eq!(spent(&conn).await, 0, "a refused request charges nothing");

    // The very next request, from another app (user nobody in aiesim-apps, real gdbus).
    let out = world.gdbus_as(
        65534,
        Some(group.gid),
        aiesim_dbus::ROOT_PATH,
        "org.aiesim.AiEsim1.Broker.Ask",
        &["Say hi.", "{'max_tokens': <uint32 4>}"],
    );
    assert!(out.status.success(), "the other app was not served: {}", text(&out));
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("'endpoint': <'metro'>"), "{answer}");

    // The router's view (real aictl): two picks, one answer, no fault held against it.
    let stats = world.aictl_json(&["endpoints"]);
    let metro = &stats[0];
    assert_eq!(
        (
            metro["endpoint"].as_str(),
            metro["health"].as_str(),
            metro["picks"].as_u64(),
            metro["successes"].as_u64(),
            metro["failures"].as_u64(),
        ),
        (Some("metro"), Some("healthy"), Some(2), Some(1), Some(0)),
        "{stats:#}"
    );
    // Apps may read it; strangers may not (the bus policy).
    let endpoints = |gid| {
        world.gdbus_as(
            65534,
            gid,
            aiesim_dbus::ROOT_PATH,
            "org.aiesim.AiEsim1.Endpoints.GetStatistics",
            &[],
        )
    };
    let app = endpoints(Some(group.gid));
    assert!(app.status.success() && text(&app).contains("'metro'"), "{}", text(&app));
    let stranger = endpoints(None);
    assert!(
        !stranger.status.success() && text(&stranger).contains("AccessDenied"),
        "{}",
        text(&stranger)
    );
}

fn chat(text: &str, max_tokens: u32, priority: Priority) -> HashMap<String, OwnedVariant> {
    ChatOptions {
        messages: vec![Message::new("user", text)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        priority,
        ..ChatOptions::default()
    }
    .to_chat_dict()
    .unwrap()
}

async fn state(conn: &zbus::Connection, path: &zbus::OwnedObjectPath) -> String {
    RequestProxy::builder(conn)
        .path(path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap()
        .state()
        .await
        .unwrap()
}

#[tokio::test]
async fn interactive_requests_overtake_queued_background_ones() {
    if skip_unless_ready("interactive_requests_overtake_queued_background_ones") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let conn = world.connect().await.unwrap();
    let mut finished = aiesim_e2e::finished_signals(&conn).await;
    let broker = BrokerProxy::new(&conn).await.unwrap();

    // Keeps the one-at-a-time model busy while the others line up.
    let (busy, _busy_fd) = broker
        .chat(chat(
            "Write a long story about a lighthouse keeper and the sea.",
            96,
            Priority::Background,
        ))
        .await
        .unwrap();
    let mut names = HashMap::from([(busy.to_string(), "busy")]);
    let mut fds = Vec::new();
    for (name, priority) in [
        ("bg1", Priority::Background),
        ("bg2", Priority::Background),
        ("int1", Priority::Interactive),
        ("int2", Priority::Interactive),
    ] {
        let (path, fd) = broker.chat(chat("Say hi.", 4, priority)).await.unwrap();
        assert_eq!(state(&conn, &path).await, "queued", "{name} waits for the busy model");
        names.insert(path.to_string(), name);
        fds.push(fd);
    }
    assert_eq!(
        state(&conn, &busy).await,
        "streaming",
        "the busy request outlasted the queueing; the test proves nothing otherwise"
    );

    let mut order = Vec::new();
    while order.len() < names.len() {
        let msg = tokio::time::timeout(Duration::from_secs(120), finished.next())
            .await
            .unwrap_or_else(|_| panic!("requests never finished, got {order:?}:\n{}", world.daemon.log()))
            .unwrap()
            .unwrap();
        let path = msg.header().path().unwrap().to_string();
        let result: HashMap<String, OwnedVariant> = msg.body().deserialize().unwrap();
        assert_eq!(<&str>::try_from(&result["state"]).unwrap(), "done", "{result:?}");
        order.push(names[&path]);
    }
    assert_eq!(order, ["busy", "int1", "int2", "bg1", "bg2"]);
    let stats = world.aictl_json(&["endpoints"]);
    let metro = &stats[0];
    assert_eq!(
        (
            metro["successes"].as_u64(),
            metro["max_concurrent"].as_u64(),
            metro["queued"].as_u64()
        ),
        (Some(5), Some(1), Some(0)),
        "{stats:#}"
    );
    assert!(metro["ttft_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{stats:#}");
    let human = world.aictl().arg("endpoints").output().unwrap();
    eprintln!("{}", text(&human));
    assert!(
        human.status.success() && String::from_utf8_lossy(&human.stdout).contains("metro"),
        "{}",
        text(&human)
    );
}

/// The one app's budget in the contention test.
const BUDGET: u64 = 800;

#[tokio::test]
async fn sixty_requests_at_once_are_each_answered_or_refused_and_the_budget_is_spent_first() {
    if skip_unless_ready("sixty_requests_at_once_are_each_answered_or_refused_and_the_budget_is_spent_first") {
        return;
    }
    // Far shorter than sixty answers take: only a request's own wait for its endpoint counts.
    let world = World::start(&WorldOptions {
        app_tokens: BUDGET,
        extra_config: "[requests]\nmax_in_flight_per_app = 64\n[cloud]\nfirst_byte_timeout_ms = 3000\n".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = world.connect().await.unwrap();
    let mut exhausted = BudgetProxy::new(&conn)
        .await
        .unwrap()
        .receive_budget_exhausted()
        .await
        .unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    // Each reserves about 70 tokens at dispatch and uses about 30 ("2 + 2 = 4"): reserving for
    // every waiting request at once would refuse most of them with the budget barely touched.
    let options = HashMap::from([("max_tokens".to_owned(), OwnedVariant::from(48u32))]);
    let results = futures_util::future::join_all(
        (0..60).map(|_| broker.ask("What is 2+2? Answer with the number only.", options.clone())),
    )
    .await;
    let (mut answered, mut refused) = (0, 0);
    for result in &results {
        match result {
            Ok(_) => answered += 1,
            Err(e) => {
                assert_eq!(error_name(e), ErrorName::BudgetExceeded.as_str(), "{e}");
                refused += 1;
            }
        }
    }
    assert!(answered > 0 && refused > 0, "{answered} answered, {refused} refused");
    // Refused when its turn came, each refusal is also signalled to the caller.
    for n in 0..refused {
        tokio::time::timeout(Duration::from_secs(10), exhausted.next())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {refused} refusals were signalled"))
            .unwrap();
    }
    let spent = spent(&conn).await;
    eprintln!("{answered} answered, {refused} refused, {spent} of {BUDGET} tokens charged");
    assert!(spent <= BUDGET, "charged {spent} of a {BUDGET}-token budget");
    assert!(spent * 10 >= BUDGET * 9, "only {spent} of {BUDGET} charged");
    // In the daemon's order (one thread): no answer ended after the first refusal, so all of
    // the above was charged before it.
    let log = plain(&world.daemon.log());
    let ended: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request ended") && l.contains("request=\"ask\""))
        .map(|l| if l.contains("state=\"done\"") { "done" } else { "failed" })
        .collect();
    assert_eq!(ended.len(), 60, "{log}");
    let first_refusal = ended.iter().position(|s| *s == "failed").unwrap();
    assert!(ended[first_refusal..].iter().all(|s| *s == "failed"), "{ended:?}");
}

/// The log without its terminal colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn an_overloaded_endpoint_is_left_alone_for_as_long_as_its_retry_after_asks() {
    if skip_unless_ready("an_overloaded_endpoint_is_left_alone_for_as_long_as_its_retry_after_asks") {
        return;
    }
    let world = World::start(&WorldOptions {
        cloud: aiesim_e2e::CloudOptions {
            fail_status: Some(429),
            retry_after: Some(5),
            ..aiesim_e2e::CloudOptions::default()
        },
        ..WorldOptions::default()
    })
    .unwrap();
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let options = HashMap::from([("max_tokens".to_owned(), OwnedVariant::from(4u32))]);
    let e = broker.ask("Say hi.", options.clone()).await.unwrap_err();
    assert_eq!(error_name(&e), ErrorName::UpstreamFailed.as_str(), "{e}");
    assert!(e.to_string().contains("429"), "{e}");
    // Out for the 5 s it asked, not the 30 s cooldown of a failure that says nothing.
    let stats = world.aictl_json(&["endpoints"]);
    let cooldown = stats[0]["cooldown_ms"].as_u64().unwrap();
    assert_eq!(stats[0]["health"], "cooling", "{stats:#}");
    assert!((1..=5_000).contains(&cooldown), "{stats:#}");
    let e = broker.ask("Say hi.", options.clone()).await.unwrap_err();
    assert_eq!(error_name(&e), ErrorName::NoEndpoint.as_str(), "{e}");
    // Then one probe goes out, and is refused again.
    world.wait_json(&["endpoints"], "past its Retry-After", |d| d[0]["cooldown_ms"] == 0);
    let e = broker.ask("Say hi.", options).await.unwrap_err();
    assert_eq!(error_name(&e), ErrorName::UpstreamFailed.as_str(), "{e}");
    assert_eq!(spent(&conn).await, 0, "refusals charge nothing");
}
