//! The journal on real files in throwaway directories.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    thread,
};

use aiesim_journal::{HEADER, Journal, JournalError, Lsn, MAX_RECORD, Replay, encode_frame};

fn journal_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ledger.journal")
}

fn reopen(path: &Path) -> (Journal, Replay) {
    Journal::open(path).expect("the journal opens")
}

fn records(replay: &Replay) -> Vec<&[u8]> {
    replay.records.iter().map(Vec::as_slice).collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Writes `n` records "record-0".. and closes the journal; returns the path.
fn journal_with(dir: &tempfile::TempDir, n: usize) -> PathBuf {
    let path = journal_path(dir);
    let (journal, replay) = reopen(&path);
    assert!(replay.records.is_empty());
    let mut last = Lsn(0);
    for i in 0..n {
        last = journal.append(format!("record-{i}").as_bytes()).unwrap();
    }
    journal.durable_blocking(last).unwrap();
    path
}

fn expected(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("record-{i}").into_bytes()).collect()
}

#[test]
fn new_file_has_header_and_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (journal, replay) = reopen(&path);
    assert_eq!(
        replay,
        Replay {
            records: vec![],
            dropped_bytes: 0
        }
    );
    assert_eq!(fs::read(&path).unwrap(), HEADER);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(journal.size(), 8);
}

#[test]
fn append_durable_reopen_same_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (journal, _) = reopen(&path);
    let a = journal.append(b"first").unwrap();
    let b = journal.append(&[0xFF; 5000]).unwrap();
    let c = journal.append(b"third").unwrap();
    assert_eq!((a, b, c), (Lsn(1), Lsn(2), Lsn(3)));
    journal.durable_blocking(c).unwrap();
    // Durable means on disk now, not at drop.
    let mut expected_bytes = HEADER.to_vec();
    for record in [&b"first"[..], &[0xFF; 5000], b"third"] {
        encode_frame(record, &mut expected_bytes);
    }
    assert_eq!(fs::read(&path).unwrap(), expected_bytes);
    assert_eq!(journal.size(), expected_bytes.len() as u64);
    drop(journal);

    let (journal, replay) = reopen(&path);
    assert_eq!(records(&replay), [&b"first"[..], &[0xFF; 5000], b"third"]);
    assert_eq!(replay.dropped_bytes, 0);
    // Replayed records count: the next Lsn follows them.
    assert_eq!(journal.append(b"fourth").unwrap(), Lsn(4));
}

#[test]
fn drop_flushes_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (journal, _) = reopen(&path);
    for i in 0..100 {
        journal.append(format!("record-{i}").as_bytes()).unwrap();
    }
    drop(journal);
    assert_eq!(reopen(&path).1.records, expected(100));
}

#[test]
fn durable_of_lsn_zero_or_past_the_end_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 2);
    let (journal, _) = reopen(&path);
    journal.durable_blocking(Lsn(0)).unwrap();
    journal.durable_blocking(Lsn(1_000)).unwrap();
    let lsn = journal.append(b"x").unwrap();
    journal.durable_blocking(Lsn(lsn.0 + 10)).unwrap();
    // That waited for the real last record: it is on disk before any drop.
    let bytes = fs::read(&path).unwrap();
    assert_eq!(aiesim_journal::decode(&bytes).unwrap().0.last(), Some(&&b"x"[..]));
}

#[test]
fn torn_tail_truncated_by_a_few_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 10);
    let full = fs::read(&path).unwrap();
    // "record-9" is 8 bytes: its frame is 16; cut 3 off it.
    fs::write(&path, &full[..full.len() - 3]).unwrap();

    let (journal, replay) = reopen(&path);
    assert_eq!(replay.records, expected(9));
    assert_eq!(replay.dropped_bytes, 16 - 3);
    assert_eq!(
        fs::read(&path).unwrap(),
        full[..full.len() - 16],
        "truncated to the good prefix"
    );
    let lsn = journal.append(b"after the tear").unwrap();
    assert_eq!(lsn, Lsn(10));
    journal.durable_blocking(lsn).unwrap();
    drop(journal);

    let (_, replay) = reopen(&path);
    let mut want = expected(9);
    want.push(b"after the tear".to_vec());
    assert_eq!(replay.records, want);
    assert_eq!(replay.dropped_bytes, 0);
}

#[test]
fn torn_tail_garbage_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 5);
    let good_len = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"\x07\x00\x00\x00garbage!!");
    fs::write(&path, &bytes).unwrap();

    let (journal, replay) = reopen(&path);
    assert_eq!(replay.records, expected(5));
    assert_eq!(replay.dropped_bytes, 13);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    journal.durable_blocking(journal.append(b"new").unwrap()).unwrap();
    drop(journal);
    let (_, replay) = reopen(&path);
    assert_eq!(replay.records.len(), 6);
    assert_eq!(replay.records[5], b"new");
}

