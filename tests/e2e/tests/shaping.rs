//! AI-first shaping through the real daemon: with `fastpath.shape` on, aiesimd installs its HTB
//! root qdisc on the device's wwan0, a real answer's request packets leave through the
//! interactive class, and after a crash the next aiesimd takes the left-behind qdisc over.
//! Without a configured rate the shaper follows the uplink rate the simulated modem reports
//! (QMI WDS Get Channel Rates, MBIM packet service), read back from the kernel with `tc`.

use aiesim_e2e::{World, WorldOptions, output_text as text, skip_unless_ready};

/// `tc` in the device's network namespace.
fn tc(world: &World, args: &[&str]) -> String {
    let out = world.device_netns().command("tc").args(args).output().unwrap();
    assert!(out.status.success(), "tc {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Packets sent by HTB class `handle` on wwan0.
fn sent_by(world: &World, handle: &str) -> u64 {
    let classes = tc(world, &["-s", "class", "show", "dev", "wwan0"]);
    let block = classes
        .split("class htb ")
        .find(|block| block.split_whitespace().next() == Some(handle))
        .unwrap_or_else(|| panic!("no class {handle} in:\n{classes}"));
    let sent = block.split_once(" Sent ").expect("a Sent line").1;
    sent.split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("a packet count")
}

fn ask(world: &World) {
    world.ask_hello();
}

#[tokio::test]
async fn the_daemon_shapes_wwan0_and_ai_requests_leave_through_the_interactive_class() {
    if skip_unless_ready("the_daemon_shapes_wwan0_and_ai_requests_leave_through_the_interactive_class") {
        return;
    }
    let mut world = World::start(&WorldOptions {
        fastpath_config: "shape = true\nuplink_kbit = 2000".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let root = tc(&world, &["qdisc", "show", "dev", "wwan0", "root"]);
    assert!(root.starts_with("qdisc htb ae51: "), "{root}");
    assert_eq!(sent_by(&world, "ae51:10"), 0);

    ask(&world);
    assert!(sent_by(&world, "ae51:10") > 0, "the request went out as AI");

    // Killed, it cannot clean up; the next daemon takes its qdisc over with fresh classes.
    world.restart_daemon(true).unwrap();
    let root = tc(&world, &["qdisc", "show", "dev", "wwan0", "root"]);
    assert!(root.starts_with("qdisc htb ae51: "), "{root}");
    assert_eq!(sent_by(&world, "ae51:10"), 0, "a new qdisc, not the old one");
    ask(&world);
    assert!(sent_by(&world, "ae51:10") > 0, "the request went out as AI");
}

/// The rate (bit/s) of HTB class `handle` on wwan0, as the kernel reports it. iproute2 6.1's
/// `tc -j class show` prints text for HTB classes, so the text form is read: `rate 45Mbit`.
fn class_rate_bps(world: &World, handle: &str) -> u64 {
    let classes = tc(world, &["class", "show", "dev", "wwan0"]);
    let block = classes
        .split("class htb ")
        .find(|block| block.split_whitespace().next() == Some(handle))
        .unwrap_or_else(|| panic!("no class {handle} in:\n{classes}"));
    let rate = block
        .split_whitespace()
        .skip_while(|w| *w != "rate")
        .nth(1)
        .unwrap_or_else(|| panic!("no rate in {block}"));
    let digits = rate.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale = match &rate[digits.len()..] {
        "bit" => 1.0,
        "Kbit" => 1e3,
        "Mbit" => 1e6,
        "Gbit" => 1e9,
        unit => panic!("unknown unit {unit:?} in {rate}"),
    };
    let value: f64 = digits.parse().unwrap_or_else(|_| panic!("{rate} is not a rate"));
    // tc prints at most a few significant digits; the rates used here are exact in them.
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rate in bit/s")]
    let bps = (value * scale).round() as u64;
    bps
}

/// The shaper's rate as `aictl status` shows it, once it is `kbit` (waits for the daemon).
fn wait_uplink(world: &World, kbit: u64) {
    world.wait_json(&["status"], &format!("shaped at {kbit} kbit/s"), |doc| {
        doc["fastpath"]["uplink_kbit"].as_u64() == Some(kbit)
    });
}

fn the_shaper_follows_the_modem(protocol: &'static str) {
    let mut world = World::start(&WorldOptions {
        // No uplink_kbit: the modem's rate, 90 % of it, at least 256 kbit/s.
        fastpath_config: "shape = true\nuplink_percent = 90".into(),
        modem_protocol: protocol,
        ..WorldOptions::default()
    })
    .unwrap();
    // The simulator's network grants 50 Mbit/s up at first.
    wait_uplink(&world, 45_000);
    let status = world.aictl_json(&["status"]);
    assert_eq!(status["fastpath"]["uplink_source"], "modem", "{status:#}");
    assert_eq!(class_rate_bps(&world, "ae51:1"), 45_000_000);
    assert_eq!(class_rate_bps(&world, "ae51:10"), 33_750_000);

    // A congested cell: the classes change in place (the qdisc and its counters stay).
    ask(&world);
    let sent = sent_by(&world, "ae51:10");
    assert!(sent > 0, "the request went out as AI");
    world.modem_control("rates 2000").unwrap();
    wait_uplink(&world, 1800);
    assert_eq!(class_rate_bps(&world, "ae51:1"), 1_800_000);
    assert_eq!(class_rate_bps(&world, "ae51:10"), 1_350_000);
    assert_eq!(sent_by(&world, "ae51:10"), sent, "the same classes, not new ones");

    // A rate below the floor is raised to it.
    world.modem_control("rates 100").unwrap();
    wait_uplink(&world, 256);
    assert_eq!(class_rate_bps(&world, "ae51:1"), 256_000);

    // A restarted daemon shapes at the rate of its first reading of the modem.
    world.restart_daemon(false).unwrap();
    wait_uplink(&world, 256);
    assert_eq!(class_rate_bps(&world, "ae51:1"), 256_000);
}

#[tokio::test]
async fn the_shaper_follows_the_uplink_rate_a_qmi_modem_reports() {
    if skip_unless_ready("the_shaper_follows_the_uplink_rate_a_qmi_modem_reports") {
        return;
    }
    the_shaper_follows_the_modem("qmi");
}

#[tokio::test]
async fn the_shaper_follows_the_uplink_rate_an_mbim_modem_reports() {
    if skip_unless_ready("the_shaper_follows_the_uplink_rate_an_mbim_modem_reports") {
        return;
    }
    the_shaper_follows_the_modem("mbim");
}
