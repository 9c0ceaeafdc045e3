//! The daemon's configuration file (TOML), validated as a whole before anything starts.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    modem::{DeviceChoice, ModemOptions, Protocol, ProxyOptions},
    router::Tier,
};

/// `fastpath.interface` value meaning "whatever netdev the modem reports".
pub const FOLLOW_MODEM: &str = "modem";

/// Where the ledger's journal lives (systemd's `StateDirectory=aiesim`).
pub const DEFAULT_JOURNAL: &str = "/var/lib/aiesim/ledger.journal";

/// Where the packaged daemon reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/aiesim/aiesimd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// As `Parse`, for text given to [`Config::from_toml_str`]: there is no file to name.
    #[error("the configuration text is not valid")]
    Toml(#[source] Box<toml::de::Error>),
    /// A rule broken at `key` (dotted; `endpoint.N.field` for the Nth `[[endpoint]]` over all
    /// files; `a|b` for a rule over two keys, either of which may be the one set). [`Config::load`] turns it into [`ConfigError::At`], naming the file and line.
    #[error("the configuration is not valid: {message}")]
    Rule { key: String, message: String },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A broken rule at `key` (see [`ConfigError::Rule`]).
fn rule<T>(key: impl Into<String>, message: String) -> Result<T, ConfigError> {
    Err(ConfigError::Rule {
        key: key.into(),
        message,
    })
}

/// Which bus to serve on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    #[default]
    System,
    Session,
    /// A D-Bus address such as `unix:path=/run/aiesim/bus`.
    #[serde(untagged)]
    Address(String),
}

impl Bus {
    /// Parses the `--bus` command-line form: `system`, `session` or an address.
    pub fn from_arg(s: &str) -> Self {
        match s {
            "system" => Self::System,
            "session" => Self::Session,
            other => Self::Address(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub bus: Bus,
    /// The log filter, e.g. "info" or "aiesimd=debug"; empty: "info". `--log` and `RUST_LOG`
    /// take precedence; reloaded on SIGHUP when they are not given.
    pub log: String,
    pub modem: ModemConfig,
    pub fastpath: FastpathConfig,
    pub cloud: CloudConfig,
    pub budget: BudgetConfig,
    pub requests: RequestsConfig,
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModemConfig {
    /// `auto`: the first control port sysfs shows; a path such as `/dev/cdc-wdm0`; empty: no
    /// modem.
    pub device: String,
    /// `auto`: as the port's driver says (QMI for a path sysfs does not know); `qmi` or `mbim`
    /// forces one.
    pub protocol: ProtocolChoice,
    /// Bring the data session up once the modem is registered.
    pub connect: bool,
    /// The APN for the data session; empty lets the network choose.
    pub apn: String,
    pub request_timeout_ms: u64,
    /// The abstract socket sharing a QMI modem the way libqmi's qmi-proxy does; empty: none.
    pub qmi_proxy: String,
    /// The abstract socket sharing an MBIM modem the way libmbim's mbim-proxy does; empty: none.
    pub mbim_proxy: String,
    /// Besides root, members of this group may use the proxy sockets; empty: root only.
    pub proxy_group: String,
    /// The modem's network interface where sysfs names none (a simulator, an odd driver).
    pub interface: String,
}

impl ModemConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        if !matches!(m.device.as_str(), "" | "auto") && !m.device.starts_with('/') {
            return rule(
                "modem.device",
                format!(
                    "modem.device must be \"auto\", an absolute path or empty, not \"{}\"",
                    m.device
                ),
            );
        }
        for (key, name) in [("qmi_proxy", &m.qmi_proxy), ("mbim_proxy", &m.mbim_proxy)] {
            if name.len() > 100 || name.chars().any(|c| c.is_control() || c == '/') {
                return rule(
                    format!("modem.{key}"),
                    format!("modem.{key} is an abstract socket name: at most 100 characters, no '/'"),
                );
            }
        }
        if !(100..=120_000).contains(&m.request_timeout_ms) {
            return rule(
                "modem.request_timeout_ms",
                format!(
                    "modem.request_timeout_ms must be between 100 and 120000, not {}",
                    m.request_timeout_ms
                ),
            );
        }
        if m.apn.len() > 100 || m.apn.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return rule(
                "modem.apn",
                "modem.apn must be at most 100 characters without spaces or control characters".into(),
            );
        }
        Ok(())
    }
}

impl Default for ModemConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            protocol: ProtocolChoice::Auto,
            connect: false,
            apn: String::new(),
            request_timeout_ms: 5_000,
            qmi_proxy: "qmi-proxy".into(),
            mbim_proxy: "mbim-proxy".into(),
            proxy_group: String::new(),
            interface: String::new(),
        }
    }
}

/// `modem.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolChoice {
    #[default]
    Auto,
    Qmi,
    Mbim,
}

impl ProtocolChoice {
    pub const fn protocol(self) -> Option<Protocol> {
        match self {
            Self::Auto => None,
            Self::Qmi => Some(Protocol::Qmi),
            Self::Mbim => Some(Protocol::Mbim),
        }
    }
}

