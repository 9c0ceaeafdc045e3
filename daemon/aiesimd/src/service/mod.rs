//! The D-Bus front end: translates method calls into the core and results back. It decides
//! nothing itself.
//!
//! Objects follow `dbus/interfaces/*.xml`: the root object carries the `ObjectManager`, the
//! Daemon, the Broker, the Budget, the Endpoints and the Fastpath; requests live at `Request/N`, modems at `Modem/N`.

mod authority;
mod broker;
mod budget;
mod changes;
mod daemon;
mod endpoints;
mod error;
mod esim;
mod fastpath;
mod modem;
mod request;
pub mod watchdog;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aiesim_dbus::{MODEM_PATH_PREFIX, ROOT_PATH};
pub use daemon::reloaded;
pub use error::DaemonError;
use zbus::{Connection, fdo::ObjectManager};

use crate::esim::{Biller, Esim};
use crate::{
    broker::Broker, clock::SystemClock, cloud::HttpCloud, fastpath::Fastpath, identity::BusIdentity, modem::Modem,
};

/// The broker as the daemon runs it.
pub type DaemonBroker = Broker<HttpCloud, SystemClock>;

/// State shared by the objects of the front end.
pub struct Shared {
    broker: Arc<DaemonBroker>,
    identity: BusIdentity,
    next_request: AtomicU64,
    requests: RequestLimits,
    /// Live Request objects per app, lingering ones included.
    objects: Mutex<HashMap<String, usize>>,
    /// Takes top-ups to the card; `None` without a modem.
    biller: Option<Arc<Biller>>,
}

/// The front end's bounds on an app's streams and objects.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Request objects one app may hold (finished ones linger).
    pub max_objects_per_app: usize,
    /// How long a finished request's object stays for its owner to read.
    pub linger: std::time::Duration,
    /// How long a write to an app's stream may wait for it to read.
    pub stall_timeout: std::time::Duration,
    /// The stream socket's send buffer, in bytes.
    pub stream_buffer: usize,
    /// Bounds on the images of one request.
    pub images: aiesim_dbus::ImageLimits,
}

/// One of an app's Request objects; dropping it gives the place back.
pub(crate) struct ObjectSlot {
    shared: Arc<Shared>,
    app: String,
}

impl Drop for ObjectSlot {
    fn drop(&mut self) {
        let mut objects = self.shared.objects.lock().expect("objects lock");
        if let Some(n) = objects.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                objects.remove(&self.app);
            }
        }
    }
}

/// The cellular side the front end serves: the modem, its eSIM and the card's biller.
pub struct Cellular {
    pub modem: Arc<Modem>,
    pub esim: Arc<Esim>,
    pub biller: Arc<Biller>,
}

/// The fast path as the front end serves it.
pub struct FastpathSetup {
    /// Attached at start to a fixed interface, or `None`.
    pub fastpath: Option<Fastpath>,
    /// The fixed interface (empty when following the modem).
    pub interface: String,
    /// Attach to the modem's interface and move with it.
    pub follow_modem: bool,
    /// AI-first shaping to install wherever the fast path attaches, and where its rate comes from.
    pub shaping: Option<crate::fastpath::UplinkRate>,
    /// The cgroup whose apps' own AI traffic is counted wherever the fast path attaches.
    pub apps_cgroup: Option<std::path::PathBuf>,
    /// Where the fast path pins its maps and links, if it does.
    pub pins: Option<crate::fastpath::Pins>,
    /// The DSCP egress AI packets are marked with, if any.
    pub dscp: Option<u8>,
    /// How the classifier attaches wherever it goes.
    pub attach: crate::fastpath::AttachMode,
    /// aiesimd's cgroup, whose sockets are AI wherever they connect, if they are marked.
    pub own_cgroup: Option<u64>,
    /// The AI destinations, kept current as endpoints change.
    pub destinations: tokio::sync::watch::Receiver<Vec<std::net::SocketAddr>>,
}

