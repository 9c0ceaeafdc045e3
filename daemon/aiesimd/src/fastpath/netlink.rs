//! The few rtnetlink traffic-control requests the fast path makes, built by hand: adding and
//! deleting qdiscs and classes, and reading an interface's root qdisc (aya covers only clsact).

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket};

/// `TC_H_ROOT`: the parent id of an interface's root qdisc.
pub(super) const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TCA_KIND`: the qdisc or class kind, a NUL-terminated string.
pub(super) const TCA_KIND: u16 = 1;
/// `TCA_OPTIONS`: the kind's own attributes, nested.
pub(super) const TCA_OPTIONS: u16 = 2;

const NLMSG_HEADER_LEN: usize = 16;
const TCMSG_LEN: usize = 20;
const NLA_HEADER_LEN: usize = 4;
const NLMSG_DONE: u16 = 3;
/// `AF_UNSPEC`, as the one-byte `tcm_family`.
const AF_UNSPEC: u8 = 0;

/// The fixed part of a traffic-control message (`struct tcmsg`).
#[derive(Debug, Clone, Copy)]
pub(super) struct TcMsg {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
}

/// One root qdisc, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RootQdisc {
    pub kind: String,
    pub handle: u32,
}

/// Netlink attributes for a request, appended one after the other with their padding.
#[derive(Debug, Default)]
pub(super) struct Attributes(Vec<u8>);

impl Attributes {
    pub(super) fn push(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(NLA_HEADER_LEN + payload.len()).expect("attributes here are small");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    /// A string attribute, NUL-terminated as the kernel expects.
    pub(super) fn push_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut payload = value.as_bytes().to_vec();
        payload.push(0);
        self.push(kind, &payload)
    }

    /// An attribute holding `inner` nested.
    pub(super) fn push_nested(&mut self, kind: u16, inner: &Self) -> &mut Self {
        self.push(kind, &inner.0)
    }
}

const fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn open() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?)
}

fn message(kind: u16, flags: i32, tcmsg: TcMsg, attributes: &Attributes) -> io::Result<Vec<u8>> {
    let ifindex = i32::try_from(tcmsg.ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    let flags = u16::try_from(flags).expect("netlink flags fit u16");
    let len = NLMSG_HEADER_LEN + TCMSG_LEN + attributes.0.len();
    let mut request = Vec::with_capacity(len);
    // struct nlmsghdr
    request.extend_from_slice(&u32::try_from(len).expect("small").to_ne_bytes());
    request.extend_from_slice(&kind.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns it
    // struct tcmsg
    request.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
    request.extend_from_slice(&ifindex.to_ne_bytes());
    request.extend_from_slice(&tcmsg.handle.to_ne_bytes());
    request.extend_from_slice(&tcmsg.parent.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes()); // tcm_info
    request.extend_from_slice(&attributes.0);
    Ok(request)
}

/// Sends one request (`RTM_NEWQDISC`, `RTM_DELQDISC`, `RTM_NEWTCLASS`…) and waits for the
/// kernel's acknowledgement.
pub(super) fn request(kind: u16, flags: i32, tcmsg: TcMsg, attributes: &Attributes) -> io::Result<()> {
    let socket = open()?;
    let request = message(kind, flags | libc::NLM_F_REQUEST | libc::NLM_F_ACK, tcmsg, attributes)?;
    send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut reply = [0u8; 4096];
    let len = recv(socket.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    acknowledgement(&reply[..len])
}

/// The root qdisc of `ifindex`, or `None` for an interface without one (a fresh TUN device
/// before it is up).
pub(super) fn root_qdisc(ifindex: u32) -> io::Result<Option<RootQdisc>> {
    let socket = open()?;
    let query = TcMsg {
        ifindex,
        handle: 0,
        parent: 0,
    };
    let request = message(
        libc::RTM_GETQDISC,
        libc::NLM_F_REQUEST | libc::NLM_F_DUMP,
        query,
        &Attributes::default(),
    )?;
    send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut found = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let len = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut messages = &buf[..len];
        while messages.len() >= NLMSG_HEADER_LEN {
            let message_len = u32_at(messages, 0)? as usize;
            let kind = u16::from_ne_bytes([messages[4], messages[5]]);
            if message_len < NLMSG_HEADER_LEN || message_len > messages.len() {
                return Err(invalid("truncated netlink message"));
            }
            match i32::from(kind) {
                libc::NLMSG_ERROR => acknowledgement(&messages[..message_len])?,
                _ if kind == NLMSG_DONE => return Ok(found),
                _ if kind == libc::RTM_NEWQDISC => {
                    if let Some(root) = parse_root(&messages[NLMSG_HEADER_LEN..message_len], ifindex)? {
                        found = Some(root);
                    }
                }
                _ => {}
            }
            messages = &messages[align(message_len).min(messages.len())..];
        }
    }
}

/// The qdisc in one `RTM_NEWQDISC` body, if it is the root qdisc of `ifindex`.
fn parse_root(body: &[u8], ifindex: u32) -> io::Result<Option<RootQdisc>> {
    if body.len() < TCMSG_LEN {
        return Err(invalid("short tcmsg"));
    }
    let (tcm_ifindex, handle, parent) = (u32_at(body, 4)?, u32_at(body, 8)?, u32_at(body, 12)?);
    if tcm_ifindex != ifindex || parent != TC_H_ROOT {
        return Ok(None);
    }
    let mut attributes = &body[TCMSG_LEN..];
    while attributes.len() >= NLA_HEADER_LEN {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if len < NLA_HEADER_LEN || len > attributes.len() {
            return Err(invalid("truncated netlink attribute"));
        }
        if kind == TCA_KIND {
            let value = &attributes[NLA_HEADER_LEN..len];
            let name = value.split(|&byte| byte == 0).next().unwrap_or_default();
            return Ok(Some(RootQdisc {
                kind: String::from_utf8_lossy(name).into_owned(),
                handle,
            }));
        }
        attributes = &attributes[align(len).min(attributes.len())..];
    }
    Ok(None)
}

fn u32_at(bytes: &[u8], at: usize) -> io::Result<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| invalid("short netlink message"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads the `NLMSG_ERROR` reply: error 0 is the acknowledgement, anything else a negated errno.
fn acknowledgement(reply: &[u8]) -> io::Result<()> {
    let message_type = u16::from_ne_bytes(
        reply
            .get(4..6)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| invalid("short netlink reply"))?,
    );
    if i32::from(message_type) != libc::NLMSG_ERROR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected netlink reply of type {message_type}"),
        ));
    }
    match u32_at(reply, NLMSG_HEADER_LEN)?.cast_signed() {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(-errno)),
    }
}