impl ModemConfig {
    /// The session's options, or `None` when no modem is configured. The proxy group is
    /// looked up here, so a missing group is an error at start, not a silent root-only proxy.
    pub fn options(&self, interface: &str) -> Result<Option<ModemOptions>, ConfigError> {
        let group = match self.proxy_group.as_str() {
            "" => None,
            name => Some(
                nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .ok_or_else(|| ConfigError::Rule {
                        key: "modem.proxy_group".into(),
                        message: format!("modem.proxy_group \"{name}\" does not exist"),
                    })?
                    .gid,
            ),
        };
        let proxy = |name: &str| {
            (!name.is_empty()).then(|| ProxyOptions {
                name: name.to_owned(),
                group,
            })
        };
        let device = match self.device.as_str() {
            "" => return Ok(None),
            "auto" => DeviceChoice::Auto,
            path => DeviceChoice::Path(PathBuf::from(path)),
        };
        let mut options = ModemOptions::default().with_request_timeout(Duration::from_millis(self.request_timeout_ms));
        // The fallback netdev: the modem's own setting, else the fast path's fixed one.
        if !self.interface.is_empty() {
            options = options.with_interface(&self.interface);
        } else if interface != FOLLOW_MODEM {
            options = options.with_interface(interface);
        }
        options.device = device;
        options.protocol = self.protocol.protocol();
        options.qmi_proxy = proxy(&self.qmi_proxy);
        options.mbim_proxy = proxy(&self.mbim_proxy);
        if self.connect {
            options = options.with_data_session(self.apn.clone());
        }
        Ok(Some(options))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each is an independent switch of the configuration file"
)]
pub struct FastpathConfig {
    pub enabled: bool,
    /// The cellular network interface, or "modem": the one the modem reports (sysfs or
    /// `modem.interface`), attached when known and re-attached when it changes.
    pub interface: String,
    /// Install an HTB root qdisc at `uplink_kbit` that serves AI packets first.
    pub shape: bool,
    /// The uplink rate in kbit/s the shaper releases packets at; 0: the rate the modem
    /// reports, times `uplink_percent`, at least `uplink_floor_kbit`.
    pub uplink_kbit: u32,
    /// The share of the modem-reported uplink rate the shaper uses (1–100).
    pub uplink_percent: u8,
    /// The lowest rate a modem report can set the shaper to, kbit/s.
    pub uplink_floor_kbit: u32,
    /// Count apps' own AI traffic per app (`cgroup_skb` programs on `apps_cgroup`).
    pub count_apps: bool,
    /// The cgroup v2 directory whose apps are counted; empty: the hierarchy's root.
    pub apps_cgroup: String,
    /// aiesimd's own sockets are AI wherever they connect (marked by its cgroup, when it is
    /// alone in it), not only to the listed endpoint addresses.
    pub mark_own_sockets: bool,
    /// The bpffs directory the classifier's maps and links are pinned in, so a restart takes
    /// them over without a gap; empty: nothing is pinned.
    pub pin_dir: String,
    /// Leave the classifier attached and pinned on a clean stop too.
    pub keep_on_stop: bool,
    /// The DSCP marked on egress AI packets: a name (`EF`, `AF41`, `CS3`) or 0–63; empty: off.
    pub dscp: String,
    /// How the classifier attaches: "auto" (TCX on Linux 6.6+, clsact before), "tcx" or "clsact".
    pub attach: String,
}

impl Default for FastpathConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interface: "wwan0".into(),
            shape: false,
            uplink_kbit: 0,
            uplink_percent: 90,
            uplink_floor_kbit: 256,
            count_apps: true,
            apps_cgroup: String::new(),
            mark_own_sockets: true,
            pin_dir: "/sys/fs/bpf/aiesim".into(),
            keep_on_stop: false,
            dscp: String::new(),
            attach: "auto".into(),
        }
    }
}

impl FastpathConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.dscp.is_empty() && dscp_value(&self.dscp).is_none() {
            return rule(
                "fastpath.dscp",
                format!(
                    "fastpath.dscp must be EF, AFxy (x 1-4, y 1-3), CSx (x 0-7) or 0-63, not {:?}",
                    self.dscp
                ),
            );
        }
        if !["auto", "tcx", "clsact"].contains(&self.attach.as_str()) {
            return rule(
                "fastpath.attach",
                format!("fastpath.attach must be auto, tcx or clsact, not {:?}", self.attach),
            );
        }
        let range = crate::fastpath::UPLINK_KBIT_RANGE;
        if self.shape && self.uplink_kbit != 0 && !range.contains(&self.uplink_kbit) {
            return rule(
                "fastpath.uplink_kbit|fastpath.shape",
                format!(
                    "fastpath.uplink_kbit must be 0 (the modem's rate) or between {} and {}, not {}",
                    range.start(),
                    range.end(),
                    self.uplink_kbit
                ),
            );
        }
        if !(1..=100).contains(&self.uplink_percent) {
            return rule(
                "fastpath.uplink_percent",
                format!("fastpath.uplink_percent must be 1-100, not {}", self.uplink_percent),
            );
        }
        if !range.contains(&self.uplink_floor_kbit) {
            return rule(
                "fastpath.uplink_floor_kbit",
                format!(
                    "fastpath.uplink_floor_kbit must be between {} and {}, not {}",
                    range.start(),
                    range.end(),
                    self.uplink_floor_kbit
                ),
            );
        }
        Ok(())
    }

    /// The cgroup directory whose apps' AI traffic is counted, when asked for; `None` also when
    /// no cgroup v2 hierarchy is mounted.
    pub fn apps_cgroup(&self) -> Option<std::path::PathBuf> {
        if !self.count_apps {
            return None;
        }
        if self.apps_cgroup.is_empty() {
            crate::identity::cgroup2_root()
        } else {
            Some(self.apps_cgroup.clone().into())
        }
    }

    /// The cgroup id the classifier marks aiesimd's own sockets by, when asked for and aiesimd is
    /// alone in its cgroup; says at info why not otherwise. Call once: it reads the cgroup.
    pub fn own_cgroup(&self) -> Option<u64> {
        if !self.enabled || !self.mark_own_sockets {
            return None;
        }
        match crate::fastpath::own_cgroup() {
            Ok(id) => {
                tracing::info!(
                    cgroup = id,
                    "aiesimd's own sockets are AI traffic wherever they connect"
                );
                Some(id)
            }
            Err(e) => {
                tracing::info!(reason = %crate::broker::chain(&e), "aiesimd's own sockets are not marked: AI traffic is the listed endpoints only");
                None
            }
        }
    }

    /// How to attach the classifier: as configured, or what the running kernel has.
    pub fn attach_mode(&self) -> crate::fastpath::AttachMode {
        use crate::fastpath::AttachMode;
        match self.attach.as_str() {
            "tcx" => AttachMode::Tcx,
            "clsact" => AttachMode::Clsact,
            _ => AttachMode::detect(),
        }
    }

    /// The DSCP to mark egress AI packets with, when asked for.
    pub fn dscp(&self) -> Option<u8> {
        dscp_value(&self.dscp)
    }

    /// Where to pin the classifier, when asked to.
    pub fn pins(&self) -> Option<crate::fastpath::Pins> {
        (!self.pin_dir.is_empty()).then(|| crate::fastpath::Pins::new(&self.pin_dir, self.keep_on_stop))
    }

    /// The shaping to install and where its rate comes from, when asked for.
    pub fn shaping(&self) -> Option<crate::fastpath::UplinkRate> {
        use crate::fastpath::UplinkRate;
        self.shape.then_some(if self.uplink_kbit == 0 {
            UplinkRate::Modem {
                percent: self.uplink_percent,
                floor_kbit: self.uplink_floor_kbit,
            }
        } else {
            UplinkRate::Fixed(self.uplink_kbit)
        })
    }
}

