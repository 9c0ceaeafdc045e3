//! A simulated world of real processes for end-to-end tests and the demo.
//!
//! A private system-like bus (real `dbus-daemon` with the project's bus policy), the modem
//! simulator on a pseudo-terminal, a real language model as the cloud in an "operator" network
//! namespace, and aiesimd in a "device" namespace whose `wwan0` links the two, so the AI traffic
//! crosses the classifier. Everything is torn down on drop.

pub mod bench;
mod cgroups;
mod netns;
pub mod opnet;
mod process;
mod tls;

use std::{
    fmt::Write as _,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
pub use cgroups::Cgroups;
pub use netns::Netns;
pub use process::Proc;
pub use tls::TestCa;

/// The operator's side of the device link and the device's side (RFC 2544 benchmark range,
/// only ever inside namespaces this harness creates).
pub const OPERATOR_ADDR: &str = "198.18.0.1";
pub const DEVICE_ADDR: &str = "198.18.0.2";
/// The model the test cloud serves.
pub const MODEL_NAME: &str = "smollm2-135m";
/// The watchdog period every world's daemon runs with.
pub const WATCHDOG_USEC: &str = "2000000";
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// IMEI the simulated modem reports.
pub const SIM_IMEI: &str = "356938035643809";

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Where cargo put the binaries of `profile` ("debug" or "release").
pub fn bin_dir(profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
    target.join(profile)
}

pub fn model_path() -> PathBuf {
    repo_root().join(".tools/models").join(MODEL_FILE)
}

/// Why this machine cannot run the world, if it cannot.
pub fn missing_prerequisites(profile: &str) -> Option<String> {
    let mut missing = String::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push_str("not root (network namespaces and BPF need root); ");
    }
    for tool in ["dbus-daemon", "ip", "node"] {
        if which(tool).is_none() {
            let _ = write!(missing, "{tool} not installed; ");
        }
    }
    if !model_path().exists() {
        let _ = write!(missing, "model {} missing; ", model_path().display());
    }
    if !repo_root().join("tests/cloud/node_modules/node-llama-cpp").exists() {
        missing.push_str("tests/cloud/node_modules missing; ");
    }
    for bin in ["aiesimd", "aictl", "aiesim-modemsim"] {
        if !bin_dir(profile).join(bin).exists() {
            let _ = write!(missing, "{bin} not built ({profile}); ");
        }
    }
    (!missing.is_empty()).then(|| format!("{missing}— run `cargo xtask setup` and `cargo build --workspace`"))
}

/// Skips a test (returning true) when the world cannot run here, or fails it under CI, where
/// nothing may be skipped silently.
pub fn skip_unless_ready(test: &str) -> bool {
    skip_if_missing(test, missing_prerequisites("debug"))
}

/// Skips a test (returning true) when `missing` names something absent, or fails it under CI.
pub fn skip_if_missing(test: &str, missing: Option<String>) -> bool {
    match missing {
        None => false,
        Some(why) => aiesim_skip::skip(&format!("{test}: {why}")),
    }
}

/// A finished command's status and output, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Every `Request.Finished` signal `conn` may receive.
pub async fn finished_signals(conn: &zbus::Connection) -> zbus::MessageStream {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(aiesim_dbus::iface::REQUEST)
        .member("Finished")
        .build()
        .expect("a valid match rule");
    zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .expect("the bus takes the match rule")
}

/// A system group or user the test needed and made, removed again when dropped (kept when it
/// was there before). Tests of one binary run at once and may want the same account: it is
/// removed when the last of them drops it, not while another's daemon still runs as it.
pub struct Account {
    name: String,
    user: bool,
    pub uid: u32,
    pub gid: u32,
}

/// The accounts held in this process, by (is a user, name): how many holders, and whether this
/// process made it (and so removes it after the last).
type Holders = std::collections::HashMap<(bool, String), (usize, bool)>;
static HELD: std::sync::Mutex<Option<Holders>> = std::sync::Mutex::new(None);

impl Account {
    /// Counts one more holder of an account, making it with `make` (which says whether it did)
    /// when no holder in this process has it yet.
    fn hold(user: bool, name: &str, make: impl FnOnce() -> anyhow::Result<bool>) -> anyhow::Result<()> {
        let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = held.get_or_insert_with(std::collections::HashMap::new);
        if let Some((holders, _)) = held.get_mut(&(user, name.to_owned())) {
            *holders += 1;
            return Ok(());
        }
        let created = make()?;
        held.insert((user, name.to_owned()), (1, created));
        Ok(())
    }

    /// The system group `name`, made with groupadd if missing.
    pub fn group(name: &str) -> anyhow::Result<Self> {
        let lookup = || {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        };
        Self::hold(false, name, || {
            if lookup().is_some() {
                return Ok(false);
            }
            let out = Command::new("groupadd").args(["--system", name]).output()?;
            anyhow::ensure!(out.status.success(), "groupadd {name}: {}", output_text(&out));
            Ok(true)
        })?;
        Ok(Self {
            name: name.to_owned(),
            user: false,
            uid: 0,
            gid: lookup().context("the group just made is missing")?,
        })
    }

