//! The control channel: pumps bytes between the pty and a device model until a signal arrives.

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsFd, BorrowedFd},
};

use anyhow::Context as _;
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        signal::{SigSet, Signal},
        signalfd::{SfdFlags, SignalFd},
    },
};

use crate::pty::Pty;

/// Answers that pile up while no client reads are dropped beyond this, oldest first.
const OUTGOING_LIMIT: usize = 256 * 1024;

/// A device model: bytes from the host in, whole frames for the host out.
pub trait Device {
    fn receive(&mut self, bytes: &[u8]) -> Vec<Vec<u8>>;
}

/// SIGTERM and SIGINT delivered through a file descriptor, so one poll loop sees everything.
pub struct Signals(SignalFd);

impl Signals {
    pub fn new() -> anyhow::Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block().context("could not block the signals")?;
        let fd =
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd failed")?;
        Ok(Self(fd))
    }

    fn take(&self) -> anyhow::Result<Option<Signal>> {
        let info = self.0.read_signal().context("could not read the signalfd")?;
        Ok(info
            .and_then(|info| i32::try_from(info.ssi_signo).ok())
            .and_then(|signo| Signal::try_from(signo).ok()))
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Frames waiting for the slave's input queue to drain.
#[derive(Default)]
struct Outgoing {
    frames: VecDeque<Vec<u8>>,
    /// How much of the front frame is already written.
    written: usize,
    bytes: usize,
}

impl Outgoing {
    fn push(&mut self, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
        // A real modem also loses answers nobody reads; never drop a half-written frame.
        while self.bytes > OUTGOING_LIMIT && self.frames.len() > 1 {
            let at = usize::from(self.written > 0);
            if let Some(dropped) = self.frames.remove(at) {
                self.bytes -= dropped.len();
                tracing::warn!(len = dropped.len(), "no client reads the port; dropped a frame");
            }
        }
    }

    fn flush(&mut self, port: &Pty) -> anyhow::Result<()> {
        while let Some(front) = self.frames.front() {
            match port.write(&front[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    if self.written == front.len() {
                        self.bytes -= front.len();
                        self.written = 0;
                        self.frames.pop_front();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err).context("could not write to the pty"),
            }
        }
        Ok(())
    }
}

/// Serves `device` on `port` until SIGTERM or SIGINT.
pub fn serve(port: &Pty, signals: &Signals, device: &mut impl Device) -> anyhow::Result<()> {
    let mut outgoing = Outgoing::default();
    let mut buf = [0; 4096];
    loop {
        let mut port_events = PollFlags::POLLIN;
        if !outgoing.frames.is_empty() {
            port_events |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(port.as_fd(), port_events),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(err).context("poll failed"),
        }
        let [port_ready, signal_ready] = fds.map(|fd| fd.revents().unwrap_or(PollFlags::empty()));

        if signal_ready.contains(PollFlags::POLLIN) {
            if let Some(signal) = signals.take()? {
                tracing::info!(%signal, "shutting down");
                return Ok(());
            }
        }
        if port_ready.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP) {
            loop {
                match port.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => device.receive(&buf[..n]).into_iter().for_each(|f| outgoing.push(f)),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err).context("could not read from the pty"),
                }
            }
        }
        // Answer at once rather than after another round through poll.
        outgoing.flush(port)?;
    }
}