/// A DSCP by its RFC 2474/2597/3246 name or its number.
fn dscp_value(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_uppercase();
    let digit = |c: Option<char>, range: std::ops::RangeInclusive<u8>| {
        c.and_then(|c| c.to_digit(10))
            .and_then(|d| u8::try_from(d).ok())
            .filter(|d| range.contains(d))
    };
    if name == "EF" {
        return Some(46);
    }
    if let Some(rest) = name.strip_prefix("AF") {
        let mut chars = rest.chars();
        let (class, drop) = (digit(chars.next(), 1..=4)?, digit(chars.next(), 1..=3)?);
        return chars.next().is_none().then_some(class * 8 + drop * 2);
    }
    if let Some(rest) = name.strip_prefix("CS") {
        let mut chars = rest.chars();
        let class = digit(chars.next(), 0..=7)?;
        return chars.next().is_none().then_some(class * 8);
    }
    name.parse::<u8>().ok().filter(|v| *v < 64)
}

/// `cloud.credential`: whether requests carry a bearer token signed by the eSIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialChoice {
    /// Signed by the card's IoT SAFE applet when the card has one; none otherwise.
    #[default]
    Auto,
    /// Always; a request that cannot get one fails.
    IotSafe,
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Network interface the cloud connections are bound to; empty for none.
    pub bind_interface: String,
    /// A PEM file of CA certificates trusted for endpoints besides the system's; empty for none.
    pub ca_file: PathBuf,
    /// Whether requests carry the device credential signed on the eSIM.
    pub credential: CredentialChoice,
    /// The IoT SAFE applet's AID in hex (GSMA's by default; some cards use a vendor's).
    pub iot_safe_aid: String,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// How long a connection to an endpoint stays open after its last request.
    pub keepalive_window_ms: u64,
    /// Endpoints one request is sent to, in turn, while each fails before the first token
    /// (1: no failover).
    pub failover_attempts: u32,
    /// Past this without a first token, a request is also sent to a second endpoint when the
    /// budget covers both (0: never).
    pub hedge_after_ms: u64,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            bind_interface: String::new(),
            ca_file: PathBuf::new(),
            credential: CredentialChoice::Auto,
            iot_safe_aid: "A0000005590010".into(),
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            keepalive_window_ms: 30_000,
            failover_attempts: 2,
            hedge_after_ms: 0,
        }
    }
}

