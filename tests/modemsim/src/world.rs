//! The simulated modem's one state: what both protocol models (QMI and MBIM) report and change.
//!
//! The models translate requests into calls on [`World`] and the world's [`Changes`] into
//! indications, so `qmicli` and `mbimcli` always see the same modem.

use std::{net::Ipv4Addr, time::Duration};

use crate::euicc;

/// What the modem says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub imei: String,
    pub manufacturer: String,
    pub model: String,
    pub revision: String,
}

/// What changed since the models last turned changes into indications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "one flag per kind of indication")]
pub struct Changes {
    pub signal: bool,
    pub registration: bool,
    pub packet: bool,
    pub data: bool,
    pub card: bool,
    pub radio: bool,
}

impl Changes {
    pub const fn any(self) -> bool {
        let Self {
            signal,
            registration,
            packet,
            data,
            card,
            radio,
        } = self;
        signal || registration || packet || data || card || radio
    }
}

/// Registration with the (simulated) network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    NotRegistered,
    Searching,
    Home,
    Roaming,
    Denied,
}

impl Registration {
    pub const fn is_registered(self) -> bool {
        matches!(self, Self::Home | Self::Roaming)
    }
}

/// The operator the modem is registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub mcc: u16,
    pub mnc: u16,
    /// Three-digit MNCs (e.g. 310-260) are written with a leading zero.
    pub mnc_three_digits: bool,
    pub name: String,
    pub tracking_area: u16,
    pub cell_id: u32,
}

/// LTE signal as the radio measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    pub rssi_dbm: i8,
    pub rsrp_dbm: i16,
    pub rsrq_db: i8,
    /// Signal-to-noise ratio in tenths of a dB, as QMI reports it.
    pub snr_tenth_db: i16,
}

impl Signal {
    const fn from_rssi(rssi_dbm: i8) -> Self {
        Self {
            rssi_dbm,
            rsrp_dbm: rssi_dbm as i16 - 25,
            rsrq_db: -10,
            snr_tenth_db: (rssi_dbm as i16 + 113) * 5,
        }
    }

    /// The 0–31 (99 unknown) scale MBIM and 3GPP TS 27.007 `+CSQ` use.
    pub fn csq(self) -> u32 {
        u32::try_from(i32::midpoint(i32::from(self.rssi_dbm), 113))
            .unwrap_or(0)
            .min(31)
    }
}

/// An IPv4 data session (one bearer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSession {
    /// The packet data handle QMI reports and Stop Network takes.
    pub handle: u32,
    pub apn: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: [Ipv4Addr; 2],
    pub mtu: u32,
}

/// How the data session's addresses are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: [Ipv4Addr; 2],
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("the radio is off")]
    RadioOff,
    #[error("the modem is not registered with a network")]
    NotRegistered,
    #[error("no SIM card is present")]
    NoCard,
    #[error("a data session is already up")]
    AlreadyConnected,
    #[error("an APN is at most 100 bytes")]
    BadApn,
    #[error("no data session with that handle is up")]
    NotConnected,
}

/// Faults the protocol models apply themselves (the control loop handles the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// The QMI model refuses client ids beyond this many per service (`ClientIdsExhausted`).
    pub max_clients_per_service: usize,
    /// The MBIM model sends multi-fragment answers with their fragments out of order.
    pub fragment_errors: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            max_clients_per_service: 32,
            fragment_errors: false,
        }
    }
}

/// Uplink and downlink rates in bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub uplink_bps: u64,
    pub downlink_bps: u64,
}

impl Default for Rates {
    fn default() -> Self {
        // An LTE category 4 uplink and downlink.
        Self {
            uplink_bps: 50_000_000,
            downlink_bps: 150_000_000,
        }
    }
}

/// The whole simulated modem.
pub struct World {
    pub identity: Identity,
    pub radio_on: bool,
    pub registration: Registration,
    pub network: Network,
    signal: Signal,
    /// Where the slow drift of the signal is in its cycle.
    drift_step: u32,
    pub packet_attached: bool,
    /// The channel rates the network grants while attached, bit/s.
    pub rates: Rates,
    pub data: Option<DataSession>,
    addressing: Addressing,
    next_handle: u32,
    pub uicc: Uicc,
    pub faults: Faults,
    changes: Changes,
}

/// How the signal drifts around its base level, one step per tick (dB).
const DRIFT: [i8; 8] = [0, -1, -3, -4, -5, -4, -3, -1];

