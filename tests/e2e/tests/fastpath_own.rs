//! aiesimd's own sockets marked by its cgroup, through the real daemon run as the shipped unit
//! runs it: user `aiesim` with its capabilities, `ProtectProc=invisible`, and alone in a cgroup of
//! its own (`aiesimd.service`'s, here one the test makes). It finds that cgroup at start and
//! says so; `aictl stats` then has an "unlisted" row, which stays empty while all its cloud
//! traffic goes to the listed endpoint (counted there, once), and counts it when the endpoint's
//! name has moved to an address the list does not hold yet.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use aiesim_e2e::{Account, Cgroups, OPERATOR_ADDR, Proc, World, WorldOptions, output_text as text, skip_unless_ready};

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

    world.ask_hello();

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

/// The endpoint's name in the configuration, resolved through the daemon's own hosts file.
const NAME: &str = "cloud.aiesim.test";
/// Where the name moves: an address of the operator's that forwards to the cloud.
const MOVED: &str = "198.18.0.5";

/// A TCP forwarder in the operator's namespace, from `MOVED`:port to the cloud: python's
/// asyncio, printing a line per connection.
const FORWARDER: &str = r#"
import asyncio, sys
listen, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def handle(reader, writer):
    print("CONNECTION", flush=True)
    up_reader, up_writer = await asyncio.open_connection(target, port)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
async def main():
    server = await asyncio.start_server(handle, listen, port)
    print("LISTENING", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"#;

fn write_hosts(hosts: &Path, addr: &str) {
    std::fs::write(hosts, format!("127.0.0.1 localhost\n{addr} {NAME}\n")).unwrap();
}

/// The "unlisted" row and the sum of the listed rows, packets and bytes both ways, once two
/// reads a while apart agree.
fn settled_rows(world: &World) -> ([u64; 4], [u64; 4]) {
    const KEYS: [&str; 4] = ["egress_packets", "egress_bytes", "ingress_packets", "ingress_bytes"];
    let read = || {
        let stats = world.aictl_json(&["stats"]);
        let mut unlisted = [0; 4];
        let mut listed = [0; 4];
        for row in stats.as_array().unwrap() {
            let into = if row["destination"] == "unlisted" {
                &mut unlisted
            } else {
                &mut listed
            };
            for (slot, key) in into.iter_mut().zip(KEYS) {
                *slot += row[key].as_u64().unwrap();
            }
        }
        (unlisted, listed)
    };
    let mut last = read();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the counters never settled: {last:?}");
}

/// The endpoint is configured by name. Its first request has the fast path look the name up
/// (the address is listed); then the name moves to an address the list does not hold, and the
/// next request connects there before the next lookup is due (five minutes on): that exchange
/// is counted as the daemon's own, both ways, and the listed endpoint gains nothing.
#[tokio::test]
async fn the_daemons_traffic_to_an_address_not_listed_yet_is_still_its_own_ai_traffic() {
    if skip_unless_ready("the_daemons_traffic_to_an_address_not_listed_yet_is_still_its_own_ai_traffic") {
        return;
    }
    let _user = Account::user("aiesim").unwrap();
    let cgroups = Cgroups::make("fastpath-own-moved", &[UNIT]);
    let hosts_dir = tempfile::tempdir().unwrap();
    let hosts = hosts_dir.path().join("hosts");
    write_hosts(&hosts, OPERATOR_ADDR);
    let world = World::start(&WorldOptions {
        daemon_user: Some("aiesim"),
        daemon_cgroup: Some(cgroups.path(UNIT)),
        endpoint_host: Some(NAME),
        daemon_hosts: Some(hosts.clone()),
        // Connections close soon after their request: the next one connects, and looks up, again.
        extra_config: "[cloud]\nkeepalive_window_ms = 200\n".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let port = world
        .cloud_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1")
        .to_owned();

    // The operator's second address, reached over the device's wwan0, forwarding to the cloud.
    world
        .operator_netns()
        .ip(["addr", "add", &format!("{MOVED}/32"), "dev", "core0"])
        .unwrap();
    world
        .device_netns()
        .ip(["route", "add", &format!("{MOVED}/32"), "dev", "wwan0"])
        .unwrap();
    let mut forwarder = Proc::spawn(
        "forwarder",
        world
            .operator_netns()
            .command("python3")
            .args(["-c", FORWARDER, MOVED, OPERATOR_ADDR, &port])
            .stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    forwarder
        .read_line_until(Duration::from_secs(10), |l| l == "LISTENING")
        .unwrap();

    world.ask_hello();
    // The request had the name looked up: its address is listed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = world.aictl_json(&["stats"]);
        let listed = stats.as_array().unwrap().iter().any(|r| {
            r["destination"]
                .as_str()
                .is_some_and(|d| d.contains(OPERATOR_ADDR) && d.contains(&port))
        });
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the name's address was never listed: {stats:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the keep-alive window the connection is closed; its last packets are in.
    std::thread::sleep(Duration::from_secs(1));
    let (unlisted_before, listed_before) = settled_rows(&world);

    write_hosts(&hosts, MOVED);
    world.ask_hello();
    forwarder
        .read_line_until(Duration::from_secs(5), |l| l == "CONNECTION")
        .expect("the second request went to the name's new address");
    std::thread::sleep(Duration::from_secs(1));
    let (unlisted, listed) = settled_rows(&world);
    assert_eq!(listed, listed_before, "the listed endpoint carried none of it");
    let grew: Vec<u64> = unlisted
        .iter()
        .zip(unlisted_before)
        .map(|(now, was)| now - was)
        .collect();
    // Both ways: the request out (a chat completion's JSON, a few hundred bytes), the answer in.
    assert!(grew[0] >= 3 && grew[1] >= 300, "egress {grew:?}");
    assert!(grew[2] >= 3 && grew[3] >= 300, "ingress {grew:?}");
}
