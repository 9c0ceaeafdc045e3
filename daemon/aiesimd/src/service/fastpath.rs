//! `org.aiesim.AiEsim1.Fastpath` on the root object.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
};

use aiesim_dbus::ROOT_PATH;
use tokio::sync::watch;
use zbus::{Connection, OwnedVariant, interface, message::Header};

use super::{
    DaemonError, Shared,
    authority::{Action, authorize},
    broker::{owned_str, sender_of},
};
use crate::{
    broker::{Relayed, chain},
    fastpath::{AppStatistics, AttachMode, Fastpath, Pins, Shaping, UNLISTED_DESTINATION, UplinkRate},
    identity::Identify as _,
    modem::Modem,
};

pub struct FastpathObject {
    fastpath: Option<Fastpath>,
    interface: String,
    /// Where the shaper's rate comes from, when shaping is configured.
    uplink: Option<UplinkRate>,
    /// The modem rate the shaper was last tried at, so a refusal is not retried on every change.
    tried_uplink: Option<u32>,
    /// Who is calling, for the per-app figures.
    shared: Arc<Shared>,
}

impl FastpathObject {
    pub fn new(fastpath: Option<Fastpath>, interface: String, uplink: Option<UplinkRate>, shared: Arc<Shared>) -> Self {
        Self {
            fastpath,
            interface,
            uplink,
            tried_uplink: None,
            shared,
        }
    }
}

/// What to set up wherever the fast path attaches.
#[derive(Debug, Clone)]
pub struct Setup {
    pub shaping: Option<UplinkRate>,
    pub apps_cgroup: Option<PathBuf>,
    pub pins: Option<Pins>,
    pub dscp: Option<u8>,
    pub attach: AttachMode,
    pub own_cgroup: Option<u64>,
}

/// The Fastpath object the connection serves (`None` before it is served: nothing to follow).
async fn served(connection: &Connection) -> Option<zbus::object_server::InterfaceRef<FastpathObject>> {
    connection
        .object_server()
        .interface::<_, FastpathObject>(ROOT_PATH)
        .await
        .ok()
}

/// Keeps the attached classifier's AI destinations equal to the endpoints in use (the card's
/// and the configured ones), as they change.
pub async fn follow_destinations(connection: Connection, mut destinations: watch::Receiver<Vec<SocketAddr>>) {
    let Some(object) = served(&connection).await else {
        return;
    };
    while destinations.changed().await.is_ok() {
        let wanted = destinations.borrow_and_update().clone();
        if let Some(fp) = object.get_mut().await.fastpath.as_mut() {
            match fp.set_ai_endpoints(&wanted) {
                Ok(()) => tracing::info!(destinations = wanted.len(), "fast path AI destinations updated"),
                Err(e) => tracing::warn!(error = %chain(&e), "cannot tell the fast path the AI endpoints"),
            }
        }
    }
}

