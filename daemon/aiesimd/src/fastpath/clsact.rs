//! Removing the `clsact` qdisc this process added (aya can add one, not remove it).

use std::io;

use super::netlink::{self, Attributes, TcMsg};

/// `TC_H_CLSACT`: the clsact qdisc's parent id.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: the handle clsact always has.
const CLSACT_HANDLE: u32 = 0xffff_0000;

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
        let qdisc = TcMsg {
            ifindex: self.ifindex,
            handle: CLSACT_HANDLE,
            parent: TC_H_CLSACT,
        };
        match netlink::request(libc::RTM_DELQDISC, 0, qdisc, &Attributes::default()) {
            Err(error) if matches!(error.raw_os_error(), Some(libc::ENODEV | libc::ENOENT)) => Ok(()),
            result => result,
        }
    }
}