    /// The system user `name` (with its own group), made with useradd if missing.
    pub fn user(name: &str) -> anyhow::Result<Self> {
        let lookup = || {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
        };
        Self::hold(true, name, || {
            if lookup().is_some() {
                return Ok(false);
            }
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .output()?;
            anyhow::ensure!(out.status.success(), "useradd {name}: {}", output_text(&out));
            Ok(true)
        })?;
        let (uid, gid) = lookup().context("the user just made is missing")?;
        Ok(Self {
            name: name.to_owned(),
            user: true,
            uid,
            gid,
        })
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (self.user, self.name.clone());
        let Some((holders, created)) = held.as_mut().and_then(|h| h.get_mut(&key)) else {
            return;
        };
        *holders -= 1;
        if *holders > 0 {
            return;
        }
        let created = *created;
        held.as_mut().map(|h| h.remove(&key));
        if created {
            let tool = if self.user { "userdel" } else { "groupdel" };
            let _ = Command::new(tool).arg(&self.name).status();
        }
    }
}

/// How the world's cloud behaves.
#[derive(Debug, Clone, Default)]
pub struct CloudOptions {
    /// Omit the usage chunk, as some providers do.
    pub no_usage: bool,
    /// Answer every chat with this HTTP status.
    pub fail_status: Option<u16>,
    /// Refuse chats without a valid device credential (an ES256 JWT signed on the eSIM).
    pub require_jwt: bool,
    /// With `fail_status`: the `Retry-After` seconds sent with each failure.
    pub retry_after: Option<u32>,
    /// Stop sending after this many deltas, keeping the connection open (0: before any).
    pub stall_after: Option<u32>,
    /// Hold each answer's first token back this long (`--first-token-ms`): a slow endpoint.
    pub first_token_ms: Option<u32>,
    /// Cut each stream after this many deltas, without usage or `[DONE]` (`--break-after`).
    pub break_after: Option<u32>,
    /// Record each chat request's images (MIME, size, SHA-256), for [`World::cloud_records`].
    pub record: bool,
    /// Serve HTTPS (HTTP/2 by ALPN) with a certificate from a test CA.
    pub tls: CloudTls,
    /// Canned tokens instead of the model, every request at once (`--stub-tokens`): only for
    /// load, which the one-request-at-a-time model on this CPU cannot carry.
    pub stub: Option<CloudStub>,
}

/// The test cloud's stand-in for the model: `tokens` per answer, one every `interval_ms`.
#[derive(Debug, Clone, Copy)]
pub struct CloudStub {
    pub tokens: u32,
    pub interval_ms: u32,
}

/// Whether the world's cloud speaks TLS, and whether the daemon trusts its CA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloudTls {
    /// Plain HTTP.
    #[default]
    Off,
    /// A certificate from the operator's test CA, which the daemon trusts (`cloud.ca_file`).
    Trusted,
    /// A certificate from another CA than the one the daemon trusts.
    Untrusted,
}

#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// Cargo profile of the binaries to run.
    pub profile: String,
    pub cloud: CloudOptions,
    /// Per-app token budget.
    pub app_tokens: u64,
    /// Extra lines for the daemon's configuration file.
    pub extra_config: String,
    /// Extra lines for the configuration's `[budget]` table.
    pub budget_config: String,
    /// Whether the configuration names the test cloud as `[[endpoint]]` "metro" (otherwise only
    /// the card's endpoints serve: zero configuration).
    pub config_endpoints: bool,
    /// Extra arguments for the simulator; `{cloud_url}` in one is replaced by the cloud's URL.
    pub sim_args: Vec<String>,
    /// Run aiesimd as this user, as the shipped unit does (`User=aiesim`, its capabilities, and
    /// `ProtectProc=invisible`: its own mount namespace with /proc mounted `hidepid=invisible`).
    pub daemon_user: Option<&'static str>,
    /// Run aiesimd alone in this cgroup (a path from the cgroup v2 root, as
    /// [`Cgroups::path`] gives), as systemd runs `aiesimd.service`: it moves in before it
    /// starts. `None`: in the test's own, shared.
    pub daemon_cgroup: Option<String>,
    /// Run polkitd (as user polkitd) on the world's bus, so administrative calls get real
    /// polkit decisions; without it only root may make them.
    pub polkit: bool,
    /// The simulated modem's control protocol: "qmi" or "mbim".
    pub modem_protocol: &'static str,
    /// Extra lines for the configuration's `[modem]` table.
    pub modem_config: String,
    /// `fastpath.interface`: the device's "wwan0", or "modem" to follow the modem's.
    pub fastpath_interface: &'static str,
    /// Extra lines for the configuration's `[fastpath]` table.
    pub fastpath_config: String,
    /// The daemon's `AIESIMD_LOG`; `None` leaves the filter to the file's `log` key.
    pub daemon_log: Option<&'static str>,
    /// The simulated operator network ([`opnet`]): three tiers of clouds behind a delayed,
    /// rate-limited `wwan0` that the daemon binds to (`cloud.bind_interface`); `cloud` is
    /// then the metro one and `tier_clouds` the others.
    pub operator_network: bool,
    /// Each configured endpoint's `max_concurrent` (the model serves one at a time).
    pub endpoint_max_concurrent: usize,
    /// With `operator_network`: the metro cloud's own options (a faulty metro beside healthy
    /// tiers); `None`: `cloud`'s, like the others.
    pub metro_cloud: Option<CloudOptions>,
    /// More names for the cloud beside "metro", each an `[[endpoint]]` of its own (tier
    /// metro) on the same model: a request one fails before its first token can fail over.
    pub endpoint_aliases: Vec<&'static str>,
    /// The configured endpoints name the cloud by this host name instead of its address (give
    /// the daemon a `daemon_hosts` that resolves it).
    pub endpoint_host: Option<&'static str>,
    /// The daemon's watchdog period (systemd's `WatchdogSec=`, passed as `WATCHDOG_USEC`): it
    /// pets at half of it. `None`: [`WATCHDOG_USEC`], short so that tests see pets soon.
    pub watchdog: Option<Duration>,
    /// The daemon's /etc/hosts (bind-mounted in its mount namespace, with an nsswitch.conf
    /// that asks files only): the test may rewrite it in place while the daemon runs.
    pub daemon_hosts: Option<PathBuf>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            profile: "debug".into(),
            cloud: CloudOptions::default(),
            app_tokens: 100_000,
            extra_config: String::new(),
            budget_config: String::new(),
            config_endpoints: true,
            sim_args: Vec::new(),
            daemon_user: None,
            daemon_cgroup: None,
            polkit: false,
            modem_protocol: "qmi",
            modem_config: String::new(),
            fastpath_interface: "wwan0",
            fastpath_config: String::new(),
            daemon_log: Some("info,aiesimd=debug"),
            operator_network: false,
            endpoint_max_concurrent: 1,
            metro_cloud: None,
            endpoint_aliases: Vec::new(),
            endpoint_host: None,
            watchdog: None,
            daemon_hosts: None,
        }
    }
}

