//! The sockets through which other tools share the modem with aiesimd: abstract UNIX sockets
//! with the names and handshakes of libqmi's `qmi-proxy` and libmbim's `mbim-proxy`, so that
//! `qmicli -p`, `mbimcli -p` and the tools built on those libraries keep working while aiesimd
//! owns the control port. Only root and members of one configured group may connect.

use std::{io, os::linux::net::SocketAddrExt as _};

use nix::unistd::{Gid, Uid, User, getgrouplist};
use tokio::net::{UnixListener, UnixStream};

/// Who may use a proxy socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// The abstract socket name, without the leading NUL (e.g. `qmi-proxy`).
    pub name: String,
    /// Besides root, members of this group may connect; `None`: root only.
    pub group: Option<Gid>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("could not listen on the abstract socket @{name} (is another proxy running?)")]
    Bind {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// A bound proxy socket.
pub struct ProxyListener {
    listener: UnixListener,
    options: ProxyOptions,
}

impl ProxyListener {
    pub fn bind(options: &ProxyOptions) -> Result<Self, ProxyError> {
        let bind = || -> io::Result<UnixListener> {
            let address = std::os::unix::net::SocketAddr::from_abstract_name(options.name.as_bytes())?;
            let listener = std::os::unix::net::UnixListener::bind_addr(&address)?;
            listener.set_nonblocking(true)?;
            UnixListener::from_std(listener)
        };
        let listener = bind().map_err(|source| ProxyError::Bind {
            name: options.name.clone(),
            source,
        })?;
        tracing::info!(socket = %format_args!("@{}", options.name), "serving the modem proxy socket");
        Ok(Self {
            listener,
            options: options.clone(),
        })
    }

    /// Binds the socket if one is configured; a failure costs only the sharing, not the session.
    pub fn bind_if(options: Option<&ProxyOptions>) -> Option<Self> {
        options.and_then(|options| {
            Self::bind(options)
                .inspect_err(|error| tracing::warn!(error = %crate::broker::chain(error), "the modem is not shared"))
                .ok()
        })
    }

    /// The next allowed client; refused ones are logged and dropped.
    pub async fn accept(&self) -> UnixStream {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if allowed(Uid::from_raw(cred.uid()), Gid::from_raw(cred.gid()), self.options.group) => {
                        tracing::debug!(uid = cred.uid(), pid = ?cred.pid(), socket = %self.options.name, "proxy client connected");
                        return stream;
                    }
                    Ok(cred) => {
                        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), socket = %self.options.name, "refused a proxy client: not root and not in the proxy group");
                    }
                    Err(err) => tracing::warn!(%err, "refused a proxy client without credentials"),
                },
                Err(err) => {
                    tracing::warn!(%err, "accepting a proxy client failed");
                    // A persistent error (EMFILE) must not spin the loop.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The next client of `listener`, or never when there is none.
pub async fn accept(listener: Option<&ProxyListener>) -> UnixStream {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Root, or a user whose primary or supplementary groups include `group`.
fn allowed(uid: Uid, gid: Gid, group: Option<Gid>) -> bool {
    if uid.is_root() {
        return true;
    }
    let Some(group) = group else {
        return false;
    };
    if gid == group {
        return true;
    }
    // Supplementary groups come from the group database, not from the peer's /proc (which the
    // unit's ProtectProc hides).
    let Ok(Some(user)) = User::from_uid(uid) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_always_others_only_through_the_group() {
        let root = Uid::from_raw(0);
        let nobody = Uid::from_raw(65534);
        assert!(allowed(root, Gid::from_raw(0), None));
        assert!(!allowed(nobody, Gid::from_raw(65534), None));
        assert!(allowed(nobody, Gid::from_raw(4242), Some(Gid::from_raw(4242))));
        assert!(!allowed(nobody, Gid::from_raw(65534), Some(Gid::from_raw(4242))));
    }
}
