//! The systemd watchdog: aiesimd, run as the unit runs it (user `aiesim`, the shipped bus
//! policy), pets it while it answers itself through the bus, stops while the bus is frozen,
//! and starts again when the bus is back.

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
