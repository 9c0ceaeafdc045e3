//! Giving memory back while idle. A wearable's daemon idles most of the time, and most of its
//! resident memory is code — its own binary's and its libraries' — mapped in by start-up and by
//! requests long finished. When no request has been seen for a while, the daemon unmaps the
//! pages of its read-only file mappings (`MADV_DONTNEED`): they are clean copies of the files,
//! faulted back from the page cache (or the disk, if reclaimed meanwhile) on next use, and once
//! unmapped the kernel can reclaim them under memory pressure at no cost. `MADV_PAGEOUT` would
//! drop them from the page cache too, but only for a process that may write the files, which
//! the service's user may not. Only mappings that hold no anonymous page are touched
//! (`/proc/self/smaps`): the dynamic loader writes the relocated read-only data (RELRO) before
//! protecting it, and unmapping those pages would read back unrelocated bytes. Heap left free
//! is returned with `malloc_trim`.

use std::path::PathBuf;

/// What can go wrong paging out.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One read-only mapping of a file, from `/proc/self/smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub path: PathBuf,
}

/// The private, read-only mappings of files that hold no anonymous page: every resident page is
/// the file's own bytes, so unmapping loses nothing. `smaps` is the text of `/proc/self/smaps`.
pub fn clean_mappings(smaps: &str) -> Vec<Mapping> {
    let mut found = Vec::new();
    // The mapping being read, while it may still qualify.
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Line::Header(mapping) = line_kind(line) {
            current = mapping;
            continue;
        }
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            let none = kib.trim().trim_end_matches("kB").trim() == "0";
            if let Some(m) = current.take().filter(|_| none) {
                found.push(m);
            }
        }
    }
    found
}

/// A line of smaps: a mapping's header, with the mapping when it is a private, read-only one of
/// a file, or one of its fields.
enum Line {
    Header(Option<Mapping>),
    Field,
}

fn line_kind(line: &str) -> Line {
    let mut fields = line.split_ascii_whitespace();
    let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
        return Line::Field;
    };
    let Some((start, end)) = range.split_once('-') else {
        return Line::Field;
    };
    let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
        return Line::Field;
    };
    if perms.len() != 4 {
        return Line::Field;
    }
    // offset, device, inode, then the path (which may hold spaces).
    let path = line
        .splitn(6, |c: char| c.is_ascii_whitespace())
        .nth(5)
        .map(str::trim_start);
    let readable_private = perms.starts_with('r') && perms.as_bytes()[1] == b'-' && perms.ends_with('p');
    Line::Header(
        path.filter(|p| readable_private && p.starts_with('/'))
            .map(|p| Mapping {
                start,
                end,
                path: PathBuf::from(p),
            }),
    )
}

/// Unmaps the daemon's clean read-only file pages and returns free heap to the system; returns
/// the bytes of mappings advised. A mapping the kernel refuses to advise (a locked one) is left
/// as it is.
pub fn trim() -> Result<usize, MemoryError> {
    const SMAPS: &str = "/proc/self/smaps";
    let smaps = std::fs::read_to_string(SMAPS).map_err(|source| MemoryError::Read {
        path: SMAPS.into(),
        source,
    })?;
    let mut advised = 0;
    for m in clean_mappings(&smaps) {
        // SAFETY: the range is a whole private, read-only file mapping of this process with no
        // anonymous page (read from /proc/self/smaps): no page of it was ever written, so what
        // the next access faults back from the file is what was there.
        let ret = unsafe { libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_DONTNEED) };
        if ret == 0 {
            advised += m.end - m.start;
        }
    }
    release_free_heap();
    Ok(advised)
}

/// Returns free heap memory to the system.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory; it has no other effect.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Three segments of the binary (the middle one executable, the third its RELRO data,
    /// written by the loader), a library, the heap, and a path with a space.
    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 1234   /usr/sbin/aiesimd
Rss:                1024 kB
Anonymous:             0 kB
55d0c0100000-55d0c0600000 r-xp 00100000 fe:01 1234   /usr/sbin/aiesimd
Rss:                3000 kB
Anonymous:             0 kB
55d0c0600000-55d0c0650000 r--p 00600000 fe:01 1234   /usr/sbin/aiesimd
Rss:                 236 kB
Anonymous:           236 kB
55d0c0650000-55d0c0652000 rw-p 00650000 fe:01 1234   /usr/sbin/aiesimd
Rss:                   8 kB
Anonymous:             8 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0      [heap]
Rss:                1000 kB
Anonymous:          1000 kB
7f0000000000-7f0000020000 r-xp 00000000 fe:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7f0000100000-7f0000101000 r-xp 00000000 fe:01 77     /opt/with space/aiesimd
Rss:                   4 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
";

    #[test]
    fn only_clean_read_only_file_mappings() {
        let found = clean_mappings(SMAPS);
        let ranges: Vec<(usize, usize)> = found.iter().map(|m| (m.start, m.end)).collect();
        assert_eq!(
            ranges,
            [
                (0x55d0_c000_0000, 0x55d0_c010_0000),
                (0x55d0_c010_0000, 0x55d0_c060_0000),
                (0x7f00_0000_0000, 0x7f00_0002_0000),
                (0x7f00_0010_0000, 0x7f00_0010_1000),
            ],
            "not the relocated one, not the writable one, not the heap"
        );
        assert_eq!(found[3].path, Path::new("/opt/with space/aiesimd"));
        assert!(clean_mappings("garbage\n\n1-2\nAnonymous: 0 kB\n").is_empty());
    }

    /// The test binary's own code, unmapped: its resident file pages fall (what faults back while
    /// the test runs is a few pages), and the code still runs.
    #[test]
    fn trimming_drops_resident_code_and_the_code_still_runs() {
        let file_rss = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
        };
        let before = file_rss();
        let advised = trim().expect("trim");
        let after = file_rss();
        assert!(advised > 0, "the test binary has code mappings");
        assert!(after < before, "RssFile {before} KiB -> {after} KiB");
        assert_eq!(clean_mappings(SMAPS).len(), 4, "and runs");
    }
}
