//! The request path: admit (route + reserve), stream, meter, reconcile.
//!
//! Plain Rust: the D-Bus front end translates into [`Broker::admit`] and [`Broker::run`] and
//! never decides anything itself.

use std::future::Future;

use aiesim_wire::{ChatOptions, ErrorName, Message, StreamEvent, Usage};
use futures_util::StreamExt;

use crate::{
    clock::Clock,
    cloud::{ChatRequest, Cloud, CloudError, CloudEvent},
    ledger::{Ledger, LedgerError, Reservation},
    router::{Route, Router, RouterError},
};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the token budget does not cover this request")]
    Budget(#[source] LedgerError),
    #[error("the rate limit does not admit this request now")]
    Rate(#[source] LedgerError),
    #[error("no endpoint can take this request")]
    Route(#[source] RouterError),
    #[error("app \"{app}\" already has {limit} requests in flight")]
    InFlight { app: String, limit: usize },
}

impl BrokerError {
    /// The ledger's refusal: a rate to wait for, or a budget that is spent.
    fn refused(e: LedgerError) -> Self {
        match e {
            LedgerError::RateLimited { .. } => Self::Rate(e),
            e => Self::Budget(e),
        }
    }

    pub fn name(&self) -> ErrorName {
        match self {
            Self::Budget(LedgerError::CardFault(_)) => ErrorName::EsimError,
            Self::Budget(LedgerError::DebitTooLarge { .. } | LedgerError::Policy(_)) => ErrorName::InvalidArgument,
            Self::Budget(LedgerError::Journal(_) | LedgerError::Open(_) | LedgerError::Corrupt { .. }) => {
                ErrorName::Failed
            }
            Self::Budget(_) => ErrorName::BudgetExceeded,
            Self::Rate(_) => ErrorName::RateLimited,
            Self::Route(_) => ErrorName::NoEndpoint,
            Self::InFlight { .. } => ErrorName::LimitExceeded,
        }
    }
}

/// Bounds applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_max_tokens: u32,
    pub max_tokens_cap: u32,
    /// Requests one app may have in flight at once.
    pub max_in_flight: usize,
    /// How long one request may run, first byte to last.
    pub deadline: std::time::Duration,
    /// The most answer text one request may stream.
    pub max_answer_bytes: usize,
}

/// A request that passed admission: routed, with its tokens reserved.
#[derive(Debug)]
pub struct Admitted {
    reservation: Reservation,
    route: Route,
    request: ChatRequest,
    prompt_estimate: u32,
}

impl Admitted {
    pub fn route(&self) -> &Route {
        &self.route
    }
    pub fn reserved(&self) -> u64 {
        self.reservation.amount()
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndState {
    Done,
    Failed,
    Cancelled,
}

impl EndState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: EndState,
    pub usage: Usage,
    pub charged: u64,
    pub endpoint: String,
    pub model: String,
    /// Set when the request failed or was cancelled.
    pub error: Option<(ErrorName, String)>,
}

/// Where a request's events go: the app's stream socket, or a buffer for `Ask`.
pub trait EventSink: Send {
    /// Delivers one event; an error means the app is gone and the request is cancelled.
    fn send(&mut self, event: &StreamEvent) -> impl Future<Output = Result<(), SinkClosed>> + Send;
}

/// The app is gone or stopped reading; says which, in words.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0}")]
pub struct SinkClosed(pub &'static str);

pub struct Broker<C, K> {
    cloud: C,
    ledger: Ledger,
    router: Router<K>,
    limits: Limits,
}

impl<C: Cloud, K: Clock> Broker<C, K> {
    pub fn new(cloud: C, ledger: Ledger, router: Router<K>, limits: Limits) -> Self {
        Self {
            cloud,
            ledger,
            router,
            limits,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn router(&self) -> &Router<K> {
        &self.router
    }

    /// Routes the request and reserves its bounded cost, or refuses it.
    pub fn admit(&self, app: &str, options: ChatOptions) -> Result<Admitted, BrokerError> {
        // Checked and reserved on one thread (the daemon's runtime is single-threaded).
        if self.ledger.in_flight(app) >= self.limits.max_in_flight {
            return Err(BrokerError::InFlight {
                app: app.to_owned(),
                limit: self.limits.max_in_flight,
            });
        }
        let ChatOptions {
            messages,
            model,
            max_tokens,
            temperature,
            priority: _,
        } = options;
        let route = self.router.pick(model.as_deref()).map_err(BrokerError::Route)?;
        // Clamped to the daemon's cap and to what the chosen model can produce.
        let max_tokens = max_tokens
            .unwrap_or(self.limits.default_max_tokens)
            .min(self.limits.max_tokens_cap)
            .min(route.max_output.unwrap_or(u32::MAX));
        let prompt_estimate = estimate_prompt_tokens(&messages);
        let request = ChatRequest {
            model: route.model.clone(),
            messages,
            max_tokens,
            temperature,
        };
        let reservation = self
            .ledger
            .reserve(
                app,
                u64::from(prompt_estimate) + u64::from(max_tokens),
                route.price_per_1k,
                request_digest(&route, &request),
            )
            .map_err(BrokerError::refused)?;
        Ok(Admitted {
            reservation,
            route,
            request,
            prompt_estimate,
        })
    }

    /// Streams an admitted request into `sink` until it ends or `cancel` resolves, then charges
    /// what was used. Always ends the stream with exactly one final event.
    pub async fn run(
        &self,
        admitted: Admitted,
        sink: &mut impl EventSink,
        cancel: impl Future<Output = ()>,
    ) -> Outcome {
        let Admitted {
            mut reservation,
            route,
            request,
            prompt_estimate,
        } = admitted;
        let mut meter = Meter {
            prompt_estimate,
            deltas: 0,
            reported: None,
        };
        let ended = {
            let deadline = self.limits.deadline;
            let streamed = async {
                tokio::time::timeout(
                    deadline,
                    self.stream(&route, &request, sink, &mut meter, &mut reservation),
                )
                .await
                .unwrap_or_else(|_| {
                    Err((
                        EndState::Failed,
                        ErrorName::LimitExceeded,
                        format!("the request ran past its deadline of {} s", deadline.as_secs()),
                    ))
                })
            };
            tokio::pin!(streamed, cancel);
            // Biased: a cancel that is already due wins over output that is also ready.
            tokio::select! {
                biased;
                () = &mut cancel => Err((EndState::Cancelled, ErrorName::Cancelled, "the request was cancelled".to_owned())),
                r = &mut streamed => r,
            }
        };
        let usage = meter.usage();
        // Nothing reached the app and nothing was generated: nothing to bill.
        let used = if meter.deltas == 0 && meter.reported.is_none() && ended.is_err() {
            0
        } else {
            u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens)
        };
        let charged = reservation.commit(used).await;
        let (state, error) = match ended {
            Ok(()) => (EndState::Done, None),
            Err((state, name, message)) => (state, Some((name, message))),
        };
        let final_event = match &error {
            None => StreamEvent::Done {
                usage,
                charged,
                endpoint: route.endpoint.clone(),
                model: route.model.clone(),
            },
            Some((name, message)) => StreamEvent::Error {
                name: name.as_str().to_owned(),
                message: message.clone(),
            },
        };
        // The app may be gone already; the outcome is recorded either way.
        let _ = sink.send(&final_event).await;
        Outcome {
            state,
            usage,
            charged,
            endpoint: route.endpoint,
            model: route.model,
            error,
        }
    }

    async fn stream(
        &self,
        route: &Route,
        request: &ChatRequest,
        sink: &mut impl EventSink,
        meter: &mut Meter,
        reservation: &mut Reservation,
    ) -> Result<(), (EndState, ErrorName, String)> {
        let upstream = |e: CloudError| {
            (
                EndState::Failed,
                ErrorName::UpstreamFailed,
                format!("endpoint \"{}\": {}", route.endpoint, chain(&e)),
            )
        };
        let mut answer_bytes = 0usize;
        let mut events = match self.cloud.chat(&route.url, request).await {
            Ok(s) => s,
            Err(e) => {
                // No credential is the device's trouble, not the endpoint's.
                if !matches!(e, CloudError::Credential { .. }) {
                    self.router.report_failure(&route.endpoint);
                }
                return Err(upstream(e));
            }
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(CloudEvent::Delta(text)) => {
                    if text.is_empty() {
                        continue;
                    }
                    answer_bytes += text.len();
                    if answer_bytes > self.limits.max_answer_bytes {
                        return Err((
                            EndState::Failed,
                            ErrorName::LimitExceeded,
                            format!("the answer passed {} bytes", self.limits.max_answer_bytes),
                        ));
                    }
                    meter.deltas += 1;
                    // Journalled before the app has it: a crash charges at least what was delivered.
                    let delivered = u64::from(meter.prompt_estimate) + u64::from(meter.deltas);
                    if let Err(e) = reservation.progress(delivered).await {
                        return Err((EndState::Failed, ErrorName::Failed, chain(&e)));
                    }
                    if let Err(SinkClosed(why)) = sink.send(&StreamEvent::Delta { text }).await {
                        return Err((EndState::Cancelled, ErrorName::Cancelled, why.to_owned()));
                    }
                }
                Ok(CloudEvent::Usage(u)) => meter.reported = Some(u),
                Err(e) => {
                    if meter.deltas == 0 {
                        self.router.report_failure(&route.endpoint);
                    }
                    return Err(upstream(e));
                }
            }
        }
        self.router.report_success(&route.endpoint);
        Ok(())
    }
}

/// Counts what a request used, for when the endpoint does not say.
struct Meter {
    prompt_estimate: u32,
    deltas: u32,
    reported: Option<Usage>,
}

impl Meter {
    /// The endpoint's own usage when it sent one, else the prompt estimate plus one token per
    /// delivered delta — never zero for a request that produced output.
    fn usage(&self) -> Usage {
        match self.reported {
            Some(u) => Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens.max(self.deltas.min(1)),
            },
            None => Usage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: self.deltas,
            },
        }
    }
}

/// SHA-256 of what is paid for, named by the card's receipt: the method and URL, then the
/// model, the token limit and each message as `role NUL content NUL` (docs/ai-applet.md).
fn request_digest(route: &Route, request: &ChatRequest) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"POST ");
    h.update(route.url.trim_end_matches('/').as_bytes());
    h.update(b"/chat/completions\n");
    h.update(request.model.as_bytes());
    h.update(b"\n");
    h.update(request.max_tokens.to_be_bytes());
    for m in &request.messages {
        h.update(m.role.as_bytes());
        h.update([0]);
        h.update(m.content.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// A pessimistic prompt size: about 3 bytes a token plus per-message overhead.
fn estimate_prompt_tokens(messages: &[Message]) -> u32 {
    let bytes: usize = messages.iter().map(|m| m.content.len() + m.role.len()).sum();
    let tokens = bytes.div_ceil(3) + 4 * messages.len() + 2;
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// An error and its sources as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use aiesim_wire::Priority;
    use futures_util::stream;

    use super::*;
    use crate::{clock::ManualClock, cloud::ChatStream, config::EndpointConfig, router::Tier};

    /// A scripted cloud: the faults it plays (a broken stream, a refused connection) are ones
    /// the real model server cannot be made to produce on cue.
    /// One scripted chat: refused (`Err`) or a stream of events and failures.
    type Scripted = Result<Vec<Result<CloudEvent, ()>>, ()>;

    struct Script(Mutex<Vec<Scripted>>);

    impl Cloud for Script {
        async fn chat(&self, _base_url: &str, _request: &ChatRequest) -> Result<ChatStream, CloudError> {
            let next = self.0.lock().unwrap().remove(0);
            match next {
                Err(()) => Err(CloudError::test_connect()),
                Ok(events) => Ok(Box::pin(stream::iter(
                    events.into_iter().map(|e| e.map_err(|()| CloudError::test_broken())),
                ))),
            }
        }
    }

    #[derive(Default)]
    struct Collect(Vec<StreamEvent>, Option<usize>);

    impl EventSink for Collect {
        async fn send(&mut self, event: &StreamEvent) -> Result<(), SinkClosed> {
            if self.1.is_some_and(|n| self.0.len() >= n) {
                return Err(SinkClosed("the app closed its stream"));
            }
            self.0.push(event.clone());
            Ok(())
        }
    }

    fn broker(script: Vec<Scripted>) -> Broker<Script, ManualClock> {
        let endpoints = vec![
            EndpointConfig {
                name: "metro".into(),
                url: "http://m/v1".into(),
                tier: Tier::Metro,
                models: vec!["s".into()],
                price_per_1k: crate::router::DEFAULT_PRICE_PER_1K,
            },
            EndpointConfig {
                name: "prov".into(),
                url: "http://p/v1".into(),
                tier: Tier::Province,
                models: vec!["s".into()],
                price_per_1k: crate::router::DEFAULT_PRICE_PER_1K,
            },
        ];
        Broker::new(
            Script(Mutex::new(script)),
            Ledger::in_memory(crate::ledger::Budgets {
                app_tokens: 1_000,
                device_tokens: 10_000,
                ..crate::ledger::Budgets::default()
            }),
            Router::new(&endpoints, ManualClock::default(), Duration::from_secs(30)),
            Limits {
                default_max_tokens: 100,
                max_tokens_cap: 200,
                max_in_flight: 8,
                deadline: Duration::from_secs(600),
                max_answer_bytes: 1 << 20,
            },
        )
    }

    fn ask(max_tokens: Option<u32>) -> ChatOptions {
        ChatOptions {
            messages: vec![Message::new("user", "hello there")],
            max_tokens,
            priority: Priority::Interactive,
            ..Default::default()
        }
    }

    #[expect(clippy::unnecessary_wraps, reason = "scripts are lists of results")]
    fn delta(s: &str) -> Result<CloudEvent, ()> {
        Ok(CloudEvent::Delta(s.into()))
    }

    #[tokio::test]
    async fn streams_then_charges_reported_usage() {
        let b = broker(vec![Ok(vec![
            delta("Hi"),
            delta(" you"),
            Ok(CloudEvent::Usage(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
            })),
        ])]);
        let a = b.admit("app", ask(Some(50))).unwrap();
        assert_eq!(
            a.reserved(),
            50 + u64::from(estimate_prompt_tokens(&[Message::new("user", "hello there")]))
        );
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        assert_eq!(out.state, EndState::Done);
        assert_eq!(out.charged, 11);
        assert_eq!(sink.0.len(), 3);
        assert_eq!(
            sink.0[2],
            StreamEvent::Done {
                usage: Usage {
                    prompt_tokens: 9,
                    completion_tokens: 2
                },
                charged: 11,
                endpoint: "metro".into(),
                model: "s".into()
            }
        );
        assert_eq!(b.ledger().balance("app").spent, 11);
        assert_eq!(b.ledger().balance("app").reserved, 0);
    }

    #[tokio::test]
    async fn missing_usage_is_counted_not_zero() {
        let b = broker(vec![Ok(vec![delta("a"), delta("b"), delta("c")])]);
        let a = b.admit("app", ask(None)).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        let prompt = estimate_prompt_tokens(&[Message::new("user", "hello there")]);
        assert_eq!(
            out.usage,
            Usage {
                prompt_tokens: prompt,
                completion_tokens: 3
            }
        );
        assert_eq!(out.charged, u64::from(prompt) + 3);
    }

    #[tokio::test]
    async fn broken_stream_bills_what_was_delivered_and_ends_with_one_error() {
        let b = broker(vec![Ok(vec![delta("a"), Err(())])]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        assert_eq!(out.state, EndState::Failed);
        assert!(out.charged > 0);
        let last = sink.0.last().unwrap();
        assert!(
            matches!(last, StreamEvent::Error { name, .. } if name == ErrorName::UpstreamFailed.as_str()),
            "{last:?}"
        );
        assert_eq!(sink.0.iter().filter(|e| e.is_final()).count(), 1);
    }

    #[tokio::test]
    async fn failed_connect_charges_nothing_and_cools_the_endpoint() {
        let b = broker(vec![Err(())]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!((out.state, out.charged), (EndState::Failed, 0));
        assert_eq!(b.ledger().balance("app").reserved, 0);
        assert_eq!(b.admit("app", ask(Some(10))).unwrap().route().endpoint, "prov");
    }

    #[tokio::test]
    async fn app_closing_its_stream_cancels_and_bills_what_was_generated() {
        let b = broker(vec![Ok(vec![delta("a"), delta("b"), delta("c")])]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect(Vec::new(), Some(1));
        let out = b.run(a, &mut sink, std::future::pending()).await;
        assert_eq!(out.state, EndState::Cancelled);
        // The second delta was generated (and is billed upstream) though the app was gone.
        assert_eq!(out.usage.completion_tokens, 2);
    }

    #[tokio::test]
    async fn cancel_future_stops_the_request() {
        let b = broker(vec![Ok(vec![delta("a")])]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::ready(())).await;
        assert_eq!(out.state, EndState::Cancelled);
        assert_eq!(out.charged, 0);
        assert!(
            matches!(sink.0.last(), Some(StreamEvent::Error { name, .. }) if name == ErrorName::Cancelled.as_str())
        );
    }

    #[tokio::test]
    async fn max_tokens_is_clamped_and_refusals_are_typed() {
        let b = broker(vec![]);
        let prompt = u64::from(estimate_prompt_tokens(&[Message::new("user", "hello there")]));
        let hostile = b.admit("app", ask(Some(999_999_999))).unwrap();
        assert_eq!(hostile.reserved(), 200 + prompt, "max_tokens is clamped to the cap");
        let mut held = vec![hostile];
        let err = loop {
            match b.admit("app", ask(Some(200))) {
                Ok(a) => held.push(a),
                Err(e) => break e,
            }
        };
        assert_eq!(held.len(), usize::try_from(1_000 / (200 + prompt)).unwrap());
        assert_eq!(err.name(), ErrorName::BudgetExceeded);
        let err = b
            .admit(
                "other",
                ChatOptions {
                    model: Some("nope".into()),
                    ..ask(None)
                },
            )
            .unwrap_err();
        assert_eq!(err.name(), ErrorName::NoEndpoint);
    }
}
