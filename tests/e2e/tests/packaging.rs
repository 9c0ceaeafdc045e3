//! What ships beside the binaries: the systemd unit, the example configuration, the bus and
//! polkit files. Checked with the real tools that will read them.

use std::process::Command;

use aiesim_e2e::{bin_dir, output_text as text, repo_root, skip_if_missing, which};

/// Whether `name` is installed; under CI it must be.
fn tool(test: &str, name: &str) -> bool {
    !skip_if_missing(test, which(name).is_none().then(|| format!("{name} is not installed")))
}

/// The built daemon, if built; under CI it must be.
fn daemon(test: &str) -> Option<std::path::PathBuf> {
    let daemon = bin_dir("debug").join("aiesimd");
    (!skip_if_missing(test, (!daemon.exists()).then(|| "aiesimd is not built".to_owned()))).then_some(daemon)
}

#[test]
fn the_unit_verifies_and_stays_hardened() {
    if !tool("the_unit_verifies_and_stays_hardened", "systemd-analyze") {
        return;
    }
    let Some(daemon) = daemon("the_unit_verifies_and_stays_hardened") else {
        return;
    };
    let unit = std::fs::read_to_string(repo_root().join("systemd/aiesimd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/aiesimd "),
        "the unit starts the installed daemon"
    );
    // Verify a copy that points at the freshly built binary, so the check covers ExecStart too.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("aiesimd.service");
    std::fs::write(&copy, unit.replace("/usr/bin/aiesimd", &daemon.display().to_string())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Exposure 3.0 or better ("OK"); ModemManager's unit scores 6.5 on bookworm.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30"])
        .arg(repo_root().join("systemd/aiesimd.service"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_example_configuration_is_valid_and_mistakes_are_named() {
    let Some(daemon) = daemon("the_example_configuration_is_valid_and_mistakes_are_named") else {
        return;
    };
    let out = Command::new(&daemon)
        .arg("--check-config")
        .arg("--config")
        .arg(repo_root().join("systemd/aiesimd.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[budget]\napp_tokens = \"lots\"\n").unwrap();
    let out = Command::new(&daemon)
        .arg("--check-config")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("app_tokens"), "{}", text(&out));

    let out = Command::new(&daemon)
        .arg("--check-config")
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration file"),
        "{}",
        text(&out)
    );
}

#[test]
fn bus_and_polkit_files_are_accepted_by_their_readers() {
    if !tool("bus_and_polkit_files_are_accepted_by_their_readers", "dbus-daemon") {
        return;
    }
    // dbus-daemon parses our policy as part of a bus configuration and exits on any error.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>system</type><listen>unix:path={}</listen><include>{}</include></busconfig>\n",
            dir.path().join("sock").display(),
            repo_root().join("dbus/bus/org.aiesim.AiEsim1.conf").display()
        ),
    )
    .unwrap();
    let out = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .arg("--print-address")
        .arg("--fork")
        .arg("--print-pid")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = stdout.lines().nth(1).unwrap().trim().parse().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);

    // The polkit actions file is well-formed and every admin action needs an administrator.
    let policy = std::fs::read_to_string(repo_root().join("dbus/polkit/org.aiesim.AiEsim1.policy")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&policy);
    let (mut actions, mut path, mut allow_active) = (Vec::new(), Vec::<String>::new(), Vec::new());
    loop {
        match reader.read_event().expect("well-formed polkit policy") {
            quick_xml::events::Event::Start(t) => {
                let name = String::from_utf8_lossy(t.name().as_ref()).into_owned();
                if name == "action" {
                    let id = t
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == b"id")
                        .expect("action id");
                    actions.push(String::from_utf8_lossy(&id.value).into_owned());
                }
                path.push(name);
            }
            quick_xml::events::Event::Text(t) if path.last().is_some_and(|p| p == "allow_active") => {
                allow_active.push(String::from_utf8_lossy(&t).trim().to_owned());
            }
            quick_xml::events::Event::End(_) => {
                path.pop();
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(
        actions,
        [
            "org.aiesim.AiEsim1.manage-budgets",
            "org.aiesim.AiEsim1.manage-esim",
            "org.aiesim.AiEsim1.manage-endpoints",
            "org.aiesim.AiEsim1.read-traffic"
        ]
    );
    assert_eq!(allow_active, ["auth_admin_keep"; 4]);
}