impl World {
    pub fn new(identity: Identity, addressing: Addressing, rssi_dbm: i8) -> Self {
        Self {
            identity,
            radio_on: true,
            registration: Registration::Home,
            network: Network {
                mcc: 1,
                mnc: 1,
                mnc_three_digits: false,
                name: "aiesim test network".into(),
                tracking_area: 0x2a,
                cell_id: 0x0001_a2b3,
            },
            signal: Signal::from_rssi(rssi_dbm),
            drift_step: 0,
            packet_attached: true,
            rates: Rates::default(),
            data: None,
            addressing,
            next_handle: 0x1000_0001,
            uicc: Uicc::new(),
            faults: Faults::default(),
            changes: Changes::default(),
        }
    }

    /// The signal now; `None` while the radio is off.
    pub fn signal(&self) -> Option<Signal> {
        self.radio_on.then(|| {
            let drift = DRIFT[self.drift_step as usize % DRIFT.len()];
            Signal::from_rssi(self.signal.rssi_dbm.saturating_add(drift))
        })
    }

    /// Sets the signal's base level (a fault or a test moving the device).
    pub fn set_rssi(&mut self, rssi_dbm: i8) {
        self.signal = Signal::from_rssi(rssi_dbm);
        self.changes.signal = true;
    }

    /// One step of simulated time (about a second): the signal drifts.
    pub fn tick(&mut self) {
        self.drift_step = self.drift_step.wrapping_add(1);
        if self.radio_on {
            self.changes.signal = true;
        }
    }

    /// The network grants other rates (a new cell, a new radio technology, congestion).
    pub fn set_rates(&mut self, rates: Rates) {
        if self.rates != rates {
            self.rates = rates;
            self.changes.packet = true;
        }
    }

    /// The rates reported now: none while packet service is detached.
    pub fn current_rates(&self) -> Rates {
        if self.packet_attached {
            self.rates
        } else {
            Rates {
                uplink_bps: 0,
                downlink_bps: 0,
            }
        }
    }

    /// Turns the radio on (registers and attaches) or off (drops everything).
    pub fn set_radio(&mut self, on: bool) {
        if self.radio_on == on {
            return;
        }
        self.radio_on = on;
        self.changes.radio = true;
        self.changes.signal = true;
        if on {
            self.set_registration(if self.uicc.present {
                Registration::Home
            } else {
                Registration::NotRegistered
            });
        } else {
            self.set_registration(Registration::NotRegistered);
        }
    }

    /// Registration changes attach or detach packet service; losing it drops the data session.
    pub fn set_registration(&mut self, registration: Registration) {
        if self.registration != registration {
            self.registration = registration;
            self.changes.registration = true;
        }
        let attached = registration.is_registered();
        if self.packet_attached != attached {
            self.packet_attached = attached;
            self.changes.packet = true;
        }
        if !attached && self.data.take().is_some() {
            self.changes.data = true;
        }
    }

    /// Brings up the data session on `apn`.
    pub fn connect(&mut self, apn: &str) -> Result<DataSession, ConnectError> {
        if !self.radio_on {
            return Err(ConnectError::RadioOff);
        }
        if !self.uicc.present {
            return Err(ConnectError::NoCard);
        }
        if !self.registration.is_registered() {
            return Err(ConnectError::NotRegistered);
        }
        if self.data.is_some() {
            return Err(ConnectError::AlreadyConnected);
        }
        if apn.len() > 100 {
            return Err(ConnectError::BadApn);
        }
        let Addressing {
            address,
            prefix_len,
            gateway,
            dns,
            mtu,
        } = self.addressing;
        let session = DataSession {
            handle: self.next_handle,
            apn: apn.to_owned(),
            address,
            prefix_len,
            gateway,
            dns,
            mtu,
        };
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.data = Some(session.clone());
        self.changes.data = true;
        Ok(session)
    }

    /// Tears down the data session; `None` tears down whichever is up.
    pub fn disconnect(&mut self, handle: Option<u32>) -> Result<(), ConnectError> {
        match &self.data {
            Some(session) if handle.is_none_or(|h| h == session.handle) => {
                self.data = None;
                self.changes.data = true;
                Ok(())
            }
            _ => Err(ConnectError::NotConnected),
        }
    }