impl WorldOptions {
    /// `WATCHDOG_USEC` for the daemon.
    fn watchdog_usec(&self) -> String {
        self.watchdog
            .map_or_else(|| WATCHDOG_USEC.to_owned(), |period| period.as_micros().to_string())
    }
}

pub struct World {
    // Field order is teardown order: daemon first, namespaces last.
    pub daemon: Proc,
    pub polkit: Option<Proc>,
    pub cloud: Proc,
    /// With `operator_network`: the province and national clouds.
    pub tier_clouds: Vec<Proc>,
    pub sim: Proc,
    pub bus: Proc,
    pub bus_address: String,
    pub cloud_url: String,
    /// From spawning aiesimd to its READY=1.
    pub ready_after: Duration,
    /// The daemon's `sd_notify` socket, as systemd's: what it says after `READY=1`.
    notify: UnixDatagram,
    pub profile: String,
    daemon_user: Option<&'static str>,
    daemon_cgroup: Option<String>,
    daemon_log: Option<&'static str>,
    daemon_hosts: Option<PathBuf>,
    watchdog_usec: String,
    /// How `cloud` was started, to start it again.
    cloud_spawn: CloudSpawn,
    opnet: Option<opnet::OperatorNetwork>,
    device: Netns,
    operator: Netns,
    dir: tempfile::TempDir,
}

