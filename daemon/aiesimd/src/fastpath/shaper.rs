//! The root qdisc that turns the classifier's `skb->priority` into precedence on the uplink.
//!
//! HTB at the uplink rate, so that the queue builds here rather than in the modem, with two
//! leaves: an interactive class for AI packets (the classifier sets their priority to its class
//! id, which HTB honours before any filter) served first, and the default bulk class for the rest.
//! A root qdisc someone chose (anything but the kernel's defaults) is left alone.

use std::io;

use super::netlink::{self, Attributes, RootQdisc, TC_H_ROOT, TCA_KIND, TCA_OPTIONS, TcMsg};

/// Handle major of the shaper's qdisc; distinctive, so one left by a crashed daemon is known.
pub const HANDLE_MAJOR: u32 = 0xae51;
/// The HTB class AI packets go to (`ae51:10`); the classifier sets it as their priority.
pub const INTERACTIVE_CLASS: u32 = HANDLE_MAJOR << 16 | 0x10;
/// The default HTB class, everything that is not AI (`ae51:20`).
pub const BULK_CLASS: u32 = HANDLE_MAJOR << 16 | 0x20;
const QDISC_HANDLE: u32 = HANDLE_MAJOR << 16;
const ROOT_CLASS: u32 = HANDLE_MAJOR << 16 | 1;

/// Root qdiscs the kernel puts on an interface by itself: replacing them overrides no one.
const KERNEL_DEFAULTS: [&str; 4] = ["pfifo_fast", "noqueue", "mq", "fq_codel"];

/// Rates the kernel's 32-bit bytes-per-second rate field can hold.
pub const UPLINK_KBIT_RANGE: std::ops::RangeInclusive<u32> = 8..=32_000_000;

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TC_HTB_PROTOVER: u32 = 3;
/// `TC_LINKLAYER_ETHERNET`: plain byte counting, so the kernel wants no rate table.
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// Room for one full-size packet on top of a tick's worth of bytes in each bucket.
const MTU_ALLOWANCE: u64 = 1600;
/// HTB's bucket sizes are in units of 64 ns (`PSCHED_SHIFT`).
const NS_PER_TICK: u64 = 64;

/// What the daemon is told about the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shaping {
    /// The uplink rate in kbit/s (1000 bit/s), the rate the qdisc releases packets at.
    pub uplink_kbit: u32,
}

/// Where the shaper's rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkRate {
    /// A fixed rate in kbit/s, from the configuration.
    Fixed(u32),
    /// The uplink rate the modem reports, scaled to `percent` (so the queue builds here, not
    /// in the modem) and never below `floor_kbit`.
    Modem { percent: u8, floor_kbit: u32 },
}

impl UplinkRate {
    /// The rate to shape at, given what the modem reports (bit/s); `None` while unknown.
    pub fn kbit(self, modem_bps: Option<u64>) -> Option<u32> {
        match self {
            Self::Fixed(kbit) => Some(kbit),
            Self::Modem { percent, floor_kbit } => modem_bps.map(|bps| {
                let kbit = bps / 1000 * u64::from(percent) / 100;
                let kbit = u32::try_from(kbit).unwrap_or(u32::MAX);
                kbit.clamp(floor_kbit.max(*UPLINK_KBIT_RANGE.start()), *UPLINK_KBIT_RANGE.end())
            }),
        }
    }

