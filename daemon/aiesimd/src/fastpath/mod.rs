//! The fast path: the BPF classifier on the cellular interface.
//!
//! [`Fastpath`] loads the classifier embedded at build time, attaches it on egress and ingress of
//! one interface (TCX on kernels that have it, `clsact` + `cls_bpf` before), and detaches it on drop.
//! It counts packets and bytes per direction, recognises traffic to or from the configured AI
//! endpoints and gives egress AI packets their own `skb->priority`. [`Classifier`] is the same
//! program loaded but not attached, for `BPF_PROG_TEST_RUN` tests and benchmarks.

mod attach;
mod clsact;
mod maps;
mod object;

use std::net::SocketAddr;

pub use aiesim_fastpath_common::Direction;

pub use self::{
    attach::{AttachError, AttachMode},
    maps::MapsError,
    object::{Classifier, ClassifierError, DEFAULT_AI_PRIORITY, TestProgram, TestRunOutcome},
};

#[derive(Debug, thiserror::Error)]
pub enum FastpathError {
    #[error("failed to load the fast-path classifier")]
    Load(#[from] ClassifierError),
    #[error("failed to attach the fast-path classifier to {iface}")]
    Attach {
        iface: String,
        // Boxed: aya's errors are large and this enum is returned on every call.
        #[source]
        source: Box<AttachError>,
    },
    #[error("failed to detach the fast-path classifier from {iface}")]
    Detach {
        iface: String,
        #[source]
        source: Box<AttachError>,
    },
    #[error("failed to access the fast-path maps")]
    Maps(#[from] MapsError),
}

/// Counters since the classifier was attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    pub ai_packets: u64,
    pub ai_bytes: u64,
}

/// The classifier attached to one interface; dropping it detaches it.
pub struct Fastpath {
    // Declared first so it is dropped first: the hooks go before the programs and maps close.
    attachment: attach::Attachment,
    classifier: Classifier,
    iface: String,
}

impl Fastpath {
    /// Loads the classifier and attaches it to `iface`, using TCX when the kernel has it.
    pub fn attach(iface: &str) -> Result<Self, FastpathError> {
        Self::attach_with(iface, AttachMode::detect())
    }

    /// Like [`Fastpath::attach`], with the attachment mechanism chosen by the caller.
    pub fn attach_with(iface: &str, mode: AttachMode) -> Result<Self, FastpathError> {
        let mut classifier = Classifier::load()?;
        let attachment = attach::attach(&mut classifier, iface, mode).map_err(|source| FastpathError::Attach {
            iface: iface.to_owned(),
            source: Box::new(source),
        })?;
        tracing::info!(iface, mode = %mode, "fast-path classifier attached");
        Ok(Self {
            attachment,
            classifier,
            iface: iface.to_owned(),
        })
    }

    pub fn interface(&self) -> &str {
        &self.iface
    }

    pub fn attach_mode(&self) -> AttachMode {
        self.attachment.mode()
    }

    pub fn statistics(&self) -> Result<Statistics, FastpathError> {
        Ok(self.classifier.statistics()?)
    }

    /// Replaces the set of AI endpoints; each address matches both TCP and UDP.
    pub fn set_ai_endpoints(&mut self, endpoints: &[SocketAddr]) -> Result<(), FastpathError> {
        Ok(self.classifier.set_ai_endpoints(endpoints)?)
    }

    /// Sets the `skb->priority` of egress AI packets (an HTB class id, or a `TC_PRIO_*` band);
    /// 0 leaves their priority alone.
    pub fn set_ai_priority(&mut self, priority: u32) -> Result<(), FastpathError> {
        Ok(self.classifier.set_ai_priority(priority)?)
    }

    /// Detaches now, reporting failures that dropping would only log.
    pub fn detach(self) -> Result<(), FastpathError> {
        let Self {
            attachment,
            classifier: _,
            iface,
        } = self;
        attachment.detach().map_err(|source| FastpathError::Detach {
            iface,
            source: Box::new(source),
        })
    }
}

// The D-Bus front end keeps a Fastpath in its objects and behind a tokio Mutex.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Fastpath>();
};