impl World {
    pub fn start(options: &WorldOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("aiesim-world-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        // Other users must reach the bus socket, so the bus policy (not file modes) decides.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let bins = bin_dir(&options.profile);

        let (bus, bus_address) = start_bus(dir.path())?;
        let polkit = options.polkit.then(|| start_polkit(&bus_address)).transpose()?;
        let operator = Netns::create("op")?;
        let device = Netns::create("dev")?;
        let opnet = if options.operator_network {
            Some(opnet::OperatorNetwork::build(&device, &operator)?)
        } else {
            netns::link(&device, "wwan0", DEVICE_ADDR, &operator, "core0", OPERATOR_ADDR)?;
            None
        };

        let tls = cloud_tls(dir.path(), options.cloud.tls)?;
        let CloudSet {
            spawn: cloud_spawn,
            cloud,
            cloud_url,
            tier_clouds,
            tier_urls,
        } = start_clouds(
            options,
            &operator,
            opnet.as_ref(),
            tls.as_ref(),
            &dir.path().join(CLOUD_RECORD),
        )?;

        let (sim, modem_link) = start_sim(&bins, options, dir.path(), &cloud_url)?;

        // What the daemon writes (systemd's StateDirectory=), its user's own.
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir)?;
        if let Some(user) = options.daemon_user {
            let user = nix::unistd::User::from_name(user)?.with_context(|| format!("no user {user}"))?;
            std::os::unix::fs::chown(&state_dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
            // The modem's port, as udev gives it to the daemon's group on a device.
            let pty = std::fs::canonicalize(&modem_link)?;
            std::os::unix::fs::chown(&pty, Some(user.uid.as_raw()), None)?;
        }
        let config = dir.path().join("aiesimd.toml");
        std::fs::write(
            &config,
            format!(
                "bus = \"{bus_address}\"\n{extra}\n[modem]\ndevice = \"{modem}\"\nprotocol = \"{protocol}\"\n{modem_extra}\n\n[fastpath]\ninterface = \"{fastpath}\"\n{fastpath_extra}\n\n[budget]\napp_tokens = {app}\njournal = \"{journal}\"\n{budget_extra}\n{endpoints}",
                extra = options.extra_config,
                modem = modem_link.display(),
                protocol = options.modem_protocol,
                modem_extra = options.modem_config,
                fastpath = options.fastpath_interface,
                // Worlds run side by side: none pins in the machine's bpffs unless a test says where.
                fastpath_extra = if options.fastpath_config.contains("pin_dir") {
                    options.fastpath_config.clone()
                } else {
                    format!("pin_dir = \"\"\n{}", options.fastpath_config)
                },
                app = options.app_tokens,
                journal = state_dir.join("ledger.journal").display(),
                budget_extra = options.budget_config,
                endpoints = endpoints_config(options, opnet.is_some(), &cloud_url, &tier_urls),
            ),
        )?;
        write_dropins(dir.path(), tls.as_ref(), opnet.is_some())?;
        let watchdog_usec = options.watchdog_usec();
        let (daemon, ready_after, notify) = start_daemon(
            &bins,
            &device,
            &config,
            dir.path(),
            Launch {
                user: options.daemon_user,
                cgroup: options.daemon_cgroup.as_deref(),
                log: options.daemon_log,
                hosts: options.daemon_hosts.as_deref(),
                watchdog_usec: &watchdog_usec,
            },
        )?;
        // READY does not wait for the modem (it opens in the background); tests do.
        wait_modem_ready(&bus_address, &daemon)?;

        Ok(Self {
            daemon,
            polkit,
            cloud,
            tier_clouds,
            sim,
            bus,
            bus_address,
            cloud_url,
            ready_after,
            notify,
            profile: options.profile.clone(),
            daemon_user: options.daemon_user,
            daemon_cgroup: options.daemon_cgroup.clone(),
            daemon_log: options.daemon_log,
            daemon_hosts: options.daemon_hosts.clone(),
            watchdog_usec: watchdog_usec.clone(),
            cloud_spawn,
            opnet,
            device,
            operator,
            dir,
        })
    }

    /// A command running `aictl` against this world's bus.
    pub fn aictl(&self) -> Command {
        let mut c = Command::new(bin_dir(&self.profile).join("aictl"));
        c.env("AIESIM_BUS", &self.bus_address);
        c
    }

    /// `aictl ask --max-tokens 8 "Say hello."` against this world; returns what it printed. A
    /// failure or an empty answer panics with its output and the daemon's log.
    pub fn ask_hello(&self) -> String {
        let out = self
            .aictl()
            .args(["ask", "--max-tokens", "8", "Say hello."])
            .output()
            .expect("aictl runs");
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && !answer.trim().is_empty(),
            "aictl ask: {}\n{}",
            output_text(&out),
            self.daemon.log()
        );
        answer
    }