    /// Takes the card out or puts it back; without a card the modem deregisters.
    pub fn set_card_present(&mut self, present: bool) {
        if self.uicc.present == present {
            return;
        }
        self.uicc.set_present(present);
        self.changes.card = true;
        if self.radio_on {
            self.set_registration(if present {
                Registration::Home
            } else {
                Registration::NotRegistered
            });
        }
    }

    /// A modem reset: the radio comes back up registered, with no data session.
    pub fn reset(&mut self) {
        self.data = None;
        self.radio_on = true;
        self.uicc.close_all();
        self.registration = if self.uicc.present {
            Registration::Home
        } else {
            Registration::NotRegistered
        };
        self.packet_attached = self.registration.is_registered();
        self.changes = Changes::default();
    }

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        // A profile switch on the ISD-R reaches the host like any other card change.
        if let Some(enabled) = self.uicc.refresh.take() {
            // The modem reads the card's files again: the ICCID is the enabled profile's.
            if let euicc::Enabled::Profile(iccid) = enabled {
                self.uicc.iccid = iccid;
            }
            self.changes.card = true;
        }
        std::mem::take(&mut self.changes)
    }
}

/// Status words the simulated card answers with.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const CHANNEL_NOT_SUPPORTED: u16 = 0x6881;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const INCORRECT_DATA: u16 = 0x6A80;
    pub const NO_MORE_CHANNELS: u16 = 0x6A81;
    pub const NOT_FOUND: u16 = 0x6A82;
    pub const WRONG_P1_P2: u16 = 0x6A86;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
}

/// An application on the card, selected by AID on a logical channel.
pub trait Applet: Send {
    /// The short name the control socket's `card fail` command knows it by.
    fn name(&self) -> &'static str;
    fn aid(&self) -> &[u8];
    /// The SELECT response's data (the FCI), without the status word.
    fn select(&mut self) -> Vec<u8>;
    /// Answers one command APDU (the channel bits of CLA already dealt with); data ‖ SW1 SW2.
    fn process(&mut self, apdu: &[u8]) -> Vec<u8>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UiccError {
    #[error("no card is present")]
    Absent,
    #[error("the card refused with status word {0:04X}")]
    Status(u16),
}

/// Faults the card applies on cue (the control socket's `card …` commands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardFaults {
    /// Opening a logical channel is refused with `6A81` (no channel left), as a card whose
    /// channels another host application holds does.
    pub refuse_channels: bool,
    /// The next commands to one applet (or any) are answered with a status word alone.
    pub fail: Option<FailNext>,
    /// How long the card takes over each command.
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailNext {
    pub sw: u16,
    pub remaining: u32,
    /// The applet's name (`isd-r`, `iot-safe`, `ai`); `None`: every applet.
    pub applet: Option<String>,
}

/// Logical channels a card offers (ISO 7816-4: 1–19, 0 is the basic channel).
pub const CHANNELS: usize = 20;

/// What an open logical channel has selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    Nothing,
    Applet(usize),
}

/// The card in the slot: identity, ATR and applets on logical channels.
pub struct Uicc {
    pub present: bool,
    pub iccid: String,
    pub imsi: String,
    pub eid: [u8; 16],
    atr: Vec<u8>,
    applets: Vec<Box<dyn Applet>>,
    /// What each channel has selected; `None`: the channel is closed.
    channels: [Option<Selected>; CHANNELS],
    /// Raised by the ISD-R when a profile was enabled or disabled.
    refresh: euicc::Refresh,
    /// The AI applet's account as the control socket sees it.
    pub ai: euicc::AiProbe,
    pub faults: CardFaults,
    /// Card time spent on the commands since the control loop last asked.
    busy: Duration,
}

/// The ISD-R's AID (SGP.22).
pub const ISD_R_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01, 0x00,
];

impl Uicc {
    fn new() -> Self {
        let eid = [
            0x89, 0x04, 0x90, 0x32, 0x00, 0x20, 0x26, 0x12, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x23,
        ];
        let mut channels = [None; CHANNELS];
        channels[0] = Some(Selected::Nothing);
        let iccid = "8988211000000000017";
        let refresh = euicc::Refresh::default();
        let ai = euicc::AiProbe::default();
        let applets = euicc::applets(eid, iccid, &euicc::Config::default(), &refresh, &ai)
            .expect("the default card reads no file and has a valid ICCID");
        Self {
            present: true,
            iccid: iccid.into(),
            imsi: "001010000000017".into(),
            eid,
            atr: Self::make_atr(),
            applets,
            channels,
            refresh,
            ai,
            faults: CardFaults::default(),
            busy: Duration::ZERO,
        }
    }

