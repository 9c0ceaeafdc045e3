//! Every typed message of every service: encode, decode, compare; plus byte-level checks of
//! the layouts libqmi 1.32 expects where a round trip alone could hide a symmetric mistake.

#![expect(
    clippy::cast_possible_truncation,
    reason = "the no-panic sweep cuts random numbers down to bytes and indices on purpose"
)]

use std::{
    fmt::Debug,
    net::{Ipv4Addr, Ipv6Addr},
};

use aiesim_qmi::{
    DecodeError, Frame, Message, MessageKind, ProtocolError, QmiResult, Service, ctl, dms, nas, tlv, uim, wda, wds,
};

/// Sends `message` through the wire and back; returns its TLV section.
fn round_trip<M: Message + PartialEq + Debug>(message: &M) -> Vec<u8> {
    let frame = match M::KIND {
        MessageKind::Response => {
            let request = Frame {
                service: M::SERVICE,
                client_id: 3,
                kind: MessageKind::Request,
                transaction: 0x22,
                message_id: M::MESSAGE_ID,
                tlvs: vec![],
            };
            message.to_response(&request).unwrap()
        }
        MessageKind::Request | MessageKind::Indication => message.to_frame(3, 0x22).unwrap(),
    };
    let wire = frame.encode().unwrap();
    let decoded = Frame::decode(&wire).unwrap();
    assert_eq!(decoded, frame);
    assert_eq!(&M::from_frame(&decoded).unwrap(), message, "{}", M::NAME);
    if M::KIND == MessageKind::Response {
        assert_eq!(QmiResult::decode(&decoded.tlvs).unwrap(), QmiResult::Success);
    }
    decoded.tlvs
}

/// The value of TLV `id` in a TLV section.
fn value(tlvs: &[u8], id: u8) -> Vec<u8> {
    tlv::find(tlvs, id)
        .unwrap()
        .unwrap_or_else(|| panic!("TLV {id:#04x}"))
        .to_vec()
}

#[test]
fn ctl_proxy_open_and_sync() {
    let open = ctl::InternalProxyOpen {
        device_path: "/dev/cdc-wdm0".into(),
    };
    let tlvs = round_trip(&open);
    // The path is the whole TLV, no length prefix and no NUL (libqmi's test sends one padded).
    assert_eq!(value(&tlvs, 0x01), b"/dev/cdc-wdm0");
    let padded = ctl::InternalProxyOpen::read_tlvs(&[0x01, 5, 0, b'/', b'd', b'v', 0, 0]).unwrap();
    assert_eq!(padded.device_path, "/dv");
    assert!(matches!(
        ctl::InternalProxyOpen::read_tlvs(&[]),
        Err(DecodeError::MissingTlv { tlv: 0x01, .. })
    ));
    assert!(round_trip(&ctl::InternalProxyOpenResponse).len() == 7);
    assert!(round_trip(&ctl::Sync).is_empty());
    round_trip(&ctl::SyncResponse);
    round_trip(&ctl::SyncIndication);
}

#[test]
fn dms_operating_mode_and_capabilities() {
    assert!(round_trip(&dms::GetOperatingMode).is_empty());
    let online = dms::GetOperatingModeResponse {
        mode: dms::OperatingMode::ONLINE,
        offline_reason: None,
        hardware_restricted: Some(false),
    };
    let tlvs = round_trip(&online);
    assert_eq!(value(&tlvs, 0x01), [0]);
    assert_eq!(value(&tlvs, 0x11), [0]);
    let offline = dms::GetOperatingModeResponse {
        mode: dms::OperatingMode::OFFLINE,
        offline_reason: Some(0x0002),
        hardware_restricted: None,
    };
    assert_eq!(value(&round_trip(&offline), 0x10), [2, 0]);

    let set = dms::SetOperatingMode {
        mode: dms::OperatingMode::LOW_POWER,
    };
    assert_eq!(round_trip(&set), [0x01, 1, 0, 1]);
    round_trip(&dms::SetOperatingModeResponse);
    assert!(dms::OperatingMode::LOW_POWER.radio_off());
    assert!(dms::OperatingMode::PERSISTENT_LOW_POWER.radio_off());
    assert!(!dms::OperatingMode::ONLINE.radio_off());
    assert_eq!(dms::OperatingMode::LOW_POWER.to_string(), "low-power");
    assert_eq!(dms::OperatingMode(42).to_string(), "42");

    round_trip(&dms::GetCapabilities);
    let caps = dms::GetCapabilitiesResponse {
        max_tx_channel_rate: 50_000_000,
        max_rx_channel_rate: 150_000_000,
        data_service: dms::DataServiceCapability::PS,
        sim: dms::SimCapability::SUPPORTED,
        radio_interfaces: vec![dms::RadioInterface::LTE, dms::RadioInterface::UMTS],
    };
    let tlvs = round_trip(&caps);
    let info = value(&tlvs, 0x01);
    assert_eq!(info.len(), 4 + 4 + 1 + 1 + 1 + 2);
    assert_eq!(&info[8..], [2, 2, 2, 8, 5]);
}

