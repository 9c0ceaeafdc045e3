//! The eSIM through the whole stack: aiesimd reads the simulated eUICC over its modem session
//! (QMI here, MBIM in the daemon's own tests), `org.aiesim.AiEsim1.Esim` on the real bus, and
//! `aictl esim` reading it and switching profiles.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aiesim_e2e::{World, WorldOptions, output_text as text, skip_unless_ready};

const MODEM_PATH: &str = "/org/aiesim/AiEsim1/Modem/0";
const SIM_EID: &str = "89049032002026120100000000000123";

#[tokio::test]
async fn aictl_esim_reads_the_euicc_and_switches_profiles() {
    if skip_unless_ready("aictl_esim_reads_the_euicc_and_switches_profiles") {
        return;
    }
    let world = World::start(&WorldOptions::default()).unwrap();
    let doc = world.wait_json(&["esim"], "ready", |d| d["state"] == "ready");
    assert_eq!(doc["eid"], SIM_EID);
    assert_eq!(doc["generation"], "sgp32");
    // EUICCInfo1: the GSMA test CI (SGP.26) the simulated eUICC lists, both ways.
    let test_ci = "F54172BDF98A95D65CBEB88A38A1C11D800A85C3";
    assert_eq!(doc["ci_pkid_verification"], serde_json::json!([test_ci]), "{doc:#}");
    assert_eq!(doc["ci_pkid_signing"], serde_json::json!([test_ci]), "{doc:#}");
    assert_eq!(doc["account"]["balance"], 100_000, "{doc:#}");
    assert_eq!(doc["account"]["state"], "active", "{doc:#}");
    assert_eq!(doc["endpoints"][0]["tier"], "metro", "{doc:#}");
    assert_eq!(doc["endpoints"][0]["models"][0]["name"], "smollm2-135m", "{doc:#}");
    let profiles = doc["profiles"].as_array().expect("root sees the profiles");
    assert_eq!(profiles.len(), 2, "{doc:#}");
    let active = doc["active_profile"].as_str().unwrap().to_owned();
    let other = profiles
        .iter()
        .find(|p| p["enabled"] == false)
        .and_then(|p| p["iccid"].as_str())
        .unwrap()
        .to_owned();

    let out = world.aictl().arg("esim").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains(SIM_EID) && human.contains(&format!("* {active}")),
        "{human}"
    );

    // The card's own refusal reaches the user with its reason.
    let out = world.aictl().args(["esim", "enable", &active]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EsimError") && err.contains("not disabled"),
        "{}",
        text(&out)
    );

    let out = world.aictl().args(["esim", "enable", &other]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    world.wait_json(&["esim"], "switched", |d| d["active_profile"] == other.as_str());

    // Strangers may not switch profiles.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "gdbus", "call"])
        .args(["--address", &world.bus_address, "--dest", aiesim_dbus::BUS_NAME])
        .args([
            "--object-path",
            MODEM_PATH,
            "--method",
            "org.aiesim.AiEsim1.Esim.EnableProfile",
            &active,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("AccessDenied"), "{}", text(&out));
    assert_eq!(world.aictl_json(&["esim"])["active_profile"], other.as_str());
}

#[tokio::test]
async fn requests_carry_a_credential_signed_on_the_card() {
    if skip_unless_ready("requests_carry_a_credential_signed_on_the_card") {
        return;
    }
    let world = World::start(&WorldOptions {
        cloud: aiesim_e2e::CloudOptions {
            require_jwt: true,
            ..Default::default()
        },
        ..WorldOptions::default()
    })
    .unwrap();
    for _ in 0..2 {
        let out = world
            .aictl()
            .args(["ask", "--max-tokens", "4", "Say hi."])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\ncloud:\n{}", text(&out), world.cloud.log());
    }
    // The cloud checked the token with its own crypto against the certificate it carries.
    let log = world.cloud.log();
    let accepted: Vec<&str> = log.lines().filter(|l| l.contains("jwt ok")).collect();
    assert_eq!(accepted.len(), 2, "{log}");
    // The cloud refuses a token it has seen: each request carried one of its own.
    let jti = |line: &str| line.split("jti=").nth(1).map(str::to_owned);
    assert_ne!(jti(accepted[0]), jti(accepted[1]), "{log}");
    assert!(accepted[0].contains(&format!("iss=eid:{SIM_EID}")), "{log}");
    assert!(
        accepted[0].contains(&format!("aud={}", world.cloud_url.trim_end_matches("/v1"))),
        "{log}"
    );
}

#[tokio::test]
async fn a_cloud_that_wants_a_credential_refuses_requests_without_one() {
    if skip_unless_ready("a_cloud_that_wants_a_credential_refuses_requests_without_one") {
        return;
    }
    let world = World::start(&WorldOptions {
        cloud: aiesim_e2e::CloudOptions {
            require_jwt: true,
            ..Default::default()
        },
        extra_config: "[cloud]\ncredential = \"none\"\n".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "4", "Say hi."])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The cloud's own reason reaches the user.
    let said = text(&out);
    assert!(said.contains("UpstreamFailed") && said.contains("401"), "{said}");
    assert!(said.contains("device credential refused: no bearer JWT"), "{said}");
    // The cloud logs a request once its connection closes: give it a moment.
    let started = Instant::now();
    while !world.cloud.log().contains("/v1/chat/completions 401") {
        assert!(started.elapsed() < Duration::from_secs(5), "{}", world.cloud.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
