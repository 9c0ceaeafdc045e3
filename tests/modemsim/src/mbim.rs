//! The MBIM device model: the OPEN/CLOSE session, fragmentation both ways, BASIC_CONNECT,
//! the MS extensions for SIM slots and low-level UICC access, and QMI-over-MBIM through the
//! QMI model, all answered from and into the [`World`].

#![expect(
    clippy::doc_markdown,
    reason = "MBIM names (MaxControlTransfer, DEVICE_SERVICES, NotOpened) are prose in these docs"
)]

use std::collections::{BTreeMap, BTreeSet};

use aiesim_mbim::{
    Body, Command, CommandDone, CommandType, ControlMessage, DEFAULT_MAX_CONTROL_TRANSFER, DecodeError, FragmentError,
    Indication, MIN_CONTROL_TRANSFER, Message, ProtocolError, Reassembler, Splitter, Status, Uuid,
    basic_connect::{
        self as bc, ActivationCommand, ActivationState, ConnectResponse, ConnectSet, ContextIpType, DeviceCapsResponse,
        DeviceServiceElement, DeviceServiceSubscribeListResponse, DeviceServiceSubscribeListSet,
        DeviceServicesResponse, DeviceType, EventEntry, IpConfigurationQuery, IpConfigurationResponse, Ipv4Element,
        PacketServiceAction, PacketServiceResponse, PacketServiceSet, PacketServiceState, RadioStateResponse,
        RadioStateSet, RadioSwitchState, ReadyState, RegisterAction, RegisterMode, RegisterState,
        RegisterStateResponse, RegisterStateSet, SignalStateResponse, SignalStateSet, SubscriberReadyStatusResponse,
        VoiceCallState, VoiceClass, cellular_class, ctrl_caps, data_class, ip_available, registration_flag, sim_class,
    },
    basic_connect_ext::{
        self as ext, DeviceResetResponse, DeviceSlotMappingsResponse, DeviceSlotMappingsSet, SlotInfoStatusQuery,
        SlotInfoStatusResponse, SlotState,
    },
    proxy_control::{self, ConfigurationResponse, ConfigurationSet},
    qmi::{self as qmi_service, MsgResponse, MsgSet},
    uicc::{
        self, ApduResponse, ApduSet, AtrResponse, CloseChannelResponse, CloseChannelSet, OpenChannelResponse,
        OpenChannelSet,
    },
};

use crate::{
    control, qmi,
    world::{ConnectError, Registration, Signal, UiccError, World, sw},
};

/// The largest transfer the host may send us; a real function reports about this much.
const MAX_HOST_TRANSFER: usize = 16 * 1024;
/// The only data session the simulated modem offers.
const SESSION_ID: u32 = 0;
/// Notifications carry no transaction of the host's.
const INDICATION_TID: u32 = 0;

/// The services and CIDs this model answers, as DEVICE_SERVICES lists them.
/// PROXY_CONTROL is answered but, as on a real function, not listed.
const SERVICES: [(Uuid, &[u32]); 4] = [
    (
        Uuid::BASIC_CONNECT,
        &[
            bc::DEVICE_CAPS,
            bc::SUBSCRIBER_READY_STATUS,
            bc::RADIO_STATE,
            bc::REGISTER_STATE,
            bc::PACKET_SERVICE,
            bc::SIGNAL_STATE,
            bc::CONNECT,
            bc::IP_CONFIGURATION,
            bc::DEVICE_SERVICES,
            bc::DEVICE_SERVICE_SUBSCRIBE_LIST,
        ],
    ),
    (
        Uuid::MS_BASIC_CONNECT_EXTENSIONS,
        &[ext::DEVICE_SLOT_MAPPINGS, ext::SLOT_INFO_STATUS, ext::DEVICE_RESET],
    ),
    (
        Uuid::MS_UICC_LOW_LEVEL_ACCESS,
        &[uicc::ATR, uicc::OPEN_CHANNEL, uicc::CLOSE_CHANNEL, uicc::APDU],
    ),
    (Uuid::QMI, &[qmi_service::MSG]),
];

/// What a COMMAND is answered with: the status and the information buffer.
struct Answer {
    status: Status,
    info: Vec<u8>,
}

impl Answer {
    fn ok<M: Message>(message: &M) -> Self {
        Self::with(Status::None, message)
    }

    /// A failure that still reports state, as CONNECT and the UICC commands do.
    fn with<M: Message>(status: Status, message: &M) -> Self {
        match message.to_info() {
            Ok(info) => Self { status, info },
            Err(err) => {
                tracing::error!(message = M::NAME, %err, "could not encode the answer");
                Self::fail(Status::Failure)
            }
        }
    }

    const fn fail(status: Status) -> Self {
        Self {
            status,
            info: Vec::new(),
        }
    }
}

/// The host's signal-reporting configuration, echoed in SIGNAL_STATE.
#[derive(Debug, Clone, Copy)]
struct SignalConfig {
    interval: u32,
    rssi_threshold: u32,
    error_rate_threshold: u32,
}

/// A simulated MBIM function.
pub struct Device {
    splitter: Splitter,
    reassembler: Reassembler,
    /// Between OPEN and CLOSE; COMMANDs outside that are refused with NotOpened.
    open: bool,
    /// The host's MaxControlTransfer from OPEN: no answer transfer is longer.
    max_control_transfer: usize,
    /// Notifications the host asked for: service → CIDs (empty means every CID).
    subscriptions: BTreeMap<Uuid, BTreeSet<u32>>,
    signal_config: SignalConfig,
    /// The last signal notified, so the drift only notifies when the reported value moves.
    last_rssi: Option<u32>,
    /// Channel groups of the channels the host opened, for CLOSE_CHANNEL by group.
    channel_groups: BTreeMap<u8, u32>,
    /// QMI-over-MBIM goes to the QMI model, which keeps its own client ids.
    qmi: qmi::Device,
}

