//! Control-port transports: whole frames in and out, whatever carries them.
//!
//! A real `/dev/cdc-wdm*` node, a simulator's pseudo-terminal and (later) a proxy socket all
//! implement [`Transport`], so the protocol clients never know which one they talk to.

use std::{
    fs::OpenOptions,
    future::Future,
    io,
    os::{fd::OwnedFd, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use nix::sys::termios::{FlushArg, SetArg, cfmakeraw, tcflush, tcgetattr, tcsetattr};
use tokio::io::{Interest, unix::AsyncFd};

/// Bytes read from the port per system call.
const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not open the control port {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not make the control port {path} a raw terminal")]
    RawMode {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("could not watch the control port {path} for readiness")]
    Register {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the control port {path} failed")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the control port {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the control port {path} was closed by the modem")]
    Closed { path: PathBuf },
}

/// Carries whole protocol frames to and from a modem.
pub trait Transport: Send + 'static {
    /// Sends one whole frame.
    fn send(&mut self, frame: &[u8]) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Receives the next whole frame. Cancel-safe: dropping the future loses no bytes, so
    /// callers may race it against other work.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Cuts the bytes a port delivers into whole frames of one protocol.
pub trait Framer: Send + 'static {
    /// How many bytes the next [`Framer::push`] accepts; never 0 once drained.
    fn room(&self) -> usize;
    /// Appends as much of `data` as there is room for and returns how much that was.
    fn push(&mut self, data: &[u8]) -> usize;
    /// The next whole frame, an error for skipped garbage, or `None` when more bytes are needed.
    fn next_frame(&mut self) -> Option<Result<Vec<u8>, String>>;
}

impl Framer for aiesim_qmi::Splitter {
    fn room(&self) -> usize {
        Self::room(self)
    }

    fn push(&mut self, data: &[u8]) -> usize {
        Self::push(self, data)
    }

    fn next_frame(&mut self) -> Option<Result<Vec<u8>, String>> {
        Self::next_frame(self).map(|frame| frame.map_err(|err| err.to_string()))
    }
}

/// A character device: a cdc-wdm node or a pseudo-terminal, read and written without blocking.
pub struct CharDevice<F = aiesim_qmi::Splitter> {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
    splitter: F,
}

impl CharDevice {
    /// Opens a port that carries QMUX frames.
    pub fn open_qmux(path: &Path) -> Result<Self, TransportError> {
        Self::open(path, aiesim_qmi::Splitter::new())
    }
}

impl<F: Framer> CharDevice<F> {
    /// Opens a port whose frames `splitter` recognises.
    pub fn open(path: &Path, splitter: F) -> Result<Self, TransportError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| TransportError::Open {
                path: path.to_owned(),
                source,
            })?;
        let fd = OwnedFd::from(file);
        if nix::unistd::isatty(&fd).unwrap_or(false) {
            make_raw(&fd).map_err(|source| TransportError::RawMode {
                path: path.to_owned(),
                source,
            })?;
        }
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, which stays open and keeps the
        // same descriptor until the AsyncFd drops it.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }.map_err(|err| {
                TransportError::Register {
                    path: path.to_owned(),
                    source: err.into(),
                }
            })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
            splitter,
        })
    }
}

/// Raw mode keeps the line discipline from echoing or rewriting binary frames; the flush drops
/// answers meant for whoever had the port before us.
fn make_raw(fd: &OwnedFd) -> nix::Result<()> {
    let mut termios = tcgetattr(fd)?;
    cfmakeraw(&mut termios);
    tcsetattr(fd, SetArg::TCSANOW, &termios)?;
    tcflush(fd, FlushArg::TCIFLUSH)
}

// cdc-wdm's IOCTL_WDM_MAX_COMMAND: the largest control message the device takes (MBIM's
// wMaxControlMessage), `_IOR('H', 0xA0, u16)`.
nix::ioctl_read!(wdm_max_command, b'H', 0xA0, u16);

impl<F> CharDevice<F> {
    /// The largest control message the device takes, if the port is a cdc-wdm node that says.
    pub fn max_command(&self) -> Option<u16> {
        use std::os::fd::AsRawFd as _;
        let mut max = 0u16;
        // SAFETY: the ioctl writes one u16 into `max`, which lives for the call; on a port that
        // is not cdc-wdm (a pty) it fails with ENOTTY and writes nothing.
        let done = unsafe { wdm_max_command(self.fd.get_ref().as_raw_fd(), &raw mut max) };
        done.ok().map(|_| max).filter(|max| *max > 0)
    }
}

impl<F: Framer> Transport for CharDevice<F> {
    async fn send(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        let mut written = 0;
        while written < frame.len() {
            let mut guard = self.fd.writable().await.map_err(|source| TransportError::Write {
                path: self.path.clone(),
                source,
            })?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), &frame[written..]).map_err(io::Error::from)) {
                Ok(Ok(n)) => written += n,
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                // A terminal whose other side went away fails writes with EIO.
                Ok(Err(err)) if err.raw_os_error() == Some(libc::EIO) => {
                    return Err(TransportError::Closed {
                        path: self.path.clone(),
                    });
                }
                Ok(Err(source)) => {
                    return Err(TransportError::Write {
                        path: self.path.clone(),
                        source,
                    });
                }
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Vec<u8>, TransportError> {
        let mut buf = [0; READ_CHUNK];
        loop {
            while let Some(frame) = self.splitter.next_frame() {
                match frame {
                    Ok(frame) => return Ok(frame),
                    Err(err) => tracing::warn!(port = %self.path.display(), %err, "skipping garbage"),
                }
            }
            let mut guard = self.fd.readable().await.map_err(|source| TransportError::Read {
                path: self.path.clone(),
                source,
            })?;
            // A drained splitter always has room, so every byte read is kept.
            let room = self.splitter.room().min(READ_CHUNK);
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf[..room]).map_err(io::Error::from)) {
                Ok(Ok(0)) => {
                    return Err(TransportError::Closed {
                        path: self.path.clone(),
                    });
                }
                Ok(Ok(n)) => {
                    self.splitter.push(&buf[..n]);
                }
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                // Reads fail the same way once the other side has gone.
                Ok(Err(err)) if err.raw_os_error() == Some(libc::EIO) => {
                    return Err(TransportError::Closed {
                        path: self.path.clone(),
                    });
                }
                Ok(Err(source)) => {
                    return Err(TransportError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
                Err(_would_block) => {}
            }
        }
    }
}
