//! Reloading the configuration with SIGHUP, as `systemctl reload aiesimd` does: endpoints,
//! budgets and the log filter change at once, systemd hears RELOADING=1 and READY=1, a file
//! with a mistake is refused with its line and changes nothing, and keys read only at start
//! are named as waiting for a restart. Seen through the bus (`aictl status`, `endpoints`,
//! `budget`) and the daemon's own log.

use std::time::Duration;

use aiesim_e2e::{MODEL_NAME, World, WorldOptions, skip_unless_ready};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Sends SIGHUP and waits until `aictl status` shows reload number `n`; returns its outcome
/// and what the daemon told systemd meanwhile.
fn reload(world: &World, n: u64) -> (String, Vec<String>) {
    let daemon = Pid::from_raw(i32::try_from(world.daemon.pid()).unwrap());
    kill(daemon, Signal::SIGHUP).unwrap();
    let said = world.notifications(Duration::from_millis(600));
    let status = world.wait_json(&["status"], &format!("reload {n}"), |d| {
        d["daemon"]["reloads"].as_u64() == Some(n)
    });
    (status["daemon"]["last_reload"].as_str().unwrap().to_owned(), said)
}

fn endpoint_names(world: &World) -> Vec<String> {
    let doc = world.aictl_json(&["endpoints"]);
    let mut names: Vec<String> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn sighup_applies_endpoints_budgets_and_log_and_refuses_a_broken_file() {
    if skip_unless_ready("sighup_applies_endpoints_budgets_and_log_and_refuses_a_broken_file") {
        return;
    }
    // The log filter from the file (no AIESIMD_LOG), so a reload may change it.
    let world = World::start(&WorldOptions {
        daemon_log: None,
        extra_config: "log = \"warn\"".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let path = world.dir().join("aiesimd.toml");
    let started = std::fs::read_to_string(&path).unwrap();
    let status = world.aictl_json(&["status"]);
    assert_eq!(status["daemon"]["reloads"], 0);
    assert_eq!(endpoint_names(&world), ["metro"]);
    assert_eq!(world.aictl_json(&["budget"])["limit"], 100_000);

    // A second endpoint and a smaller budget: both at once, nothing waits for a restart.
    let url_line = started.lines().find(|l| l.starts_with("url = ")).unwrap();
    let grown = started.replace("app_tokens = 100000", "app_tokens = 5000")
        + &format!(
            "\n[[endpoint]]\nname = \"province\"\n{url_line}\ntier = \"province\"\nmodels = [\"{MODEL_NAME}\"]\n"
        );
    std::fs::write(&path, &grown).unwrap();
    let (outcome, said) = reload(&world, 1);
    assert_eq!(outcome, "applied: endpoints, budgets", "{}", world.daemon.log());
    let reloading = said.iter().position(|m| m.lines().any(|l| l == "RELOADING=1"));
    let ready = said.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    assert!(
        matches!((reloading, ready), (Some(r), Some(d)) if r < d),
        "RELOADING=1 then READY=1: {said:?}"
    );
    assert!(
        said.iter().any(|m| m.lines().any(|l| l.starts_with("MONOTONIC_USEC="))),
        "{said:?}"
    );
    assert_eq!(endpoint_names(&world), ["metro", "province"]);
    let budget = world.aictl_json(&["budget"]);
    assert_eq!(budget["limit"], 5000, "{budget:#}");
    // Under "warn" the reload's own info line is filtered out.
    assert!(
        !world.daemon.log().contains("configuration reloaded"),
        "{}",
        world.daemon.log()
    );

    // An answer is served on the new configuration, and charged against the new limit.
    let out = world
        .aictl()
        .args(["ask", "Say hi.", "--max-tokens", "8"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", aiesim_e2e::output_text(&out));
    let spent = world.aictl_json(&["budget"])["spent"].as_u64().unwrap();
    assert!(spent > 0);

    // A mistake on a known line: refused with the file and line, and nothing changes.
    let broken = grown.replace("app_tokens = 5000", "app_tokens = \"lots\"");
    let line = broken.lines().position(|l| l.starts_with("app_tokens")).unwrap() + 1;
    std::fs::write(&path, &broken).unwrap();
    let (outcome, _) = reload(&world, 2);
    let expected = format!("refused: {}:{line}:", path.display());
    assert!(outcome.contains(&expected), "{outcome:?} should contain {expected:?}");
    assert_eq!(endpoint_names(&world), ["metro", "province"]);
    let budget = world.aictl_json(&["budget"]);
    assert_eq!(budget["limit"], 5000);
    assert_eq!(budget["spent"].as_u64(), Some(spent), "what was spent is kept");

    // Back to one endpoint, a louder log, and a modem key only a restart applies.
    let restart = started
        .replace("log = \"warn\"", "log = \"info\"")
        .replace("[modem]\n", "[modem]\nrequest_timeout_ms = 7000\n");
    std::fs::write(&path, &restart).unwrap();
    let (outcome, _) = reload(&world, 3);
    assert_eq!(
        outcome,
        "applied: endpoints, budgets, log; needs a restart: modem",
        "{}",
        world.daemon.log()
    );
    assert_eq!(endpoint_names(&world), ["metro"]);
    assert_eq!(world.aictl_json(&["budget"])["limit"], 100_000);
    let log = world.daemon.log();
    assert!(
        log.contains("configuration reloaded"),
        "the info line shows under \"info\": {log}"
    );
    assert!(
        log.contains("reload refused"),
        "the refusal was logged as an error: {log}"
    );
    let text = world.aictl().arg("status").output().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("reload 3: applied: endpoints, budgets, log"),
        "{}",
        aiesim_e2e::output_text(&text)
    );
}
