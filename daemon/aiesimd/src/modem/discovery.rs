//! Finds modem control ports and their network interfaces in sysfs.
//!
//! Two kernel families expose them: USB modems as `usbmisc/cdc-wdmN` bound to `qmi_wwan`
//! (QMI) or `cdc_mbim` (MBIM), and the WWAN framework (PCIe/MHI modems) as `wwan/wwanNqmiM` or
//! `wwan/wwanNmbimM`. Reading sysfs never touches the modem, let alone its radio.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::Protocol;

/// A control port found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The character device, e.g. `/dev/cdc-wdm0`.
    pub path: PathBuf,
    pub protocol: Protocol,
    /// The modem's network interface, when sysfs names one.
    pub interface: Option<String>,
}

/// Where sysfs and the device nodes are; tests point these at a directory of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// Every control port present, in name order, optionally only those of one protocol.
pub fn discover(roots: &Roots, only: Option<Protocol>) -> Vec<Port> {
    let mut ports = usbmisc(roots);
    ports.extend(wwan(roots));
    ports.retain(|port| only.is_none_or(|p| p == port.protocol));
    ports.sort_by(|a, b| a.path.cmp(&b.path));
    ports
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// USB modems: the interface's driver says which protocol the port speaks.
fn usbmisc(roots: &Roots) -> Vec<Port> {
    let class = roots.sys.join("class/usbmisc");
    entries(&class)
        .into_iter()
        .filter(|name| name.starts_with("cdc-wdm"))
        .filter_map(|name| {
            let device = class.join(&name).join("device");
            let driver = fs::read_link(device.join("driver")).ok()?;
            let protocol = match driver.file_name()?.to_str()? {
                "qmi_wwan" => Protocol::Qmi,
                "cdc_mbim" => Protocol::Mbim,
                _ => return None,
            };
            let interface = entries(&device.join("net")).into_iter().next();
            Some(Port {
                path: roots.dev.join(&name),
                protocol,
                interface,
            })
        })
        .collect()
}

/// WWAN-framework modems: the port's name carries its type (`wwan0qmi0`, `wwan0mbim0`).
fn wwan(roots: &Roots) -> Vec<Port> {
    let class = roots.sys.join("class/wwan");
    entries(&class)
        .into_iter()
        .filter_map(|name| {
            let (parent, protocol) = if let Some(at) = name.find("qmi") {
                (&name[..at], Protocol::Qmi)
            } else if let Some(at) = name.find("mbim") {
                (&name[..at], Protocol::Mbim)
            } else {
                return None;
            };
            let interface = wwan_interface(roots, parent);
            Some(Port {
                path: roots.dev.join(&name),
                protocol,
                interface,
            })
        })
        .collect()
}

/// The network interface whose device path runs through the WWAN device `parent` (`wwan0`).
fn wwan_interface(roots: &Roots, parent: &str) -> Option<String> {
    let net = roots.sys.join("class/net");
    let wwan_device = fs::canonicalize(roots.sys.join("class/wwan").join(parent)).ok()?;
    let bus_device = wwan_device.parent()?.parent()?.to_owned();
    entries(&net).into_iter().find(|name| {
        fs::canonicalize(net.join(name))
            .is_ok_and(|path| path.starts_with(&wwan_device) || path.starts_with(&bus_device))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A sysfs with a USB QMI modem (wwan0), a USB MBIM modem and a `PCIe` WWAN MBIM modem.
    fn sysfs() -> (tempfile::TempDir, Roots) {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let mk = |p: &str| fs::create_dir_all(sys.join(p)).unwrap();
        let link = |target: &str, at: &str| symlink(sys.join(target), sys.join(at)).unwrap();

        for driver in ["qmi_wwan", "cdc_mbim", "option"] {
            mk(&format!("bus/usb/drivers/{driver}"));
        }
        for (port, interface, driver, net) in [
            ("cdc-wdm0", "1-1:1.4", "qmi_wwan", Some("wwan0")),
            ("cdc-wdm1", "2-1:1.0", "cdc_mbim", Some("wwan1")),
            ("cdc-wdm2", "3-1:1.2", "option", None),
        ] {
            let usb = format!("devices/usb1/{interface}");
            mk(&format!("{usb}/usbmisc/{port}"));
            link(&format!("bus/usb/drivers/{driver}"), &format!("{usb}/driver"));
            if let Some(net) = net {
                mk(&format!("{usb}/net/{net}"));
            }
            mk("class/usbmisc");
            link(&format!("{usb}/usbmisc/{port}"), &format!("class/usbmisc/{port}"));
            symlink(sys.join(&usb), sys.join(format!("{usb}/usbmisc/{port}/device"))).unwrap();
        }
        // PCIe: wwan2 with an MBIM port and an AT port; its netdev hangs off the same MHI device.
        let mhi = "devices/pci0000:00/0000:01:00.0/mhi0";
        mk(&format!("{mhi}/wwan/wwan2/wwan2mbim0"));
        mk(&format!("{mhi}/wwan/wwan2/wwan2at0"));
        mk(&format!("{mhi}/mhi0_IP_HW0/net/mhi_hwip0"));
        mk("class/wwan");
        mk("class/net");
        link(&format!("{mhi}/wwan/wwan2"), "class/wwan/wwan2");
        link(&format!("{mhi}/wwan/wwan2/wwan2mbim0"), "class/wwan/wwan2mbim0");
        link(&format!("{mhi}/wwan/wwan2/wwan2at0"), "class/wwan/wwan2at0");
        link(&format!("{mhi}/mhi0_IP_HW0/net/mhi_hwip0"), "class/net/mhi_hwip0");
        mk("devices/virtual/net/lo");
        link("devices/virtual/net/lo", "class/net/lo");
        let roots = Roots {
            sys,
            dev: PathBuf::from("/dev"),
        };
        (dir, roots)
    }

    #[test]
    fn finds_usb_and_wwan_ports_with_their_interfaces() {
        let (_dir, roots) = sysfs();
        assert_eq!(
            discover(&roots, None),
            [
                Port {
                    path: "/dev/cdc-wdm0".into(),
                    protocol: Protocol::Qmi,
                    interface: Some("wwan0".into()),
                },
                Port {
                    path: "/dev/cdc-wdm1".into(),
                    protocol: Protocol::Mbim,
                    interface: Some("wwan1".into()),
                },
                Port {
                    path: "/dev/wwan2mbim0".into(),
                    protocol: Protocol::Mbim,
                    interface: Some("mhi_hwip0".into()),
                },
            ]
        );
        let mbim: Vec<_> = discover(&roots, Some(Protocol::Mbim))
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(mbim, [PathBuf::from("/dev/cdc-wdm1"), "/dev/wwan2mbim0".into()]);
    }

    #[test]
    fn an_empty_or_missing_sysfs_has_no_ports() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            sys: dir.path().join("nothing"),
            dev: dir.path().into(),
        };
        assert!(discover(&roots, None).is_empty());
    }
}
