//! The transport: a pseudo-terminal whose slave side plays the modem's control port.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::{
    fcntl::{FcntlArg, OFlag, fcntl, open},
    pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt},
    sys::{
        stat::Mode,
        termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr},
    },
};

/// The master side, served by the simulator, and the path clients open.
pub struct Pty {
    master: PtyMaster,
    /// Held open so the master never reads EIO while no client has the port open.
    _slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    pub fn open() -> anyhow::Result<Self> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).context("posix_openpt failed")?;
        grantpt(&master).context("grantpt failed")?;
        unlockpt(&master).context("unlockpt failed")?;
        let path = PathBuf::from(ptsname_r(&master).context("ptsname_r failed")?);
        let slave = open(&path, OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("could not open {}", path.display()))?;
        // Raw mode: no echo, no line editing, no CR/LF translation of binary frames.
        let mut termios = tcgetattr(&slave).context("tcgetattr on the pty slave failed")?;
        cfmakeraw(&mut termios);
        tcsetattr(&slave, SetArg::TCSANOW, &termios).context("tcsetattr on the pty slave failed")?;
        let flags =
            OFlag::from_bits_retain(fcntl(&master, FcntlArg::F_GETFL).context("F_GETFL on the pty master failed")?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))
            .context("could not make the pty master non-blocking")?;
        Ok(Self {
            master,
            _slave: slave,
            path,
        })
    }

    /// The slave's path, e.g. `/dev/pts/3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what clients wrote; `WouldBlock` when there is nothing.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(&self.master, buf).map_err(io::Error::from)
    }

    /// Writes towards clients; `WouldBlock` when the slave's input queue is full.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        nix::unistd::write(&self.master, buf).map_err(io::Error::from)
    }
}

impl AsFd for Pty {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

/// A symlink to the pty that is removed again on drop, so tests find a stable path.
pub struct Link {
    path: PathBuf,
    target: PathBuf,
}

impl Link {
    pub fn create(path: &Path, target: &Path) -> anyhow::Result<Self> {
        match path.symlink_metadata() {
            // A symlink left by a simulator that was killed: replace it.
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(path)
                .with_context(|| format!("could not remove the stale link {}", path.display()))?,
            Ok(_) => bail!("{} exists and is not a symlink; refusing to replace it", path.display()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("could not inspect {}", path.display()));
            }
        }
        std::os::unix::fs::symlink(target, path)
            .with_context(|| format!("could not link {} to {}", path.display(), target.display()))?;
        Ok(Self {
            path: path.to_owned(),
            target: target.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Only remove the link if it is still ours; another simulator may have taken the name.
        if std::fs::read_link(&self.path).is_ok_and(|target| target == self.target) {
            if let Err(err) = std::fs::remove_file(&self.path) {
                tracing::warn!(link = %self.path.display(), %err, "could not remove the link");
            }
        }
    }
}
