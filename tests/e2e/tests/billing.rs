//! The eSIM's token account as the billing authority, through the whole stack: requests served
//! by the endpoint the card provisions (no `[[endpoint]]` configured), every charge debited on
//! the simulated card's AI applet with a receipt aiesimd verifies, spending within the offline
//! allowance while the card is out, reconciliation when it is back, and a card whose receipts
//! do not verify stopping all spending. The card's own balance is read from the simulator's
//! control socket, not from the daemon.

use aiesim_dbus::ChatDict as _;
use aiesim_e2e::{MODEL_NAME, World, WorldOptions, output_text as text, skip_unless_ready};

/// Account tokens per 1000 model tokens on the card's endpoint: two for one.
const PRICE: u64 = 2_000;
const START_BALANCE: u64 = 100_000;

/// A world with no `[[endpoint]]` configured: the card, holding `tokens`, provisions the one
/// endpoint at `PRICE`. Returns once the daemon bills the card's account.
fn zero_config_world(tokens: u64, extra_sim: &[&str]) -> World {
    let mut sim_args = vec![
        "--endpoint".to_owned(),
        format!("metro,{{cloud_url}},metro,{MODEL_NAME}:2048:64,{PRICE}"),
        "--tokens".to_owned(),
        tokens.to_string(),
    ];
    sim_args.extend(extra_sim.iter().map(|s| (*s).to_owned()));
    let world = World::start(&WorldOptions {
        config_endpoints: false,
        sim_args,
        ..WorldOptions::default()
    })
    .unwrap();
    world.wait_json(&["esim"], "ready with its account", |d| {
        d["account"]["billing"] == "online"
    });
    world
}

/// The simulated card's own account: (balance, sequence, debits taken).
fn card_account(world: &World) -> (u64, u32, u64) {
    let lines = world.modem_control("account").unwrap();
    let field = |name: &str| -> u64 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
    };
    (
        field("balance"),
        u32::try_from(field("sequence")).unwrap(),
        field("debits"),
    )
}

/// Asks once; Ok(charged model tokens) or Err(what aictl said).
fn ask(world: &World) -> Result<u64, String> {
    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "6", "Say hi."])
        .output()
        .unwrap();
    let said = text(&out);
    if !out.status.success() {
        return Err(said);
    }
    let charged = said
        .split("-- ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no charge in {said:?}"));
    Ok(charged)
}

/// Asks until the card's account refuses, waiting for each debit to be receipted; returns the
/// account tokens spent and the refusal.
fn spend_until_refused(world: &World) -> (u64, String) {
    let (mut spent, mut served) = (0, 0u32);
    loop {
        match ask(world) {
            Ok(charged) => {
                spent += cost(charged);
                served += 1;
                assert!(served < 50, "the account never ran out");
                world.wait_json(&["esim"], "debited", |d| {
                    d["account"]["pending_debits"] == 0 && d["account"]["receipts"] == served
                });
            }
            Err(refusal) => return (spent, refusal),
        }
    }
}

fn cost(tokens: u64) -> u64 {
    (tokens * PRICE).div_ceil(1000)
}

#[tokio::test]
async fn with_no_endpoint_configured_the_cards_endpoint_serves_and_the_card_is_debited() {
    if skip_unless_ready("with_no_endpoint_configured_the_cards_endpoint_serves_and_the_card_is_debited") {
        return;
    }
    let world = zero_config_world(START_BALANCE, &[]);
    let mut spent = 0;
    for round in 1..=2u32 {
        let charged = ask(&world).unwrap_or_else(|e| panic!("{e}\n{}", world.daemon.log()));
        assert!(charged > 0);
        spent += cost(charged);
        // The journal takes the receipt first, then the published balance follows it.
        let doc = world.wait_json(&["esim"], "debited", |d| {
            d["account"]["receipts"] == round && d["account"]["balance"] == START_BALANCE - spent
        });
        assert_eq!(doc["account"]["pending_debits"], 0, "{doc:#}");
        assert_eq!(doc["account"]["sequence"], round, "{doc:#}");
        let (balance, sequence, debits) = card_account(&world);
        assert_eq!(balance, START_BALANCE - spent, "the card itself holds the new balance");
        assert_eq!((sequence, debits), (round, u64::from(round)), "one debit per request");
    }
    let human = world.aictl().arg("esim").output().unwrap();
    assert!(
        text(&human).contains(&format!("tokens         {}", START_BALANCE - spent)),
        "{}",
        text(&human)
    );
    assert!(text(&human).contains("billing        online"), "{}", text(&human));
    // The fast path learnt the card's endpoint as an AI destination: the answers were counted.
    let status = world.aictl_json(&["status"]);
    assert!(status["fastpath"]["ai_packets"].as_u64().unwrap_or(0) > 0, "{status:#}");
}