impl Device {
    pub fn new() -> Self {
        Self {
            splitter: Splitter::with_max_transfer_len(MAX_HOST_TRANSFER),
            reassembler: Reassembler::new(),
            open: false,
            max_control_transfer: DEFAULT_MAX_CONTROL_TRANSFER,
            subscriptions: BTreeMap::new(),
            signal_config: SignalConfig {
                interval: 0,
                rssi_threshold: 0,
                error_rate_threshold: 0,
            },
            last_rssi: None,
            channel_groups: BTreeMap::new(),
            qmi: qmi::Device::new(),
        }
    }

    /// The answers to one whole message from the host.
    fn handle(&mut self, world: &mut World, message: ControlMessage) -> Vec<ControlMessage> {
        let ControlMessage { transaction_id, body } = message;
        let reply = |body| vec![ControlMessage::new(transaction_id, body)];
        match body {
            Body::Open { max_control_transfer } => {
                // A function opened again starts afresh; it honours any transfer size MBIM allows.
                let max = usize::try_from(max_control_transfer).unwrap_or(usize::MAX);
                self.close_session();
                self.open = true;
                self.max_control_transfer = max.clamp(MIN_CONTROL_TRANSFER, MAX_HOST_TRANSFER);
                tracing::info!(max_control_transfer, "MBIM session opened");
                reply(Body::OpenDone(Status::None))
            }
            Body::Close => {
                self.close_session();
                tracing::info!("MBIM session closed");
                reply(Body::CloseDone(Status::None))
            }
            Body::Command(_) if !self.open => {
                tracing::info!(transaction_id, "refusing a COMMAND before OPEN");
                reply(Body::FunctionError(ProtocolError::NotOpened))
            }
            Body::Command(command) => {
                let Answer { status, info } = self.command(world, &command);
                let Command { service, cid, .. } = command;
                if status != Status::None {
                    tracing::info!(%service, cid, %status, "failing a command");
                }
                reply(Body::CommandDone(CommandDone {
                    service,
                    cid,
                    status,
                    info,
                }))
            }
            Body::HostError(error) => {
                tracing::warn!(transaction_id, %error, "the host reported an error");
                Vec::new()
            }
            other => {
                tracing::warn!(message_type = %other.message_type(), "ignoring a function-to-host message from the host");
                Vec::new()
            }
        }
    }

    /// What a CLOSE (or a new OPEN) forgets: subscriptions and half-received messages.
    fn close_session(&mut self) {
        self.open = false;
        self.subscriptions.clear();
        self.reassembler.clear();
        self.last_rssi = None;
    }

    fn command(&mut self, world: &mut World, command: &Command) -> Answer {
        use CommandType::{Query, Set};
        let result = match (command.service, command.cid, command.command_type) {
            (Uuid::BASIC_CONNECT, bc::DEVICE_CAPS, Query) => Ok(Answer::ok(&device_caps(world))),
            (Uuid::BASIC_CONNECT, bc::SUBSCRIBER_READY_STATUS, Query) => Ok(Answer::ok(&subscriber_ready(world))),
            (Uuid::BASIC_CONNECT, bc::RADIO_STATE, Query) => Ok(Answer::ok(&radio_state(world))),
            (Uuid::BASIC_CONNECT, bc::RADIO_STATE, Set) => read::<RadioStateSet>(command).map(|set| {
                world.set_radio(set.radio_state == RadioSwitchState::ON);
                Answer::ok(&radio_state(world))
            }),
            (Uuid::BASIC_CONNECT, bc::REGISTER_STATE, Query) => Ok(Answer::ok(&register_state(world))),
            (Uuid::BASIC_CONNECT, bc::REGISTER_STATE, Set) => {
                read::<RegisterStateSet>(command).map(|set| register(world, &set))
            }
            (Uuid::BASIC_CONNECT, bc::PACKET_SERVICE, Query) => Ok(Answer::ok(&packet_service(world))),
            (Uuid::BASIC_CONNECT, bc::PACKET_SERVICE, Set) => {
                read::<PacketServiceSet>(command).map(|set| packet_service_set(world, set))
            }
            (Uuid::BASIC_CONNECT, bc::SIGNAL_STATE, Query) => Ok(Answer::ok(&self.signal_state(world))),
            (Uuid::BASIC_CONNECT, bc::SIGNAL_STATE, Set) => read::<SignalStateSet>(command).map(|set| {
                let SignalStateSet {
                    signal_strength_interval,
                    rssi_threshold,
                    error_rate_threshold,
                } = set;
                self.signal_config = SignalConfig {
                    interval: signal_strength_interval,
                    rssi_threshold,
                    error_rate_threshold,
                };
                Answer::ok(&self.signal_state(world))
            }),
            (Uuid::BASIC_CONNECT, bc::CONNECT, Query) => {
                read::<bc::ConnectQuery>(command).map(|query| match query.session_id {
                    SESSION_ID => Answer::ok(&connect_state(world)),
                    _ => Answer::fail(Status::InvalidParameters),
                })
            }
            (Uuid::BASIC_CONNECT, bc::CONNECT, Set) => read::<ConnectSet>(command).map(|set| connect(world, &set)),
            (Uuid::BASIC_CONNECT, bc::IP_CONFIGURATION, Query) => {
                read::<IpConfigurationQuery>(command).map(|query| ip_configuration(world, query.session_id))
            }
            (Uuid::BASIC_CONNECT, bc::DEVICE_SERVICES, Query) => Ok(Answer::ok(&device_services())),
            (Uuid::BASIC_CONNECT, bc::DEVICE_SERVICE_SUBSCRIBE_LIST, Set) => {
                read::<DeviceServiceSubscribeListSet>(command).map(|set| self.subscribe(set))
            }
            (Uuid::MS_BASIC_CONNECT_EXTENSIONS, ext::DEVICE_SLOT_MAPPINGS, Query) => {
                Ok(Answer::ok(&DeviceSlotMappingsResponse { slots: vec![0] }))
            }
            (Uuid::MS_BASIC_CONNECT_EXTENSIONS, ext::DEVICE_SLOT_MAPPINGS, Set) => {
                read::<DeviceSlotMappingsSet>(command).map(|set| {
                    // One executor and one slot: slot 0 is the only mapping there is.
                    if set.slots == [0] {
                        Answer::ok(&DeviceSlotMappingsResponse { slots: set.slots })
                    } else {
                        Answer::fail(Status::InvalidParameters)
                    }
                })
            }
            (Uuid::MS_BASIC_CONNECT_EXTENSIONS, ext::SLOT_INFO_STATUS, Query) => read::<SlotInfoStatusQuery>(command)
                .map(|query| match query.slot_index {
                    0 => Answer::ok(&slot_info(world)),
                    _ => Answer::fail(Status::InvalidParameters),
                }),
            (Uuid::MS_BASIC_CONNECT_EXTENSIONS, ext::DEVICE_RESET, Set) => {
                world.reset();
                control::Device::reset(&mut self.qmi);
                self.channel_groups.clear();
                tracing::info!("the host reset the modem");
                Ok(Answer::ok(&DeviceResetResponse {}))
            }
            (Uuid::MS_UICC_LOW_LEVEL_ACCESS, uicc::ATR, Query) => Ok(if world.uicc.present {
                Answer::ok(&AtrResponse { atr: world.uicc.atr() })
            } else {
                Answer::fail(Status::SimNotInserted)
            }),
            (Uuid::MS_UICC_LOW_LEVEL_ACCESS, uicc::OPEN_CHANNEL, Set) => {
                read::<OpenChannelSet>(command).map(|set| self.open_channel(world, &set))
            }
            (Uuid::MS_UICC_LOW_LEVEL_ACCESS, uicc::CLOSE_CHANNEL, Set) => {
                read::<CloseChannelSet>(command).map(|set| self.close_channel(world, set))
            }
            (Uuid::MS_UICC_LOW_LEVEL_ACCESS, uicc::APDU, Set) => read::<ApduSet>(command).map(|set| apdu(world, &set)),
            (Uuid::QMI, qmi_service::MSG, Set) => read::<MsgSet>(command).map(|set| self.qmi_message(world, &set)),
            (Uuid::PROXY_CONTROL, proxy_control::CONFIGURATION, Set) => {
                // Meant for mbim-proxy; a client that takes the simulator for one may go on.
                read::<ConfigurationSet>(command).map(|_| Answer::ok(&ConfigurationResponse {}))
            }
            (service, cid, command_type) => {
                tracing::info!(%service, cid, %command_type, "unsupported command");
                Ok(Answer::fail(Status::NoDeviceSupport))
            }
        };
        result.unwrap_or_else(Answer::fail)
    }

