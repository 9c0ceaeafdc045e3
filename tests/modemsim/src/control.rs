//! The control channel: pumps bytes between the pty and a device model, drives simulated time,
//! and applies the faults asked for on the control socket, until a signal arrives.

use std::{
    collections::VecDeque,
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsFd, BorrowedFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
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

use crate::{
    euicc::ReceiptMode,
    pty::{Link, Pty},
    world::{Changes, FailNext, Rates, Registration, World},
};

/// Answers that pile up while no client reads are dropped beyond this, oldest first.
const OUTGOING_LIMIT: usize = 256 * 1024;
/// One step of simulated time: the signal drifts and indications go out.
const TICK: Duration = Duration::from_secs(1);
/// How long the port is gone during a reset unless the command says otherwise.
const DEFAULT_RESET_DOWNTIME: Duration = Duration::from_secs(1);
/// A control command line longer than this is refused.
const MAX_COMMAND: usize = 256;

/// A device model: one protocol spoken over the port, answering from and into the [`World`].
pub trait Device {
    /// Bytes from the host in, whole frames for the host out.
    fn receive(&mut self, world: &mut World, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// Indications for what changed, to the clients that asked for them.
    fn changed(&mut self, world: &World, changes: Changes) -> Vec<Vec<u8>>;
    /// The modem reset: every session, client id and subscription is forgotten.
    fn reset(&mut self);
    /// Lines describing the model's state (client ids, sessions) for the `state` command.
    fn describe(&self) -> Vec<String>;
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

/// Frames waiting for their release time and for the slave's input queue to drain.
#[derive(Default)]
struct Outgoing {
    frames: VecDeque<(Instant, Vec<u8>)>,
    /// How much of the front frame is already written.
    written: usize,
    bytes: usize,
}

impl Outgoing {
    fn push(&mut self, at: Instant, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back((at, frame));
        // A real modem also loses answers nobody reads; never drop a half-written frame.
        while self.bytes > OUTGOING_LIMIT && self.frames.len() > 1 {
            let at = usize::from(self.written > 0);
            if let Some((_, dropped)) = self.frames.remove(at) {
                self.bytes -= dropped.len();
                tracing::warn!(len = dropped.len(), "no client reads the port; dropped a frame");
            }
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// When the front frame may go, if one waits.
    fn next_release(&self) -> Option<Instant> {
        self.frames.front().map(|(at, _)| *at)
    }

    fn ready(&self, now: Instant) -> bool {
        self.next_release().is_some_and(|at| at <= now)
    }

    fn flush(&mut self, port: &Pty, now: Instant) -> anyhow::Result<()> {
        while let Some((at, front)) = self.frames.front() {
            if *at > now {
                break;
            }
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

/// Where the port is announced: the symlink clients open, re-pointed after every reset.
pub struct Port {
    pty: Option<Pty>,
    link: Option<Link>,
    link_path: PathBuf,
    announced: bool,
}

impl Port {
    pub fn open(link_path: &Path) -> anyhow::Result<Self> {
        let mut port = Self {
            pty: None,
            link: None,
            link_path: link_path.to_owned(),
            announced: false,
        };
        port.plug()?;
        Ok(port)
    }

    /// A new pseudo-terminal, linked and announced on stdout as `PTY /dev/pts/N`.
    fn plug(&mut self) -> anyhow::Result<()> {
        let pty = Pty::open().context("could not open a pseudo-terminal")?;
        let link = Link::create(&self.link_path, pty.path())?;
        let mut stdout = io::stdout().lock();
        let announced = writeln!(stdout, "PTY {}", pty.path().display()).and_then(|()| stdout.flush());
        // Whoever started us may have stopped listening after the first announcement.
        if self.pty.is_none() && self.link.is_none() && !self.announced {
            announced.context("could not announce the pseudo-terminal on stdout")?;
            self.announced = true;
        }
        tracing::info!(pty = %pty.path().display(), link = %link.path().display(), "serving the control port");
        self.pty = Some(pty);
        self.link = Some(link);
        Ok(())
    }

    /// The port goes away as on a USB disconnect: clients read EIO, the link disappears.
    fn unplug(&mut self) {
        self.link = None;
        self.pty = None;
    }
}

/// Faults that the control loop itself applies.
#[derive(Debug, Default)]
struct Timing {
    /// Host bytes are read and dropped until then.
    stalled_until: Option<Instant>,
    /// The port comes back then.
    down_until: Option<Instant>,
    /// Every answer waits this long.
    answer_delay: Duration,
}

/// The control socket: one text command per line, one reply line (`ok …` or `error: …`).
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<(UnixStream, Vec<u8>)>,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("could not remove the stale {}", path.display())),
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("could not bind the control socket {}", path.display()))?;
        listener
            .set_nonblocking(true)
            .context("could not make the control socket non-blocking")?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            clients: Vec::new(),
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A pcap of every MBIM transfer the host sent, rewritten after each one so that a simulator
/// killed mid-test still leaves a whole file for tshark.
pub struct HostCapture {
    path: PathBuf,
    splitter: aiesim_mbim::Splitter,
    capture: aiesim_mbim::pcap::Capture,
    started: Instant,
}

impl HostCapture {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let capture = Self {
            path: path.to_owned(),
            splitter: aiesim_mbim::Splitter::new(),
            capture: aiesim_mbim::pcap::Capture::default(),
            started: Instant::now(),
        };
        capture.write()?;
        Ok(capture)
    }

    fn record(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        let mut added = false;
        while !bytes.is_empty() {
            let taken = self.splitter.push(bytes);
            bytes = &bytes[taken..];
            while let Some(transfer) = self.splitter.next_transfer() {
                // Garbage is the host's bug to find, but not a frame to dissect.
                if let Ok(transfer) = transfer {
                    self.capture.push(self.started.elapsed(), &transfer);
                    added = true;
                }
            }
        }
        if added { self.write() } else { Ok(()) }
    }

    fn write(&self) -> anyhow::Result<()> {
        let partial = self.path.with_extension("partial");
        std::fs::write(&partial, self.capture.as_bytes())
            .and_then(|()| std::fs::rename(&partial, &self.path))
            .with_context(|| format!("could not write the capture {}", self.path.display()))
    }
}

/// Everything the loop serves.
pub struct Simulator<'a, D> {
    pub port: Port,
    pub signals: &'a Signals,
    pub device: D,
    pub world: World,
    pub control: Option<ControlSocket>,
    pub answer_delay: Duration,
    pub capture: Option<HostCapture>,
}

/// Serves until SIGTERM or SIGINT.
#[expect(
    clippy::too_many_lines,
    reason = "one poll loop over every source, read top to bottom"
)]
pub fn serve<D: Device>(sim: Simulator<'_, D>) -> anyhow::Result<()> {
    let Simulator {
        mut port,
        signals,
        mut device,
        mut world,
        mut control,
        answer_delay,
        mut capture,
    } = sim;
    let mut outgoing = Outgoing::default();
    let mut timing = Timing {
        answer_delay,
        ..Timing::default()
    };
    let mut next_tick = Instant::now() + TICK;
    let mut buf = [0; 4096];
    loop {
        let now = Instant::now();
        let deadline = [Some(next_tick), timing.down_until, outgoing.next_release()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_tick);
        let timeout = PollTimeout::try_from(deadline.saturating_duration_since(now).as_millis().max(1))
            .unwrap_or(PollTimeout::MAX);

        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(pty) = &port.pty {
            let mut events = PollFlags::POLLIN;
            if outgoing.ready(now) {
                events |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(pty.as_fd(), events));
        }
        let control_at = fds.len();
        if let Some(control) = &control {
            fds.push(PollFd::new(control.listener.as_fd(), PollFlags::POLLIN));
            for (stream, _) in &control.clients {
                fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(err).context("poll failed"),
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);

        if revents[0].contains(PollFlags::POLLIN) {
            if let Some(signal) = signals.take()? {
                tracing::info!(%signal, "shutting down");
                return Ok(());
            }
        }
        let now = Instant::now();
        if let Some(pty) = &port.pty {
            if revents[1].intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP) {
                let stalled = timing.stalled_until.is_some_and(|until| until > now);
                loop {
                    match pty.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) if stalled => tracing::debug!(len = n, "stalled: dropping what the host sent"),
                        Ok(n) => {
                            if let Some(capture) = &mut capture {
                                capture.record(&buf[..n])?;
                            }
                            let frames = device.receive(&mut world, &buf[..n]);
                            // A slow card holds back the answers that waited for it.
                            let at = now + timing.answer_delay + world.uicc.take_busy();
                            for frame in frames {
                                outgoing.push(at, frame);
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err).context("could not read from the pty"),
                    }
                }
            }
        }
        if let Some(control) = &mut control {
            serve_control(
                control,
                &revents[control_at..],
                &mut Commands {
                    port: &mut port,
                    device: &mut device,
                    world: &mut world,
                    outgoing: &mut outgoing,
                    timing: &mut timing,
                },
            )?;
        }

        let now = Instant::now();
        if timing.down_until.is_some_and(|until| until <= now) {
            timing.down_until = None;
            port.plug()?;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            world.tick();
        }
        let changes = world.take_changes();
        if changes.any() && port.pty.is_some() {
            for frame in device.changed(&world, changes) {
                outgoing.push(now + timing.answer_delay, frame);
            }
        }
        if let Some(pty) = &port.pty {
            // Answer at once rather than after another round through poll.
            outgoing.flush(pty, now)?;
        }
    }
}

/// What a control command may act on.
struct Commands<'a, D> {
    port: &'a mut Port,
    device: &'a mut D,
    world: &'a mut World,
    outgoing: &'a mut Outgoing,
    timing: &'a mut Timing,
}