#[tokio::test]
async fn a_forged_or_replayed_receipt_stops_all_spending() {
    if skip_unless_ready("a_forged_or_replayed_receipt_stops_all_spending") {
        return;
    }
    for mode in ["forge", "replay"] {
        let world = zero_config_world(START_BALANCE, &[]);
        // One honest debit first, so that a replay has a receipt to replay.
        ask(&world).unwrap();
        world.wait_json(&["esim"], "debited", |d| d["account"]["receipts"] == 1);
        world.modem_control(&format!("receipts {mode}")).unwrap();
        // The answer was delivered before the debit; the bad receipt then stops everything.
        ask(&world).unwrap();
        let doc = world.wait_json(&["esim"], "at fault", |d| d["account"]["billing"] == "fault");
        let why = doc["account"]["billing_error"].as_str().unwrap().to_owned();
        let expected = if mode == "forge" { "forged" } else { "replayed" };
        assert!(why.contains(expected), "{mode}: {why}");
        assert_eq!(
            doc["account"]["receipts"], 1,
            "{mode}: the bad receipt is not journalled"
        );
        let refused = ask(&world).unwrap_err();
        assert!(
            refused.contains("EsimError") && refused.contains(expected),
            "{mode}: {refused}"
        );
        assert_eq!(card_account(&world).2, 2, "{mode}: nothing more reached the card");
    }
}

#[tokio::test]
async fn without_the_card_spending_stops_at_the_offline_allowance_and_reconciles_when_it_is_back() {
    if skip_unless_ready("without_the_card_spending_stops_at_the_offline_allowance_and_reconciles_when_it_is_back") {
        return;
    }
    let world = zero_config_world(START_BALANCE, &["--offline-allowance", "120"]);
    // The card goes while an answer streams (after its first token): the answer is not
    // disturbed, and its debit waits for the card.
    let (mid, debits_at_removal) = {
        use std::io::BufRead as _;
        let conn = world.connect().await.unwrap();
        let broker = aiesim_dbus::proxy::BrokerProxy::new(&conn).await.unwrap();
        let question = aiesim_dbus::ChatOptions {
            messages: vec![aiesim_dbus::Message::new("user", "Count from one to ten.")],
            max_tokens: Some(16),
            ..aiesim_dbus::ChatOptions::default()
        };
        let (_path, fd) = broker.chat(question.to_chat_dict().unwrap()).await.unwrap();
        let socket = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut lines = std::io::BufReader::new(socket).lines();
        let first = aiesim_dbus::StreamEvent::from_line(&lines.next().unwrap().unwrap()).unwrap();
        assert!(matches!(first, aiesim_dbus::StreamEvent::Delta { .. }), "{first:?}");
        world.modem_control("card remove").unwrap();
        let debits = card_account(&world).2;
        let last = lines
            .map(|l| aiesim_dbus::StreamEvent::from_line(&l.unwrap()).unwrap())
            .last()
            .unwrap();
        let aiesim_dbus::StreamEvent::Done { charged, .. } = last else {
            panic!("the answer did not finish: {last:?}\n{}", world.daemon.log())
        };
        (charged, debits)
    };
    world.wait_json(&["esim"], "absent", |d| d["state"] == "absent");
    let mut offline_cost = cost(mid);
    let mut served = 1u32;
    let refusal = loop {
        match ask(&world) {
            Ok(charged) => {
                offline_cost += cost(charged);
                served += 1;
                assert!(served < 20, "the allowance never ran out");
            }
            Err(refusal) => break refusal,
        }
    };
    assert!(served >= 2, "some spending is allowed offline: {refusal}");
    assert!(offline_cost <= 120, "never beyond the allowance: {offline_cost}");
    assert!(
        refusal.contains("BudgetExceeded") && refusal.contains("offline allowance"),
        "{refusal}"
    );
    assert_eq!(
        card_account(&world).2,
        debits_at_removal,
        "nothing reached the card while it was out"
    );

    world.modem_control("card insert").unwrap();
    let doc = world.wait_json(&["esim"], "reconciled", |d| {
        d["account"]["billing"] == "online"
            && d["account"]["pending_debits"] == 0
            && d["account"]["receipts"] == served
            && d["account"]["balance"] == START_BALANCE - offline_cost
    });
    let (balance, sequence, debits) = card_account(&world);
    assert_eq!(
        balance,
        START_BALANCE - offline_cost,
        "every offline charge reached the card"
    );
    assert_eq!((u64::from(sequence), debits), (u64::from(served), u64::from(served)));
    assert_eq!(doc["account"]["owed"], 0, "{doc:#}");
    ask(&world).unwrap_or_else(|e| panic!("back online, requests are served: {e}"));
}

