//! The QMI device model: CTL client ids, and DMS, NAS, WDS, WDA and UIM answered from and into
//! the [`World`], as a pure state machine.
//!
//! Indications go only to the clients that asked for them (NAS Register Indications, WDS Set
//! Event Report or the session they started, UIM Register Events). Every frame in and out is
//! logged hex-encoded at trace level (`RUST_LOG=aiesim_modemsim::qmi=trace`), which is how the
//! codec's captures of real `qmicli` traffic are taken.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use aiesim_qmi::{
    DecodeError, EncodeError, Frame, Message, MessageKind, ProtocolError, Service, Splitter,
    ctl::{self, ServiceVersion},
    dms, nas, uim, wda, wds,
    wds::requested_settings as requested,
};

use crate::{
    control,
    world::{Changes, ConnectError, Identity, Registration, UiccError, World},
};

/// The services this model answers, with the versions it reports (those of a recent modem).
const SERVICES: [ServiceVersion; 7] = [
    ServiceVersion {
        service: Service::CTL,
        major: 1,
        minor: 5,
    },
    ServiceVersion {
        service: Service::WDS,
        major: 1,
        minor: 67,
    },
    ServiceVersion {
        service: Service::DMS,
        major: 1,
        minor: 14,
    },
    ServiceVersion {
        service: Service::NAS,
        major: 1,
        minor: 25,
    },
    ServiceVersion {
        service: Service::UIM,
        major: 1,
        minor: 46,
    },
    ServiceVersion {
        service: Service::WDA,
        major: 1,
        minor: 16,
    },
    ServiceVersion {
        service: Service::UIM_HTTP,
        major: 1,
        minor: 0,
    },
];

/// The one slot the simulated modem has (UIM numbers slots from 1).
const SLOT: u8 = 1;
/// The USIM's AID as the card status reports it (ETSI TS 101 220 RID and the 3GPP USIM PIX).
const USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x06, 0x19, 0x00, 0x00,
];

/// What one client asked to be told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "one switch per kind of indication")]
struct Subscriptions {
    serving_system: bool,
    system_info: bool,
    signal_info: bool,
    /// Config Signal Info's RSSI thresholds: an indication goes out only when one is crossed.
    rssi_thresholds: Vec<i8>,
    /// The RSSI last reported to this client, to tell a crossing.
    last_rssi: Option<i8>,
    data_call_status: bool,
    /// UIM Register Events bits.
    uim_events: u32,
    /// WDS Set IP Family.
    ip_family: Option<wds::IpFamily>,
}

/// The data session a WDS client started, so its end can be reported to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    client_id: u8,
    handle: u32,
}

/// A simulated QMI modem.
pub struct Device {
    splitter: Splitter,
    /// Allocated client ids per service.
    clients: BTreeMap<Service, BTreeSet<u8>>,
    subscriptions: BTreeMap<(Service, u8), Subscriptions>,
    session: Option<Session>,
    /// The last radio-off mode set, reported while the radio stays off.
    radio_off_mode: Option<dms::OperatingMode>,
    /// What WDA Set Data Format agreed to.
    data_format: wda::DataFormat,
}

