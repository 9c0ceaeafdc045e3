//! Loading the BPF object that build.rs embeds, and running its programs on test packets.

use std::time::Duration;

use aiesim_fastpath_common::{
    ETHERNET_HEADER_LEN, MAP_AI_DESTINATIONS, MAP_AI_EXACT, MAP_AI_FILTER, MAP_APP_STATS, MAP_CONFIG,
    MAP_ENDPOINT_STATS, MAP_LAST_OWN_FLOW, MAP_OWN_FILTER, MAP_OWN_FLOWS, MAP_STATS, PROGRAM_BASELINE, PROGRAM_EGRESS,
    PROGRAM_INGRESS,
};
use aya::{
    Ebpf, EbpfError, EbpfLoader, TestRun as _, TestRunOptions,
    programs::{ProgramError, SchedClassifier},
};

use super::{
    maps::{MapsError, Slot},
    pins::Pins,
};

/// Every map of the object: all are pinned when the fast path pins.
const MAPS: [&str; 10] = [
    MAP_STATS,
    MAP_AI_DESTINATIONS,
    MAP_AI_EXACT,
    MAP_ENDPOINT_STATS,
    MAP_AI_FILTER,
    MAP_CONFIG,
    MAP_APP_STATS,
    MAP_OWN_FLOWS,
    MAP_OWN_FILTER,
    MAP_LAST_OWN_FLOW,
];

/// The classifier object, built from `ebpf/program` by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/aiesim-fastpath"));

/// `TC_PRIO_INTERACTIVE`: the first band of `pfifo_fast`, until an HTB class id replaces it.
pub const DEFAULT_AI_PRIORITY: u32 = 6;

