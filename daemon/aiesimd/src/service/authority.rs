//! Administrative calls are authorized by polkit (`org.freedesktop.PolicyKit1`), deny by
//! default: the bus policy lets the `aiesim-apps` group send them, and each is checked here
//! against its action in `dbus/polkit/org.aiesim.AiEsim1.policy`. Root is the administrator
//! polkit itself would allow, and is allowed without asking, so a device without polkitd can
//! still be managed by root; everyone else needs polkit's yes.

use std::collections::HashMap;

use zbus::{Connection, Variant as Value};

use super::DaemonError;

/// The polkit actions aiesimd checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `Budget.List`, `Budget.TopUp`.
    ManageBudgets,
    /// `Esim.EnableProfile`, `Esim.DisableProfile`.
    ManageEsim,
    /// `Fastpath.GetEndpointStatistics`; every app's `Fastpath.GetAppStatistics`.
    ReadTraffic,
}

impl Action {
    pub const fn id(self) -> &'static str {
        match self {
            Self::ManageBudgets => "org.aiesim.AiEsim1.manage-budgets",
            Self::ManageEsim => "org.aiesim.AiEsim1.manage-esim",
            Self::ReadTraffic => "org.aiesim.AiEsim1.read-traffic",
        }
    }
}

/// Asks polkit whether bus client `sender` may do `action`. No interaction: a D-Bus call has
/// no way to show an authentication dialog.
pub async fn authorize(connection: &Connection, sender: &str, action: Action) -> Result<(), DaemonError> {
    let name =
        zbus::names::BusName::try_from(sender.to_owned()).map_err(|e| DaemonError::Unauthorized(e.to_string()))?;
    let uid = zbus::fdo::DBusProxy::new(connection)
        .await?
        .get_connection_unix_user(name)
        .await?;
    if uid == 0 {
        return Ok(());
    }
    let subject: (&str, HashMap<&str, Value<'_>>) = ("system-bus-name", HashMap::from([("name", Value::from(sender))]));
    let details: HashMap<&str, &str> = HashMap::new();
    let reply = connection
        .call_method(
            Some("org.freedesktop.PolicyKit1"),
            "/org/freedesktop/PolicyKit1/Authority",
            Some("org.freedesktop.PolicyKit1.Authority"),
            "CheckAuthorization",
            &(subject, action.id(), details, 0u32, ""),
        )
        .await
        .map_err(|e| {
            DaemonError::Unauthorized(format!(
                "{} needs polkit's authorization, and polkit did not answer ({e}); only root may",
                action.id()
            ))
        })?;
    let ((authorized, challenge, _details),): ((bool, bool, HashMap<String, String>),) = reply
        .body()
        .deserialize()
        .map_err(|e| DaemonError::Unauthorized(format!("polkit's answer for {} is malformed: {e}", action.id())))?;
    if authorized {
        return Ok(());
    }
    Err(DaemonError::Unauthorized(if challenge {
        format!(
            "polkit authorizes {} only after authentication, which a D-Bus call cannot ask for; use an authentication agent (pkexec) or root",
            action.id()
        )
    } else {
        format!("polkit does not authorize {} for this caller", action.id())
    }))
}