    fn signal_state(&self, world: &World) -> SignalStateResponse {
        let SignalConfig {
            interval,
            rssi_threshold,
            error_rate_threshold,
        } = self.signal_config;
        SignalStateResponse {
            rssi: world.signal().map_or(99, Signal::csq),
            error_rate: 99,
            signal_strength_interval: interval,
            rssi_threshold,
            error_rate_threshold,
        }
    }

    /// Replaces the notifications the host gets; the answer lists what is now enabled.
    fn subscribe(&mut self, set: DeviceServiceSubscribeListSet) -> Answer {
        self.subscriptions = set
            .events
            .iter()
            .map(|EventEntry { service, cids }| (*service, cids.iter().copied().collect()))
            .collect();
        tracing::info!(services = self.subscriptions.len(), "notifications subscribed");
        Answer::ok(&DeviceServiceSubscribeListResponse { events: set.events })
    }

    fn subscribed(&self, service: Uuid, cid: u32) -> bool {
        self.subscriptions
            .get(&service)
            .is_some_and(|cids| cids.is_empty() || cids.contains(&cid))
    }

    fn open_channel(&mut self, world: &mut World, set: &OpenChannelSet) -> Answer {
        match world.uicc.open_channel(&set.app_id) {
            Ok((channel, mut response)) => {
                let sw = split_status_word(&mut response);
                self.channel_groups.insert(channel, set.channel_group);
                tracing::info!(channel, group = set.channel_group, "opened a logical channel");
                Answer::ok(&OpenChannelResponse {
                    status: uicc::status_from_word(sw),
                    channel: u32::from(channel),
                    response,
                })
            }
            Err(UiccError::Absent) => Answer::fail(Status::SimNotInserted),
            Err(UiccError::Status(sw)) => {
                let status = if sw == sw::NO_MORE_CHANNELS {
                    Status::MsNoLogicalChannels
                } else {
                    Status::MsSelectFailed
                };
                Answer::with(
                    status,
                    &OpenChannelResponse {
                        status: uicc::status_from_word(sw),
                        channel: 0,
                        response: Vec::new(),
                    },
                )
            }
        }
    }

    /// Closes one channel, or with channel 0 every channel the host opened in the group.
    fn close_channel(&mut self, world: &mut World, set: CloseChannelSet) -> Answer {
        let CloseChannelSet { channel, channel_group } = set;
        let channels: Vec<u8> = if channel == 0 {
            self.channel_groups
                .iter()
                .filter(|(_, group)| **group == channel_group)
                .map(|(channel, _)| *channel)
                .collect()
        } else {
            match u8::try_from(channel) {
                Ok(channel) if world.uicc.open_channels().contains(&channel) => vec![channel],
                _ => return Answer::fail(Status::MsInvalidLogicalChannel),
            }
        };
        for channel in channels {
            self.channel_groups.remove(&channel);
            match world.uicc.close_channel(channel) {
                Ok(()) => tracing::info!(channel, "closed a logical channel"),
                Err(UiccError::Absent) => return Answer::fail(Status::SimNotInserted),
                Err(UiccError::Status(_)) => return Answer::fail(Status::MsInvalidLogicalChannel),
            }
        }
        Answer::ok(&CloseChannelResponse {
            status: uicc::status_from_word(sw::OK),
        })
    }

