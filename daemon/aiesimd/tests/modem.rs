//! The modem session against the real simulator binary: identity, indications, faults
//! (reset, hang-up, stall, SIGKILL), discovery through a sysfs tree, and client ids that are
//! never leaked (asserted through the simulator's own `state`).
//!
//! Needs `target/debug/aiesim-modemsim`: build it first with `cargo build -p aiesim-modemsim`.

mod common;

use std::{
    net::Ipv4Addr,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aiesimd::modem::{
    Availability, DataSession, DeviceChoice, Modem, ModemError, Protocol, Registration, Roots, SimState,
};
use common::{PATIENCE, Simulator, is_ready, options, options_for, wait_for};
use nix::{
    fcntl::OFlag,
    pty::{grantpt, posix_openpt, ptsname_r, unlockpt},
    sys::signal::{Signal, kill},
};

/// Runs one scenario over QMI and over MBIM, as two tests.
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

both_protocols!(identity: identity_over_qmi, identity_over_mbim);
both_protocols!(reset: reset_recovery_over_qmi, reset_recovery_over_mbim);
both_protocols!(data_session: data_session_over_qmi, data_session_over_mbim);
both_protocols!(apdus: apdus_over_qmi, apdus_over_mbim);
both_protocols!(signal_registration_card: indications_over_qmi, indications_over_mbim);
both_protocols!(garbage_stall_and_slowness: port_faults_over_qmi, port_faults_over_mbim);
both_protocols!(forgotten_session: forgotten_session_over_qmi, forgotten_session_over_mbim);

/// What the simulated modem holds for the session: QMI client ids, or an open MBIM session.
fn held(sim: &Simulator, protocol: Protocol) -> Vec<String> {
    match protocol {
        Protocol::Qmi => sim.clients(),
        Protocol::Mbim => sim
            .command("state")
            .into_iter()
            .filter(|line| line.starts_with("mbim ") && !line.contains("closed"))
            .collect(),
    }
}

async fn identity(protocol: Protocol) {
    let sim = Simulator::start_speaking(
        protocol,
        &[
            "--imei",
            "490154203237518",
            "--manufacturer",
            "Acme Wireless",
            "--model",
            "AW-5G glasses module",
            "--revision",
            "AW5G_01.002.03",
        ],
    );
    let modem = Modem::spawn(options_for(&sim.link, protocol));
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;
    let state = states.borrow().clone();
    assert_eq!(state.info.imei, "490154203237518");
    if protocol == Protocol::Qmi {
        // MBIM's DEVICE_CAPS names no manufacturer.
        assert_eq!(state.info.manufacturer, "Acme Wireless");
    }
    assert!(state.info.model.contains("AW-5G glasses module"), "{:?}", state.info);
    assert!(state.info.revision.contains("AW5G_01.002.03"), "{:?}", state.info);
    assert_eq!(state.protocol, Some(protocol));
    assert_eq!(state.device, sim.link.display().to_string());
    assert!(
        !held(&sim, protocol).is_empty(),
        "a live session holds client ids or an MBIM session"
    );

    modem.shutdown().await;
    assert_eq!(
        held(&sim, protocol),
        Vec::<String>::new(),
        "shutdown gave everything back"
    );
    if protocol == Protocol::Mbim {
        let fields = [
            "mbim.control.header.message_type",
            "mbim.control.max_control_transfer",
            "mbim.control.cid",
            "mbim.control.command_type",
        ];
        let Some(frames) = sim.host_frames(&fields) else { return };
        let first = &frames[0];
        assert_eq!(
            (first[0].as_str(), first[1].as_str()),
            ("0x00000001", "4096"),
            "OPEN first: {frames:?}"
        );
        assert_eq!(frames.last().unwrap()[0], "0x00000002", "CLOSE last: {frames:?}");
        // DEVICE_CAPS (1) is queried (0), the subscription (19) is set (1).
        assert!(frames.iter().any(|f| f[2] == "1" && f[3] == "0"), "{frames:?}");
        assert!(frames.iter().any(|f| f[2] == "19" && f[3] == "1"), "{frames:?}");
    }
}

#[tokio::test]
async fn client_ids_a_crashed_client_left_behind_are_reclaimed() {
    let sim = Simulator::start(&["--max-clients", "2"]);
    // Real qmicli told to keep its client ids, twice: DMS has no free id left, as after a
    // crashed earlier run. Only the session's CTL Sync can get it going.
    for _ in 0..2 {
        let out = Command::new("qmicli")
            .arg("-d")
            .arg(&sim.link)
            .args(["--device-open-qmi", "--dms-get-ids", "--client-no-release-cid"])
            .output()
            .expect("qmicli runs (cargo xtask setup installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        sim.clients().iter().any(|c| c.starts_with("DMS ")),
        "{:?}",
        sim.clients()
    );
    let modem = Modem::spawn(options(&sim.link));
    let mut states = modem.state();
    wait_for(&mut states, "ready despite the leaked ids", is_ready).await;
    modem.shutdown().await;
    assert!(sim.clients().is_empty(), "{:?}", sim.clients());
}

async fn reset(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &[]);
    let modem = Modem::spawn(options_for(&sim.link, protocol));
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;
    let before = held(&sim, protocol);

    let reset = Instant::now();
    sim.command("reset 300");
    wait_for(&mut states, "unavailable after the reset", |s| {
        s.availability != Availability::Ready
    })
    .await;
    assert!(!states.borrow().last_error.is_empty(), "the state says why");
    let err = modem.connect(None).await.expect_err("no modem, no data session");
    assert!(matches!(err, ModemError::Unavailable(_)), "{err:?}");

    wait_for(&mut states, "ready again", is_ready).await;
    let recovered = reset.elapsed();
    assert!(states.borrow().last_error.is_empty());
    assert_eq!(
        held(&sim, protocol),
        before,
        "the new session holds what the old one did, nothing more"
    );
    eprintln!("{protocol:?}: recovered from a 300 ms modem reset in {recovered:?}");
    modem.shutdown().await;
}

#[tokio::test]
async fn a_simulator_killed_and_restarted_is_picked_up_again() {
    let mut sim = Simulator::start(&[]);
    let modem = Modem::spawn(options(&sim.link));
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;

    let _ = kill(sim.pid(), Signal::SIGKILL);
    let _ = sim.child.wait();
    wait_for(&mut states, "gone", |s| s.availability != Availability::Ready).await;

    // The same port name comes back (a replug): the session finds it without a restart.
    let dir = std::mem::replace(&mut sim.dir, tempfile::tempdir().unwrap());
    let _ = std::fs::remove_file(&sim.link);
    let again = Simulator::start_in(dir, "cdc-wdm0", &["--imei", "353456789012347"]);
    wait_for(&mut states, "ready on the new modem", |s| {
        is_ready(s) && s.info.imei == "353456789012347"
    })
    .await;
    modem.shutdown().await;
    assert!(again.clients().is_empty());
}

#[tokio::test]
async fn a_silent_port_is_reported_not_waited_for() {
    // A pty nobody serves: the master is held open but never read.
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).expect("posix_openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let slave = PathBuf::from(ptsname_r(&master).expect("ptsname_r"));

    let modem = Modem::spawn(options(&slave).with_request_timeout(Duration::from_millis(1500)));
    let mut states = modem.state();
    wait_for(&mut states, "unavailable", |s| {
        s.availability == Availability::Unavailable
    })
    .await;
    let error = states.borrow().last_error.clone();
    assert_eq!(error, "the modem did not answer the CTL Sync request within 1.5s");

    // Calls fail at once while no session runs, rather than waiting out another timeout
    // (the bound is the request timeout, far above any scheduling delay).
    let started = Instant::now();
    let err = modem.open_channel(&[0xA0, 0x00]).await.expect_err("no session");
    assert!(matches!(err, ModemError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    tokio::time::timeout(PATIENCE, modem.shutdown())
        .await
        .expect("shutdown does not hang on a silent modem");
}

#[tokio::test]
async fn a_missing_port_is_absent_until_it_appears() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let link = dir.path().join("cdc-wdm0");
    let modem = Modem::spawn(options(&link));
    let mut states = modem.state();
    wait_for(&mut states, "absent", |s| {
        s.availability == Availability::Absent && !s.last_error.is_empty()
    })
    .await;
    assert_eq!(states.borrow().last_error, "no modem control port was found");

    let sim = Simulator::start_in(dir, "cdc-wdm0", &[]);
    wait_for(&mut states, "ready once plugged", is_ready).await;
    drop(sim);
    wait_for(&mut states, "gone once unplugged", |s| {
        s.availability != Availability::Ready
    })
    .await;
    modem.shutdown().await;
}

#[tokio::test]
async fn auto_discovery_finds_the_port_and_its_interface_in_sysfs() {
    // A sysfs tree saying cdc-wdm0 is a qmi_wwan port with netdev wwan0, and a /dev whose
    // cdc-wdm0 is the simulator's pty.
    let roots_dir = tempfile::tempdir().unwrap();
    let sys = roots_dir.path().join("sys");
    let usb = sys.join("devices/usb1/1-1:1.4");
    std::fs::create_dir_all(usb.join("usbmisc/cdc-wdm0")).unwrap();
    std::fs::create_dir_all(usb.join("net/wwan0")).unwrap();
    std::fs::create_dir_all(sys.join("bus/usb/drivers/qmi_wwan")).unwrap();
    std::fs::create_dir_all(sys.join("class/usbmisc")).unwrap();
    symlink(sys.join("bus/usb/drivers/qmi_wwan"), usb.join("driver")).unwrap();
    symlink(&usb, usb.join("usbmisc/cdc-wdm0/device")).unwrap();
    symlink(usb.join("usbmisc/cdc-wdm0"), sys.join("class/usbmisc/cdc-wdm0")).unwrap();
    let dev = tempfile::tempdir().unwrap();
    let sim = Simulator::start_in(dev, "cdc-wdm0", &[]);

    let mut options = options(Path::new("/nonexistent"));
    options.device = DeviceChoice::Auto;
    options.protocol = None;
    options.roots = Roots {
        sys,
        dev: sim.dir.path().to_owned(),
    };
    let modem = Modem::spawn(options);
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;
    let state = states.borrow().clone();
    assert_eq!(state.interface, "wwan0");
    assert_eq!(state.device, sim.link.display().to_string());
    assert_eq!(state.protocol, Some(Protocol::Qmi));
    modem.shutdown().await;
}

async fn signal_registration_card(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &["--rssi", "-70"]);
    let modem = Modem::spawn(options_for(&sim.link, protocol));
    let mut states = modem.state();
    wait_for(&mut states, "ready and registered", |s| {
        is_ready(s) && s.registration == Registration::Home && s.sim == SimState::Ready
    })
    .await;
    let rssi = states.borrow().signal.rssi_dbm.expect("the modem reports RSSI");
    assert!(
        (-76..=-70).contains(&rssi),
        "RSSI {rssi} drifts below the base of -70 dBm"
    );

    sim.command("signal -100");
    wait_for(&mut states, "weak", |s| s.signal.rssi_dbm.is_some_and(|r| r <= -100)).await;
    sim.command("register roaming");
    wait_for(&mut states, "roaming", |s| s.registration == Registration::Roaming).await;
    sim.command("card remove");
    wait_for(&mut states, "without a card", |s| s.sim == SimState::Absent).await;
    sim.command("card insert");
    wait_for(&mut states, "with the card back", |s| s.sim == SimState::Ready).await;
    modem.shutdown().await;
}

async fn data_session(protocol: Protocol) {
    let sim = Simulator::start_speaking(
        protocol,
        &["--ipv4", "192.0.2.77/24", "--gateway", "192.0.2.1", "--mtu", "1400"],
    );
    let modem = Modem::spawn(options_for(&sim.link, protocol).with_data_session("iot.example"));
    let mut states = modem.state();
    wait_for(&mut states, "connected", |s| {
        matches!(s.data, DataSession::Connected(_))
    })
    .await;
    let DataSession::Connected(ip) = states.borrow().data.clone() else {
        unreachable!()
    };
    assert_eq!(ip.address, Some(Ipv4Addr::new(192, 0, 2, 77)));
    assert_eq!(
        (ip.prefix_len, ip.gateway, ip.mtu),
        (24, Some(Ipv4Addr::new(192, 0, 2, 1)), Some(1400))
    );
    assert!(
        sim.command("state")
            .iter()
            .any(|l| l == "data up iot.example 192.0.2.77")
    );

    modem.disconnect().await.expect("the session goes down");
    assert_eq!(states.borrow().data, DataSession::Disconnected);
    assert!(sim.command("state").iter().any(|l| l == "data down"));

    // Losing registration drops the bearer; it comes back on its own once asked for again.
    modem.connect(None).await.expect("the session comes up again");
    sim.command("register none");
    wait_for(&mut states, "disconnected", |s| s.data == DataSession::Disconnected).await;
    sim.command("register home");
    wait_for(&mut states, "reconnected", |s| {
        matches!(s.data, DataSession::Connected(_))
    })
    .await;

    modem.shutdown().await;
    assert!(
        sim.command("state").iter().any(|l| l == "data down"),
        "shutdown stops what it started"
    );
}

async fn apdus(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &[]);
    let modem = Modem::spawn(options_for(&sim.link, protocol));
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;
    let isd_r = [
        0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01, 0x00,
    ];
    let channel = modem.open_channel(&isd_r).await.expect("the ISD-R is selected");
    assert!(channel.number >= 1, "{channel:?}");
    assert!(channel.select_response.ends_with(&[0x90, 0x00]), "{channel:?}");
    assert!(sim.command("state").contains(&format!("channels [{}]", channel.number)));

    // GetEID (ES10c) as STORE DATA on that channel.
    let cla = 0x80 | channel.number;
    let answer = modem
        .transmit(
            channel.number,
            &[cla, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A],
        )
        .await
        .expect("the card answers");
    assert_eq!(&answer[..5], [0xBF, 0x3E, 0x12, 0x5A, 0x10], "{answer:02X?}");
    assert_eq!(&answer[answer.len() - 2..], [0x90, 0x00]);

    let refused = modem.open_channel(&[0xA0, 0x00, 0x00, 0x09, 0x99]).await;
    assert!(
        matches!(refused, Err(ModemError::CardRefused(0x6A82) | ModemError::Qmi(_))),
        "{refused:?}"
    );

    modem.close_channel(channel.number).await.expect("the channel closes");
    assert!(sim.command("state").iter().any(|l| l == "channels []"));
    modem.shutdown().await;
    if protocol == Protocol::Mbim {
        let fields = [
            "mbim.control.ms_open_channel.app_id",
            "mbim.control.ms_apdu.command",
            "mbim.control.ms_uicc.channel",
        ];
        let Some(frames) = sim.host_frames(&fields) else { return };
        assert!(
            frames.iter().any(|f| f[0] == "a0000005591010ffffffff8900000100"),
            "{frames:?}"
        );
        let get_eid = format!("{cla:02x}e2910006bf3e035c015a");
        assert!(frames.iter().any(|f| f[1] == get_eid), "{get_eid} not among {frames:?}");
    }
}