impl CloudConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if !parse_hex(&c.iot_safe_aid).is_some_and(|aid| (5..=16).contains(&aid.len())) {
            return rule(
                "cloud.iot_safe_aid",
                format!(
                    "cloud.iot_safe_aid must be 5 to 16 bytes of hex, not \"{}\"",
                    c.iot_safe_aid
                ),
            );
        }
        for (key, value) in [
            ("connect_timeout_ms", c.connect_timeout_ms),
            ("first_byte_timeout_ms", c.first_byte_timeout_ms),
            ("idle_timeout_ms", c.idle_timeout_ms),
        ] {
            if value == 0 {
                return rule(format!("cloud.{key}"), format!("cloud.{key} must be above 0 ms"));
            }
        }
        if c.keepalive_window_ms > 3_600_000 {
            return rule(
                "cloud.keepalive_window_ms",
                format!(
                    "cloud.keepalive_window_ms must be at most 3600000 (an hour), not {}",
                    c.keepalive_window_ms
                ),
            );
        }
        if !(1..=8).contains(&c.failover_attempts) {
            return rule(
                "cloud.failover_attempts",
                format!(
                    "cloud.failover_attempts must be between 1 (no failover) and 8, not {}",
                    c.failover_attempts
                ),
            );
        }
        if c.hedge_after_ms > 600_000 {
            return rule(
                "cloud.hedge_after_ms",
                format!(
                    "cloud.hedge_after_ms must be at most 600000 (0: no hedging), not {}",
                    c.hedge_after_ms
                ),
            );
        }
        Ok(())
    }

    /// The IoT SAFE AID as bytes (validated by [`Config::validate`]).
    pub fn iot_safe_aid(&self) -> Vec<u8> {
        parse_hex(&self.iot_safe_aid).unwrap_or_default()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn keepalive_window(&self) -> Duration {
        Duration::from_millis(self.keepalive_window_ms)
    }
    pub fn hedge_after(&self) -> Option<Duration> {
        (self.hedge_after_ms > 0).then(|| Duration::from_millis(self.hedge_after_ms))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Tokens each app may spend over its lifetime (`Budget.Set` may change it per app).
    pub app_tokens: u64,
    /// Tokens the whole device may spend over its lifetime.
    pub device_tokens: u64,
    /// Tokens each app may spend per local day / month, and per minute (a rate); unset: none.
    pub app_daily_tokens: Option<u64>,
    pub app_monthly_tokens: Option<u64>,
    pub app_tokens_per_minute: Option<u64>,
    /// Tokens the whole device may spend per local day / month; unset: none.
    pub device_daily_tokens: Option<u64>,
    pub device_monthly_tokens: Option<u64>,
    /// The time zone days and months are counted in (`Europe/Paris`); empty: the system's.
    pub timezone: String,
    /// Completion tokens reserved when a request names no `max_tokens`.
    pub default_max_tokens: u32,
    /// Largest `max_tokens` a request may ask for; larger asks are clamped.
    pub max_tokens_cap: u32,
    /// The ledger's journal (durable spending, pending card debits, receipts); empty: kept in
    /// memory only.
    pub journal: PathBuf,
    /// Caps what the device spends while the eSIM is out of reach (the card's own allowance
    /// applies when it is lower, or when this is unset).
    pub offline_tokens: Option<u64>,
}

impl BudgetConfig {
    /// The time zone and the calendar and rate limits.
    fn validate(&self) -> Result<(), ConfigError> {
        use crate::ledger::{policy::Key, window::Calendar};
        let b = self;
        if let Err(e) = Calendar::zone(&b.timezone) {
            return rule("budget.timezone", format!("budget.timezone: {e}"));
        }
        let limits = [
            ("app_daily_tokens", b.app_daily_tokens, Key::Daily),
            ("app_monthly_tokens", b.app_monthly_tokens, Key::Monthly),
            ("app_tokens_per_minute", b.app_tokens_per_minute, Key::PerMinute),
            ("device_daily_tokens", b.device_daily_tokens, Key::Daily),
            ("device_monthly_tokens", b.device_monthly_tokens, Key::Monthly),
        ];
        for (key, value, kind) in limits {
            if let Some(Err(e)) = value.map(|v| kind.check(v)) {
                return rule(format!("budget.{key}"), format!("budget.{key}: {e}"));
            }
        }
        Ok(())
    }

    pub fn budgets(&self) -> crate::ledger::Budgets {
        crate::ledger::Budgets {
            app_tokens: self.app_tokens,
            device_tokens: self.device_tokens,
            offline_tokens: self.offline_tokens,
            app_daily: self.app_daily_tokens,
            app_monthly: self.app_monthly_tokens,
            app_per_minute: self.app_tokens_per_minute,
            device_daily: self.device_daily_tokens,
            device_monthly: self.device_monthly_tokens,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            app_tokens: 100_000,
            device_tokens: 1_000_000,
            app_daily_tokens: None,
            app_monthly_tokens: None,
            app_tokens_per_minute: None,
            device_daily_tokens: None,
            device_monthly_tokens: None,
            timezone: String::new(),
            default_max_tokens: 256,
            max_tokens_cap: 2_048,
            journal: PathBuf::from(DEFAULT_JOURNAL),
            offline_tokens: None,
        }
    }
}

/// `[requests]`: what one app, and one request, may hold.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsConfig {
    /// Requests one app may have in flight at once.
    pub max_in_flight_per_app: usize,
    /// Request objects one app may hold; finished ones linger `linger_s` for their owner.
    pub max_objects_per_app: usize,
    /// How long a finished request's object stays for its owner to read.
    pub linger_s: u64,
    /// A stream whose app has not read for this long is cancelled (and billed for what was sent).
    pub stall_timeout_ms: u64,
    /// The send buffer of each stream socket: what an app that does not read can hold up.
    pub stream_buffer_bytes: usize,
    /// The longest one request may run.
    pub deadline_s: u64,
    /// The most answer text one request may stream.
    pub max_answer_bytes: usize,
    /// The largest image one request may carry, in bytes.
    pub max_image_bytes: usize,
    /// The most all images of one request may take together, in bytes.
    pub max_request_image_bytes: usize,
    /// The most images one request may carry.
    pub max_images: usize,
    /// After this long without a request the daemon gives back the memory of finished work
    /// (its code pages, free heap); 0: never.
    pub idle_trim_s: u64,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            max_in_flight_per_app: 8,
            max_objects_per_app: 64,
            linger_s: 60,
            stall_timeout_ms: 10_000,
            stream_buffer_bytes: 64 * 1024,
            deadline_s: 600,
            max_answer_bytes: 1 << 20,
            max_image_bytes: 4 << 20,
            max_request_image_bytes: 8 << 20,
            max_images: 8,
            idle_trim_s: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: String,
    /// Base URL of an OpenAI-compatible API, e.g. `https://metro.example/v1`.
    pub url: String,
    pub tier: Tier,
    /// Models served there; the first is the default.
    pub models: Vec<String>,
    /// What the eSIM's token account is charged: account tokens per 1000 model tokens.
    #[serde(default = "default_price")]
    pub price_per_1k: u64,
    /// Requests each model there serves at once; more wait in line (interactive first).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
}

const fn default_price() -> u64 {
    crate::router::DEFAULT_PRICE_PER_1K
}

const fn default_max_concurrent() -> usize {
    crate::router::DEFAULT_MAX_CONCURRENT
}