/// Why a request gets an error response; the QMI error code is what the client sees.
type Answer = Result<Frame, ProtocolError>;

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Device {
    pub fn new() -> Self {
        Self {
            splitter: Splitter::new(),
            clients: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            session: None,
            radio_off_mode: None,
            data_format: wda::DataFormat {
                qos_format: Some(false),
                link_layer_protocol: Some(wda::LinkLayerProtocol::RAW_IP),
                uplink_aggregation: Some(wda::AggregationProtocol::DISABLED),
                downlink_aggregation: Some(wda::AggregationProtocol::DISABLED),
                ..wda::DataFormat::default()
            },
        }
    }

    /// The answer to one request, or `None` for frames that get none (responses, indications).
    pub fn handle(&mut self, world: &mut World, request: &Frame) -> Option<Frame> {
        if request.kind != MessageKind::Request {
            tracing::warn!(kind = %request.kind, service = %request.service, "ignoring a frame that is not a request");
            return None;
        }
        let answer = if request.service == Service::CTL {
            self.handle_ctl(world, request)
        } else if self.is_client(request.service, request.client_id) {
            self.handle_service(world, request)
        } else {
            Err(ProtocolError::InvalidClientId)
        };
        Some(answer.unwrap_or_else(|error| {
            tracing::info!(
                service = %request.service,
                message_id = format_args!("{:#06x}", request.message_id),
                %error,
                "refusing a request"
            );
            Frame::error_response(request, error)
        }))
    }

    fn is_client(&self, service: Service, client_id: u8) -> bool {
        self.clients.get(&service).is_some_and(|ids| ids.contains(&client_id))
    }

    fn subscription(&mut self, service: Service, client_id: u8) -> &mut Subscriptions {
        self.subscriptions.entry((service, client_id)).or_default()
    }

    /// Indications for what changed, to the clients that registered for them.
    pub fn indications(&mut self, world: &World, changes: Changes) -> Vec<Frame> {
        let Changes {
            signal,
            registration,
            packet,
            data,
            card,
            radio,
        } = changes;
        let mut out = Vec::new();
        let mut send = |client_id: u8, frame: Result<Frame, EncodeError>| match frame {
            Ok(frame) => out.push(frame),
            Err(err) => tracing::error!(%err, client_id, "could not encode an indication"),
        };
        let serving = registration || packet || radio;
        let rssi = world.signal().map(|s| s.rssi_dbm);
        for (&(service, client_id), subs) in &mut self.subscriptions {
            match service {
                Service::NAS => {
                    if serving && subs.serving_system {
                        send(
                            client_id,
                            nas::ServingSystemIndication(serving_system(world)).to_frame(client_id, 0),
                        );
                    }
                    if serving && subs.system_info {
                        send(
                            client_id,
                            nas::SystemInfoIndication(system_info(world)).to_frame(client_id, 0),
                        );
                    }
                    if (signal || radio) && subs.signal_info && crossed(&subs.rssi_thresholds, subs.last_rssi, rssi) {
                        subs.last_rssi = rssi;
                        send(
                            client_id,
                            nas::SignalInfoIndication(signal_info(world)).to_frame(client_id, 0),
                        );
                    }
                }
                Service::WDS if data && subs.data_call_status => {
                    let status = if world.data.is_some() {
                        wds::DataCallStatus::ACTIVATED
                    } else {
                        wds::DataCallStatus::TERMINATED
                    };
                    let report = wds::EventReportIndication {
                        data_call_status: Some(status),
                        ..wds::EventReportIndication::default()
                    };
                    send(client_id, report.to_frame(client_id, 0));
                }
                Service::UIM if card => {
                    if subs.uim_events & uim::events::CARD_STATUS != 0 {
                        send(
                            client_id,
                            uim::CardStatusIndication(card_status(world)).to_frame(client_id, 0),
                        );
                    }
                    if subs.uim_events & uim::events::PHYSICAL_SLOT_STATUS != 0 {
                        send(
                            client_id,
                            uim::SlotStatusIndication(slot_status(world)).to_frame(client_id, 0),
                        );
                    }
                }
                _ => {}
            }
        }
        // The client that started the session hears when it ends, and why.
        if data {
            if let Some(session) = self.session {
                let up = world.data.as_ref().is_some_and(|d| d.handle == session.handle);
                if !up {
                    self.session = None;
                    let reason = if world.radio_on && world.registration.is_registered() {
                        wds::CallEndReason::GENERIC_CLIENT_END
                    } else {
                        wds::CallEndReason::GENERIC_NO_SERVICE
                    };
                    let ended = wds::PacketServiceStatusIndication {
                        connection_status: wds::ConnectionStatus::DISCONNECTED,
                        reconfiguration_required: false,
                        call_end_reason: Some(reason),
                        verbose_call_end_reason: Some(wds::VerboseCallEndReason {
                            kind: wds::VerboseCallEndReasonType::THREEGPP,
                            // TS 24.008 cause 36, regular deactivation.
                            reason: 36,
                        }),
                        ip_family: Some(wds::IpFamily::IPV4),
                        extended_technology_preference: None,
                    };
                    send(session.client_id, ended.to_frame(session.client_id, 0));
                }
            }
        }
        out
    }

    fn handle_ctl(&mut self, world: &World, request: &Frame) -> Answer {
        match request.message_id {
            ctl::GET_VERSION_INFO => {
                read::<ctl::GetVersionInfo>(request)?;
                respond(
                    &ctl::GetVersionInfoResponse {
                        services: SERVICES.to_vec(),
                    },
                    request,
                )
            }
            ctl::ALLOCATE_CID => {
                let ctl::AllocateCid { service } = read(request)?;
                if service == Service::CTL || !SERVICES.iter().any(|s| s.service == service) {
                    return Err(ProtocolError::InvalidServiceType);
                }
                let ids = self.clients.entry(service).or_default();
                if ids.len() >= world.faults.max_clients_per_service {
                    return Err(ProtocolError::ClientIdsExhausted);
                }
                // Lowest free id, never 0 (CTL's) nor 0xFF (broadcast).
                let client_id = (1..=254u8)
                    .find(|id| !ids.contains(id))
                    .ok_or(ProtocolError::ClientIdsExhausted)?;
                ids.insert(client_id);
                tracing::info!(%service, client_id, "allocated a client id");
                respond(&ctl::AllocateCidResponse { service, client_id }, request)
            }
            ctl::RELEASE_CID => {
                let ctl::ReleaseCid { service, client_id } = read(request)?;
                let released = self.clients.get_mut(&service).is_some_and(|ids| ids.remove(&client_id));
                if !released {
                    return Err(ProtocolError::InvalidClientId);
                }
                self.subscriptions.remove(&(service, client_id));
                if service == Service::WDS && self.session.is_some_and(|s| s.client_id == client_id) {
                    // The session outlives its client, as on modems; nobody hears its end.
                    self.session = None;
                }
                tracing::info!(%service, client_id, "released a client id");
                respond(&ctl::ReleaseCidResponse { service, client_id }, request)
            }
            ctl::SYNC => {
                read::<ctl::Sync>(request)?;
                self.clients.clear();
                self.subscriptions.clear();
                self.session = None;
                tracing::info!("sync: released every client id");
                respond(&ctl::SyncResponse, request)
            }
            ctl::INTERNAL_PROXY_OPEN => {
                let ctl::InternalProxyOpen { device_path } = read(request)?;
                tracing::info!(device_path, "a qmi-proxy handshake reached the modem; accepting it");
                respond(&ctl::InternalProxyOpenResponse, request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn handle_service(&mut self, world: &mut World, request: &Frame) -> Answer {
        match request.service {
            Service::DMS => self.handle_dms(world, request),
            Service::NAS => self.handle_nas(world, request),
            Service::WDS => self.handle_wds(world, request),
            Service::WDA => self.handle_wda(request),
            Service::UIM => self.handle_uim(world, request),
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn handle_dms(&mut self, world: &mut World, request: &Frame) -> Answer {
        let Identity {
            imei,
            manufacturer,
            model,
            revision,
        } = &world.identity;
        match request.message_id {
            dms::GET_IDS => {
                read::<dms::GetIds>(request)?;
                let ids = dms::GetIdsResponse {
                    esn: None,
                    imei: Some(imei.clone()),
                    meid: None,
                };
                respond(&ids, request)
            }
            dms::GET_MANUFACTURER => {
                read::<dms::GetManufacturer>(request)?;
                let manufacturer = manufacturer.clone();
                respond(&dms::GetManufacturerResponse { manufacturer }, request)
            }
            dms::GET_MODEL => {
                read::<dms::GetModel>(request)?;
                respond(&dms::GetModelResponse { model: model.clone() }, request)
            }
            dms::GET_REVISION => {
                read::<dms::GetRevision>(request)?;
                let revision = revision.clone();
                respond(&dms::GetRevisionResponse { revision }, request)
            }
            dms::GET_CAPABILITIES => {
                read::<dms::GetCapabilities>(request)?;
                let caps = dms::GetCapabilitiesResponse {
                    max_tx_channel_rate: 50_000_000,
                    max_rx_channel_rate: 150_000_000,
                    data_service: dms::DataServiceCapability::PS,
                    sim: dms::SimCapability::SUPPORTED,
                    radio_interfaces: vec![dms::RadioInterface::LTE],
                };
                respond(&caps, request)
            }
            dms::GET_OPERATING_MODE => {
                read::<dms::GetOperatingMode>(request)?;
                let mode = if world.radio_on {
                    dms::OperatingMode::ONLINE
                } else {
                    self.radio_off_mode.unwrap_or(dms::OperatingMode::LOW_POWER)
                };
                let answer = dms::GetOperatingModeResponse {
                    mode,
                    offline_reason: (mode == dms::OperatingMode::OFFLINE).then_some(0),
                    hardware_restricted: Some(false),
                };
                respond(&answer, request)
            }
            dms::SET_OPERATING_MODE => {
                let dms::SetOperatingMode { mode } = read(request)?;
                self.set_operating_mode(world, mode)?;
                respond(&dms::SetOperatingModeResponse, request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn set_operating_mode(&mut self, world: &mut World, mode: dms::OperatingMode) -> Result<(), ProtocolError> {
        match mode {
            dms::OperatingMode::ONLINE => {
                // As on modems, only a reset leaves offline.
                if self.radio_off_mode == Some(dms::OperatingMode::OFFLINE) {
                    return Err(ProtocolError::InvalidTransition);
                }
                self.radio_off_mode = None;
                world.set_radio(true);
            }
            dms::OperatingMode::RESET => {
                self.radio_off_mode = None;
                world.reset();
            }
            dms::OperatingMode::LOW_POWER
            | dms::OperatingMode::PERSISTENT_LOW_POWER
            | dms::OperatingMode::MODE_ONLY_LOW_POWER
            | dms::OperatingMode::OFFLINE => {
                self.radio_off_mode = Some(mode);
                world.set_radio(false);
            }
            _ => return Err(ProtocolError::InvalidArgument),
        }
        tracing::info!(%mode, "operating mode set");
        Ok(())
    }

    fn handle_nas(&mut self, world: &World, request: &Frame) -> Answer {
        match request.message_id {
            nas::REGISTER_INDICATIONS => {
                let register: nas::RegisterIndications = read(request)?;
                let subs = self.subscription(Service::NAS, request.client_id);
                let switches = [
                    (register.serving_system_events, &mut subs.serving_system),
                    (register.system_info, &mut subs.system_info),
                    (register.signal_info, &mut subs.signal_info),
                ];
                for (asked, switch) in switches {
                    if let Some(on) = asked {
                        *switch = on;
                    }
                }
                respond(&nas::RegisterIndicationsResponse, request)
            }
            nas::CONFIG_SIGNAL_INFO => {
                let config: nas::ConfigSignalInfo = read(request)?;
                let subs = self.subscription(Service::NAS, request.client_id);
                subs.rssi_thresholds = config.rssi_thresholds.unwrap_or_default();
                subs.last_rssi = None;
                respond(&nas::ConfigSignalInfoResponse, request)
            }
            nas::GET_SIGNAL_STRENGTH => {
                read::<nas::GetSignalStrength>(request)?;
                let signal = world.signal().ok_or(ProtocolError::NoRadio)?;
                let lte = nas::RadioInterface::LTE;
                let answer = nas::GetSignalStrengthResponse {
                    strength: nas::Measurement {
                        value: signal.rssi_dbm,
                        radio: lte,
                    },
                    rssi: Some(vec![nas::Measurement {
                        value: signal.rssi_dbm.unsigned_abs(),
                        radio: lte,
                    }]),
                    rsrq: Some(nas::Measurement {
                        value: signal.rsrq_db,
                        radio: lte,
                    }),
                    lte_snr: Some(signal.snr_tenth_db),
                    lte_rsrp: Some(signal.rsrp_dbm),
                };
                respond(&answer, request)
            }
            nas::GET_SERVING_SYSTEM => {
                read::<nas::GetServingSystem>(request)?;
                respond(&nas::GetServingSystemResponse(serving_system(world)), request)
            }
            nas::GET_SYSTEM_INFO => {
                read::<nas::GetSystemInfo>(request)?;
                respond(&nas::GetSystemInfoResponse(system_info(world)), request)
            }
            nas::GET_SIGNAL_INFO => {
                read::<nas::GetSignalInfo>(request)?;
                respond(&nas::GetSignalInfoResponse(signal_info(world)), request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn handle_wds(&mut self, world: &mut World, request: &Frame) -> Answer {
        match request.message_id {
            wds::SET_EVENT_REPORT => {
                let report: wds::SetEventReport = read(request)?;
                if let Some(on) = report.data_call_status {
                    self.subscription(Service::WDS, request.client_id).data_call_status = on;
                }
                respond(&wds::SetEventReportResponse, request)
            }
            wds::SET_IP_FAMILY => {
                let wds::SetIpFamily { preference } = read(request)?;
                self.subscription(Service::WDS, request.client_id).ip_family = Some(preference);
                respond(&wds::SetIpFamilyResponse, request)
            }
            wds::START_NETWORK => {
                let start: wds::StartNetwork = read(request)?;
                self.start_network(world, request, &start)
            }
            wds::STOP_NETWORK => {
                let wds::StopNetwork { packet_data_handle, .. } = read(request)?;
                // 0xFFFFFFFF names the autoconnect session, i.e. whichever is up.
                let handle = (packet_data_handle != u32::MAX).then_some(packet_data_handle);
                world.disconnect(handle).map_err(|_| ProtocolError::InvalidHandle)?;
                tracing::info!(packet_data_handle, "data session stopped");
                respond(&wds::StopNetworkResponse, request)
            }
            wds::GET_PACKET_SERVICE_STATUS => {
                read::<wds::GetPacketServiceStatus>(request)?;
                let connection_status = if world.data.is_some() {
                    wds::ConnectionStatus::CONNECTED
                } else {
                    wds::ConnectionStatus::DISCONNECTED
                };
                respond(&wds::GetPacketServiceStatusResponse { connection_status }, request)
            }
            wds::GET_CHANNEL_RATES => {
                read::<wds::GetChannelRates>(request)?;
                let bps = |rate: u64| u32::try_from(rate).unwrap_or(u32::MAX);
                let now = world.current_rates();
                let rates = wds::GetChannelRatesResponse {
                    current_tx_bps: bps(now.uplink_bps),
                    current_rx_bps: bps(now.downlink_bps),
                    max_tx_bps: bps(world.rates.uplink_bps),
                    max_rx_bps: bps(world.rates.downlink_bps),
                };
                respond(&rates, request)
            }
            wds::GET_CURRENT_SETTINGS => {
                let wds::GetCurrentSettings { requested_settings } = read(request)?;
                let session = world.data.as_ref().ok_or(ProtocolError::OutOfCall)?;
                let wants = |bit: u32| requested_settings & bit != 0;
                let mask = u32::MAX.checked_shl(32 - u32::from(session.prefix_len)).unwrap_or(0);
                let settings = wds::GetCurrentSettingsResponse {
                    apn: wants(requested::APN_NAME).then(|| session.apn.clone()),
                    primary_dns: wants(requested::DNS_ADDRESS).then_some(session.dns[0]),
                    secondary_dns: wants(requested::DNS_ADDRESS).then_some(session.dns[1]),
                    ipv4_address: wants(requested::IP_ADDRESS).then_some(session.address),
                    ipv4_gateway: wants(requested::GATEWAY_INFO).then_some(session.gateway),
                    ipv4_subnet_mask: wants(requested::GATEWAY_INFO).then_some(mask.into()),
                    mtu: wants(requested::MTU).then_some(session.mtu),
                    domain_names: wants(requested::DOMAIN_NAME_LIST).then(Vec::new),
                    ip_family: wants(requested::IP_FAMILY).then_some(wds::IpFamily::IPV4),
                    ..wds::GetCurrentSettingsResponse::default()
                };
                respond(&settings, request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn start_network(&mut self, world: &mut World, request: &Frame, start: &wds::StartNetwork) -> Answer {
        let family = start
            .ip_family
            .or(self.subscription(Service::WDS, request.client_id).ip_family);
        let failed = |reason: wds::CallEndReason, cause: i16| {
            let answer = wds::StartNetworkResponse {
                packet_data_handle: None,
                call_end_reason: Some(reason),
                verbose_call_end_reason: Some(wds::VerboseCallEndReason {
                    kind: wds::VerboseCallEndReasonType::THREEGPP,
                    reason: cause,
                }),
            };
            answer
                .to_error_response(request, ProtocolError::CallFailed)
                .map_err(|_| ProtocolError::Internal)
        };
        if family == Some(wds::IpFamily::IPV6) {
            // TS 24.008 cause 50: PDP type IPv4 only allowed.
            return failed(wds::CallEndReason::GENERIC_UNSPECIFIED, 50);
        }
        match world.connect(start.apn.as_deref().unwrap_or_default()) {
            Ok(session) => {
                tracing::info!(apn = session.apn, handle = session.handle, "data session started");
                self.session = Some(Session {
                    client_id: request.client_id,
                    handle: session.handle,
                });
                let answer = wds::StartNetworkResponse {
                    packet_data_handle: Some(session.handle),
                    ..wds::StartNetworkResponse::default()
                };
                respond(&answer, request)
            }
            Err(ConnectError::AlreadyConnected) => Err(ProtocolError::NoEffect),
            Err(ConnectError::NotConnected) => Err(ProtocolError::Internal),
            // TS 24.008 cause 27: missing or unknown APN.
            Err(ConnectError::BadApn) => failed(wds::CallEndReason::GENERIC_UNSPECIFIED, 27),
            Err(ConnectError::NoCard) => failed(wds::CallEndReason::GENERIC_NO_SERVICE, 29),
            Err(ConnectError::RadioOff | ConnectError::NotRegistered) => {
                failed(wds::CallEndReason::GENERIC_NO_SERVICE, 30)
            }
        }
    }

    fn handle_wda(&mut self, request: &Frame) -> Answer {
        match request.message_id {
            wda::SET_DATA_FORMAT => {
                let set: wda::SetDataFormat = read(request)?;
                let format = &mut self.data_format;
                if let Some(link) = set.link_layer_protocol {
                    format.link_layer_protocol = Some(link);
                }
                // QMAP is what this modem aggregates with; anything else it turns down to none.
                let supported = |p: wda::AggregationProtocol| {
                    if p == wda::AggregationProtocol::QMAP {
                        p
                    } else {
                        wda::AggregationProtocol::DISABLED
                    }
                };
                if let Some(ul) = set.uplink_aggregation {
                    format.uplink_aggregation = Some(supported(ul));
                }
                if let Some(dl) = set.downlink_aggregation {
                    format.downlink_aggregation = Some(supported(dl));
                }
                let aggregating = format.downlink_aggregation == Some(wda::AggregationProtocol::QMAP);
                format.downlink_max_datagrams = aggregating.then(|| set.downlink_max_datagrams.unwrap_or(32).min(32));
                format.downlink_max_size = aggregating.then(|| set.downlink_max_size.unwrap_or(32_768).min(32_768));
                respond(&wda::SetDataFormatResponse(*format), request)
            }
            wda::GET_DATA_FORMAT => {
                read::<wda::GetDataFormat>(request)?;
                respond(&wda::GetDataFormatResponse(self.data_format), request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }

    fn handle_uim(&mut self, world: &mut World, request: &Frame) -> Answer {
        match request.message_id {
            uim::REGISTER_EVENTS => {
                let uim::RegisterEvents { mask } = read(request)?;
                let supported = mask & (uim::events::CARD_STATUS | uim::events::PHYSICAL_SLOT_STATUS);
                self.subscription(Service::UIM, request.client_id).uim_events = supported;
                respond(&uim::RegisterEventsResponse { mask: Some(supported) }, request)
            }
            uim::GET_CARD_STATUS => {
                read::<uim::GetCardStatus>(request)?;
                respond(&uim::GetCardStatusResponse(card_status(world)), request)
            }
            uim::GET_SLOT_STATUS => {
                read::<uim::GetSlotStatus>(request)?;
                respond(&uim::GetSlotStatusResponse(slot_status(world)), request)
            }
            uim::OPEN_LOGICAL_CHANNEL => {
                let open: uim::OpenLogicalChannel = read(request)?;
                check_slot(open.slot)?;
                let aid = open.aid.ok_or(ProtocolError::MissingArgument)?;
                open_channel(world, request, &aid, uim::OpenLogicalChannelResponse)
            }
            uim::LOGICAL_CHANNEL => {
                let channel: uim::LogicalChannel = read(request)?;
                check_slot(channel.slot)?;
                match (channel.channel_id, channel.aid) {
                    (Some(id), _) => {
                        world.uicc.close_channel(id).map_err(|err| uicc_error(&err))?;
                        let closed = uim::ChannelResult {
                            channel_id: Some(id),
                            ..uim::ChannelResult::default()
                        };
                        respond(&uim::LogicalChannelResponse(closed), request)
                    }
                    // Without a channel the message opens one, like Open Logical Channel.
                    (None, Some(aid)) => open_channel(world, request, &aid, uim::LogicalChannelResponse),
                    (None, None) => Err(ProtocolError::MissingArgument),
                }
            }
            uim::SEND_APDU => {
                let send: uim::SendApdu = read(request)?;
                check_slot(send.slot)?;
                let response = world
                    .uicc
                    .transmit(send.channel_id.unwrap_or(0), &send.apdu)
                    .map_err(|err| uicc_error(&err))?;
                let answer = uim::SendApduResponse {
                    apdu_response: Some(response),
                };
                respond(&answer, request)
            }
            _ => Err(ProtocolError::InvalidQmiCommand),
        }
    }
}

/// Whether a Signal Info indication is due: always without thresholds, else on a crossing.
fn crossed(thresholds: &[i8], last: Option<i8>, now: Option<i8>) -> bool {
    match (last, now) {
        _ if thresholds.is_empty() => true,
        (Some(last), Some(now)) => thresholds.iter().any(|&t| (last < t) != (now < t)),
        (None, None) => false,
        _ => true,
    }
}

fn check_slot(slot: u8) -> Result<(), ProtocolError> {
    if slot == SLOT {
        Ok(())
    } else {
        Err(ProtocolError::InvalidArgument)
    }
}

fn uicc_error(err: &UiccError) -> ProtocolError {
    match err {
        UiccError::Absent => ProtocolError::DeviceNotReady,
        UiccError::Status(_) => ProtocolError::IncompatibleState,
    }
}

/// Opens a channel and selects `aid`; the card's refusal travels as its status words.
fn open_channel<M: Message>(
    world: &mut World,
    request: &Frame,
    aid: &[u8],
    wrap: impl Fn(uim::ChannelResult) -> M,
) -> Answer {
    match world.uicc.open_channel(aid) {
        Ok((channel, mut response)) => {
            let sw = split_status(&mut response);
            let opened = uim::ChannelResult {
                channel_id: Some(channel),
                card_result: Some(sw),
                select_response: Some(response),
            };
            tracing::info!(channel, "opened a logical channel");
            respond(&wrap(opened), request)
        }
        Err(UiccError::Status(sw)) => {
            let [sw1, sw2] = sw.to_be_bytes();
            let refused = uim::ChannelResult {
                card_result: Some((sw1, sw2)),
                ..uim::ChannelResult::default()
            };
            let error = if sw == crate::world::sw::NO_MORE_CHANNELS {
                ProtocolError::InsufficientResources
            } else {
                ProtocolError::IncompatibleState
            };
            wrap(refused)
                .to_error_response(request, error)
                .map_err(|_| ProtocolError::Internal)
        }
        Err(err @ UiccError::Absent) => Err(uicc_error(&err)),
    }
}

/// Takes SW1 SW2 off the end of a card response.
fn split_status(response: &mut Vec<u8>) -> (u8, u8) {
    let sw2 = response.pop().unwrap_or(0);
    let sw1 = response.pop().unwrap_or(0);
    (sw1, sw2)
}

fn serving_system(world: &World) -> nas::ServingSystemInfo {
    let registered = world.radio_on && world.registration.is_registered();
    let registration_state = match (world.radio_on, world.registration) {
        (true, Registration::Home | Registration::Roaming) => nas::RegistrationState::REGISTERED,
        (true, Registration::Searching) => nas::RegistrationState::NOT_REGISTERED_SEARCHING,
        (true, Registration::Denied) => nas::RegistrationState::REGISTRATION_DENIED,
        _ => nas::RegistrationState::NOT_REGISTERED,
    };
    let attach = |attached: bool| {
        if attached {
            nas::AttachState::ATTACHED
        } else {
            nas::AttachState::DETACHED
        }
    };
    let network = &world.network;
    nas::ServingSystemInfo {
        serving_system: nas::ServingSystem {
            registration_state,
            cs_attach_state: attach(registered),
            ps_attach_state: attach(registered && world.packet_attached),
            selected_network: if registered {
                nas::NetworkType::THREEGPP
            } else {
                nas::NetworkType::UNKNOWN
            },
            radio_interfaces: if registered {
                vec![nas::RadioInterface::LTE]
            } else {
                vec![]
            },
        },
        roaming_indicator: registered.then_some(if world.registration == Registration::Roaming {
            nas::RoamingIndicator::ON
        } else {
            nas::RoamingIndicator::OFF
        }),
        data_service_capability: registered.then(|| vec![nas::DataCapability::LTE]),
        current_plmn: registered.then(|| nas::Plmn {
            mcc: network.mcc,
            mnc: network.mnc,
            description: network.name.clone(),
        }),
        lac_3gpp: None,
        cid_3gpp: registered.then_some(network.cell_id),
        lte_tac: registered.then_some(network.tracking_area),
        mnc_includes_pcs_digit: registered.then_some((network.mcc, network.mnc, network.mnc_three_digits)),
    }
}

fn system_info(world: &World) -> nas::SystemInfo {
    let registered = world.radio_on && world.registration.is_registered();
    let status = match (world.radio_on, world.registration) {
        (false, _) => nas::ServiceStatus::POWER_SAVE,
        (true, Registration::Home | Registration::Roaming) => nas::ServiceStatus::AVAILABLE,
        (true, Registration::Denied) => nas::ServiceStatus::LIMITED,
        (true, Registration::Searching | Registration::NotRegistered) => nas::ServiceStatus::NONE,
    };
    let network = &world.network;
    let mnc = if network.mnc_three_digits {
        format!("{:03}", network.mnc)
    } else {
        format!("{:02}", network.mnc)
    };
    nas::SystemInfo {
        lte_service_status: Some(nas::ServiceStatusInfo {
            status,
            true_status: status,
            preferred_data_path: false,
        }),
        lte_system_info: registered.then(|| nas::LteSystemInfo {
            domain: Some(nas::ServiceDomain::CS_PS),
            service_capability: Some(nas::ServiceDomain::CS_PS),
            roaming_status: Some(if world.registration == Registration::Roaming {
                nas::RoamingStatus::ON
            } else {
                nas::RoamingStatus::OFF
            }),
            forbidden: Some(false),
            lac: None,
            cid: Some(network.cell_id),
            registration_reject: None,
            network: Some((format!("{:03}", network.mcc), mnc)),
            tac: Some(network.tracking_area),
        }),
    }
}

fn signal_info(world: &World) -> nas::SignalInfo {
    nas::SignalInfo {
        lte: world.signal().map(|s| nas::LteSignal {
            rssi: s.rssi_dbm,
            rsrq: s.rsrq_db,
            rsrp: s.rsrp_dbm,
            snr: s.snr_tenth_db,
        }),
        ..nas::SignalInfo::default()
    }
}

fn card_status(world: &World) -> uim::CardStatusInfo {
    let present = world.uicc.present;
    let card = uim::Card {
        state: if present {
            uim::CardState::PRESENT
        } else {
            uim::CardState::ABSENT
        },
        upin_state: uim::PinState::NOT_INITIALIZED,
        upin_retries: 0,
        upuk_retries: 0,
        error: if present {
            uim::CardError::UNKNOWN
        } else {
            uim::CardError::NO_ATR_RECEIVED
        },
        applications: if present {
            vec![uim::Application {
                kind: uim::ApplicationType::USIM,
                state: uim::ApplicationState::READY,
                personalization_state: uim::PersonalizationState::READY,
                aid: USIM_AID.to_vec(),
                pin1_state: uim::PinState::DISABLED,
                pin1_retries: 3,
                puk1_retries: 10,
                pin2_state: uim::PinState::ENABLED_NOT_VERIFIED,
                pin2_retries: 3,
                puk2_retries: 10,
                ..uim::Application::default()
            }]
        } else {
            vec![]
        },
    };
    uim::CardStatusInfo {
        card_status: Some(uim::CardStatus {
            index_gw_primary: if present { 0x0000 } else { uim::CardStatus::NO_INDEX },
            index_1x_primary: uim::CardStatus::NO_INDEX,
            index_gw_secondary: uim::CardStatus::NO_INDEX,
            index_1x_secondary: uim::CardStatus::NO_INDEX,
            cards: vec![card],
        }),
    }
}

/// An ICCID's digits as the card stores them: BCD, low nibble first, padded with F.
fn iccid_bytes(iccid: &str) -> Vec<u8> {
    let digits: Vec<u8> = iccid.bytes().filter(u8::is_ascii_digit).map(|d| d - b'0').collect();
    digits
        .chunks(2)
        .map(|pair| pair[0] | (pair.get(1).copied().unwrap_or(0xF) << 4))
        .collect()
}

fn slot_status(world: &World) -> uim::SlotStatus {
    let uicc = &world.uicc;
    let present = uicc.present;
    uim::SlotStatus {
        physical_slot_status: Some(vec![uim::PhysicalSlotStatus {
            card_state: if present {
                uim::PhysicalCardState::PRESENT
            } else {
                uim::PhysicalCardState::ABSENT
            },
            slot_state: uim::SlotState::ACTIVE,
            logical_slot: SLOT,
            iccid: if present { iccid_bytes(&uicc.iccid) } else { vec![] },
        }]),
        physical_slot_information: Some(vec![uim::PhysicalSlotInformation {
            card_protocol: if present {
                uim::CardProtocol::UICC
            } else {
                uim::CardProtocol::UNKNOWN
            },
            valid_applications: u8::from(present),
            atr: if present { uicc.atr() } else { vec![] },
            is_euicc: present,
        }]),
        slot_eids: Some(vec![if present { uicc.eid.to_vec() } else { vec![] }]),
    }
}

/// Reads a request's TLVs, mapping what went wrong to the QMI error a modem would answer.
fn read<M: Message>(request: &Frame) -> Result<M, ProtocolError> {
    M::from_frame(request).map_err(|err| {
        tracing::warn!(message = M::NAME, %err, "malformed request");
        match err {
            DecodeError::MissingTlv { .. } => ProtocolError::MissingArgument,
            _ => ProtocolError::MalformedMessage,
        }
    })
}

fn respond<M: Message>(message: &M, request: &Frame) -> Answer {
    message.to_response(request).map_err(|err: EncodeError| {
        tracing::error!(message = M::NAME, %err, "could not encode the answer");
        ProtocolError::Internal
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn encode_all(frames: Vec<Frame>) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        .filter_map(|frame| {
            frame
                .encode()
                .inspect(|bytes| tracing::trace!(direction = "out", frame = hex(bytes), "qmi frame"))
                .inspect_err(|err| tracing::error!(%err, "could not encode a frame"))
                .ok()
        })
        .collect()
}

impl control::Device for Device {
    fn changed(&mut self, world: &World, changes: Changes) -> Vec<Vec<u8>> {
        encode_all(self.indications(world, changes))
    }

    fn reset(&mut self) {
        // A reset modem knows no clients and has no half-read frame.
        *self = Self::new();
    }

    fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .clients
            .iter()
            .map(|(service, ids)| {
                let ids: Vec<String> = ids.iter().map(u8::to_string).collect();
                format!("clients {service} {}", ids.join(","))
            })
            .collect();
        if let Some(Session { client_id, handle }) = self.session {
            lines.push(format!("session WDS client {client_id} handle {handle:#010x}"));
        }
        lines
    }

    fn receive(&mut self, world: &mut World, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut answers = Vec::new();
        while !bytes.is_empty() {
            let taken = self.splitter.push(bytes);
            bytes = &bytes[taken..];
            while let Some(frame) = self.splitter.next_frame() {
                if let Ok(frame) = &frame {
                    tracing::trace!(direction = "in", frame = hex(frame), "qmi frame");
                }
                let request = match frame.and_then(|frame| Frame::decode(&frame)) {
                    Ok(request) => request,
                    Err(err) => {
                        tracing::warn!(%err, "dropping bytes that are not a usable QMI frame");
                        continue;
                    }
                };
                tracing::debug!(?request, "request");
                answers.extend(self.handle(world, &request));
            }
        }
        encode_all(answers)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use aiesim_qmi::{CTL_CLIENT_ID as CTL, QmiResult, Request};

    use super::*;
    use crate::control::Device as _;
    use crate::world::ISD_R_AID;

    fn device() -> (Device, World) {
        (Device::new(), crate::world::tests::world())
    }

    fn call<R: Request>(
        (device, world): &mut (Device, World),
        client_id: u8,
        request: &R,
    ) -> Result<R::Response, ProtocolError> {
        let frame = request.to_frame(client_id, 1).unwrap();
        let answer = device.handle(world, &frame).unwrap();
        assert_eq!((answer.transaction, answer.kind), (1, MessageKind::Response));
        QmiResult::decode(&answer.tlvs).unwrap().into_result()?;
        Ok(R::Response::from_frame(&answer).unwrap())
    }

    #[test]
    fn answers_the_qmicli_allocation_byte_for_byte() {
        let mut device = device();
        let (device, world) = &mut device;
        let answers = device.receive(
            world,
            &[
                0x01, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x22, 0x00, 0x04, 0x00, 0x01, 0x01, 0x00, 0x02,
            ],
        );
        assert_eq!(
            answers,
            [vec![
                0x01, 0x17, 0x00, 0x80, 0x00, 0x00, 0x01, 0x01, 0x22, 0x00, 0x0c, 0x00, 0x02, 0x04, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x01, 0x02, 0x00, 0x02, 0x01
            ]]
        );
    }

    #[test]
    fn client_ids_are_tracked_per_service() {
        let mut device = device();
        let dms = Service::DMS;
        let first = call(&mut device, CTL, &ctl::AllocateCid { service: dms }).unwrap();
        let second = call(&mut device, CTL, &ctl::AllocateCid { service: dms }).unwrap();
        assert_eq!((first.client_id, second.client_id), (1, 2));

        let ids = call(&mut device, first.client_id, &dms::GetIds).unwrap();
        assert_eq!(ids.imei.as_deref(), Some("356938035643809"));
        assert_eq!(call(&mut device, 9, &dms::GetIds), Err(ProtocolError::InvalidClientId));

        call(
            &mut device,
            CTL,
            &ctl::ReleaseCid {
                service: dms,
                client_id: 1,
            },
        )
        .unwrap();
        assert_eq!(
            call(
                &mut device,
                CTL,
                &ctl::ReleaseCid {
                    service: dms,
                    client_id: 1
                }
            ),
            Err(ProtocolError::InvalidClientId)
        );
        assert_eq!(
            call(&mut device, 1, &dms::GetModel),
            Err(ProtocolError::InvalidClientId)
        );
        // The freed id is handed out again.
        let again = call(&mut device, CTL, &ctl::AllocateCid { service: dms }).unwrap();
        assert_eq!(again.client_id, 1);

        call(&mut device, CTL, &ctl::Sync).unwrap();
        assert_eq!(
            call(&mut device, 2, &dms::GetRevision),
            Err(ProtocolError::InvalidClientId)
        );
    }

    #[test]
    fn exhaustion_and_unknown_services_are_refused() {
        let mut device = device();
        for _ in 0..device.1.faults.max_clients_per_service {
            call(&mut device, CTL, &ctl::AllocateCid { service: Service::DMS }).unwrap();
        }
        assert_eq!(
            call(&mut device, CTL, &ctl::AllocateCid { service: Service::DMS }),
            Err(ProtocolError::ClientIdsExhausted)
        );
        assert_eq!(
            call(&mut device, CTL, &ctl::AllocateCid { service: Service::PDS }),
            Err(ProtocolError::InvalidServiceType)
        );
    }

    #[test]
    fn unknown_and_malformed_requests_get_errors() {
        let mut device = device();
        let dms = call(&mut device, CTL, &ctl::AllocateCid { service: Service::DMS }).unwrap();
        let unknown = Frame {
            service: Service::DMS,
            client_id: dms.client_id,
            kind: MessageKind::Request,
            transaction: 5,
            message_id: 0x0055,
            tlvs: vec![],
        };
        let answer = device.0.handle(&mut device.1, &unknown).unwrap();
        assert_eq!(
            QmiResult::decode(&answer.tlvs).unwrap(),
            QmiResult::Failure(ProtocolError::InvalidQmiCommand)
        );
        let missing = Frame {
            service: Service::CTL,
            client_id: CTL,
            message_id: ctl::ALLOCATE_CID,
            ..unknown.clone()
        };
        let answer = device.0.handle(&mut device.1, &missing).unwrap();
        assert_eq!(
            QmiResult::decode(&answer.tlvs).unwrap(),
            QmiResult::Failure(ProtocolError::MissingArgument)
        );
        let garbage = device.0.receive(&mut device.1, &[0xde, 0xad, 0xbe, 0xef]);
        assert!(garbage.is_empty());
    }

    /// Allocates a client id on `service`.
    fn client(device: &mut (Device, World), service: Service) -> u8 {
        call(device, CTL, &ctl::AllocateCid { service }).unwrap().client_id
    }

    /// The indications the world's pending changes produce.
    fn pending((device, world): &mut (Device, World)) -> Vec<Frame> {
        let changes = world.take_changes();
        device.indications(world, changes)
    }

    #[test]
    fn low_power_turns_the_radio_off_and_deregisters() {
        let mut device = device();
        let dms_id = client(&mut device, Service::DMS);
        let nas_id = client(&mut device, Service::NAS);
        let mode = call(&mut device, dms_id, &dms::GetOperatingMode).unwrap();
        assert_eq!(mode.mode, dms::OperatingMode::ONLINE);
        let serving = call(&mut device, nas_id, &nas::GetServingSystem).unwrap().0;
        assert_eq!(
            serving.serving_system.registration_state,
            nas::RegistrationState::REGISTERED
        );
        assert_eq!(serving.current_plmn.unwrap().mcc, 1);
        assert!(call(&mut device, nas_id, &nas::GetSignalInfo).unwrap().0.lte.is_some());

        let low_power = dms::SetOperatingMode {
            mode: dms::OperatingMode::LOW_POWER,
        };
        call(&mut device, dms_id, &low_power).unwrap();
        assert!(!device.1.radio_on);
        let mode = call(&mut device, dms_id, &dms::GetOperatingMode).unwrap();
        assert_eq!(mode.mode, dms::OperatingMode::LOW_POWER);
        let serving = call(&mut device, nas_id, &nas::GetServingSystem).unwrap().0;
        assert_eq!(
            serving.serving_system.registration_state,
            nas::RegistrationState::NOT_REGISTERED
        );
        assert_eq!(serving.current_plmn, None);
        assert_eq!(call(&mut device, nas_id, &nas::GetSignalInfo).unwrap().0.lte, None);
        let info = call(&mut device, nas_id, &nas::GetSystemInfo).unwrap().0;
        assert_eq!(info.lte_service_status.unwrap().status, nas::ServiceStatus::POWER_SAVE);
        assert_eq!(
            call(&mut device, nas_id, &nas::GetSignalStrength::default()),
            Err(ProtocolError::NoRadio)
        );

        let online = dms::SetOperatingMode {
            mode: dms::OperatingMode::ONLINE,
        };
        call(&mut device, dms_id, &online).unwrap();
        assert!(device.1.radio_on && device.1.registration.is_registered());
        // Offline is left only through a reset.
        let offline = dms::SetOperatingMode {
            mode: dms::OperatingMode::OFFLINE,
        };
        call(&mut device, dms_id, &offline).unwrap();
        let mode = call(&mut device, dms_id, &dms::GetOperatingMode).unwrap();
        assert_eq!((mode.mode, mode.offline_reason), (dms::OperatingMode::OFFLINE, Some(0)));
        assert_eq!(
            call(&mut device, dms_id, &online),
            Err(ProtocolError::InvalidTransition)
        );
        let reset = dms::SetOperatingMode {
            mode: dms::OperatingMode::RESET,
        };
        call(&mut device, dms_id, &reset).unwrap();
        assert!(device.1.radio_on);
    }

    #[test]
    fn a_data_session_through_wds() {
        let mut device = device();
        let wds_id = client(&mut device, Service::WDS);
        let status = call(&mut device, wds_id, &wds::GetPacketServiceStatus).unwrap();
        assert_eq!(status.connection_status, wds::ConnectionStatus::DISCONNECTED);
        let settings = wds::GetCurrentSettings {
            requested_settings: requested::IP_ADDRESS | requested::GATEWAY_INFO | requested::DNS_ADDRESS,
        };
        assert_eq!(call(&mut device, wds_id, &settings), Err(ProtocolError::OutOfCall));

        let start = wds::StartNetwork {
            apn: Some("internet".into()),
            ip_family: Some(wds::IpFamily::IPV4),
            ..wds::StartNetwork::default()
        };
        let handle = call(&mut device, wds_id, &start).unwrap().packet_data_handle.unwrap();
        assert_eq!(device.1.data.as_ref().map(|d| d.handle), Some(handle));
        assert_eq!(device.1.data.as_ref().unwrap().apn, "internet");
        assert_eq!(call(&mut device, wds_id, &start), Err(ProtocolError::NoEffect));
        let status = call(&mut device, wds_id, &wds::GetPacketServiceStatus).unwrap();
        assert_eq!(status.connection_status, wds::ConnectionStatus::CONNECTED);
        let current = call(&mut device, wds_id, &settings).unwrap();
        assert_eq!(current.ipv4_address, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(current.ipv4_subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(current.ipv4_gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(current.secondary_dns, Some(Ipv4Addr::new(192, 0, 2, 54)));
        assert_eq!(current.mtu, None, "only what was asked for");

        let wrong = wds::StopNetwork {
            packet_data_handle: handle + 1,
            disable_autoconnect: None,
        };
        assert_eq!(call(&mut device, wds_id, &wrong), Err(ProtocolError::InvalidHandle));
        let stop = wds::StopNetwork {
            packet_data_handle: handle,
            disable_autoconnect: None,
        };
        call(&mut device, wds_id, &stop).unwrap();
        assert_eq!(device.1.data, None);

        // No radio: the call fails with a reason, and the answer still says why.
        device.1.set_radio(false);
        let frame = start.to_frame(wds_id, 7).unwrap();
        let answer = device.0.handle(&mut device.1, &frame).unwrap();
        assert_eq!(
            QmiResult::decode(&answer.tlvs).unwrap(),
            QmiResult::Failure(ProtocolError::CallFailed)
        );
        let failed = wds::StartNetworkResponse::from_frame(&answer).unwrap();
        assert_eq!(failed.call_end_reason, Some(wds::CallEndReason::GENERIC_NO_SERVICE));
        assert_eq!(failed.packet_data_handle, None);
    }

    #[test]
    fn indications_go_only_to_clients_that_asked() {
        let mut device = device();
        let watcher = client(&mut device, Service::NAS);
        let bystander = client(&mut device, Service::NAS);
        let register = nas::RegisterIndications {
            serving_system_events: Some(true),
            system_info: Some(true),
            ..nas::RegisterIndications::default()
        };
        call(&mut device, watcher, &register).unwrap();
        device.1.tick();
        assert!(
            pending(&mut device).is_empty(),
            "signal drift is not a serving-system change"
        );

        device.1.set_radio(false);
        let sent = pending(&mut device);
        assert_eq!(sent.len(), 2);
        assert!(
            sent.iter()
                .all(|f| f.client_id == watcher && f.kind == MessageKind::Indication)
        );
        assert!(sent.iter().all(|f| f.client_id != bystander));
        let serving = nas::ServingSystemIndication::from_frame(&sent[0]).unwrap().0;
        assert_eq!(
            serving.serving_system.registration_state,
            nas::RegistrationState::NOT_REGISTERED
        );
        let info = nas::SystemInfoIndication::from_frame(&sent[1]).unwrap().0;
        assert_eq!(info.lte_system_info, None);

        // Signal Info with thresholds: only crossings are reported.
        let signal = client(&mut device, Service::NAS);
        call(
            &mut device,
            signal,
            &nas::RegisterIndications {
                signal_info: Some(true),
                ..nas::RegisterIndications::default()
            },
        )
        .unwrap();
        let thresholds = nas::ConfigSignalInfo {
            rssi_thresholds: Some(vec![-80]),
            ..nas::ConfigSignalInfo::default()
        };
        call(&mut device, signal, &thresholds).unwrap();
        device.1.set_radio(true);
        pending(&mut device);
        device.1.set_rssi(-70);
        assert!(pending(&mut device).is_empty(), "-70 dBm stays above -80 dBm");
        device.1.set_rssi(-90);
        let sent = pending(&mut device);
        assert_eq!(sent.len(), 1);
        let info = nas::SignalInfoIndication::from_frame(&sent[0]).unwrap().0;
        let now = device.1.signal().unwrap().rssi_dbm;
        assert!(now < -80);
        assert_eq!((sent[0].client_id, info.lte.unwrap().rssi), (signal, now));

        // CTL Sync forgets every subscription with the client ids.
        call(&mut device, CTL, &ctl::Sync).unwrap();
        device.1.set_radio(false);
        assert!(pending(&mut device).is_empty());
    }

    #[test]
    fn session_ends_and_card_changes_are_reported() {
        let mut device = device();
        let owner = client(&mut device, Service::WDS);
        let events = client(&mut device, Service::WDS);
        call(
            &mut device,
            events,
            &wds::SetEventReport {
                data_call_status: Some(true),
                ..wds::SetEventReport::default()
            },
        )
        .unwrap();
        let start = wds::StartNetwork {
            apn: Some("internet".into()),
            ..wds::StartNetwork::default()
        };
        call(&mut device, owner, &start).unwrap();
        let sent = pending(&mut device);
        assert_eq!(sent.len(), 1);
        let report = wds::EventReportIndication::from_frame(&sent[0]).unwrap();
        assert_eq!(
            (sent[0].client_id, report.data_call_status),
            (events, Some(wds::DataCallStatus::ACTIVATED))
        );

        let uim_id = client(&mut device, Service::UIM);
        let registered = call(
            &mut device,
            uim_id,
            &uim::RegisterEvents {
                mask: uim::events::CARD_STATUS | uim::events::SAP_CONNECTION,
            },
        )
        .unwrap();
        assert_eq!(registered.mask, Some(uim::events::CARD_STATUS));

        // The card goes: registration and the session with it.
        device.1.set_card_present(false);
        let sent = pending(&mut device);
        let ended = sent
            .iter()
            .find(|f| f.message_id == wds::PACKET_SERVICE_STATUS_INDICATION)
            .expect("the session's owner hears it end");
        assert_eq!(ended.client_id, owner);
        let ended = wds::PacketServiceStatusIndication::from_frame(ended).unwrap();
        assert_eq!(ended.connection_status, wds::ConnectionStatus::DISCONNECTED);
        assert_eq!(ended.call_end_reason, Some(wds::CallEndReason::GENERIC_NO_SERVICE));
        let card = sent
            .iter()
            .find(|f| f.service == Service::UIM)
            .expect("the UIM client hears of the card");
        let status = uim::CardStatusIndication::from_frame(card)
            .unwrap()
            .0
            .card_status
            .unwrap();
        assert_eq!(status.cards[0].state, uim::CardState::ABSENT);
        assert_eq!(status.index_gw_primary, uim::CardStatus::NO_INDEX);
        assert!(!sent.iter().any(|f| f.service == Service::NAS));
    }

    #[test]
    fn card_slot_and_channels_come_from_the_uicc() {
        let mut device = device();
        let uim_id = client(&mut device, Service::UIM);
        let status = call(&mut device, uim_id, &uim::GetCardStatus)
            .unwrap()
            .0
            .card_status
            .unwrap();
        let app = &status.cards[0].applications[0];
        assert_eq!(
            (app.kind, app.state),
            (uim::ApplicationType::USIM, uim::ApplicationState::READY)
        );
        let slots = call(&mut device, uim_id, &uim::GetSlotStatus).unwrap().0;
        assert_eq!(slots.slot_eids.unwrap()[0], device.1.uicc.eid);
        let slot = &slots.physical_slot_status.unwrap()[0];
        // 8988211000000000017 → 98 88 12 01 00 00 00 00 10 F7.
        assert_eq!(slot.iccid, [0x98, 0x88, 0x12, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0xF7]);
        let information = &slots.physical_slot_information.unwrap()[0];
        assert!(information.is_euicc);
        assert_eq!(information.atr, device.1.uicc.atr());

        let open = uim::OpenLogicalChannel {
            slot: 1,
            aid: Some(ISD_R_AID.to_vec()),
            file_control_information: None,
        };
        let opened = call(&mut device, uim_id, &open).unwrap().0;
        let channel = opened.channel_id.unwrap();
        assert_eq!(opened.card_result, Some((0x90, 0x00)));
        assert_eq!(opened.select_response.unwrap()[0], 0x6F);
        let get_eid = uim::SendApdu {
            slot: 1,
            apdu: vec![0x81, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A],
            channel_id: Some(channel),
            procedure_bytes: None,
        };
        let answer = call(&mut device, uim_id, &get_eid).unwrap().apdu_response.unwrap();
        assert_eq!(&answer[5..21], device.1.uicc.eid);
        assert_eq!(&answer[21..], [0x90, 0x00]);
        let close = uim::LogicalChannel {
            slot: 1,
            channel_id: Some(channel),
            ..uim::LogicalChannel::default()
        };
        call(&mut device, uim_id, &close).unwrap();
        assert_eq!(call(&mut device, uim_id, &close), Err(ProtocolError::IncompatibleState));
        assert_eq!(
            call(
                &mut device,
                uim_id,
                &uim::OpenLogicalChannel {
                    slot: 2,
                    ..open.clone()
                }
            ),
            Err(ProtocolError::InvalidArgument)
        );

        // An unknown AID: refused, with the card's 6A82 in the answer.
        let unknown = uim::OpenLogicalChannel {
            aid: Some(vec![0xA0, 0x01]),
            ..open
        };
        let answer = device
            .0
            .handle(&mut device.1, &unknown.to_frame(uim_id, 4).unwrap())
            .unwrap();
        assert_eq!(
            QmiResult::decode(&answer.tlvs).unwrap(),
            QmiResult::Failure(ProtocolError::IncompatibleState)
        );
        let refused = uim::OpenLogicalChannelResponse::from_frame(&answer).unwrap().0;
        assert_eq!((refused.card_result, refused.channel_id), (Some((0x6A, 0x82)), None));
    }

    #[test]
    fn wda_agrees_to_raw_ip_and_qmap_only() {
        let mut device = device();
        let wda_id = client(&mut device, Service::WDA);
        let format = call(&mut device, wda_id, &wda::GetDataFormat::default()).unwrap().0;
        assert_eq!(format.link_layer_protocol, Some(wda::LinkLayerProtocol::RAW_IP));
        let set = wda::SetDataFormat {
            link_layer_protocol: Some(wda::LinkLayerProtocol::RAW_IP),
            uplink_aggregation: Some(wda::AggregationProtocol::QMAP),
            downlink_aggregation: Some(wda::AggregationProtocol::MBIM),
            downlink_max_datagrams: Some(64),
            ..wda::SetDataFormat::default()
        };
        let agreed = call(&mut device, wda_id, &set).unwrap().0;
        assert_eq!(agreed.uplink_aggregation, Some(wda::AggregationProtocol::QMAP));
        assert_eq!(agreed.downlink_aggregation, Some(wda::AggregationProtocol::DISABLED));
        assert_eq!(agreed.downlink_max_datagrams, None);
        assert_eq!(
            call(&mut device, wda_id, &wda::GetDataFormat::default()).unwrap().0,
            agreed
        );
    }
}