#[test]
fn nas_indication_switches() {
    let register = nas::RegisterIndications {
        serving_system_events: Some(true),
        system_info: Some(true),
        signal_info: Some(false),
        ..Default::default()
    };
    let tlvs = round_trip(&register);
    // Requests go out highest id first, as qmicli sends them.
    assert_eq!(tlvs, [0x19, 1, 0, 0, 0x18, 1, 0, 1, 0x13, 1, 0, 1]);
    round_trip(&nas::RegisterIndicationsResponse);

    let config = nas::ConfigSignalInfo {
        rssi_thresholds: Some(vec![-100, -80, -60]),
        lte_snr_thresholds: Some(vec![0, 100]),
        rsrq_thresholds: None,
        rsrp_thresholds: Some(vec![-110, -95]),
        lte_report: Some((2, 5)),
    };
    let tlvs = round_trip(&config);
    assert_eq!(value(&tlvs, 0x10), [3, 0x9c, 0xb0, 0xc4]);
    assert_eq!(value(&tlvs, 0x16), [2, 0x92, 0xff, 0xa1, 0xff]);
    assert_eq!(value(&tlvs, 0x17), [2, 5]);
    round_trip(&nas::ConfigSignalInfoResponse);
}

#[test]
fn nas_signal_strength_and_info() {
    let request = nas::GetSignalStrength {
        request_mask: Some(nas::signal_strength_request::RSSI | nas::signal_strength_request::LTE_RSRP),
    };
    assert_eq!(round_trip(&request), [0x10, 2, 0, 0x81, 0]);
    round_trip(&nas::GetSignalStrength::default());
    let strength = nas::GetSignalStrengthResponse {
        strength: nas::Measurement {
            value: -70,
            radio: nas::RadioInterface::LTE,
        },
        rssi: Some(vec![nas::Measurement {
            value: 70,
            radio: nas::RadioInterface::LTE,
        }]),
        rsrq: Some(nas::Measurement {
            value: -10,
            radio: nas::RadioInterface::LTE,
        }),
        lte_snr: Some(215),
        lte_rsrp: Some(-95),
    };
    let tlvs = round_trip(&strength);
    assert_eq!(value(&tlvs, 0x01), [0xba, 8]);
    assert_eq!(value(&tlvs, 0x11), [1, 0, 70, 8]);
    assert!(matches!(
        nas::GetSignalStrengthResponse::read_tlvs(&[]),
        Err(DecodeError::MissingTlv { tlv: 0x01, .. })
    ));

    round_trip(&nas::GetSignalInfo);
    let info = nas::SignalInfo {
        gsm: None,
        lte: Some(nas::LteSignal {
            rssi: -70,
            rsrq: -10,
            rsrp: -95,
            snr: 215,
        }),
        nr5g: Some(nas::Nr5gSignal { rsrp: -90, snr: 180 }),
        nr5g_rsrq: Some(-11),
    };
    let tlvs = round_trip(&nas::GetSignalInfoResponse(info));
    assert_eq!(value(&tlvs, 0x14), [0xba, 0xf6, 0xa1, 0xff, 0xd7, 0x00]);
    assert_eq!(value(&tlvs, 0x17), [0xa6, 0xff, 0xb4, 0x00]);
    round_trip(&nas::SignalInfoIndication(info));
    // A truncated LTE TLV is an error naming the field, not a panic or a silent default.
    assert!(matches!(
        nas::GetSignalInfoResponse::read_tlvs(&[0x14, 3, 0, 0xba, 0xf6, 0xa1]),
        Err(DecodeError::FieldTruncated {
            tlv: 0x14,
            offset: 2,
            needed: 2,
            ..
        })
    ));
}

