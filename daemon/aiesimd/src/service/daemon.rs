//! `org.aiesim.AiEsim1.Daemon` on the root object: the daemon's version and how its last
//! configuration reload went.

use zbus::{Connection, interface};

use aiesim_dbus::ROOT_PATH;

#[derive(Debug, Default)]
pub struct DaemonObject {
    reloads: u32,
    last_reload: String,
}

#[interface(name = "org.aiesim.AiEsim1.Daemon", spawn = false)]
impl DaemonObject {
    #[zbus(property(emits_changed_signal = "const"))]
    #[expect(clippy::unused_self, reason = "a D-Bus property is a method of its object")]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property)]
    fn reloads(&self) -> u32 {
        self.reloads
    }

    #[zbus(property)]
    fn last_reload(&self) -> String {
        self.last_reload.clone()
    }
}

/// Publishes the outcome of a reload: `Ok(summary)` or `Err(why it was refused)`.
pub async fn reloaded(connection: &Connection, outcome: Result<String, String>) {
    let Ok(object) = connection.object_server().interface::<_, DaemonObject>(ROOT_PATH).await else {
        return;
    };
    let mut guard = object.get_mut().await;
    guard.reloads = guard.reloads.saturating_add(1);
    guard.last_reload = match outcome {
        Ok(summary) => summary,
        Err(why) => format!("refused: {why}"),
    };
    let emitter = object.signal_emitter();
    let _ = guard.reloads_changed(emitter).await;
    let _ = guard.last_reload_changed(emitter).await;
}
