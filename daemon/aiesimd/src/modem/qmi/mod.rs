//! The daemon's QMI session: CTL Sync, one client id per service it uses, the identity, then
//! indications keep the state current until the port breaks or the daemon stops.
//!
//! Nothing here polls: signal, registration, card and packet-service changes arrive as
//! indications the session registered for, so an idle daemon sends the modem nothing. The
//! channel rates are asked for only alongside those (at start, after a serving-system
//! indication, once the data session is up): a request to the modem never wakes the radio.

mod client;
mod proxy;

use std::{collections::BTreeSet, sync::Arc};

use aiesim_qmi::{
    Frame, Message, Service, ctl,
    nas::{self, RegistrationState, RoamingIndicator},
    uim::{self, ApplicationState, CardState},
    wda, wds,
};
use tokio::sync::broadcast;

pub use self::{
    client::{QmiClient, QmiError},
    proxy::replay_for_fuzzing as proxy_replay_for_fuzzing,
};
use super::{
    Availability, Channel, DataSession, IpSettings, ModemError, ModemOptions, ModemState, Registration, Signal,
    SimState,
    proxy::{self as proxy_socket, ProxyListener},
    session::{Command, Context},
    state::{replace, replace_signal},
    transport::CharDevice,
};

/// The slot the session's card operations address (single-SIM modules).
const SLOT: u8 = 1;
/// Signal Info indications fire when RSSI crosses one of these (dBm): every 5 dB.
const RSSI_THRESHOLDS: [i8; 12] = [-110, -105, -100, -95, -90, -85, -80, -75, -70, -65, -60, -55];

/// The client ids this session holds, by service.
#[derive(Default)]
struct Clients {
    held: Vec<(Service, u8)>,
}

impl Clients {
    fn id(&self, service: Service) -> Option<u8> {
        self.held.iter().find(|(s, _)| *s == service).map(|(_, id)| *id)
    }

    fn require(&self, service: Service, name: &'static str) -> Result<u8, ModemError> {
        self.id(service).ok_or(ModemError::MissingService(name))
    }

    fn owns(&self, frame: &Frame) -> bool {
        frame.client_id == aiesim_qmi::BROADCAST_CLIENT_ID || self.id(frame.service) == Some(frame.client_id)
    }
}