#[test]
fn flipped_byte_in_last_frame_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 5);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let (journal, replay) = reopen(&path);
    assert_eq!(replay.records, expected(4));
    assert_eq!(replay.dropped_bytes, 16);
    journal
        .durable_blocking(journal.append(b"replacement").unwrap())
        .unwrap();
    drop(journal);
    let (_, replay) = reopen(&path);
    let mut want = expected(4);
    want.push(b"replacement".to_vec());
    assert_eq!(replay.records, want);
}

#[test]
fn flipped_byte_in_a_middle_frame_drops_it_and_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 10);
    let mut bytes = fs::read(&path).unwrap();
    // Frames are 16 bytes each after the header; flip a payload byte of record 3.
    bytes[8 + 3 * 16 + 8 + 2] ^= 1;
    fs::write(&path, &bytes).unwrap();

    let (_, replay) = reopen(&path);
    assert_eq!(replay.records, expected(3));
    assert_eq!(replay.dropped_bytes, 7 * 16);
    assert_eq!(fs::metadata(&path).unwrap().len(), 8 + 3 * 16);
}

#[test]
fn torn_header_of_a_new_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    fs::write(&path, b"AIESI").unwrap();
    let (_, replay) = reopen(&path);
    assert_eq!(
        replay,
        Replay {
            records: vec![],
            dropped_bytes: 5
        }
    );
    assert_eq!(fs::read(&path).unwrap(), HEADER);
}

#[test]
fn wrong_header_is_not_a_journal_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let content = b"{\"balance\": 12}\n not a journal";
    fs::write(&path, content).unwrap();
    match Journal::open(&path) {
        Err(JournalError::NotAJournal { path: p }) => assert_eq!(p, path),
        Err(e) => panic!("expected NotAJournal, got {e}"),
        Ok(_) => panic!("expected NotAJournal, got a journal"),
    }
    assert_eq!(fs::read(&path).unwrap(), content);
    // A short file that is not a header prefix is not a journal either.
    fs::write(&path, b"AIX").unwrap();
    assert!(matches!(Journal::open(&path), Err(JournalError::NotAJournal { .. })));
    assert_eq!(fs::read(&path).unwrap(), b"AIX");
}

#[test]
fn missing_parent_directory_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("ledger.journal");
    let Err(e) = Journal::open(&path) else {
        panic!("opened a journal in a missing directory")
    };
    assert!(matches!(e, JournalError::Io { .. }));
    assert_eq!(e.to_string(), format!("cannot open the journal {}", path.display()));
}

#[test]
fn record_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (journal, _) = reopen(&path);
    assert!(matches!(journal.append(b""), Err(JournalError::RecordSize(0))));
    assert!(matches!(
        journal.append(&vec![1; MAX_RECORD + 1]),
        Err(JournalError::RecordSize(n)) if n == MAX_RECORD + 1
    ));
    assert!(matches!(journal.compact([&b""[..]]), Err(JournalError::RecordSize(0))));
    let big = vec![0x5A; MAX_RECORD];
    let lsn = journal.append(&big).unwrap();
    assert_eq!(lsn, Lsn(1), "rejected records take no Lsn");
    journal.durable_blocking(lsn).unwrap();
    assert_eq!(journal.stats().appended, 1);
    drop(journal);
    assert_eq!(reopen(&path).1.records, [big]);
}

