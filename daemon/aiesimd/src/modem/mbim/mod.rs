//! The daemon's MBIM session: OPEN, the identity from `DEVICE_CAPS`, a subscription to the
//! notifications it follows, then notifications keep the state current. A `FUNCTION_ERROR`
//! `NotOpened` (the modem reset its function) re-opens the session in place.

mod client;
mod proxy;

use std::sync::Arc;

use aiesim_mbim::{
    DEFAULT_MAX_CONTROL_TRANSFER, MIN_CONTROL_TRANSFER, Message, ProtocolError, Uuid,
    basic_connect::{
        self as bc, ActivationCommand, ActivationState, AuthProtocol, Compression, ContextIpType, PacketServiceState,
        ReadyState, RegisterState,
    },
    uicc::{self, ClassByteType, SecureMessaging},
};
use tokio::sync::{broadcast, watch};

use self::client::Event;
pub use self::{
    client::{MbimClient, MbimError},
    proxy::replay_for_fuzzing as proxy_replay_for_fuzzing,
};
use super::{
    Availability, Channel, DataSession, IpSettings, ModemError, ModemInfo, ModemOptions, ModemState, Registration,
    Signal, SimState,
    proxy::{self as proxy_socket, ProxyListener},
    session::{Command, Context},
    state::{replace, replace_signal},
    transport::CharDevice,
};

/// The data session the daemon uses (MBIM session ids start at 0).
const SESSION_ID: u32 = 0;
/// The UICC channel group the daemon's channels belong to, so it can close them as a set.
const CHANNEL_GROUP: u32 = 1;
/// The `BASIC_CONNECT` notifications the session follows.
const NOTIFICATIONS: [u32; 6] = [
    bc::SUBSCRIBER_READY_STATUS,
    bc::RADIO_STATE,
    bc::REGISTER_STATE,
    bc::PACKET_SERVICE,
    bc::SIGNAL_STATE,
    bc::CONNECT,
];
/// How many times in a row the modem may answer `NotOpened` before the session is rebuilt.
const MAX_REOPENS: u32 = 3;