/// Room for the kernel's `struct __sk_buff`, which grows over kernel versions.
const SKB_CONTEXT_LEN: usize = 512;
/// Byte offset of `priority` in `struct __sk_buff` (stable UAPI).
const SKB_PRIORITY_OFFSET: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("aiesimd was built without its BPF program (AYA_BUILD_SKIP was set)")]
    NotBuilt,
    #[error("failed to parse the embedded BPF object")]
    Parse(#[source] EbpfError),
    #[error("the BPF object has no classifier named {0}")]
    MissingProgram(&'static str),
    #[error("{name} in the BPF object is not a TC classifier")]
    NotClassifier {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the kernel refused to load the classifier {name}")]
    LoadProgram {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to configure the classifier")]
    Configure(#[source] MapsError),
    #[error("cannot make the pin directory {path}")]
    PinDirectory {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("BPF_PROG_TEST_RUN of {name} failed")]
    TestRun {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// Which program of the object [`Classifier::test_run`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestProgram {
    Egress,
    Ingress,
    /// A classifier that only returns: the reference cost for benchmarks.
    Baseline,
}

impl TestProgram {
    const fn name(self) -> &'static str {
        match self {
            Self::Egress => PROGRAM_EGRESS,
            Self::Ingress => PROGRAM_INGRESS,
            Self::Baseline => PROGRAM_BASELINE,
        }
    }
}

/// What one `BPF_PROG_TEST_RUN` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value (`TC_ACT_UNSPEC` is -1).
    pub verdict: i32,
    /// `skb->priority` after the program ran.
    pub priority: u32,
    /// Mean time per run, as measured by the kernel.
    pub duration: Duration,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

/// The classifier loaded into the kernel, with its maps, attached nowhere.
pub struct Classifier {
    pub(super) ebpf: Ebpf,
    /// The AI destinations by their index in the per-endpoint counters.
    pub(super) slots: Vec<Option<Slot>>,
}

impl Classifier {
    /// Loads the embedded object and both direction classifiers, with the default configuration.
    pub fn load() -> Result<Self, ClassifierError> {
        if OBJECT.is_empty() {
            return Err(ClassifierError::NotBuilt);
        }
        let ebpf = Ebpf::load(OBJECT).map_err(ClassifierError::Parse)?;
        Self::with(ebpf)
    }

    /// Like [`Classifier::load`], with the maps pinned under `pins`: those a previous run of the
    /// same object pinned are taken over, counters, destinations and all.
    pub fn load_pinned(pins: &Pins) -> Result<Self, ClassifierError> {
        if OBJECT.is_empty() {
            return Err(ClassifierError::NotBuilt);
        }
        let dir = pins.maps(OBJECT);
        let reused = dir.is_dir();
        std::fs::create_dir_all(&dir).map_err(|source| ClassifierError::PinDirectory {
            path: dir.clone(),
            source,
        })?;
        let mut loader = EbpfLoader::new();
        for name in MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
        let ebpf = loader.load(OBJECT).map_err(ClassifierError::Parse)?;
        let mut classifier = Self::with(ebpf)?;
        if reused {
            classifier.slots = classifier.pinned_slots().map_err(ClassifierError::Configure)?;
            tracing::info!(maps = %dir.display(), destinations = classifier.slots.iter().flatten().count(), "fast-path maps taken over from the last run");
        }
        pins.remove_other_maps(&dir);
        Ok(classifier)
    }

    /// Removes the pinned maps of this object (the classifier keeps its own references).
    pub(super) fn unpin_maps(pins: &Pins) -> std::io::Result<()> {
        pins.remove_maps(OBJECT)
    }

    fn with(ebpf: Ebpf) -> Result<Self, ClassifierError> {
        let mut classifier = Self {
            ebpf,
            slots: Vec::new(),
        };
        for name in [PROGRAM_EGRESS, PROGRAM_INGRESS] {
            classifier.load_program(name)?;
        }
        classifier
            .set_ai_priority(DEFAULT_AI_PRIORITY)
            .and_then(|()| classifier.set_l2_len(ETHERNET_HEADER_LEN))
            .map_err(ClassifierError::Configure)?;
        Ok(classifier)
    }

    /// Runs one program `repeat` times on `frame`, which must start with an Ethernet header:
    /// the kernel builds test skbs as Ethernet frames whatever the program is attached to.
    pub fn test_run(
        &mut self,
        program: TestProgram,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, ClassifierError> {
        let name = program.name();
        if program == TestProgram::Baseline {
            self.load_program(name)?;
        }
        let classifier = self.program(name)?;
        let mut context = [0u8; SKB_CONTEXT_LEN];
        // The classifier never grows a packet; the kernel checks the room anyway.
        let mut packet = vec![0u8; frame.len()];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut packet),
            ctx_out: Some(&mut context),
            repeat,
            ..TestRunOptions::default()
        };
        let result = classifier
            .test_run(options)
            .map_err(|source| ClassifierError::TestRun { name, source })?;
        let priority = context[SKB_PRIORITY_OFFSET..SKB_PRIORITY_OFFSET + 4]
            .try_into()
            .map(u32::from_ne_bytes)
            .expect("the slice is four bytes long");
        Ok(TestRunOutcome {
            verdict: result.return_value.cast_signed(),
            priority,
            duration: result.duration,
            packet,
        })
    }

    /// The file descriptor of a loaded program, for pointing a pinned link at it.
    pub(super) fn program_fd(&self, name: &'static str) -> Result<std::os::fd::BorrowedFd<'_>, ClassifierError> {
        use std::os::fd::AsFd as _;
        let program = self.ebpf.program(name).ok_or(ClassifierError::MissingProgram(name))?;
        program
            .fd()
            .map(|fd| fd.as_fd())
            .map_err(|source| ClassifierError::LoadProgram { name, source })
    }

    pub(super) fn program_mut(&mut self, name: &'static str) -> Result<&mut SchedClassifier, ClassifierError> {
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(ClassifierError::MissingProgram(name))?;
        program
            .try_into()
            .map_err(|source| ClassifierError::NotClassifier { name, source })
    }

    fn program(&self, name: &'static str) -> Result<&SchedClassifier, ClassifierError> {
        let program = self.ebpf.program(name).ok_or(ClassifierError::MissingProgram(name))?;
        program
            .try_into()
            .map_err(|source| ClassifierError::NotClassifier { name, source })
    }

    /// Loads `name` into the kernel unless it already is.
    fn load_program(&mut self, name: &'static str) -> Result<(), ClassifierError> {
        let program = self.program_mut(name)?;
        if program.fd().is_ok() {
            return Ok(());
        }
        program
            .load()
            .map_err(|source| ClassifierError::LoadProgram { name, source })
    }
}