    /// The card time the commands since the last call took: their answers wait that long.
    pub fn take_busy(&mut self) -> Duration {
        std::mem::take(&mut self.busy)
    }

    /// The status word an injected fault answers a command to `applet` with, if one applies.
    fn injected(&mut self, applet: usize) -> Option<u16> {
        let name = self.applets[applet].name();
        let fail = self.faults.fail.as_mut()?;
        if fail.applet.as_deref().is_some_and(|a| a != name) {
            return None;
        }
        let sw = fail.sw;
        fail.remaining = fail.remaining.saturating_sub(1);
        if fail.remaining == 0 {
            self.faults.fail = None;
        }
        tracing::info!(applet = name, sw = format_args!("{sw:04X}"), "injected card fault");
        Some(sw)
    }

    /// Rebuilds the eUICC's applets (ISD-R, `IoT` SAFE, AI applet) from the card's options,
    /// with fresh keys; open channels are closed.
    pub fn configure_euicc(&mut self, config: &euicc::Config) -> Result<(), euicc::Error> {
        self.applets = euicc::applets(self.eid, &self.iccid, config, &self.refresh, &self.ai)?;
        self.close_all();
        Ok(())
    }

    /// The answer to reset.
    pub fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    /// T=0 and T=15 (UICC) interface bytes, 15 historical bytes, and the check byte TCK that
    /// any ATR offering more than T=0 needs.
    fn make_atr() -> Vec<u8> {
        let mut atr = vec![0x3B, 0x9F, 0x96, 0x80, 0x1F, 0xC7];
        atr.extend_from_slice(&[
            0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x1B, 0x66, 0xD0, 0x01, 0x7B, 0x1F, 0x0F, 0x00, 0x00,
        ]);
        let tck = atr[1..].iter().fold(0, |acc, b| acc ^ b);
        atr.push(tck);
        atr
    }

    fn set_present(&mut self, present: bool) {
        self.present = present;
        self.close_all();
    }

    fn close_all(&mut self) {
        self.channels = [None; CHANNELS];
        self.channels[0] = Some(Selected::Nothing);
    }

    /// Open logical channels besides the basic one.
    pub fn open_channels(&self) -> Vec<u8> {
        (1..CHANNELS)
            .filter(|&c| self.channels[c].is_some())
            .filter_map(|c| u8::try_from(c).ok())
            .collect()
    }

    /// Opens a logical channel and selects `aid` on it: the channel and the SELECT response
    /// (FCI ‖ SW1 SW2).
    pub fn open_channel(&mut self, aid: &[u8]) -> Result<(u8, Vec<u8>), UiccError> {
        if !self.present {
            return Err(UiccError::Absent);
        }
        self.busy += self.faults.delay;
        let applet = self.find(aid).ok_or(UiccError::Status(sw::NOT_FOUND))?;
        if self.faults.refuse_channels {
            return Err(UiccError::Status(sw::NO_MORE_CHANNELS));
        }
        if let Some(sw) = self.injected(applet) {
            return Err(UiccError::Status(sw));
        }
        let channel = (1..CHANNELS)
            .find(|&c| self.channels[c].is_none())
            .ok_or(UiccError::Status(sw::NO_MORE_CHANNELS))?;
        self.channels[channel] = Some(Selected::Applet(applet));
        let mut response = self.applets[applet].select();
        response.extend_from_slice(&sw::OK.to_be_bytes());
        Ok((u8::try_from(channel).unwrap_or(0), response))
    }

    pub fn close_channel(&mut self, channel: u8) -> Result<(), UiccError> {
        if !self.present {
            return Err(UiccError::Absent);
        }
        match self.channels.get_mut(usize::from(channel)) {
            Some(slot @ Some(_)) if channel != 0 => {
                *slot = None;
                Ok(())
            }
            _ => Err(UiccError::Status(sw::WRONG_P1_P2)),
        }
    }