    /// `aictl ARGS --json` against this world, parsed; a failure panics with its output.
    pub fn aictl_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.aictl().args(args).arg("--json").output().expect("aictl runs");
        assert!(out.status.success(), "{}", output_text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)))
    }

    /// Polls `aictl ARGS --json` until `ready` holds (15 s at most); then panics with the last
    /// document and the daemon's log.
    pub fn wait_json(
        &self,
        args: &[&str],
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let doc = self.aictl_json(args);
            if ready(&doc) {
                return doc;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "`aictl {}` never became {what}: {doc:#}\n{}",
                args.join(" "),
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `gdbus call METHOD ARGS` on `path` of the daemon, as user `uid` with the supplementary
    /// group `gid` (an app in `aiesim-apps`) or none (a stranger).
    pub fn gdbus_as(
        &self,
        uid: u32,
        gid: Option<u32>,
        path: &str,
        method: &str,
        args: &[&str],
    ) -> std::process::Output {
        let groups = gid.map_or_else(|| "--clear-groups".to_owned(), |g| format!("--groups={g}"));
        Command::new("setpriv")
            .args([format!("--reuid={uid}"), format!("--regid={uid}"), groups])
            .args([
                "gdbus",
                "call",
                "--address",
                &self.bus_address,
                "--dest",
                aiesim_dbus::BUS_NAME,
            ])
            .args(["--object-path", path, "--method", method])
            .args(args)
            .output()
            .expect("setpriv runs")
    }

    /// A bus connection as a client of this world.
    pub async fn connect(&self) -> anyhow::Result<zbus::Connection> {
        Ok(zbus::connection::Builder::address(self.bus_address.as_str())
            .build()
            .await?)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the cloud recorded of each chat request so far, in order (`CloudOptions::record`).
    pub fn cloud_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join(CLOUD_RECORD))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the cloud records JSON lines"))
            .collect()
    }

    /// The simulated modem's control port (a link to its pty).
    pub fn modem_link(&self) -> PathBuf {
        self.dir.path().join("modem")
    }

    /// Sends one fault-injection command to the simulated modem (`help` lists them) and
    /// returns the lines of its answer; an `error:` answer is an error.
    pub fn modem_control(&self, line: &str) -> anyhow::Result<Vec<String>> {
        control(&self.dir.path().join("modem-control"), "the simulator", line)
    }

    /// Sends one fault-injection command to the (metro) cloud (`server.mjs --help`, Control:
    /// e.g. "fail 503 1 0", "stall 3", "break 2", "nousage") and returns the lines of its
    /// answer; an `error:` answer is an error.
    pub fn cloud_control(&self, line: &str) -> anyhow::Result<Vec<String>> {
        control(&self.cloud_spawn.control, "the cloud", line)
    }

    /// Starts the (metro) cloud again where it was, after a test stopped or killed it; returns
    /// once it listens.
    pub fn restart_cloud(&mut self) -> anyhow::Result<()> {
        self.cloud.terminate()?;
        let (cloud, url) = wait_cloud(self.cloud_spawn.spawn()?)?;
        anyhow::ensure!(
            url == self.cloud_url,
            "the cloud came back at {url}, not {}",
            self.cloud_url
        );
        self.cloud = cloud;
        Ok(())
    }

    /// Starts the (metro) cloud again where it was, behaving as `options` say from now on (its
    /// TLS certificate kept); returns once it listens.
    pub fn restart_cloud_with(&mut self, options: CloudOptions) -> anyhow::Result<()> {
        self.cloud_spawn.options = options;
        self.restart_cloud()
    }

    /// The simulated operator network, when the world has one.
    pub fn operator_network(&self) -> Option<&opnet::OperatorNetwork> {
        self.opnet.as_ref()
    }

    pub fn device_netns(&self) -> &Netns {
        &self.device
    }

    pub fn operator_netns(&self) -> &Netns {
        &self.operator
    }

    /// Stops aiesimd — with SIGKILL when `crash`, a crash as far as it can tell, else SIGTERM —
    /// and starts it again on the same configuration, journal and bus; returns once its modem
    /// is ready again.
    pub fn restart_daemon(&mut self, crash: bool) -> anyhow::Result<()> {
        if crash {
            self.daemon.kill()?;
        } else {
            self.daemon.terminate()?;
        }
        // The bus drops the dead connection's name on its own time: wait for it.
        let started = Instant::now();
        loop {
            let out = Command::new("busctl")
                .args([
                    "--address",
                    &self.bus_address,
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                ])
                .args(["org.freedesktop.DBus", "NameHasOwner", "s", aiesim_dbus::BUS_NAME])
                .output()
                .context("cannot run busctl")?;
            if String::from_utf8_lossy(&out.stdout).trim() == "b false" {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the bus still names the stopped aiesimd after 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.start_daemon_again().map(drop)
    }

    /// Stops the bus daemon (SIGTERM) and starts a new one on the same address, as
    /// `systemctl restart dbus` does; then waits (10 s at most) for aiesimd to exit on losing
    /// its bus and starts it again, as the unit's `Restart=on-failure` would (polkitd, if the
    /// world runs it, too). Returns the old aiesimd, exited (its status and log).
    pub fn restart_bus(&mut self) -> anyhow::Result<Proc> {
        self.bus.terminate()?;
        let (bus, address) = start_bus(self.dir.path())?;
        self.bus = bus;
        if let Some(mut polkit) = self.polkit.take() {
            polkit.terminate()?;
            self.polkit = Some(start_polkit(&self.bus_address)?);
        }
        anyhow::ensure!(
            address == self.bus_address,
            "the bus came back at {address}, not {}",
            self.bus_address
        );
        let started = Instant::now();
        loop {
            if self.daemon.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "aiesimd still runs 10 s after its bus went away; its log:\n{}",
                    self.daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.start_daemon_again()
    }

    /// Starts aiesimd again on the same configuration, journal and bus, once the last one is
    /// gone; returns the last one once the new one's modem is ready.
    fn start_daemon_again(&mut self) -> anyhow::Result<Proc> {
        let _ = std::fs::remove_file(self.dir.path().join("notify"));
        let config = self.dir.path().join("aiesimd.toml");
        let (daemon, ready_after, notify) = start_daemon(
            &bin_dir(&self.profile),
            &self.device,
            &config,
            self.dir.path(),
            Launch {
                user: self.daemon_user,
                cgroup: self.daemon_cgroup.as_deref(),
                log: self.daemon_log,
                hosts: self.daemon_hosts.as_deref(),
                watchdog_usec: &self.watchdog_usec,
            },
        )?;
        let old = std::mem::replace(&mut self.daemon, daemon);
        self.ready_after = ready_after;
        self.notify = notify;
        wait_modem_ready(&self.bus_address, &self.daemon)?;
        Ok(old)
    }

    /// What the daemon told its notify socket (one string per datagram) during `window`.
    pub fn notifications(&self, window: Duration) -> Vec<String> {
        let until = Instant::now() + window;
        let mut said = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.notify.recv(&mut buf) {
                said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        said
    }

    /// The file descriptors the daemon holds open.
    pub fn daemon_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.daemon.pid())).map_or(0, Iterator::count)
    }

    /// The objects the daemon exports below its root (`ObjectManager.GetManagedObjects`:
    /// modem, request objects, … of every app), asked on `conn`.
    pub async fn daemon_objects(conn: &zbus::Connection) -> anyhow::Result<usize> {
        let manager = zbus::fdo::ObjectManagerProxy::builder(conn)
            .destination(aiesim_dbus::BUS_NAME)
            .path(aiesim_dbus::ROOT_PATH)
            .build()
            .await?;
        Ok(manager.get_managed_objects().await?.len())
    }

    /// The daemon's resident set size, in KiB.
    pub fn daemon_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.daemon.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
    }
}

