//! The MBIM simulator against the real `mbimcli` (libmbim-utils) and `qmicli --device-open-mbim`
//! (libqmi-utils): if libmbim and libqmi accept it, so will ModemManager-style clients. The
//! notification path, which mbimcli cannot show, is checked by a host written with aiesim-mbim.
//! Without the tools these tests skip, or fail when `CI` is set.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::OpenOptionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aiesim_mbim::{
    Body, ControlMessage, Message, Reassembler, Splitter, Status, Uuid,
    basic_connect::{
        self as bc, DeviceCapsQuery, DeviceCapsResponse, DeviceServiceSubscribeListSet, EventEntry, RegisterState,
        RegisterStateResponse, SignalStateResponse,
    },
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const SIMULATOR: &str = env!("CARGO_BIN_EXE_aiesim-modemsim");
const IMEI: &str = "490154203237518";
const ISD_R: &str = "A0000005591010FFFFFFFF8900000100";
const GET_EID: &str = "81E2910006BF3E035C015A";
/// `ES10c` `GetProfilesInfo` with no search criteria, on logical channel 1.
const GET_PROFILES: &str = "81E2910003BF2D00";

/// Whether `tool` can run here; `false` means skip (after saying why).
fn available(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        aiesim_skip::skip(&format!("{tool} not found (apt-get install {package})"));
    }
    found
}

fn mbimcli_available() -> bool {
    available("mbimcli", "libmbim-utils")
}

/// A running MBIM simulator with a control socket; stopped with SIGTERM and reaped on drop.
struct Simulator {
    child: Child,
    link: PathBuf,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

impl Simulator {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let link = dir.path().join("cdc-wdm0");
        let control = dir.path().join("control");
        let mut child = Command::new(SIMULATOR)
            .args(["--protocol", "mbim", "--link"])
            .arg(&link)
            .arg("--control")
            .arg(&control)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the simulator starts");
        let mut announcement = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut announcement)
            .expect("the simulator's stdout is readable");
        let sim = Self {
            child,
            link,
            control,
            _dir: dir,
        };
        assert!(
            announcement.starts_with("PTY /dev/pts/"),
            "unexpected announcement {announcement:?}"
        );
        sim
    }

    /// Runs `mbimcli -d <link> <args>` with a deadline; its stdout, after checking it succeeded.
    fn mbimcli(&self, args: &[&str]) -> String {
        run("mbimcli", &self.link, &[], args)
    }

    /// Runs `qmicli -d <link> --device-open-mbim <args>`: QMI tunnelled over MBIM.
    fn qmicli(&self, args: &[&str]) -> String {
        run("qmicli", &self.link, &["--device-open-mbim"], args)
    }

    /// One fault-injection command on the control socket; its reply.
    fn control(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(&self.control).expect("the control socket accepts");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(stream, "{command}").unwrap();
        let mut reply = String::new();
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            reply.push_str(&line);
            if line == "ok\n" || line.starts_with("error:") {
                break;
            }
        }
        assert!(reply.ends_with("ok\n"), "{command}: {reply}");
        reply
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(tool: &str, link: &Path, open: &[&str], args: &[&str]) -> String {
    let output = Command::new("timeout")
        .arg("20")
        .arg(tool)
        .arg("-d")
        .arg(link)
        .args(open)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{tool} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The value mbimcli/qmicli print for `key`: `key: 'value'` or `key: value`.
fn field<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix(key)?.trim_start().strip_prefix(':')?.trim();
            Some(
                rest.strip_prefix('\'')
                    .and_then(|r| r.strip_suffix('\''))
                    .unwrap_or(rest),
            )
        })
        .unwrap_or_else(|| panic!("no {key:?} in:\n{output}"))
}

/// Bytes mbimcli prints as `3B:9F:…`.
fn colon_hex(text: &str) -> Vec<u8> {
    text.split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("{text:?} is not colon hex")))
        .collect()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02X}");
        out
    })
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| b.to_ascii_uppercase() as char).collect()
}