/// The `GetEID` command on `channel`, and whether its answer carries the EID.
async fn get_eid(modem: &Modem, channel: u8) -> Result<bool, ModemError> {
    let apdu = [
        0x80 | channel,
        0xE2,
        0x91,
        0x00,
        0x06,
        0xBF,
        0x3E,
        0x03,
        0x5C,
        0x01,
        0x5A,
    ];
    let answer = modem.transmit(channel, &apdu).await?;
    Ok(answer.starts_with(&[0xBF, 0x3E, 0x12, 0x5A, 0x10]) && answer.ends_with(&[0x90, 0x00]))
}

const ISD_R: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01, 0x00,
];

async fn garbage_stall_and_slowness(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &[]);
    let modem = Modem::spawn(options_for(&sim.link, protocol).with_request_timeout(Duration::from_millis(700)));
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;
    let channel = modem.open_channel(&ISD_R).await.expect("a channel").number;

    // Garbage on the port is skipped; the next exchange works.
    sim.command("garbage 300");
    assert!(get_eid(&modem, channel).await.expect("an answer after the garbage"));

    // A stalled modem times the request out, promptly, and the session survives it.
    sim.command("stall 1500");
    let started = Instant::now();
    let stalled = get_eid(&modem, channel).await;
    assert!(matches!(stalled, Err(ModemError::Timeout { .. })), "{stalled:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(is_ready(&states.borrow()), "{:#?}", *states.borrow());
    assert!(get_eid(&modem, channel).await.expect("an answer after the stall"));

    // A slow modem within the timeout is merely slow.
    sim.command("slow 300");
    let started = Instant::now();
    assert!(get_eid(&modem, channel).await.expect("a slow answer"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.command("slow 0");
    modem.shutdown().await;
}

async fn forgotten_session(protocol: Protocol) {
    let sim = Simulator::start_speaking(protocol, &[]);
    let modem = Modem::spawn(options_for(&sim.link, protocol));
    let mut states = modem.state();
    wait_for(&mut states, "ready", is_ready).await;
    let before = held(&sim, protocol);

    // The function restarts behind the port: QMI ids and the MBIM session are gone.
    sim.command("forget");
    let first = modem.open_channel(&ISD_R).await;
    match protocol {
        // MBIM re-opens in place and retries: the caller never notices.
        Protocol::Mbim => assert!(first.is_ok(), "{first:?}"),
        // QMI refuses the stale id; the session starts over (Sync, allocate) on its own.
        Protocol::Qmi => assert!(first.is_err(), "{first:?}"),
    }
    wait_for(&mut states, "ready again", is_ready).await;
    let retry = Instant::now();
    let channel = loop {
        match modem.open_channel(&ISD_R).await {
            Ok(channel) => break channel,
            Err(error) if retry.elapsed() < PATIENCE => {
                eprintln!("waiting for the new session: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the session never came back: {error}"),
        }
    };
    assert!(get_eid(&modem, channel.number).await.unwrap());
    modem.close_channel(channel.number).await.unwrap();
    if protocol == Protocol::Mbim {
        if let Ok(first) = first {
            modem.close_channel(first.number).await.unwrap();
        }
    }
    assert_eq!(
        held(&sim, protocol).len(),
        before.len(),
        "{:?} vs {before:?}",
        held(&sim, protocol)
    );
    modem.shutdown().await;
}

#[tokio::test]
async fn exhausted_client_ids_are_reported_and_recovered_from() {
    let sim = Simulator::start(&[]);
    sim.command("clients 0");
    let modem = Modem::spawn(options(&sim.link));
    let mut states = modem.state();
    wait_for(&mut states, "unavailable", |s| {
        s.availability == Availability::Unavailable && s.last_error.contains("ClientIdsExhausted")
    })
    .await;
    sim.command("clients 32");
    wait_for(&mut states, "ready once ids are free", is_ready).await;
    modem.shutdown().await;
}

#[tokio::test]
async fn mbim_fragments_are_reassembled_and_bad_ones_reported() {
    let sim = Simulator::start_speaking(Protocol::Mbim, &[]);
    // A small MaxControlTransfer: the modem has to fragment every longer answer.
    let mut options = options_for(&sim.link, Protocol::Mbim).with_request_timeout(Duration::from_millis(800));
    options.mbim_max_control_transfer = Some(64);
    let modem = Modem::spawn(options);
    let mut states = modem.state();
    wait_for(&mut states, "ready through fragments", is_ready).await;
    assert_eq!(states.borrow().info.imei, "356938035643809");
    let channel = modem.open_channel(&ISD_R).await.expect("a channel").number;
    assert!(get_eid(&modem, channel).await.expect("the EID, in fragments"));
    assert!(
        sim.command("state")
            .iter()
            .any(|l| l.contains("max-control-transfer 64"))
    );

    // Fragments out of order: the answer is lost, the session says so and survives it.
    sim.command("fragments on");
    let lost = get_eid(&modem, channel).await;
    assert!(lost.is_err(), "{lost:?}");
    sim.command("fragments off");
    assert!(get_eid(&modem, channel).await.expect("whole again once the fault ends"));
    modem.shutdown().await;
    if let Some(frames) = sim.host_frames(&["mbim.control.header.message_type", "mbim.control.max_control_transfer"]) {
        assert_eq!(frames[0], ["0x00000001", "64"], "OPEN announced 64: {frames:?}");
    }
}
