//! The eSIM through the daemon's modem session, over QMI and over MBIM, against the
//! simulator's eUICC: ES10 reads (EID, `EUICCInfo2`, profiles, SGP.32 detection), profile
//! switches with their result codes, and a card that goes away and comes back.

mod common;

use std::sync::Arc;

use aiesim_es10::EnableResult;
use aiesimd::{
    esim::{self, Esim, EsimAvailability, EsimError, EsimState},
    modem::{Modem, Protocol},
};
use common::{Simulator, options_for, wait_for};
use tokio::sync::watch;

/// The EID the simulated eUICC reports (tests/modemsim/src/world.rs).
const SIM_EID: &str = "89049032002026120100000000000123";
const SIM_ICCID: &str = "8988211000000000017";

/// The simulator with `fault` injected before anything talks to it, the daemon's modem session
/// on it, and its eSIM with the eSIM's states.
fn card_under_test(protocol: Protocol, fault: &str) -> (Simulator, Arc<Modem>, Esim, watch::Receiver<EsimState>) {
    let sim = Simulator::start_speaking(protocol, &[]);
    sim.command(fault);
    let modem = Arc::new(Modem::spawn(options_for(&sim.link, protocol)));
    let esim = Esim::spawn(Arc::clone(&modem));
    let states = esim.state();
    (sim, modem, esim, states)
}

/// Every channel the daemon opened on the card was closed again.
fn no_channel_left_open(sim: &Simulator) {
    let state = sim.command("state");
    assert!(state.iter().any(|l| l == "channels []"), "{state:?}");
}

fn ready(s: &EsimState) -> bool {
    s.availability == EsimAvailability::Ready
}

macro_rules! both_protocols {
    ($scenario:ident: $qmi:ident, $mbim:ident) => {
        #[tokio::test]
        async fn $qmi() {
            $scenario(Protocol::Qmi).await;
        }

        #[tokio::test]
        async fn $mbim() {
            $scenario(Protocol::Mbim).await;
        }
    };
}

both_protocols!(reads_the_euicc: reads_the_euicc_over_qmi, reads_the_euicc_over_mbim);
both_protocols!(switches_profiles: switches_profiles_over_qmi, switches_profiles_over_mbim);
both_protocols!(
    a_card_that_refuses_channels_is_read_once_it_accepts:
        refused_channels_over_qmi,
        refused_channels_over_mbim
);

/// A card whose logical channels another host application holds refuses to open one: the
/// eSIM is in error and says why, and once the card accepts again the daemon reads it by
/// itself, with no card change to prompt it.
async fn a_card_that_refuses_channels_is_read_once_it_accepts(protocol: Protocol) {
    let (sim, modem, esim, mut states) = card_under_test(protocol, "card channels refuse");
    wait_for(&mut states, "in error", |s| s.availability == EsimAvailability::Error).await;
    let said = states.borrow().last_error.clone();
    assert!(said.contains("SW 6A81"), "{said}");
    sim.command("card channels accept");
    wait_for(&mut states, "read after the refusals", ready).await;
    assert_eq!(states.borrow().eid, SIM_EID);
    no_channel_left_open(&sim);
    drop(esim);
    modem.shutdown().await;
}

/// The AI applet answers its first command with "conditions of use not satisfied" (a busy
/// card): the eSIM is ready without an account for a moment, and the account is read again by
/// itself. An applet the card says it does not have (6A82) is not asked again until the card
/// changes.
#[tokio::test]
async fn the_account_is_read_again_after_a_passing_refusal_and_not_after_a_missing_applet() {
    let (sim, modem, esim, mut states) = card_under_test(Protocol::Qmi, "card fail 6985 1 ai");
    wait_for(&mut states, "read with its account", |s| {
        ready(s) && s.account.as_ref().is_some_and(|a| a.balance == 100_000)
    })
    .await;
    let faults = sim.command("state");
    assert!(
        faults
            .iter()
            .any(|l| l.starts_with("card faults") && l.contains("fail: None")),
        "the injected refusal was answered: {faults:?}"
    );

    // A card change with an AI applet that is not there: a ready eSIM without an account,
    // and no more questions to the card about it.
    sim.command("card remove");
    wait_for(&mut states, "absent", |s| s.availability == EsimAvailability::Absent).await;
    sim.command("card fail 6A82 1 ai");
    sim.command("card insert");
    wait_for(&mut states, "read again", ready).await;
    assert_eq!(states.borrow().account, None, "{:#?}", *states.borrow());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(states.borrow().account, None, "a missing applet is not asked for again");
    drop(esim);
    modem.shutdown().await;
}