/// The CSQ values (0–31) an RSSI base level can show, given the simulator's drift of 0–5 dB below.
fn csq_range(rssi_dbm: i32) -> std::ops::RangeInclusive<u32> {
    let csq = |dbm: i32| u32::try_from(i32::midpoint(dbm, 113)).unwrap().min(31);
    csq(rssi_dbm - 5)..=csq(rssi_dbm)
}

#[test]
fn mbimcli_reads_the_device_caps() {
    if !mbimcli_available() {
        return;
    }
    let sim = Simulator::start(&["--imei", IMEI, "--model", "AW-5G", "--revision", "AW5G_01.002"]);
    let out = sim.mbimcli(&["--query-device-caps"]);
    assert_eq!(field(&out, "Device ID"), IMEI);
    assert_eq!(field(&out, "Firmware info"), "AW5G_01.002");
    assert_eq!(field(&out, "Hardware info"), "AW-5G");
    assert_eq!(field(&out, "Device type"), "embedded");
    let caps: Vec<&str> = field(&out, "Ctrl caps").split(", ").collect();
    assert!(caps.contains(&"esim"), "the eUICC is announced: {caps:?}");
}

#[test]
fn mbimcli_reads_the_subscriber_and_qmi_agrees() {
    if !mbimcli_available() || !available("qmicli", "libqmi-utils") {
        return;
    }
    let sim = Simulator::start(&[]);
    let out = sim.mbimcli(&["--query-subscriber-ready-status"]);
    assert_eq!(field(&out, "Ready state"), "initialized");
    let iccid = field(&out, "SIM ICCID");
    assert!(iccid.len() >= 18 && iccid.starts_with("89"), "{iccid}");
    assert_eq!(field(&out, "Subscriber ID").len(), 15, "an IMSI: {out}");
    // The same card through QMI UIM tunnelled over MBIM.
    let slots = sim.qmicli(&["--uim-get-slot-status"]);
    assert_eq!(field(&slots, "ICCID"), iccid);

    sim.control("card remove");
    let out = sim.mbimcli(&["--query-subscriber-ready-status"]);
    assert_eq!(field(&out, "Ready state"), "sim-not-inserted");
    let out = sim.mbimcli(&["--ms-query-slot-info-status=0"]);
    assert!(out.contains("Slot '0': 'state-empty'"), "{out}");
}

#[test]
fn mbimcli_reads_signal_registration_and_radio() {
    if !mbimcli_available() {
        return;
    }
    let sim = Simulator::start(&["--rssi", "-73"]);
    let out = sim.mbimcli(&["--query-signal-state"]);
    let rssi: u32 = field(&out, "RSSI [0-31,99]").parse().unwrap();
    assert!(csq_range(-73).contains(&rssi), "RSSI {rssi} for -73 dBm");

    let out = sim.mbimcli(&["--query-registration-state"]);
    assert_eq!(field(&out, "Register state"), "home");
    assert_eq!(field(&out, "Provider ID"), "00101");
    sim.control("register roaming");
    let out = sim.mbimcli(&["--query-registration-state"]);
    assert_eq!(field(&out, "Register state"), "roaming");

    let out = sim.mbimcli(&["--query-radio-state"]);
    assert_eq!(field(&out, "Hardware radio state"), "on");
    assert_eq!(field(&out, "Software radio state"), "on");
    let out = sim.mbimcli(&["--set-radio-state=off"]);
    assert_eq!(field(&out, "Software radio state"), "off");
    assert!(sim.control("state").contains("radio off"));
    let out = sim.mbimcli(&["--query-signal-state"]);
    assert_eq!(field(&out, "RSSI [0-31,99]"), "99", "no signal with the radio off");
    let out = sim.mbimcli(&["--query-registration-state"]);
    assert_eq!(field(&out, "Register state"), "deregistered");
    sim.mbimcli(&["--set-radio-state=on"]);
    let out = sim.mbimcli(&["--query-radio-state"]);
    assert_eq!(field(&out, "Software radio state"), "on");
}

