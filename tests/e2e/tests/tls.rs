//! The cloud over TLS with the operator's test CA (made with openssl) and HTTP/2: aiesimd
//! trusts that CA from `cloud.ca_file`, streams over one shared HTTP/2 connection, and refuses
//! a server whose certificate comes from another CA, holding it against that endpoint. Real
//! dbus-daemon, the real model behind node's HTTP/2 server, real aictl.

use std::{collections::HashMap, time::Duration};

use aiesim_dbus::{
    ErrorName,
    proxy::{BrokerProxy, BudgetProxy},
};
use aiesim_e2e::{CloudOptions, CloudTls, World, WorldOptions, skip_if_missing, skip_unless_ready, which};
use zbus::OwnedVariant;

fn skip(test: &str) -> bool {
    skip_unless_ready(test) || skip_if_missing(test, which("openssl").is_none().then(|| "openssl not installed".into()))
}

fn world(tls: CloudTls) -> World {
    World::start(&WorldOptions {
        cloud: CloudOptions {
            tls,
            ..CloudOptions::default()
        },
        ..WorldOptions::default()
    })
    .unwrap()
}

fn options(max_tokens: u32) -> HashMap<String, OwnedVariant> {
    HashMap::from([("max_tokens".to_owned(), OwnedVariant::from(max_tokens))])
}

/// The cloud's log once it logged `n` answered chats (it logs each just after its last byte).
async fn cloud_log_after(world: &World, n: usize) -> String {
    for _ in 0..250 {
        let log = world.cloud.log();
        if log.matches("POST /v1/chat/completions 200").count() >= n {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the cloud did not log {n} answered chats:\n{}", world.cloud.log());
}

#[tokio::test]
async fn requests_stream_over_tls_and_share_one_http2_connection() {
    if skip("requests_stream_over_tls_and_share_one_http2_connection") {
        return;
    }
    let world = world(CloudTls::Trusted);
    assert!(world.cloud_url.starts_with("https://"), "{}", world.cloud_url);
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    // Two at once (queued for the one-at-a-time model), then one more.
    let (a, b) = tokio::join!(broker.ask("Say hi.", options(4)), broker.ask("Say yes.", options(4)));
    let c = broker.ask("Say no.", options(4)).await;
    for answer in [a, b, c] {
        let (text, usage) = answer.unwrap_or_else(|e| panic!("{e}\n{}", world.daemon.log()));
        assert!(!text.is_empty(), "{usage:?}");
        assert!(u64::try_from(&usage["charged"]).unwrap() > 0, "{usage:?}");
    }
    let log = cloud_log_after(&world, 3).await;
    let chats: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("POST /v1/chat/completions 200"))
        .collect();
    assert_eq!(chats.len(), 3, "{log}");
    assert!(
        chats.iter().all(|l| l.contains("HTTP/2.0 on connection 1")),
        "every chat over HTTP/2 on the first connection: {log}"
    );
    assert_eq!(log.matches("h2 session").count(), 1, "one HTTP/2 session: {log}");
    assert!(!log.contains("TLS handshake failed"), "{log}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_and_counts_against_the_endpoint() {
    if skip("a_certificate_from_another_ca_is_refused_and_counts_against_the_endpoint") {
        return;
    }
    let world = world(CloudTls::Untrusted);
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let e = broker.ask("Say hi.", options(4)).await.unwrap_err();
    let zbus::Error::MethodError(name, Some(message), _) = &e else {
        panic!("not a method error with a message: {e}")
    };
    assert_eq!(name.as_str(), ErrorName::UpstreamFailed.as_str(), "{e}");
    assert!(
        message.contains("presented a certificate that is not trusted") && message.contains("UnknownIssuer"),
        "the refusal says why: {message}\n{}",
        world.daemon.log()
    );
    // The server saw the handshake fail (it may say so a moment after the daemon gave up) and
    // never got a request.
    let log = world
        .cloud
        .log_once_it_says("TLS handshake failed", Duration::from_secs(5));
    assert!(log.contains("TLS handshake failed") && !log.contains("POST"), "{log}");
    let stats = world.aictl_json(&["endpoints"]);
    assert_eq!(
        (
            stats[0]["health"].as_str(),
            stats[0]["failures"].as_u64(),
            stats[0]["successes"].as_u64()
        ),
        (Some("cooling"), Some(1), Some(0)),
        "an endpoint fault: {stats:#}"
    );
    let mine: HashMap<String, OwnedVariant> = BudgetProxy::new(&conn).await.unwrap().get_mine().await.unwrap();
    assert_eq!(u64::try_from(&mine["spent"]).unwrap(), 0, "nothing charged: {mine:?}");
}