/// Serves every object on `connection`. The well-known name is requested by the caller once
/// this returns, so that no call arrives before the objects exist.
pub async fn serve(
    connection: &Connection,
    broker: Arc<DaemonBroker>,
    requests: RequestLimits,
    cellular: Option<Cellular>,
    fastpath: FastpathSetup,
) -> Result<(), DaemonError> {
    let FastpathSetup {
        fastpath,
        interface: fastpath_interface,
        follow_modem,
        shaping,
        apps_cgroup,
        pins,
        dscp,
        attach,
        own_cgroup,
        destinations,
    } = fastpath;
    let shared = Arc::new(Shared {
        broker,
        identity: BusIdentity::new(connection).await?,
        next_request: AtomicU64::new(0),
        requests,
        objects: Mutex::new(HashMap::new()),
        biller: cellular.as_ref().map(|c| Arc::clone(&c.biller)),
    });
    let server = connection.object_server();
    server.at(ROOT_PATH, ObjectManager).await?;
    server.at(ROOT_PATH, daemon::DaemonObject::default()).await?;
    server
        .at(
            ROOT_PATH,
            broker::BrokerObject {
                shared: Arc::clone(&shared),
            },
        )
        .await?;
    server
        .at(
            ROOT_PATH,
            budget::BudgetObject {
                shared: Arc::clone(&shared),
            },
        )
        .await?;
    server
        .at(
            ROOT_PATH,
            endpoints::EndpointsObject {
                shared: Arc::clone(&shared),
            },
        )
        .await?;
    server
        .at(
            ROOT_PATH,
            fastpath::FastpathObject::new(fastpath, fastpath_interface, shaping, Arc::clone(&shared)),
        )
        .await?;
    tokio::spawn(fastpath::follow_destinations(connection.clone(), destinations.clone()));
    if let Some(Cellular { modem, esim, .. }) = cellular {
        let path = format!("{MODEM_PATH_PREFIX}/0");
        server
            .at(path.as_str(), modem::ModemObject::new(Arc::clone(&modem)))
            .await?;
        server
            .at(
                path.as_str(),
                esim::EsimObject::new(Arc::clone(&esim), shared.broker.ledger().clone()),
            )
            .await?;
        if let Some(rate @ crate::fastpath::UplinkRate::Modem { .. }) = shaping {
            tokio::spawn(fastpath::follow_uplink(connection.clone(), Arc::clone(&modem), rate));
        }
        if follow_modem {
            tokio::spawn(fastpath::follow_modem(
                connection.clone(),
                Arc::clone(&modem),
                destinations.clone(),
                fastpath::Setup {
                    shaping,
                    apps_cgroup,
                    pins,
                    dscp,
                    attach,
                    own_cgroup,
                },
            ));
        }
        tokio::spawn(modem::follow(connection.clone(), path.clone(), modem));
        tokio::spawn(esim::follow(connection.clone(), path, esim));
    }
    Ok(())
}

/// Takes down what must not outlive the daemon: the classifier is detached here, not left to
/// process exit, since a clsact filter or the shaper's root qdisc would stay in the kernel.
pub async fn shutdown(connection: &Connection) {
    let _ = connection
        .object_server()
        .remove::<fastpath::FastpathObject, _>(ROOT_PATH)
        .await;
}

impl Shared {
    /// Takes one of `app`'s places for a Request object, or refuses when it holds them all.
    fn object_slot(self: &Arc<Self>, app: &str) -> Result<ObjectSlot, DaemonError> {
        let mut objects = self.objects.lock().expect("objects lock");
        let n = objects.entry(app.to_owned()).or_default();
        if *n >= self.requests.max_objects_per_app {
            return Err(DaemonError::new(
                aiesim_dbus::ErrorName::LimitExceeded,
                format!(
                    "app \"{app}\" holds {} request objects; finished ones are removed a minute after they end",
                    self.requests.max_objects_per_app
                ),
            ));
        }
        *n += 1;
        Ok(ObjectSlot {
            shared: Arc::clone(self),
            app: app.to_owned(),
        })
    }

    fn next_request_path(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", aiesim_dbus::REQUEST_PATH_PREFIX)
    }
}