#[test]
fn mbimcli_connects_and_reads_the_ip_configuration() {
    if !mbimcli_available() {
        return;
    }
    let sim = Simulator::start(&[
        "--ipv4",
        "198.51.100.7/28",
        "--gateway",
        "198.51.100.1",
        "--mtu",
        "1400",
    ]);
    let out = sim.mbimcli(&["--connect=access-string=internet,ip-type=ipv4"]);
    assert!(out.contains("Successfully connected"), "{out}");
    assert_eq!(field(&out, "IP [0]"), "198.51.100.7/28");
    assert_eq!(field(&out, "Gateway"), "198.51.100.1");
    assert_eq!(field(&out, "MTU"), "1400");
    assert!(sim.control("state").contains("data up internet 198.51.100.7"));
    let out = sim.mbimcli(&["--query-connection-state"]);
    assert_eq!(field(&out, "Activation state"), "activated");
    sim.mbimcli(&["--disconnect"]);
    assert!(sim.control("state").contains("data down"));
}

#[test]
fn mbimcli_reads_the_uplink_speed_and_qmi_agrees() {
    if !mbimcli_available() || !available("qmicli", "libqmi-utils") {
        return;
    }
    let sim = Simulator::start(&[]);
    let out = sim.mbimcli(&["--query-packet-service-state"]);
    assert_eq!(field(&out, "Uplink speed"), "50000000 bps", "{out}");
    sim.control("rates 2000 8000");
    let out = sim.mbimcli(&["--query-packet-service-state"]);
    assert_eq!(field(&out, "Uplink speed"), "2000000 bps", "{out}");
    assert_eq!(field(&out, "Downlink speed"), "8000000 bps", "{out}");
    // The same rates behind QMI over MBIM.
    let out = sim.qmicli(&["--wds-get-channel-rates"]);
    assert!(out.contains("Current TX rate: 2000000bps"), "{out}");
}

#[test]
fn mbimcli_reads_the_atr() {
    if !mbimcli_available() {
        return;
    }
    let sim = Simulator::start(&[]);
    let out = sim.mbimcli(&["--ms-query-uicc-atr"]);
    let atr = colon_hex(field(&out, "response"));
    assert_eq!(atr[0], 0x3B, "direct convention");
    assert_eq!(
        usize::from(atr[1] & 0x0F),
        atr.len() - 7,
        "T0 counts the historical bytes"
    );
    assert_eq!(atr[1..].iter().fold(0, |acc, b| acc ^ b), 0, "the check byte holds");
}

