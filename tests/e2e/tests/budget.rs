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
    let options = std::collections::HashMap::from([("max_tokens".to_owned(), zbus::OwnedVariant::from(8u32))]);
    let mut answered = 0;
    let error = loop {
        match broker.ask("Say hi.", options.clone()).await {
            Ok(_) => answered += 1,
            Err(e) => break e,
        }
        assert!(answered < 20, "a 60-token budget never ran out");
    };
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
