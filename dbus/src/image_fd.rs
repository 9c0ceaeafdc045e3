//! Image parts passed as file descriptors: read without ever blocking on the sender, and
//! written into a memfd when an app sends bytes it holds in memory.

use std::{
    io::Write as _,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::{
        memfd::{MFdFlags, memfd_create},
        stat::{SFlag, fstat},
        uio::pread,
    },
};

/// Why an image's file descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageFdError {
    #[error("the file descriptor is a {0}, not a regular file or memfd")]
    NotAFile(&'static str),
    #[error("the file descriptor is open for writing only")]
    WriteOnly,
    #[error("the file descriptor cannot be read: {0}")]
    Unreadable(Errno),
    #[error("the image is {size} bytes or more, more than the {cap} allowed")]
    TooLarge { size: u64, cap: usize },
}

/// Reads the whole file behind `fd` from offset 0, at most `cap` bytes; pipes, sockets and
/// devices are refused, so a sender cannot make the reader wait.
pub fn read_image(fd: BorrowedFd<'_>, cap: usize) -> Result<Vec<u8>, ImageFdError> {
    let stat = fstat(fd).map_err(ImageFdError::Unreadable)?;
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFREG {
        return Err(ImageFdError::NotAFile(match kind {
            SFlag::S_IFIFO => "pipe",
            SFlag::S_IFSOCK => "socket",
            SFlag::S_IFCHR => "character device",
            SFlag::S_IFBLK => "block device",
            SFlag::S_IFDIR => "directory",
            _ => "special file",
        }));
    }
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(ImageFdError::Unreadable)?);
    if flags & OFlag::O_ACCMODE == OFlag::O_WRONLY {
        return Err(ImageFdError::WriteOnly);
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if size > cap as u64 {
        return Err(ImageFdError::TooLarge { size, cap });
    }
    // One byte past the cap tells a file that grew since fstat from one that fits.
    let mut data = vec![0u8; usize::try_from(size).unwrap_or(cap).min(cap) + 1];
    let mut len = 0;
    loop {
        if len == data.len() {
            if len > cap {
                return Err(ImageFdError::TooLarge { size: len as u64, cap });
            }
            data.resize((len * 2).clamp(4096, cap + 1), 0);
        }
        let offset = i64::try_from(len).map_err(|_| ImageFdError::Unreadable(Errno::EOVERFLOW))?;
        match pread(fd, &mut data[len..], offset) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(ImageFdError::Unreadable(e)),
        }
    }
    data.truncate(len);
    Ok(data)
}

/// A sealed memfd holding `data`, to pass an in-memory image over the bus.
pub fn memfd_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = memfd_create(c"aiesim-image", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    let fd = OwnedFd::from(file);
    // Sealed: the daemon reads exactly what was written.
    let seals =
        nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW | nix::fcntl::SealFlag::F_SEAL_WRITE;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(fd)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    #[test]
    fn reads_a_memfd_and_a_file_from_the_start() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let fd = memfd_with(&data).unwrap();
        assert_eq!(read_image(fd.as_fd(), 10_000).unwrap(), data);
        let mut file = tempfile_in_tmp("image");
        file.write_all(&data).unwrap();
        // The file position is at the end; the read starts at 0 anyway.
        assert_eq!(read_image(file.as_fd(), 1 << 20).unwrap(), data);
    }

    #[test]
    fn refuses_pipes_sockets_write_only_and_oversized() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(read_image(r.as_fd(), 100), Err(ImageFdError::NotAFile("pipe")));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(read_image(a.as_fd(), 100), Err(ImageFdError::NotAFile("socket")));
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            read_image(null.as_fd(), 100),
            Err(ImageFdError::NotAFile("character device"))
        );
        let path = std::env::temp_dir().join(format!("aiesim-image-wo-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let wo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_image(wo.as_fd(), 100), Err(ImageFdError::WriteOnly));
        let big = memfd_with(&[0u8; 101]).unwrap();
        assert_eq!(
            read_image(big.as_fd(), 100),
            Err(ImageFdError::TooLarge { size: 101, cap: 100 })
        );
        assert_eq!(read_image(big.as_fd(), 101).unwrap().len(), 101);
    }

    /// An unlinked temporary file, open for reading and writing (`tag` keeps the names of
    /// tests running at once apart).
    pub(crate) fn tempfile_in_tmp(tag: &str) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("aiesim-{tag}-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
