//! The journal file: replay at open, the writer thread, durability waits and compaction.

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, Read, Write},
    mem,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::{self, JoinHandle},
};

use tokio::sync::watch;

use crate::{
    JournalError,
    frame::{self, HEADER, MAX_RECORD},
};

/// A record's position: the n-th record appended since open (records replayed at open count
/// too), from 1. `Lsn(0)` is "no record" and is always durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// What [`Journal::open`] found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The good records, oldest first; the first has `Lsn(1)`.
    pub records: Vec<Vec<u8>>,
    /// Bytes dropped from a torn/corrupt tail.
    pub dropped_bytes: u64,
}

/// Counters since [`Journal::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Records queued by [`Journal::append`].
    pub appended: u64,
    /// Writes of queued records made durable, each with one `fdatasync`.
    pub fsyncs: u64,
}

/// An open journal. `Send + Sync`: share it as `Arc<Journal>`. Dropping it writes and fsyncs
/// what is still queued, then stops the writer thread.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the writer: records queued, a compaction over, or stop.
    work: Condvar,
    /// Wakes blocking waiters and `compact`: a batch written, the writer failed or went idle.
    done: Condvar,
    /// The durable Lsn, for async waiters; also poked (unchanged) when the writer fails.
    durable_tx: watch::Sender<u64>,
    /// Only the writer writes it, and `compact` replaces it while the writer is held idle.
    file: Mutex<File>,
}

struct State {
    /// Encoded frames not yet handed to the writer.
    queued: Vec<u8>,
    /// The last Lsn handed out.
    last: u64,
    /// Every record up to this Lsn is in the file and fsync'd.
    durable: u64,
    /// Bytes in the file after the writer's last successful write.
    written: u64,
    /// Bytes the writer has taken from `queued` and is writing; nonzero means it is busy.
    in_flight: u64,
    /// A `compact` is replacing the file; the writer must not start a batch.
    compacting: bool,
    /// The first I/O error, sticky.
    error: Option<String>,
    /// The journal is being dropped: the writer flushes `queued` and exits.
    stop: bool,
    stats: Stats,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks; if one did, the state is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io { action, path, source }
}

fn compact_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".compact");
    PathBuf::from(name)
}

fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

/// Makes a create, rename or unlink in `path`'s directory durable.
fn sync_dir(path: &Path) -> Result<(), JournalError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync the directory of", path))
}

