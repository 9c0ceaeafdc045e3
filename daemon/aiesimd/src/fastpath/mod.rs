//! The fast path: the BPF classifier on the cellular interface.
//!
//! [`Fastpath`] loads the classifier embedded at build time, attaches it on egress and ingress of
//! one interface (TCX on kernels that have it, `clsact` + `cls_bpf` before), and detaches it on drop.
//! It counts packets and bytes per direction, recognises traffic to or from the configured AI
//! endpoints and gives egress AI packets their own `skb->priority`. [`Classifier`] is the same
//! program loaded but not attached, for `BPF_PROG_TEST_RUN` tests and benchmarks. With
//! [`Fastpath::watch_apps`] it also counts apps' own AI traffic per cgroup (`apps`); with
//! [`Fastpath::mark_own_sockets`], aiesimd's own sockets are AI wherever they go (`own`).

mod apps;
mod attach;
mod clsact;
mod maps;
pub mod names;
mod netlink;
mod object;
mod own;
mod pins;
mod shaper;

use std::{net::SocketAddr, path::Path};

pub use aiesim_fastpath_common::Direction;

pub use self::{
    apps::{AppStatistics, AppsError, OVERFLOW_APP},
    attach::{AttachError, AttachMode},
    maps::{AiDestination, EndpointStatistics, MapsError, UNLISTED_DESTINATION, UnlistedStatistics},
    object::{Classifier, ClassifierError, DEFAULT_AI_PRIORITY, TestProgram, TestRunOutcome},
    own::{OwnCgroupError, own_cgroup},
    pins::Pins,
    shaper::{BULK_CLASS, INTERACTIVE_CLASS, ShaperError, Shaping, UPLINK_KBIT_RANGE, UplinkRate},
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
    #[error("failed to shape the uplink")]
    Shape(#[from] ShaperError),
    #[error("failed to count apps' own AI traffic")]
    Apps(#[source] Box<AppsError>),
}

impl From<AppsError> for FastpathError {
    fn from(error: AppsError) -> Self {
        Self::Apps(Box::new(error))
    }
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
    /// The per-app counting programs, when a cgroup is watched.
    apps: Option<apps::AppWatch>,
    /// Unpins the maps once the hooks are gone (declared after them), unless they are kept.
    pinned_maps: Option<PinnedMaps>,
    /// The root qdisc this fast path installed, if any.
    shaper: Option<shaper::Shaper>,
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
        Self::attach_pinned(iface, mode, None)
    }

    /// Like [`Fastpath::attach_with`], pinning maps and links under `pins` when given: what a
    /// previous run (of the same BPF object) pinned is taken over without a gap, counters and
    /// all; a clean stop unpins everything unless `pins` says to keep it.
    pub fn attach_pinned(iface: &str, mode: AttachMode, pins: Option<Pins>) -> Result<Self, FastpathError> {
        let (mut classifier, pins) = match pins {
            Some(pins) => match Classifier::load_pinned(&pins) {
                Ok(classifier) => (classifier, Some(pins)),
                // No bpffs there, or not ours to write: run unpinned rather than not at all.
                Err(e @ ClassifierError::PinDirectory { .. }) => {
                    tracing::warn!(error = %crate::broker::chain(&e), "the fast path is not pinned: a restart will re-attach it");
                    (Classifier::load()?, None)
                }
                Err(e) => return Err(e.into()),
            },
            None => (Classifier::load()?, None),
        };
        let pinned_maps = pins.map(PinnedMaps);
        let attachment =
            attach::attach(&mut classifier, iface, mode, pinned_maps.as_ref().map(|p| &p.0)).map_err(|source| {
                FastpathError::Attach {
                    iface: iface.to_owned(),
                    source: Box::new(source),
                }
            })?;
        let l2_len = link_header_len(iface).map_err(|source| FastpathError::Attach {
            iface: iface.to_owned(),
            source: Box::new(AttachError::NoInterface {
                iface: iface.to_owned(),
                source,
            }),
        })?;
        classifier.set_l2_len(l2_len)?;
        tracing::info!(iface, mode = %mode, l2_len, "fast-path classifier attached");
        Ok(Self {
            attachment,
            apps: None,
            pinned_maps,
            shaper: None,
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

    /// The traffic of each AI destination since it was configured.
    pub fn endpoint_statistics(&self) -> Result<Vec<EndpointStatistics>, FastpathError> {
        Ok(self.classifier.endpoint_statistics()?)
    }

    /// aiesimd's own traffic to destinations not listed, while its sockets are marked.
    pub fn unlisted_statistics(&self) -> Result<UnlistedStatistics, FastpathError> {
        Ok(self.classifier.unlisted_statistics()?)
    }

    /// Makes the sockets of cgroup `id` (aiesimd's, from [`own_cgroup`]) AI wherever they
    /// connect, replies included; `None` turns it off.
    pub fn mark_own_sockets(&mut self, id: Option<u64>) -> Result<(), FastpathError> {
        Ok(self.classifier.set_own_cgroup(id.unwrap_or(0))?)
    }

    /// Whether aiesimd's own sockets are marked.
    pub fn marks_own_sockets(&self) -> bool {
        self.classifier.own_cgroup().is_ok_and(|id| id != 0)
    }

    /// Counts the AI traffic of every socket in the cgroup subtree `cgroup` (a cgroup v2
    /// directory, e.g. `/sys/fs/cgroup`) per app, against the same destinations.
    pub fn watch_apps(&mut self, cgroup: &Path) -> Result<(), FastpathError> {
        if let Some(old) = self.apps.take() {
            old.detach()?;
        }
        let pins = self.pinned_maps.as_ref().map(|p| &p.0);
        self.apps = Some(apps::watch(&mut self.classifier, cgroup, pins)?);
        Ok(())
    }

    /// The cgroup subtree whose apps are counted, if any.
    pub fn watched_cgroup(&self) -> Option<&Path> {
        self.apps.as_ref().map(apps::AppWatch::cgroup)
    }

    /// Each app's own AI traffic since counting began, by app id; empty unless a cgroup is
    /// watched.
    pub fn app_statistics(&self) -> Result<Vec<AppStatistics>, FastpathError> {
        match &self.apps {
            Some(watch) => Ok(watch.statistics(&self.classifier)?),
            None => Ok(Vec::new()),
        }
    }

    /// Replaces the set of AI destinations (prefixes with a port); each matches TCP and UDP.
    pub fn set_ai_destinations(&mut self, destinations: &[AiDestination]) -> Result<(), FastpathError> {
        Ok(self.classifier.set_ai_destinations(destinations)?)
    }

    /// Replaces the set of AI endpoints; each address matches both TCP and UDP.
    pub fn set_ai_endpoints(&mut self, endpoints: &[SocketAddr]) -> Result<(), FastpathError> {
        Ok(self.classifier.set_ai_endpoints(endpoints)?)
    }

    /// Sets the DSCP of egress AI packets (e.g. 34, AF41); `None` leaves it alone.
    pub fn set_ai_dscp(&mut self, dscp: Option<u8>) -> Result<(), FastpathError> {
        Ok(self.classifier.set_ai_dscp(dscp)?)
    }

    /// Sets the `skb->priority` of egress AI packets (an HTB class id, or a `TC_PRIO_*` band);
    /// 0 leaves their priority alone.
    pub fn set_ai_priority(&mut self, priority: u32) -> Result<(), FastpathError> {
        Ok(self.classifier.set_ai_priority(priority)?)
    }

    /// Installs AI-first shaping (an HTB root qdisc at the uplink rate) on the interface and
    /// sends egress AI packets to its interactive class. Returns false, changing nothing, when a
    /// root qdisc someone configured is there already: it is left alone.
    pub fn shape(&mut self, shaping: Shaping) -> Result<bool, FastpathError> {
        let ifindex = nix::net::if_::if_nametoindex(self.iface.as_str()).map_err(|errno| ShaperError::Query {
            iface: self.iface.clone(),
            source: errno.into(),
        })?;
        if let Some(old) = self.shaper.take() {
            old.remove()?;
        }
        self.shaper = shaper::install(&self.iface, ifindex, shaping)?;
        let priority = if self.shaper.is_some() {
            INTERACTIVE_CLASS
        } else {
            DEFAULT_AI_PRIORITY
        };
        self.classifier.set_ai_priority(priority)?;
        Ok(self.shaper.is_some())
    }

    /// Whether this fast path installed the shaper on its interface.
    pub fn shaped(&self) -> bool {
        self.shaper.is_some()
    }

    /// The rate the shaper releases packets at (kbit/s), if this fast path shapes.
    pub fn uplink_kbit(&self) -> Option<u32> {
        self.shaper.as_ref().map(shaper::Shaper::uplink_kbit)
    }

    /// Moves the shaper to a new rate in place (queued packets stay), installing it if it is
    /// not there yet; false, as [`Fastpath::shape`], when someone else's root qdisc is there.
    pub fn set_uplink(&mut self, uplink_kbit: u32) -> Result<bool, FastpathError> {
        match &mut self.shaper {
            Some(shaper) => {
                shaper.set_rate(uplink_kbit)?;
                Ok(true)
            }
            None => self.shape(Shaping { uplink_kbit }),
        }
    }

    /// Detaches now, reporting failures that dropping would only log.
    pub fn detach(self) -> Result<(), FastpathError> {
        let Self {
            attachment,
            apps,
            pinned_maps,
            shaper,
            classifier: _,
            iface,
        } = self;
        let detached = attachment.detach().map_err(|source| FastpathError::Detach {
            iface,
            source: Box::new(source),
        });
        let unwatched = apps.map_or(Ok(()), apps::AppWatch::detach);
        let detached = detached.and(unwatched.map_err(FastpathError::from));
        drop(pinned_maps);
        let unshaped = shaper.map_or(Ok(()), shaper::Shaper::remove);
        detached.and(unshaped.map_err(FastpathError::from))
    }
}

/// The pinned maps of a fast path; dropping it unpins them, unless they are to be kept.
struct PinnedMaps(Pins);

impl Drop for PinnedMaps {
    fn drop(&mut self) {
        if self.0.keep_on_stop() {
            return;
        }
        if let Err(error) = Classifier::unpin_maps(&self.0) {
            tracing::warn!(dir = %self.0.dir().display(), %error, "cannot unpin the fast-path maps");
        }
    }
}

// The D-Bus front end keeps a Fastpath in its objects and behind a tokio Mutex.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Fastpath>();
};

/// The bytes before the IP header on `iface`: an Ethernet header, or none on raw-IP devices
/// (TUN, rmnet, wwan). Asked of the kernel through a socket, which sees the calling thread's
/// network namespace (sysfs may show another).
fn link_header_len(iface: &str) -> Result<u32, nix::Error> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

    let socket = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain data; zero is a valid value for all of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= request.ifr_name.len() {
        return Err(nix::Error::ENODEV);
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(iface.bytes()) {
        // c_char is i8 on x86_64 and u8 on aarch64.
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    // SAFETY: SIOCGIFHWADDR reads and fills an ifreq, which `request` is.
    let ret = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SIOCGIFHWADDR,
            &raw mut request,
        )
    };
    nix::Error::result(ret)?;
    // SAFETY: the ioctl filled the hardware address member.
    let family = unsafe { request.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(if family == libc::ARPHRD_ETHER {
        aiesim_fastpath_common::ETHERNET_HEADER_LEN
    } else {
        0
    })
}