fn serving_system() -> nas::ServingSystemInfo {
    nas::ServingSystemInfo {
        serving_system: nas::ServingSystem {
            registration_state: nas::RegistrationState::REGISTERED,
            cs_attach_state: nas::AttachState::ATTACHED,
            ps_attach_state: nas::AttachState::ATTACHED,
            selected_network: nas::NetworkType::THREEGPP,
            radio_interfaces: vec![nas::RadioInterface::LTE],
        },
        roaming_indicator: Some(nas::RoamingIndicator::OFF),
        data_service_capability: Some(vec![nas::DataCapability::LTE]),
        current_plmn: Some(nas::Plmn {
            mcc: 1,
            mnc: 1,
            description: "aiesim".into(),
        }),
        lac_3gpp: Some(0x2a),
        cid_3gpp: Some(0x0001_a2b3),
        lte_tac: Some(0x2a),
        mnc_includes_pcs_digit: Some((1, 1, false)),
    }
}

#[test]
fn nas_serving_system_response_and_indication_use_their_own_ids() {
    round_trip(&nas::GetServingSystem);
    let tlvs = round_trip(&nas::GetServingSystemResponse(serving_system()));
    assert_eq!(value(&tlvs, 0x01), [1, 1, 1, 2, 1, 8]);
    assert_eq!(value(&tlvs, 0x12), [1, 0, 1, 0, 6, b'a', b'i', b'e', b's', b'i', b'm']);
    assert_eq!(value(&tlvs, 0x1D), [0xb3, 0xa2, 0x01, 0x00]);
    assert_eq!(value(&tlvs, 0x24), [0x2a, 0]);
    let tlvs = round_trip(&nas::ServingSystemIndication(serving_system()));
    // The indication moves LAC, CID, TAC and the PCS digit to other ids.
    assert_eq!(value(&tlvs, 0x1E), [0xb3, 0xa2, 0x01, 0x00]);
    assert_eq!(value(&tlvs, 0x25), [0x2a, 0]);
    assert_eq!(value(&tlvs, 0x29), [1, 0, 1, 0, 0]);
    assert!(tlv::find(&tlvs, 0x24).unwrap().is_none());
    let searching = nas::ServingSystemInfo {
        serving_system: nas::ServingSystem {
            registration_state: nas::RegistrationState::NOT_REGISTERED_SEARCHING,
            cs_attach_state: nas::AttachState::DETACHED,
            ps_attach_state: nas::AttachState::DETACHED,
            selected_network: nas::NetworkType::UNKNOWN,
            radio_interfaces: vec![],
        },
        ..Default::default()
    };
    assert_eq!(round_trip(&nas::GetServingSystemResponse(searching)).len(), 7 + 3 + 5);
}

#[test]
fn nas_system_info_lte() {
    round_trip(&nas::GetSystemInfo);
    let info = nas::SystemInfo {
        lte_service_status: Some(nas::ServiceStatusInfo {
            status: nas::ServiceStatus::AVAILABLE,
            true_status: nas::ServiceStatus::AVAILABLE,
            preferred_data_path: true,
        }),
        lte_system_info: Some(nas::LteSystemInfo {
            domain: Some(nas::ServiceDomain::CS_PS),
            service_capability: Some(nas::ServiceDomain::CS_PS),
            roaming_status: Some(nas::RoamingStatus::OFF),
            forbidden: Some(false),
            lac: None,
            cid: Some(0x0001_a2b3),
            registration_reject: None,
            network: Some(("001".into(), "01".into())),
            tac: Some(0x2a),
        }),
    };
    let tlvs = round_trip(&nas::GetSystemInfoResponse(info.clone()));
    assert_eq!(value(&tlvs, 0x14), [2, 2, 1]);
    let lte = value(&tlvs, 0x19);
    assert_eq!(lte.len(), 29, "LTE System Info v2 is 29 bytes");
    assert_eq!(&lte[..8], [1, 3, 1, 3, 1, 0, 1, 0]);
    assert_eq!(&lte[8..11], [0, 0, 0], "an invalid LAC is zeros");
    assert_eq!(&lte[11..16], [1, 0xb3, 0xa2, 0x01, 0x00]);
    assert_eq!(&lte[19..26], [1, b'0', b'0', b'1', b'0', b'1', 0]);
    assert_eq!(&lte[26..], [1, 0x2a, 0]);
    round_trip(&nas::SystemInfoIndication(info));

    // Modems pad a two-digit MNC with 0xFF; it reads the same.
    let mut padded = lte.clone();
    padded[25] = 0xFF;
    let mut section = tlv::Writer::new();
    section.put(0x19, &padded).unwrap();
    let read = nas::GetSystemInfoResponse::read_tlvs(section.as_bytes()).unwrap();
    assert_eq!(
        read.0.lte_system_info.unwrap().network,
        Some(("001".into(), "01".into()))
    );
}