impl Journal {
    /// Opens or creates the journal at `path` (creating the file with mode 0600; the parent dir
    /// must exist), replays it, and starts its writer thread. A torn or corrupt tail is cut off
    /// (see the crate docs) and a `<path>.compact` left by an interrupted [`Journal::compact`]
    /// is removed.
    pub fn open(path: &Path) -> Result<(Journal, Replay), JournalError> {
        let leftover = compact_path(path);
        match fs::remove_file(&leftover) {
            Ok(()) => sync_dir(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove the leftover", &leftover)(e)),
        }

        // O_APPEND: every write lands at the end whatever the file offset.
        let mut file = open_options()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error("open the journal", path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_error("read the journal", path))?;
        let (records, good) = frame::decode(&bytes).map_err(|e| match e {
            JournalError::BadHeader => JournalError::NotAJournal { path: path.to_owned() },
            other => other,
        })?;
        let records: Vec<Vec<u8>> = records.into_iter().map(<[u8]>::to_vec).collect();
        let dropped_bytes = (bytes.len() - good) as u64;
        drop(bytes);

        if good == 0 {
            // New, empty, or a crash while writing the header.
            file.set_len(0).map_err(io_error("truncate the journal", path))?;
            file.write_all(HEADER).map_err(io_error("write the journal", path))?;
            file.sync_all().map_err(io_error("fsync the journal", path))?;
            sync_dir(path)?;
        } else if dropped_bytes > 0 {
            file.set_len(good as u64)
                .map_err(io_error("truncate the journal", path))?;
            file.sync_all().map_err(io_error("fsync the journal", path))?;
        }
        let written = good.max(HEADER.len()) as u64;

        let last = records.len() as u64;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            state: Mutex::new(State {
                queued: Vec::new(),
                last,
                durable: last,
                written,
                in_flight: 0,
                compacting: false,
                error: None,
                stop: false,
                stats: Stats::default(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            durable_tx: watch::Sender::new(last),
            file: Mutex::new(file),
        });
        let writer = thread::Builder::new()
            .name("aiesim-journal".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.write_loop()
            })
            .map_err(io_error("start the writer thread of", path))?;
        Ok((
            Journal {
                shared,
                writer: Some(writer),
            },
            Replay { records, dropped_bytes },
        ))
    }

    /// Queues one record; never blocks on I/O. Records reach the file in call order. Errors:
    /// empty or > [`MAX_RECORD`] ([`JournalError::RecordSize`]), or the writer already failed
    /// (sticky [`JournalError::Failed`]).
    pub fn append(&self, record: &[u8]) -> Result<Lsn, JournalError> {
        if record.is_empty() || record.len() > MAX_RECORD {
            return Err(JournalError::RecordSize(record.len()));
        }
        let crc = crc32c::crc32c(record);
        let mut state = lock(&self.shared.state);
        if let Some(error) = &state.error {
            return Err(JournalError::Failed(error.clone()));
        }
        frame::push_frame(record.len(), crc, record, &mut state.queued);
        state.last += 1;
        state.stats.appended += 1;
        let lsn = Lsn(state.last);
        drop(state);
        self.shared.work.notify_one();
        Ok(lsn)
    }

    /// Resolves once every record up to `lsn` is written and fsync'd. Group commit: one fsync
    /// covers every record queued before it started, and concurrent waiters share it. An `lsn`
    /// past the last one handed out waits for the last one.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), JournalError> {
        // Subscribing before looking at the state means no update between the two is missed.
        let mut rx = self.shared.durable_tx.subscribe();
        loop {
            if let Some(done) = durable_now(&lock(&self.shared.state), lsn) {
                return done;
            }
            // The sender lives in `shared`, which `self` keeps alive, so this cannot fail.
            let _ = rx.changed().await;
        }
    }

    /// The blocking form of [`Journal::durable`], for threads without a runtime (and Drop paths).
    pub fn durable_blocking(&self, lsn: Lsn) -> Result<(), JournalError> {
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(done) = durable_now(&state, lsn) {
                return done;
            }
            state = self.shared.done.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Replaces the whole journal (everything appended so far, durable or still queued) by
    /// `records`, atomically: write `<path>.compact` (0600), fsync it, rename over the journal,
    /// fsync the directory. Afterwards appends continue on the new file, and every Lsn handed out
    /// before counts as durable. A crash at any point leaves either the old or the new journal.
    ///
    /// Records appended while this runs come after `records`. If it fails before the rename
    /// the old journal and the queued records are kept and the error is returned; a failure
    /// after the rename is sticky, like a writer failure.
    pub fn compact<'a>(&self, records: impl IntoIterator<Item = &'a [u8]>) -> Result<(), JournalError> {
        let mut bytes = HEADER.to_vec();
        for record in records {
            if record.is_empty() || record.len() > MAX_RECORD {
                return Err(JournalError::RecordSize(record.len()));
            }
            frame::encode_frame(record, &mut bytes);
        }
        let shared = &*self.shared;

        let mut state = lock(&shared.state);
        while state.error.is_none() && (state.in_flight > 0 || state.compacting) {
            state = shared.done.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(error) = &state.error {
            return Err(JournalError::Failed(error.clone()));
        }
        state.compacting = true;
        let superseded = mem::take(&mut state.queued);
        let last = state.last;
        drop(state);

        let result = shared.replace_file(&bytes);
        let mut state = lock(&shared.state);
        state.compacting = false;
        match &result {
            Ok(()) => {
                state.written = bytes.len() as u64;
                state.durable = state.durable.max(last);
            }
            Err(Replace::Kept(_)) => {
                // Still the old file: put the superseded records back before any queued since.
                let newer = mem::replace(&mut state.queued, superseded);
                state.queued.extend_from_slice(&newer);
            }
            Err(Replace::Broken(e)) => {
                state.error.get_or_insert_with(|| error_chain(e));
            }
        }
        let durable = state.durable;
        drop(state);
        shared.durable_tx.send_replace(durable);
        shared.done.notify_all();
        shared.work.notify_one();
        result.map_err(|(Replace::Kept(e) | Replace::Broken(e))| e)
    }

    /// Current file size in bytes, including queued-but-unwritten records.
    pub fn size(&self) -> u64 {
        let state = lock(&self.shared.state);
        state.written + state.in_flight + state.queued.len() as u64
    }

    /// Counters since open; under concurrency `fsyncs` is far below `appended`.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.state).stats
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.take() {
            // The writer never panics on I/O errors; a panic there has nothing left to flush.
            let _ = writer.join();
        }
    }
}

