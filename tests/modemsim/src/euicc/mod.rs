//! The simulated eUICC behind [`crate::world::Uicc`]: the ISD-R (an ES10 subset of SGP.22 and
//! SGP.32), the GSMA `IoT` SAFE applet and the AI applet (docs/ai-applet.md), with real P-256
//! keys generated at start.
//!
//! The applets read commands and build answers with the same codec crates the daemon uses, so
//! the simulator cannot drift from what the daemon sends and expects.

mod ai_applet;
mod card_state;
mod iot_safe;
mod isd_r;
mod keys;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use aiesim_ai_applet::{Endpoint, Model, Tier};

use crate::world::{Applet, sw};

/// The card's options, as the command line gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Whether the ISD-R answers SGP.32's `GetEimConfigurationData` (else it is an SGP.22 card).
    pub sgp32: bool,
    pub iot_safe_aid: Vec<u8>,
    /// Whether Compute Signature answers DER inside tag 33 instead of raw r‖s.
    pub der_signatures: bool,
    /// The AI applet's balance on a fresh card.
    pub tokens: u64,
    /// The operator's voucher-signing public key, uncompressed SEC1; `None` refuses top-ups.
    pub operator_key: Option<keys::Point>,
    /// The operator's voucher-signing secret when the simulator made the key itself: it then
    /// mints vouchers for tests (the `voucher` control command). `None` with `--operator-key`.
    pub operator_secret: Option<[u8; 32]>,
    pub endpoints: Vec<Endpoint>,
    /// Where the AI applet keeps its account across restarts.
    pub card_state: Option<PathBuf>,
    /// GET DATA's offline allowance.
    pub offline_allowance: u64,
    /// GET DATA's largest debit.
    pub max_debit: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sgp32: true,
            iot_safe_aid: aiesim_iot_safe::AID.to_vec(),
            der_signatures: false,
            tokens: 100_000,
            operator_key: None,
            operator_secret: None,
            endpoints: vec![default_endpoint()],
            card_state: None,
            offline_allowance: ai_applet::OFFLINE_ALLOWANCE,
            max_debit: ai_applet::MAX_DEBIT,
        }
    }
}

/// One metro endpoint on the test cloud's default address and model.
fn default_endpoint() -> Endpoint {
    Endpoint {
        name: "metro".into(),
        url: "http://127.0.0.1:8080/v1".into(),
        tier: Tier::Metro,
        models: vec![Model {
            name: "smollm2-135m".into(),
            context_window: 8192,
            max_output: 512,
            price_per_1k: 10,
        }],
    }
}

/// The card's command-line options (flattened into the simulator's).
#[derive(Debug, Clone, clap::Args)]
#[expect(
    clippy::doc_markdown,
    reason = "these doc comments are the --help text, where backticks would show"
)]
pub struct Options {
    /// Whether the ISD-R is an SGP.32 eUICC (answers GetEimConfigurationData) or an SGP.22 one.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sgp32: bool,
    /// The IoT SAFE applet's AID, in hex.
    #[arg(long, value_name = "HEX", default_value = "A0000005590010", value_parser = parse_aid)]
    iot_safe_aid: AidArg,
    /// IoT SAFE Compute Signature answers DER instead of raw r‖s.
    #[arg(long)]
    iot_safe_der_signatures: bool,
    /// The AI applet's token balance on a fresh card (a --card-state file keeps its own).
    #[arg(long, default_value_t = 100_000)]
    tokens: u64,
    /// The operator's voucher key, 65-byte uncompressed SEC1 in hex; without it TOP-UP is refused.
    #[arg(long, value_name = "HEX", value_parser = parse_point)]
    operator_key: Option<keys::Point>,
    /// An operator endpoint the AI applet lists, repeatable:
    /// NAME,URL,TIER,MODEL:CONTEXT:MAXOUT,PRICE[,MODEL:CONTEXT:MAXOUT,PRICE...]; TIER is metro,
    /// province or national, PRICE account tokens per 1000 model tokens. Default: one metro
    /// endpoint at http://127.0.0.1:8080/v1 serving smollm2-135m.
    #[arg(long = "endpoint", value_name = "SPEC", value_parser = parse_endpoint)]
    endpoints: Vec<Endpoint>,
    /// Keep the AI applet's account (balance, sequence, redeemed vouchers, account key) in this
    /// file, rewritten atomically after every change and read at start.
    #[arg(long, value_name = "FILE")]
    card_state: Option<PathBuf>,
    /// The offline allowance the AI applet's GET DATA announces (account tokens).
    #[arg(long, default_value_t = ai_applet::OFFLINE_ALLOWANCE)]
    offline_allowance: u64,
    /// The largest amount one DEBIT may take.
    #[arg(long, default_value_t = ai_applet::MAX_DEBIT)]
    max_debit: u64,
}