/// One command on a line-protocol control socket: the lines before its "ok", or its error.
fn control(path: &Path, what: &str, line: &str) -> anyhow::Result<Vec<String>> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("cannot reach {what}'s control socket {}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(stream, "{line}")?;
    let mut lines = Vec::new();
    for reply in std::io::BufReader::new(stream).lines() {
        let reply = reply?;
        if reply == "ok" {
            return Ok(lines);
        }
        if let Some(error) = reply.strip_prefix("error: ") {
            bail!("{what} refused {line:?}: {error}");
        }
        lines.push(reply);
    }
    bail!("{what} closed its control socket without answering {line:?}")
}

/// polkitd on the world's bus (started as root, it switches to user polkitd itself); returns
/// once it owns org.freedesktop.PolicyKit1.
fn start_polkit(bus_address: &str) -> anyhow::Result<Proc> {
    let polkitd = Proc::spawn(
        "polkitd",
        Command::new("/usr/lib/polkit-1/polkitd").env("DBUS_SYSTEM_BUS_ADDRESS", bus_address),
    )?;
    let started = Instant::now();
    loop {
        let out = Command::new("busctl")
            .args([
                "--address",
                bus_address,
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args([
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                "org.freedesktop.PolicyKit1",
            ])
            .output()
            .context("cannot run busctl")?;
        if String::from_utf8_lossy(&out.stdout).trim() == "b true" {
            return Ok(polkitd);
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("polkitd did not take its bus name in 15 s; its log:\n{}", polkitd.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_bus(dir: &Path) -> anyhow::Result<(Proc, String)> {
    let socket = dir.join("system_bus_socket");
    let policy = repo_root().join("dbus/bus/org.aiesim.AiEsim1.conf");
    let config = dir.join("bus.conf");
    // A system-like bus: deny by default, as a distribution's system.conf does, plus our policy.
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
  <include>{policy}</include>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
</busconfig>
"#,
            socket = socket.display(),
            policy = policy.display(),
        ),
    )?;
    let mut bus = Proc::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .arg("--nofork")
            .arg("--print-address")
            .arg(format!("--config-file={}", config.display()))
            .stdout(Stdio::piped()),
    )?;
    let address = bus.read_line_until(Duration::from_secs(10), |l| l.starts_with("unix:"))?;
    // Without the bus's guid, as a system bus's well-known address: a restarted bus (a new
    // guid) is still the one it names.
    let address = address.trim().split(",guid=").next().unwrap_or_default().to_owned();
    Ok((bus, address))
}

/// The test cloud's record of the requests it got, in the world's directory.
const CLOUD_RECORD: &str = "cloud-record.jsonl";
/// The prefix of each cloud's control socket in the world's directory (then its address).
const CLOUD_CONTROL: &str = "cloud-control";

/// The files of a TLS cloud: its certificate and key, and the CA the daemon trusts.
struct TlsFiles {
    server: (PathBuf, PathBuf),
    trusted: PathBuf,
}

fn cloud_tls(dir: &Path, tls: CloudTls) -> anyhow::Result<Option<TlsFiles>> {
    if tls == CloudTls::Off {
        return Ok(None);
    }
    let operator = TestCa::create(dir, "operator")?;
    let mut addresses = vec![OPERATOR_ADDR.to_owned()];
    addresses.extend(opnet::TIERS.iter().map(|t| t.addr.to_string()));
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let server = operator.issue("cloud", &addresses)?;
    let trusted = match tls {
        CloudTls::Untrusted => TestCa::create(dir, "stranger")?.cert,
        _ => operator.cert,
    };
    Ok(Some(TlsFiles { server, trusted }))
}

/// The world's clouds: the (metro) one, and with an operator network the other tiers'.
struct CloudSet {
    spawn: CloudSpawn,
    cloud: Proc,
    cloud_url: String,
    tier_clouds: Vec<Proc>,
    tier_urls: Vec<String>,
}

fn start_clouds(
    options: &WorldOptions,
    operator: &Netns,
    opnet: Option<&opnet::OperatorNetwork>,
    tls: Option<&TlsFiles>,
    record: &Path,
) -> anyhow::Result<CloudSet> {
    let spawn = |netns: &Netns, host: String, port: u16, cloud: &CloudOptions| CloudSpawn {
        netns: netns.name().to_owned(),
        control: record.with_file_name(format!("{CLOUD_CONTROL}-{}", host.replace(['.', ':'], "_"))),
        host,
        port,
        options: cloud.clone(),
        tls: tls.map(|t| t.server.clone()),
        record: record.to_owned(),
    };
    let mut spawns = match opnet {
        Some(net) => opnet::TIERS
            .iter()
            .map(|tier| {
                let cloud = match &options.metro_cloud {
                    Some(metro) if tier.name == "metro" => metro,
                    _ => &options.cloud,
                };
                spawn(
                    net.tier_netns(tier.name),
                    tier.addr.to_string(),
                    opnet::ENDPOINT_PORT,
                    cloud,
                )
            })
            .collect(),
        None => vec![spawn(operator, OPERATOR_ADDR.to_owned(), 0, &options.cloud)],
    };
    // The models load side by side: start every cloud, then wait for each.
    let starting = spawns
        .iter()
        .map(CloudSpawn::spawn)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = starting
        .into_iter()
        .map(wait_cloud)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut tier_clouds, mut tier_urls): (Vec<Proc>, Vec<String>) = started.into_iter().unzip();
    Ok(CloudSet {
        spawn: spawns.remove(0),
        cloud: tier_clouds.remove(0),
        cloud_url: tier_urls.remove(0),
        tier_clouds,
        tier_urls,
    })
}

/// The configuration's `[[endpoint]]` tables.
fn endpoints_config(options: &WorldOptions, tiers: bool, cloud_url: &str, tier_urls: &[String]) -> String {
    // The test cloud's model serves one request at a time; the daemon queues the rest.
    let endpoint = |name: &str, tier: &str, url: &str| {
        format!(
            "[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\ntier = \"{tier}\"\nmodels = [\"{MODEL_NAME}\"]\nmax_concurrent = {}\n",
            options.endpoint_max_concurrent
        )
    };
    if tiers {
        // The same model on every tier.
        std::iter::once(cloud_url)
            .chain(tier_urls.iter().map(String::as_str))
            .zip(opnet::TIERS)
            .map(|(url, tier)| endpoint(tier.name, tier.name, url))
            .collect::<Vec<_>>()
            .concat()
    } else if options.config_endpoints {
        let url = match options.endpoint_host {
            Some(host) => cloud_url.replacen(OPERATOR_ADDR, host, 1),
            None => cloud_url.to_owned(),
        };
        std::iter::once("metro")
            .chain(options.endpoint_aliases.iter().copied())
            .map(|name| endpoint(name, "metro", &url))
            .collect::<Vec<_>>()
            .concat()
    } else {
        String::new()
    }
}

/// Drop-ins, so that a test's own `[cloud]` table stays its own.
fn write_dropins(dir: &Path, tls: Option<&TlsFiles>, opnet: bool) -> anyhow::Result<()> {
    let dropins = dir.join("aiesimd.toml.d");
    std::fs::create_dir_all(&dropins)?;
    if let Some(tls) = tls {
        std::fs::write(
            dropins.join("50-ca.toml"),
            format!("[cloud]\nca_file = \"{}\"\n", tls.trusted.display()),
        )?;
    }
    if opnet {
        std::fs::write(
            dropins.join("50-uplink.toml"),
            format!("[cloud]\nbind_interface = \"{}\"\n", opnet::UPLINK),
        )?;
    }
    Ok(())
}

/// Where and how a cloud runs.
struct CloudSpawn {
    netns: String,
    host: String,
    /// 0 for any free port.
    port: u16,
    options: CloudOptions,
    tls: Option<(PathBuf, PathBuf)>,
    /// With `options.record`: the JSON-lines file the cloud appends to.
    record: PathBuf,
    /// Its control socket (`--control`), for faults injected at run time.
    control: PathBuf,
}

impl CloudSpawn {
    /// Starts it; [`wait_cloud`] waits for it to listen.
    fn spawn(&self) -> anyhow::Result<Proc> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "node"]);
        add_cloud_args(&mut cmd, self);
        Proc::spawn("cloud", &mut cmd)
    }
}

