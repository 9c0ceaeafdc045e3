//! Crash consistency of the ledger: aiesimd is killed (`SIGKILL`) at many points of a streamed answer —
//! before the first token, after a few, after the last — and restarted on the same journal.
//! After every restart the app's spending must have grown by exactly what the journal owed it:
//! the prompt estimate plus every token that reached the app's socket (written to the journal
//! before it was sent), or one more when the crash fell between journalling a token and sending
//! it; a request that finished is charged what its `done` event said. Never less (nothing
//! lost), never more (nothing doubled, also across the following restarts).

use aiesim_dbus::ChatDict as _;
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    time::Duration,
};

use aiesim_dbus::{
    ChatOptions, Message, StreamEvent,
    proxy::{BrokerProxy, BudgetProxy},
};
use aiesim_e2e::{CloudOptions, World, WorldOptions, skip_unless_ready};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use zbus::OwnedVariant;

const ROUNDS: u32 = 50;

fn question() -> ChatOptions {
    ChatOptions {
        messages: vec![Message::new("user", "Count from one to twenty in words.")],
        max_tokens: Some(24),
        temperature: Some(0.0),
        ..ChatOptions::default()
    }
}

async fn spent(world: &World) -> u64 {
    let conn = world.connect().await.unwrap();
    let budget = BudgetProxy::new(&conn).await.unwrap();
    let mine: HashMap<String, OwnedVariant> = budget.get_mine().await.unwrap();
    assert_eq!(
        u32::try_from(&mine["in_flight"]).unwrap(),
        0,
        "nothing stays reserved: {mine:?}"
    );
    u64::try_from(&mine["spent"]).unwrap()
}

/// What one stream delivered: deltas, and the final event's charge if it came.
struct Delivered {
    deltas: u64,
    done: Option<u64>,
}

/// Reads `first` deltas (or to the end), then lets `crash` run, then drains what the daemon had
/// written to the socket before it died.
async fn stream_then(world: &World, first: u64, crash: impl FnOnce()) -> Delivered {
    let conn = world.connect().await.unwrap();
    let broker = BrokerProxy::new(&conn).await.unwrap();
    let (_path, fd) = broker.chat(question().to_chat_dict().unwrap()).await.unwrap();
    let socket = UnixStream::from(std::os::fd::OwnedFd::from(fd));
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut lines = BufReader::new(socket);
    let mut delivered = Delivered { deltas: 0, done: None };
    let mut crash = Some(crash);
    let mut line = String::new();
    loop {
        if delivered.deltas >= first
            && let Some(crash) = crash.take()
        {
            crash();
        }
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        match StreamEvent::from_line(&line).unwrap() {
            StreamEvent::Delta { .. } => delivered.deltas += 1,
            StreamEvent::Done { charged, .. } => {
                delivered.done = Some(charged);
                break;
            }
            StreamEvent::Error { name, message } => panic!("{name}: {message}"),
        }
    }
    if let Some(crash) = crash.take() {
        crash();
    }
    delivered
}

#[tokio::test]
async fn sigkill_at_any_point_loses_and_doubles_no_charge() {
    if skip_unless_ready("sigkill_at_any_point_loses_and_doubles_no_charge") {
        return;
    }
    // Without usage from the cloud, a clean request costs the prompt estimate plus one token
    // per delta: the same measure the journal's progress uses.
    let mut world = World::start(&WorldOptions {
        cloud: CloudOptions {
            no_usage: true,
            ..CloudOptions::default()
        },
        ..WorldOptions::default()
    })
    .unwrap();
    let before = spent(&world).await;
    let clean = stream_then(&world, u64::MAX, || {}).await;
    let charged = clean.done.expect("a clean request ends with done");
    assert_eq!(spent(&world).await - before, charged);
    let prompt = charged - clean.deltas;
    assert!(
        prompt > 0 && clean.deltas > 4,
        "prompt {prompt}, deltas {}",
        clean.deltas
    );

    let mut crashed_mid_stream = 0;
    for round in 0..ROUNDS {
        let before = spent(&world).await;
        // Crash after 0, 1, 2, ... deltas; now and then after the whole answer.
        let first = u64::from(round) % (clean.deltas + 2);
        let pid = Pid::from_raw(i32::try_from(world.daemon.pid()).unwrap());
        let delivered = stream_then(&world, first, || kill(pid, Signal::SIGKILL).unwrap()).await;
        world
            .restart_daemon(true)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let grew = spent(&world).await - before;
        if let Some(charged) = delivered.done {
            assert_eq!(grew, charged, "round {round}: a finished request");
        } else {
            crashed_mid_stream += 1;
            {
                let floor = if delivered.deltas == 0 {
                    0
                } else {
                    prompt + delivered.deltas
                };
                let allowed = [floor, prompt + delivered.deltas + 1];
                assert!(
                    allowed.contains(&grew),
                    "round {round}: {} deltas reached the app and the charge grew by {grew}, not one of {allowed:?}",
                    delivered.deltas
                );
            }
        }
    }
    assert!(
        crashed_mid_stream >= ROUNDS / 2,
        "only {crashed_mid_stream} rounds crashed mid-stream"
    );
}
