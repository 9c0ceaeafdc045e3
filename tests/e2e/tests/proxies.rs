//! The client crate's typed proxies against the running daemon, which the contract test holds
//! to the XML: every method and property of every proxy is called, and a proxy whose names or
//! types strayed from the contract would fail here (unknown method, invalid arguments, or a
//! reply its types cannot take). Calls that change state are made so that they change nothing.

use std::collections::HashMap;

use aiesim_dbus::{
    ChatDict as _, ChatOptions, Message,
    proxy::{
        BrokerProxy, BudgetProxy, DaemonProxy, EndpointsProxy, EsimProxy, FastpathProxy, ModemProxy, RequestProxy,
    },
};
use aiesim_e2e::{World, WorldOptions, skip_unless_ready};
use zbus::{OwnedVariant, proxy::CacheProperties};

/// The D-Bus error name of a failed call; a reply the proxy could not take is no error name.
fn refused(result: zbus::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        other => panic!("expected the daemon to refuse, got {other:?}"),
    }
}

/// A refusal the daemon's own logic gave, not one of D-Bus's for a mistyped call.
fn is_the_daemons(name: &str) -> bool {
    name.starts_with("org.aiesim.AiEsim1.Error.")
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one call per method and property, in the XML's order"
)]
async fn every_proxy_call_matches_the_running_contract() {
    if skip_unless_ready("every_proxy_call_matches_the_running_contract") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let bus = world.connect().await.unwrap();
    let modem_path = format!("{}/0", aiesim_dbus::MODEM_PATH_PREFIX);

    // Broker: Ask and Chat answer; Cancel of nothing is the daemon's refusal.
    let broker = BrokerProxy::new(&bus).await.unwrap();
    let options: HashMap<String, OwnedVariant> = ChatOptions {
        max_tokens: Some(4),
        ..ChatOptions::default()
    }
    .to_chat_dict()
    .unwrap()
    .into_iter()
    .filter(|(k, _)| k != "messages")
    .collect();
    let (text, usage) = broker.ask("Say hi.", options).await.unwrap();
    assert!(!text.is_empty() && usage.contains_key("charged"), "{usage:?}");
    let chat = ChatOptions {
        messages: vec![Message::new("user", "Say hi.")],
        max_tokens: Some(4),
        ..ChatOptions::default()
    };
    let (request_path, fd) = broker.chat(chat.to_chat_dict().unwrap()).await.unwrap();
    let nothing = zbus::ObjectPath::try_from("/org/aiesim/AiEsim1/Request/999999").unwrap();
    assert!(is_the_daemons(&refused(broker.cancel(&nothing).await)));

    // Request: every property of the caller's own request, then Cancel.
    let request = RequestProxy::builder(&bus)
        .path(request_path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    let _ = request.state().await.unwrap();
    let _ = request.endpoint().await.unwrap();
    let _ = request.model().await.unwrap();
    let _ = request.prompt_tokens().await.unwrap();
    let _ = request.completion_tokens().await.unwrap();
    let _ = request.charged().await.unwrap();
    drop(fd);
    let _ = request.cancel().await;

    // Budget: the reads answer; Set with an empty policy and TopUp with a bad voucher are the
    // daemon's refusals (and change nothing).
    let budget = BudgetProxy::new(&bus).await.unwrap();
    assert!(budget.get_mine().await.unwrap().contains_key("available"));
    assert!(!budget.list().await.unwrap().is_empty());
    assert!(is_the_daemons(&refused(
        budget.set("some.service", HashMap::new()).await
    )));
    assert!(is_the_daemons(&refused(budget.top_up(&[1, 2, 3]).await)));

    // Modem: the reads, every property, Connect and Disconnect.
    let modem = ModemProxy::builder(&bus)
        .path(modem_path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    let _ = modem.get_signal().await.unwrap();
    let _ = modem.get_data_settings().await.unwrap();
    assert_eq!(modem.state().await.unwrap(), "ready");
    for value in [
        modem.device().await,
        modem.protocol().await,
        modem.interface().await,
        modem.imei().await,
        modem.manufacturer().await,
        modem.model().await,
        modem.revision().await,
        modem.sim_state().await,
        modem.registration().await,
        modem.operator().await,
        modem.data_session().await,
        modem.ipv4_address().await,
        modem.last_error().await,
    ] {
        value.unwrap();
    }
    let _ = modem.signal_quality().await.unwrap();
    // The data session comes up on the default APN and goes down again.
    modem.connect("").await.unwrap();
    modem.disconnect().await.unwrap();

    // eSIM: the reads and every property; switching a profile that is not there is refused.
    let esim = EsimProxy::builder(&bus)
        .path(modem_path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert!(esim.get_info().await.unwrap().contains_key("eid"));
    assert!(!esim.list_profiles().await.unwrap().is_empty());
    let _ = esim.get_account().await.unwrap();
    let _ = esim.list_endpoints().await.unwrap();
    let _ = esim.token_balance().await.unwrap();
    for value in [
        esim.state().await,
        esim.eid().await,
        esim.generation().await,
        esim.active_profile().await,
        esim.last_error().await,
    ] {
        value.unwrap();
    }
    assert!(is_the_daemons(&refused(
        esim.enable_profile("8988211000000000999").await
    )));
    assert!(is_the_daemons(&refused(
        esim.disable_profile("8988211000000000999").await
    )));

    // Daemon: its three properties, before any reload.
    let daemon = DaemonProxy::builder(&bus)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert_eq!(daemon.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(daemon.reloads().await.unwrap(), 0);
    assert_eq!(daemon.last_reload().await.unwrap(), "");

    // Endpoints: the statistics and both properties.
    let endpoints = EndpointsProxy::builder(&bus)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert!(!endpoints.get_statistics().await.unwrap().is_empty());
    assert!(!endpoints.names().await.unwrap().is_empty());
    assert!(endpoints.healthy().await.unwrap() >= 1);

    // Fast path: the statistics and both properties.
    let fastpath = FastpathProxy::builder(&bus)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert!(fastpath.get_statistics().await.unwrap().contains_key("egress_packets"));
    let _ = fastpath.get_endpoint_statistics().await.unwrap();
    let _ = fastpath.get_app_statistics().await.unwrap();
    assert!(fastpath.attached().await.unwrap());
    assert_eq!(fastpath.interface().await.unwrap(), "wwan0");
}