impl Config {
    /// Reads and validates a configuration file and its drop-ins, `PATH.d/*.toml` in name
    /// order, each laid over what came before: tables key by key, `[[endpoint]]` lists added.
    /// Each file is checked on its own first, so a mistake is reported with its file and line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut files = vec![Self::read_file(path)?];
        for dropin in dropins(path)? {
            files.push(Self::read_file(&dropin)?);
        }
        let mut merged = toml::Table::new();
        for file in &files {
            merge(&mut merged, file.table.clone());
        }
        let config: Self = toml::Value::Table(merged)
            .try_into()
            .map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        config.validate().map_err(|e| locate(e, &files))?;
        Ok(config)
    }

    /// One file, after checking that it is TOML with the right keys and types.
    fn read_file(path: &Path) -> Result<SourceFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse = |source: toml::de::Error| match source.span() {
            Some(span) => {
                // The line at fault, as a compiler quotes it: the message alone may not name
                // the key ("invalid type: string, expected u64").
                let quoted = text.get(span.start..).and_then(|from| {
                    let start = text[..span.start].rfind('\n').map_or(0, |n| n + 1);
                    let end = span.start + from.find('\n').unwrap_or(from.len());
                    text.get(start..end).map(str::trim)
                });
                let message = source.message().trim_end();
                let message = match quoted {
                    Some(line) if !line.is_empty() => format!("{message}: `{line}`"),
                    _ => message.to_owned(),
                };
                at(path, &text, span.start, message)
            }
            None => ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            },
        };
        toml::from_str::<Self>(&text).map_err(parse)?;
        let table = text.parse::<toml::Table>().map_err(parse)?;
        Ok(SourceFile {
            path: path.to_owned(),
            text,
            table,
        })
    }

    /// The log filter the file asks for.
    pub fn log_filter(&self) -> &str {
        if self.log.is_empty() { "info" } else { &self.log }
    }

    /// The file's log filter, parsed (validation has checked that it parses).
    pub fn env_filter(&self) -> tracing_subscriber::EnvFilter {
        parse_log_filter(self.log_filter()).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    }

    /// Parses and validates a configuration given as text; pure, and fuzzed as such.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Toml(Box::new(source)))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path` (and its drop-ins), or gives the defaults when `path` is the default
    /// location and absent.
    pub fn load_or_default(path: &Path) -> Result<Self, ConfigError> {
        if path == Path::new(DEFAULT_PATH) && !path.exists() {
            return Ok(Self::default());
        }
        Self::load(path)
    }

    /// Each `[[endpoint]]`: a plain unique name, an http(s) URL, models, a sane concurrency.
    fn validate_endpoints(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let invalid = |field: &str, m: String| rule(format!("endpoint.{i}.{field}"), m);
            if e.name.is_empty()
                || !e
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return invalid(
                    "name",
                    format!("endpoint name \"{}\" must be ASCII letters, digits, - or _", e.name),
                );
            }
            if !names.insert(e.name.as_str()) {
                return invalid("name", format!("endpoint \"{}\" is defined twice", e.name));
            }
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return invalid(
                    "url",
                    format!(
                        "endpoint \"{}\" url must start with http:// or https://, not \"{}\"",
                        e.name, e.url
                    ),
                );
            }
            if e.models.is_empty() || e.models.iter().any(String::is_empty) {
                return invalid(
                    "models",
                    format!("endpoint \"{}\" must list at least one model, none empty", e.name),
                );
            }
            if !(1..=1_024).contains(&e.max_concurrent) {
                return invalid(
                    "max_concurrent",
                    format!(
                        "endpoint \"{}\" max_concurrent must be between 1 and 1024, not {}",
                        e.name, e.max_concurrent
                    ),
                );
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_endpoints()?;
        let b = &self.budget;
        if b.max_tokens_cap == 0 || b.default_max_tokens == 0 || b.default_max_tokens > b.max_tokens_cap {
            return rule(
                "budget.default_max_tokens|budget.max_tokens_cap",
                format!(
                    "budget.default_max_tokens ({}) must be between 1 and budget.max_tokens_cap ({})",
                    b.default_max_tokens, b.max_tokens_cap
                ),
            );
        }
        b.validate()?;
        if !(b.journal.as_os_str().is_empty() || b.journal.is_absolute()) {
            return rule(
                "budget.journal",
                format!(
                    "budget.journal must be an absolute path or empty, not \"{}\"",
                    b.journal.display()
                ),
            );
        }
        let r = &self.requests;
        let bounds = [
            ("max_in_flight_per_app", r.max_in_flight_per_app as u64, 1, 1_000),
            ("max_objects_per_app", r.max_objects_per_app as u64, 1, 10_000),
            ("linger_s", r.linger_s, 0, 3_600),
            ("stall_timeout_ms", r.stall_timeout_ms, 100, 600_000),
            ("stream_buffer_bytes", r.stream_buffer_bytes as u64, 4_096, 16 << 20),
            ("deadline_s", r.deadline_s, 1, 86_400),
            ("max_answer_bytes", r.max_answer_bytes as u64, 1_024, 64 << 20),
            ("max_image_bytes", r.max_image_bytes as u64, 1_024, 64 << 20),
            (
                "max_request_image_bytes",
                r.max_request_image_bytes as u64,
                1_024,
                256 << 20,
            ),
            ("max_images", r.max_images as u64, 0, 64),
            ("idle_trim_s", r.idle_trim_s, 0, 86_400),
        ];
        for (key, value, low, high) in bounds {
            if !(low..=high).contains(&value) {
                return rule(
                    format!("requests.{key}"),
                    format!("requests.{key} must be between {low} and {high}, not {value}"),
                );
            }
        }
        self.fastpath.validate()?;
        self.cloud.validate()?;
        self.modem.validate()?;
        if self.fastpath.enabled && self.fastpath.interface.is_empty() {
            return rule(
                "fastpath.interface|fastpath.enabled",
                "fastpath.interface must be set when the fast path is enabled".into(),
            );
        }
        if let Err(e) = parse_log_filter(self.log_filter()) {
            return rule("log", format!("log \"{}\" is not a log filter: {e}", self.log));
        }
        Ok(())
    }
}

/// Parses a log filter (`info`, `aiesimd=debug,tokio=warn`, …) as `RUST_LOG` would, without the
/// parser's panic on a directive that starts with white space and holds a multi-byte character:
/// tracing-subscriber 0.3 walks the trimmed directive but slices the untrimmed one (found by the
/// `config` fuzz target, docs/fuzz-findings/config-tracing-directive-panic). Each directive is
/// trimmed here first, which is also what the parser means to do. Field values (`[span{f=v}]`)
/// match as plain text, not as regular expressions: compiling one such as `94.....…bbb` took the
/// parser's DFA builder seconds (docs/fuzz-findings/config-log-field-regex-timeout).
pub fn parse_log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    let trimmed: Vec<&str> = spec.split(',').map(str::trim).collect();
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(trimmed.join(","))
}

/// One file of the configuration, kept to point at the line a broken rule comes from.
struct SourceFile {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

/// Turns a broken rule into one naming the file, line and column that set its key: the last
/// file that sets it (later files win), or for an `[[endpoint]]` the file that holds it. A rule
/// broken by a default (no file sets the key) stays as it is.
fn locate(error: ConfigError, files: &[SourceFile]) -> ConfigError {
    let ConfigError::Rule { key, message } = error else {
        return error;
    };
    let Some((file, offset)) = key.split('|').find_map(|key| place(key, files)) else {
        return ConfigError::Rule { key, message };
    };
    at(&file.path, &file.text, offset, message)
}

/// The error `message` at byte `offset` of `path`, whose text is `text`.
fn at(path: &Path, text: &str, offset: usize, message: String) -> ConfigError {
    let before = text.get(..offset).unwrap_or(text);
    ConfigError::At {
        path: path.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        message,
    }
}

/// The file and byte offset that set `key`.
fn place<'f>(key: &str, files: &'f [SourceFile]) -> Option<(&'f SourceFile, usize)> {
    let segments: Vec<&str> = key.split('.').collect();
    let mut earlier_items = 0;
    let mut found = None;
    for file in files {
        let Ok(root) = toml::de::DeTable::parse(&file.text) else {
            continue;
        };
        if let Some(offset) = offset_of(root.get_ref(), &segments, &mut earlier_items) {
            found = Some((file, offset));
            if segments.iter().any(|s| s.parse::<usize>().is_ok()) {
                break;
            }
        }
    }
    found
}