/// A slow card still answers every read, and a signature the card refuses (6982: security
/// status not satisfied) fails with the card's reason and leaves the next one unharmed.
#[tokio::test]
async fn a_slow_card_is_read_and_a_refused_signature_says_why() {
    let (sim, modem, esim, mut states) = card_under_test(Protocol::Mbim, "card slow 150");
    wait_for(&mut states, "read from the slow card", |s| {
        ready(s) && s.account.is_some()
    })
    .await;
    sim.command("card slow 0");

    let credential = esim::load_credential(&modem, &aiesim_iot_safe::AID)
        .await
        .expect("the device credential is read");
    sim.command("card fail 6982 1 iot-safe");
    let refused = esim::sign_digest(&modem, &credential, &[7; 32]).await;
    let said = refused.map(|_| ()).map_err(|e| aiesimd::broker::chain(&e));
    assert!(
        said.as_ref()
            .is_err_and(|e| e.contains("security status not satisfied (SW 6982)")),
        "{said:?}"
    );
    esim::sign_digest(&modem, &credential, &[7; 32])
        .await
        .expect("the next signature is made");
    no_channel_left_open(&sim);
    drop(esim);
    modem.shutdown().await;
}

async fn reads_the_euicc(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &[]);
    let modem = Arc::new(Modem::spawn(options_for(&sim.link, protocol)));
    let esim = Esim::spawn(Arc::clone(&modem));
    let mut states = esim.state();
    wait_for(&mut states, "read", ready).await;
    let state = states.borrow().clone();
    assert_eq!(state.eid, SIM_EID);
    assert_eq!(
        state.generation, "sgp32",
        "the simulated eUICC answers GetEimConfigurationData"
    );
    assert!(!state.svn.is_empty(), "{state:#?}");
    assert_eq!(state.profiles.len(), 2, "{state:#?}");
    let active = state.active_profile().expect("one profile is enabled");
    assert_eq!(active.iccid, SIM_ICCID);
    assert_eq!(active.class, "operational");
    assert_eq!(state.profiles.iter().filter(|p| p.enabled).count(), 1);
    // The token account and the operator's endpoints, from the AI applet.
    let account = state.account.as_ref().expect("the simulated card has the AI applet");
    assert_eq!(
        (account.balance, account.state.as_str()),
        (100_000, "active"),
        "{account:#?}"
    );
    assert_eq!(account.endpoints.len(), 1, "{account:#?}");
    assert_eq!(account.endpoints[0].tier, "metro");
    assert_eq!(account.endpoints[0].url, "http://127.0.0.1:8080/v1");
    assert_eq!(account.endpoints[0].models[0].0, "smollm2-135m");
    // Every channel the reads opened was closed again.
    no_channel_left_open(&sim);

    // Without the card there is nothing to read; with it back, it is read again.
    sim.command("card remove");
    wait_for(&mut states, "absent", |s| s.availability == EsimAvailability::Absent).await;
    sim.command("card insert");
    wait_for(&mut states, "read again", |s| ready(s) && s.eid == SIM_EID).await;
    drop(esim);
    modem.shutdown().await;
}

#[tokio::test]
async fn the_account_follows_the_card() {
    let sim = Simulator::start_speaking(
        Protocol::Qmi,
        &[
            "--tokens",
            "4242",
            "--endpoint",
            "edge,https://edge.example:8443/v1,metro,tiny:2048:256,3",
            "--endpoint",
            "far,https://far.example/v1,national,big:8192:1024,9,tiny:2048:256,2",
        ],
    );
    let modem = Arc::new(Modem::spawn(options_for(&sim.link, Protocol::Qmi)));
    let esim = Esim::spawn(Arc::clone(&modem));
    let mut states = esim.state();
    wait_for(&mut states, "read", ready).await;
    let account = states.borrow().account.clone().expect("an account");
    assert_eq!(account.balance, 4242);
    let names: Vec<(&str, &str)> = account
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.tier.as_str()))
        .collect();
    assert_eq!(names, [("edge", "metro"), ("far", "national")]);
    assert_eq!(
        account.endpoints[1].models,
        [("big".into(), 8192, 1024, 9), ("tiny".into(), 2048, 256, 2)]
    );
    modem.shutdown().await;
}

#[tokio::test]
async fn an_sgp22_euicc_is_told_from_an_sgp32_one() {
    let sim = Simulator::start_speaking(Protocol::Qmi, &["--sgp32", "false"]);
    let modem = Arc::new(Modem::spawn(options_for(&sim.link, Protocol::Qmi)));
    let esim = Esim::spawn(Arc::clone(&modem));
    let mut states = esim.state();
    wait_for(&mut states, "read", ready).await;
    assert_eq!(states.borrow().generation, "sgp22");
    modem.shutdown().await;
}

