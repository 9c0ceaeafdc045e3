//! The eSIM: the eUICC behind the modem, read over ES10 whenever the modem reports a card, and
//! its profiles switched on request.
//!
//! [`Esim::spawn`] follows the modem's state: when a session comes up or the card changes, it
//! reads the EID, `EUICCInfo2`, the configured addresses and the profile list once, and
//! publishes them as one [`EsimState`]. A read that fails for a passing reason (a refused channel,
//! a busy card) is tried again after a growing wait; the card is sent nothing otherwise.

mod ai_applet;
mod billing;
mod card;
mod credential;
mod iot_safe;
mod isd_r;

use std::{sync::Arc, time::Duration};

use aiesim_es10::{EuiccGeneration, ProfileClass, ProfileInfo, ProfileState};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

pub use self::{
    billing::{Biller, TopUp, parse_voucher},
    card::{ModemCard, Session},
    credential::{CardCredentials, CredentialError, Requirement},
    iot_safe::{DeviceCredential, load as load_credential, random as card_random, sign as sign_digest},
};
use crate::{
    modem::{Availability, Modem, ModemError, ModemState, SimState},
    router::{EndpointSpec, ModelSpec, Source, Tier},
};

#[derive(Debug, thiserror::Error)]
pub enum EsimError {
    #[error(transparent)]
    Modem(#[from] ModemError),
    #[error("the APDU exchange with the card failed")]
    Exchange(#[from] aiesim_apdu::ExchangeError<ModemError>),
    #[error("the card refused the request")]
    Card(#[from] aiesim_apdu::CardError),
    #[error("the ES10 request cannot be encoded")]
    Encode(#[source] aiesim_apdu::tlv::TlvError),
    #[error("the eUICC's answer is malformed")]
    Decode(#[from] aiesim_es10::DecodeError),
    #[error("the card has no ISD-R: it is a plain SIM, not an eUICC")]
    NotEuicc,
    #[error("the eUICC refused to list its profiles: {0}")]
    ProfileList(aiesim_es10::ProfileInfoListError),
    #[error("{0}")]
    Enable(EnableFailure),
    #[error("{0}")]
    Disable(DisableFailure),
    #[error("\"{0}\" is not an ICCID (18 to 20 digits, optionally ending in F)")]
    BadIccid(String),
    #[error("the card has no IoT SAFE applet (the security foundation)")]
    NoIotSafe,
    #[error("the IoT SAFE command cannot be built")]
    IotSafeRequest(#[source] aiesim_iot_safe::RequestError),
    #[error("the IoT SAFE applet's answer is malformed")]
    IotSafeResponse(#[source] aiesim_iot_safe::ResponseError),
    #[error("the IoT SAFE applet's object list goes on past 32 parts")]
    ObjectListTooLong,
    #[error("the IoT SAFE applet has no active P-256 key that may sign")]
    NoSigningKey,
    #[error("the IoT SAFE applet holds no device certificate")]
    NoCertificate,
    #[error("the device certificate's size ({0} bytes) is not plausible")]
    CertificateSize(u32),
    #[error("the card's random number generator gave {got} bytes where {asked} were asked for")]
    RandomLength { asked: u16, got: usize },
    #[error("the card's signature is malformed")]
    Signature(#[source] aiesim_iot_safe::SignatureError),
    #[error("the card has no AI applet (token account and endpoints)")]
    NoAiApplet,
    #[error("the AI applet command cannot be built")]
    AiRequest(#[source] aiesim_ai_applet::RequestError),
    #[error("the AI applet refused: {0}")]
    Ai(aiesim_ai_applet::AppletError),
    #[error("the AI applet's answer is malformed")]
    AiResponse(#[source] aiesim_ai_applet::ResponseError),
    #[error("the voucher is not valid: {0}")]
    BadVoucher(String),
    #[error("the card's top-up receipt is not to be trusted: {0}")]
    BadTopUpReceipt(String),
    #[error("the eSIM is not available ({0})")]
    Unavailable(String),
    #[error("the eSIM service has stopped")]
    Stopped,
}

pub type EnableFailure = aiesim_es10::EnableResult;
pub type DisableFailure = aiesim_es10::DisableResult;

/// Whether the eSIM can be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EsimAvailability {
    /// No modem session, or no card in it.
    #[default]
    Absent,
    Reading,
    Ready,
    /// The card is a plain SIM.
    NotEuicc,
    /// Reading failed; `last_error` says why. It is tried again after a wait that grows from
    /// one second to two minutes, and at the next card change.
    Error,
}

impl EsimAvailability {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Reading => "reading",
            Self::Ready => "ready",
            Self::NotEuicc => "not-euicc",
            Self::Error => "error",
        }
    }
}

/// One profile on the eUICC, as the front end shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub iccid: String,
    pub enabled: bool,
    pub name: String,
    pub provider: String,
    pub nickname: String,
    /// "test", "provisioning", "operational" or "unknown".
    pub class: String,
    /// The ISD-P's AID in hex.
    pub isdp_aid: String,
}

impl From<&ProfileInfo> for Profile {
    fn from(info: &ProfileInfo) -> Self {
        let ProfileInfo {
            iccid,
            isdp_aid,
            state,
            nickname,
            service_provider_name,
            profile_name,
            icon_type: _,
            icon: _,
            class,
        } = info;
        Self {
            iccid: iccid.as_ref().map(ToString::to_string).unwrap_or_default(),
            enabled: *state == Some(ProfileState::Enabled),
            name: profile_name.clone().unwrap_or_default(),
            provider: service_provider_name.clone().unwrap_or_default(),
            nickname: nickname.clone().unwrap_or_default(),
            class: match class {
                Some(ProfileClass::Test) => "test",
                Some(ProfileClass::Provisioning) => "provisioning",
                Some(ProfileClass::Operational) => "operational",
                _ => "unknown",
            }
            .to_owned(),
            isdp_aid: isdp_aid.as_ref().map(|aid| hex(aid.as_bytes())).unwrap_or_default(),
        }
    }
}

/// What the daemon knows of the eSIM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EsimState {
    pub availability: EsimAvailability,
    /// The EID, 32 hex digits.
    pub eid: String,
    /// "sgp22" or "sgp32"; empty until read.
    pub generation: String,
    /// The SGP.22 version the eUICC implements, e.g. "2.2.1".
    pub svn: String,
    pub firmware: String,
    pub free_nvm: Option<u64>,
    /// `EUICCInfo1`: the CI key identifiers (hex) the eUICC verifies SM-DP+ certificates with,
    /// and those of its own certificate chains.
    pub ci_pkid_verification: Vec<String>,
    pub ci_pkid_signing: Vec<String>,
    pub default_dp_address: String,
    pub root_ds_address: String,
    pub profiles: Vec<Profile>,
    /// The token account: `None` when the card has no AI applet (or it could not be read).
    pub account: Option<AccountState>,
    pub last_error: String,
}

/// The AI applet's token account, as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountState {
    pub balance: u64,
    pub sequence: u32,
    /// "active", "inactive", "blocked" or "unknown".
    pub state: String,
    /// The operator's endpoints, in its order of preference.
    pub endpoints: Vec<CardEndpoint>,
    /// The identity receipts name (the EID).
    pub card_id: [u8; 16],
    /// The account key receipts verify against: an uncompressed P-256 point.
    pub account_key: Vec<u8>,
    /// The largest amount one DEBIT may take.
    pub max_debit: u64,
    /// What the operator lets the device spend without reaching the card.
    pub offline_allowance: u64,
}

/// One endpoint the operator provisioned on the card.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardEndpoint {
    pub name: String,
    pub url: String,
    /// "metro", "province", "national" or "unknown".
    pub tier: String,
    /// (name, context window, maximum output, account tokens per 1000 model tokens).
    pub models: Vec<(String, u32, u32, u64)>,
}

impl From<&ai_applet::Account> for AccountState {
    fn from(account: &ai_applet::Account) -> Self {
        use aiesim_ai_applet::{CardState, Tier};
        let ai_applet::Account {
            balance,
            endpoints,
            info,
            key,
        } = account;
        Self {
            card_id: info.card_id,
            account_key: key.0.to_vec(),
            max_debit: info.max_debit,
            offline_allowance: info.offline_allowance,
            balance: balance.balance,
            sequence: balance.sequence,
            state: match balance.state {
                CardState::Active => "active",
                CardState::Inactive => "inactive",
                CardState::Blocked => "blocked",
                CardState::Other(_) => "unknown",
            }
            .to_owned(),
            endpoints: endpoints
                .endpoints
                .iter()
                .map(|e| CardEndpoint {
                    name: e.name.clone(),
                    url: e.url.clone(),
                    tier: match e.tier {
                        Tier::Metro => "metro",
                        Tier::Province => "province",
                        Tier::National => "national",
                        Tier::Other(_) => "unknown",
                    }
                    .to_owned(),
                    models: e
                        .models
                        .iter()
                        .map(|m| (m.name.clone(), m.context_window, m.max_output, m.price_per_1k))
                        .collect(),
                })
                .collect(),
        }
    }
}

impl AccountState {
    /// The card's endpoints as the router takes them. An entry the router could not use (an
    /// unknown tier, a URL that is not http(s), no model) is left out with a warning.
    pub fn endpoint_specs(&self) -> Vec<EndpointSpec> {
        self.endpoints
            .iter()
            .filter_map(|e| {
                let tier = match e.tier.as_str() {
                    "metro" => Tier::Metro,
                    "province" => Tier::Province,
                    "national" => Tier::National,
                    _ => None?,
                };
                let usable = !e.name.is_empty()
                    && (e.url.starts_with("http://") || e.url.starts_with("https://"))
                    && reqwest::Url::parse(&e.url).is_ok()
                    && !e.models.is_empty();
                if !usable {
                    tracing::warn!(endpoint = %e.name, url = %e.url, "the card's endpoint is not usable; left out");
                    return None;
                }
                Some(EndpointSpec {
                    name: e.name.clone(),
                    url: e.url.clone(),
                    tier,
                    models: e
                        .models
                        .iter()
                        .map(|(name, context, max_output, price)| ModelSpec {
                            name: name.clone(),
                            context_window: Some(*context).filter(|c| *c > 0),
                            max_output: Some(*max_output).filter(|m| *m > 0),
                            price_per_1k: *price,
                        })
                        .collect(),
                    max_concurrent: crate::router::DEFAULT_MAX_CONCURRENT,
                    source: Source::Card,
                })
            })
            .collect()
    }
}

/// Keeps the router's provisioned endpoints equal to the card's: replaced whenever a card is
/// read, kept while the card is briefly away (the daemon works offline from it), emptied for a
/// card without the AI applet.
pub async fn provision_endpoints(mut state: watch::Receiver<EsimState>, set: impl Fn(Vec<EndpointSpec>) -> bool) {
    loop {
        let specs = {
            let s = state.borrow_and_update();
            match s.availability {
                EsimAvailability::Ready => {
                    Some(s.account.as_ref().map(AccountState::endpoint_specs).unwrap_or_default())
                }
                EsimAvailability::NotEuicc => Some(Vec::new()),
                _ => None,
            }
        };
        if let Some(specs) = specs {
            let count = specs.len();
            if set(specs) {
                tracing::info!(endpoints = count, "endpoints provisioned by the eSIM");
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

impl EsimState {
    pub fn active_profile(&self) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.enabled)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02X}");
        out
    })
}

fn apply(state: &mut EsimState, snapshot: &isd_r::Snapshot) {
    let isd_r::Snapshot {
        eid,
        generation,
        info,
        info1,
        addresses,
        profiles,
    } = snapshot;
    let pkids = |list: Option<&Vec<Vec<u8>>>| list.map(|l| l.iter().map(|id| hex(id)).collect()).unwrap_or_default();
    *state = EsimState {
        availability: EsimAvailability::Ready,
        eid: eid.to_string(),
        generation: match generation {
            EuiccGeneration::Sgp22 => "sgp22",
            EuiccGeneration::Sgp32 => "sgp32",
        }
        .to_owned(),
        svn: info.as_ref().map(|i| i.svn.to_string()).unwrap_or_default(),
        firmware: info
            .as_ref()
            .map(|i| i.firmware_version.to_string())
            .unwrap_or_default(),
        free_nvm: info
            .as_ref()
            .and_then(|i| i.ext_card_resource.as_ref())
            .map(|r| r.free_nvm),
        ci_pkid_verification: pkids(info1.as_ref().map(|i| &i.ci_pkid_verification)),
        ci_pkid_signing: pkids(info1.as_ref().map(|i| &i.ci_pkid_signing)),
        default_dp_address: addresses
            .as_ref()
            .and_then(|a| a.default_dp_address.clone())
            .unwrap_or_default(),
        root_ds_address: addresses
            .as_ref()
            .and_then(|a| a.root_ds_address.clone())
            .unwrap_or_default(),
        profiles: profiles.iter().map(Profile::from).collect(),
        account: None,
        last_error: String::new(),
    };
}

enum Command {
    Switch {
        iccid: String,
        enable: bool,
        reply: oneshot::Sender<Result<(), EsimError>>,
    },
}

/// The daemon's eSIM: a handle on the task that reads and switches it.
pub struct Esim {
    modem: Arc<Modem>,
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<EsimState>,
    publish: Arc<watch::Sender<EsimState>>,
    cancel: CancellationToken,
}

impl Esim {
    /// Starts following `modem`; must be called within a runtime.
    pub fn spawn(modem: Arc<Modem>) -> Self {
        let (commands, queue) = mpsc::channel(4);
        let (state_tx, state) = watch::channel(EsimState::default());
        let publish = Arc::new(state_tx);
        let cancel = CancellationToken::new();
        tokio::spawn(follow(Arc::clone(&modem), Arc::clone(&publish), queue, cancel.clone()));
        Self {
            modem,
            commands,
            state,
            publish,
            cancel,
        }
    }

    /// Publishes the balance a verified receipt showed (the card is not read again for it).
    pub fn note_balance(&self, card_id: &[u8; 16], balance: u64, sequence: u32) {
        self.publish.send_if_modified(|s| match s.account.as_mut() {
            Some(account) if &account.card_id == card_id && account.sequence != sequence => {
                account.balance = balance;
                account.sequence = sequence;
                true
            }
            _ => false,
        });
    }

    pub fn state(&self) -> watch::Receiver<EsimState> {
        self.state.clone()
    }

    /// The modem whose card this is (for the applets that share its channels).
    pub fn modem(&self) -> &Arc<Modem> {
        &self.modem
    }

    /// Enables the profile `iccid` (which disables the one enabled before).
    pub async fn enable(&self, iccid: &str) -> Result<(), EsimError> {
        self.switch(iccid, true).await
    }

    pub async fn disable(&self, iccid: &str) -> Result<(), EsimError> {
        self.switch(iccid, false).await
    }

    async fn switch(&self, iccid: &str, enable: bool) -> Result<(), EsimError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Switch {
            iccid: iccid.to_owned(),
            enable,
            reply,
        };
        self.commands.send(command).await.map_err(|_| EsimError::Stopped)?;
        answer.await.map_err(|_| EsimError::Stopped)?
    }
}

impl Drop for Esim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The modem facts that decide whether (and when again) to read the card.
fn card_key(modem: &ModemState) -> Option<(String, SimState)> {
    let usable = modem.availability == Availability::Ready
        && matches!(modem.sim, SimState::Ready | SimState::NoProfile | SimState::NotReady);
    usable.then(|| (modem.device.clone(), modem.sim))
}

/// The first wait before a failed read is tried again; it doubles up to [`RETRY_MAX`]. Reading
/// the card never wakes the radio, so retrying a card that was busy or slow costs little.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(120);

async fn follow(
    modem: Arc<Modem>,
    state: Arc<watch::Sender<EsimState>>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    let mut modem_states = modem.state();
    let mut read_for: Option<(String, SimState)> = None;
    // When a read that failed for a passing reason is tried again, and the wait after that.
    let mut retry: Option<(Instant, Duration)> = None;
    loop {
        let key = card_key(&modem_states.borrow_and_update());
        if key != read_for {
            read_for.clone_from(&key);
            retry = None;
            match key {
                Some(_) => retry = first_retry(refresh(&modem, &state).await),
                None => {
                    state.send_replace(EsimState::default());
                }
            }
        }
        let again = retry.map(|(at, _)| at);
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = modem_states.changed() => if changed.is_err() { return },
            () = sleep_until_some(again) => {
                let wait = retry.map_or(RETRY_FIRST, |(_, wait)| (wait * 2).min(RETRY_MAX));
                retry = refresh(&modem, &state).await.then(|| (Instant::now() + wait, wait));
            }
            command = commands.recv() => match command {
                Some(Command::Switch { iccid, enable, reply }) => {
                    let result = if read_for.is_some() {
                        isd_r::switch(&modem, &iccid, enable).await
                    } else {
                        Err(EsimError::Unavailable("no modem with a card is ready".into()))
                    };
                    let switched = result.is_ok();
                    drop(reply.send(result));
                    // The profile list changed (and so, after the refresh, may the card state).
                    if switched {
                        retry = first_retry(refresh(&modem, &state).await);
                    }
                }
                None => return,
            },
        }
    }
}

/// When to try a read again that just failed for a passing reason (`again`).
fn first_retry(again: bool) -> Option<(Instant, Duration)> {
    again.then(|| (Instant::now() + RETRY_FIRST, RETRY_FIRST))
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads the card and publishes what it holds; true when something failed for a reason that may
/// pass (a busy or slow card, a refused channel), so the read should be tried again.
async fn refresh(modem: &Modem, state: &watch::Sender<EsimState>) -> bool {
    let before = state.borrow().clone();
    state.send_modify(|s| s.availability = EsimAvailability::Reading);
    match isd_r::read(modem).await {
        Ok(snapshot) => {
            tracing::info!(
                eid = %snapshot.eid,
                profiles = snapshot.profiles.len(),
                generation = ?snapshot.generation,
                "eSIM read"
            );
            // The account is read too; a card without the applet is still a ready eSIM.
            let (account, again) = match ai_applet::read(modem).await {
                Ok(account) => (Some(AccountState::from(&account)), false),
                Err(EsimError::NoAiApplet) => (None, false),
                Err(error) => {
                    tracing::warn!(error = %crate::broker::chain(&error), "could not read the token account");
                    // The same card's account as last read stays (and with it the endpoints).
                    let kept = before.account.filter(|_| before.eid == snapshot.eid.to_string());
                    (kept, true)
                }
            };
            state.send_modify(|s| {
                apply(s, &snapshot);
                s.account = account;
            });
            again
        }
        Err(EsimError::NotEuicc) => {
            state.send_replace(EsimState {
                availability: EsimAvailability::NotEuicc,
                last_error: EsimError::NotEuicc.to_string(),
                ..EsimState::default()
            });
            false
        }
        Err(error) => {
            let reason = crate::broker::chain(&error);
            tracing::warn!(error = %reason, "could not read the eSIM; trying again later");
            state.send_replace(EsimState {
                availability: EsimAvailability::Error,
                last_error: reason,
                ..EsimState::default()
            });
            true
        }
    }
}
