//! Giving memory back while idle. A wearable's daemon idles most of the time, and most of its
//! resident memory is its own machine code, mapped in by start-up and by requests long finished.
//! When no request has been seen for a while, the daemon unmaps the pages of its code segments
//! (`MADV_DONTNEED` on its executable mappings): they are clean copies of the binary, faulted
//! back from the page cache (or the disk, if reclaimed meanwhile) on next use, and once unmapped
//! the kernel can reclaim them under memory pressure at no cost. `MADV_PAGEOUT` would drop them
//! from the page cache too, but only for a process that may write the binary, which the
//! service's user may not. Only executable mappings are touched: the dynamic loader writes the
//! relocated read-only data (RELRO) before protecting it, and unmapping those pages would read
//! back unrelocated bytes. Heap left free is returned with `malloc_trim`.

use std::path::{Path, PathBuf};

/// What can go wrong paging out.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("madvise(MADV_DONTNEED) on {start:#x}..{end:#x}: {source}")]
    Advise {
        start: usize,
        end: usize,
        #[source]
        source: std::io::Error,
    },
}

/// One executable mapping of a file, from a line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub path: PathBuf,
}

/// The private, executable, not writable mappings of `file` (its code): those whose pages are
/// exactly the file's bytes. `maps` is the text of `/proc/self/maps`.
pub fn code_mappings(maps: &str, file: &Path) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            // offset, device, inode, then the path (which may hold spaces).
            let path = line.splitn(6, |c: char| c.is_ascii_whitespace()).nth(5)?.trim_start();
            if perms != "r-xp" || Path::new(path) != file {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// Unmaps the daemon's own code and returns free heap to the system; returns the bytes of
/// mappings advised.
pub fn trim() -> Result<usize, MemoryError> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| MemoryError::Read {
            path: path.into(),
            source,
        })
    };
    let exe = std::fs::read_link("/proc/self/exe").map_err(|source| MemoryError::Read {
        path: "/proc/self/exe".into(),
        source,
    })?;
    let mut advised = 0;
    for m in code_mappings(&read("/proc/self/maps")?, &exe) {
        // SAFETY: the range is a whole private, executable, read-only mapping of this process's
        // own binary (read from /proc/self/maps): no page of it was ever written, so what the
        // next access faults back from the file is what was there.
        let ret = unsafe { libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_DONTNEED) };
        if ret != 0 {
            return Err(MemoryError::Advise {
                start: m.start,
                end: m.end,
                source: std::io::Error::last_os_error(),
            });
        }
        advised += m.end - m.start;
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

    const MAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 1234   /usr/sbin/aiesimd
55d0c0100000-55d0c0600000 r-xp 00100000 fe:01 1234   /usr/sbin/aiesimd
55d0c0600000-55d0c0650000 r--p 00600000 fe:01 1234   /usr/sbin/aiesimd
55d0c0650000-55d0c0652000 rw-p 00650000 fe:01 1234   /usr/sbin/aiesimd
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000020000 r-xp 00000000 fe:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000100000-7f0000101000 r-xp 00000000 fe:01 77     /opt/with space/aiesimd
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
";

    #[test]
    fn only_the_executables_code() {
        let found = code_mappings(MAPS, Path::new("/usr/sbin/aiesimd"));
        let ranges: Vec<(usize, usize)> = found.iter().map(|m| (m.start, m.end)).collect();
        assert_eq!(ranges, [(0x55d0_c010_0000, 0x55d0_c060_0000)]);
        let spaced = code_mappings(MAPS, Path::new("/opt/with space/aiesimd"));
        assert_eq!(spaced.len(), 1);
        assert!(code_mappings(MAPS, Path::new("/usr/sbin/other")).is_empty());
        assert!(code_mappings("garbage\n\n1-2\n", Path::new("/usr/sbin/aiesimd")).is_empty());
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
        assert_eq!(code_mappings(MAPS, Path::new("/usr/sbin/aiesimd")).len(), 1, "and runs");
    }
}
