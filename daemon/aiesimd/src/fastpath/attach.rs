//! Attaching the classifier to an interface, and taking it off again.

use std::fmt;

use aiesim_fastpath_common::{PROGRAM_EGRESS, PROGRAM_INGRESS};
use aya::{
    programs::{
        LinkOrder, ProgramError, TcAttachType,
        links::Link as _,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError},
    },
    util::KernelVersion,
};

use super::{Classifier, ClassifierError, clsact};

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
}

/// What was hooked into one interface; dropping it undoes all of it.
pub(super) struct Attachment {
    iface: String,
    mode: AttachMode,
    links: Vec<(&'static str, SchedClassifierLink)>,
    /// Set only when this attachment created the qdisc, so a pre-existing one is left alone.
    clsact: Option<clsact::Qdisc>,
}

pub(super) fn attach(classifier: &mut Classifier, iface: &str, mode: AttachMode) -> Result<Attachment, AttachError> {
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
    };
    if mode == AttachMode::Clsact {
        match tc::qdisc_add_clsact(iface) {
            Ok(()) => attachment.clsact = Some(clsact::Qdisc::new(ifindex)),
            Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(error) => return Err(AttachError::AddClsact(error)),
        }
    }
    for (program, hook) in [
        (PROGRAM_EGRESS, TcAttachType::Egress),
        (PROGRAM_INGRESS, TcAttachType::Ingress),
    ] {
        let classifier = classifier.program_mut(program).map_err(AttachError::Program)?;
        let options = match mode {
            AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
            AttachMode::Clsact => TcAttachOptions::Netlink(NlOptions::default()),
        };
        let link = classifier
            .attach_with_options(iface, hook, options)
            .and_then(|id| classifier.take_link(id))
            .map_err(|source| AttachError::Attach { program, source })?;
        attachment.links.push((program, link));
    }
    Ok(attachment)
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
        for (program, link) in self.links.drain(..) {
            if let Err(source) = link.detach() {
                result = result.and(Err(AttachError::Detach { program, source }));
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