#[tokio::test]
async fn requests_stop_when_the_cards_balance_cannot_cover_them() {
    if skip_unless_ready("requests_stop_when_the_cards_balance_cannot_cover_them") {
        return;
    }
    let world = zero_config_world(90, &[]);
    let (spent, refusal) = spend_until_refused(&world);
    assert!(spent <= 90, "spent {spent} of a 90-token account");
    assert!(spent > 0, "the account paid for something before it ran out: {refusal}");
    assert!(
        refusal.contains("BudgetExceeded") && refusal.contains("token account"),
        "{refusal}"
    );
    let (balance, _, _) = card_account(&world);
    assert_eq!(balance, 90 - spent, "the card was debited exactly what was spent");
}

#[tokio::test]
async fn an_operator_voucher_tops_up_the_card_once_and_lifts_an_exhausted_account() {
    if skip_unless_ready("an_operator_voucher_tops_up_the_card_once_and_lifts_an_exhausted_account") {
        return;
    }
    let group = aiesim_e2e::Account::group("aiesim-apps").unwrap();
    let world = zero_config_world(90, &[]);
    let (spent, refusal) = spend_until_refused(&world);
    assert!(refusal.contains("token account"), "{refusal}");

    let voucher = world.modem_control("voucher 500").unwrap().concat();
    let top_up = |hex: &str| world.aictl().args(["esim", "top-up", hex]).output().unwrap();
    let out = top_up(&voucher);
    assert!(out.status.success(), "{}\n{}", text(&out), world.daemon.log());
    let balance = 90 - spent + 500;
    assert!(
        text(&out).contains(&format!("topped up 500 tokens; balance {balance}")),
        "{}",
        text(&out)
    );
    assert_eq!(
        card_account(&world).0,
        balance,
        "the card itself holds the voucher's tokens"
    );
    world.wait_json(&["esim"], "topped up", |d| d["account"]["balance"] == balance);
    ask(&world).unwrap_or_else(|e| panic!("the topped-up account pays again: {e}"));

    // The card redeems a voucher once, and only a genuine one for itself.
    let again = top_up(&voucher);
    assert!(
        !again.status.success() && text(&again).contains("already redeemed"),
        "{}",
        text(&again)
    );
    let mut forged = voucher.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let out = top_up(&forged);
    assert!(
        !out.status.success() && text(&out).contains("does not verify"),
        "{}",
        text(&out)
    );
    let out = top_up("ABCD");
    assert!(
        !out.status.success() && text(&out).contains("112 bytes"),
        "{}",
        text(&out)
    );

    // Apps may not top up: the daemon asks polkit, and without polkit only root may.
    let out = world.gdbus_as(
        65534,
        Some(group.gid),
        "/org/aiesim/AiEsim1",
        "org.aiesim.AiEsim1.Budget.TopUp",
        &["[byte 0x01]"],
    );
    assert!(
        !out.status.success() && text(&out).contains("Unauthorized") && text(&out).contains("manage-budgets"),
        "{}",
        text(&out)
    );
}