/// How a compaction failed.
enum Replace {
    /// Before the rename: the old journal is still in place and in use.
    Kept(JournalError),
    /// After the rename: the writer's file handle no longer names the journal.
    Broken(JournalError),
}

/// The error and its sources on one line, for the sticky [`JournalError::Failed`] string.
fn error_chain(error: &JournalError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `Some` once waiting for `lsn` is over: it is durable, or the writer failed first.
fn durable_now(state: &State, lsn: Lsn) -> Option<Result<(), JournalError>> {
    if lsn.0.min(state.last) <= state.durable {
        Some(Ok(()))
    } else {
        state.error.as_ref().map(|e| Err(JournalError::Failed(e.clone())))
    }
}

impl Shared {
    fn write_loop(&self) {
        // Swapped with `queued` each round, so the two buffers keep their capacity.
        let mut batch = Vec::new();
        let mut state = lock(&self.state);
        loop {
            if state.error.is_some() {
                return;
            }
            if !state.queued.is_empty() && !state.compacting {
                batch.clear();
                mem::swap(&mut state.queued, &mut batch);
                let target = state.last;
                state.in_flight = batch.len() as u64;
                drop(state);

                let result = self.write_batch(&batch);
                state = lock(&self.state);
                state.in_flight = 0;
                match result {
                    Ok(()) => {
                        state.written += batch.len() as u64;
                        state.durable = target;
                        state.stats.fsyncs += 1;
                    }
                    Err(e) => state.error = Some(error_chain(&e)),
                }
                self.durable_tx.send_replace(state.durable);
                self.done.notify_all();
                continue;
            }
            if state.stop {
                return;
            }
            state = self.work.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn write_batch(&self, batch: &[u8]) -> Result<(), JournalError> {
        let mut file = lock(&self.file);
        file.write_all(batch)
            .map_err(io_error("write the journal", &self.path))?;
        file.sync_data().map_err(io_error("fsync the journal", &self.path))
    }

    /// Puts `bytes` in place of the journal file and swaps the writer onto the new file.
    fn replace_file(&self, bytes: &[u8]) -> Result<(), Replace> {
        let temp = compact_path(&self.path);
        let written = (|| {
            let mut file = open_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)
                .map_err(io_error("create", &temp))?;
            file.write_all(bytes).map_err(io_error("write", &temp))?;
            file.sync_all().map_err(io_error("fsync", &temp))?;
            fs::rename(&temp, &self.path).map_err(io_error("rename the compacted journal over", &self.path))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(Replace::Kept(e));
        }
        sync_dir(&self.path).map_err(Replace::Broken)?;
        let file = open_options()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io_error("reopen the compacted journal", &self.path))
            .map_err(Replace::Broken)?;
        *lock(&self.file) = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Journal>();
    }
}
