//! Removing the `clsact` qdisc this process added (aya can add one, not remove it).

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket};

/// `TC_H_CLSACT`: the clsact qdisc's parent id.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: the handle clsact always has.
const CLSACT_HANDLE: u32 = 0xffff_0000;
const NLMSG_HEADER_LEN: usize = 16;
const TCMSG_LEN: usize = 20;
/// `AF_UNSPEC`, as the one-byte `tcm_family`.
const AF_UNSPEC: u8 = 0;

/// A clsact qdisc this process created on an interface.
#[derive(Debug)]
pub(super) struct Qdisc {
    ifindex: u32,
}

impl Qdisc {
    pub(super) fn new(ifindex: u32) -> Self {
        Self { ifindex }
    }

    /// Deletes the qdisc; one that is already gone, with its interface or otherwise, is fine.
    pub(super) fn remove(self) -> io::Result<()> {
        match delete_qdisc(self.ifindex) {
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENODEV | libc::ENOENT)) => Ok(()),
            result => result,
        }
    }
}

/// Sends one `RTM_DELQDISC` request and waits for the kernel's acknowledgement.
fn delete_qdisc(ifindex: u32) -> io::Result<()> {
    let socket: OwnedFd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    let flags = u16::try_from(libc::NLM_F_REQUEST | libc::NLM_F_ACK).expect("netlink flags fit u16");

    let mut request = Vec::with_capacity(NLMSG_HEADER_LEN + TCMSG_LEN);
    // struct nlmsghdr
    request.extend_from_slice(
        &u32::try_from(NLMSG_HEADER_LEN + TCMSG_LEN)
            .expect("small")
            .to_ne_bytes(),
    );
    request.extend_from_slice(&libc::RTM_DELQDISC.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns it
    // struct tcmsg
    request.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
    request.extend_from_slice(&ifindex.to_ne_bytes());
    request.extend_from_slice(&CLSACT_HANDLE.to_ne_bytes());
    request.extend_from_slice(&TC_H_CLSACT.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());

    send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut reply = [0u8; 1024];
    let len = recv(socket.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    acknowledgement(&reply[..len])
}

/// Reads the `NLMSG_ERROR` reply: error 0 is the acknowledgement, anything else a negated errno.
fn acknowledgement(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize| -> io::Result<[u8; 4]> {
        reply
            .get(at..at + 4)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink reply"))
    };
    let message_type = u16::from_ne_bytes(field(4)?[..2].try_into().expect("two bytes"));
    if i32::from(message_type) != libc::NLMSG_ERROR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected netlink reply of type {message_type}"),
        ));
    }
    match i32::from_ne_bytes(field(NLMSG_HEADER_LEN)?) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno)),
    }
}
