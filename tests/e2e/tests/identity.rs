//! Caller identity as the shipped unit runs the daemon: user `aiesim`, its capabilities, and
//! /proc mounted `hidepid=invisible` in its own mount namespace (what `ProtectProc=invisible`
//! does), so no caller's /proc entry is visible to it. Callers are two users in the
//! `aiesim-apps` group (`daemon` and `nobody`), in real cgroups the test makes: a system unit, a scope inside a user's
//! tree, and a login session. Each asks `Budget.GetMine` with real gdbus and must be known by
//! the app id the daemon read through its pidfd.

use std::{path::Path, process::Command};

use aiesim_e2e::{Account, Cgroups, World, WorldOptions, output_text as text, skip_unless_ready};

const SYSTEM_UNIT: &str = "/system.slice/glasses-assistant.service";
/// Callers are existing users (the bus looks a caller's groups up by its uid): `daemon` and
/// `nobody`.
const DAEMON_UID: u32 = 1;
const NOBODY_UID: u32 = 65534;
const USER_SCOPE: &str = "/user.slice/user-65534.slice/user@65534.service/app.slice/app-toy-42.scope";
const SESSION: &str = "/user.slice/user-1.slice/session-7.scope";

/// Runs gdbus `Budget.GetMine` as `uid` in the aiesim-apps group from inside cgroup `procs`.
fn get_mine(world: &World, procs: &Path, uid: u32, gid: u32) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec setpriv --reuid={uid} --regid={uid} --groups={gid} -- gdbus call --address '{}' --dest org.aiesim.AiEsim1 --object-path /org/aiesim/AiEsim1 --method org.aiesim.AiEsim1.Budget.GetMine",
            procs.display(),
            world.bus_address
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), world.daemon.log());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn apps_are_known_by_their_unit_under_the_shipped_sandbox() {
    if skip_unless_ready("apps_are_known_by_their_unit_under_the_shipped_sandbox") {
        return;
    }
    let apps = Account::group("aiesim-apps").unwrap();
    let daemon_user = Account::user("aiesim").unwrap();
    let cgroups = Cgroups::make("identity", &[SYSTEM_UNIT, USER_SCOPE, SESSION]);
    let world = World::start(&WorldOptions {
        daemon_user: Some("aiesim"),
        ..WorldOptions::default()
    })
    .unwrap();

    // The daemon really runs as the unit would have it.
    let pid = world.daemon.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(1) == Some(daemon_user.uid.to_string().as_str()),
        "{uid_line}"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // The last mount on /proc is the one the daemon sees.
    let proc_mount = mounts
        .lines()
        .rev()
        .find(|l| l.split_whitespace().nth(4) == Some("/proc"))
        .unwrap();
    assert!(proc_mount.contains("hidepid=invisible"), "{proc_mount}");

    let system = get_mine(&world, &cgroups.procs(SYSTEM_UNIT), DAEMON_UID, apps.gid);
    assert!(system.contains("'app': <'glasses-assistant.service'>"), "{system}");
    let scope = get_mine(&world, &cgroups.procs(USER_SCOPE), NOBODY_UID, apps.gid);
    assert!(scope.contains("'app': <'uid-65534/app-toy-42.scope'>"), "{scope}");
    let session = get_mine(&world, &cgroups.procs(SESSION), DAEMON_UID, apps.gid);
    assert!(session.contains("'app': <'uid-1'>"), "{session}");
    drop(world);
}
