//! tshark as an independent MBIM decoder: every message the codec produces, written to a pcap
//! and dissected by Wireshark's `mbim.control`, must decode to the values encoded and without
//! a single malformed or warning-level frame.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command as Process,
    time::Duration,
};

use aiesim_mbim::{
    Body, Command, CommandDone, ControlMessage, Indication, Message, Status,
    basic_connect::ctrl_caps,
    pcap::Capture,
    uicc::{ApduResponse, OpenChannelSet},
};
use support::{Sample, samples, to_hex};

const USER_DLT: &str = r#"uat:user_dlts:"User 0 (DLT=147)","mbim.control","0","","0","""#;

/// The tshark binary, or `None` (after saying why) when the test must be skipped.
fn tshark() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/tshark");
    if path.exists() {
        return Some(path);
    }
    aiesim_skip::skip("tshark is not installed (apt-get install tshark, or cargo xtask setup)");
    None
}

fn write_capture(dir: &Path, name: &str, frames: &[Vec<u8>]) -> PathBuf {
    let mut capture = Capture::default();
    for (i, frame) in frames.iter().enumerate() {
        capture.push(Duration::from_millis(u64::try_from(i).unwrap() * 10), frame);
    }
    let path = dir.join(name);
    std::fs::write(&path, capture.as_bytes()).unwrap();
    path
}

