//! The codec against frames captured from real qmicli sessions (reference/test-peers.md).

#![expect(
    clippy::cast_possible_truncation,
    reason = "the no-panic sweep cuts random numbers down to bytes and indices on purpose"
)]

use aiesim_qmi::{
    DecodeError, Frame, Message, MessageKind, ProtocolError, QmiResult, Request, Service, Splitter,
    ctl::{
        self, AllocateCid, AllocateCidResponse, GetVersionInfo, GetVersionInfoResponse, ReleaseCid, ReleaseCidResponse,
        ServiceVersion, SyncIndication,
    },
    dms::{self, GetIds, GetIdsResponse, GetManufacturerResponse, GetModel, GetRevisionResponse},
    nas, uim, wda, wds,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const CTL_GET_VERSION_INFO: &str = "010b00000000000121000000";
const CTL_ALLOCATE_DMS: &str = "010f0000000000012200040001010002";
const CTL_ALLOCATE_DMS_ANSWER: &str = "011700800000010122000c00020400000000000102000201";
const DMS_GET_IDS: &str = "010c0000020100010025000000";

#[test]
fn ctl_get_version_info_request() {
    let bytes = hex(CTL_GET_VERSION_INFO);
    let frame = Frame::decode(&bytes).unwrap();
    assert_eq!(
        frame,
        Frame {
            service: Service::CTL,
            client_id: 0,
            kind: MessageKind::Request,
            transaction: 1,
            message_id: ctl::GET_VERSION_INFO,
            tlvs: vec![],
        }
    );
    GetVersionInfo::from_frame(&frame).unwrap();
    assert_eq!(GetVersionInfo.to_frame(0, 1).unwrap().encode().unwrap(), bytes);
}

#[test]
fn ctl_allocate_cid_request_and_answer() {
    let request = hex(CTL_ALLOCATE_DMS);
    let frame = Frame::decode(&request).unwrap();
    let allocate = AllocateCid::from_frame(&frame).unwrap();
    assert_eq!(allocate, AllocateCid { service: Service::DMS });
    assert_eq!(allocate.to_frame(0, 1).unwrap().encode().unwrap(), request);

    let answer = hex(CTL_ALLOCATE_DMS_ANSWER);
    let frame = Frame::decode(&answer).unwrap();
    assert_eq!(frame.kind, MessageKind::Response);
    assert_eq!(QmiResult::decode(&frame.tlvs).unwrap(), QmiResult::Success);
    let allocated = <AllocateCid as Request>::Response::from_frame(&frame).unwrap();
    assert_eq!(
        allocated,
        AllocateCidResponse {
            service: Service::DMS,
            client_id: 1
        }
    );
    let request = Frame::decode(&request).unwrap();
    assert_eq!(allocated.to_response(&request).unwrap().encode().unwrap(), answer);
}

#[test]
fn dms_get_ids_request() {
    let bytes = hex(DMS_GET_IDS);
    let frame = Frame::decode(&bytes).unwrap();
    assert_eq!(
        (frame.service, frame.client_id, frame.transaction, frame.message_id),
        (Service::DMS, 1, 1, dms::GET_IDS)
    );
    GetIds::from_frame(&frame).unwrap();
    assert_eq!(GetIds.to_frame(1, 1).unwrap().encode().unwrap(), bytes);
}

#[test]
fn responses_round_trip() {
    let request = GetIds.to_frame(1, 0x1234).unwrap();
    let ids = GetIdsResponse {
        esn: None,
        imei: Some("356938035643809".into()),
        meid: Some("A1000012345678".into()),
    };
    let wire = ids.to_response(&request).unwrap().encode().unwrap();
    // Service SDU: response flag 0x02 and a two-byte transaction.
    assert_eq!(
        &wire[..10],
        &[0x01, 0x36, 0x00, 0x80, 0x02, 0x01, 0x02, 0x34, 0x12, 0x25]
    );
    let frame = Frame::decode(&wire).unwrap();
    assert_eq!(GetIdsResponse::from_frame(&frame).unwrap(), ids);

    let version = GetVersionInfoResponse {
        services: vec![
            ServiceVersion {
                service: Service::CTL,
                major: 1,
                minor: 5,
            },
            ServiceVersion {
                service: Service::DMS,
                major: 1,
                minor: 14,
            },
        ],
    };
    let frame = version.to_response(&GetVersionInfo.to_frame(0, 7).unwrap()).unwrap();
    let frame = Frame::decode(&frame.encode().unwrap()).unwrap();
    assert_eq!(GetVersionInfoResponse::from_frame(&frame).unwrap(), version);

    let release = ReleaseCid {
        service: Service::DMS,
        client_id: 3,
    };
    let frame = Frame::decode(&release.to_frame(0, 9).unwrap().encode().unwrap()).unwrap();
    assert_eq!(ReleaseCid::from_frame(&frame).unwrap(), release);
    let answer = ReleaseCidResponse {
        service: Service::DMS,
        client_id: 3,
    }
    .to_response(&frame)
    .unwrap();
    assert_eq!(answer.transaction, 9);

    let manufacturer = GetManufacturerResponse {
        manufacturer: "aiesim".into(),
    };
    let frame = manufacturer
        .to_response(&dms::GetManufacturer.to_frame(1, 2).unwrap())
        .unwrap();
    assert_eq!(GetManufacturerResponse::from_frame(&frame).unwrap(), manufacturer);

    let sync = SyncIndication.to_frame(0, 0).unwrap().encode().unwrap();
    assert_eq!(
        sync,
        [0x01, 0x0b, 0x00, 0x80, 0x00, 0x00, 0x02, 0x00, 0x27, 0x00, 0x00, 0x00]
    );
}

#[test]
fn error_responses_carry_the_code() {
    let request = GetModel.to_frame(5, 3).unwrap();
    let answer = Frame::error_response(&request, ProtocolError::InvalidClientId);
    let frame = Frame::decode(&answer.encode().unwrap()).unwrap();
    assert_eq!(
        QmiResult::decode(&frame.tlvs).unwrap().into_result(),
        Err(ProtocolError::InvalidClientId)
    );
    // The failed response has no string TLV, so reading it as a success must say so.
    assert!(matches!(
        GetRevisionResponse::from_frame(&frame),
        Err(DecodeError::WrongMessage { .. })
    ));
    assert!(matches!(
        dms::GetModelResponse::from_frame(&frame),
        Err(DecodeError::MissingTlv { tlv: 0x01, .. })
    ));
}

#[test]
fn bad_frames_are_errors() {
    let good = hex(DMS_GET_IDS);
    assert_eq!(
        Frame::decode(&[]),
        Err(DecodeError::Truncated {
            needed: 1,
            available: 0
        })
    );
    assert_eq!(Frame::decode(&[0x02]), Err(DecodeError::NotQmux { marker: 0x02 }));
    for cut in 1..good.len() {
        assert!(Frame::decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Frame::decode(&trailing),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut flags = good.clone();
    flags[3] = 0x40;
    assert_eq!(Frame::decode(&flags), Err(DecodeError::ControlFlags { flags: 0x40 }));
    let mut direction = good.clone();
    direction[3] = 0x80;
    assert!(matches!(
        Frame::decode(&direction),
        Err(DecodeError::DirectionMismatch { .. })
    ));
    let mut compound = good.clone();
    compound[6] = 0x01;
    assert_eq!(Frame::decode(&compound), Err(DecodeError::Compound { flags: 0x01 }));
    let mut tlv_len = good;
    tlv_len[11] = 1;
    assert!(matches!(
        Frame::decode(&tlv_len),
        Err(DecodeError::TlvLengthMismatch { .. })
    ));
    assert!(matches!(
        GetIds.to_frame(1, 1).map(|mut f| {
            f.service = Service::CTL;
            f.transaction = 300;
            f.encode()
        }),
        Ok(Err(aiesim_qmi::EncodeError::CtlTransaction { transaction: 300 }))
    ));
}

/// A small deterministic generator, so the no-panic sweep needs no extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = [
        hex(CTL_GET_VERSION_INFO),
        hex(CTL_ALLOCATE_DMS),
        hex(CTL_ALLOCATE_DMS_ANSWER),
        hex(DMS_GET_IDS),
    ];
    for round in 0..20_000 {
        // Mutate real frames most of the time: pure noise rarely gets past the marker.
        let mut bytes = seeds[round % seeds.len()].clone();
        let edits = rng.next() % 4;
        for _ in 0..edits {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(5) {
            bytes.truncate((rng.next() as usize) % (bytes.len() + 1));
        }
        let mut splitter = Splitter::with_max_frame_len(64);
        splitter.push(&bytes);
        while let Some(frame) = splitter.next_frame() {
            if let Ok(frame) = frame.and_then(|b| Frame::decode(&b)) {
                let _ = QmiResult::decode(&frame.tlvs);
                let _ = AllocateCidResponse::from_frame(&frame);
                let _ = GetVersionInfoResponse::read_tlvs(&frame.tlvs);
                let _ = GetIdsResponse::read_tlvs(&frame.tlvs);
                let _ = AllocateCid::read_tlvs(&frame.tlvs);
                let _ = ReleaseCid::read_tlvs(&frame.tlvs);
                assert_eq!(Frame::decode(&frame.encode().unwrap()).unwrap(), frame);
            }
        }
        let _ = Frame::decode(&bytes);
    }
}

/// The request a capture's response answers (only its header matters to `to_response`).
fn request_for(response: &Frame) -> Frame {
    Frame {
        kind: MessageKind::Request,
        tlvs: vec![],
        ..response.clone()
    }
}

/// Decodes `frame` as whichever typed message it is and encodes that again: requests as
/// `qmicli` sent them, answers as a modem sends them. `None` if no type claims the frame.
fn typed_reencode(frame: &Frame) -> Option<(&'static str, Vec<u8>)> {
    macro_rules! requests {
        ($($ty:ty),* $(,)?) => {$(
            if let Ok(message) = <$ty>::from_frame(frame) {
                let again = message.to_frame(frame.client_id, frame.transaction).unwrap();
                return Some((<$ty>::NAME, again.encode().unwrap()));
            }
        )*};
    }
    macro_rules! responses {
        ($($ty:ty),* $(,)?) => {$(
            if let Ok(message) = <$ty>::from_frame(frame) {
                assert_eq!(QmiResult::decode(&frame.tlvs).unwrap(), QmiResult::Success, "{}", <$ty>::NAME);
                let again = message.to_response(&request_for(frame)).unwrap();
                return Some((<$ty>::NAME, again.encode().unwrap()));
            }
        )*};
    }
    requests!(
        GetVersionInfo,
        AllocateCid,
        ReleaseCid,
        GetIds,
        dms::GetOperatingMode,
        dms::SetOperatingMode,
        dms::GetCapabilities,
        nas::GetSignalInfo,
        nas::GetSignalStrength,
        nas::GetServingSystem,
        nas::GetSystemInfo,
        wds::GetPacketServiceStatus,
        wds::GetChannelRates,
        wds::StartNetwork,
        wds::GetCurrentSettings,
        wds::StopNetwork,
        wds::SetIpFamily,
        wda::GetDataFormat,
        wda::SetDataFormat,
        uim::GetCardStatus,
        uim::GetSlotStatus,
    );
    responses!(
        GetVersionInfoResponse,
        AllocateCidResponse,
        ReleaseCidResponse,
        GetIdsResponse,
        dms::GetOperatingModeResponse,
        dms::SetOperatingModeResponse,
        dms::GetCapabilitiesResponse,
        nas::GetSignalInfoResponse,
        nas::GetSignalStrengthResponse,
        nas::GetServingSystemResponse,
        nas::GetSystemInfoResponse,
        wds::GetPacketServiceStatusResponse,
        wds::GetChannelRatesResponse,
        wds::StartNetworkResponse,
        wds::GetCurrentSettingsResponse,
        wds::StopNetworkResponse,
        wds::SetIpFamilyResponse,
        wda::GetDataFormatResponse,
        wda::SetDataFormatResponse,
        uim::GetCardStatusResponse,
        uim::GetSlotStatusResponse,
    );
    // Indications re-encode like requests: header fields come from the frame.
    requests!(
        SyncIndication,
        nas::ServingSystemIndication,
        nas::SystemInfoIndication,
        nas::SignalInfoIndication,
        wds::PacketServiceStatusIndication,
        wds::EventReportIndication,
        uim::CardStatusIndication,
        uim::SlotStatusIndication,
        uim::RefreshIndication,
    );
    None
}

/// The captures of real qmicli sessions (see tests/captures/README.md): every frame decodes
/// into its typed message, which encodes back to the very same bytes.
#[test]
fn qmicli_captures_decode_and_reencode_byte_for_byte() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let expected = [
        ("ctl-version-info", "CTL Get Version Info request"),
        ("dms-get-ids", "DMS Get IDs request"),
        ("dms-get-operating-mode", "DMS Get Operating Mode request"),
        ("dms-get-capabilities", "DMS Get Capabilities request"),
        ("dms-set-operating-mode-low-power", "DMS Set Operating Mode request"),
        ("dms-set-operating-mode-online", "DMS Set Operating Mode request"),
        ("nas-get-signal-info", "NAS Get Signal Info response"),
        ("nas-get-signal-info-low-power", "NAS Get Signal Info request"),
        ("nas-get-signal-strength", "NAS Get Signal Strength request"),
        ("nas-get-serving-system", "NAS Get Serving System response"),
        ("nas-get-system-info", "NAS Get System Info response"),
        ("wds-get-packet-service-status", "WDS Get Packet Service Status request"),
        ("wds-start-network", "WDS Start Network request"),
        ("wds-get-current-settings", "WDS Get Current Settings request"),
        ("wds-stop-network", "WDS Packet Service Status indication"),
        ("wds-set-ip-family", "WDS Set IP Family request"),
        ("wda-get-data-format", "WDA Get Data Format request"),
        ("wda-set-data-format", "WDA Set Data Format request"),
        ("uim-get-card-status", "UIM Get Card Status response"),
        ("uim-get-slot-status", "UIM Get Slot Status response"),
    ];
    for (name, must_contain) in expected {
        let path = dir.join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let mut seen = Vec::new();
        let mut splitter = Splitter::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (direction, hex_frame) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
            let bytes = hex(hex_frame);
            // The splitter must see each captured frame as exactly one frame.
            splitter.push(&bytes);
            assert_eq!(splitter.next_frame(), Some(Ok(bytes.clone())), "{name}: {line}");
            let frame = Frame::decode(&bytes).unwrap_or_else(|err| panic!("{name}: {line}: {err}"));
            let from_host = direction == ">";
            assert_eq!(frame.kind == MessageKind::Request, from_host, "{name}: {line}");
            if frame.kind == MessageKind::Indication {
                // Indications are addressed to a client the capture allocated.
                assert_ne!(frame.client_id, 0, "{name}: {line}");
            }
            let (message, again) = typed_reencode(&frame).unwrap_or_else(|| {
                panic!(
                    "{name}: no typed message for {} {:#06x} {}",
                    frame.service, frame.message_id, frame.kind
                )
            });
            assert_eq!(
                again, bytes,
                "{name}: {message} does not re-encode to the captured bytes"
            );
            seen.push(message);
        }
        assert!(
            seen.contains(&must_contain),
            "{name}: {must_contain} not among {seen:?}"
        );
        // Each qmicli run allocates a client id, unless it reuses one it kept.
        assert!(seen.len() >= 2, "{name}: {seen:?}");
    }
}

/// The Start Network request exactly as qmicli 1.32 sends it: IP family before APN.
#[test]
fn qmicli_start_network_request_fields() {
    let bytes = hex("011b0000010100010020000f0019010004140800696e7465726e6574");
    let frame = Frame::decode(&bytes).unwrap();
    let start = wds::StartNetwork::from_frame(&frame).unwrap();
    assert_eq!(start.apn.as_deref(), Some("internet"));
    assert_eq!(start.ip_family, Some(wds::IpFamily::IPV4));
    assert_eq!(start.authentication, None);
    assert_eq!(start.to_frame(1, 1).unwrap().encode().unwrap(), bytes);
}
