//! Who is calling: bus sender → credentials → pinned process → cgroup → app id.
//!
//! The bus gives the caller's uid and pid (`GetConnectionCredentials`). The pid is pinned with a
//! pidfd, so a recycled pid cannot be mistaken for the caller, and the process's uid and cgroup
//! are read *through the pidfd* (`PIDFD_GET_INFO`, Linux 6.13): nothing under `/proc` is
//! needed, which the shipped unit hides (`ProtectProc=invisible`). The cgroup id is found in
//! the cgroup v2 hierarchy by its inode. On an older kernel the caller's `/proc/PID/cgroup` is
//! read instead, which works only where `/proc` shows other users' processes; where neither
//! works the call is refused — never a silent fallback to a guessed identity.
//!
//! The app id is what budgets are kept against:
//! - a system unit (`glasses-assistant.service`), which only root can create, is named as is;
//! - a unit inside a user's tree (`user-1000.slice/user@1000.service/…/app-toy.scope`), which
//!   that user names freely, is namespaced by its uid: `uid-1000/app-toy.scope`, and also
//!   counts against `uid-1000` (the ledger's accounts nest at `/`);
//! - a process in no app unit (a login session) is its user: `uid-1000`.
//!
//! Arguments never say who the caller is.

use std::{
    collections::HashMap,
    future::Future,
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::Mutex,
};

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
    #[error("cannot tell which app {sender} (process {pid}) is: {reason}")]
    Cgroup { sender: String, pid: u32, reason: String },
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
    cgroups: Cgroups,
}

impl BusIdentity {
    pub async fn new(connection: &zbus::Connection) -> zbus::Result<Self> {
        Ok(Self {
            dbus: DBusProxy::new(connection).await?,
            cgroups: Cgroups::find(),
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
        let pidfd = pidfd_open(pid).map_err(|source| IdentityError::Pidfd {
            sender: sender.to_owned(),
            pid,
            source,
        })?;
        let refused = |reason: String| IdentityError::Cgroup {
            sender: sender.to_owned(),
            pid,
            reason,
        };
        let cgroup = match pidfd_info(&pidfd) {
            Ok(info) => {
                if info.pid != pid || (info.euid != uid && info.ruid != uid) {
                    return Err(IdentityError::Raced {
                        sender: sender.to_owned(),
                    });
                }
                self.cgroups.path_of(info.cgroupid).map_err(refused)?
            }
            // Before Linux 6.13 the pidfd says nothing; /proc may (not under ProtectProc).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
                    refused(format!(
                        "this kernel cannot name a pidfd's cgroup, and /proc/{pid}/cgroup: {e}"
                    ))
                })?;
                text.lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(str::to_owned)
                    .ok_or_else(|| refused(format!("/proc/{pid}/cgroup has no cgroup v2 line")))?
            }
            Err(e) => return Err(refused(format!("the pidfd gives no information: {e}"))),
        };
        // The second look-up proves the sender still is the pinned process.
        if self.credentials(sender).await? != (uid, pid) {
            return Err(IdentityError::Raced {
                sender: sender.to_owned(),
            });
        }
        Ok(Caller {
            sender: sender.to_owned(),
            app: app_id(&cgroup, uid),
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

/// `struct pidfd_info` of `<linux/pidfd.h>`, version 0 (64 bytes; later kernels add fields
/// after it and accept the short form).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    spare0: u32,
}

const PIDFD_INFO_PID: u64 = 1 << 0;
const PIDFD_INFO_CREDS: u64 = 1 << 1;
const PIDFD_INFO_CGROUPID: u64 = 1 << 2;

nix::ioctl_readwrite!(pidfd_get_info, 0xFF, 11, PidfdInfo);

/// The process's pid, uids and cgroup id, read through its pidfd.
fn pidfd_info(pidfd: &OwnedFd) -> std::io::Result<PidfdInfo> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_PID | PIDFD_INFO_CREDS | PIDFD_INFO_CGROUPID,
        ..PidfdInfo::default()
    };
    // SAFETY: the fd is a pidfd we own and `info` is a PidfdInfo the ioctl's size names.
    unsafe { pidfd_get_info(pidfd.as_raw_fd(), &raw mut info) }.map_err(std::io::Error::from)?;
    if info.mask & PIDFD_INFO_CGROUPID == 0 {
        return Err(std::io::Error::other("the process has no cgroup v2 (is it exiting?)"));
    }
    Ok(info)
}

/// The cgroup v2 hierarchy, to turn a cgroup id (the directory's inode) into its path.
struct Cgroups {
    root: Option<PathBuf>,
    known: Mutex<HashMap<u64, String>>,
}

/// A walk of the hierarchy stops after this many directories.
const MAX_CGROUPS: usize = 20_000;

