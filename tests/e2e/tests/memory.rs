//! Memory given back while idle: the daemon (debug build, real dbus-daemon, the simulated QMI
//! modem and the real model) answers a question through real aictl, and once no request has
//! come for `requests.idle_trim_s` it unmaps the code pages that answer faulted in: its
//! file-backed resident memory falls. The next question is answered as well (the code comes
//! back from the binary).

use std::time::Duration;

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