    /// One QMUX frame to the QMI model and its answer back.
    fn qmi_message(&mut self, world: &mut World, set: &MsgSet) -> Answer {
        let request = match aiesim_qmi::Frame::decode(&set.qmux) {
            Ok(request) => request,
            Err(err) => {
                tracing::warn!(%err, "QMI over MBIM: not a QMUX frame");
                return Answer::fail(Status::InvalidParameters);
            }
        };
        let Some(answer) = self.qmi.handle(world, &request) else {
            return Answer::fail(Status::InvalidParameters);
        };
        match answer.encode() {
            Ok(qmux) => Answer::ok(&MsgResponse { qmux }),
            Err(err) => {
                tracing::error!(%err, "could not encode a QMI answer");
                Answer::fail(Status::Failure)
            }
        }
    }

    /// Notifications for what changed, to a host that subscribed to them.
    fn notifications(&mut self, world: &World, changes: crate::world::Changes) -> Vec<Indication> {
        let crate::world::Changes {
            signal,
            registration,
            packet,
            data,
            card,
            radio,
        } = changes;
        let mut out = Vec::new();
        let mut push = |subscribed: bool, indication: Result<Indication, aiesim_mbim::EncodeError>| {
            if subscribed {
                match indication {
                    Ok(indication) => out.push(indication),
                    Err(err) => tracing::error!(%err, "could not encode a notification"),
                }
            }
        };
        if radio {
            push(
                self.subscribed(Uuid::BASIC_CONNECT, bc::RADIO_STATE),
                radio_state(world).to_indication(),
            );
        }
        if card {
            push(
                self.subscribed(Uuid::BASIC_CONNECT, bc::SUBSCRIBER_READY_STATUS),
                subscriber_ready(world).to_indication(),
            );
            push(
                self.subscribed(Uuid::MS_BASIC_CONNECT_EXTENSIONS, ext::SLOT_INFO_STATUS),
                slot_info(world).to_indication(),
            );
        }
        if registration {
            push(
                self.subscribed(Uuid::BASIC_CONNECT, bc::REGISTER_STATE),
                register_state(world).to_indication(),
            );
        }
        if packet {
            push(
                self.subscribed(Uuid::BASIC_CONNECT, bc::PACKET_SERVICE),
                packet_service(world).to_indication(),
            );
        }
        if data {
            push(
                self.subscribed(Uuid::BASIC_CONNECT, bc::CONNECT),
                connect_state(world).to_indication(),
            );
        }
        let state = self.signal_state(world);
        // The signal drifts every tick; only a change in what MBIM reports is worth a message.
        if signal && self.last_rssi != Some(state.rssi) && self.subscribed(Uuid::BASIC_CONNECT, bc::SIGNAL_STATE) {
            self.last_rssi = Some(state.rssi);
            push(true, state.to_indication());
        }
        let qmi_subscribed = self.subscribed(Uuid::QMI, qmi_service::MSG);
        for frame in self.qmi.indications(world, changes) {
            match frame.encode() {
                Ok(qmux) => push(qmi_subscribed, MsgResponse { qmux }.to_indication()),
                Err(err) => tracing::error!(%err, "could not encode a QMI indication"),
            }
        }
        out
    }

    /// Writes messages as transfers no longer than the host's MaxControlTransfer.
    fn transfers(&self, world: &World, messages: Vec<ControlMessage>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for message in messages {
            match message.encode_fragments(self.max_control_transfer) {
                Ok(mut fragments) => {
                    if world.faults.fragment_errors && fragments.len() > 1 {
                        tracing::info!(transaction_id = message.transaction_id, "fault: fragments out of order");
                        fragments.swap(0, 1);
                    }
                    out.extend(fragments);
                }
                Err(err) => tracing::error!(%err, "could not encode an answer"),
            }
        }
        out
    }
}

impl control::Device for Device {
    fn receive(&mut self, world: &mut World, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut answers = Vec::new();
        while !bytes.is_empty() {
            let taken = self.splitter.push(bytes);
            bytes = &bytes[taken..];
            while let Some(transfer) = self.splitter.next_transfer() {
                let transfer = match transfer {
                    Ok(transfer) => transfer,
                    Err(err) => {
                        tracing::warn!(%err, "skipping bytes that are not MBIM");
                        continue;
                    }
                };
                match self.reassembler.push(&transfer) {
                    Ok(Some(message)) => {
                        tracing::debug!(?message, "from the host");
                        answers.extend(self.handle(world, message));
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(%err, "a message from the host could not be reassembled");
                        if let Some(tid) = err.transaction_id().filter(|_| reportable(&err)) {
                            answers.push(ControlMessage::new(tid, Body::FunctionError(err.protocol_error())));
                        }
                    }
                }
            }
        }
        self.transfers(world, answers)
    }

    fn changed(&mut self, world: &World, changes: crate::world::Changes) -> Vec<Vec<u8>> {
        if !self.open {
            return Vec::new();
        }
        let messages = self
            .notifications(world, changes)
            .into_iter()
            .map(|indication| ControlMessage::new(INDICATION_TID, Body::IndicateStatus(indication)))
            .collect();
        self.transfers(world, messages)
    }