#[test]
fn mbimcli_reads_the_eid_from_the_isd_r() {
    if !mbimcli_available() || !available("qmicli", "libqmi-utils") {
        return;
    }
    let sim = Simulator::start(&[]);
    // One MBIM session across three mbimcli runs: open, APDU, close.
    let out = sim.mbimcli(&[
        &format!("--ms-set-uicc-open-channel=application-id={ISD_R},selectp2arg=0,channel-group=1"),
        "--no-close",
    ]);
    assert_eq!(field(&out, "status"), "144", "SELECT answered 90 00");
    let channel = field(&out, "channel").to_owned();
    let fci = colon_hex(field(&out, "response"));
    assert_eq!(fci[0], 0x6F, "an FCI template");
    assert!(hex(&field(&out, "response").replace(':', "")).contains(ISD_R), "{out}");
    let tid: u32 = field(&out, "TRID").parse().unwrap();
    assert!(sim.control("state").contains(&format!("channels [{channel}]")));

    let out = sim.mbimcli(&[
        &format!(
            "--ms-set-uicc-apdu=channel={channel},secure-message=none,classbyte-type=inter-industry,command={GET_EID}"
        ),
        &format!("--no-open={tid}"),
        "--no-close",
    ]);
    assert_eq!(field(&out, "status"), "144", "GetEID answered 90 00");
    let response = colon_hex(field(&out, "response"));
    assert_eq!(response[..5], [0xBF, 0x3E, 0x12, 0x5A, 0x10], "GetEuiccData {{ EID }}");
    let eid = hex_upper(&response[5..]);
    assert_eq!(eid.len(), 32);
    let tid: u32 = field(&out, "TRID").parse().unwrap();

    // GetProfilesInfo on the same channel: both profiles' ICCIDs, as the card encodes them.
    let out = sim.mbimcli(&[
        &format!(
            "--ms-set-uicc-apdu=channel={channel},secure-message=none,classbyte-type=inter-industry,command={GET_PROFILES}"
        ),
        &format!("--no-open={tid}"),
        "--no-close",
    ]);
    assert_eq!(field(&out, "status"), "144", "GetProfilesInfo answered 90 00");
    let profiles = field(&out, "response").replace(':', "").to_uppercase();
    assert!(profiles.starts_with("BF2D"), "a ProfileInfoListResponse: {profiles}");
    for iccid in ["8988211000000000017", "8988211000000000025"] {
        // ICCID digits go into BCD with the nibbles of each byte swapped, padded with F.
        let mut digits: Vec<char> = iccid.chars().collect();
        if digits.len() % 2 == 1 {
            digits.push('F');
        }
        let bcd: String = digits.chunks(2).flat_map(|pair| [pair[1], pair[0]]).collect();
        assert!(
            profiles.contains(&format!("5A0A{bcd}")),
            "ICCID {iccid} listed: {profiles}"
        );
    }
    let tid: u32 = field(&out, "TRID").parse().unwrap();

    let out = sim.mbimcli(&[
        &format!("--ms-set-uicc-close-channel=channel={channel},channel-group=1"),
        &format!("--no-open={tid}"),
    ]);
    assert_eq!(field(&out, "status"), "144");
    assert!(sim.control("state").contains("channels []"));

    // The card reports the same EID through QMI UIM Get Slot Status, tunnelled over MBIM.
    let slots = sim.qmicli(&["--uim-get-slot-status"]);
    assert_eq!(hex(field(&slots, "EID")), eid);
}

#[test]
fn qmicli_talks_qmi_over_mbim() {
    if !available("qmicli", "libqmi-utils") {
        return;
    }
    let sim = Simulator::start(&["--imei", IMEI, "--rssi", "-81"]);
    // libqmi subscribes to the QMI service's notifications first and gives up if that fails.
    let out = sim.qmicli(&["--dms-get-ids", "--client-no-release-cid"]);
    assert_eq!(field(&out, "IMEI"), IMEI);
    let cid = field(&out, "CID");
    assert!(
        sim.control("state").contains(&format!("clients DMS {cid}")),
        "the QMI model keeps the client id {cid} allocated over MBIM"
    );
    let out = sim.qmicli(&["--get-service-version-info"]);
    assert!(out.contains("ctl ("), "{out}");
    assert!(out.contains("dms ("), "{out}");
    let out = sim.qmicli(&["--nas-get-signal-info"]);
    let rssi: i32 = field(&out, "RSSI").trim_end_matches(" dBm").parse().unwrap();
    assert!((-86..=-81).contains(&rssi), "RSSI {rssi} dBm for a -81 dBm base level");
    let out = sim.qmicli(&["--wds-get-packet-service-status"]);
    assert!(out.contains("Connection status: 'disconnected'"), "{out}");
    // The same world behind both protocols: a session MBIM brings up, QMI sees.
    sim.mbimcli(&["--connect=access-string=internet,ip-type=ipv4"]);
    let out = sim.qmicli(&["--wds-get-packet-service-status"]);
    assert!(out.contains("Connection status: 'connected'"), "{out}");
}

/// A host written with aiesim-mbim on the raw pty: what mbimcli cannot show.
struct Host {
    port: File,
    splitter: Splitter,
    reassembler: Reassembler,
    /// Every transfer the simulator sent, for the length checks.
    transfers: Vec<Vec<u8>>,
}

impl Host {
    fn open(link: &Path) -> Self {
        let port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
            .open(link)
            .expect("the port opens");
        Self {
            port,
            splitter: Splitter::new(),
            reassembler: Reassembler::new(),
            transfers: Vec::new(),
        }
    }

    fn send(&mut self, message: &ControlMessage) {
        self.port.write_all(&message.encode().unwrap()).unwrap();
    }