/// Waits for a cloud to listen; returns it with its base URL.
fn wait_cloud(mut cloud: Proc) -> anyhow::Result<(Proc, String)> {
    let line = cloud.read_line_until(Duration::from_secs(120), |l| l.starts_with("LISTENING "))?;
    let base = line
        .trim()
        .trim_start_matches("LISTENING ")
        .trim_end_matches('/')
        .to_owned();
    Ok((cloud, format!("{base}/v1")))
}

fn add_cloud_args(cmd: &mut Command, spawn: &CloudSpawn) {
    let CloudSpawn {
        netns: _,
        host,
        port,
        options,
        tls,
        record,
        control,
    } = spawn;
    let root = repo_root();
    cmd.arg(root.join("tests/cloud/server.mjs"))
        .arg("--model")
        .arg(model_path())
        .args([
            "--host",
            host,
            "--port",
            &port.to_string(),
            "--threads",
            "1",
            "--model-name",
            MODEL_NAME,
        ])
        .arg("--control")
        .arg(control)
        .stdout(Stdio::piped());
    if options.no_usage {
        cmd.arg("--no-usage");
    }
    if let Some(s) = options.fail_status {
        cmd.args(["--fail-status", &s.to_string()]);
    }
    if let Some(s) = options.retry_after {
        cmd.args(["--retry-after", &s.to_string()]);
    }
    if let Some(n) = options.stall_after {
        cmd.args(["--stall-after", &n.to_string()]);
    }
    if let Some(ms) = options.first_token_ms {
        cmd.args(["--first-token-ms", &ms.to_string()]);
    }
    if let Some(n) = options.break_after {
        cmd.args(["--break-after", &n.to_string()]);
    }
    if options.require_jwt {
        cmd.arg("--require-jwt");
    }
    if options.record {
        cmd.arg("--record").arg(record);
    }
    if let Some(CloudStub { tokens, interval_ms }) = options.stub {
        cmd.args(["--stub-tokens", &tokens.to_string()])
            .args(["--stub-interval-ms", &interval_ms.to_string()]);
    }
    if let Some((cert, key)) = tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
}