fn serve_control<D: Device>(
    control: &mut ControlSocket,
    revents: &[PollFlags],
    commands: &mut Commands<'_, D>,
) -> anyhow::Result<()> {
    let Some((listening, streams)) = revents.split_first() else {
        return Ok(());
    };
    let mut closed = Vec::new();
    for (index, events) in streams.iter().enumerate() {
        if !events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            continue;
        }
        let Some((stream, pending)) = control.clients.get_mut(index) else {
            continue;
        };
        let mut chunk = [0; 512];
        match stream.read(&mut chunk) {
            Ok(0) => closed.push(index),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(_) => closed.push(index),
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let reply = match std::str::from_utf8(&line) {
                Ok(line) => commands.run(line.trim()),
                Err(_) => Err("commands are UTF-8 text".to_owned()),
            };
            let reply = match reply {
                Ok(text) if text.is_empty() => "ok\n".to_owned(),
                Ok(text) => format!("{text}\nok\n"),
                Err(error) => format!("error: {error}\n"),
            };
            // A control client that cannot take a short reply is dropped.
            if stream.write_all(reply.as_bytes()).is_err() {
                closed.push(index);
                break;
            }
        }
        if pending.len() > MAX_COMMAND {
            let _ = stream.write_all(b"error: command too long\n");
            closed.push(index);
        }
    }
    closed.sort_unstable();
    closed.dedup();
    for index in closed.into_iter().rev() {
        control.clients.remove(index);
    }
    if listening.contains(PollFlags::POLLIN) {
        loop {
            match control.listener.accept() {
                Ok((stream, _)) => {
                    // Replies are short; blocking writes keep them whole.
                    stream
                        .set_nonblocking(false)
                        .context("could not set up a control client")?;
                    stream
                        .set_write_timeout(Some(Duration::from_secs(1)))
                        .context("could not set up a control client")?;
                    // Reads go through poll, so they must not block the loop.
                    stream
                        .set_nonblocking(true)
                        .context("could not set up a control client")?;
                    control.clients.push((stream, Vec::new()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err).context("could not accept a control client"),
            }
        }
    }
    Ok(())
}

/// The commands the control socket takes; `help` lists them.
const HELP: &str = "\
reset [MS]                 the modem resets: the port vanishes for MS ms (default 1000), every client id is released
forget                     the modem's function restarts behind a port that stays: QMI client ids and the MBIM
                           session are gone (QMI answers InvalidClientId, MBIM NotOpened) until the host notices
stall MS                   the modem stops answering for MS ms (what the host sends meanwhile is lost)
slow MS                    every answer waits MS ms (0 turns it off)
garbage [N]                N bytes of garbage (default 64) on the port now
clients N                  at most N QMI client ids per service (0 exhausts them)
fragments on|off           the MBIM model sends multi-fragment answers out of order
card remove|insert         take the SIM card out or put it back
card channels refuse|accept  opening a logical channel fails with 6A81 (the card has none left)
card fail SW [N] [APPLET]  the next N (default 1) commands to APPLET (isd-r, iot-safe, ai; default
                           any) are answered with the status word SW (hex, e.g. 6A82, 6985, 6982)
card fail off              no more injected status words
card slow MS               the card takes MS ms over every command (0 turns it off)
radio on|off               turn the radio on or off
signal DBM                 set the signal's base level (RSSI in dBm, -113..-51)
rates UP_KBIT [DOWN_KBIT]  the channel rates the network grants (kbit/s; QMI WDS Get Channel Rates,
                           MBIM packet service); QMI hosts hear of it by a serving-system indication
register home|roaming|searching|denied|none
receipts honest|forge|replay  how the AI applet answers DEBIT (forge: a bad signature;
                           replay: the debit is taken, the previous receipt comes back)
voucher AMOUNT [TTL_S]     mint an operator voucher for this card (hex; default 600 s)
account                    the AI applet's balance, sequence and debits taken
state                      the model's client ids and sessions, and the world's state";

impl<D: Device> Commands<'_, D> {
    #[expect(clippy::too_many_lines, reason = "one arm per command, as the help text lists them")]
    fn run(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let millis = |word: Option<&&str>, default: Option<Duration>| -> Result<Duration, String> {
            match word {
                Some(word) => word
                    .parse()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{word:?} is not a number of milliseconds")),
                None => default.ok_or_else(|| "a number of milliseconds is needed".to_owned()),
            }
        };
        let now = Instant::now();
        tracing::info!(command = line, "control");
        match words.as_slice() {
            ["help"] => Ok(HELP.to_owned()),
            ["reset", rest @ ..] => {
                let downtime = millis(rest.first(), Some(DEFAULT_RESET_DOWNTIME))?;
                self.port.unplug();
                self.outgoing.clear();
                self.device.reset();
                self.world.reset();
                self.timing.down_until = Some(now + downtime);
                Ok(String::new())
            }
            ["forget"] => {
                self.device.reset();
                Ok(String::new())
            }
            ["stall", ms] => {
                self.timing.stalled_until = Some(now + millis(Some(ms), None)?);
                Ok(String::new())
            }
            ["slow", ms] => {
                self.timing.answer_delay = millis(Some(ms), None)?;
                Ok(String::new())
            }
            ["garbage", rest @ ..] => {
                let len: usize = rest
                    .first()
                    .map_or(Ok(64), |n| n.parse())
                    .map_err(|_| "N is a number")?;
                // Bytes no protocol starts a frame with, so both splitters must resynchronise.
                let junk = (0..=u8::MAX)
                    .cycle()
                    .take(len.min(4096))
                    .map(|i| 0xA5 ^ i.wrapping_mul(31))
                    .collect();
                self.outgoing.push(now, junk);
                Ok(String::new())
            }
            ["clients", n] => {
                self.world.faults.max_clients_per_service = n.parse().map_err(|_| "N is a number")?;
                Ok(String::new())
            }
            ["fragments", on_off] => {
                self.world.faults.fragment_errors = on_off_word(on_off)?;
                Ok(String::new())
            }
            ["card", "remove"] => {
                self.world.set_card_present(false);
                Ok(String::new())
            }
            ["card", "insert"] => {
                self.world.set_card_present(true);
                Ok(String::new())
            }
            ["card", "channels", word] => {
                self.world.uicc.faults.refuse_channels = match *word {
                    "refuse" => true,
                    "accept" => false,
                    other => return Err(format!("expected refuse or accept, not {other:?}")),
                };
                Ok(String::new())
            }
            ["card", "fail", "off"] => {
                self.world.uicc.faults.fail = None;
                Ok(String::new())
            }
            ["card", "fail", sw, rest @ ..] => {
                self.world.uicc.faults.fail = Some(fail_next(sw, rest)?);
                Ok(String::new())
            }
            ["card", "slow", ms] => {
                self.world.uicc.faults.delay = millis(Some(ms), None)?;
                Ok(String::new())
            }
            ["radio", on_off] => {
                self.world.set_radio(on_off_word(on_off)?);
                Ok(String::new())
            }
            ["signal", dbm] => {
                let dbm: i8 = dbm.parse().map_err(|_| format!("{dbm:?} is not a dBm value"))?;
                if !(-113..=-51).contains(&dbm) {
                    return Err("RSSI is between -113 and -51 dBm".into());
                }
                self.world.set_rssi(dbm);
                Ok(String::new())
            }
            ["rates", up, rest @ ..] => {
                let kbit = |word: &str| {
                    word.parse::<u64>()
                        .ok()
                        .filter(|k| (1..=4_000_000).contains(k))
                        .map(|k| k * 1000)
                        .ok_or_else(|| format!("{word:?} is not a rate in kbit/s (1 to 4000000)"))
                };
                let uplink_bps = kbit(up)?;
                let downlink_bps = match rest {
                    [] => self.world.rates.downlink_bps,
                    [down] => kbit(down)?,
                    _ => return Err("usage: rates UP_KBIT [DOWN_KBIT]".into()),
                };
                self.world.set_rates(Rates {
                    uplink_bps,
                    downlink_bps,
                });
                Ok(String::new())
            }
            ["register", state] => {
                let registration = match *state {
                    "home" => Registration::Home,
                    "roaming" => Registration::Roaming,
                    "searching" => Registration::Searching,
                    "denied" => Registration::Denied,
                    "none" => Registration::NotRegistered,
                    other => return Err(format!("unknown registration state {other:?}")),
                };
                self.world.set_registration(registration);
                Ok(String::new())
            }
            ["receipts", mode] => {
                let mode = match *mode {
                    "honest" => ReceiptMode::Honest,
                    "forge" => ReceiptMode::Forge,
                    "replay" => ReceiptMode::Replay,
                    other => return Err(format!("expected honest, forge or replay, not {other:?}")),
                };
                self.world.uicc.ai.set_receipts(mode);
                Ok(String::new())
            }
            ["voucher", amount, rest @ ..] => {
                let amount: u64 = amount.parse().map_err(|_| "AMOUNT is a number of tokens")?;
                let ttl: u64 = rest
                    .first()
                    .map_or(Ok(600), |t| t.parse())
                    .map_err(|_| "TTL_S is a number of seconds")?;
                self.world.uicc.ai.mint_voucher(amount, ttl)
            }
            ["account"] => {
                let a = self.world.uicc.ai.get();
                Ok(format!(
                    "balance {}\nsequence {}\ndebits {}",
                    a.balance, a.sequence, a.debits
                ))
            }
            ["state"] => {
                let mut lines = self.device.describe();
                let world = &*self.world;
                lines.push(format!("port {}", if self.port.pty.is_some() { "up" } else { "down" }));
                lines.push(format!("radio {}", if world.radio_on { "on" } else { "off" }));
                lines.push(format!("registration {:?}", world.registration));
                lines.push(format!(
                    "rates up {} down {} bit/s",
                    world.rates.uplink_bps, world.rates.downlink_bps
                ));
                lines.push(format!(
                    "card {}",
                    if world.uicc.present { "present" } else { "absent" }
                ));
                lines.push(format!("channels {:?}", world.uicc.open_channels()));
                lines.push(format!("card faults {:?}", world.uicc.faults));
                lines.push(match &world.data {
                    Some(session) => format!("data up {} {}", session.apn, session.address),
                    None => "data down".to_owned(),
                });
                Ok(lines.join("\n"))
            }
            [] => Err("empty command; try help".into()),
            _ => Err(format!("unknown command {line:?}; try help")),
        }
    }
}

