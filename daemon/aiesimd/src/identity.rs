//! Who is calling: bus sender → credentials → pinned process → app id.
//!
//! The app id is what budgets are kept against: the caller's systemd unit when it runs in one
//! (`myapp.service`, `app-foo.scope`), otherwise its user (`uid-1000`). Arguments never say who
//! the caller is.

use std::{future::Future, os::fd::OwnedFd};

use zbus::{fdo::DBusProxy, names::BusName};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the bus did not give the credentials of {sender}")]
    Credentials {
        sender: String,
        #[source]
        source: zbus::fdo::Error,
    },
    #[error("the bus gave no {what} for {sender}")]
    Missing { sender: String, what: &'static str },
    #[error("cannot pin process {pid} of {sender}")]
    Pidfd {
        sender: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{sender} changed process while being identified")]
    Raced { sender: String },
}

/// The identified caller of one method call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The bus unique name, e.g. `:1.42`.
    pub sender: String,
    pub app: String,
    pub uid: u32,
    pub pid: u32,
}

pub trait Identify: Send + Sync + 'static {
    fn identify(&self, sender: &str) -> impl Future<Output = Result<Caller, IdentityError>> + Send;
}

/// Identifies callers through the bus daemon's `GetConnectionCredentials`.
pub struct BusIdentity {
    dbus: DBusProxy<'static>,
}

impl BusIdentity {
    pub async fn new(connection: &zbus::Connection) -> zbus::Result<Self> {
        Ok(Self {
            dbus: DBusProxy::new(connection).await?,
        })
    }

    async fn credentials(&self, sender: &str) -> Result<(u32, u32), IdentityError> {
        let name = BusName::try_from(sender.to_owned()).map_err(|e| IdentityError::Credentials {
            sender: sender.to_owned(),
            source: zbus::fdo::Error::InvalidArgs(e.to_string()),
        })?;
        let creds = self
            .dbus
            .get_connection_credentials(name)
            .await
            .map_err(|source| IdentityError::Credentials {
                sender: sender.to_owned(),
                source,
            })?;
        let missing = |what| IdentityError::Missing {
            sender: sender.to_owned(),
            what,
        };
        Ok((
            creds.unix_user_id().ok_or_else(|| missing("user id"))?,
            creds.process_id().ok_or_else(|| missing("process id"))?,
        ))
    }
}

impl Identify for BusIdentity {
    async fn identify(&self, sender: &str) -> Result<Caller, IdentityError> {
        let (uid, pid) = self.credentials(sender).await?;
        // The pidfd pins the process so a recycled pid cannot be mistaken for the caller; the
        // second look-up proves the sender still is that process.
        let _pidfd = pidfd_open(pid).map_err(|source| IdentityError::Pidfd {
            sender: sender.to_owned(),
            pid,
            source,
        })?;
        let (uid2, pid2) = self.credentials(sender).await?;
        if (uid2, pid2) != (uid, pid) {
            return Err(IdentityError::Raced {
                sender: sender.to_owned(),
            });
        }
        let unit = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| unit_of_cgroup(&c));
        let app = unit.unwrap_or_else(|| format!("uid-{uid}"));
        Ok(Caller {
            sender: sender.to_owned(),
            app,
            uid,
            pid,
        })
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// The systemd unit in a `/proc/PID/cgroup` text (cgroup v2 line `0::/…/unit/…`).
fn unit_of_cgroup(text: &str) -> Option<String> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    #[expect(
        clippy::case_sensitive_file_extension_comparisons,
        reason = "systemd unit suffixes are lowercase"
    )]
    path.rsplit('/')
        .find(|c| {
            let c = c.trim();
            (c.ends_with(".service") || c.ends_with(".scope")) && !c.starts_with("session-") && !c.starts_with("user@")
        })
        .map(|c| c.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_from_cgroup_paths() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/glasses-assistant.service\n").as_deref(),
            Some("glasses-assistant.service")
        );
        assert_eq!(
            unit_of_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-toy-1234.scope\n")
                .as_deref(),
            Some("app-toy-1234.scope")
        );
        assert_eq!(unit_of_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n"), None);
        assert_eq!(unit_of_cgroup("0::/\n"), None);
        assert_eq!(unit_of_cgroup("garbage"), None);
    }

    #[test]
    fn pidfd_pins_our_own_process() {
        assert!(pidfd_open(std::process::id()).is_ok());
        assert!(pidfd_open(u32::MAX).is_err());
    }
}