    fn reset(&mut self) {
        // A reset function is closed and knows nothing of its host.
        *self = Self::new();
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "mbim {} max-control-transfer {}",
            if self.open { "open" } else { "closed" },
            self.max_control_transfer
        )];
        for (service, cids) in &self.subscriptions {
            let cids: Vec<String> = cids.iter().map(u32::to_string).collect();
            let name = service
                .service_name()
                .map_or_else(|| service.to_string(), str::to_owned);
            lines.push(format!("mbim subscribed {name} {}", cids.join(",")));
        }
        for (channel, group) in &self.channel_groups {
            lines.push(format!("mbim channel {channel} group {group}"));
        }
        lines.extend(self.qmi.describe());
        lines
    }
}

/// Whether a reassembly failure is answered (a transfer that is not MBIM at all is not).
fn reportable(err: &FragmentError) -> bool {
    !matches!(
        err,
        FragmentError::Decode {
            error: DecodeError::UnknownMessageType { .. },
            ..
        }
    )
}

/// Reads a COMMAND's information buffer; a malformed one is the host's InvalidParameters.
fn read<M: Message>(command: &Command) -> Result<M, Status> {
    M::from_command(command).map_err(|err| {
        tracing::warn!(message = M::NAME, %err, "malformed command");
        Status::InvalidParameters
    })
}

/// Takes the trailing SW1 SW2 off a card response.
fn split_status_word(response: &mut Vec<u8>) -> u16 {
    if response.len() < 2 {
        return sw::WRONG_LENGTH;
    }
    let sw = response.split_off(response.len() - 2);
    u16::from_be_bytes([sw[0], sw[1]])
}

fn device_caps(world: &World) -> DeviceCapsResponse {
    let identity = &world.identity;
    DeviceCapsResponse {
        device_type: DeviceType::EMBEDDED,
        cellular_class: cellular_class::GSM,
        voice_class: VoiceClass::NO_VOICE,
        sim_class: sim_class::LOGICAL,
        data_class: data_class::UMTS | data_class::HSDPA | data_class::HSUPA | data_class::LTE,
        sms_caps: 0,
        control_caps: ctrl_caps::REG_MANUAL | ctrl_caps::ESIM,
        max_sessions: 1,
        custom_data_class: String::new(),
        device_id: identity.imei.clone(),
        firmware_info: identity.revision.clone(),
        hardware_info: identity.model.clone(),
    }
}

fn subscriber_ready(world: &World) -> SubscriberReadyStatusResponse {
    let card = &world.uicc;
    if !card.present {
        return SubscriberReadyStatusResponse {
            ready_state: ReadyState::SIM_NOT_INSERTED,
            ..SubscriberReadyStatusResponse::default()
        };
    }
    SubscriberReadyStatusResponse {
        ready_state: ReadyState::INITIALIZED,
        subscriber_id: card.imsi.clone(),
        sim_iccid: card.iccid.clone(),
        ready_info: 0,
        telephone_numbers: Vec::new(),
    }
}

fn slot_info(world: &World) -> SlotInfoStatusResponse {
    SlotInfoStatusResponse {
        slot_index: 0,
        state: if world.uicc.present {
            SlotState::ACTIVE_ESIM
        } else {
            SlotState::EMPTY
        },
    }
}

const fn switch(on: bool) -> RadioSwitchState {
    if on {
        RadioSwitchState::ON
    } else {
        RadioSwitchState::OFF
    }
}

fn radio_state(world: &World) -> RadioStateResponse {
    RadioStateResponse {
        hw_radio_state: RadioSwitchState::ON,
        sw_radio_state: switch(world.radio_on),
    }
}

/// MCC and MNC as MBIM's ProviderId writes them, e.g. "00101" or "310260".
fn provider_id(world: &World) -> String {
    let network = &world.network;
    if network.mnc_three_digits {
        format!("{:03}{:03}", network.mcc, network.mnc)
    } else {
        format!("{:03}{:02}", network.mcc, network.mnc)
    }
}

fn register_state(world: &World) -> RegisterStateResponse {
    let registered = world.registration.is_registered();
    RegisterStateResponse {
        nw_error: 0,
        register_state: match world.registration {
            Registration::NotRegistered => RegisterState::DEREGISTERED,
            Registration::Searching => RegisterState::SEARCHING,
            Registration::Home => RegisterState::HOME,
            Registration::Roaming => RegisterState::ROAMING,
            Registration::Denied => RegisterState::DENIED,
        },
        register_mode: RegisterMode::AUTOMATIC,
        available_data_classes: if registered { data_class::LTE } else { 0 },
        current_cellular_class: cellular_class::GSM,
        provider_id: if registered { provider_id(world) } else { String::new() },
        provider_name: if registered {
            world.network.name.clone()
        } else {
            String::new()
        },
        roaming_text: String::new(),
        registration_flag: registration_flag::PACKET_SERVICE_AUTOMATIC_ATTACH,
    }
}

/// Automatic registration, or manual registration with the one network there is.
fn register(world: &mut World, set: &RegisterStateSet) -> Answer {
    if !world.radio_on {
        return Answer::with(Status::RadioPowerOff, &register_state(world));
    }
    if !world.uicc.present {
        return Answer::with(Status::SimNotInserted, &register_state(world));
    }
    if set.register_action == RegisterAction::MANUAL && set.provider_id != provider_id(world) {
        return Answer::with(Status::ProviderNotVisible, &register_state(world));
    }
    if !world.registration.is_registered() {
        world.set_registration(Registration::Home);
    }
    Answer::ok(&register_state(world))
}

fn packet_service(world: &World) -> PacketServiceResponse {
    let attached = world.packet_attached;
    PacketServiceResponse {
        nw_error: 0,
        packet_service_state: if attached {
            PacketServiceState::ATTACHED
        } else {
            PacketServiceState::DETACHED
        },
        highest_available_data_class: if attached { data_class::LTE } else { 0 },
        uplink_speed: world.current_rates().uplink_bps,
        downlink_speed: world.current_rates().downlink_bps,
    }
}

