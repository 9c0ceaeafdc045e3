//! aiesimd's own sockets: the cgroup v2 id the classifier marks them by, so that its cloud
//! connections are AI even to an address the endpoint list does not (yet) hold (a CDN, a name
//! that moved before the next resolution).
//!
//! Only while aiesimd is alone in its cgroup (as in systemd's `aiesimd.service`): anything
//! sharing it would be counted and prioritised as AI too.

use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum OwnCgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the process is in no cgroup v2 (no \"0::\" line in /proc/self/cgroup)")]
    NoCgroup2,
    #[error("no cgroup v2 hierarchy is mounted")]
    NoMount,
    #[error("{others} other process(es) share its cgroup {path}")]
    NotAlone { path: PathBuf, others: usize },
}

/// The cgroup v2 id (its directory's inode) of this process's cgroup, if no other process is
/// in it.
pub fn own_cgroup() -> Result<u64, OwnCgroupError> {
    let listing = read(Path::new("/proc/self/cgroup"))?;
    let relative = cgroup2_path(&listing).ok_or(OwnCgroupError::NoCgroup2)?;
    let root = crate::identity::cgroup2_root().ok_or(OwnCgroupError::NoMount)?;
    let dir = root.join(relative.trim_start_matches('/'));
    let others = others(&read(&dir.join("cgroup.procs"))?, std::process::id());
    if others > 0 {
        return Err(OwnCgroupError::NotAlone { path: dir, others });
    }
    std::fs::metadata(&dir)
        .map(|meta| meta.ino())
        .map_err(|source| OwnCgroupError::Read { path: dir, source })
}

/// The cgroup v2 path in a `/proc/PID/cgroup` listing: its `0::/path` line.
pub(crate) fn cgroup2_path(listing: &str) -> Option<&str> {
    listing
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| path.starts_with('/'))
}

/// The processes of a `cgroup.procs` listing other than `pid`.
pub(crate) fn others(procs: &str, pid: u32) -> usize {
    procs
        .split_whitespace()
        .filter(|entry| entry.parse::<u32>().ok() != Some(pid))
        .count()
}

fn read(path: &Path) -> Result<String, OwnCgroupError> {
    std::fs::read_to_string(path).map_err(|source| OwnCgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_line_is_found_among_v1_ones() {
        let hybrid = "12:pids:/system.slice/aiesimd.service\n1:name=systemd:/system.slice/aiesimd.service\n0::/system.slice/aiesimd.service\n";
        assert_eq!(cgroup2_path(hybrid), Some("/system.slice/aiesimd.service"));
        assert_eq!(cgroup2_path("0::/\n"), Some("/"));
        // cgroup v1 only: no unified line.
        assert_eq!(cgroup2_path("4:memory:/user.slice\n1:name=systemd:/user.slice\n"), None);
        assert_eq!(cgroup2_path(""), None);
        assert_eq!(cgroup2_path("0::\n"), None);
    }

    #[test]
    fn alone_only_when_the_cgroup_lists_nobody_else() {
        assert_eq!(others("4242\n", 4242), 0);
        assert_eq!(others("", 4242), 0);
        assert_eq!(others("4242\n4243\n", 4242), 1);
        assert_eq!(others("1\n17\n4242\n", 4242), 2);
        // Another pid that merely contains ours.
        assert_eq!(others("42420\n", 4242), 1);
    }
}
