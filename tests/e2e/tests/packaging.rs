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

    // Exposure 2.0 or better (the threshold is in tenths); ModemManager's unit scores 6.5 on
    // bookworm.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
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

/// The D-Bus activation file and the unit name the same service: bus name, user and unit.
#[test]
fn the_activation_file_agrees_with_the_unit() {
    let read = |path: &str| std::fs::read_to_string(repo_root().join(path)).unwrap();
    let unit = read("systemd/aiesimd.service");
    let activation = read("dbus/system-services/org.aiesim.AiEsim1.service");
    let value = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map_or_else(|| panic!("no {key}= in\n{text}"), str::to_owned)
    };
    assert_eq!(value(&activation, "Name"), value(&unit, "BusName"));
    assert_eq!(value(&activation, "User"), value(&unit, "User"));
    assert_eq!(value(&activation, "SystemdService"), "aiesimd.service");
    assert!(
        unit.contains("WatchdogSec="),
        "the daemon pets a watchdog, so the unit asks for one"
    );
}

/// `cargo xtask install` lays out every file a package needs, with its mode, and what it
/// generates works with the tools that read it: man renders the pages, bash loads the
/// completion, and the unit starts the daemon from the prefix.
#[test]
fn the_install_tree_has_every_file_and_they_work() {
    let test = "the_install_tree_has_every_file_and_they_work";
    let xtask = bin_dir("debug").join("xtask");
    if skip_if_missing(test, (!xtask.exists()).then(|| "xtask is not built".to_owned())) || daemon(test).is_none() {
        return;
    }
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new(&xtask)
        .args(["install", "--no-build", "--prefix", "/opt/aiesim", "--destdir"])
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut files: Vec<String> = walk(dest.path())
        .into_iter()
        .map(|p| p.strip_prefix(dest.path()).unwrap().display().to_string())
        .collect();
    files.sort();
    let mut expected: Vec<String> = [
        "etc/aiesim/aiesimd.toml",
        "opt/aiesim/bin/aictl",
        "opt/aiesim/bin/aiesimd",
        "opt/aiesim/lib/systemd/system/aiesimd.service",
        "opt/aiesim/lib/sysusers.d/aiesim.conf",
        "opt/aiesim/lib/tmpfiles.d/aiesim.conf",
        "opt/aiesim/share/bash-completion/completions/aictl",
        "opt/aiesim/share/bash-completion/completions/aiesimd",
        "opt/aiesim/share/dbus-1/system-services/org.aiesim.AiEsim1.service",
        "opt/aiesim/share/dbus-1/system.d/org.aiesim.AiEsim1.conf",
        "opt/aiesim/share/fish/vendor_completions.d/aictl.fish",
        "opt/aiesim/share/fish/vendor_completions.d/aiesimd.fish",
        "opt/aiesim/share/man/man1/aictl.1",
        "opt/aiesim/share/man/man8/aiesimd.8",
        "opt/aiesim/share/polkit-1/actions/org.aiesim.AiEsim1.policy",
        "opt/aiesim/share/zsh/vendor-completions/_aictl",
        "opt/aiesim/share/zsh/vendor-completions/_aiesimd",
    ]
    .map(str::to_owned)
    .into();
    // Every interface of the contract is installed.
    for xml in std::fs::read_dir(repo_root().join("dbus/interfaces")).unwrap() {
        let name = xml.unwrap().file_name().to_string_lossy().into_owned();
        expected.push(format!("opt/aiesim/share/dbus-1/interfaces/{name}"));
    }
    expected.sort();
    assert_eq!(files, expected);

    let mode = |path: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dest.path().join(path)).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode("opt/aiesim/bin/aiesimd"), 0o755);
    assert_eq!(
        mode("etc/aiesim/aiesimd.toml"),
        0o640,
        "the configuration is not world-readable"
    );
    assert_eq!(mode("opt/aiesim/share/man/man1/aictl.1"), 0o644);

    let unit = std::fs::read_to_string(dest.path().join("opt/aiesim/lib/systemd/system/aiesimd.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/aiesim/bin/aiesimd "), "{unit}");

    if tool(test, "man") {
        for (page, says) in [("man1/aictl.1", "aictl"), ("man8/aiesimd.8", "aiesimd")] {
            let out = Command::new("man")
                .arg("-l")
                .arg(dest.path().join("opt/aiesim/share/man").join(page))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            let page_text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{}", text(&out));
            assert!(
                page_text.contains("SYNOPSIS") && page_text.contains(says),
                "{page_text}"
            );
        }
    }
    if tool(test, "bash") {
        let completion = dest.path().join("opt/aiesim/share/bash-completion/completions/aictl");
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p aictl", completion.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("aictl"), "{}", text(&out));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `cargo xtask deb` makes a package that dpkg installs (users, state directory, conffile,
/// man pages) and purges without a trace. Needs root and a machine without the package.
#[test]
fn the_deb_installs_and_purges_cleanly() {
    let test = "the_deb_installs_and_purges_cleanly";
    let xtask = bin_dir("debug").join("xtask");
    if skip_if_missing(test, (!xtask.exists()).then(|| "xtask is not built".to_owned()))
        || !tool(test, "dpkg-deb")
        || !tool(test, "systemd-sysusers")
        || daemon(test).is_none()
    {
        return;
    }
    let root = nix::unistd::Uid::effective().is_root();
    let installed = Command::new("dpkg")
        .args(["-s", "aiesim"])
        .output()
        .unwrap()
        .status
        .success();
    let why = if !root {
        Some("installing a package needs root".to_owned())
    } else if installed {
        Some("the aiesim package is installed on this machine; the test would remove it".to_owned())
    } else {
        None
    };
    if skip_if_missing(test, why) {
        return;
    }
    let had_user = nix::unistd::User::from_name("aiesim").unwrap().is_some();
    let had_group = nix::unistd::Group::from_name("aiesim-apps").unwrap().is_some();

    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(&xtask)
        .args(["deb", "--debug", "--no-build", "--out"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb was built");
    let contents = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    let shipped: Vec<String> = String::from_utf8_lossy(&contents.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    assert!(shipped.contains(&"/usr/bin/aiesimd".to_owned()), "{shipped:?}");

    let install = Command::new("dpkg").arg("-i").arg(&deb).output().unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(install.status.success(), "{}", text(&install));
        let version = Command::new("/usr/bin/aiesimd").arg("--version").output().unwrap();
        assert!(
            String::from_utf8_lossy(&version.stdout).starts_with("aiesimd "),
            "{}",
            text(&version)
        );
        let state = std::fs::metadata("/var/lib/aiesim").expect("postinst made the state directory");
        let user = nix::unistd::User::from_name("aiesim")
            .unwrap()
            .expect("postinst made the user");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&state), user.uid.as_raw());
        assert!(nix::unistd::Group::from_name("aiesim-apps").unwrap().is_some());
        let config = std::fs::metadata("/etc/aiesim/aiesimd.toml").unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&config), user.gid.as_raw());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&config.permissions()) & 0o777,
            0o640
        );
        let verify = Command::new("dpkg").args(["--verify", "aiesim"]).output().unwrap();
        assert!(verify.status.success() && verify.stdout.is_empty(), "{}", text(&verify));
    });
    let purge = Command::new("dpkg").args(["--purge", "aiesim"]).output().unwrap();
    let left: Vec<&String> = shipped.iter().filter(|p| std::path::Path::new(p).exists()).collect();
    let state_left = std::path::Path::new("/var/lib/aiesim").exists();
    if !had_user {
        let _ = Command::new("userdel").arg("aiesim").status();
    }
    if !had_group {
        let _ = Command::new("groupdel").arg("aiesim-apps").status();
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(purge.status.success(), "{}", text(&purge));
    assert!(left.is_empty(), "left behind after purge: {left:?}");
    assert!(!state_left, "purge removes the state directory");
}