/// The simulated network attaches whenever it registers; a host cannot detach on its own.
fn packet_service_set(world: &World, set: PacketServiceSet) -> Answer {
    let status = match set.action {
        PacketServiceAction::ATTACH if world.packet_attached => Status::None,
        PacketServiceAction::ATTACH if !world.radio_on => Status::RadioPowerOff,
        PacketServiceAction::ATTACH => Status::NotRegistered,
        _ => Status::OperationNotAllowed,
    };
    Answer::with(status, &packet_service(world))
}

fn connect_state(world: &World) -> ConnectResponse {
    ConnectResponse {
        session_id: SESSION_ID,
        activation_state: if world.data.is_some() {
            ActivationState::ACTIVATED
        } else {
            ActivationState::DEACTIVATED
        },
        voice_call_state: VoiceCallState::NONE,
        ip_type: if world.data.is_some() {
            ContextIpType::IPV4
        } else {
            ContextIpType::DEFAULT
        },
        context_type: Uuid::CONTEXT_INTERNET,
        nw_error: 0,
    }
}

fn connect(world: &mut World, set: &ConnectSet) -> Answer {
    if set.session_id != SESSION_ID {
        return Answer::fail(Status::InvalidParameters);
    }
    let result = match set.activation_command {
        ActivationCommand::ACTIVATE => world.connect(&set.access_string).map(|session| {
            tracing::info!(apn = session.apn, address = %session.address, "data session up");
        }),
        ActivationCommand::DEACTIVATE => world.disconnect(None),
        _ => return Answer::fail(Status::InvalidParameters),
    };
    let status = match result {
        Ok(()) => Status::None,
        Err(ConnectError::RadioOff) => Status::RadioPowerOff,
        Err(ConnectError::NotRegistered) => Status::PacketServiceDetached,
        Err(ConnectError::NoCard) => Status::SimNotInserted,
        Err(ConnectError::AlreadyConnected) => Status::MaxActivatedContexts,
        Err(ConnectError::BadApn) => Status::InvalidAccessString,
        Err(ConnectError::NotConnected) => Status::ContextNotActivated,
    };
    Answer::with(status, &connect_state(world))
}

fn ip_configuration(world: &World, session_id: u32) -> Answer {
    let Some(session) = world.data.as_ref().filter(|_| session_id == SESSION_ID) else {
        return Answer::fail(Status::ContextNotActivated);
    };
    Answer::ok(&IpConfigurationResponse {
        session_id,
        ipv4_available: ip_available::ADDRESS | ip_available::GATEWAY | ip_available::DNS | ip_available::MTU,
        ipv6_available: 0,
        ipv4_addresses: vec![Ipv4Element {
            prefix_length: u32::from(session.prefix_len),
            address: session.address,
        }],
        ipv6_addresses: Vec::new(),
        ipv4_gateway: Some(session.gateway),
        ipv6_gateway: None,
        ipv4_dns: session.dns.to_vec(),
        ipv6_dns: Vec::new(),
        ipv4_mtu: session.mtu,
        ipv6_mtu: 0,
    })
}

fn device_services() -> DeviceServicesResponse {
    DeviceServicesResponse {
        max_dss_sessions: 0,
        device_services: SERVICES
            .iter()
            .map(|(service, cids)| DeviceServiceElement {
                service: *service,
                dss_payload: 0,
                max_dss_instances: 0,
                cids: cids.to_vec(),
            })
            .collect(),
    }
}

