//! Pinning the fast path under a bpffs directory, so that a daemon that restarts (or crashed)
//! takes over the running classifier without a gap in classification or counts.
//!
//! Layout under the directory (`fastpath.pin_dir`, default `/sys/fs/bpf/aiesim`):
//! - `maps-<hash of the BPF object>/<MAP>`: the maps, reused by the next start of the same object
//!   (counters go on); an object with another hash starts with fresh maps.
//! - `links/<name>`: the TCX and cgroup links; a pin holds its link (and program) in the kernel
//!   after the process is gone. The next start points the link at its own program with
//!   `BPF_LINK_UPDATE`, an atomic swap, and a clean stop removes the pins, detaching them.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

/// Where the fast path pins its maps and links, and whether a clean stop leaves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
    /// Leave the classifier running on a clean stop too (not only after a crash).
    keep_on_stop: bool,
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

impl Pins {
    pub fn new(dir: impl Into<PathBuf>, keep_on_stop: bool) -> Self {
        Self {
            dir: dir.into(),
            keep_on_stop,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn keep_on_stop(&self) -> bool {
        self.keep_on_stop
    }

    /// The directory of this object's maps.
    pub(super) fn maps(&self, object: &[u8]) -> PathBuf {
        self.dir.join(format!("maps-{:016x}", fnv1a(object)))
    }

    /// The pin of one link, by a name unique per hook (`tcx-wwan0-egress`, `cgroup-ingress`).
    pub(super) fn link(&self, name: &str) -> PathBuf {
        self.dir.join("links").join(name)
    }

    /// Removes map directories of other objects (an upgrade's leftovers) once ours are in use.
    pub(super) fn remove_other_maps(&self, ours: &Path) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let old = entry.file_name().to_string_lossy().starts_with("maps-") && path != ours;
            if old {
                if let Err(error) = remove_tree(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot remove old pinned maps");
                }
            }
        }
    }

    /// Removes every pin (detaching the links) and the directory, if it is left empty.
    pub(super) fn remove_maps(&self, object: &[u8]) -> io::Result<()> {
        remove_tree(&self.maps(object))?;
        let _ = std::fs::remove_dir(self.dir.join("links"));
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

/// Opens a pinned object (a link) by its path.
pub(super) fn open(path: &Path) -> io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let attr: [u64; 2] = [name.as_ptr() as u64, 0];
    // SAFETY: the attr is a valid BPF_OBJ_GET attribute, alive for the call, with its size.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_ptr(), size_of_val(&attr)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Points `link` at `program`, atomically: each packet runs the old program or the new one.
pub(super) fn update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let [link, program] = [link, program].map(|fd| u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX));
    // union bpf_attr for BPF_LINK_UPDATE: link_fd, new_prog_fd, flags, old_prog_fd.
    let attr: [u32; 4] = [link, program, 0, 0];
    // SAFETY: as in `open`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_UPDATE, attr.as_ptr(), size_of_val(&attr)) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unpins a link: with no other holder the kernel detaches it. One already gone is fine.
pub(super) fn unpin(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

/// FNV-1a: a build's BPF object, told apart from another build's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_has_its_own_maps_directory() {
        let pins = Pins::new("/sys/fs/bpf/x", false);
        assert_ne!(pins.maps(b"one"), pins.maps(b"two"));
        assert_eq!(pins.maps(b"one"), pins.maps(b"one"));
        assert!(pins.maps(b"").starts_with("/sys/fs/bpf/x"));
        assert_eq!(
            pins.link("tcx-wwan0-egress"),
            Path::new("/sys/fs/bpf/x/links/tcx-wwan0-egress")
        );
    }
}