/// Polls the Modem object's State with real busctl until it says "ready" (10 s at most).
fn wait_modem_ready(bus_address: &str, daemon: &Proc) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(10) {
        let out = Command::new("busctl")
            .args(["--address", bus_address, "get-property", "org.aiesim.AiEsim1"])
            .args(["/org/aiesim/AiEsim1/Modem/0", "org.aiesim.AiEsim1.Modem", "State"])
            .output()
            .context("cannot run busctl")?;
        String::from_utf8_lossy(&out.stdout).trim().clone_into(&mut last);
        if last == "s \"ready\"" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the modem never became ready (last State: {last}); aiesimd's log:\n{}",
        daemon.log()
    )
}

/// The modem simulator, its pty linked at `DIR/modem`; returns it and the link.
fn start_sim(bins: &Path, options: &WorldOptions, dir: &Path, cloud_url: &str) -> anyhow::Result<(Proc, PathBuf)> {
    let modem_link = dir.join("modem");
    let modem_control = dir.join("modem-control");
    let mut sim = Proc::spawn(
        "aiesim-modemsim",
        Command::new(bins.join("aiesim-modemsim"))
            .args(["--protocol", options.modem_protocol, "--imei", SIM_IMEI, "--link"])
            .arg(&modem_link)
            .arg("--control")
            .arg(&modem_control)
            .args(options.sim_args.iter().map(|a| a.replace("{cloud_url}", cloud_url)))
            .stdout(Stdio::piped()),
    )?;
    let line = sim.read_line_until(Duration::from_secs(10), |l| l.starts_with("PTY "))?;
    if !modem_link.exists() {
        bail!("the simulator said {line:?} but made no {}", modem_link.display());
    }
    Ok((sim, modem_link))
}

/// The unit's `AmbientCapabilities=`, as setpriv names them.
const DAEMON_CAPS: &str = "+bpf,+perfmon,+net_admin";

/// How aiesimd runs: as which user, in which cgroup, with which log filter, hosts file and
/// watchdog period.
struct Launch<'a> {
    user: Option<&'a str>,
    cgroup: Option<&'a str>,
    log: Option<&'a str>,
    hosts: Option<&'a Path>,
    watchdog_usec: &'a str,
}

fn start_daemon(
    bins: &Path,
    device: &Netns,
    config: &Path,
    dir: &Path,
    Launch {
        user,
        cgroup,
        log,
        hosts,
        watchdog_usec,
    }: Launch<'_>,
) -> anyhow::Result<(Proc, Duration, UnixDatagram)> {
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).context("cannot bind the notify socket")?;
    // The daemon may run as another user; the directory is the test's own.
    std::fs::set_permissions(&notify_path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let daemon = bins.join("aiesimd");
    // `ip netns exec` mounts a fresh /sys, without the cgroup hierarchy a device has (and the
    // daemon needs, to tell apps apart): mount it again in the daemon's mount namespace.
    // The soft limit on open files systemd gives a service (DefaultLimitNOFILE=1024:524288).
    let mut setup = "ulimit -Sn 1024 && mount -t cgroup2 cgroup2 /sys/fs/cgroup".to_owned();
    if let Some(cgroup) = cgroup {
        // The shell execs into the daemon: the same process, alone in the cgroup.
        let _ = write!(setup, " && echo $$ > '/sys/fs/cgroup{cgroup}/cgroup.procs'");
    }
    if let Some(hosts) = hosts {
        let nsswitch = dir.join("nsswitch.conf");
        std::fs::write(&nsswitch, "hosts: files\n")?;
        let _ = write!(
            setup,
            " && mount --bind '{}' /etc/hosts && mount --bind '{}' /etc/nsswitch.conf",
            hosts.display(),
            nsswitch.display()
        );
    }
    let script = match user {
        None => format!("{setup} && exec \"$0\" \"$@\""),
        // ProtectProc=invisible, User=, AmbientCapabilities= of the shipped unit.
        Some(user) => format!(
            "{setup} && mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid={user} --regid={user} --init-groups --inh-caps={DAEMON_CAPS} --ambient-caps={DAEMON_CAPS} -- \"$0\" \"$@\""
        ),
    };
    let mut cmd = device.command("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(script)
        .arg(&daemon);
    cmd.arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", &notify_path)
        // As systemd's WatchdogSec=: the daemon pets it every second while it is healthy.
        .env("WATCHDOG_USEC", watchdog_usec)
        .env_remove("AIESIMD_LOG")
        .env_remove("RUST_LOG");
    if let Some(log) = log {
        cmd.env("AIESIMD_LOG", log);
    }
    let started = Instant::now();
    let mut daemon = Proc::spawn("aiesimd", &mut cmd)?;
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            if msg.lines().any(|l| l == "READY=1") {
                return Ok((daemon, started.elapsed(), notify));
            }
        }
        if let Some(status) = daemon.try_wait()? {
            bail!("aiesimd exited before READY ({status}); its log:\n{}", daemon.log());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("aiesimd sent no READY within 30 s; its log:\n{}", daemon.log());
        }
    }
}
