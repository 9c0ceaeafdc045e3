//! Memory given back while idle: the daemon (debug build, real dbus-daemon, the simulated QMI
//! modem and the real model) answers a question through real aictl, and once no request has
//! come for `requests.idle_trim_s` it unmaps the code pages that answer faulted in: its
//! file-backed resident memory falls. The next question is answered as well (the code comes
//! back from the binary). While it stays idle, what each watchdog pet maps back (a bus round
//! trip: megabytes of code) is given back after the pet.

use std::time::{Duration, Instant};

use aiesim_e2e::{World, WorldOptions, skip_unless_ready};

/// The daemon's resident file-backed memory (mostly its own code), in KiB.
fn rss_file_kib(world: &World) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", world.daemon.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn ask(world: &World) {
    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "4", "Say hi."])
        .output()
        .unwrap();
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "aictl ask: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        world.daemon.log()
    );
}

#[test]
fn an_idle_daemon_gives_back_its_code_pages_and_still_answers() {
    if skip_unless_ready("an_idle_daemon_gives_back_its_code_pages_and_still_answers") {
        return;
    }
    let world = World::start(&WorldOptions {
        extra_config: "[requests]\nidle_trim_s = 1\n".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    ask(&world);
    let busy = rss_file_kib(&world);
    // Idle for at least two periods (the first sees the request's place, the second that nothing
    // moved); polled, for a loaded machine.
    let mut idle = busy;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        idle = rss_file_kib(&world);
        if idle + 1024 < busy {
            break;
        }
    }
    assert!(
        idle + 1024 < busy,
        "file-backed RSS {busy} KiB after a request, {idle} KiB after 10 s idle\n{}",
        world.daemon.log()
    );
    ask(&world);
}

#[test]
fn an_idle_daemon_gives_back_what_each_watchdog_pet_mapped() {
    const RETRIM: &str = "idle: gave back what the watchdog pet mapped";
    if skip_unless_ready("an_idle_daemon_gives_back_what_each_watchdog_pet_mapped") {
        return;
    }
    // The watchdog is the tests' 2 s: a pet every second.
    let world = World::start(&WorldOptions {
        extra_config: "[requests]\nidle_trim_s = 1\n".into(),
        daemon_log: Some("info,aiesimd=debug,aiesimd::idle=trace"),
        ..WorldOptions::default()
    })
    .unwrap();
    ask(&world);
    let busy = rss_file_kib(&world);
    // Three pets given back, each read the moment it is logged.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    let mut after = Vec::new();
    while after.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "{} pets given back in 20 s idle\n{}",
            after.len(),
            world.daemon.log()
        );
        let now = world.daemon.log().matches(RETRIM).count();
        if now > seen {
            seen = now;
            after.push(rss_file_kib(&world));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        after.iter().all(|&kib| kib + 1024 < busy),
        "file-backed RSS {busy} KiB after a request, {after:?} KiB after pets given back"
    );
    ask(&world);
}