/// Attaches the classifier to whatever interface the modem reports, and moves it when that
/// changes (another modem, a replug that renamed it), with the current AI destinations.
pub async fn follow_modem(
    connection: Connection,
    modem: Arc<Modem>,
    destinations: watch::Receiver<Vec<SocketAddr>>,
    setup: Setup,
) {
    let Some(object) = served(&connection).await else {
        return;
    };
    let mut states = modem.state();
    loop {
        let wanted = states.borrow_and_update().interface.clone();
        let current = object.get().await.interface.clone();
        if !wanted.is_empty() && wanted != current {
            // Off the old interface first: both would share the pinned maps.
            let old = object.get_mut().await.fastpath.take();
            if let Some(old) = old {
                if let Err(e) = old.detach() {
                    tracing::warn!(error = %chain(&e), "the old fast path did not detach cleanly");
                }
            }
            let endpoints = destinations.borrow().clone();
            let attached = Fastpath::attach_pinned(&wanted, setup.attach, setup.pins.clone()).and_then(|mut fp| {
                fp.set_ai_endpoints(&endpoints)?;
                // A rate from the modem applies once it reports one (follow_uplink, or here later).
                let uplink_bps = modem.state().borrow().uplink_bps;
                if let Some(uplink_kbit) = setup.shaping.and_then(|rate| rate.kbit(uplink_bps)) {
                    if let Err(e) = fp.shape(Shaping { uplink_kbit }) {
                        tracing::warn!(interface = %wanted, error = %chain(&e), "uplink not shaped; AI packets keep their priority only");
                    }
                }
                if let Err(e) = fp.set_ai_dscp(setup.dscp) {
                    tracing::warn!(error = %chain(&e), "AI packets not marked with a DSCP");
                }
                if let Err(e) = fp.mark_own_sockets(setup.own_cgroup) {
                    tracing::warn!(error = %chain(&e), "aiesimd's own sockets not marked");
                }
                if let Some(cgroup) = &setup.apps_cgroup {
                    if let Err(e) = fp.watch_apps(cgroup) {
                        tracing::warn!(cgroup = %cgroup.display(), error = %chain(&e), "apps' own AI traffic not counted");
                    }
                }
                Ok(fp)
            });
            let fastpath = match attached {
                Ok(fp) => {
                    tracing::info!(interface = %wanted, "fast path attached to the modem's interface");
                    Some(fp)
                }
                Err(e) => {
                    tracing::warn!(interface = %wanted, error = %chain(&e), "fast path not attached to the modem's interface");
                    None
                }
            };
            {
                let mut guard = object.get_mut().await;
                guard.interface.clone_from(&wanted);
                guard.fastpath = fastpath;
            }
            let guard = object.get().await;
            let emitter = object.signal_emitter();
            let _ = guard.interface_changed(emitter).await;
            let _ = guard.attached_changed(emitter).await;
            let _ = guard.attach_mode_changed(emitter).await;
            let _ = guard.uplink_kbit_changed(emitter).await;
            let _ = guard.uplink_source_changed(emitter).await;
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the shaper at the uplink rate the modem reports (scaled and floored as configured):
/// in place as the rate changes, installed once a first rate is known.
pub async fn follow_uplink(connection: Connection, modem: Arc<Modem>, rate: UplinkRate) {
    let Some(object) = served(&connection).await else {
        return;
    };
    let mut states = modem.state();
    loop {
        let wanted = rate.kbit(states.borrow_and_update().uplink_bps);
        if let Some(wanted) = wanted {
            let changed = {
                let mut guard = object.get_mut().await;
                let this = &mut *guard;
                match this.fastpath.as_mut() {
                    // Someone else's root qdisc stays: tried once per rate, not on every change.
                    Some(fp) if fp.uplink_kbit() != Some(wanted) && this.tried_uplink != Some(wanted) => {
                        this.tried_uplink = Some(wanted);
                        match fp.set_uplink(wanted) {
                            Ok(shaped) => shaped,
                            Err(e) => {
                                tracing::warn!(uplink_kbit = wanted, error = %chain(&e), "uplink not shaped at the modem's rate");
                                false
                            }
                        }
                    }
                    _ => false,
                }
            };
            if changed {
                tracing::info!(uplink_kbit = wanted, "uplink shaped at the modem-reported rate");
                let guard = object.get().await;
                let _ = guard.uplink_kbit_changed(object.signal_emitter()).await;
                let _ = guard.uplink_source_changed(object.signal_emitter()).await;
            }
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

impl FastpathObject {
    fn attached_fastpath(&self) -> Result<&Fastpath, DaemonError> {
        self.fastpath
            .as_ref()
            .ok_or_else(|| DaemonError::Failed(format!("the fast path is not attached to {}", self.interface)))
    }
}

#[interface(name = "org.aiesim.AiEsim1.Fastpath", spawn = false)]
impl FastpathObject {
    fn get_statistics(&self) -> Result<HashMap<String, OwnedVariant>, DaemonError> {
        let fp = self.attached_fastpath()?;
        let s = fp.statistics().map_err(|e| DaemonError::Failed(chain(&e)))?;
        let crate::fastpath::Statistics {
            egress_packets,
            egress_bytes,
            ingress_packets,
            ingress_bytes,
            ai_packets,
            ai_bytes,
        } = s;
        Ok([
            ("egress_packets", egress_packets),
            ("egress_bytes", egress_bytes),
            ("ingress_packets", ingress_packets),
            ("ingress_bytes", ingress_bytes),
            ("ai_packets", ai_packets),
            ("ai_bytes", ai_bytes),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), OwnedVariant::from(v)))
        .collect())
    }

    async fn get_endpoint_statistics(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DaemonError> {
        authorize(connection, &sender_of(&header)?, Action::ReadTraffic).await?;
        let fp = self.attached_fastpath()?;
        let endpoints = fp.endpoint_statistics().map_err(|e| DaemonError::Failed(chain(&e)))?;
        let unlisted = fp.unlisted_statistics().map_err(|e| DaemonError::Failed(chain(&e)))?;
        let entry = |destination: String, counters: [u64; 4]| {
            let [egress_packets, egress_bytes, ingress_packets, ingress_bytes] = counters;
            let mut entry: HashMap<String, OwnedVariant> = [
                ("egress_packets", egress_packets),
                ("egress_bytes", egress_bytes),
                ("ingress_packets", ingress_packets),
                ("ingress_bytes", ingress_bytes),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedVariant::from(v)))
            .collect();
            entry.insert("destination".into(), owned_str(&destination));
            entry
        };
        let mut all: Vec<_> = endpoints
            .into_iter()
            .map(|e| {
                entry(
                    e.destination.to_string(),
                    [e.egress_packets, e.egress_bytes, e.ingress_packets, e.ingress_bytes],
                )
            })
            .collect();
        let unlisted = [
            unlisted.egress_packets,
            unlisted.egress_bytes,
            unlisted.ingress_packets,
            unlisted.ingress_bytes,
        ];
        // Shown while marking is on, or once it has counted something.
        if fp.marks_own_sockets() || unlisted.iter().any(|&n| n != 0) {
            all.push(entry(UNLISTED_DESTINATION.to_owned(), unlisted));
        }
        Ok(all)
    }

    async fn get_app_statistics(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<HashMap<String, OwnedVariant>>, DaemonError> {
        let sender = sender_of(&header)?;
        let caller = self.shared.identity.identify(&sender).await?;
        // Administrators see every app; anyone else only their own (and what nests under it).
        let all = authorize(connection, &sender, Action::ReadTraffic).await.is_ok();
        let own = match &self.fastpath {
            Some(fp) => fp.app_statistics().map_err(|e| DaemonError::Failed(chain(&e)))?,
            None => Vec::new(),
        };
        let mut apps: BTreeMap<String, (AppStatistics, Relayed)> = own
            .into_iter()
            .map(|a| (a.app.clone(), (a, Relayed::default())))
            .collect();
        for (app, relayed) in self.shared.broker.relayed() {
            apps.entry(app.clone())
                .or_insert_with(|| {
                    let own = AppStatistics {
                        app,
                        ..AppStatistics::default()
                    };
                    (own, Relayed::default())
                })
                .1 = relayed;
        }
        Ok(apps
            .into_values()
            .filter(|(a, _)| all || owns(&caller.app, &a.app))
            .map(|(a, r)| app_dict(&a, r))
            .collect())
    }

    #[zbus(property)]
    fn interface(&self) -> &str {
        &self.interface
    }

    #[zbus(property)]
    fn attached(&self) -> bool {
        self.fastpath.is_some()
    }

    #[zbus(property)]
    fn attach_mode(&self) -> String {
        self.fastpath
            .as_ref()
            .map(|fp| fp.attach_mode().to_string())
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn uplink_kbit(&self) -> u32 {
        self.fastpath.as_ref().and_then(Fastpath::uplink_kbit).unwrap_or(0)
    }

    #[zbus(property)]
    fn uplink_source(&self) -> &str {
        match (self.uplink, self.uplink_kbit()) {
            (Some(rate), 1..) => rate.source(),
            _ => "",
        }
    }
}

/// Whether figures kept under `app` are `caller`'s: its own, or nested under it
/// (`uid-1000` owns `uid-1000/app-x.scope`).
fn owns(caller: &str, app: &str) -> bool {
    app == caller || app.strip_prefix(caller).is_some_and(|rest| rest.starts_with('/'))
}

fn app_dict(a: &AppStatistics, r: Relayed) -> HashMap<String, OwnedVariant> {
    let mut entry: HashMap<String, OwnedVariant> = [
        ("egress_packets", a.egress_packets),
        ("egress_bytes", a.egress_bytes),
        ("ingress_packets", a.ingress_packets),
        ("ingress_bytes", a.ingress_bytes),
        ("relayed_requests", r.requests),
        ("relayed_sent_bytes", r.sent_bytes),
        ("relayed_received_bytes", r.received_bytes),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), OwnedVariant::from(v)))
    .collect();
    entry.insert("app".into(), owned_str(&a.app));
    entry
}

#[cfg(test)]
mod tests {
    use super::owns;

    #[test]
    fn an_app_owns_its_figures_and_those_nested_under_it() {
        assert!(owns("uid-1000", "uid-1000"));
        assert!(owns("uid-1000", "uid-1000/app-x.scope"));
        assert!(!owns("uid-1000", "uid-10000"));
        assert!(!owns("uid-1000/app-x.scope", "uid-1000"));
        assert!(!owns("a.service", "b.service"));
    }
}