/// One command APDU on a channel the host opened (or the basic channel).
fn apdu(world: &mut World, set: &ApduSet) -> Answer {
    let channel = match u8::try_from(set.channel) {
        Ok(0) => 0,
        Ok(channel) if world.uicc.open_channels().contains(&channel) => channel,
        _ => return Answer::fail(Status::MsInvalidLogicalChannel),
    };
    match world.uicc.transmit(channel, &set.command) {
        Ok(mut response) => {
            let sw = split_status_word(&mut response);
            Answer::ok(&ApduResponse {
                status: uicc::status_from_word(sw),
                response,
            })
        }
        Err(UiccError::Absent) => Answer::fail(Status::SimNotInserted),
        Err(UiccError::Status(sw)) => Answer::ok(&ApduResponse {
            status: uicc::status_from_word(sw),
            response: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use aiesim_mbim::{Request, basic_connect::DeviceCapsQuery};

    use super::*;
    use crate::{control::Device as _, world::Changes};

    fn device() -> (Device, World) {
        (Device::new(), crate::world::tests::world())
    }

    /// Sends whole messages and reassembles the answers, as a host would.
    fn exchange((device, world): &mut (Device, World), messages: &[ControlMessage]) -> Vec<ControlMessage> {
        let mut host = Reassembler::new();
        let mut out = Vec::new();
        for message in messages {
            for transfer in device.receive(world, &message.encode().unwrap()) {
                out.extend(host.push(&transfer).unwrap());
            }
        }
        out
    }

    fn open(sim: &mut (Device, World), max: u32) {
        let answers = exchange(
            sim,
            &[ControlMessage::new(
                1,
                Body::Open {
                    max_control_transfer: max,
                },
            )],
        );
        assert_eq!(answers, [ControlMessage::new(1, Body::OpenDone(Status::None))]);
    }

    /// A typed request and its typed answer, failing statuses as errors.
    fn call<R: Request>(sim: &mut (Device, World), request: &R) -> Result<R::Response, Status> {
        let message = ControlMessage::new(7, Body::Command(request.to_command().unwrap()));
        let answers = exchange(sim, &[message]);
        let [
            ControlMessage {
                transaction_id: 7,
                body: Body::CommandDone(done),
            },
        ] = answers.as_slice()
        else {
            panic!("expected one COMMAND_DONE, got {answers:?}");
        };
        done.status.into_result()?;
        Ok(R::Response::from_command_done(done).unwrap())
    }

    #[test]
    fn commands_need_an_open_session() {
        let mut sim = device();
        let command = ControlMessage::new(3, Body::Command(DeviceCapsQuery {}.to_command().unwrap()));
        assert_eq!(
            exchange(&mut sim, std::slice::from_ref(&command)),
            [ControlMessage::new(3, Body::FunctionError(ProtocolError::NotOpened))]
        );
        open(&mut sim, 4096);
        let caps = call(&mut sim, &DeviceCapsQuery {}).unwrap();
        assert_eq!(caps.device_id, "356938035643809");
        assert_ne!(caps.control_caps & ctrl_caps::ESIM, 0);
        let closed = exchange(&mut sim, &[ControlMessage::new(4, Body::Close)]);
        assert_eq!(closed, [ControlMessage::new(4, Body::CloseDone(Status::None))]);
        assert!(matches!(
            exchange(&mut sim, &[command])[0].body,
            Body::FunctionError(ProtocolError::NotOpened)
        ));
    }

    #[test]
    fn answers_honour_the_hosts_max_control_transfer_and_host_fragments_are_reassembled() {
        let mut sim = device();
        open(&mut sim, 64);
        let query = ControlMessage::new(9, Body::Command(bc::DeviceServicesQuery {}.to_command().unwrap()));
        let transfers = sim.0.receive(&mut sim.1, &query.encode().unwrap());
        assert!(transfers.len() > 3, "DEVICE_SERVICES does not fit in 64 bytes");
        assert!(transfers.iter().all(|t| t.len() <= 64));
        let mut host = Reassembler::new();
        let answers: Vec<_> = transfers.iter().filter_map(|t| host.push(t).unwrap()).collect();
        let [
            ControlMessage {
                body: Body::CommandDone(done),
                ..
            },
        ] = answers.as_slice()
        else {
            panic!("{answers:?}")
        };
        let services = DeviceServicesResponse::from_command_done(done).unwrap();
        assert!(services.device_services.iter().any(|s| s.service == Uuid::QMI));

        // The host's APDU in 64-byte fragments, fed byte by byte.
        let (channel, _) = sim.1.uicc.open_channel(&crate::world::ISD_R_AID).unwrap();
        let set = ApduSet {
            channel: u32::from(channel),
            command: vec![0x81, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A],
            ..ApduSet::default()
        };
        let mut command = set.to_command().unwrap();
        command.info.extend([0; 100]); // trailing bytes a newer host might add
        let message = ControlMessage::new(10, Body::Command(command));
        let mut host = Reassembler::new();
        let mut answers = Vec::new();
        for fragment in message.encode_fragments(64).unwrap() {
            for byte in fragment {
                for transfer in sim.0.receive(&mut sim.1, &[byte]) {
                    answers.extend(host.push(&transfer).unwrap());
                }
            }
        }
        let [
            ControlMessage {
                transaction_id: 10,
                body: Body::CommandDone(done),
            },
        ] = answers.as_slice()
        else {
            panic!("{answers:?}")
        };
        let response = ApduResponse::from_command_done(done).unwrap();
        assert_eq!(uicc::status_word(response.status), 0x9000);
        assert_eq!(response.response[5..], sim.1.uicc.eid);
    }

    #[test]
    fn bad_host_fragments_get_a_function_error() {
        let mut sim = device();
        open(&mut sim, 4096);
        let message = ControlMessage::new(
            11,
            Body::Command(
                ApduSet {
                    command: vec![0; 200],
                    ..ApduSet::default()
                }
                .to_command()
                .unwrap(),
            ),
        );
        let fragments = message.encode_fragments(64).unwrap();
        assert!(sim.0.receive(&mut sim.1, &fragments[0]).is_empty());
        let answer = sim.0.receive(&mut sim.1, &fragments[2]);
        assert_eq!(
            answer,
            [
                ControlMessage::new(11, Body::FunctionError(ProtocolError::FragmentOutOfSequence))
                    .encode()
                    .unwrap()
            ]
        );
    }

    #[test]
    fn the_fragment_fault_swaps_fragments() {
        let mut sim = device();
        open(&mut sim, 64);
        sim.1.faults.fragment_errors = true;
        let query = ControlMessage::new(5, Body::Command(bc::DeviceServicesQuery {}.to_command().unwrap()));
        let transfers = sim.0.receive(&mut sim.1, &query.encode().unwrap());
        let mut host = Reassembler::new();
        assert!(matches!(
            host.push(&transfers[0]),
            Err(FragmentError::OutOfSequence {
                expected: 0,
                got: 1,
                ..
            })
        ));
    }

    #[test]
    fn radio_connect_and_ip_configuration_come_from_the_world() {
        let mut sim = device();
        open(&mut sim, 4096);
        let connect = ConnectSet {
            activation_command: ActivationCommand::ACTIVATE,
            access_string: "internet".into(),
            context_type: Uuid::CONTEXT_INTERNET,
            ..ConnectSet::default()
        };
        let up = call(&mut sim, &connect).unwrap();
        assert_eq!(up.activation_state, ActivationState::ACTIVATED);
        assert_eq!(sim.1.data.as_ref().unwrap().apn, "internet");
        let ip = call(&mut sim, &IpConfigurationQuery { session_id: 0 }).unwrap();
        assert_eq!(ip.ipv4_addresses[0].address, sim.1.data.as_ref().unwrap().address);
        assert_eq!(ip.ipv4_dns.len(), 2);
        assert_eq!(call(&mut sim, &connect), Err(Status::MaxActivatedContexts));

        let off = call(
            &mut sim,
            &RadioStateSet {
                radio_state: RadioSwitchState::OFF,
            },
        )
        .unwrap();
        assert_eq!(off.sw_radio_state, RadioSwitchState::OFF);
        assert!(!sim.1.radio_on);
        assert!(sim.1.data.is_none(), "the radio took the session down");
        assert_eq!(call(&mut sim, &bc::SignalStateQuery {}).unwrap().rssi, 99);
        assert_eq!(call(&mut sim, &connect), Err(Status::RadioPowerOff));
        assert_eq!(
            call(&mut sim, &bc::RegisterStateQuery {}).unwrap().register_state,
            RegisterState::DEREGISTERED
        );
        call(
            &mut sim,
            &RadioStateSet {
                radio_state: RadioSwitchState::ON,
            },
        )
        .unwrap();
        let registered = call(&mut sim, &bc::RegisterStateQuery {}).unwrap();
        assert_eq!(registered.register_state, RegisterState::HOME);
        assert_eq!(registered.provider_id, "00101");
        assert!(call(&mut sim, &bc::SignalStateQuery {}).unwrap().rssi <= 31);
    }

    #[test]
    fn notifications_go_to_a_subscribed_host_only() {
        let mut sim = device();
        open(&mut sim, 4096);
        sim.1.set_rssi(-80);
        let changes = sim.1.take_changes();
        assert!(sim.0.changed(&sim.1, changes).is_empty(), "nothing subscribed yet");
        call(
            &mut sim,
            &DeviceServiceSubscribeListSet {
                events: vec![EventEntry {
                    service: Uuid::BASIC_CONNECT,
                    cids: vec![bc::SIGNAL_STATE, bc::REGISTER_STATE],
                }],
            },
        )
        .unwrap();
        sim.1.set_rssi(-60);
        sim.1.set_registration(Registration::Roaming);
        let changes = sim.1.take_changes();
        let indications: Vec<_> = sim
            .0
            .changed(&sim.1, changes)
            .iter()
            .map(|t| ControlMessage::decode(t).unwrap())
            .collect();
        let mut saw = (false, false);
        for message in &indications {
            let Body::IndicateStatus(indication) = &message.body else {
                panic!("{message:?}")
            };
            if let Ok(signal) = SignalStateResponse::from_indication(indication) {
                assert_eq!(Some(signal.rssi), sim.1.signal().map(Signal::csq));
                saw.0 = true;
            }
            if let Ok(register) = RegisterStateResponse::from_indication(indication) {
                assert_eq!(register.register_state, RegisterState::ROAMING);
                saw.1 = true;
            }
        }
        assert_eq!(saw, (true, true), "{indications:?}");
        // PACKET_SERVICE changed too but was not asked for; the same signal is not repeated.
        assert_eq!(indications.len(), 2);
        let again = Changes {
            signal: true,
            ..Changes::default()
        };
        assert!(sim.0.changed(&sim.1, again).is_empty());
    }

    #[test]
    fn uicc_channels_apdus_and_qmi_over_mbim() {
        let mut sim = device();
        open(&mut sim, 4096);
        let opened = call(
            &mut sim,
            &OpenChannelSet {
                app_id: crate::world::ISD_R_AID.to_vec(),
                select_p2_arg: 0,
                channel_group: 1,
            },
        )
        .unwrap();
        assert_eq!(uicc::status_word(opened.status), 0x9000);
        assert_eq!(opened.response[0], 0x6F, "the FCI, without its status word");
        let missing = call(
            &mut sim,
            &OpenChannelSet {
                app_id: vec![0xA0, 0x01],
                ..OpenChannelSet::default()
            },
        );
        assert_eq!(missing, Err(Status::MsSelectFailed));
        call(
            &mut sim,
            &CloseChannelSet {
                channel: 0,
                channel_group: 1,
            },
        )
        .unwrap();
        assert!(sim.1.uicc.open_channels().is_empty());
        let stale = call(
            &mut sim,
            &ApduSet {
                channel: opened.channel,
                command: vec![0x81, 0xE2, 0x91, 0x00],
                ..ApduSet::default()
            },
        );
        assert_eq!(stale, Err(Status::MsInvalidLogicalChannel));

        // QMI: CTL Allocate CID for DMS, then DMS Get IDs on the client id it got.
        let allocate = aiesim_qmi::ctl::AllocateCid {
            service: aiesim_qmi::Service::DMS,
        };
        let request = aiesim_qmi::Message::to_frame(&allocate, 0, 1)
            .unwrap()
            .encode()
            .unwrap();
        let answer = call(&mut sim, &MsgSet { qmux: request }).unwrap();
        let frame = aiesim_qmi::Frame::decode(&answer.qmux).unwrap();
        let allocated = <aiesim_qmi::ctl::AllocateCidResponse as aiesim_qmi::Message>::from_frame(&frame).unwrap();
        let request = aiesim_qmi::Message::to_frame(&aiesim_qmi::dms::GetIds, allocated.client_id, 2)
            .unwrap()
            .encode()
            .unwrap();
        let answer = call(&mut sim, &MsgSet { qmux: request }).unwrap();
        let frame = aiesim_qmi::Frame::decode(&answer.qmux).unwrap();
        let ids = <aiesim_qmi::dms::GetIdsResponse as aiesim_qmi::Message>::from_frame(&frame).unwrap();
        assert_eq!(ids.imei.as_deref(), Some("356938035643809"));
        assert_eq!(
            call(&mut sim, &MsgSet { qmux: vec![0xde, 0xad] }),
            Err(Status::InvalidParameters)
        );
    }

    #[test]
    fn unknown_commands_are_not_supported() {
        let mut sim = device();
        open(&mut sim, 4096);
        let message = ControlMessage::new(
            12,
            Body::Command(Command {
                service: Uuid::SMS,
                cid: 1,
                command_type: CommandType::Query,
                info: Vec::new(),
            }),
        );
        let answers = exchange(&mut sim, &[message]);
        assert!(matches!(
            &answers[0].body,
            Body::CommandDone(CommandDone {
                status: Status::NoDeviceSupport,
                ..
            })
        ));
    }
}
