//! One app of the load run (`tests/e2e/tests/load.rs`): from its own cgroup (so the daemon
//! knows it as one app), opens `--streams` `Chat` streams at once at `--start-at`, reads each to
//! its end, and again in waves until `--seconds` have passed; then prints one JSON line: what
//! each stream was told (its `done` and its `Finished` signal, which must agree), refusals and
//! failures by error name, and each stream's interval for the peak of concurrency.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aiesim_dbus::{ChatDict as _, ChatOptions, Message, StreamEvent, proxy::BrokerProxy};
use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use tokio::io::AsyncBufReadExt as _;
use zbus::OwnedVariant;

struct Args {
    bus: String,
    streams: usize,
    seconds: f64,
    max_tokens: u32,
    start_at_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        bus: String::new(),
        streams: 10,
        seconds: 0.0,
        max_tokens: 16,
        start_at_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bus" => args.bus = value,
            "--streams" => args.streams = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--max-tokens" => args.max_tokens = value.parse()?,
            "--start-at" => args.start_at_ms = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(!args.bus.is_empty(), "--bus ADDRESS is required");
    Ok(args)
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0)
}

/// How one stream ended.
enum End {
    Done(u64),
    Error(String),
    /// The socket closed without a final event.
    Cut,
}

/// One stream: its request path, when it was opened and ended (ms since the epoch), its end.
struct Stream {
    path: String,
    opened: u64,
    ended: u64,
    end: End,
}

async fn read_stream(fd: OwnedFd) -> End {
    let std = std::os::unix::net::UnixStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return End::Cut;
    }
    let Ok(socket) = tokio::net::UnixStream::from_std(std) else {
        return End::Cut;
    };
    let mut lines = tokio::io::BufReader::new(socket).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match StreamEvent::from_line(&line) {
            Ok(StreamEvent::Delta { .. }) => {}
            Ok(StreamEvent::Done { charged, .. }) => return End::Done(charged),
            Ok(StreamEvent::Error { name, .. }) => return End::Error(name),
            Err(e) => return End::Error(format!("bad line {line:?}: {e}")),
        }
    }
    End::Cut
}

/// One wave: `n` streams opened at once, each read to its end; refusals by error name.
async fn wave(broker: &BrokerProxy<'_>, n: usize, max_tokens: u32, refused: &mut HashMap<String, u64>) -> Vec<Stream> {
    let question = ChatOptions {
        messages: vec![Message::new("user", "Say something, please.")],
        max_tokens: Some(max_tokens),
        ..ChatOptions::default()
    };
    let dict = question.to_chat_dict().expect("a valid request");
    let calls = (0..n).map(|_| {
        let dict = dict.clone();
        async move {
            let opened = now_ms();
            match broker.chat(dict).await {
                Ok((path, fd)) => {
                    let end = read_stream(OwnedFd::from(fd)).await;
                    Ok(Stream {
                        path: path.to_string(),
                        opened,
                        ended: now_ms(),
                        end,
                    })
                }
                Err(zbus::Error::MethodError(name, _, _)) => Err(name.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    let mut streams = Vec::new();
    for result in futures_util::future::join_all(calls).await {
        match result {
            Ok(stream) => streams.push(stream),
            Err(name) => *refused.entry(name).or_default() += 1,
        }
    }
    streams
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let conn = zbus::connection::Builder::address(args.bus.as_str()).build().await?;
    // Every Finished from before the first call on: a signal may come before its stream ends.
    let told: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut signals = aiesim_e2e::finished_signals(&conn).await;
    let record = Arc::clone(&told);
    tokio::spawn(async move {
        while let Some(Ok(message)) = signals.next().await {
            let path = message.header().path().map(ToString::to_string).unwrap_or_default();
            let Ok((result,)) = message.body().deserialize::<(HashMap<String, OwnedVariant>,)>() else {
                continue;
            };
            let charged = result.get("charged").and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
            record.lock().expect("told lock").insert(path, charged);
        }
    });
    let broker = BrokerProxy::new(&conn).await?;
    tokio::time::sleep(Duration::from_millis(args.start_at_ms.saturating_sub(now_ms()))).await;

    let started = std::time::Instant::now();
    let mut streams = Vec::new();
    let mut refused = HashMap::new();
    loop {
        streams.extend(wave(&broker, args.streams, args.max_tokens, &mut refused).await);
        if started.elapsed().as_secs_f64() >= args.seconds {
            break;
        }
    }
    // Every opened stream's Finished, for a bounded time.
    let waited = std::time::Instant::now();
    while waited.elapsed() < Duration::from_secs(10) {
        let all = {
            let told = told.lock().expect("told lock");
            streams.iter().all(|s| told.contains_key(&s.path))
        };
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let told = told.lock().expect("told lock").clone();
    let (mut done, mut cut, mut charged, mut no_finished) = (0u64, 0u64, 0u64, 0u64);
    let mut failed: HashMap<String, u64> = HashMap::new();
    let mut mismatches = Vec::new();
    for s in &streams {
        let finished = told.get(&s.path).copied();
        match (&s.end, finished) {
            (_, None) => no_finished += 1,
            (End::Done(c), Some(f)) if *c != f => mismatches.push(format!("{}: done {c}, Finished {f}", s.path)),
            _ => {}
        }
        charged += finished.unwrap_or(0);
        match &s.end {
            End::Done(_) => done += 1,
            End::Error(name) => *failed.entry(name.clone()).or_default() += 1,
            End::Cut => cut += 1,
        }
    }
    let intervals: Vec<[u64; 2]> = streams.iter().map(|s| [s.opened, s.ended]).collect();
    println!(
        "{}",
        serde_json::json!({
            "opened": streams.len(),
            "done": done,
            "cut": cut,
            "failed": failed,
            "refused": refused,
            "charged": charged,
            "no_finished": no_finished,
            "mismatches": mismatches,
            "intervals": intervals,
        })
    );
    Ok(())
}