    /// "config" or "modem", as the Fastpath interface shows it.
    pub const fn source(self) -> &'static str {
        match self {
            Self::Fixed(_) => "config",
            Self::Modem { .. } => "modem",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShaperError {
    #[error("uplink rate {0} kbit/s is outside {min}..={max}", min = UPLINK_KBIT_RANGE.start(), max = UPLINK_KBIT_RANGE.end())]
    Rate(u32),
    #[error("cannot read the root qdisc of {iface}")]
    Query {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to install the HTB root qdisc on {iface}")]
    Install {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove the HTB root qdisc from {iface}")]
    Remove {
        iface: String,
        #[source]
        source: io::Error,
    },
}

/// The HTB root qdisc this process installed; dropping it removes it.
#[derive(Debug)]
pub(super) struct Shaper {
    iface: String,
    ifindex: u32,
    installed: bool,
    /// The rate the classes were last given, kbit/s.
    uplink_kbit: u32,
}

/// Installs the shaper on `iface` unless a root qdisc someone chose is there: then `None`.
pub(super) fn install(iface: &str, ifindex: u32, shaping: Shaping) -> Result<Option<Shaper>, ShaperError> {
    if !UPLINK_KBIT_RANGE.contains(&shaping.uplink_kbit) {
        return Err(ShaperError::Rate(shaping.uplink_kbit));
    }
    let root = netlink::root_qdisc(ifindex).map_err(|source| ShaperError::Query {
        iface: iface.to_owned(),
        source,
    })?;
    // Filled in before the first change, so an error half-way removes what was done.
    let mut shaper = Shaper {
        iface: iface.to_owned(),
        ifindex,
        installed: false,
        uplink_kbit: shaping.uplink_kbit,
    };
    match &root {
        Some(RootQdisc { kind, handle }) if !replaceable(kind, *handle) => {
            tracing::info!(
                iface,
                qdisc = %kind,
                "a root qdisc was already configured on the interface: left alone, AI packets are not shaped"
            );
            return Ok(None);
        }
        // Ours, left by a daemon that did not stop cleanly: HTB cannot be changed in place.
        Some(RootQdisc { handle, .. }) if *handle == QDISC_HANDLE => {
            shaper.installed = true;
            shaper.undo()?;
        }
        _ => {}
    }
    shaper.installed = true;
    shaper.build(shaping).map_err(|source| ShaperError::Install {
        iface: iface.to_owned(),
        source,
    })?;
    tracing::info!(
        iface,
        uplink_kbit = shaping.uplink_kbit,
        "AI-first shaping installed on the uplink"
    );
    Ok(Some(shaper))
}

fn replaceable(kind: &str, handle: u32) -> bool {
    KERNEL_DEFAULTS.contains(&kind) || (kind == "htb" && handle == QDISC_HANDLE)
}

impl Shaper {
    fn build(&mut self, shaping: Shaping) -> io::Result<()> {
        let qdisc = TcMsg {
            ifindex: self.ifindex,
            handle: QDISC_HANDLE,
            parent: TC_H_ROOT,
        };
        let mut init = Attributes::default();
        init.push(TCA_HTB_INIT, &htb_glob(BULK_CLASS));
        let mut attributes = Attributes::default();
        attributes.push_str(TCA_KIND, "htb").push_nested(TCA_OPTIONS, &init);
        netlink::request(
            libc::RTM_NEWQDISC,
            libc::NLM_F_CREATE | libc::NLM_F_REPLACE,
            qdisc,
            &attributes,
        )?;
        self.classes(shaping.uplink_kbit, libc::NLM_F_CREATE | libc::NLM_F_EXCL)
    }

    pub(super) const fn uplink_kbit(&self) -> u32 {
        self.uplink_kbit
    }

    /// Gives the classes a new rate in place: queued packets stay, nothing is re-created.
    pub(super) fn set_rate(&mut self, uplink_kbit: u32) -> Result<(), ShaperError> {
        if !UPLINK_KBIT_RANGE.contains(&uplink_kbit) {
            return Err(ShaperError::Rate(uplink_kbit));
        }
        // No flags: RTM_NEWTCLASS on an existing class changes it.
        self.classes(uplink_kbit, 0).map_err(|source| ShaperError::Install {
            iface: self.iface.clone(),
            source,
        })?;
        tracing::info!(iface = self.iface, uplink_kbit, "uplink shaping rate changed");
        self.uplink_kbit = uplink_kbit;
        Ok(())
    }

    /// Creates (or, with no flags, changes) the root, interactive and bulk classes.
    fn classes(&self, uplink_kbit: u32, flags: libc::c_int) -> io::Result<()> {
        let uplink = u64::from(uplink_kbit) * 125;
        // AI is served first while under its rate; bulk keeps a share and borrows the rest.
        let classes = [
            (ROOT_CLASS, QDISC_HANDLE, uplink, 0),
            (INTERACTIVE_CLASS, ROOT_CLASS, uplink * 3 / 4, 0),
            (BULK_CLASS, ROOT_CLASS, uplink / 4, 1),
        ];
        for (handle, parent, rate, prio) in classes {
            let class = TcMsg {
                ifindex: self.ifindex,
                handle,
                parent,
            };
            let mut options = Attributes::default();
            options.push(TCA_HTB_PARMS, &htb_opt(rate, uplink, prio));
            let mut attributes = Attributes::default();
            attributes.push_str(TCA_KIND, "htb").push_nested(TCA_OPTIONS, &options);
            netlink::request(libc::RTM_NEWTCLASS, flags, class, &attributes)?;
        }
        Ok(())
    }

    pub(super) fn remove(mut self) -> Result<(), ShaperError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<(), ShaperError> {
        if !std::mem::take(&mut self.installed) {
            return Ok(());
        }
        let error = |source| ShaperError::Remove {
            iface: self.iface.clone(),
            source,
        };
        // Someone may have replaced it since; theirs stays.
        match netlink::root_qdisc(self.ifindex) {
            Ok(Some(RootQdisc { kind, handle })) if kind == "htb" && handle == QDISC_HANDLE => {}
            Ok(_) => return Ok(()),
            Err(source) if source.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(source) => return Err(error(source)),
        }
        let qdisc = TcMsg {
            ifindex: self.ifindex,
            handle: QDISC_HANDLE,
            parent: TC_H_ROOT,
        };
        match netlink::request(libc::RTM_DELQDISC, 0, qdisc, &Attributes::default()) {
            Ok(()) => {
                tracing::info!(iface = self.iface, "AI-first shaping removed from the uplink");
                Ok(())
            }
            Err(source) if matches!(source.raw_os_error(), Some(libc::ENODEV | libc::ENOENT)) => Ok(()),
            Err(source) => Err(error(source)),
        }
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        if let Err(error) = self.undo() {
            tracing::warn!(error = &error as &dyn std::error::Error, "failed to remove the shaper");
        }
    }
}

/// `struct tc_htb_glob`: version, rate-to-quantum divisor, default class, debug, direct packets.
fn htb_glob(default_class: u32) -> Vec<u8> {
    [TC_HTB_PROTOVER, 10, default_class & 0xffff, 0, 0]
        .iter()
        .flat_map(|word| word.to_ne_bytes())
        .collect()
}

/// `struct tc_htb_opt` for a class with `rate` and `ceil` in bytes per second.
fn htb_opt(rate: u64, ceil: u64, prio: u32) -> Vec<u8> {
    let mut opt = Vec::with_capacity(44);
    opt.extend_from_slice(&ratespec(rate));
    opt.extend_from_slice(&ratespec(ceil));
    opt.extend_from_slice(&bucket_ticks(rate).to_ne_bytes());
    opt.extend_from_slice(&bucket_ticks(ceil).to_ne_bytes());
    // Quantum: what a class sends per round when borrowing; at least one full packet.
    let quantum = u32::try_from((rate / 10).clamp(MTU_ALLOWANCE, 200_000)).expect("clamped");
    opt.extend_from_slice(&quantum.to_ne_bytes());
    opt.extend_from_slice(&0u32.to_ne_bytes()); // level: the kernel works it out
    opt.extend_from_slice(&prio.to_ne_bytes());
    opt
}

/// `struct tc_ratespec`: only the link layer and the rate are set.
fn ratespec(rate: u64) -> [u8; 12] {
    let mut spec = [0u8; 12];
    spec[1] = TC_LINKLAYER_ETHERNET;
    let rate = u32::try_from(rate).unwrap_or(u32::MAX);
    spec[8..].copy_from_slice(&rate.to_ne_bytes());
    spec
}

/// A bucket of one millisecond's worth of bytes plus a full packet, as time at `rate`.
fn bucket_ticks(rate: u64) -> u32 {
    let bytes = rate / 1000 + MTU_ALLOWANCE;
    let ns = bytes * 1_000_000_000 / rate.max(1);
    u32::try_from(ns / NS_PER_TICK).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_defaults_and_our_own_qdisc_are_replaced_others_are_not() {
        for kind in KERNEL_DEFAULTS {
            assert!(replaceable(kind, 0));
        }
        assert!(replaceable("htb", QDISC_HANDLE));
        assert!(!replaceable("htb", 1 << 16));
        assert!(!replaceable("tbf", QDISC_HANDLE));
        assert!(!replaceable("cake", 0));
    }

    #[test]
    fn htb_parameters_have_the_kernel_layout() {
        let opt = htb_opt(125_000, 250_000, 1);
        assert_eq!(opt.len(), 44);
        assert_eq!(opt[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(u32::from_ne_bytes(opt[8..12].try_into().unwrap()), 125_000);
        assert_eq!(u32::from_ne_bytes(opt[20..24].try_into().unwrap()), 250_000);
        // 125 + 1600 bytes at 125 kB/s is 13.8 ms, in 64 ns ticks.
        assert_eq!(u32::from_ne_bytes(opt[24..28].try_into().unwrap()), 13_800_000 / 64);
        assert_eq!(u32::from_ne_bytes(opt[32..36].try_into().unwrap()), 12_500);
        assert_eq!(u32::from_ne_bytes(opt[40..44].try_into().unwrap()), 1);
        assert_eq!(htb_glob(BULK_CLASS).len(), 20);
    }

    #[test]
    fn the_modem_rate_is_scaled_and_floored() {
        let modem = UplinkRate::Modem {
            percent: 90,
            floor_kbit: 256,
        };
        assert_eq!(modem.kbit(None), None);
        assert_eq!(modem.kbit(Some(2_000_000)), Some(1800));
        // A rate too low to carry anything is raised to the floor, a huge one capped.
        assert_eq!(modem.kbit(Some(100_000)), Some(256));
        assert_eq!(modem.kbit(Some(u64::MAX)), Some(*UPLINK_KBIT_RANGE.end()));
        assert_eq!(UplinkRate::Fixed(2000).kbit(Some(50_000_000)), Some(2000));
        assert_eq!((UplinkRate::Fixed(1).source(), modem.source()), ("config", "modem"));
    }
}