#[test]
fn wds_session_messages() {
    let events = wds::SetEventReport {
        data_call_status: Some(true),
        channel_rate: Some(false),
        ..Default::default()
    };
    assert_eq!(round_trip(&events), [0x17, 1, 0, 1, 0x10, 1, 0, 0]);
    round_trip(&wds::SetEventReportResponse);
    round_trip(&wds::EventReportIndication {
        tx_bytes_ok: Some(1 << 33),
        rx_bytes_ok: Some(5),
        data_call_status: Some(wds::DataCallStatus::ACTIVATED),
    });

    let start = wds::StartNetwork {
        apn: Some("internet".into()),
        authentication: Some(wds::authentication::PAP | wds::authentication::CHAP),
        username: Some("user".into()),
        password: Some("secret".into()),
        ip_family: Some(wds::IpFamily::IPV4),
        profile_index_3gpp: Some(1),
        autoconnect: Some(false),
    };
    let tlvs = round_trip(&start);
    assert_eq!(value(&tlvs, 0x14), b"internet");
    assert_eq!(value(&tlvs, 0x19), [4]);
    assert_eq!(value(&tlvs, 0x16), [3]);
    round_trip(&wds::StartNetwork::default());
    let started = wds::StartNetworkResponse {
        packet_data_handle: Some(0x1000_0001),
        ..Default::default()
    };
    assert_eq!(value(&round_trip(&started), 0x01), [1, 0, 0, 0x10]);

    // A failed call: result CallFailed and the reasons, no handle.
    let failed = wds::StartNetworkResponse {
        packet_data_handle: None,
        call_end_reason: Some(wds::CallEndReason::GENERIC_NO_SERVICE),
        verbose_call_end_reason: Some(wds::VerboseCallEndReason {
            kind: wds::VerboseCallEndReasonType::THREEGPP,
            reason: 33,
        }),
    };
    let request = start.to_frame(3, 9).unwrap();
    let frame = failed.to_error_response(&request, ProtocolError::CallFailed).unwrap();
    let frame = Frame::decode(&frame.encode().unwrap()).unwrap();
    assert_eq!(
        QmiResult::decode(&frame.tlvs).unwrap(),
        QmiResult::Failure(ProtocolError::CallFailed)
    );
    assert_eq!(wds::StartNetworkResponse::from_frame(&frame).unwrap(), failed);
    assert_eq!(value(&frame.tlvs, 0x11), [6, 0, 33, 0]);

    let stop = wds::StopNetwork {
        packet_data_handle: 0x1000_0001,
        disable_autoconnect: Some(true),
    };
    assert_eq!(round_trip(&stop), [0x10, 1, 0, 1, 0x01, 4, 0, 1, 0, 0, 0x10]);
    round_trip(&wds::StopNetworkResponse);

    round_trip(&wds::GetPacketServiceStatus);
    let status = wds::GetPacketServiceStatusResponse {
        connection_status: wds::ConnectionStatus::CONNECTED,
    };
    assert_eq!(value(&round_trip(&status), 0x01), [2]);
    let down = wds::PacketServiceStatusIndication {
        connection_status: wds::ConnectionStatus::DISCONNECTED,
        reconfiguration_required: false,
        call_end_reason: Some(wds::CallEndReason::GENERIC_NO_SERVICE),
        verbose_call_end_reason: Some(wds::VerboseCallEndReason {
            kind: wds::VerboseCallEndReasonType::THREEGPP,
            reason: 36,
        }),
        ip_family: Some(wds::IpFamily::IPV4),
        extended_technology_preference: None,
    };
    let tlvs = round_trip(&down);
    assert_eq!(value(&tlvs, 0x01), [1, 0]);
    assert_eq!(value(&tlvs, 0x10), [3, 0]);
    assert_eq!(value(&tlvs, 0x12), [4]);

    round_trip(&wds::GetChannelRates);
    let rates = wds::GetChannelRatesResponse {
        current_tx_bps: 5_000_000,
        current_rx_bps: 20_000_000,
        max_tx_bps: 50_000_000,
        max_rx_bps: 150_000_000,
    };
    let tlvs = round_trip(&rates);
    // Four little-endian u32 in one TLV: current TX, current RX, max TX, max RX.
    assert_eq!(
        value(&tlvs, 0x01),
        [
            0x40, 0x4B, 0x4C, 0x00, 0x00, 0x2D, 0x31, 0x01, 0x80, 0xF0, 0xFA, 0x02, 0x80, 0xD1, 0xF0, 0x08
        ]
    );
    // A short rates TLV is an error, not zeros.
    assert!(wds::GetChannelRatesResponse::read_tlvs(&[0x01, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());

    round_trip(&wds::SetIpFamily {
        preference: wds::IpFamily::IPV6,
    });
    round_trip(&wds::SetIpFamilyResponse);
}

#[test]
fn wds_current_settings_addresses() {
    let request = wds::GetCurrentSettings {
        requested_settings: wds::requested_settings::IP_ADDRESS | wds::requested_settings::MTU,
    };
    assert_eq!(round_trip(&request), [0x10, 4, 0, 0x00, 0x21, 0, 0]);
    let settings = wds::GetCurrentSettingsResponse {
        profile_name: Some("default".into()),
        pdp_type: Some(0),
        apn: Some("internet".into()),
        primary_dns: Some(Ipv4Addr::new(192, 0, 2, 53)),
        secondary_dns: Some(Ipv4Addr::new(192, 0, 2, 54)),
        username: None,
        authentication: Some(0),
        ipv4_address: Some(Ipv4Addr::new(192, 0, 2, 2)),
        profile_id: Some((0, 1)),
        ipv4_gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ipv4_subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        ipv6_address: Some(("2001:db8::2".parse::<Ipv6Addr>().unwrap(), 64)),
        ipv6_gateway: Some(("2001:db8::1".parse::<Ipv6Addr>().unwrap(), 64)),
        ipv6_primary_dns: Some("2001:db8::53".parse().unwrap()),
        ipv6_secondary_dns: None,
        mtu: Some(1500),
        domain_names: Some(vec!["example.net".into(), "test".into()]),
        ip_family: Some(wds::IpFamily::IPV4),
    };
    let tlvs = round_trip(&settings);
    // libqmi reads a little-endian u32 and byte-swaps it into an in_addr.
    assert_eq!(value(&tlvs, 0x1E), [2, 2, 0, 192]);
    assert_eq!(value(&tlvs, 0x21), [0, 255, 255, 255]);
    let v6 = value(&tlvs, 0x25);
    assert_eq!((&v6[..4], v6[16]), (&[0x20, 0x01, 0x0d, 0xb8][..], 64));
    assert_eq!(value(&tlvs, 0x29), [0xdc, 0x05, 0, 0]);
    assert_eq!(&value(&tlvs, 0x2A)[..4], [2, 11, 0, b'e']);
    assert_eq!(value(&tlvs, 0x2B), [4]);
    assert!(matches!(
        wds::GetCurrentSettings::read_tlvs(&[]),
        Err(DecodeError::MissingTlv { tlv: 0x10, .. })
    ));
    round_trip(&wds::GetCurrentSettingsResponse::default());
}

#[test]
fn wda_data_format() {
    let set = wda::SetDataFormat {
        qos_format: Some(false),
        link_layer_protocol: Some(wda::LinkLayerProtocol::RAW_IP),
        uplink_aggregation: Some(wda::AggregationProtocol::QMAP),
        downlink_aggregation: Some(wda::AggregationProtocol::QMAP),
        ndp_signature: None,
        downlink_max_datagrams: Some(32),
        downlink_max_size: Some(32_768),
        endpoint: Some(wda::Endpoint {
            kind: wda::Endpoint::HSUSB,
            interface_number: 4,
        }),
        uplink_max_datagrams: Some(16),
        uplink_max_size: Some(8192),
    };
    let tlvs = round_trip(&set);
    assert_eq!(value(&tlvs, 0x11), [2, 0, 0, 0]);
    assert_eq!(value(&tlvs, 0x17), [2, 0, 0, 0, 4, 0, 0, 0]);
    assert_eq!(value(&tlvs, 0x1C), [0, 0x20, 0, 0]);
    let format = wda::DataFormat {
        qos_format: Some(false),
        link_layer_protocol: Some(wda::LinkLayerProtocol::RAW_IP),
        uplink_aggregation: Some(wda::AggregationProtocol::DISABLED),
        downlink_aggregation: Some(wda::AggregationProtocol::DISABLED),
        uplink_max_datagrams: Some(1),
        uplink_max_size: Some(1504),
        flow_control: Some(0),
        ..Default::default()
    };
    let tlvs = round_trip(&wda::SetDataFormatResponse(format));
    // In the answers 0x17/0x18 are the uplink limits, not the endpoint.
    assert_eq!(value(&tlvs, 0x17), [1, 0, 0, 0]);
    round_trip(&wda::GetDataFormatResponse(format));
    round_trip(&wda::GetDataFormat::default());
    let tlvs = round_trip(&wda::GetDataFormat {
        endpoint: Some(wda::Endpoint {
            kind: wda::Endpoint::HSUSB,
            interface_number: 0,
        }),
    });
    assert_eq!(value(&tlvs, 0x10).len(), 8);
    assert_eq!(wda::LinkLayerProtocol::RAW_IP.to_string(), "raw-ip");
}

fn card_status() -> uim::CardStatus {
    uim::CardStatus {
        index_gw_primary: 0x0000,
        index_1x_primary: uim::CardStatus::NO_INDEX,
        index_gw_secondary: uim::CardStatus::NO_INDEX,
        index_1x_secondary: uim::CardStatus::NO_INDEX,
        cards: vec![uim::Card {
            state: uim::CardState::PRESENT,
            upin_state: uim::PinState::NOT_INITIALIZED,
            upin_retries: 0,
            upuk_retries: 0,
            error: uim::CardError::UNKNOWN,
            applications: vec![uim::Application {
                kind: uim::ApplicationType::USIM,
                state: uim::ApplicationState::READY,
                personalization_state: uim::PersonalizationState::READY,
                aid: vec![0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02],
                pin1_state: uim::PinState::DISABLED,
                pin1_retries: 3,
                puk1_retries: 10,
                pin2_state: uim::PinState::ENABLED_NOT_VERIFIED,
                pin2_retries: 3,
                puk2_retries: 10,
                ..Default::default()
            }],
        }],
    }
}

#[test]
fn uim_card_and_slot_status() {
    let register = uim::RegisterEvents {
        mask: uim::events::CARD_STATUS | uim::events::PHYSICAL_SLOT_STATUS,
    };
    assert_eq!(round_trip(&register), [0x01, 4, 0, 0x11, 0, 0, 0]);
    round_trip(&uim::RegisterEventsResponse { mask: Some(0x11) });
    round_trip(&uim::RegisterEventsResponse::default());

    round_trip(&uim::GetCardStatus);
    let info = uim::CardStatusInfo {
        card_status: Some(card_status()),
    };
    let tlvs = round_trip(&uim::GetCardStatusResponse(info.clone()));
    let status = value(&tlvs, 0x10);
    // 4 indexes, card count, 5 card bytes, app count, 6 app bytes, AID, 7 PIN bytes.
    assert_eq!(status.len(), 8 + 1 + 5 + 1 + 6 + 1 + 7 + 7);
    assert_eq!(&status[..9], [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]);
    assert_eq!(&status[9..16], [1, 0, 0, 0, 0, 1, 2]);
    assert_eq!(status[16], 7, "the application is ready");
    round_trip(&uim::CardStatusIndication(info));

    round_trip(&uim::GetSlotStatus);
    let slots = uim::SlotStatus {
        physical_slot_status: Some(vec![uim::PhysicalSlotStatus {
            card_state: uim::PhysicalCardState::PRESENT,
            slot_state: uim::SlotState::ACTIVE,
            logical_slot: 1,
            iccid: vec![0x98, 0x88, 0x12, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0xf7],
        }]),
        physical_slot_information: Some(vec![uim::PhysicalSlotInformation {
            card_protocol: uim::CardProtocol::UICC,
            valid_applications: 1,
            atr: vec![0x3B, 0x9F, 0x96],
            is_euicc: true,
        }]),
        slot_eids: Some(vec![vec![0x89; 16]]),
    };
    let tlvs = round_trip(&uim::GetSlotStatusResponse(slots.clone()));
    assert_eq!(&value(&tlvs, 0x10)[..11], [1, 2, 0, 0, 0, 1, 0, 0, 0, 1, 10]);
    assert_eq!(value(&tlvs, 0x11), [1, 2, 0, 0, 0, 1, 3, 0x3B, 0x9F, 0x96, 1]);
    assert_eq!(&value(&tlvs, 0x12)[..3], [1, 16, 0x89]);
    round_trip(&uim::SlotStatusIndication(slots));
    round_trip(&uim::GetSlotStatusResponse::default());
}

#[test]
fn uim_channels_apdus_and_refresh() {
    let isd_r = vec![
        0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01, 0x00,
    ];
    let open = uim::OpenLogicalChannel {
        slot: 1,
        aid: Some(isd_r.clone()),
        file_control_information: None,
    };
    let tlvs = round_trip(&open);
    assert_eq!(value(&tlvs, 0x01), [1]);
    assert_eq!(value(&tlvs, 0x10)[0], 16);
    let opened = uim::ChannelResult {
        channel_id: Some(1),
        card_result: Some((0x90, 0x00)),
        select_response: Some(vec![0x6F, 0x12, 0x84, 0x10]),
    };
    let tlvs = round_trip(&uim::OpenLogicalChannelResponse(opened.clone()));
    assert_eq!(value(&tlvs, 0x11), [0x90, 0x00]);
    assert_eq!(value(&tlvs, 0x12), [4, 0x6F, 0x12, 0x84, 0x10]);

    let close = uim::LogicalChannel {
        slot: 1,
        channel_id: Some(1),
        terminate_application: Some(true),
        ..Default::default()
    };
    assert_eq!(round_trip(&close), [0x13, 1, 0, 1, 0x11, 1, 0, 1, 0x01, 1, 0, 1]);
    round_trip(&uim::LogicalChannelResponse(opened));
    round_trip(&uim::LogicalChannelResponse::default());

    let get_eid = uim::SendApdu {
        slot: 1,
        apdu: vec![0x81, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A],
        channel_id: Some(1),
        procedure_bytes: None,
    };
    let tlvs = round_trip(&get_eid);
    assert_eq!(&value(&tlvs, 0x02)[..3], [11, 0, 0x81]);
    let answer = uim::SendApduResponse {
        apdu_response: Some(vec![0xBF, 0x3E, 0x03, 0x5A, 0x01, 0x89, 0x90, 0x00]),
    };
    assert_eq!(&value(&round_trip(&answer), 0x10)[..2], [8, 0]);
    assert!(matches!(
        uim::SendApdu::read_tlvs(&[0x01, 1, 0, 1]),
        Err(DecodeError::MissingTlv { tlv: 0x02, .. })
    ));

    let refresh = uim::RefreshIndication {
        event: Some(uim::RefreshEvent {
            stage: uim::RefreshStage::START,
            mode: uim::RefreshMode::RESET,
            session_type: uim::SessionType::PRIMARY_GW_PROVISIONING,
            aid: vec![0xA0, 0x00],
            files: vec![uim::RefreshFile {
                file_id: 0x6F07,
                path: vec![0x00, 0x3F, 0xFF, 0x7F],
            }],
        }),
    };
    let tlvs = round_trip(&refresh);
    assert_eq!(
        value(&tlvs, 0x10),
        [1, 0, 0, 2, 0xA0, 0x00, 1, 0, 0x07, 0x6F, 4, 0x00, 0x3F, 0xFF, 0x7F]
    );
    round_trip(&uim::RefreshIndication::default());
}

#[test]
fn messages_refuse_frames_of_other_messages() {
    let frame = nas::GetSignalInfo.to_frame(1, 1).unwrap();
    assert!(matches!(
        nas::GetSystemInfo::from_frame(&frame),
        Err(DecodeError::WrongMessage { .. })
    ));
    // Same id, other kind: the Serving System request is not its indication.
    let frame = nas::GetServingSystem.to_frame(1, 1).unwrap();
    assert!(matches!(
        nas::ServingSystemIndication::from_frame(&frame),
        Err(DecodeError::WrongMessage { .. })
    ));
    assert_eq!(frame.service, Service::NAS);
}

/// Runs every parser on one TLV section; none may panic.
fn parse_everything(tlvs: &[u8]) {
    let _ = ctl::InternalProxyOpen::read_tlvs(tlvs);
    let _ = dms::GetOperatingModeResponse::read_tlvs(tlvs);
    let _ = dms::SetOperatingMode::read_tlvs(tlvs);
    let _ = dms::GetCapabilitiesResponse::read_tlvs(tlvs);
    let _ = nas::RegisterIndications::read_tlvs(tlvs);
    let _ = nas::GetSignalStrength::read_tlvs(tlvs);
    let _ = nas::GetSignalStrengthResponse::read_tlvs(tlvs);
    let _ = nas::GetServingSystemResponse::read_tlvs(tlvs);
    let _ = nas::ServingSystemIndication::read_tlvs(tlvs);
    let _ = nas::GetSystemInfoResponse::read_tlvs(tlvs);
    let _ = nas::SystemInfoIndication::read_tlvs(tlvs);
    let _ = nas::GetSignalInfoResponse::read_tlvs(tlvs);
    let _ = nas::SignalInfoIndication::read_tlvs(tlvs);
    let _ = nas::ConfigSignalInfo::read_tlvs(tlvs);
    let _ = wds::SetEventReport::read_tlvs(tlvs);
    let _ = wds::EventReportIndication::read_tlvs(tlvs);
    let _ = wds::StartNetwork::read_tlvs(tlvs);
    let _ = wds::StartNetworkResponse::read_tlvs(tlvs);
    let _ = wds::StopNetwork::read_tlvs(tlvs);
    let _ = wds::GetPacketServiceStatusResponse::read_tlvs(tlvs);
    let _ = wds::GetChannelRatesResponse::read_tlvs(tlvs);
    let _ = wds::PacketServiceStatusIndication::read_tlvs(tlvs);
    let _ = wds::GetCurrentSettings::read_tlvs(tlvs);
    let _ = wds::GetCurrentSettingsResponse::read_tlvs(tlvs);
    let _ = wds::SetIpFamily::read_tlvs(tlvs);
    let _ = wda::SetDataFormat::read_tlvs(tlvs);
    let _ = wda::SetDataFormatResponse::read_tlvs(tlvs);
    let _ = wda::GetDataFormat::read_tlvs(tlvs);
    let _ = wda::GetDataFormatResponse::read_tlvs(tlvs);
    let _ = uim::RegisterEvents::read_tlvs(tlvs);
    let _ = uim::RegisterEventsResponse::read_tlvs(tlvs);
    let _ = uim::GetCardStatusResponse::read_tlvs(tlvs);
    let _ = uim::CardStatusIndication::read_tlvs(tlvs);
    let _ = uim::GetSlotStatusResponse::read_tlvs(tlvs);
    let _ = uim::SlotStatusIndication::read_tlvs(tlvs);
    let _ = uim::OpenLogicalChannel::read_tlvs(tlvs);
    let _ = uim::OpenLogicalChannelResponse::read_tlvs(tlvs);
    let _ = uim::LogicalChannel::read_tlvs(tlvs);
    let _ = uim::LogicalChannelResponse::read_tlvs(tlvs);
    let _ = uim::SendApdu::read_tlvs(tlvs);
    let _ = uim::SendApduResponse::read_tlvs(tlvs);
    let _ = uim::RefreshIndication::read_tlvs(tlvs);
}

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
fn mutated_sections_never_panic() {
    // Seeds with deep structure: mutations there reach the nested arrays' bounds checks.
    let seeds = [
        round_trip(&uim::GetCardStatusResponse(uim::CardStatusInfo {
            card_status: Some(card_status()),
        })),
        round_trip(&nas::GetServingSystemResponse(serving_system())),
        round_trip(&wds::GetCurrentSettingsResponse {
            ipv6_address: Some((Ipv6Addr::LOCALHOST, 128)),
            domain_names: Some(vec!["a".into()]),
            ..Default::default()
        }),
        round_trip(&uim::RefreshIndication {
            event: Some(uim::RefreshEvent {
                files: vec![uim::RefreshFile::default()],
                ..Default::default()
            }),
        }),
    ];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..20_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..rng.next() % 4 {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            bytes.truncate((rng.next() as usize) % (bytes.len() + 1));
        }
        parse_everything(&bytes);
    }
}