pub(super) async fn run(context: Context<'_>) -> Result<(), ModemError> {
    let Context {
        options,
        port,
        state,
        commands,
        cancel,
    } = context;
    let transport = CharDevice::open(&port.path, aiesim_mbim::Splitter::new())?;
    let max_control_transfer = options
        .mbim_max_control_transfer
        .or_else(|| transport.max_command().map(usize::from))
        .unwrap_or(DEFAULT_MAX_CONTROL_TRANSFER)
        .clamp(MIN_CONTROL_TRANSFER, DEFAULT_MAX_CONTROL_TRANSFER);
    let client = Arc::new(MbimClient::spawn(
        transport,
        options.request_timeout,
        max_control_transfer,
    ));
    let mut events = client.events();
    let mut proxied = tokio::task::JoinSet::new();
    let subscriptions = proxy::Subscriptions::new(&[bc::EventEntry {
        service: Uuid::BASIC_CONNECT,
        cids: NOTIFICATIONS.to_vec(),
    }]);
    let mut session = Session {
        client: &client,
        options,
        state,
        max_control_transfer,
        subscriptions: &subscriptions,
        want_data: options.connect,
        connected_by_us: false,
    };
    let outcome = async {
        super::session::refusing(commands, session.open()).await?;
        tracing::info!(device = %port.path.display(), imei = %state.borrow().info.imei, "modem ready (MBIM)");
        let listener = ProxyListener::bind_if(options.mbim_proxy.as_ref());
        let mut reopens = 0;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                stream = proxy_socket::accept(listener.as_ref()) => {
                    proxied.spawn(proxy::serve(stream, Arc::clone(&client), Arc::clone(&subscriptions)));
                }
                Some(_) = proxied.join_next(), if !proxied.is_empty() => {}
                error = client.closed() => return Err(error),
                event = events.recv() => match event {
                    Ok(Event::Indication(indication)) => {
                        reopens = 0;
                        session.on_indication(&indication).await;
                    }
                    Ok(Event::FunctionError(ProtocolError::NotOpened)) => {
                        reopens += 1;
                        if reopens > MAX_REOPENS {
                            return Err(ModemError::Unavailable("the modem keeps losing its MBIM session".into()));
                        }
                        tracing::warn!("the modem lost the MBIM session (NotOpened); opening it again");
                        session.open().await?;
                    }
                    Ok(Event::FunctionError(error)) => tracing::warn!(%error, "MBIM function error"),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed MBIM notifications; reading the state again");
                        session.refresh().await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(client.closed().await),
                },
                command = commands.recv() => match command {
                    Some(command) => session.serve(command).await,
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    proxied.shutdown().await;
    if !matches!(outcome, Err(ModemError::Disconnected(_) | ModemError::Timeout { .. })) {
        session.close().await;
    }
    client.shutdown();
    outcome
}

struct Session<'a> {
    client: &'a MbimClient,
    options: &'a ModemOptions,
    state: &'a watch::Sender<ModemState>,
    /// What OPEN announces and every fragment we send stays within.
    max_control_transfer: usize,
    /// The daemon's and proxied clients' notification wishes, merged for the modem.
    subscriptions: &'a proxy::Subscriptions,
    want_data: bool,
    /// Whether the active data session is one this session brought up.
    connected_by_us: bool,
}

impl Session<'_> {
    /// OPEN (after a CLOSE if the modem still holds a stale session), identity, subscriptions
    /// and the first reading of everything.
    async fn open(&mut self) -> Result<(), ModemError> {
        let max = u32::try_from(self.max_control_transfer).unwrap_or(u32::MAX);
        if let Err(error) = self.client.open(max).await {
            if matches!(error, ModemError::Timeout { .. } | ModemError::Disconnected(_)) {
                return Err(error);
            }
            tracing::info!(error = %crate::broker::chain(&error), "OPEN refused; closing the old session first");
            self.client.close().await?;
            self.client.open(max).await?;
        }
        let caps = self.client.call(&bc::DeviceCapsQuery {}).await?;
        let info = ModemInfo {
            imei: caps.device_id,
            manufacturer: String::new(),
            model: caps.hardware_info,
            revision: caps.firmware_info,
        };
        self.state.send_modify(|s| s.info = info);
        let subscribe = bc::DeviceServiceSubscribeListSet {
            events: self.subscriptions.merged(),
        };
        self.client.call(&subscribe).await?;
        self.refresh().await?;
        // Ready only once subscriptions and the first readings are in: callers may rely on them.
        self.state.send_modify(|s| {
            s.availability = Availability::Ready;
            s.last_error.clear();
        });
        self.keep_data_session().await;
        Ok(())
    }

    async fn refresh(&mut self) -> Result<(), ModemError> {
        let ready = self.client.call(&bc::SubscriberReadyStatusQuery {}).await;
        match ready {
            Ok(ready) => self.on_ready(&ready),
            // A modem without a card answers with a status instead of a state.
            Err(ModemError::Mbim(MbimError::Status { status, .. })) => {
                tracing::debug!(%status, "no subscriber ready status");
                self.state.send_if_modified(|s| replace(&mut s.sim, SimState::Absent));
            }
            Err(error) => return Err(error),
        }
        let signal = self.client.call(&bc::SignalStateQuery {}).await?;
        self.on_signal(&signal);
        match self.client.call(&bc::RegisterStateQuery {}).await {
            Ok(register) => self.on_register(&register),
            Err(ModemError::Mbim(MbimError::Status { .. })) => {
                self.state
                    .send_if_modified(|s| replace(&mut s.registration, Registration::NotRegistered));
            }
            Err(error) => return Err(error),
        }
        // Optional: a modem that will not say costs only the shaper's rate.
        match self.client.call(&bc::PacketServiceQuery {}).await {
            Ok(packet) => self.on_packet_service(&packet),
            Err(error) => tracing::debug!(error = %crate::broker::chain(&error), "no packet service state"),
        }
        let connect = self.client.call(&connect_query()).await;
        if let Ok(connect) = connect {
            self.on_connect(&connect).await;
        }
        Ok(())
    }

    /// Keeps the uplink speed for the shaper; 0 (detached, unknown) keeps the last one known.
    fn on_packet_service(&self, packet: &bc::PacketServiceResponse) {
        if packet.uplink_speed == 0 {
            return;
        }
        let bps = Some(packet.uplink_speed);
        if self.state.send_if_modified(|s| replace(&mut s.uplink_bps, bps)) {
            tracing::info!(uplink_bps = packet.uplink_speed, "the modem reports a new uplink rate");
        }
    }

    async fn on_indication(&mut self, indication: &aiesim_mbim::Indication) {
        if indication.service != Uuid::BASIC_CONNECT {
            tracing::debug!(service = %indication.service, cid = indication.cid, "ignoring a notification");
            return;
        }
        let decoded = match indication.cid {
            bc::SUBSCRIBER_READY_STATUS => {
                bc::SubscriberReadyStatusResponse::from_indication(indication).map(|r| self.on_ready(&r))
            }
            bc::SIGNAL_STATE => bc::SignalStateResponse::from_indication(indication).map(|r| self.on_signal(&r)),
            bc::REGISTER_STATE => match bc::RegisterStateResponse::from_indication(indication) {
                Ok(register) => {
                    self.on_register(&register);
                    self.keep_data_session().await;
                    Ok(())
                }
                Err(error) => Err(error),
            },
            bc::PACKET_SERVICE => bc::PacketServiceResponse::from_indication(indication).map(|r| {
                self.on_packet_service(&r);
                if r.packet_service_state == PacketServiceState::DETACHED {
                    self.state
                        .send_if_modified(|s| replace(&mut s.data, DataSession::Disconnected));
                }
            }),
            bc::CONNECT => match bc::ConnectResponse::from_indication(indication) {
                Ok(connect) => {
                    self.on_connect(&connect).await;
                    Ok(())
                }
                Err(error) => Err(error),
            },
            _ => Ok(()),
        };
        if let Err(error) = decoded {
            tracing::warn!(cid = indication.cid, %error, "ignoring a malformed notification");
        }
    }

    fn on_ready(&self, ready: &bc::SubscriberReadyStatusResponse) {
        let sim = match ready.ready_state {
            ReadyState::INITIALIZED => SimState::Ready,
            ReadyState::SIM_NOT_INSERTED => SimState::Absent,
            ReadyState::NO_ESIM_PROFILE => SimState::NoProfile,
            ReadyState::BAD_SIM | ReadyState::FAILURE => SimState::Error,
            ReadyState::NOT_INITIALIZED | ReadyState::NOT_ACTIVATED | ReadyState::DEVICE_LOCKED => SimState::NotReady,
            _ => SimState::Unknown,
        };
        self.state.send_if_modified(|s| replace(&mut s.sim, sim));
    }

    fn on_signal(&self, signal: &bc::SignalStateResponse) {
        // 0-31 in 2 dB steps from -113 dBm; 99 is "unknown".
        let rssi_dbm = (signal.rssi <= 31).then(|| i16::try_from(signal.rssi).map_or(-51, |r| -113 + 2 * r));
        let signal = Signal {
            rssi_dbm,
            ..Signal::default()
        };
        self.state.send_if_modified(|s| replace_signal(&mut s.signal, signal));
    }

    fn on_register(&self, register: &bc::RegisterStateResponse) {
        let registration = match register.register_state {
            RegisterState::HOME => Registration::Home,
            RegisterState::ROAMING | RegisterState::PARTNER => Registration::Roaming,
            RegisterState::SEARCHING => Registration::Searching,
            RegisterState::DENIED => Registration::Denied,
            RegisterState::DEREGISTERED => Registration::NotRegistered,
            _ => Registration::Unknown,
        };
        let operator = if registration.is_registered() {
            if register.provider_name.is_empty() {
                register.provider_id.clone()
            } else {
                register.provider_name.clone()
            }
        } else {
            String::new()
        };
        self.state.send_if_modified(|s| {
            let a = replace(&mut s.registration, registration);
            let b = replace(&mut s.operator, operator);
            a || b
        });
    }

    async fn on_connect(&mut self, connect: &bc::ConnectResponse) {
        if connect.session_id != SESSION_ID {
            return;
        }
        match connect.activation_state {
            ActivationState::ACTIVATED => {
                if !matches!(self.state.borrow().data, DataSession::Connected(_)) {
                    match self.ip_settings().await {
                        Ok(ip) => {
                            self.state
                                .send_if_modified(|s| replace(&mut s.data, DataSession::Connected(ip)));
                        }
                        Err(error) => tracing::warn!(error = %crate::broker::chain(&error), "no IP configuration"),
                    }
                }
            }
            ActivationState::ACTIVATING => {
                self.state
                    .send_if_modified(|s| replace(&mut s.data, DataSession::Connecting));
            }
            _ => {
                self.connected_by_us = false;
                self.state
                    .send_if_modified(|s| replace(&mut s.data, DataSession::Disconnected));
            }
        }
    }

    async fn ip_settings(&self) -> Result<IpSettings, ModemError> {
        let ip = self
            .client
            .call(&bc::IpConfigurationQuery { session_id: SESSION_ID })
            .await?;
        let first = ip.ipv4_addresses.first();
        Ok(IpSettings {
            address: first.map(|a| a.address),
            prefix_len: first.map_or(0, |a| u8::try_from(a.prefix_length).unwrap_or(0)),
            gateway: ip.ipv4_gateway,
            dns: ip.ipv4_dns,
            mtu: (ip.ipv4_mtu != 0).then_some(ip.ipv4_mtu),
        })
    }

    async fn keep_data_session(&mut self) {
        let (registered, down) = {
            let s = self.state.borrow();
            (s.registration.is_registered(), s.data == DataSession::Disconnected)
        };
        if self.want_data && registered && down {
            let apn = self.options.apn.clone();
            if let Err(error) = self.connect(&apn).await {
                tracing::warn!(error = %crate::broker::chain(&error), "could not bring the data session up");
            }
        }
    }

    async fn connect(&mut self, apn: &str) -> Result<(), ModemError> {
        self.state
            .send_if_modified(|s| replace(&mut s.data, DataSession::Connecting));
        let set = bc::ConnectSet {
            session_id: SESSION_ID,
            activation_command: ActivationCommand::ACTIVATE,
            access_string: apn.to_owned(),
            user_name: String::new(),
            password: String::new(),
            compression: Compression::NONE,
            auth_protocol: AuthProtocol::NONE,
            ip_type: ContextIpType::IPV4,
            context_type: Uuid::CONTEXT_INTERNET,
        };
        let connected = match self.client.call(&set).await {
            Ok(connected) => connected,
            Err(error) => {
                self.state
                    .send_if_modified(|s| replace(&mut s.data, DataSession::Disconnected));
                return Err(error);
            }
        };
        if connected.activation_state != ActivationState::ACTIVATED {
            self.state
                .send_if_modified(|s| replace(&mut s.data, DataSession::Disconnected));
            return Err(ModemError::Unavailable(format!(
                "the network did not activate the data session (state {})",
                connected.activation_state
            )));
        }
        self.connected_by_us = true;
        let ip = self.ip_settings().await?;
        tracing::info!(apn, address = ?ip.address, "data session up");
        self.state
            .send_if_modified(|s| replace(&mut s.data, DataSession::Connected(ip)));
        Ok(())
    }

    async fn disconnect(&mut self) -> Result<(), ModemError> {
        let set = bc::ConnectSet {
            session_id: SESSION_ID,
            activation_command: ActivationCommand::DEACTIVATE,
            access_string: String::new(),
            user_name: String::new(),
            password: String::new(),
            compression: Compression::NONE,
            auth_protocol: AuthProtocol::NONE,
            ip_type: ContextIpType::DEFAULT,
            context_type: Uuid::CONTEXT_INTERNET,
        };
        self.client.call(&set).await?;
        self.connected_by_us = false;
        self.state
            .send_if_modified(|s| replace(&mut s.data, DataSession::Disconnected));
        Ok(())
    }

    async fn serve(&mut self, command: Command) {
        fn reopened<T>(result: &Result<T, ModemError>) -> bool {
            matches!(
                result,
                Err(ModemError::Mbim(MbimError::Function {
                    error: ProtocolError::NotOpened,
                    ..
                }))
            )
        }
        // The modem forgot the session behind our back: open it again and retry once.
        macro_rules! with_reopen {
            ($call:expr) => {{
                let first = $call;
                if reopened(&first) {
                    tracing::warn!("the modem lost the MBIM session (NotOpened); opening it again");
                    match self.open().await {
                        Ok(()) => $call,
                        Err(error) => Err(error),
                    }
                } else {
                    first
                }
            }};
        }
        match command {
            Command::Connect { apn, reply } => {
                self.want_data = true;
                let apn = apn.unwrap_or_else(|| self.options.apn.clone());
                let up = matches!(self.state.borrow().data, DataSession::Connected(_));
                let result = if up {
                    Ok(())
                } else {
                    with_reopen!(self.connect(&apn).await)
                };
                drop(reply.send(result));
            }
            Command::Disconnect { reply } => {
                self.want_data = false;
                drop(reply.send(with_reopen!(self.disconnect().await)));
            }
            Command::OpenChannel { aid, reply } => {
                // A caller that gave up meanwhile would leak the channel: close it here.
                if let Err(Ok(channel)) = reply.send(with_reopen!(self.open_channel(aid.clone()).await)) {
                    let _ = self.close_channel(channel.number).await;
                }
            }
            Command::Transmit { channel, apdu, reply } => {
                drop(reply.send(with_reopen!(self.transmit(channel, apdu.clone()).await)));
            }
            Command::CloseChannel { channel, reply } => {
                drop(reply.send(with_reopen!(self.close_channel(channel).await)));
            }
        }
    }

    async fn open_channel(&self, aid: Vec<u8>) -> Result<Channel, ModemError> {
        let set = uicc::OpenChannelSet {
            app_id: aid,
            select_p2_arg: 0,
            channel_group: CHANNEL_GROUP,
        };
        let name = uicc::OpenChannelSet::NAME;
        let command = set
            .to_command()
            .map_err(|source| MbimError::Encode { request: name, source })?;
        // A refused SELECT comes back as a failure status that still carries the card's SW.
        let done = self.client.command_raw(command, name).await?;
        let opened = uicc::OpenChannelResponse::from_command_done(&done);
        let opened = match (done.status.is_success(), opened) {
            (_, Ok(opened)) => opened,
            (true, Err(source)) => return Err(MbimError::Malformed { request: name, source }.into()),
            (false, Err(_)) => {
                return Err(MbimError::Status {
                    request: name,
                    status: done.status,
                }
                .into());
            }
        };
        let sw = uicc::status_word(opened.status);
        let number = u8::try_from(opened.channel).ok().filter(|c| *c != 0);
        let Some(number) = number.filter(|_| done.status.is_success()) else {
            return Err(ModemError::CardRefused(sw));
        };
        let mut select_response = opened.response;
        select_response.extend_from_slice(&sw.to_be_bytes());
        Ok(Channel {
            number,
            select_response,
        })
    }

    async fn transmit(&self, channel: u8, apdu: Vec<u8>) -> Result<Vec<u8>, ModemError> {
        let answer = self
            .client
            .call(&uicc::ApduSet {
                channel: u32::from(channel),
                secure_messaging: SecureMessaging::NONE,
                class_byte_type: ClassByteType::INTER_INDUSTRY,
                command: apdu,
            })
            .await?;
        let mut response = answer.response;
        response.extend_from_slice(&uicc::status_word(answer.status).to_be_bytes());
        Ok(response)
    }

    async fn close_channel(&self, channel: u8) -> Result<(), ModemError> {
        let closed = self
            .client
            .call(&uicc::CloseChannelSet {
                channel: u32::from(channel),
                channel_group: CHANNEL_GROUP,
            })
            .await?;
        match uicc::status_word(closed.status) {
            0x9000 => Ok(()),
            sw => Err(ModemError::CardRefused(sw)),
        }
    }

    /// On a clean stop: the data session this session started goes down, then CLOSE.
    async fn close(&mut self) {
        if self.connected_by_us {
            if let Err(error) = self.disconnect().await {
                tracing::debug!(error = %crate::broker::chain(&error), "could not stop the data session");
            }
        }
        if let Err(error) = self.client.close().await {
            tracing::debug!(error = %crate::broker::chain(&error), "MBIM CLOSE failed");
        }
    }
}

fn connect_query() -> bc::ConnectQuery {
    bc::ConnectQuery {
        session_id: SESSION_ID,
        ..bc::ConnectQuery::default()
    }
}
