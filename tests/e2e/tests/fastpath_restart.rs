//! The fast path across a daemon crash: with its maps and links pinned in a bpffs (mounted by
//! the test, private to it), aiesimd is killed (`SIGKILL`) and restarted while a ping flood
//! crosses wwan0. Every packet is counted (the pinned classifier keeps running while no daemon
//! does, and the new one takes it over atomically), the counters go on from where they were,
//! and a clean stop leaves no pin behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use aiesim_dbus::proxy::FastpathProxy;
use aiesim_e2e::{OPERATOR_ADDR, World, WorldOptions, output_text, skip_unless_ready};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A bpffs mounted for this test alone; unmounted when dropped.
struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    fn mount() -> Self {
        let dir = tempfile::Builder::new().prefix("aiesim-bpffs-").tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mount -t bpf: {}", output_text(&out));
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

async fn egress_ingress(world: &World) -> (u64, u64) {
    let conn = world.connect().await.unwrap();
    let stats = FastpathProxy::new(&conn).await.unwrap().get_statistics().await.unwrap();
    let n = |k: &str| u64::try_from(&stats[k]).unwrap();
    (n("egress_packets"), n("ingress_packets"))
}

/// "N packets transmitted, M received" from ping's summary.
fn ping_counts(summary: &str) -> (u64, u64) {
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in {summary:?}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn a_crashed_daemon_leaves_the_classifier_counting_and_a_clean_stop_unpins() {
    if skip_unless_ready("a_crashed_daemon_leaves_the_classifier_counting_and_a_clean_stop_unpins") {
        return;
    }
    let bpffs = Bpffs::mount();
    let pin_dir = bpffs.path().join("aiesim");
    let mut world = World::start(&WorldOptions {
        fastpath_config: format!("pin_dir = \"{}\"\n", pin_dir.display()),
        ..WorldOptions::default()
    })
    .unwrap();
    let pinned = files(&pin_dir);
    assert!(
        pinned.iter().any(|p| p.ends_with("links/tcx-wwan0-egress")) && pinned.iter().any(|p| p.ends_with("STATS")),
        "{pinned:?}"
    );

    let (egress_before, ingress_before) = egress_ingress(&world).await;
    let mut ping = world
        .device_netns()
        .command("ping")
        .args(["-q", "-i", "0.002", OPERATOR_ADDR])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.restart_daemon(true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ping.try_wait().unwrap().is_none(), "the flood ran across the restart");
    kill(Pid::from_raw(i32::try_from(ping.id()).unwrap()), Signal::SIGINT).unwrap();
    let out = ping.wait_with_output().unwrap();
    let (sent, received) = ping_counts(&String::from_utf8_lossy(&out.stdout));
    assert!(sent > 300 && received > 0, "{}", output_text(&out));

    // Nothing went by uncounted, and nothing counted before was lost: other packets (ARP, the
    // daemon's own) only add.
    let (egress_after, ingress_after) = egress_ingress(&world).await;
    assert!(
        egress_after >= egress_before + sent,
        "egress {egress_before} → {egress_after} while ping sent {sent}"
    );
    assert!(
        ingress_after >= ingress_before + received,
        "ingress {ingress_before} → {ingress_after} while ping received {received}"
    );

    // A clean stop detaches and unpins everything.
    world.daemon.terminate().unwrap();
    assert_eq!(files(&pin_dir), Vec::<PathBuf>::new());
    drop(world);
}
