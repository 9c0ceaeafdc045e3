//! AI-first shaping through the real daemon: with `fastpath.shape` on, aiesimd installs its HTB
//! root qdisc on the device's wwan0, a real answer's request packets leave through the
//! interactive class, and after a crash the next aiesimd takes the left-behind qdisc over.

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
    let out = world
        .aictl()
        .args(["ask", "--max-tokens", "8", "Say hello."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
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