#[test]
fn group_commit_16_threads() {
    const THREADS: u32 = 16;
    const EACH: u32 = 500;
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let journal = Arc::new(reopen(&path).0);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let journal = Arc::clone(&journal);
            thread::spawn(move || {
                let mut last = Lsn(0);
                for i in 0..EACH {
                    let lsn = journal.append(&[t.to_le_bytes(), i.to_le_bytes()].concat()).unwrap();
                    assert!(lsn > last, "a thread's Lsns increase");
                    last = lsn;
                    journal.durable_blocking(lsn).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let stats = journal.stats();
    assert_eq!(stats.appended, u64::from(THREADS * EACH));
    assert!(stats.fsyncs >= 1);
    assert!(stats.fsyncs < stats.appended, "no batching: {stats:?}");
    let size = journal.size();
    drop(journal);
    assert_eq!(fs::metadata(&path).unwrap().len(), size);

    let (_, replay) = reopen(&path);
    assert_eq!(replay.records.len(), (THREADS * EACH) as usize);
    // Every record once, and each thread's in its call order.
    let mut next = vec![0u32; THREADS as usize];
    for record in &replay.records {
        let t = u32::from_le_bytes(record[..4].try_into().unwrap()) as usize;
        let i = u32::from_le_bytes(record[4..].try_into().unwrap());
        assert_eq!(i, next[t]);
        next[t] += 1;
    }
    assert!(next.iter().all(|&n| n == EACH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_durable_many_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let journal = Arc::new(reopen(&path).0);
    let tasks: Vec<_> = (0..64u32)
        .map(|t| {
            let journal = Arc::clone(&journal);
            tokio::spawn(async move {
                for i in 0..50u32 {
                    let lsn = journal.append(&[t.to_le_bytes(), i.to_le_bytes()].concat()).unwrap();
                    journal.durable(lsn).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = journal.stats();
    assert_eq!(stats.appended, 64 * 50);
    assert!(stats.fsyncs < stats.appended, "no batching: {stats:?}");
    // Everything awaited is already on disk, before any drop.
    let (records, _) = {
        let bytes = fs::read(&path).unwrap();
        let (records, good) = aiesim_journal::decode(&bytes).unwrap();
        (records.len(), good)
    };
    assert_eq!(records, 64 * 50);
}

#[test]
fn compact_then_append_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let (journal, _) = reopen(&path);
    let mut last = Lsn(0);
    for i in 0..100 {
        last = journal.append(format!("record-{i}").as_bytes()).unwrap();
        if i == 49 {
            journal.durable_blocking(last).unwrap();
        }
    }
    // Half of the 100 may still be queued: compaction supersedes them too.
    journal
        .compact([&b"snapshot-a"[..], b"snapshot-b", b"snapshot-c"])
        .unwrap();
    journal.durable_blocking(last).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(!dir.path().join("ledger.journal.compact").exists());
    let compacted = fs::metadata(&path).unwrap().len();
    assert_eq!(journal.size(), compacted);
    assert_eq!(compacted, 8 + 3 * (8 + 10));

    assert_eq!(journal.append(b"after-1").unwrap(), Lsn(101), "Lsns go on counting");
    let lsn = journal.append(b"after-2").unwrap();
    journal.durable_blocking(lsn).unwrap();
    assert_eq!(journal.size(), fs::metadata(&path).unwrap().len());
    drop(journal);

    let (journal, replay) = reopen(&path);
    assert_eq!(
        records(&replay),
        [&b"snapshot-a"[..], b"snapshot-b", b"snapshot-c", b"after-1", b"after-2"]
    );
    assert_eq!(replay.dropped_bytes, 0);
    assert_eq!(journal.append(b"x").unwrap(), Lsn(6));
}

#[test]
fn compact_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 20);
    let (journal, _) = reopen(&path);
    journal.compact(std::iter::empty()).unwrap();
    assert_eq!(fs::read(&path).unwrap(), HEADER);
    drop(journal);
    assert!(reopen(&path).1.records.is_empty());
}

#[test]
fn leftover_compact_file_is_removed_and_journal_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_with(&dir, 7);
    let leftover = dir.path().join("ledger.journal.compact");
    // A crash before the rename: a half-written replacement with a valid header.
    let mut half = HEADER.to_vec();
    encode_frame(b"snapshot", &mut half);
    half.truncate(half.len() - 2);
    fs::write(&leftover, &half).unwrap();

    let (journal, replay) = reopen(&path);
    assert_eq!(replay.records, expected(7));
    assert_eq!(replay.dropped_bytes, 0);
    assert!(!leftover.exists());
    // And a compaction afterwards still works.
    journal.compact([&b"snapshot"[..]]).unwrap();
    drop(journal);
    assert_eq!(records(&reopen(&path).1), [&b"snapshot"[..]]);
}

#[test]
fn appends_during_compaction_follow_the_snapshot() {
    const N: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let journal = Arc::new(reopen(&path).0);
    let progress = Arc::new(AtomicU32::new(0));
    let appender = thread::spawn({
        let journal = Arc::clone(&journal);
        let progress = Arc::clone(&progress);
        move || {
            for i in 0..N {
                let lsn = journal.append(&i.to_le_bytes()).unwrap();
                if i % 7 == 0 {
                    journal.durable_blocking(lsn).unwrap();
                }
                progress.store(i, Ordering::Release);
            }
        }
    });
    let mut compactions = 0u8;
    let mut at = 0;
    while compactions < 5 {
        let now = progress.load(Ordering::Acquire);
        if now >= at {
            // One-byte snapshot records cannot be mistaken for the 4-byte appends.
            journal.compact([&[compactions][..]]).unwrap();
            compactions += 1;
            at = now + N / 8;
        } else {
            thread::yield_now();
        }
        if now + 1 == N {
            break;
        }
    }
    appender.join().unwrap();
    let last = journal.append(&N.to_le_bytes()).unwrap();
    journal.durable_blocking(last).unwrap();
    assert_eq!(journal.size(), fs::metadata(&path).unwrap().len());
    drop(journal);

    let (_, replay) = reopen(&path);
    let (snapshot, rest) = replay.records.split_first().unwrap();
    assert_eq!(snapshot, &[compactions - 1]);
    // After the snapshot: a gapless run of appends ending with the last one.
    let tail: Vec<u32> = rest
        .iter()
        .map(|r| u32::from_le_bytes(r.as_slice().try_into().expect("only appends follow")))
        .collect();
    assert_eq!(tail.last(), Some(&N));
    assert!(
        tail.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap or a duplicate after compaction"
    );
}
