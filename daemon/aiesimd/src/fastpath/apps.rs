//! Apps' own AI traffic: the `cgroup_skb` programs on a cgroup subtree count the AI packets of
//! every socket in it per cgroup id, which is named here as the app id `identity` gives callers.
//!
//! TC on the cellular interface sees no socket on ingress, so it cannot say whose a packet is;
//! the cgroup hooks run at the socket on both sides (as Android's netd counts per uid).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aiesim_fastpath_common::{
    AppCounters, Direction, MAP_APP_STATS, OVERFLOW_CGROUP, PROGRAM_APP_EGRESS, PROGRAM_APP_INGRESS,
};
use aya::{
    maps::{MapError, PerCpuHashMap, PerCpuValues},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, cgroup_skb::CgroupSkbLink, links::Link as _,
    },
    util::KernelVersion,
};

use super::{
    Classifier, ClassifierError,
    attach::{AttachError, pin_link, take_over},
    pins::{self, Pins},
};

/// App id of the counts of cgroups that found the per-cgroup map full.
pub const OVERFLOW_APP: &str = "(more apps than the fast path counts apart)";

#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("cannot open the cgroup {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the per-app counting programs are not available")]
    Program(#[source] ClassifierError),
    #[error("{name} in the BPF object is not a cgroup_skb program")]
    NotCgroupSkb {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the kernel refused to load {name}")]
    Load {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to attach {name} to the cgroup {path}")]
    Attach {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error("failed to detach {name} from the cgroup {path}")]
    Detach {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error("the map {MAP_APP_STATS} is missing or has another layout")]
    Layout(#[source] Option<MapError>),
    #[error("failed to access the map {MAP_APP_STATS}")]
    Map(#[source] MapError),
    #[error("cannot pin the per-app counting programs")]
    Pin(#[source] Box<AttachError>),
    #[error("the link of {name} cannot be pinned")]
    NotPinnable {
        name: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("failed to unpin {path}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot count the CPUs ({what})")]
    Cpus {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// One app's own AI traffic (its sockets, all its cgroups) since counting began: IP packets and
/// their lengths (no link-layer header).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppStatistics {
    pub app: String,
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
}

/// The counting programs attached to one cgroup subtree; dropping it detaches them.
pub(super) struct AppWatch {
    cgroup: PathBuf,
    links: Vec<(&'static str, Hook)>,
    /// Pinned links stay when this watch is undone.
    keep_pins: bool,
    /// App ids of the cgroups seen so far, kept after a cgroup is gone so its counts keep a name.
    names: Mutex<HashMap<u64, String>>,
}

/// One hook's link: held by this process, or by a pin in bpffs (which outlives it).
enum Hook {
    Owned(CgroupSkbLink),
    Pinned(PathBuf),
}

pub(super) fn watch(classifier: &mut Classifier, cgroup: &Path, pins: Option<&Pins>) -> Result<AppWatch, AppsError> {
    let dir = File::open(cgroup).map_err(|source| AppsError::Open {
        path: cgroup.to_owned(),
        source,
    })?;
    classifier.ensure_overflow_entry()?;
    let mut watch = AppWatch {
        cgroup: cgroup.to_owned(),
        links: Vec::with_capacity(2),
        keep_pins: pins.is_some_and(Pins::keep_on_stop),
        names: Mutex::new(HashMap::new()),
    };
    for (name, hook, side) in [
        (PROGRAM_APP_EGRESS, CgroupSkbAttachType::Egress, "egress"),
        (PROGRAM_APP_INGRESS, CgroupSkbAttachType::Ingress, "ingress"),
    ] {
        classifier.cgroup_program(name)?;
        // Named after the cgroup, so a pin on another cgroup is never taken for this one.
        let pin = pins.map(|pins| pins.link(&format!("cgroup{}-{side}", cgroup.display()).replace('/', "_")));
        if let Some(path) = &pin {
            if take_over(classifier, name, path) {
                watch.links.push((name, Hook::Pinned(path.clone())));
                continue;
            }
        }
        let program = classifier.cgroup_program(name)?;
        let link = program
            .attach(&dir, hook, attach_mode())
            .and_then(|id| program.take_link(id))
            .map_err(|source| AppsError::Attach {
                name,
                path: cgroup.to_owned(),
                source,
            })?;
        let hooked = match pin {
            Some(path) => {
                let link = aya::programs::links::FdLink::try_from(link)
                    .map_err(|source| AppsError::NotPinnable { name, source })?;
                pin_link(link, &path).map_err(|e| AppsError::Pin(Box::new(e)))?;
                Hook::Pinned(path)
            }
            None => Hook::Owned(link),
        };
        watch.links.push((name, hooked));
    }
    tracing::info!(cgroup = %cgroup.display(), "per-app AI traffic counted");
    Ok(watch)
}

/// Multi mode, so systemd's IP accounting and firewalling programs stay in force beside ours.
/// aya attaches through a BPF link from Linux 5.7, which is always multi and refuses the flag.
fn attach_mode() -> CgroupAttachMode {
    if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 7, 0)) {
        CgroupAttachMode::Single
    } else {
        CgroupAttachMode::AllowMultiple
    }
}

impl AppWatch {
    pub(super) fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Detaches both programs, returning the first failure after trying both.
    pub(super) fn detach(mut self) -> Result<(), AppsError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), AppsError> {
        let mut result = Ok(());
        for (name, hook) in self.links.drain(..) {
            match hook {
                Hook::Owned(link) => {
                    if let Err(source) = link.detach() {
                        result = result.and(Err(AppsError::Detach {
                            name,
                            path: self.cgroup.clone(),
                            source,
                        }));
                    }
                }
                Hook::Pinned(_) if self.keep_pins => {}
                Hook::Pinned(path) => {
                    if let Err(source) = pins::unpin(&path) {
                        result = result.and(Err(AppsError::Unpin { path, source }));
                    }
                }
            }
        }
        result
    }

    /// Sums each cgroup's counters into its app's.
    pub(super) fn statistics(&self, classifier: &Classifier) -> Result<Vec<AppStatistics>, AppsError> {
        let counts = classifier.app_counters()?;
        let mut names = self.names.lock().expect("cgroup names");
        if counts
            .iter()
            .any(|(id, _)| *id != OVERFLOW_CGROUP && !names.contains_key(id))
        {
            match crate::identity::cgroup_apps(&self.cgroup) {
                Ok(found) => names.extend(found),
                Err(reason) => {
                    tracing::warn!(cgroup = %self.cgroup.display(), reason, "cannot name the counted cgroups");
                }
            }
        }
        let mut apps: BTreeMap<String, AppStatistics> = BTreeMap::new();
        for (id, counters) in counts {
            let app = match names.get(&id) {
                _ if id == OVERFLOW_CGROUP => OVERFLOW_APP.to_owned(),
                Some(app) => app.clone(),
                // Came and went between two reads.
                None => format!("cgroup-{id}"),
            };
            let entry = apps.entry(app.clone()).or_insert_with(|| AppStatistics {
                app,
                ..AppStatistics::default()
            });
            let [egress, ingress] = counters.directions;
            entry.egress_packets = entry.egress_packets.wrapping_add(egress.packets);
            entry.egress_bytes = entry.egress_bytes.wrapping_add(egress.bytes);
            entry.ingress_packets = entry.ingress_packets.wrapping_add(ingress.packets);
            entry.ingress_bytes = entry.ingress_bytes.wrapping_add(ingress.bytes);
        }
        Ok(apps
            .into_values()
            .filter(|a| a.egress_packets != 0 || a.ingress_packets != 0)
            .collect())
    }
}

impl Drop for AppWatch {
    fn drop(&mut self) {
        if let Err(error) = self.undo() {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "failed to stop counting per app"
            );
        }
    }
}

impl Classifier {
    /// The loaded `cgroup_skb` program `name`, loading it on first use.
    fn cgroup_program(&mut self, name: &'static str) -> Result<&mut CgroupSkb, AppsError> {
        let program: &mut CgroupSkb = self
            .ebpf
            .program_mut(name)
            .ok_or(AppsError::Program(ClassifierError::MissingProgram(name)))?
            .try_into()
            .map_err(|source| AppsError::NotCgroupSkb { name, source })?;
        if program.fd().is_err() {
            program.load().map_err(|source| AppsError::Load { name, source })?;
        }
        Ok(program)
    }

    /// Creates the entry cgroups count under once the map is full.
    fn ensure_overflow_entry(&mut self) -> Result<(), AppsError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, source)| AppsError::Cpus { what, source })?;
        let mut map: PerCpuHashMap<_, u64, AppCounters> =
            PerCpuHashMap::try_from(self.ebpf.map_mut(MAP_APP_STATS).ok_or(AppsError::Layout(None))?)
                .map_err(|e| AppsError::Layout(Some(e)))?;
        if map.get(&OVERFLOW_CGROUP, 0).is_ok() {
            return Ok(());
        }
        let zeroes = PerCpuValues::try_from(vec![AppCounters::default(); cpus]).map_err(|source| AppsError::Cpus {
            what: "per-CPU values",
            source,
        })?;
        map.insert(OVERFLOW_CGROUP, zeroes, 0).map_err(AppsError::Map)
    }

    /// Each counted cgroup's counters, summed over the CPUs.
    fn app_counters(&self) -> Result<Vec<(u64, AppCounters)>, AppsError> {
        let map: PerCpuHashMap<_, u64, AppCounters> =
            PerCpuHashMap::try_from(self.ebpf.map(MAP_APP_STATS).ok_or(AppsError::Layout(None))?)
                .map_err(|e| AppsError::Layout(Some(e)))?;
        map.iter()
            .map(|entry| {
                let (id, per_cpu) = entry.map_err(AppsError::Map)?;
                let mut total = AppCounters::default();
                for cpu in per_cpu.iter() {
                    for direction in Direction::ALL {
                        let (sum, add) = (
                            &mut total.directions[direction as usize],
                            cpu.directions[direction as usize],
                        );
                        sum.packets = sum.packets.wrapping_add(add.packets);
                        sum.bytes = sum.bytes.wrapping_add(add.bytes);
                    }
                }
                Ok((id, total))
            })
            .collect()
    }
}