async fn switches_profiles(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &[]);
    let modem = Arc::new(Modem::spawn(options_for(&sim.link, protocol)));
    let esim = Esim::spawn(Arc::clone(&modem));
    let mut states = esim.state();
    wait_for(&mut states, "read", ready).await;
    let other = states
        .borrow()
        .profiles
        .iter()
        .find(|p| !p.enabled)
        .expect("a disabled profile")
        .iccid
        .clone();

    // Enabling what is enabled is the card's documented refusal, not a transport error.
    let again = esim.enable(SIM_ICCID).await;
    assert!(
        matches!(again, Err(EsimError::Enable(EnableResult::ProfileNotInDisabledState))),
        "{again:?}"
    );
    let unknown = esim.enable("8988211000000000999").await;
    assert!(
        matches!(unknown, Err(EsimError::Enable(EnableResult::IccidOrAidNotFound))),
        "{unknown:?}"
    );
    let bad = esim.enable("not-an-iccid").await;
    assert!(matches!(bad, Err(EsimError::BadIccid(_))), "{bad:?}");
    assert!(bad.unwrap_err().to_string().contains("not-an-iccid"));

    esim.enable(&other).await.expect("the other profile is enabled");
    wait_for(&mut states, "switched", |s| {
        ready(s) && s.active_profile().is_some_and(|p| p.iccid == other)
    })
    .await;
    esim.disable(&other).await.expect("and disabled again");
    wait_for(&mut states, "without an enabled profile", |s| {
        ready(s) && s.active_profile().is_none()
    })
    .await;
    modem.shutdown().await;
}

#[tokio::test]
async fn without_a_modem_the_esim_is_absent_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let modem = Arc::new(Modem::spawn(options_for(&dir.path().join("none"), Protocol::Qmi)));
    let esim = Esim::spawn(Arc::clone(&modem));
    assert_eq!(esim.state().borrow().availability, EsimAvailability::Absent);
    let refused = esim.enable(SIM_ICCID).await;
    assert!(matches!(refused, Err(EsimError::Unavailable(_))), "{refused:?}");
    modem.shutdown().await;
}

both_protocols!(signs_on_the_card: signs_on_the_card_over_qmi, signs_on_the_card_over_mbim);

/// The certificate's public key, read by an X.509 parser of its own.
fn certificate_key(der: &[u8]) -> p256::ecdsa::VerifyingKey {
    use x509_cert::der::Decode as _;
    let certificate = x509_cert::Certificate::from_der(der).expect("the card's certificate is DER X.509");
    let spki = &certificate.tbs_certificate.subject_public_key_info;
    let key = spki.subject_public_key.as_bytes().expect("a whole-byte key");
    p256::ecdsa::VerifyingKey::from_sec1_bytes(key).expect("a P-256 key")
}

async fn signs_on_the_card(protocol: Protocol) {
    use p256::ecdsa::{Signature, signature::hazmat::PrehashVerifier as _};
    use sha2::Digest as _;

    for extra in [&[][..], &["--iot-safe-der-signatures"][..]] {
        let sim = Simulator::start_speaking(protocol, extra);
        let modem = Arc::new(Modem::spawn(options_for(&sim.link, protocol)));
        let mut states = modem.state();
        wait_for(&mut states, "ready", common::is_ready).await;
        let credential = esim::load_credential(&modem, &aiesim_iot_safe::AID)
            .await
            .expect("the device credential is read");
        assert!(
            credential.certificate.len() > 200,
            "{} bytes",
            credential.certificate.len()
        );
        let key = certificate_key(&credential.certificate);

        let digest: [u8; 32] = sha2::Sha256::digest(b"header.claims").into();
        let raw = esim::sign_digest(&modem, &credential, &digest)
            .await
            .expect("the card signs");
        let signature = Signature::from_slice(&raw).expect("r and s");
        key.verify_prehash(&digest, &signature)
            .expect("the signature verifies with the certificate's key");
        // A different digest does not verify: the card signed what it was given.
        let other: [u8; 32] = sha2::Sha256::digest(b"something else").into();
        assert!(key.verify_prehash(&other, &signature).is_err());
        // The card's randomness: as many bytes as asked for, and never the same twice.
        let a = esim::card_random(&modem, &credential, 16).await.expect("GET RANDOM");
        let b = esim::card_random(&modem, &credential, 16).await.expect("GET RANDOM");
        assert_eq!((a.len(), b.len()), (16, 16));
        assert_ne!(a, b);
        assert!(
            sim.command("state").iter().any(|l| l == "channels []"),
            "{:?}",
            sim.command("state")
        );
        modem.shutdown().await;
    }
}

#[tokio::test]
async fn a_card_without_iot_safe_says_so() {
    let sim = Simulator::start_speaking(Protocol::Qmi, &["--iot-safe-aid", "A0000005590010AABB"]);
    let modem = Arc::new(Modem::spawn(options_for(&sim.link, Protocol::Qmi)));
    let mut states = modem.state();
    wait_for(&mut states, "ready", common::is_ready).await;
    let missing = esim::load_credential(&modem, &[0xA0, 0x00, 0x00, 0x09, 0x99, 0x01]).await;
    assert!(matches!(missing, Err(EsimError::NoIotSafe)), "{missing:?}");
    modem.shutdown().await;
}
