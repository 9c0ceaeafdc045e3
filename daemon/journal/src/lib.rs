//! An append-only, checksummed, group-committed journal file of opaque records. The token ledger
//! keeps its prost-encoded records here; this crate never looks inside them.
//!
//! # File format
//!
//! ```text
//! header  "AIESIMJ1"                      8 bytes, ASCII
//! frame   length: u32 little-endian       payload bytes, 1..=MAX_RECORD
//!         crc:    u32 little-endian       CRC-32C (Castagnoli) of the payload
//!         payload                         `length` bytes
//! frame   ...
//! ```
//!
//! Replay reads the frames in order and stops at the first one that is truncated, oversized,
//! zero-length or fails its checksum: that frame and everything after it is a torn or corrupt
//! tail. [`Journal::open`] truncates the file to the last good frame (and fsyncs it) so appends
//! continue after good data, and reports the bytes it dropped in [`Replay::dropped_bytes`]. A
//! corrupt frame in the middle therefore loses every record after it too: the length field
//! cannot be trusted past a bad checksum, so there is no safe way to resynchronise.
//!
//! A file that does not start with the header is not a journal, and [`Journal::open`] fails with
//! [`JournalError::NotAJournal`] without touching it. An empty file, or one holding only the
//! beginning of the header (a crash while creating it), gets the header written.
//!
//! # Writing
//!
//! [`Journal::append`] only queues a frame in memory; one writer thread (`aiesim-journal`) writes
//! everything queued with one `write` and one `fdatasync`, so concurrent callers of
//! [`Journal::durable`] or [`Journal::durable_blocking`] share fsyncs (group commit). An I/O
//! error in the writer is sticky: every later call fails with [`JournalError::Failed`], since
//! after a failed fsync the kernel may already have dropped the dirty pages.
//!
//! [`Journal::compact`] replaces the whole file atomically (write `<path>.compact`, fsync, rename,
//! fsync the directory); [`Journal::open`] removes a `<path>.compact` left by a crash.

mod frame;
mod journal;

use std::{io, path::PathBuf};

pub use frame::{HEADER, MAX_RECORD, decode, encode_frame};
pub use journal::{Journal, Lsn, Replay, Stats};

/// What can go wrong with a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed; `action` says which, e.g. "write the journal".
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file exists but does not start with [`HEADER`].
    #[error("{} is not an aiesim journal: it does not start with the header AIESIMJ1", path.display())]
    NotAJournal { path: PathBuf },
    /// [`decode`]'s form of [`JournalError::NotAJournal`], for bytes that come from no file.
    #[error("the bytes are not an aiesim journal: they do not start with the header AIESIMJ1")]
    BadHeader,
    /// A record must hold 1 to [`MAX_RECORD`] bytes.
    #[error("a journal record must hold 1 to {MAX_RECORD} bytes, not {0}")]
    RecordSize(usize),
    /// The writer hit an I/O error earlier (the string is that first error); nothing more is written.
    #[error("the journal writer failed earlier and writes nothing more: {0}")]
    Failed(String),
}