    /// The next whole message for which `wanted` holds, within five seconds.
    fn wait(&mut self, mut wanted: impl FnMut(&ControlMessage) -> bool) -> ControlMessage {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0; 4096];
        while Instant::now() < deadline {
            while let Some(transfer) = self.splitter.next_transfer() {
                let transfer = transfer.expect("the simulator sends only MBIM");
                self.transfers.push(transfer.clone());
                if let Some(message) = self.reassembler.push(&transfer).unwrap() {
                    if wanted(&message) {
                        return message;
                    }
                }
            }
            match self.port.read(&mut buf) {
                Ok(n) => {
                    self.splitter.push(&buf[..n]);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("reading the port failed: {err}"),
            }
        }
        panic!("no such message within 5 s");
    }

    fn done(&mut self, tid: u32) -> aiesim_mbim::CommandDone {
        match self.wait(|m| m.transaction_id == tid).body {
            Body::CommandDone(done) => done,
            other => panic!("expected a COMMAND_DONE, got {other:?}"),
        }
    }
}

#[test]
fn a_subscribed_host_gets_notifications_in_small_fragments() {
    let sim = Simulator::start(&["--imei", IMEI]);
    let mut host = Host::open(&sim.link);
    // The smallest MaxControlTransfer MBIM allows: every answer must come in 64-byte pieces.
    host.send(&ControlMessage::new(
        1,
        Body::Open {
            max_control_transfer: 64,
        },
    ));
    assert_eq!(host.wait(|m| m.transaction_id == 1).body, Body::OpenDone(Status::None));
    host.send(&ControlMessage::new(
        2,
        Body::Command(DeviceCapsQuery {}.to_command().unwrap()),
    ));
    let done = host.done(2);
    assert_eq!(DeviceCapsResponse::from_command_done(&done).unwrap().device_id, IMEI);
    assert!(
        host.transfers.len() > 3,
        "DEVICE_CAPS needs several fragments at 64 bytes"
    );
    assert!(host.transfers.iter().all(|t| t.len() <= 64));

    let subscribe = DeviceServiceSubscribeListSet {
        events: vec![EventEntry {
            service: Uuid::BASIC_CONNECT,
            cids: vec![bc::SIGNAL_STATE, bc::REGISTER_STATE],
        }],
    };
    host.send(&ControlMessage::new(3, Body::Command(subscribe.to_command().unwrap())));
    assert_eq!(host.done(3).status, Status::None);

    sim.control("register roaming");
    let indication = |cid| move |m: &ControlMessage| matches!(&m.body, Body::IndicateStatus(i) if i.service == Uuid::BASIC_CONNECT && i.cid == cid);
    let Body::IndicateStatus(registration) = host.wait(indication(bc::REGISTER_STATE)).body else {
        unreachable!()
    };
    let registration = RegisterStateResponse::from_indication(&registration).unwrap();
    assert_eq!(registration.register_state, RegisterState::ROAMING);

    sim.control("signal -105");
    // The signal drifts up to 5 dB below its base: CSQ 1 to 4 for -105 dBm.
    let signal = host.wait(|m| match &m.body {
        Body::IndicateStatus(i) => SignalStateResponse::from_indication(i).is_ok_and(|s| s.rssi <= 4),
        _ => false,
    });
    let Body::IndicateStatus(signal) = signal.body else {
        unreachable!()
    };
    let rssi = SignalStateResponse::from_indication(&signal).unwrap().rssi;
    assert!(csq_range(-105).contains(&rssi), "{rssi}");

    host.send(&ControlMessage::new(4, Body::Close));
    assert_eq!(host.wait(|m| m.transaction_id == 4).body, Body::CloseDone(Status::None));
    host.send(&ControlMessage::new(
        5,
        Body::Command(DeviceCapsQuery {}.to_command().unwrap()),
    ));
    assert_eq!(
        host.wait(|m| m.transaction_id == 5).body,
        Body::FunctionError(aiesim_mbim::ProtocolError::NotOpened)
    );
}
