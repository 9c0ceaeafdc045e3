//! The systemd watchdog: aiesimd, run as the unit runs it (user `aiesim`, the shipped bus
//! policy), pets it while it answers itself through the bus, stops while the bus is frozen,
//! and starts again when the bus is back. A bus that goes away (`systemctl restart dbus`) ends
//! the daemon at once with a failure, for `Restart=on-failure` to start it on the new bus.

use std::time::Duration;

use aiesim_e2e::{Account, World, WorldOptions, skip_unless_ready};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

fn pets(said: &[String]) -> usize {
    said.iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count()
}

#[test]
fn the_daemon_pets_the_watchdog_only_while_it_answers_itself() {
    if skip_unless_ready("the_daemon_pets_the_watchdog_only_while_it_answers_itself") {
        return;
    }
    let _daemon_user = Account::user("aiesim").unwrap();
    let world = World::start(&WorldOptions {
        daemon_user: Some("aiesim"),
        ..WorldOptions::default()
    })
    .unwrap();
    // WATCHDOG_USEC is 2 s: a pet every second.
    let healthy = world.notifications(Duration::from_secs(4));
    assert!(pets(&healthy) >= 2, "{healthy:?}\n{}", world.daemon.log());

    // A frozen bus: the daemon's own ping goes unanswered, so it stops petting (and systemd
    // would restart it).
    let bus = Pid::from_raw(i32::try_from(world.bus.pid()).unwrap());
    kill(bus, Signal::SIGSTOP).unwrap();
    let _in_flight = world.notifications(Duration::from_millis(1500));
    let frozen = world.notifications(Duration::from_secs(3));
    kill(bus, Signal::SIGCONT).unwrap();
    assert_eq!(pets(&frozen), 0, "{frozen:?}");

    let thawed = world.notifications(Duration::from_secs(4));
    assert!(pets(&thawed) >= 1, "{thawed:?}\n{}", world.daemon.log());
    assert!(
        world.daemon.log().contains("not petting the watchdog"),
        "the daemon said why it stopped: {}",
        world.daemon.log()
    );
}

#[test]
fn a_restarted_bus_ends_the_daemon_with_a_failure_and_the_next_one_serves_it() {
    if skip_unless_ready("a_restarted_bus_ends_the_daemon_with_a_failure_and_the_next_one_serves_it") {
        return;
    }
    let _daemon_user = Account::user("aiesim").unwrap();
    let mut world = World::start(&WorldOptions {
        daemon_user: Some("aiesim"),
        ..WorldOptions::default()
    })
    .unwrap();
    // The bus is stopped and a new one takes its address; the daemon must exit on its own.
    let mut old = world.restart_bus().unwrap();
    let status = old.try_wait().unwrap().expect("the old daemon exited");
    assert_eq!(
        status.code(),
        Some(1),
        "a failure, for Restart=on-failure: {status}\n{}",
        old.log()
    );
    assert!(old.log().contains("lost the connection to the bus"), "{}", old.log());
    // The restarted daemon owns its name on the new bus, its modem is ready there, and it
    // pets the watchdog (its own ping goes through the new bus).
    let modem = world.aictl_json(&["modem"]);
    assert_eq!(modem["state"], "ready", "{modem:#}");
    let said = world.notifications(Duration::from_secs(3));
    assert!(pets(&said) >= 1, "{said:?}\n{}", world.daemon.log());
}