pub(super) async fn run(context: Context<'_>) -> Result<(), ModemError> {
    let Context {
        options,
        port,
        state,
        commands,
        cancel,
    } = context;
    let transport = CharDevice::open_qmux(&port.path)?;
    let client = Arc::new(QmiClient::spawn(transport, options.request_timeout));
    let mut indications = client.indications();
    let mut proxied = tokio::task::JoinSet::new();
    let mut session = Session {
        client: &client,
        options,
        state,
        clients: Clients::default(),
        data_handle: None,
        want_data: options.connect,
    };
    let outcome = async {
        super::session::refusing(commands, async {
            // Whatever a crashed earlier run held is given back before we take our own.
            client.sync().await?;
            session.allocate().await?;
            session.start().await
        })
        .await?;
        tracing::info!(device = %port.path.display(), imei = %state.borrow().info.imei, "modem ready (QMI)");
        // Shared only once the daemon's own session is up; a bind failure costs only the proxy.
        let listener = ProxyListener::bind_if(options.qmi_proxy.as_ref());
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                stream = proxy_socket::accept(listener.as_ref()) => {
                    proxied.spawn(proxy::serve(stream, Arc::clone(&client)));
                }
                Some(_) = proxied.join_next(), if !proxied.is_empty() => {}
                error = client.closed() => return Err(error),
                indication = indications.recv() => match indication {
                    Ok(frame) => session.on_indication(&frame).await?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed QMI indications; reading the state again");
                        session.refresh().await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(client.closed().await),
                },
                command = commands.recv() => match command {
                    Some(command) => {
                        if session.serve(command).await {
                            // The modem no longer knows our client ids: start over (Sync, allocate).
                            return Err(ModemError::Reset);
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    // Proxied clients go first, so their ids are released while the port still works.
    proxied.shutdown().await;
    // A port that is gone or silent cannot take requests; the next session's Sync cleans up.
    if !matches!(outcome, Err(ModemError::Disconnected(_) | ModemError::Timeout { .. })) {
        session.close().await;
    }
    client.shutdown();
    outcome
}

struct Session<'a> {
    client: &'a QmiClient,
    options: &'a ModemOptions,
    state: &'a tokio::sync::watch::Sender<ModemState>,
    clients: Clients,
    /// The packet data handle of the data session this session started.
    data_handle: Option<u32>,
    /// Whether the data session should be up (configured, or asked for over D-Bus).
    want_data: bool,
}

impl Session<'_> {
    /// DMS always; NAS, WDS, UIM and WDA when the modem has them.
    async fn allocate(&mut self) -> Result<(), ModemError> {
        let versions = self
            .client
            .call(aiesim_qmi::CTL_CLIENT_ID, &ctl::GetVersionInfo)
            .await?;
        let offered: BTreeSet<u8> = versions.services.iter().map(|v| v.service.0).collect();
        for service in [Service::DMS, Service::NAS, Service::WDS, Service::UIM, Service::WDA] {
            if service != Service::DMS && !offered.contains(&service.0) {
                tracing::info!(%service, "the modem has no such service");
                continue;
            }
            let id = self.client.allocate(service).await?;
            self.clients.held.push((service, id));
        }
        Ok(())
    }

    /// Identity, indication registrations and the first reading of everything.
    async fn start(&mut self) -> Result<(), ModemError> {
        let dms = self.clients.require(Service::DMS, "DMS")?;
        let info = client::read_info(self.client, dms).await?;
        self.state.send_modify(|s| s.info = info);
        if let Some(nas) = self.clients.id(Service::NAS) {
            let register = nas::RegisterIndications {
                serving_system_events: Some(true),
                signal_info: Some(true),
                ..nas::RegisterIndications::default()
            };
            self.client.call(nas, &register).await?;
            let thresholds = nas::ConfigSignalInfo {
                rssi_thresholds: Some(RSSI_THRESHOLDS.to_vec()),
                ..nas::ConfigSignalInfo::default()
            };
            self.client.call(nas, &thresholds).await?;
        }
        if let Some(uim) = self.clients.id(Service::UIM) {
            let events = uim::RegisterEvents {
                mask: uim::events::CARD_STATUS,
            };
            self.client.call(uim, &events).await?;
        }
        self.refresh().await?;
        // Ready only once subscriptions and the first readings are in: callers may rely on them.
        self.state.send_modify(|s| {
            s.availability = Availability::Ready;
            s.last_error.clear();
        });
        self.keep_data_session().await;
        Ok(())
    }

    /// Reads everything indications would otherwise tell.
    async fn refresh(&mut self) -> Result<(), ModemError> {
        if let Some(nas) = self.clients.id(Service::NAS) {
            let signal = self.client.call(nas, &nas::GetSignalInfo).await?;
            self.on_signal(&signal.0);
            let serving = self.client.call(nas, &nas::GetServingSystem).await?;
            self.on_serving_system(&serving.0);
        }
        if let Some(uim) = self.clients.id(Service::UIM) {
            let status = self.client.call(uim, &uim::GetCardStatus).await?;
            self.on_card_status(&status.0);
        }
        if let Some(wds) = self.clients.id(Service::WDS) {
            let status = self.client.call(wds, &wds::GetPacketServiceStatus).await?;
            if status.connection_status != wds::ConnectionStatus::CONNECTED {
                self.data_handle = None;
                self.state.send_if_modified(|s| set_data(s, DataSession::Disconnected));
            }
        }
        self.read_channel_rates().await;
        Ok(())
    }

    /// Reads the uplink rate for the shaper; a modem without the message costs only the rate.
    async fn read_channel_rates(&self) {
        let Some(wds) = self.clients.id(Service::WDS) else {
            return;
        };
        match self.client.call(wds, &wds::GetChannelRates).await {
            Ok(rates) => {
                // The current rate while a channel is up, else what the cell would grant.
                // None (no channel, unknown) keeps the last rate known.
                let Some(bps) = [rates.current_tx_bps, rates.max_tx_bps]
                    .into_iter()
                    .find(|&r| r != 0 && r != u32::MAX)
                    .map(u64::from)
                else {
                    return;
                };
                if self.state.send_if_modified(|s| replace(&mut s.uplink_bps, Some(bps))) {
                    tracing::info!(uplink_bps = bps, "the modem reports a new uplink rate");
                }
            }
            Err(error) => tracing::debug!(error = %crate::broker::chain(&error), "no channel rates from the modem"),
        }
    }

    async fn on_indication(&mut self, frame: &Arc<Frame>) -> Result<(), ModemError> {
        if frame.service == Service::CTL && frame.message_id == ctl::SYNC {
            return Err(ModemError::Reset);
        }
        if !self.clients.owns(frame) {
            return Ok(());
        }
        let decoded = match (frame.service, frame.message_id) {
            (Service::NAS, nas::SIGNAL_INFO_INDICATION) => {
                nas::SignalInfoIndication::from_frame(frame).map(|ind| self.on_signal(&ind.0))
            }
            (Service::NAS, nas::SERVING_SYSTEM_INDICATION) => {
                let decoded = nas::ServingSystemIndication::from_frame(frame).map(|ind| self.on_serving_system(&ind.0));
                // Another cell or radio technology grants another rate.
                self.read_channel_rates().await;
                self.keep_data_session().await;
                decoded
            }
            (Service::UIM, uim::CARD_STATUS_INDICATION) => {
                uim::CardStatusIndication::from_frame(frame).map(|ind| self.on_card_status(&ind.0))
            }
            (Service::WDS, wds::PACKET_SERVICE_STATUS_INDICATION) => {
                wds::PacketServiceStatusIndication::from_frame(frame).map(|ind| {
                    if ind.connection_status != wds::ConnectionStatus::CONNECTED {
                        tracing::info!(reason = ?ind.call_end_reason, "the data session went down");
                        self.data_handle = None;
                        self.state.send_if_modified(|s| set_data(s, DataSession::Disconnected));
                    }
                })
            }
            _ => {
                tracing::debug!(service = %frame.service, message_id = frame.message_id, "ignoring an indication");
                Ok(())
            }
        };
        if let Err(error) = decoded {
            // One bad indication loses its news only; the next one or a refresh brings it back.
            tracing::warn!(service = %frame.service, %error, "ignoring a malformed indication");
        }
        Ok(())
    }

    fn on_signal(&self, info: &nas::SignalInfo) {
        let signal = if let Some(lte) = info.lte {
            Signal {
                rssi_dbm: Some(i16::from(lte.rssi)),
                rsrp_dbm: Some(lte.rsrp),
                rsrq_db: Some(i16::from(lte.rsrq)),
                snr_db: Some(f64::from(lte.snr) / 10.0),
            }
        } else {
            Signal {
                rssi_dbm: info.gsm.map(i16::from),
                ..Signal::default()
            }
        };
        self.state.send_if_modified(|s| replace_signal(&mut s.signal, signal));
    }

    fn on_serving_system(&self, info: &nas::ServingSystemInfo) {
        let roaming = info.roaming_indicator == Some(RoamingIndicator::ON);
        let registration = match info.serving_system.registration_state {
            RegistrationState::REGISTERED if roaming => Registration::Roaming,
            RegistrationState::REGISTERED => Registration::Home,
            RegistrationState::NOT_REGISTERED_SEARCHING => Registration::Searching,
            RegistrationState::REGISTRATION_DENIED => Registration::Denied,
            RegistrationState::NOT_REGISTERED => Registration::NotRegistered,
            _ => Registration::Unknown,
        };
        let operator = match (&info.current_plmn, registration.is_registered()) {
            (Some(plmn), true) if !plmn.description.is_empty() => plmn.description.clone(),
            (Some(plmn), true) => format!("{:03}-{:02}", plmn.mcc, plmn.mnc),
            _ => String::new(),
        };
        self.state.send_if_modified(|s| {
            let a = replace(&mut s.registration, registration);
            let b = replace(&mut s.operator, operator);
            a || b
        });
    }

    fn on_card_status(&self, info: &uim::CardStatusInfo) {
        let sim = info.card_status.as_ref().map_or(SimState::Unknown, sim_state);
        self.state.send_if_modified(|s| replace(&mut s.sim, sim));
    }

    /// Brings the data session up when it is wanted, the modem is registered and it is down.
    async fn keep_data_session(&mut self) {
        let (registered, down) = {
            let s = self.state.borrow();
            (s.registration.is_registered(), s.data == DataSession::Disconnected)
        };
        if self.want_data && registered && down && self.clients.id(Service::WDS).is_some() {
            let apn = self.options.apn.clone();
            if let Err(error) = self.connect(&apn).await {
                tracing::warn!(error = %crate::broker::chain(&error), "could not bring the data session up");
            }
        }
    }

    async fn connect(&mut self, apn: &str) -> Result<(), ModemError> {
        let wds = self.clients.require(Service::WDS, "WDS")?;
        if let Some(wda) = self.clients.id(Service::WDA) {
            // The kernel's qmi_wwan/rmnet expect raw IP; an 802.3 modem would frame packets wrongly.
            let format = wda::SetDataFormat {
                link_layer_protocol: Some(wda::LinkLayerProtocol::RAW_IP),
                ..wda::SetDataFormat::default()
            };
            self.client.call(wda, &format).await?;
        }
        self.state.send_if_modified(|s| set_data(s, DataSession::Connecting));
        let start = wds::StartNetwork {
            apn: Some(apn.to_owned()).filter(|a| !a.is_empty()),
            ip_family: Some(wds::IpFamily::IPV4),
            ..wds::StartNetwork::default()
        };
        let started = match self.client.call(wds, &start).await {
            Ok(started) => started,
            Err(error) => {
                self.state.send_if_modified(|s| set_data(s, DataSession::Disconnected));
                return Err(error);
            }
        };
        self.data_handle = started.packet_data_handle;
        let settings = self
            .client
            .call(
                wds,
                &wds::GetCurrentSettings {
                    requested_settings: wds::requested_settings::IP_ADDRESS
                        | wds::requested_settings::GATEWAY_INFO
                        | wds::requested_settings::DNS_ADDRESS
                        | wds::requested_settings::MTU,
                },
            )
            .await?;
        let ip = IpSettings {
            address: settings.ipv4_address,
            prefix_len: settings
                .ipv4_subnet_mask
                .map_or(0, |mask| u8::try_from(u32::from(mask).count_ones()).unwrap_or(0)),
            gateway: settings.ipv4_gateway,
            dns: [settings.primary_dns, settings.secondary_dns]
                .into_iter()
                .flatten()
                .collect(),
            mtu: settings.mtu,
        };
        // Before the session shows as up: callers may act on the modem as soon as it does.
        self.read_channel_rates().await;
        tracing::info!(apn, address = ?ip.address, "data session up");
        self.state.send_if_modified(|s| set_data(s, DataSession::Connected(ip)));
        Ok(())
    }

    async fn disconnect(&mut self) -> Result<(), ModemError> {
        let wds = self.clients.require(Service::WDS, "WDS")?;
        if let Some(handle) = self.data_handle.take() {
            self.client
                .call(
                    wds,
                    &wds::StopNetwork {
                        packet_data_handle: handle,
                        disable_autoconnect: None,
                    },
                )
                .await?;
        }
        self.state.send_if_modified(|s| set_data(s, DataSession::Disconnected));
        Ok(())
    }

    /// Serves one command; true when the answer shows the modem forgot our client ids.
    async fn serve(&mut self, command: Command) -> bool {
        fn forgotten<T>(result: &Result<T, ModemError>) -> bool {
            matches!(
                result,
                Err(ModemError::Qmi(QmiError::Refused {
                    source: aiesim_qmi::ProtocolError::InvalidClientId,
                    ..
                }))
            )
        }
        match command {
            Command::Connect { apn, reply } => {
                self.want_data = true;
                let apn = apn.unwrap_or_else(|| self.options.apn.clone());
                let up = matches!(self.state.borrow().data, DataSession::Connected(_));
                let result = if up { Ok(()) } else { self.connect(&apn).await };
                let lost = forgotten(&result);
                drop(reply.send(result));
                lost
            }
            Command::Disconnect { reply } => {
                self.want_data = false;
                let result = self.disconnect().await;
                let lost = forgotten(&result);
                drop(reply.send(result));
                lost
            }
            Command::OpenChannel { aid, reply } => {
                let result = self.open_channel(aid).await;
                let lost = forgotten(&result);
                // A caller that gave up meanwhile would leak the channel: close it here.
                if let Err(Ok(channel)) = reply.send(result) {
                    let _ = self.close_channel(channel.number).await;
                }
                lost
            }
            Command::Transmit { channel, apdu, reply } => {
                let result = self.transmit(channel, apdu).await;
                let lost = forgotten(&result);
                drop(reply.send(result));
                lost
            }
            Command::CloseChannel { channel, reply } => {
                let result = self.close_channel(channel).await;
                let lost = forgotten(&result);
                drop(reply.send(result));
                lost
            }
        }
    }

    async fn open_channel(&self, aid: Vec<u8>) -> Result<Channel, ModemError> {
        let uim = self.clients.require(Service::UIM, "UIM")?;
        let request = uim::OpenLogicalChannel {
            slot: SLOT,
            aid: Some(aid),
            file_control_information: None,
        };
        let name = uim::OpenLogicalChannel::NAME;
        let frame = request
            .to_frame(uim, 0)
            .map_err(|source| QmiError::Encode { request: name, source })?;
        // A refused SELECT is a failed result that still carries the card's status words.
        let answer = self.client.forward(frame).await?;
        let malformed = |source| QmiError::Malformed { request: name, source };
        let result = aiesim_qmi::QmiResult::decode(&answer.tlvs).map_err(malformed)?;
        let uim::ChannelResult {
            channel_id,
            card_result,
            select_response,
        } = uim::OpenLogicalChannelResponse::from_frame(&answer)
            .map_err(malformed)?
            .0;
        match (result.into_result(), channel_id, card_result) {
            (Ok(()), Some(number), card_result) => {
                let (sw1, sw2) = card_result.unwrap_or((0x90, 0x00));
                let mut select_response = select_response.unwrap_or_default();
                select_response.extend_from_slice(&[sw1, sw2]);
                Ok(Channel {
                    number,
                    select_response,
                })
            }
            (_, _, Some((sw1, sw2))) => Err(ModemError::CardRefused(u16::from_be_bytes([sw1, sw2]))),
            (Err(source), _, None) => Err(QmiError::Refused { request: name, source }.into()),
            (Ok(()), None, None) => Err(ModemError::MissingAnswer("UIM Open Logical Channel response")),
        }
    }

    async fn transmit(&self, channel: u8, apdu: Vec<u8>) -> Result<Vec<u8>, ModemError> {
        let uim = self.clients.require(Service::UIM, "UIM")?;
        let answer = self
            .client
            .call(
                uim,
                &uim::SendApdu {
                    slot: SLOT,
                    apdu,
                    channel_id: Some(channel),
                    procedure_bytes: None,
                },
            )
            .await?;
        answer
            .apdu_response
            .filter(|response| response.len() >= 2)
            .ok_or(ModemError::MissingAnswer("UIM Send APDU response"))
    }

    async fn close_channel(&self, channel: u8) -> Result<(), ModemError> {
        let uim = self.clients.require(Service::UIM, "UIM")?;
        self.client
            .call(
                uim,
                &uim::LogicalChannel {
                    slot: SLOT,
                    aid: None,
                    channel_id: Some(channel),
                    file_control_information: None,
                    terminate_application: None,
                },
            )
            .await?;
        Ok(())
    }

    /// On a clean stop: the data session this session started goes down, the ids go back.
    async fn close(&mut self) {
        if self.data_handle.is_some() {
            if let Err(error) = self.disconnect().await {
                tracing::debug!(error = %crate::broker::chain(&error), "could not stop the data session");
            }
        }
        for &(service, id) in &self.clients.held {
            if let Err(error) = self.client.release(service, id).await {
                tracing::debug!(%service, client_id = id, error = %crate::broker::chain(&error), "could not release a client id");
            }
        }
        self.clients.held.clear();
    }
}

/// What the card status says of the primary (GW) application's card.
fn sim_state(status: &uim::CardStatus) -> SimState {
    let index = status.index_gw_primary;
    let slot = usize::from(index >> 8);
    let card = if index == uim::CardStatus::NO_INDEX {
        status.cards.first()
    } else {
        status.cards.get(slot)
    };
    let Some(card) = card else {
        return SimState::Unknown;
    };
    match card.state {
        CardState::ABSENT => SimState::Absent,
        CardState::ERROR => SimState::Error,
        _ if card.applications.is_empty() => SimState::NoProfile,
        _ => {
            let application = if index == uim::CardStatus::NO_INDEX {
                card.applications.first()
            } else {
                card.applications.get(usize::from(index & 0xFF))
            };
            match application.map(|a| a.state) {
                Some(ApplicationState::READY) => SimState::Ready,
                _ => SimState::NotReady,
            }
        }
    }
}

fn set_data(state: &mut ModemState, data: DataSession) -> bool {
    replace(&mut state.data, data)
}
