//! Attaching the classifier to an interface, and taking it off again.

use std::{fmt, os::fd::AsFd as _, path::PathBuf};

use aiesim_fastpath_common::{PROGRAM_EGRESS, PROGRAM_INGRESS};
use aya::{
    pin::PinError,
    programs::{
        LinkOrder, ProgramError, TcAttachType,
        links::{FdLink, Link as _, LinkError},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError},
    },
    util::KernelVersion,
};

use super::{Classifier, ClassifierError, clsact, pins, pins::Pins};

/// How the classifier hooks into the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// BPF links on the TCX hooks (Linux 6.6+): no qdisc, owned by this process.
    Tcx,
    /// `cls_bpf` filters in direct-action mode under a `clsact` qdisc, for older kernels.
    Clsact,
}

impl AttachMode {
    /// TCX when the running kernel has it (6.6 or later), clsact otherwise.
    pub fn detect() -> Self {
        match KernelVersion::current() {
            Ok(version) if version >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Clsact,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("no network interface named {iface}")]
    NoInterface {
        iface: String,
        #[source]
        source: nix::Error,
    },
    #[error("failed to add a clsact qdisc")]
    AddClsact(#[source] TcError),
    #[error("the classifier is not available")]
    Program(#[source] ClassifierError),
    #[error("failed to attach {program}")]
    Attach {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to detach {program}")]
    Detach {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to remove the clsact qdisc")]
    RemoveClsact(#[source] std::io::Error),
    #[error("the link of {program} cannot be pinned")]
    NotPinnable {
        program: &'static str,
        #[source]
        source: LinkError,
    },
    #[error("failed to pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("failed to unpin {path}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One hook's link: held by this process, or by a pin in bpffs (which outlives it).
enum Hook {
    Owned(SchedClassifierLink),
    Pinned(PathBuf),
}

/// What was hooked into one interface; dropping it undoes all of it.
pub(super) struct Attachment {
    iface: String,
    mode: AttachMode,
    links: Vec<(&'static str, Hook)>,
    /// Set only when this attachment created the qdisc, so a pre-existing one is left alone.
    clsact: Option<clsact::Qdisc>,
    /// Pinned links stay when this attachment is undone.
    keep_pins: bool,
}

pub(super) fn attach(
    classifier: &mut Classifier,
    iface: &str,
    mode: AttachMode,
    pins: Option<&Pins>,
) -> Result<Attachment, AttachError> {
    let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|source| AttachError::NoInterface {
        iface: iface.to_owned(),
        source,
    })?;
    // Filled in step by step so that an error half-way drops, and undoes, what was done.
    let mut attachment = Attachment {
        iface: iface.to_owned(),
        mode,
        links: Vec::with_capacity(2),
        clsact: None,
        keep_pins: pins.is_some_and(Pins::keep_on_stop),
    };
    // Only TCX links can be pinned; clsact filters belong to the qdisc.
    let pins = pins.filter(|_| mode == AttachMode::Tcx);
    if mode == AttachMode::Clsact {
        match tc::qdisc_add_clsact(iface) {
            Ok(()) => attachment.clsact = Some(clsact::Qdisc::new(ifindex)),
            Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(error) => return Err(AttachError::AddClsact(error)),
        }
    }
    for (program, hook, side) in [
        (PROGRAM_EGRESS, TcAttachType::Egress, "egress"),
        (PROGRAM_INGRESS, TcAttachType::Ingress, "ingress"),
    ] {
        let pin = pins.map(|pins| pins.link(&format!("tcx-{iface}-{side}")));
        if let Some(path) = &pin {
            if take_over(classifier, program, path) {
                tracing::info!(iface, program, "fast-path link taken over from the last run");
                attachment.links.push((program, Hook::Pinned(path.clone())));
                continue;
            }
        }
        let classifier = classifier.program_mut(program).map_err(AttachError::Program)?;
        let options = match mode {
            AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
            AttachMode::Clsact => TcAttachOptions::Netlink(NlOptions::default()),
        };
        let link = classifier
            .attach_with_options(iface, hook, options)
            .and_then(|id| classifier.take_link(id))
            .map_err(|source| AttachError::Attach { program, source })?;
        let hooked = match pin {
            Some(path) => {
                pin_link(
                    FdLink::try_from(link).map_err(|source| AttachError::NotPinnable { program, source })?,
                    &path,
                )?;
                Hook::Pinned(path)
            }
            None => Hook::Owned(link),
        };
        attachment.links.push((program, hooked));
    }
    Ok(attachment)
}

/// Points the link pinned at `path`, if any, at our `program`; false when there is none to
/// take over (a stale pin is removed).
pub(super) fn take_over(classifier: &Classifier, program: &'static str, path: &std::path::Path) -> bool {
    if !path.exists() {
        return false;
    }
    let updated = classifier
        .program_fd(program)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|fd| pins::open(path).and_then(|link| pins::update(link.as_fd(), fd)));
    match updated {
        Ok(()) => true,
        Err(error) => {
            // The interface went away with its link, or the pin is no link of ours.
            tracing::info!(path = %path.display(), %error, "a pinned link could not be taken over; attaching anew");
            let _ = pins::unpin(path);
            false
        }
    }
}

/// Pins `link` at `path`; the pin then holds it, not this process.
pub(super) fn pin_link(link: FdLink, path: &std::path::Path) -> Result<(), AttachError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| AttachError::Unpin {
            path: dir.to_owned(),
            source,
        })?;
    }
    link.pin(path).map(drop).map_err(|source| AttachError::Pin {
        path: path.to_owned(),
        source,
    })
}

impl Attachment {
    pub(super) fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Detaches everything, returning the first failure after trying all of it.
    pub(super) fn detach(mut self) -> Result<(), AttachError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), AttachError> {
        if self.links.is_empty() && self.clsact.is_none() {
            return Ok(());
        }
        let mut result = Ok(());
        for (program, hook) in self.links.drain(..) {
            match hook {
                Hook::Owned(link) => {
                    if let Err(source) = link.detach() {
                        result = result.and(Err(AttachError::Detach { program, source }));
                    }
                }
                Hook::Pinned(_) if self.keep_pins => {}
                Hook::Pinned(path) => {
                    if let Err(source) = pins::unpin(&path) {
                        result = result.and(Err(AttachError::Unpin { path, source }));
                    }
                }
            }
        }
        if let Some(qdisc) = self.clsact.take() {
            if let Err(error) = qdisc.remove() {
                result = result.and(Err(AttachError::RemoveClsact(error)));
            }
        }
        if result.is_ok() {
            tracing::info!(iface = self.iface, mode = %self.mode, "fast-path classifier detached");
        }
        result
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Err(error) = self.undo() {
            tracing::warn!(
                iface = self.iface,
                error = &error as &dyn std::error::Error,
                "failed to detach the fast-path classifier"
            );
        }
    }
}