/// Runs tshark over `pcap` and returns, per frame, the values of `fields`.
fn fields(tshark: &Path, pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Process::new(tshark);
    cmd.arg("-r")
        .arg(pcap)
        .args(["-o", USER_DLT, "-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// The frames tshark finds malformed or worth a warning.
fn complaints(tshark: &Path, pcap: &Path) -> String {
    let out = Process::new(tshark)
        .arg("-r")
        .arg(pcap)
        .args([
            "-o",
            USER_DLT,
            "-Y",
            r#"_ws.malformed || _ws.expert.severity >= "warning""#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Prints tshark's full dissection, for a failing comparison: `MBIM_TSHARK_DUMP=1`.
fn dump(tshark: &Path, pcap: &Path) {
    let out = Process::new(tshark)
        .arg("-r")
        .arg(pcap)
        .args(["-o", USER_DLT, "-V"])
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The header fields tshark must report for `message`, computed from the message itself.
fn header_fields(message: &ControlMessage) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "mbim.control.header.message_type",
            format!("{:#010x}", message.message_type().code()),
        ),
        ("mbim.control.header.transaction_id", message.transaction_id.to_string()),
    ];
    let mut service = |service: &aiesim_mbim::Uuid, cid: &u32| {
        v.push(("mbim.control.fragment.total", "1".into()));
        v.push(("mbim.control.fragment.current", "0".into()));
        v.push(("mbim.control.device_service_id", service.to_string()));
        v.push(("mbim.control.cid", cid.to_string()));
    };
    let mut extra = Vec::new();
    match &message.body {
        Body::Open { max_control_transfer } => {
            extra.push(("mbim.control.max_control_transfer", max_control_transfer.to_string()));
        }
        Body::Close => {}
        Body::HostError(e) | Body::FunctionError(e) => {
            extra.push(("mbim.control.error_status_code", e.code().to_string()));
        }
        Body::OpenDone(s) | Body::CloseDone(s) => extra.push(("mbim.control.status", s.code().to_string())),
        Body::Command(Command {
            service: id,
            cid,
            command_type,
            info,
        }) => {
            service(id, cid);
            extra.push(("mbim.control.command_type", command_type.code().to_string()));
            extra.push(("mbim.control.info_buffer_len", info.len().to_string()));
        }
        Body::CommandDone(CommandDone {
            service: id,
            cid,
            status,
            info,
        }) => {
            service(id, cid);
            extra.push(("mbim.control.status", status.code().to_string()));
            extra.push(("mbim.control.info_buffer_len", info.len().to_string()));
        }
        Body::IndicateStatus(Indication { service: id, cid, info }) => {
            service(id, cid);
            extra.push(("mbim.control.info_buffer_len", info.len().to_string()));
        }
    }
    v.extend(extra);
    v
}

/// The per-message values tshark must report, taken from the typed values the samples encode.
#[expect(
    clippy::too_many_lines,
    reason = "one table of every message's fields is easiest to audit"
)]
fn value_fields(sample: &Sample) -> Vec<(&'static str, String)> {
    use support::*;
    let list = |items: &[String]| items.join(",");
    match sample.name {
        "DEVICE_CAPS response" => {
            let d = device_caps();
            vec![
                ("mbim.control.device_caps_info.device_id", d.device_id),
                ("mbim.control.device_caps_info.fw_info", d.firmware_info),
                ("mbim.control.device_caps_info.hw_info", d.hardware_info),
                ("mbim.control.device_caps_info.max_sessions", d.max_sessions.to_string()),
                (
                    "mbim.control.device_caps_info.control_caps.esim",
                    u32::from(d.control_caps & ctrl_caps::ESIM != 0).to_string(),
                ),
            ]
        }
        "SUBSCRIBER_READY_STATUS response" | "SUBSCRIBER_READY_STATUS indication" => {
            let s = subscriber_ready();
            vec![
                (
                    "mbim.control.subscriber_ready_status.ready_state",
                    s.ready_state.0.to_string(),
                ),
                (
                    "mbim.control.device_caps_info.subscriber_ready_status.subscriber_id",
                    s.subscriber_id,
                ),
                (
                    "mbim.control.device_caps_info.subscriber_ready_status.sim_icc_id",
                    s.sim_iccid,
                ),
                (
                    "mbim.control.device_caps_info.subscriber_ready_status.tel_nb",
                    list(&s.telephone_numbers),
                ),
            ]
        }
        "REGISTER_STATE response" | "REGISTER_STATE indication" => {
            let r = register_state();
            vec![
                (
                    "mbim.control.registration_state_info.register_state",
                    r.register_state.0.to_string(),
                ),
                ("mbim.control.registration_state_info.provider_id", r.provider_id),
                ("mbim.control.registration_state_info.provider_name", r.provider_name),
            ]
        }
        "PACKET_SERVICE response" | "PACKET_SERVICE indication" => {
            let p = packet_service();
            vec![
                (
                    "mbim.control.packet_service_info.packet_service_state",
                    p.packet_service_state.0.to_string(),
                ),
                (
                    "mbim.control.packet_service_info.uplink_speed",
                    p.uplink_speed.to_string(),
                ),
                (
                    "mbim.control.packet_service_info.downlink_speed",
                    p.downlink_speed.to_string(),
                ),
            ]
        }
        "SIGNAL_STATE response" | "SIGNAL_STATE indication" => {
            let s = signal_state();
            vec![
                ("mbim.control.signal_state_info.rssi", s.rssi.to_string()),
                ("mbim.control.signal_state_info.error_rate", s.error_rate.to_string()),
                (
                    "mbim.control.signal_state_info.signal_strength_interval",
                    s.signal_strength_interval.to_string(),
                ),
            ]
        }
        "CONNECT set" => {
            let c = connect_set();
            vec![
                ("mbim.control.set_connect.access_string", c.access_string),
                ("mbim.control.set_connect.user_name", c.user_name),
                ("mbim.control.set_connect.password", c.password),
                ("mbim.control.set_connect.auth_protocol", c.auth_protocol.0.to_string()),
                ("mbim.control.context_type", c.context_type.to_string()),
            ]
        }
        "CONNECT response" | "CONNECT indication" => {
            let c = connect_response();
            vec![
                (
                    "mbim.control.connect_info.activation_state",
                    c.activation_state.0.to_string(),
                ),
                ("mbim.control.connect_info.ip_type", c.ip_type.0.to_string()),
                ("mbim.control.context_type", c.context_type.to_string()),
            ]
        }
        "IP_CONFIGURATION response" | "IP_CONFIGURATION indication" => {
            let i = ip_configuration();
            vec![
                (
                    "mbim.control.ipv4_element.ipv4_address",
                    i.ipv4_addresses[0].address.to_string(),
                ),
                (
                    "mbim.control.ipv6_element.ipv6_address",
                    i.ipv6_addresses[0].address.to_string(),
                ),
                (
                    "mbim.control.ip_configuration_info.ipv4_gateway",
                    i.ipv4_gateway.unwrap().to_string(),
                ),
                (
                    "mbim.control.ip_configuration_info.ipv4_dns",
                    list(&i.ipv4_dns.iter().map(ToString::to_string).collect::<Vec<_>>()),
                ),
                ("mbim.control.ip_configuration_info.ipv4_mtu", i.ipv4_mtu.to_string()),
            ]
        }
        "DEVICE_SERVICES response" => {
            let d = device_services();
            vec![
                (
                    "mbim.control.device_service_element.device_service_id",
                    list(
                        &d.device_services
                            .iter()
                            .map(|e| e.service.to_string())
                            .collect::<Vec<_>>(),
                    ),
                ),
                (
                    "mbim.control.device_service_element.cid",
                    list(
                        &d.device_services
                            .iter()
                            .flat_map(|e| e.cids.iter().map(ToString::to_string))
                            .collect::<Vec<_>>(),
                    ),
                ),
            ]
        }
        "DEVICE_SERVICE_SUBSCRIBE_LIST set" | "DEVICE_SERVICE_SUBSCRIBE_LIST response" => vec![(
            "mbim.control.device_service_subscribe.element_count",
            events().len().to_string(),
        )],
        "OPEN_CHANNEL set" => {
            let o = open_channel();
            vec![
                ("mbim.control.ms_open_channel.app_id", to_hex(&o.app_id)),
                ("mbim.control.ms_open_channel.app_id_size", o.app_id.len().to_string()),
                ("mbim.control.ms_uicc.channel_group", o.channel_group.to_string()),
            ]
        }
        "APDU set" => {
            let a = get_eid();
            vec![
                ("mbim.control.ms_uicc.channel", a.channel.to_string()),
                ("mbim.control.ms_apdu.command", to_hex(&a.command)),
                ("mbim.control.ms_apdu.command_size", a.command.len().to_string()),
            ]
        }
        "APDU response" => {
            let a = eid_response();
            vec![
                ("mbim.control.ms_uicc.status", a.status.to_string()),
                ("mbim.control.ms_uicc.response", to_hex(&a.response)),
            ]
        }
        "ATR response" => vec![("mbim.control.ms_atr_info.atr_size", (ATR.len() / 2).to_string())],
        "QMI MSG set" => vec![("mbim.control.qmi.buffer", DMS_GET_IDS.into())],
        _ => vec![],
    }
}

/// Checks every (field, expected) of every frame against tshark's dissection.
fn check_fields(tshark: &Path, pcap: &Path, expected: &[Vec<(&'static str, String)>]) {
    let mut names: Vec<&str> = expected.iter().flatten().map(|(f, _)| *f).collect();
    names.sort_unstable();
    names.dedup();
    let rows = fields(tshark, pcap, &names);
    assert_eq!(rows.len(), expected.len(), "tshark saw a different number of frames");
    let mut failures = Vec::new();
    for (i, (row, wanted)) in rows.iter().zip(expected).enumerate() {
        for (field, value) in wanted {
            let at = names.iter().position(|n| n == field).unwrap();
            if &row[at] != value {
                failures.push(format!("frame {}: {field} = {:?}, encoded {value:?}", i + 1, row[at]));
            }
        }
    }
    assert!(failures.is_empty(), "tshark disagrees:\n{}", failures.join("\n"));
}

#[test]
fn every_message_dissects_to_the_encoded_values() {
    let Some(tshark) = tshark() else { return };
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let frames: Vec<Vec<u8>> = samples.iter().map(|s| s.message.encode().unwrap()).collect();
    let pcap = write_capture(dir.path(), "all.pcap", &frames);
    if std::env::var_os("MBIM_TSHARK_DUMP").is_some() {
        dump(&tshark, &pcap);
    }
    let expected: Vec<_> = samples
        .iter()
        .map(|s| {
            let mut v = header_fields(&s.message);
            v.extend(value_fields(s));
            v
        })
        .collect();
    // Guard the guard: the per-message tables must not silently stop matching sample names.
    assert!(samples.iter().filter(|s| !value_fields(s).is_empty()).count() >= 20);
    check_fields(&tshark, &pcap, &expected);
    assert_eq!(complaints(&tshark, &pcap), "", "tshark found malformed frames");
}

#[test]
fn fragments_dissect_and_reassemble() {
    let Some(tshark) = tshark() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A long APDU response split at the smallest MaxControlTransfer, and a set in between.
    let response = ApduResponse {
        status: 0x90,
        response: (0..=255).collect(),
    };
    let big = ControlMessage::new(7, Body::CommandDone(response.to_command_done(Status::None).unwrap()));
    let fragments = big.encode_fragments(64).unwrap();
    let other = ControlMessage::new(8, Body::Command(support::open_channel().to_command().unwrap()));
    let mut frames = fragments.clone();
    frames.insert(1, other.encode().unwrap());
    let pcap = write_capture(dir.path(), "fragments.pcap", &frames);
    let total = fragments.len().to_string();
    let mut expected: Vec<Vec<(&'static str, String)>> = (0..fragments.len())
        .map(|i| {
            vec![
                ("mbim.control.header.transaction_id", "7".to_owned()),
                ("mbim.control.fragment.total", total.clone()),
                ("mbim.control.fragment.current", i.to_string()),
            ]
        })
        .collect();
    // Only the last fragment carries the reassembled response.
    expected
        .last_mut()
        .unwrap()
        .push(("mbim.control.ms_uicc.response", to_hex(&response.response)));
    let o: OpenChannelSet = support::open_channel();
    expected.insert(
        1,
        vec![
            ("mbim.control.header.transaction_id", "8".to_owned()),
            ("mbim.control.ms_open_channel.app_id", to_hex(&o.app_id)),
        ],
    );
    assert!(fragments.len() > 4 && fragments.iter().all(|f| f.len() <= 64));
    check_fields(&tshark, &pcap, &expected);
    assert_eq!(complaints(&tshark, &pcap), "", "tshark found malformed frames");
}