    /// Sends one command APDU on `channel`: data ‖ SW1 SW2. MANAGE CHANNEL and SELECT by AID
    /// work as on a card reader; everything else goes to the channel's selected applet.
    pub fn transmit(&mut self, channel: u8, apdu: &[u8]) -> Result<Vec<u8>, UiccError> {
        if !self.present {
            return Err(UiccError::Absent);
        }
        self.busy += self.faults.delay;
        let status = |sw: u16| Ok(sw.to_be_bytes().to_vec());
        let Some(Some(selected)) = self.channels.get(usize::from(channel)).copied() else {
            return status(sw::CHANNEL_NOT_SUPPORTED);
        };
        let [_cla, ins, p1, p2, rest @ ..] = apdu else {
            return status(sw::WRONG_LENGTH);
        };
        match (ins, p1) {
            (0x70, 0x00) if self.faults.refuse_channels => status(sw::NO_MORE_CHANNELS),
            (0x70, 0x00) => {
                let Some(free) = (1..CHANNELS).find(|&c| self.channels[c].is_none()) else {
                    return status(sw::NO_MORE_CHANNELS);
                };
                self.channels[free] = Some(Selected::Nothing);
                let mut out = vec![u8::try_from(free).unwrap_or(0)];
                out.extend_from_slice(&sw::OK.to_be_bytes());
                Ok(out)
            }
            (0x70, 0x80) => match self.close_channel(*p2) {
                Ok(()) => status(sw::OK),
                Err(UiccError::Status(sw)) => status(sw),
                Err(err) => Err(err),
            },
            (0xA4, 0x04) => {
                let aid = match rest {
                    [lc, data @ ..] if data.len() >= usize::from(*lc) => &data[..usize::from(*lc)],
                    _ => return status(sw::WRONG_LENGTH),
                };
                let Some(applet) = self.find(aid) else {
                    return status(sw::NOT_FOUND);
                };
                self.channels[usize::from(channel)] = Some(Selected::Applet(applet));
                let mut out = self.applets[applet].select();
                out.extend_from_slice(&sw::OK.to_be_bytes());
                Ok(out)
            }
            _ => match selected {
                Selected::Applet(applet) => match self.injected(applet) {
                    Some(sw) => status(sw),
                    None => Ok(self.applets[applet].process(apdu)),
                },
                Selected::Nothing => status(sw::CONDITIONS_NOT_SATISFIED),
            },
        }
    }

    fn find(&self, aid: &[u8]) -> Option<usize> {
        // A partial AID selects the first applet it is a prefix of (ISO 7816-4 "first occurrence").
        (!aid.is_empty())
            .then(|| self.applets.iter().position(|a| a.aid().starts_with(aid)))
            .flatten()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A world with the simulator's defaults, for the models' tests.
    pub fn world() -> World {
        World::new(
            Identity {
                imei: "356938035643809".into(),
                manufacturer: "aiesim".into(),
                model: "sim".into(),
                revision: "1".into(),
            },
            Addressing {
                address: Ipv4Addr::new(192, 0, 2, 2),
                prefix_len: 24,
                gateway: Ipv4Addr::new(192, 0, 2, 1),
                dns: [Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)],
                mtu: 1500,
            },
            -70,
        )
    }

    #[test]
    fn the_signal_drifts_and_vanishes_with_the_radio() {
        let mut world = world();
        let first = world.signal().unwrap();
        world.tick();
        world.tick();
        let later = world.signal().unwrap();
        assert_ne!(first, later);
        assert!(world.take_changes().signal);
        assert!(!world.take_changes().any());
        world.set_radio(false);
        assert_eq!(world.signal(), None);
        let changes = world.take_changes();
        assert!(changes.radio && changes.registration && changes.packet);
        assert_eq!(world.registration, Registration::NotRegistered);
        assert_eq!(Signal::from_rssi(-51).csq(), 31);
        assert_eq!(Signal::from_rssi(-113).csq(), 0);
    }

    #[test]
    fn a_data_session_needs_radio_card_and_registration() {
        let mut world = world();
        let session = world.connect("internet").unwrap();
        assert_eq!(world.connect("internet"), Err(ConnectError::AlreadyConnected));
        assert_eq!(
            world.disconnect(Some(session.handle + 1)),
            Err(ConnectError::NotConnected)
        );
        world.disconnect(Some(session.handle)).unwrap();
        world.set_card_present(false);
        assert_eq!(world.connect("internet"), Err(ConnectError::NoCard));
        world.set_card_present(true);
        world.connect("internet").unwrap();
        world.set_radio(false);
        assert_eq!(world.data, None, "losing the radio drops the session");
        assert_eq!(world.connect("internet"), Err(ConnectError::RadioOff));
    }

