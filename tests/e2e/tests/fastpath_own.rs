//! aiesimd's own sockets marked by its cgroup, through the real daemon run as the shipped unit
//! runs it: user `aiesim` with its capabilities, `ProtectProc=invisible`, and alone in a cgroup of
//! its own (`aiesimd.service`'s, here one the test makes). It finds that cgroup at start and
//! says so; `aictl stats` then has an "unlisted" row, which stays empty while all its cloud
//! traffic goes to the listed endpoint (counted there, once).

use aiesim_e2e::{Account, Cgroups, World, WorldOptions, output_text as text, skip_unless_ready};

const UNIT: &str = "/system.slice/aiesimd.service";

#[tokio::test]
async fn the_daemon_alone_in_its_cgroup_marks_its_own_sockets() {
    if skip_unless_ready("the_daemon_alone_in_its_cgroup_marks_its_own_sockets") {
        return;
    }
    // Made if missing, and removed again with the test.
    let _user = Account::user("aiesim").unwrap();
    // Made first, so it is removed after the daemon is gone.
    let cgroups = Cgroups::make("fastpath-own", &[UNIT]);
    let procs = cgroups.procs(UNIT);
    let dir = procs.parent().unwrap();
    let world = World::start(&WorldOptions {
        daemon_user: Some("aiesim"),
        daemon_cgroup: Some(cgroups.path(UNIT)),
        ..WorldOptions::default()
    })
    .unwrap();

    // Alone in the cgroup, it found that cgroup's id (its directory's inode).
    let members = std::fs::read_to_string(&procs).unwrap();
    assert_eq!(members.trim(), world.daemon.pid().to_string());
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir).unwrap());
    let log = world.daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("own sockets are AI traffic") && l.contains(&id.to_string())),
        "{log}"
    );

    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "8", "Say hello."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let stats = world.aictl_json(&["stats"]);
    let rows = stats.as_array().unwrap();
    let unlisted: Vec<_> = rows.iter().filter(|r| r["destination"] == "unlisted").collect();
    let [unlisted] = unlisted.as_slice() else {
        panic!("one unlisted row: {stats:#}")
    };
    for key in ["egress_packets", "egress_bytes", "ingress_packets", "ingress_bytes"] {
        assert_eq!(unlisted[key].as_u64(), Some(0), "{stats:#}");
    }
    let listed: u64 = rows
        .iter()
        .filter(|r| r["destination"] != "unlisted")
        .map(|r| r["ingress_packets"].as_u64().unwrap_or(0))
        .sum();
    assert!(listed > 0, "the answer came from the listed endpoint: {stats:#}");
    let table = world.aictl().arg("stats").output().unwrap();
    assert!(
        table.status.success() && text(&table).contains("unlisted"),
        "{}",
        text(&table)
    );
}