/// `SW [N] [APPLET]` of `card fail`.
fn fail_next(sw: &str, rest: &[&str]) -> Result<FailNext, String> {
    let sw = u16::from_str_radix(sw, 16)
        .ok()
        .filter(|sw| (0x62..=0x6F).contains(&(sw >> 8)))
        .ok_or_else(|| format!("{sw:?} is not an error status word (hex, 62xx to 6Fxx)"))?;
    let (count, applet) = match rest {
        [] => (1, None),
        [n] if n.parse::<u32>().is_ok() => (n.parse().unwrap_or(1), None),
        [applet] => (1, Some(*applet)),
        [n, applet] => (n.parse().map_err(|_| format!("{n:?} is not a count"))?, Some(*applet)),
        _ => return Err("usage: card fail SW [N] [APPLET]".into()),
    };
    if count == 0 {
        return Err("N is at least 1".into());
    }
    if let Some(applet) = applet {
        if !["isd-r", "iot-safe", "ai"].contains(&applet) {
            return Err(format!("unknown applet {applet:?}: isd-r, iot-safe or ai"));
        }
    }
    Ok(FailNext {
        sw,
        remaining: count,
        applet: applet.map(str::to_owned),
    })
}

fn on_off_word(word: &str) -> Result<bool, String> {
    match word {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}