impl Cgroups {
    /// Finds where cgroup v2 is mounted (`/sys/fs/cgroup`, or `…/unified` on a hybrid system).
    fn find() -> Self {
        Self {
            root: cgroup2_root(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The path of cgroup `id`, relative to the hierarchy's root (`/system.slice/x.service`).
    fn path_of(&self, id: u64) -> Result<String, String> {
        if let Some(path) = self.known.lock().expect("cgroup cache").get(&id) {
            return Ok(path.clone());
        }
        let root = self.root.as_deref().ok_or("no cgroup v2 hierarchy is mounted")?;
        let found = walk(root)?;
        let mut known = self.known.lock().expect("cgroup cache");
        *known = found;
        known
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("cgroup {id} is not under {}", root.display()))
    }
}

/// Every directory under `root` by inode, as paths from `root`.
fn walk(root: &Path) -> Result<HashMap<u64, String>, String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut found = HashMap::new();
    let meta = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    found.insert(meta.ino(), "/".to_owned());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if !kind.is_dir() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            found.insert(meta.ino(), path.clone());
            if found.len() >= MAX_CGROUPS {
                return Err(format!("more than {MAX_CGROUPS} cgroups under {}", root.display()));
            }
            stack.push((entry.path(), path));
        }
    }
    Ok(found)
}

/// Where the cgroup v2 hierarchy is mounted, if it is.
pub fn cgroup2_root() -> Option<PathBuf> {
    cgroup2_mount(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The app id of every cgroup under `root` (a cgroup v2 directory) by cgroup id: the fast path
/// names the cgroups whose traffic it counted with it.
pub(crate) fn cgroup_apps(root: &Path) -> Result<HashMap<u64, String>, String> {
    let base = root.to_string_lossy();
    let base = base.trim_end_matches('/');
    Ok(walk(root)?
        .into_iter()
        .map(|(id, rel)| {
            let path = format!("{base}{rel}");
            let app = app_id(&path, owner_uid(&path));
            (id, app)
        })
        .collect())
}

/// The user whose tree a cgroup path is in (`user-1000.slice`, `user@1000.service`); root
/// outside the users' trees.
fn owner_uid(path: &str) -> u32 {
    path.split('/')
        .find_map(|part| {
            part.strip_prefix("user-")
                .and_then(|p| p.strip_suffix(".slice"))
                .or_else(|| part.strip_prefix("user@").and_then(|p| p.strip_suffix(".service")))
                .and_then(|uid| uid.parse().ok())
        })
        .unwrap_or(0)
}

/// The mount point of the cgroup2 file system in a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mount_point = before.split_whitespace().nth(4)?;
        (after.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The app id of a process in cgroup `path` running as `uid`.
fn app_id(path: &str, uid: u32) -> String {
    #![expect(
        clippy::case_sensitive_file_extension_comparisons,
        reason = "systemd unit suffixes are lowercase"
    )]
    let parts: Vec<&str> = path.split('/').map(str::trim).filter(|p| !p.is_empty()).collect();
    // Everything from the user's slice down is the user's to name.
    let users = parts
        .iter()
        .any(|p| *p == "user.slice" || (p.starts_with("user-") && p.ends_with(".slice")) || p.starts_with("user@"));
    let unit = parts.iter().rev().find(|p| {
        (p.ends_with(".service") || p.ends_with(".scope")) && !p.starts_with("session-") && !p.starts_with("user@")
    });
    match (users, unit) {
        (false, Some(unit)) => (*unit).to_owned(),
        (true, Some(unit)) => format!("uid-{uid}/{unit}"),
        (_, None) => format!("uid-{uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_units_are_named_user_units_are_namespaced_by_uid() {
        assert_eq!(
            app_id("/system.slice/glasses-assistant.service", 998),
            "glasses-assistant.service"
        );
        assert_eq!(
            app_id(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-toy-1234.scope",
                1000
            ),
            "uid-1000/app-toy-1234.scope"
        );
        // A user's delegated subtree may borrow a system unit's name; it stays the user's.
        assert_eq!(
            app_id(
                "/user.slice/user-1000.slice/user@1000.service/x.slice/glasses-assistant.service",
                1000
            ),
            "uid-1000/glasses-assistant.service"
        );
        assert_eq!(app_id("/user.slice/user-1000.slice/session-3.scope", 1000), "uid-1000");
        assert_eq!(app_id("/", 0), "uid-0");
        assert_eq!(app_id("", 7), "uid-7");
    }

    #[test]
    fn a_cgroup_path_names_its_user() {
        let path = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/a.scope";
        assert_eq!(owner_uid(path), 1000);
        assert_eq!(app_id(path, owner_uid(path)), "uid-1000/a.scope");
        assert_eq!(owner_uid("/user.slice/user@1001.service/x.service"), 1001);
        assert_eq!(owner_uid("/system.slice/user-x.slice/b.service"), 0);
        assert_eq!(app_id("/sys/fs/cgroup/system.slice/b.service", 0), "b.service");
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      36 25 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("garbage\n"), None);
    }

    #[test]
    fn our_own_cgroup_is_found_through_our_pidfd() {
        let fd = pidfd_open(std::process::id()).unwrap();
        let info = pidfd_info(&fd).expect("Linux 6.13 or later names a pidfd's cgroup");
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.euid, nix::unistd::geteuid().as_raw());
        let path = Cgroups::find().path_of(info.cgroupid).unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let expected = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        assert_eq!(path, expected);
        assert!(pidfd_open(u32::MAX).is_err());
    }
}
