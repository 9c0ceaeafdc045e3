//! The clsact path through the real daemon (what kernels before 6.6 get): with
//! `fastpath.attach = "clsact"` aiesimd adds a clsact qdisc with its two `cls_bpf` filters on
//! wwan0 even where TCX exists, says so in `aictl status`, counts a real answer's packets, and a
//! clean stop removes the qdisc and filters again.

use aiesim_e2e::{World, WorldOptions, output_text as text, skip_unless_ready};

/// `tc` in the device's network namespace.
fn tc(world: &World, args: &[&str]) -> String {
    let out = world.device_netns().command("tc").args(args).output().unwrap();
    assert!(out.status.success(), "tc {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_daemon_attaches_with_clsact_when_told_counts_and_detaches() {
    if skip_unless_ready("the_daemon_attaches_with_clsact_when_told_counts_and_detaches") {
        return;
    }
    let mut world = World::start(&WorldOptions {
        fastpath_config: "attach = \"clsact\"".into(),
        ..WorldOptions::default()
    })
    .unwrap();
    let status = world.aictl_json(&["status"]);
    assert_eq!(status["fastpath"]["attach_mode"], "clsact", "{status:#}");
    assert!(tc(&world, &["qdisc", "show", "dev", "wwan0"]).contains("qdisc clsact"));
    for hook in ["egress", "ingress"] {
        let filters = tc(&world, &["filter", "show", "dev", "wwan0", hook]);
        assert!(filters.contains(&format!("aiesim_{hook}")), "{filters}");
    }

    world.ask_hello();
    let status = world.aictl_json(&["status"]);
    assert!(status["fastpath"]["ai_packets"].as_u64().unwrap_or(0) > 0, "{status:#}");
    assert!(
        status["fastpath"]["ingress_packets"].as_u64().unwrap_or(0) > 0,
        "{status:#}"
    );

    world.daemon.terminate().unwrap();
    assert!(!tc(&world, &["qdisc", "show", "dev", "wwan0"]).contains("clsact"));
    assert!(tc(&world, &["filter", "show", "dev", "wwan0", "egress"]).is_empty());
}