/// An AID on the command line (a newtype, so clap takes it as one value, not a list of bytes).
#[derive(Debug, Clone)]
struct AidArg(Vec<u8>);

impl From<Options> for Config {
    fn from(options: Options) -> Self {
        let Options {
            sgp32,
            iot_safe_aid,
            iot_safe_der_signatures,
            tokens,
            operator_key,
            endpoints,
            card_state,
            offline_allowance,
            max_debit,
        } = options;
        // Without the operator's key given, the simulator is the operator: it makes one and
        // mints vouchers with it.
        let (operator_key, operator_secret) = if let Some(point) = operator_key {
            (Some(point), None)
        } else {
            let key = keys::CardKey::generate();
            (Some(key.public()), Some(key.scalar()))
        };
        Self {
            sgp32,
            iot_safe_aid: iot_safe_aid.0,
            der_signatures: iot_safe_der_signatures,
            tokens,
            operator_key,
            operator_secret,
            endpoints: if endpoints.is_empty() {
                vec![default_endpoint()]
            } else {
                endpoints
            },
            card_state,
            offline_allowance,
            max_debit,
        }
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err(format!("{text:?} has an odd number of hex digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

fn parse_aid(text: &str) -> Result<AidArg, String> {
    let aid = parse_hex(text)?;
    if (5..=16).contains(&aid.len()) {
        Ok(AidArg(aid))
    } else {
        Err(format!("an AID is 5 to 16 bytes, not {}", aid.len()))
    }
}

fn parse_point(text: &str) -> Result<keys::Point, String> {
    let point: keys::Point = parse_hex(text)?
        .try_into()
        .map_err(|_| "an uncompressed P-256 key is 65 bytes (04 X Y)".to_owned())?;
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .map_err(|_| "the operator key is not a point on P-256".to_owned())?;
    Ok(point)
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let usage = "expected NAME,URL,TIER,MODEL:CONTEXT:MAXOUT,PRICE[,MODEL:CONTEXT:MAXOUT,PRICE...]";
    let fields: Vec<&str> = text.split(',').collect();
    let [name, url, tier, models @ ..] = fields.as_slice() else {
        return Err(usage.into());
    };
    if models.is_empty() || models.len() % 2 != 0 {
        return Err(usage.into());
    }
    let tier = match *tier {
        "metro" | "1" => Tier::Metro,
        "province" | "2" => Tier::Province,
        "national" | "3" => Tier::National,
        other => return Err(format!("tier {other:?} is not metro, province or national")),
    };
    let models = models
        .chunks_exact(2)
        .map(|pair| {
            let number = |field: &str| field.parse().map_err(|_| format!("{field:?} is not a number"));
            let [model, price] = pair else {
                return Err(usage.to_owned());
            };
            let [model, context, max_output] = model.split(':').collect::<Vec<_>>()[..] else {
                return Err(format!("model {model:?} is not MODEL:CONTEXT:MAXOUT"));
            };
            Ok(Model {
                name: model.to_owned(),
                context_window: number(context)?,
                max_output: number(max_output)?,
                price_per_1k: price.parse().map_err(|_| format!("price {price:?} is not a number"))?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Endpoint {
        name: (*name).to_owned(),
        url: (*url).to_owned(),
        tier,
        models,
    })
}

/// Why the card could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the card's ICCID {0:?} is not 1 to 20 decimal digits")]
    Iccid(String),
    #[error("rcgen could not build the IoT SAFE device certificate")]
    Certificate(#[source] rcgen::Error),
    #[error("the card's object list or endpoint list does not fit BER-TLV")]
    Encode(#[source] aiesim_apdu::tlv::TlvError),
    #[error("the operator key is not an uncompressed point on P-256")]
    OperatorKey,
    #[error(transparent)]
    CardState(#[from] card_state::Error),
}

/// Raised by the ISD-R when a profile switch should reach the host as a card refresh; the world
/// turns it into [`crate::world::Changes::card`].
#[derive(Debug, Clone, Default)]
pub struct Refresh(Arc<Mutex<Option<Enabled>>>);

/// What a profile switch left enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enabled {
    /// The profile with this ICCID.
    Profile(String),
    Nothing,
}

impl Refresh {
    fn raise(&self, enabled: Enabled) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(enabled);
    }

    /// Whether a refresh was raised since the last call, with what it left enabled.
    pub fn take(&self) -> Option<Enabled> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// How the AI applet answers DEBIT: as it should, or as a faulty or malicious card would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReceiptMode {
    #[default]
    Honest,
    /// The receipt's signature has one bit flipped.
    Forge,
    /// The debit is taken, but the previous receipt comes back.
    Replay,
}

/// What the control socket reads of the AI applet, and the receipt fault it sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct AiAccount {
    pub balance: u64,
    pub sequence: u32,
    pub debits: u64,
    pub receipts: ReceiptMode,
    /// The card id and the operator's secret, when the simulator may mint vouchers.
    minter: Option<([u8; 16], [u8; 32])>,
}

/// Shared between the AI applet and the control socket.
#[derive(Debug, Clone, Default)]
pub struct AiProbe(Arc<Mutex<AiAccount>>);

impl AiProbe {
    pub fn get(&self) -> AiAccount {
        *self.0.lock().expect("probe lock")
    }

    pub fn set_receipts(&self, mode: ReceiptMode) {
        self.0.lock().expect("probe lock").receipts = mode;
    }

    fn set_minter(&self, card_id: [u8; 16], secret: Option<[u8; 32]>) {
        self.0.lock().expect("probe lock").minter = secret.map(|s| (card_id, s));
    }

    /// An operator-signed voucher for this card, `id ‖ amount ‖ expiry ‖ card id ‖ signature`
    /// in hex (what the daemon's `TopUp` takes), valid for `ttl_s` seconds from now.
    pub fn mint_voucher(&self, amount: u64, ttl_s: u64) -> Result<String, String> {
        use rand_core::RngCore as _;
        let (card_id, secret) = self
            .get()
            .minter
            .ok_or("this card trusts an operator key given with --operator-key; its secret is not here")?;
        let key = keys::CardKey::from_scalar(&secret).ok_or("the operator key is not valid")?;
        let mut id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut id);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut voucher = aiesim_ai_applet::Voucher {
            id,
            amount,
            expiry: now + ttl_s,
            card_id,
            signature: [0; 64],
        };
        voucher.signature = key.sign(&aiesim_ai_applet::voucher_message(&voucher));
        let mut bytes = Vec::with_capacity(112);
        bytes.extend_from_slice(&voucher.id);
        bytes.extend_from_slice(&voucher.amount.to_be_bytes());
        bytes.extend_from_slice(&voucher.expiry.to_be_bytes());
        bytes.extend_from_slice(&voucher.card_id);
        bytes.extend_from_slice(&voucher.signature);
        Ok(bytes.iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02X}");
            hex
        }))
    }

    fn note(&self, balance: u64, sequence: u32, debit: bool) {
        let mut a = self.0.lock().expect("probe lock");
        a.balance = balance;
        a.sequence = sequence;
        a.debits += u64::from(debit);
    }
}

/// The three applets in selection order, built from `config` for the card `eid` whose enabled
/// profile is `iccid`; `refresh` is raised when a profile switch needs announcing.
pub fn applets(
    eid: [u8; 16],
    iccid: &str,
    config: &Config,
    refresh: &Refresh,
    probe: &AiProbe,
) -> Result<Vec<Box<dyn Applet>>, Error> {
    let Config {
        sgp32,
        iot_safe_aid,
        der_signatures,
        tokens,
        operator_key,
        operator_secret,
        endpoints,
        card_state,
        offline_allowance,
        max_debit,
    } = config;
    probe.set_minter(eid, *operator_secret);
    let isd_r = isd_r::IsdR::new(eid, iccid, *sgp32, refresh.clone())?;
    let iot_safe = iot_safe::IotSafe::new(eid, iot_safe_aid.clone(), *der_signatures)?;
    let ai = ai_applet::AiApplet::new(ai_applet::Setup {
        card_id: eid,
        tokens: *tokens,
        operator_key: *operator_key,
        endpoints: endpoints.clone(),
        card_state: card_state.clone(),
        offline_allowance: *offline_allowance,
        max_debit: *max_debit,
        probe: probe.clone(),
    })?;
    Ok(vec![Box::new(isd_r), Box::new(iot_safe), Box::new(ai)])
}

/// Data ‖ SW1 SW2.
fn answer(mut data: Vec<u8>, sw: u16) -> Vec<u8> {
    data.extend_from_slice(&sw.to_be_bytes());
    data
}

fn status(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

/// The FCI a SELECT returns: `6F { 84 AID }`.
fn fci(aid: &[u8]) -> Vec<u8> {
    let mut w = aiesim_apdu::tlv::Writer::new();
    // An AID is at most 16 bytes, so neither length can overflow.
    let built = w
        .put_constructed(tag(0x6F), |f| f.put(tag(0x84), aid).map(drop))
        .is_ok();
    debug_assert!(built);
    w.into_bytes()
}

const fn tag(raw: u32) -> aiesim_apdu::tlv::Tag {
    match aiesim_apdu::tlv::Tag::new(raw) {
        Some(tag) => tag,
        None => panic!("invalid tag constant"),
    }
}

/// Whether `command` is GET RESPONSE (`0x C0 00 00`, any channel, either class).
fn is_get_response(command: &aiesim_apdu::Command) -> bool {
    command.ins == aiesim_apdu::ins::GET_RESPONSE && command.p1 == 0 && command.p2 == 0
}

/// Answers longer than one short response wait here for GET RESPONSE (ISO 7816-4 `61xx`).
#[derive(Debug, Default)]
struct Outbox {
    pending: Vec<u8>,
}

/// The most data one short response carries.
const SHORT_RESPONSE: usize = 256;

impl Outbox {
    /// `data ‖ 9000`, or its first 256 bytes with `61xx` and the rest kept back.
    fn send(&mut self, mut data: Vec<u8>) -> Vec<u8> {
        if data.len() <= SHORT_RESPONSE {
            self.pending.clear();
            return answer(data, sw::OK);
        }
        self.pending = data.split_off(SHORT_RESPONSE);
        let sw = self.more_data();
        answer(data, sw)
    }

    /// Up to `le` more bytes of the kept-back answer.
    fn get_response(&mut self, le: usize) -> Vec<u8> {
        if self.pending.is_empty() {
            return status(sw::CONDITIONS_NOT_SATISFIED);
        }
        let rest = self.pending.split_off(le.min(self.pending.len()));
        let data = std::mem::replace(&mut self.pending, rest);
        let sw = if self.pending.is_empty() {
            sw::OK
        } else {
            self.more_data()
        };
        answer(data, sw)
    }

    fn clear(&mut self) {
        self.pending.clear();
    }

    /// `61xx` for what is left: xx bytes, 00 meaning 256 or more.
    fn more_data(&self) -> u16 {
        0x6100 | u16::try_from(self.pending.len()).map_or(0, |len| if len >= 256 { 0 } else { len })
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_specs_parse_and_bad_ones_say_why() {
        let endpoint =
            parse_endpoint("edge,http://10.0.0.1:8080/v1,province,small:8192:512,10,big:32768:2048,200").unwrap();
        assert_eq!((endpoint.name.as_str(), endpoint.tier), ("edge", Tier::Province));
        assert_eq!(endpoint.url, "http://10.0.0.1:8080/v1");
        assert_eq!(
            endpoint.models[1],
            Model {
                name: "big".into(),
                context_window: 32768,
                max_output: 2048,
                price_per_1k: 200
            }
        );
        assert!(
            parse_endpoint("edge,http://x,metro,small:1:2").is_err(),
            "a model needs a price"
        );
        assert!(parse_endpoint("edge,http://x,orbit,small:1:2,3").is_err());
        assert!(parse_endpoint("edge,http://x,metro,small:1,3").is_err());
        assert_eq!(parse_hex("a0ff"), Ok(vec![0xA0, 0xFF]));
        assert!(parse_aid("A000").is_err());
        assert!(parse_point(&"04".repeat(65)).is_err(), "not on the curve");
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        card: Options,
    }

    #[test]
    fn the_options_make_a_config() {
        use clap::Parser as _;
        let config = Config::from(Cli::try_parse_from(["sim"]).unwrap().card);
        // Without --operator-key the simulator is the operator: a fresh key it can mint with.
        let secret = config
            .operator_secret
            .expect("the simulator holds the operator's secret");
        let key = keys::CardKey::from_scalar(&secret).unwrap();
        assert_eq!(config.operator_key, Some(key.public()));
        assert_eq!(
            Config {
                operator_key: None,
                operator_secret: None,
                ..config
            },
            Config::default()
        );
        let cli = Cli::try_parse_from([
            "sim",
            "--sgp32",
            "false",
            "--iot-safe-aid",
            "A0000000305300",
            "--iot-safe-der-signatures",
            "--tokens",
            "7",
            "--endpoint",
            "a,http://a/v1,metro,m:1:2,3",
            "--endpoint",
            "b,http://b/v1,national,n:4:5,6",
            "--card-state",
            "/tmp/card",
        ])
        .unwrap();
        let config = Config::from(cli.card);
        assert!(!config.sgp32 && config.der_signatures);
        assert_eq!(config.iot_safe_aid, [0xA0, 0, 0, 0, 0x30, 0x53, 0]);
        assert_eq!(config.tokens, 7);
        assert_eq!(config.endpoints.len(), 2);
        assert_eq!(config.card_state, Some(PathBuf::from("/tmp/card")));
        assert!(Cli::try_parse_from(["sim", "--operator-key", "04"]).is_err());
        let given = keys::CardKey::generate().public();
        let hex = given.iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        });
        let config = Config::from(Cli::try_parse_from(["sim", "--operator-key", &hex]).unwrap().card);
        assert_eq!((config.operator_key, config.operator_secret), (Some(given), None));
    }

    #[test]
    fn long_answers_wait_for_get_response() {
        let mut outbox = Outbox::default();
        let first = outbox.send((0..=255).chain(0..=99).collect());
        assert_eq!(first.len(), 258);
        assert_eq!(first[256..], [0x61, 100]);
        let rest = outbox.get_response(100);
        assert_eq!(rest[..100], (0..=99).collect::<Vec<u8>>()[..]);
        assert_eq!(rest[100..], [0x90, 0x00]);
        assert_eq!(outbox.get_response(10), [0x69, 0x85], "nothing is left");
    }
}