/// Where `segments` (keys, and indexes into arrays of tables) is set in one file's `table`.
/// `earlier_items` counts the array items of earlier files, since merging appends arrays.
fn offset_of(table: &toml::de::DeTable<'_>, segments: &[&str], earlier_items: &mut usize) -> Option<usize> {
    use toml::de::DeValue;
    let (first, rest) = segments.split_first()?;
    let (key, value) = table.iter().find(|(k, _)| k.get_ref() == first)?;
    let Some((next, rest)) = rest.split_first() else {
        return Some(key.span().start);
    };
    match (value.get_ref(), next.parse::<usize>()) {
        (DeValue::Array(items), Ok(index)) => {
            let Some(item) = index.checked_sub(*earlier_items).and_then(|i| items.get(i)) else {
                *earlier_items += items.len();
                return None;
            };
            match item.get_ref() {
                DeValue::Table(inner) => offset_of(inner, rest, &mut 0).or(Some(item.span().start)),
                _ => Some(item.span().start),
            }
        }
        (DeValue::Table(inner), Err(_)) => offset_of(inner, &segments[1..], earlier_items),
        _ => None,
    }
}

/// Hex digits (upper or lower case) as bytes; `None` for anything else.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// The drop-ins of `path`: `PATH.d/*.toml`, in name order; none when the directory is absent.
fn dropins(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".d");
    let dir = PathBuf::from(dir);
    let read = |source| ConfigError::Read {
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let file = entry.map_err(read)?.path();
        if file.extension().is_some_and(|e| e == "toml") && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Lays `over` on `base`: tables merge key by key, arrays of tables are appended, and any other
/// value replaces the one before.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => merge(below, above),
            (Some(toml::Value::Array(below)), toml::Value::Array(above)) if above.iter().all(toml::Value::is_table) => {
                below.extend(above);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(s)
    }

    /// The long fuzz pass's finding: a directive with a leading space and a multi-byte character
    /// panicked tracing-subscriber's parser; now it is a config error naming the key's line.
    #[test]
    fn log_filter_fuzz_finding_is_an_error_not_a_panic() {
        let input = include_bytes!("../../../docs/fuzz-findings/config-tracing-directive-panic");
        let text = std::str::from_utf8(input).unwrap();
        let error = parse(text).expect_err("the filter does not parse").to_string();
        assert!(error.contains("is not a log filter"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aiesimd.toml");
        std::fs::write(&path, input).unwrap();
        let error = Config::load(&path).expect_err("the filter does not parse").to_string();
        assert!(error.contains("aiesimd.toml:2:"), "names line 2: {error}");
        for spec in [" a\u{3a0}[x", "  \u{e9}\u{e9}[", " x\u{3a0}{y}", ", \u{3a0}=debug"] {
            let _ = parse_log_filter(spec);
        }
    }

    /// The second finding: a field value compiled as a regular expression took the fuzzer's
    /// 10 s limit; as plain text it parses at once (the test would hang, not fail, if it came back).
    #[test]
    fn log_filter_field_values_are_not_regular_expressions() {
        let input = include_bytes!("../../../docs/fuzz-findings/config-log-field-regex-timeout");
        let text = std::str::from_utf8(input).unwrap();
        let error = parse(text).expect_err("the directive is malformed").to_string();
        assert!(error.contains("is not a log filter"), "{error}");
        assert!(parse_log_filter("aiesimd[request{app=94.....................bbbbbbbbbbbbbbbbb}]=debug").is_ok());
    }

    #[test]
    fn log_filter_directives_are_trimmed() {
        let c = parse("log = \" aiesimd=debug , tokio=warn \"").unwrap();
        assert_eq!(c.env_filter().to_string(), "aiesimd=debug,tokio=warn");
        assert!(parse_log_filter("aiesimd=loud").is_err());
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
            bus = "unix:path=/run/x"
            [modem]
            device = "/dev/pts/3"
            protocol = "qmi"
            [fastpath]
            interface = "rmnet0"
            [budget]
            app_tokens = 10
            [[endpoint]]
            name = "metro"
            url = "http://127.0.0.1:8080/v1"
            tier = "metro"
            models = ["m"]
            "#,
        )
        .unwrap();
        assert_eq!(c.bus, Bus::Address("unix:path=/run/x".into()));
        assert_eq!(c.endpoints[0].tier, Tier::Metro);
        assert_eq!(c.endpoints[0].max_concurrent, crate::router::DEFAULT_MAX_CONCURRENT);
        assert_eq!(c.budget.app_tokens, 10);
        assert_eq!(c.budget.max_tokens_cap, BudgetConfig::default().max_tokens_cap);
        assert_eq!(c.fastpath.interface, "rmnet0");
        assert_eq!(c.modem.device, "/dev/pts/3");
        assert_eq!(c.modem.protocol, ProtocolChoice::Qmi);
        let options = c.modem.options("rmnet0").unwrap().unwrap();
        assert_eq!(options.device, DeviceChoice::Path("/dev/pts/3".into()));
        assert_eq!(options.protocol, Some(Protocol::Qmi));
        assert!(!options.connect);

        let defaults = parse("").unwrap();
        let auto = defaults.modem.options("wwan0").unwrap().unwrap();
        assert_eq!((auto.device, auto.protocol), (DeviceChoice::Auto, None));
        assert_eq!(
            auto.qmi_proxy.map(|p| (p.name, p.group)),
            Some(("qmi-proxy".to_owned(), None))
        );
        let off = parse("[modem]\ndevice = \"\"").unwrap();
        assert!(off.modem.options("wwan0").unwrap().is_none());
        let root = parse("[modem]\nproxy_group = \"root\"\nmbim_proxy = \"\"").unwrap();
        let root = root.modem.options("wwan0").unwrap().unwrap();
        assert_eq!(root.qmi_proxy.unwrap().group, Some(nix::unistd::Gid::from_raw(0)));
        assert!(root.mbim_proxy.is_none());
        let missing = parse("[modem]\nproxy_group = \"no-such-group-here\"").unwrap();
        assert!(
            missing
                .modem
                .options("wwan0")
                .unwrap_err()
                .to_string()
                .contains("no-such-group-here")
        );
        let data = parse("[modem]\nconnect = true\napn = \"iot.example\"\nprotocol = \"mbim\"").unwrap();
        let data = data.modem.options("wwan0").unwrap().unwrap();
        assert_eq!(
            (data.connect, data.apn.as_str(), data.protocol),
            (true, "iot.example", Some(Protocol::Mbim))
        );
        assert_eq!(defaults.cloud.credential, CredentialChoice::Auto);
        assert_eq!(
            defaults.cloud.iot_safe_aid(),
            [0xA0, 0x00, 0x00, 0x05, 0x59, 0x00, 0x10]
        );
        assert_eq!(defaults.fastpath.shaping(), None);
        let shaped = parse("[fastpath]\nshape = true\nuplink_kbit = 2000").unwrap();
        assert_eq!(
            shaped.fastpath.shaping(),
            Some(crate::fastpath::UplinkRate::Fixed(2000))
        );
        let clsact = parse("[fastpath]\nattach = \"clsact\"").unwrap();
        assert_eq!(clsact.fastpath.attach_mode(), crate::fastpath::AttachMode::Clsact);
        let from_modem = parse("[fastpath]\nshape = true\nuplink_percent = 80").unwrap();
        assert_eq!(
            from_modem.fastpath.shaping(),
            Some(crate::fastpath::UplinkRate::Modem {
                percent: 80,
                floor_kbit: 256
            })
        );
        let none = parse("[cloud]\ncredential = \"none\"\niot_safe_aid = \"a000000559001001\"").unwrap();
        assert_eq!(none.cloud.credential, CredentialChoice::None);
        assert_eq!(none.cloud.iot_safe_aid().len(), 8);
        for bad in [
            "[cloud]\niot_safe_aid = \"A0\"",
            "[cloud]\niot_safe_aid = \"zz00000559\"",
            "[cloud]\ncredential = \"password\"",
            "[modem]\ndevice = \"cdc-wdm0\"",
            "[modem]\nrequest_timeout_ms = 5",
            "[modem]\napn = \"two words\"",
            "[modem]\nprotocol = \"at\"",
            "[fastpath]\nshape = true\nuplink_kbit = 4",
            "[fastpath]\nshape = true\nuplink_percent = 0",
            "[fastpath]\nshape = true\nuplink_percent = 101",
            "[fastpath]\nuplink_floor_kbit = 1",
            "[fastpath]\nattach = \"xdp\"",
        ] {
            assert!(parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn own_sockets_are_marked_by_default_unless_turned_off() {
        assert!(parse("").unwrap().fastpath.mark_own_sockets);
        // Off, or no fast path: the cgroup is not even looked at.
        for off in ["[fastpath]\nmark_own_sockets = false", "[fastpath]\nenabled = false"] {
            assert_eq!(parse(off).unwrap().fastpath.own_cgroup(), None, "{off}");
        }
    }

    #[test]
    fn dscp_names_and_numbers_are_understood() {
        assert_eq!(dscp_value("AF41"), Some(34));
        assert_eq!(dscp_value("af11"), Some(10));
        assert_eq!(dscp_value("ef"), Some(46));
        assert_eq!(dscp_value("CS3"), Some(24));
        assert_eq!(dscp_value("CS0"), Some(0));
        assert_eq!(dscp_value("10"), Some(10));
        assert_eq!(dscp_value("63"), Some(63));
        for bad in ["AF51", "AF14", "AF4", "AF413", "CS8", "64", "-1", "fast", ""] {
            assert_eq!(dscp_value(bad), None, "{bad}");
        }
        let e = parse("[fastpath]\ndscp = \"AF51\"").unwrap_err();
        assert!(e.to_string().contains("fastpath.dscp must be"), "{e}");
        assert_eq!(parse("[fastpath]\ndscp = \"AF41\"").unwrap().fastpath.dscp(), Some(34));
        assert_eq!(Config::default().fastpath.dscp(), None);
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[modem]\ndevise = \"/dev/x\"").unwrap_err();
        assert!(matches!(e, ConfigError::Toml(_)), "{e}");
        let src = std::error::Error::source(&e).unwrap().to_string();
        assert!(src.contains("devise"), "{src}");

        let dup = "[[endpoint]]\nname='a'\nurl='http://x'\ntier='metro'\nmodels=['m']\n";
        let e = parse(&format!("{dup}{dup}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the configuration is not valid: endpoint \"a\" is defined twice"
        );

        let e = parse("[[endpoint]]\nname='a'\nurl='ftp://x'\ntier='metro'\nmodels=['m']\n").unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");

        let e = parse("[[endpoint]]\nname='a'\nurl='http://x'\ntier='metro'\nmodels=['m']\nmax_concurrent=0\n")
            .unwrap_err();
        assert!(e.to_string().contains("max_concurrent"), "{e}");

        let e = parse("[budget]\ndefault_max_tokens = 5000").unwrap_err();
        assert!(e.to_string().contains("default_max_tokens"), "{e}");
    }

    #[test]
    fn calendar_budgets_and_the_time_zone_are_read_and_checked() {
        let c = parse(
            "[budget]\ntimezone = \"Europe/Paris\"\napp_daily_tokens = 500\napp_monthly_tokens = 9000\napp_tokens_per_minute = 60\ndevice_daily_tokens = 2000",
        )
        .unwrap();
        let b = c.budget.budgets();
        assert_eq!(
            (
                b.app_daily,
                b.app_monthly,
                b.app_per_minute,
                b.device_daily,
                b.device_monthly
            ),
            (Some(500), Some(9000), Some(60), Some(2000), None)
        );
        assert_eq!(c.budget.timezone, "Europe/Paris");
        let e = parse("[budget]\ntimezone = \"Europe/Atlantis\"").unwrap_err();
        assert!(e.to_string().contains("budget.timezone: \"Europe/Atlantis\""), "{e}");
        let e = parse("[budget]\napp_tokens_per_minute = 0").unwrap_err();
        assert!(e.to_string().contains("budget.app_tokens_per_minute"), "{e}");
        let e = parse("[budget]\ndevice_daily_tokens = 99999999999999999").unwrap_err();
        assert!(e.to_string().contains("not a sensible limit"), "{e}");
    }

    #[test]
    fn failover_attempts_default_to_one_retry_and_are_bounded() {
        assert_eq!(parse("").unwrap().cloud.failover_attempts, 2);
        assert_eq!(
            parse("[cloud]\nfailover_attempts = 1").unwrap().cloud.failover_attempts,
            1
        );
        for bad in [0, 9] {
            let e = parse(&format!("[cloud]\nfailover_attempts = {bad}")).unwrap_err();
            assert!(e.to_string().contains("cloud.failover_attempts"), "{e}");
        }
        assert_eq!(parse("").unwrap().cloud.hedge_after(), None);
        assert_eq!(
            parse("[cloud]\nhedge_after_ms = 800").unwrap().cloud.hedge_after(),
            Some(Duration::from_millis(800))
        );
        let e = parse("[cloud]\nhedge_after_ms = 600001").unwrap_err();
        assert!(e.to_string().contains("cloud.hedge_after_ms"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_toml_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aiesimd.toml");
        std::fs::write(&path, "[modem\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(
            matches!(&e, ConfigError::At { path: p, line: 1, .. } if *p == path),
            "{e}"
        );
    }

    #[test]
    fn drop_ins_are_laid_over_the_file_in_name_order_and_their_mistakes_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aiesimd.toml");
        std::fs::write(
            &path,
            "[budget]\napp_tokens = 100\ndevice_tokens = 1000\n\n[[endpoint]]\nname = \"a\"\nurl = \"http://a/v1\"\ntier = \"metro\"\nmodels = [\"m\"]\n",
        )
        .unwrap();
        let dropins = dir.path().join("aiesimd.toml.d");
        std::fs::create_dir(&dropins).unwrap();
        std::fs::write(
            dropins.join("20-more.toml"),
            "[budget]\napp_tokens = 300\n\n[[endpoint]]\nname = \"b\"\nurl = \"http://b/v1\"\ntier = \"national\"\nmodels = [\"m\"]\n",
        )
        .unwrap();
        std::fs::write(dropins.join("10-less.toml"), "[budget]\napp_tokens = 200\n").unwrap();
        std::fs::write(dropins.join("notes.txt"), "not a drop-in").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.budget.app_tokens, 300, "the later drop-in wins");
        assert_eq!(config.budget.device_tokens, 1000, "what no drop-in names stays");
        let names: Vec<&str> = config.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "endpoints are added");

        // A mistake in a drop-in names that file and its line.
        let bad = dropins.join("30-bad.toml");
        std::fs::write(&bad, "[budget]\n\napp_tokens = \"lots\"\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(
            matches!(&e, ConfigError::At { path: p, line: 3, column: 14, .. } if *p == bad),
            "{e}"
        );
        assert!(e.to_string().contains("string"), "the message says what was wrong: {e}");
        std::fs::remove_file(&bad).unwrap();
        // A merge that breaks a rule of the whole (two endpoints of one name) is refused.
        std::fs::write(
            dropins.join("40-twice.toml"),
            "[[endpoint]]\nname = \"a\"\nurl = \"http://c/v1\"\ntier = \"metro\"\nmodels = [\"m\"]\n",
        )
        .unwrap();
        // It is pointed at where the third endpoint is: the drop-in's second line.
        let twice = dropins.join("40-twice.toml");
        let e = Config::load(&path).unwrap_err();
        assert!(
            matches!(&e, ConfigError::At { path: p, line: 2, column: 1, .. } if *p == twice),
            "{e:?}"
        );
        assert!(e.to_string().contains("endpoint \"a\" is defined twice"), "{e}");
    }

    #[test]
    fn a_rule_of_the_whole_names_the_file_and_line_that_set_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aiesimd.toml");
        let dropins = dir.path().join("aiesimd.toml.d");
        std::fs::create_dir(&dropins).unwrap();
        let load_err = |main: &str, dropin: &str| {
            std::fs::write(&path, main).unwrap();
            std::fs::write(dropins.join("10.toml"), dropin).unwrap();
            Config::load(&path).unwrap_err()
        };
        let at = |e: &ConfigError| match e {
            ConfigError::At { path, line, column, .. } => {
                (path.file_name().unwrap().to_string_lossy().into_owned(), *line, *column)
            }
            other => panic!("not located: {other:?}"),
        };

        // Set in the file, its line and column.
        let e = load_err("bus = \"session\"\n\n[budget]\n  max_tokens_cap = 10\n", "");
        assert_eq!(at(&e), ("aiesimd.toml".into(), 4, 3), "{e}");
        assert!(e.to_string().contains("budget.default_max_tokens (256)"), "{e}");
        // Set in the file and again in a drop-in: the drop-in's, which won.
        let e = load_err("[modem]\ndevice = \"dev\"\n", "# later\n[modem]\ndevice = \"tty\"\n");
        assert_eq!(at(&e), ("10.toml".into(), 3, 1), "{e}");
        // A dotted key, and a key of a later endpoint in the main file.
        let e = load_err("cloud.idle_timeout_ms = 0\n", "");
        assert_eq!(at(&e), ("aiesimd.toml".into(), 1, 7), "{e}");
        let endpoints = "[[endpoint]]\nname = \"a\"\nurl = \"http://a\"\ntier = \"metro\"\nmodels = [\"m\"]\n\n[[endpoint]]\nname = \"b\"\nurl = \"ftp://b\"\ntier = \"metro\"\nmodels = [\"m\"]\n";
        let e = load_err(endpoints, "");
        assert_eq!(at(&e), ("aiesimd.toml".into(), 9, 1), "{e}");
        // The first drop-in endpoint after the file's two is the drop-in's first.
        let e = load_err(
            &endpoints.replace("ftp://b", "http://b"),
            "[[endpoint]]\nname = \"c\"\nurl = \"http://c\"\ntier = \"metro\"\nmodels = []\n",
        );
        assert_eq!(at(&e), ("10.toml".into(), 5, 1), "{e}");
        // A rule over two keys names the one that is set.
        let e = load_err("[fastpath]\nshape = true\n\nuplink_kbit = 4\n", "");
        assert_eq!(at(&e), ("aiesimd.toml".into(), 4, 1), "{e}");
        // The log filter is checked too.
        let e = load_err("log = \"aiesimd=loud\"\n", "");
        assert_eq!(at(&e), ("aiesimd.toml".into(), 1, 1), "{e}");
    }

    #[test]
    fn bus_argument_forms() {
        assert_eq!(Bus::from_arg("system"), Bus::System);
        assert_eq!(Bus::from_arg("session"), Bus::Session);
        assert_eq!(Bus::from_arg("unix:path=/x"), Bus::Address("unix:path=/x".into()));
    }
}
