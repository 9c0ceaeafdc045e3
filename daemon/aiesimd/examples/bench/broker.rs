//! The broker's own cost: time to first token through it against the same HTTP client asking
//! the same local endpoint directly, and how many streams it carries at once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aiesim_e2e::bench::{Figure, Target};
use aiesim_wire::{ChatOptions, Message, StreamEvent};
use aiesimd::{
    broker::{Broker, EventSink, Limits, SinkClosed},
    clock::SystemClock,
    cloud::{ChatRequest, ChatStream, Cloud, CloudError, CloudEvent, HttpCloud, HttpOptions},
    config::EndpointConfig,
    ledger::{Budgets, Ledger},
    router::{DEFAULT_PRICE_PER_1K, Router, Tier},
};
use futures_util::StreamExt as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

/// The stub endpoint's time to its first token: a fast metro model.
const STUB_FIRST_TOKEN: Duration = Duration::from_millis(20);
/// Requests timed each way, alternating.
const TTFT_ROUNDS: usize = 100;
/// Streams started at once in the concurrency figure.
const STREAMS: usize = 1_000;

fn budgets() -> Budgets {
    Budgets {
        app_tokens: u64::MAX / 4,
        device_tokens: u64::MAX / 4,
        ..Budgets::default()
    }
}

fn broker<C: Cloud>(cloud: C, url: &str, max_concurrent: usize) -> Broker<C, SystemClock> {
    let endpoint = EndpointConfig {
        name: "metro".into(),
        url: url.into(),
        tier: Tier::Metro,
        models: vec!["m".into()],
        price_per_1k: DEFAULT_PRICE_PER_1K,
        max_concurrent,
    };
    Broker::new(
        cloud,
        Ledger::in_memory(budgets()),
        Router::new(&[endpoint], SystemClock, Duration::from_secs(30)),
        Limits {
            default_max_tokens: 16,
            max_tokens_cap: 16,
            max_in_flight: STREAMS,
            deadline: Duration::from_secs(60),
            max_answer_bytes: 1 << 20,
            failover_attempts: 1,
            hedge_after: None,
        },
    )
}

fn question() -> ChatOptions {
    ChatOptions {
        messages: vec![Message::new("user", "hi")],
        max_tokens: Some(8),
        ..ChatOptions::default()
    }
}

/// A local OpenAI-compatible endpoint: reads the request, waits `STUB_FIRST_TOKEN`, streams
/// four deltas, usage and `[DONE]`, then closes.
async fn stub_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a local port");
    let url = format!("http://{}/v1", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body's content-length.
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
                    .await;
                tokio::time::sleep(STUB_FIRST_TOKEN).await;
                let delta = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n";
                let mut body = delta.repeat(4);
                body.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n");
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

/// Notes when the first delta came.
pub struct FirstDelta(pub Option<Instant>);

impl EventSink for FirstDelta {
    async fn send(&mut self, event: &StreamEvent) -> Result<(), SinkClosed> {
        if matches!(event, StreamEvent::Delta { .. }) {
            self.0.get_or_insert_with(Instant::now);
        }
        Ok(())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median time to first token asking the stub directly with the daemon's HTTP client, and
/// through the broker (admission, routing, scheduling, reservation, metering) with another.
pub async fn ttft() -> (Duration, Duration) {
    let url = stub_endpoint().await;
    let direct = HttpCloud::new(HttpOptions::default()).expect("an HTTP client");
    let brokered = broker(HttpCloud::new(HttpOptions::default()).expect("an HTTP client"), &url, 4);
    let request = ChatRequest {
        model: "m".into(),
        messages: question().messages,
        max_tokens: 8,
        temperature: None,
    };
    let (mut plain, mut through) = (Vec::new(), Vec::new());
    for _ in 0..TTFT_ROUNDS {
        let started = Instant::now();
        let mut stream = direct.chat(&url, &request).await.expect("the stub answers");
        while let Some(event) = stream.next().await {
            if matches!(event, Ok(CloudEvent::Delta(_))) {
                plain.push(started.elapsed());
                break;
            }
        }
        while stream.next().await.is_some() {}

        let started = Instant::now();
        let admitted = brokered.admit("bench", question()).expect("an unlimited budget");
        let mut sink = FirstDelta(None);
        brokered.run(admitted, &mut sink, std::future::pending()).await;
        through.push(sink.0.expect("a first delta") - started);
    }
    (median(plain), median(through))
}

/// An in-process endpoint that streams 50 deltas 20 ms apart: each stream stays open a second.
struct Steady;

impl Cloud for Steady {
    async fn chat(&self, _base_url: &str, _request: &ChatRequest) -> Result<ChatStream, CloudError> {
        Ok(steady())
    }
}

fn steady() -> ChatStream {
    Box::pin(futures_util::stream::unfold(0, |i| async move {
        if i == 50 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok(CloudEvent::Delta(format!("t{i} "))), i + 1))
    }))
}

/// Counts streams that have had a delta and not yet ended.
struct Open {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    started: bool,
}

impl EventSink for Open {
    async fn send(&mut self, event: &StreamEvent) -> Result<(), SinkClosed> {
        if !self.started && matches!(event, StreamEvent::Delta { .. }) {
            self.started = true;
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
        }
        if event.is_final() && self.started {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// `STREAMS` streams from 100 apps at once through the broker: how many were open together at
/// the peak, how many completed, and the wall time against the same streams read bare.
pub async fn concurrent_streams() -> (usize, usize, Duration, Duration) {
    let started = Instant::now();
    let bare: Vec<_> = (0..STREAMS)
        .map(|_| tokio::spawn(async { steady().count().await }))
        .collect();
    for task in bare {
        task.await.expect("a bench task");
    }
    let baseline = started.elapsed();

    let broker = Arc::new(broker(Steady, "http://stub/v1", STREAMS));
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let admitted = broker
                .admit(&format!("app-{}", i % 100), question())
                .expect("an unlimited budget");
            let broker = Arc::clone(&broker);
            let mut sink = Open {
                now: Arc::clone(&now),
                peak: Arc::clone(&peak),
                started: false,
            };
            tokio::spawn(async move { broker.run(admitted, &mut sink, std::future::pending()).await })
        })
        .collect();
    let mut completed = 0;
    for task in tasks {
        let outcome = task.await.expect("a bench task");
        if outcome.error.is_none() {
            completed += 1;
        }
    }
    (peak.load(Ordering::SeqCst), completed, started.elapsed(), baseline)
}

/// Both figures, printed against their baselines.
pub async fn report() {
    let (direct, through) = ttft().await;
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!("time to first token, a local stub endpoint with a 20 ms first token, median of 100 each:");
    Figure::new("TTFT through the broker", ms(through), "ms")
        .against("direct HTTP", ms(direct))
        .target(Target::RatioAtMost(1.02))
        .record();
    let (peak, completed, wall, bare) = concurrent_streams().await;
    println!(
        "concurrent streams through the broker core, 1000 from 100 apps, each 50 deltas over 1 s (stub endpoint):"
    );
    #[expect(clippy::cast_precision_loss, reason = "stream counts far below 2^52")]
    let at_once = peak.min(completed) as f64;
    Figure::new("concurrent streams, open at once and completed", at_once, "streams")
        .target(Target::AtLeast(500.0))
        .record();
    Figure::new("concurrent streams, wall time", wall.as_secs_f64(), "s")
        .against("the same streams read bare", bare.as_secs_f64())
        .record();
}
