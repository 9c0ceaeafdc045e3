//! The D-Bus front end: translates method calls into the core and results back. It decides
//! nothing itself.
//!
//! Objects follow `dbus/interfaces/*.xml`: the root object carries the `ObjectManager`, the
//! Broker and the Fastpath; requests live at `Request/N`, modems at `Modem/N`.

mod broker;
mod budget;
mod changes;
mod error;
mod esim;
mod fastpath;
mod modem;
mod request;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aiesim_dbus::{MODEM_PATH_PREFIX, ROOT_PATH};
pub use error::DaemonError;
use zbus::{Connection, fdo::ObjectManager};

use crate::esim::Esim;
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
}

/// Serves every object on `connection`. The well-known name is requested by the caller once
/// this returns, so that no call arrives before the objects exist.
pub async fn serve(
    connection: &Connection,
    broker: Arc<DaemonBroker>,
    modem: Option<(Arc<Modem>, Arc<Esim>)>,
    fastpath: Option<Fastpath>,
    fastpath_interface: String,
    follow_modem_interface: Option<Vec<std::net::SocketAddr>>,
) -> Result<(), DaemonError> {
    let shared = Arc::new(Shared {
        broker,
        identity: BusIdentity::new(connection).await?,
        next_request: AtomicU64::new(0),
    });
    let server = connection.object_server();
    server.at(ROOT_PATH, ObjectManager).await?;
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
        .at(ROOT_PATH, fastpath::FastpathObject::new(fastpath, fastpath_interface))
        .await?;
    if let Some((modem, esim)) = modem {
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
        if let Some(endpoints) = follow_modem_interface {
            tokio::spawn(fastpath::follow_modem(
                connection.clone(),
                Arc::clone(&modem),
                endpoints,
            ));
        }
        tokio::spawn(modem::follow(connection.clone(), path.clone(), modem));
        tokio::spawn(esim::follow(connection.clone(), path, esim));
    }
    Ok(())
}

/// Takes down what must not outlive the daemon: the classifier is detached here, not left to
/// process exit, since a clsact filter would stay in the kernel.
pub async fn shutdown(connection: &Connection) {
    let _ = connection
        .object_server()
        .remove::<fastpath::FastpathObject, _>(ROOT_PATH)
        .await;
}

impl Shared {
    fn next_request_path(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", aiesim_dbus::REQUEST_PATH_PREFIX)
    }
}
