//! Child processes that are always reaped: SIGTERM, then SIGKILL, on drop.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

pub struct Proc {
    name: String,
    child: Child,
    lines: Option<Receiver<String>>,
    log: tempfile::NamedTempFile,
}

impl Proc {
    /// Spawns `cmd` with stderr to a log file; if stdout is piped, its lines are readable with
    /// [`Proc::read_line_until`].
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let log = tempfile::Builder::new()
            .prefix(&format!("aiesim-{name}-"))
            .suffix(".log")
            .tempfile()?;
        cmd.stdin(Stdio::null()).stderr(log.reopen()?);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The log once it contains `what`, or as it stands after `timeout` (a process may log an
    /// event a moment after its peer saw it).
    pub fn log_once_it_says(&self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(what) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a stdout line matching `pred`, for at most `timeout`.
    pub fn read_line_until(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let Some(lines) = &self.lines else {
            bail!("{}: stdout is not piped", self.name)
        };
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => bail!(
                    "{}: nothing expected on stdout within {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    bail!(
                        "{} exited ({status}) before saying what was expected; log:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
        }
    }

    /// Sends SIGTERM and waits up to 10 s, then SIGKILL.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }

    /// Kills with SIGKILL at once (a crash, as far as the process can tell).
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