    #[test]
    fn channels_open_select_answer_and_close() {
        let mut uicc = Uicc::new();
        let (channel, select) = uicc.open_channel(&ISD_R_AID).unwrap();
        assert_eq!(channel, 1);
        assert_eq!(&select[select.len() - 2..], [0x90, 0x00]);
        let eid = uicc
            .transmit(
                channel,
                &[0x81, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A],
            )
            .unwrap();
        assert_eq!(&eid[..5], [0xBF, 0x3E, 0x12, 0x5A, 0x10]);
        assert_eq!(&eid[5..21], uicc.eid);
        assert_eq!(uicc.open_channels(), [1]);
        uicc.close_channel(channel).unwrap();
        assert_eq!(uicc.close_channel(channel), Err(UiccError::Status(sw::WRONG_P1_P2)));
        assert_eq!(uicc.transmit(channel, &[0x81, 0xE2, 0x91, 0x00]).unwrap(), [0x68, 0x81]);
        assert_eq!(uicc.open_channel(&[0xA0, 0x01]), Err(UiccError::Status(sw::NOT_FOUND)));

        // The card-reader path: MANAGE CHANNEL then SELECT on the new channel.
        let opened = uicc.transmit(0, &[0x00, 0x70, 0x00, 0x00, 0x01]).unwrap();
        assert_eq!(opened, [0x01, 0x90, 0x00]);
        let mut select = vec![0x01, 0xA4, 0x04, 0x00, 16];
        select.extend_from_slice(&ISD_R_AID);
        assert!(uicc.transmit(1, &select).unwrap().ends_with(&[0x90, 0x00]));
        for _ in 2..CHANNELS {
            uicc.open_channel(&ISD_R_AID).unwrap();
        }
        assert_eq!(
            uicc.open_channel(&ISD_R_AID),
            Err(UiccError::Status(sw::NO_MORE_CHANNELS))
        );
        uicc.set_present(false);
        assert_eq!(uicc.transmit(0, &[0, 0x70, 0, 0, 1]), Err(UiccError::Absent));
    }

    #[test]
    fn injected_card_faults_answer_then_wear_off() {
        let mut uicc = Uicc::new();
        uicc.faults.refuse_channels = true;
        assert_eq!(
            uicc.open_channel(&ISD_R_AID),
            Err(UiccError::Status(sw::NO_MORE_CHANNELS))
        );
        assert_eq!(uicc.transmit(0, &[0, 0x70, 0, 0, 1]).unwrap(), [0x6A, 0x81]);
        uicc.faults.refuse_channels = false;
        // Two failures for the AI applet only: the ISD-R still answers.
        uicc.faults.fail = Some(FailNext {
            sw: 0x6982,
            remaining: 2,
            applet: Some("ai".into()),
        });
        let (isd_r, _) = uicc.open_channel(&ISD_R_AID).unwrap();
        let get_eid = [0x81, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A];
        assert!(uicc.transmit(isd_r, &get_eid).unwrap().ends_with(&[0x90, 0x00]));
        for _ in 0..2 {
            assert_eq!(
                uicc.open_channel(&aiesim_ai_applet::AID),
                Err(UiccError::Status(0x6982))
            );
        }
        let (ai, select) = uicc.open_channel(&aiesim_ai_applet::AID).unwrap();
        assert!(select.ends_with(&[0x90, 0x00]) && ai != 0);
        assert_eq!(uicc.faults.fail, None, "the fault wore off");
        // A slow card is busy for as long per command, until asked.
        uicc.faults.delay = Duration::from_millis(40);
        uicc.transmit(isd_r, &get_eid).unwrap();
        uicc.transmit(isd_r, &get_eid).unwrap();
        assert_eq!(uicc.take_busy(), Duration::from_millis(80));
        assert_eq!(uicc.take_busy(), Duration::ZERO);
    }

    #[test]
    fn the_atr_checks_out() {
        let atr = Uicc::new().atr();
        assert_eq!(atr[0], 0x3B);
        assert_eq!(
            usize::from(atr[1] & 0x0F),
            atr.len() - 7,
            "T0 counts the historical bytes"
        );
        assert_eq!(atr[1..].iter().fold(0, |acc, b| acc ^ b), 0, "TCK makes the XOR zero");
    }
}
