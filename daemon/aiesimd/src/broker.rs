//! The request path: admit (route, check the budget, take a place in line), wait for the
//! turn, reserve, stream, meter, reconcile.
//!
//! Tokens are reserved when a request is dispatched, not while it waits, so waiting requests
//! never block the budget of those running; admission only refuses what the budget cannot
//! cover at all. Plain Rust: the D-Bus front end translates into [`Broker::admit`] and
//! [`Broker::run`] and never decides anything itself.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, atomic::Ordering},
};

use aiesim_wire::{ChatOptions, Content, ErrorName, Message, Part, StreamEvent, Usage};
use futures_util::StreamExt;

use crate::{
    clock::Clock,
    cloud::{Blame, CARRIED, Carried, ChatRequest, ChatStream, Cloud, CloudError, CloudEvent},
    ledger::{Ledger, LedgerError, Reservation},
    router::{Route, Router, RouterError},
    scheduler::{Lane, Scheduler, SchedulerError, Ticket},
};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the token budget does not cover this request")]
    Budget(#[source] LedgerError),
    #[error("the rate limit does not admit this request now")]
    Rate(#[source] LedgerError),
    #[error("no endpoint can take this request")]
    Route(#[source] RouterError),
    #[error("the app may not queue more requests")]
    InFlight(#[source] SchedulerError),
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
            Self::InFlight(_) => ErrorName::LimitExceeded,
        }
    }
}

/// Bounds applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_max_tokens: u32,
    pub max_tokens_cap: u32,
    /// Requests one app may have queued or in flight at once.
    pub max_in_flight: usize,
    /// How long one request may run, first byte to last.
    pub deadline: std::time::Duration,
    /// The most answer text one request may stream.
    pub max_answer_bytes: usize,
    /// Endpoints one request is sent to, in turn, while each fails before its first token
    /// reaches the app (1: no failover).
    pub failover_attempts: u32,
    /// Past this without a first token, the request is also sent to a second endpoint when
    /// the budget covers both; the first to answer wins. `None`: no hedging.
    pub hedge_after: Option<std::time::Duration>,
}

/// A request that passed admission: routed and in line; its tokens are reserved at dispatch.
#[derive(Debug)]
pub struct Admitted {
    app: String,
    /// The router's TTFT runs from here: time in line is time the app waits.
    since: std::time::Instant,
    ticket: Ticket,
    route: Route,
    request: ChatRequest,
    prompt_estimate: u32,
    /// What a failover picks by: the model the app named, the priority it gave, and its
    /// `max_tokens` before the first route's model clamped it.
    asked: Asked,
}

#[derive(Debug)]
struct Asked {
    model: Option<String>,
    priority: aiesim_wire::Priority,
    max_tokens: u32,
}

impl Admitted {
    pub fn route(&self) -> &Route {
        &self.route
    }
    /// The tokens the request will reserve when it is dispatched.
    pub fn estimate(&self) -> u64 {
        u64::from(self.prompt_estimate) + u64::from(self.request.max_tokens)
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

    /// The request left the line and is being sent to its endpoint.
    fn dispatched(&mut self) {}

    /// The request's endpoint failed before its first token; it waits for `route` instead.
    fn rerouted(&mut self, _route: &Route) {}
}

/// The app is gone or stopped reading; says which, in words.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{0}")]
pub struct SinkClosed(pub &'static str);

pub struct Broker<C, K> {
    cloud: C,
    ledger: Ledger,
    router: Router<K>,
    scheduler: Scheduler,
    limits: Limits,
    /// Per (endpoint, model): how many tokens the endpoint's chat template adds beyond the
    /// prompt estimate, learnt from its reported usage, so reservations cover real prompts.
    prompt_overhead: std::sync::Mutex<std::collections::HashMap<(String, String), u32>>,
    /// What the requests of each app carried to and from the cloud, by app id.
    relayed: Mutex<HashMap<String, Relayed>>,
}

/// The cloud traffic the daemon relayed for one app: HTTP body bytes of its requests, which
/// share pooled connections with other apps' (so only the broker can tell them apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Requests sent to an endpoint (admitted ones refused before that carry nothing).
    pub requests: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// The most template overhead learnt for one model; more is a misbehaving endpoint.
const MAX_PROMPT_OVERHEAD: u32 = 1024;

impl<C: Cloud, K: Clock> Broker<C, K> {
    pub fn new(cloud: C, ledger: Ledger, router: Router<K>, limits: Limits) -> Self {
        Self {
            cloud,
            ledger,
            router,
            scheduler: Scheduler::new(limits.max_in_flight),
            prompt_overhead: std::sync::Mutex::default(),
            relayed: Mutex::default(),
            limits,
        }
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn router(&self) -> &Router<K> {
        &self.router
    }

    /// What each app's requests carried since the daemon started, by app id.
    pub fn relayed(&self) -> HashMap<String, Relayed> {
        self.relayed.lock().expect("relayed lock").clone()
    }

    /// An admitted request its front end could not start (it never reaches `run`): its place in
    /// line goes back, and so does the endpoint's probe if it was one, for the next request.
    pub fn abandon(&self, admitted: Admitted) {
        self.router.release_probe(&admitted.route);
        // Its ticket goes with it: the place in line is free.
        drop(admitted);
    }

    /// Routes the request, checks that the budget could cover its bounded cost, and puts it
    /// in line; or refuses it.
    pub fn admit(&self, app: &str, options: ChatOptions) -> Result<Admitted, BrokerError> {
        let ChatOptions {
            messages,
            model,
            max_tokens,
            temperature,
            priority,
        } = options;
        let route = self
            .router
            .pick_with_load(model.as_deref(), |e, m| self.scheduler.outstanding(e, m))
            .map_err(BrokerError::Route)?;
        // Clamped to the daemon's cap and to what the chosen model can produce.
        let asked = Asked {
            model,
            priority,
            max_tokens: max_tokens
                .unwrap_or(self.limits.default_max_tokens)
                .min(self.limits.max_tokens_cap),
        };
        let max_tokens = asked.max_tokens.min(route.max_output.unwrap_or(u32::MAX));
        let prompt_estimate = estimate_prompt_tokens(&messages).saturating_add(self.prompt_overhead(&route));
        let request = ChatRequest {
            model: route.model.clone(),
            messages,
            max_tokens,
            temperature,
        };
        // A request refused here never reaches its endpoint: a probe of it is not spent.
        let refused = |e| {
            self.router.release_probe(&route);
            e
        };
        self.could_afford(app, u64::from(prompt_estimate) + u64::from(max_tokens))
            .map_err(refused)?;
        let lane = Lane {
            endpoint: route.endpoint.clone(),
            model: route.model.clone(),
        };
        let ticket = self
            .scheduler
            .enqueue(app, lane, route.max_concurrent, asked.priority)
            .map_err(|e| refused(BrokerError::InFlight(e)))?;
        Ok(Admitted {
            app: app.to_owned(),
            since: self.router.clock().now(),
            ticket,
            route,
            request,
            prompt_estimate,
            asked,
        })
    }

    fn prompt_overhead(&self, route: &Route) -> u32 {
        let learnt = self
            .prompt_overhead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        learnt
            .get(&(route.endpoint.clone(), route.model.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// An endpoint that counted more prompt tokens than estimated raises the overhead its
    /// later requests reserve for (never lowers it: the estimate must stay pessimistic).
    fn learn_prompt_overhead(&self, route: &Route, meter: &Meter) {
        let (
            estimate,
            Some(Usage {
                prompt_tokens: reported,
                ..
            }),
        ) = (meter.prompt_estimate, meter.reported)
        else {
            return;
        };
        if reported <= estimate {
            return;
        }
        let mut learnt = self
            .prompt_overhead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let overhead = learnt.entry((route.endpoint.clone(), route.model.clone())).or_default();
        *overhead = overhead.saturating_add(reported - estimate).min(MAX_PROMPT_OVERHEAD);
        tracing::debug!(endpoint = %route.endpoint, model = %route.model, overhead = *overhead, "learnt the prompt overhead");
    }

    /// Refuses at once what the app's or the device's budget cannot cover even with nothing
    /// else running; the reservation at dispatch has the last word.
    fn could_afford(&self, app: &str, amount: u64) -> Result<(), BrokerError> {
        let balance = self.ledger.balance(app);
        let app_free = balance.limit.saturating_sub(balance.spent);
        if amount > app_free {
            return Err(BrokerError::Budget(LedgerError::AppExhausted {
                app: app.to_owned(),
                available: app_free,
                needed: amount,
            }));
        }
        let device_free = self.ledger.device_available() + balance.reserved;
        if amount > device_free {
            return Err(BrokerError::Budget(LedgerError::DeviceExhausted {
                available: device_free,
                needed: amount,
            }));
        }
        Ok(())
    }

    /// Waits for the request's turn, reserves its tokens, streams it into `sink` until it ends
    /// or `cancel` resolves, then charges what was used. Always ends the stream with exactly
    /// one final event.
    pub async fn run(
        &self,
        admitted: Admitted,
        sink: &mut impl EventSink,
        cancel: impl Future<Output = ()>,
    ) -> Outcome {
        let Admitted {
            app,
            since: admitted_at,
            mut ticket,
            mut route,
            mut request,
            prompt_estimate,
            asked,
        } = admitted;
        tokio::pin!(cancel);
        let mut meter = Meter::new(prompt_estimate, admitted_at);
        // Endpoints that failed this request before its first token, and how, in order.
        let mut failed: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut deadline_at = None;
        let (reservation, ended) = loop {
            let mut reservation = match self
                .take_turn(&app, &mut ticket, &route, &request, meter.prompt_estimate, &mut cancel)
                .await
            {
                Ok(r) => r,
                Err((state, name, mut message)) => {
                    // Never sent: a probe of the endpoint is for the next request to make.
                    self.router.release_probe(&route);
                    drop(ticket);
                    if !failed.is_empty() {
                        message = format!(
                            "{}; then failing over to \"{}\": {message}",
                            failures.join("; then "),
                            route.endpoint
                        );
                        self.record_relayed(&app, &meter.carried, meter.sent);
                    }
                    return unserved(sink, route, (state, name, message)).await;
                }
            };
            sink.dispatched();
            // One deadline for every attempt together, from the first dispatch.
            let at = *deadline_at.get_or_insert_with(|| tokio::time::Instant::now() + self.limits.deadline);
            let first = self
                .bounded(
                    self.first_token(&app, &asked, &route, &request, &mut meter, &mut failed, &mut failures),
                    at,
                    &mut cancel,
                )
                .await;
            let ended = match first {
                Ok((opened, won)) => {
                    if let Some(Won { leg, primary_used }) = won {
                        // The hedge answered first: the request is its from here on. The
                        // primary is charged only what its endpoint reported before it lost.
                        reservation.commit(primary_used).await;
                        reservation = leg.reservation;
                        ticket = leg.ticket;
                        meter.prompt_estimate = leg.prompt_estimate;
                        // Its endpoint's TTFT counts from when it was asked.
                        meter.admitted_at = leg.sent_at;
                        (route, request) = (leg.route, leg.request);
                        sink.rerouted(&route);
                        sink.dispatched();
                    }
                    self.bounded(
                        self.stream(&route, opened, sink, &mut meter, &mut reservation),
                        at,
                        &mut cancel,
                    )
                    .await
                }
                Err(stop) => Err(stop),
            };
            // Only an endpoint's fault before anything reached the app, or was billed upstream,
            // is tried elsewhere: a retry after a token would show the app two answers.
            let untouched = meter.deltas == 0 && meter.reported.is_none();
            if let (Err((_, _, message)), true) = (&ended, meter.endpoint_fault && untouched) {
                failed.push(route.endpoint.clone());
                if let Some(next) = self.failover_route(&asked, &failed) {
                    failures.push(message.clone());
                    tracing::info!(app = %app, from = %route.endpoint, to = %next.endpoint, "failing over before the first token");
                    // Nothing was used: the reservation goes back whole, and the next endpoint's
                    // is taken at its own price, for a digest naming it, when its turn comes.
                    reservation.commit(0).await;
                    self.reroute(&next, &asked, &mut request, &mut meter, &mut ticket);
                    sink.rerouted(&next);
                    route = next;
                    continue;
                }
            }
            // The app learns of the endpoints that failed before the last one too.
            let ended = match ended {
                Err((state, name, message)) if !failures.is_empty() => {
                    Err((state, name, format!("{}; then {message}", failures.join("; then "))))
                }
                ended => ended,
            };
            break (reservation, ended);
        };
        self.record_relayed(&app, &meter.carried, meter.sent);
        // Only after the charge: the next in line reserves from a budget this request no
        // longer holds.
        let outcome = self.settle(route, &meter, reservation, ended, sink).await;
        drop(ticket);
        outcome
    }

    /// Charges what the request used and sends its final event.
    async fn settle(
        &self,
        route: Route,
        meter: &Meter,
        reservation: Reservation,
        ended: Result<(), Stop>,
        sink: &mut impl EventSink,
    ) -> Outcome {
        let usage = meter.usage();
        self.learn_prompt_overhead(&route, meter);
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

    /// Runs `work` until it ends, `at` passes or `cancel` resolves.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, Stop>>,
        at: tokio::time::Instant,
        cancel: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<T, Stop> {
        let deadline = self.limits.deadline;
        let work = async {
            tokio::time::timeout_at(at, work).await.unwrap_or_else(|_| {
                Err((
                    EndState::Failed,
                    ErrorName::LimitExceeded,
                    format!("the request ran past its deadline of {} s", deadline.as_secs()),
                ))
            })
        };
        tokio::pin!(work);
        // Biased: a cancel that is already due wins over output that is also ready.
        tokio::select! {
            biased;
            () = cancel => Err((EndState::Cancelled, ErrorName::Cancelled, "the request was cancelled".to_owned())),
            r = &mut work => r,
        }
    }

    /// Sends the request to `route` and waits for its first token. Past the hedge delay without
    /// one, sends it to a second endpoint too when there is one with a free place and the
    /// ledger can afford a second reservation; the first to produce a token (or to end) wins,
    /// and the loser's stream is dropped, which cancels it. Returns the hedge's leg when it won.
    #[expect(clippy::too_many_arguments, reason = "one request's parts, borrowed for one attempt")]
    async fn first_token(
        &self,
        app: &str,
        asked: &Asked,
        route: &Route,
        request: &ChatRequest,
        meter: &mut Meter,
        failed: &mut Vec<String>,
        failures: &mut Vec<String>,
    ) -> Result<(Opened, Option<Won>), Stop> {
        let carried = Arc::clone(&meter.carried);
        meter.sent += 1;
        let primary = self.open(route, request, &carried);
        tokio::pin!(primary);
        let unopened = |meter: &mut Meter, u: Unopened| {
            meter.endpoint_fault = u.endpoint_fault;
            meter.reported = u.reported;
            u.stop
        };
        if let Some(delay) = self.limits.hedge_after {
            tokio::select! {
                biased;
                r = &mut primary => return r.map(|o| (o, None)).map_err(|u| unopened(meter, u)),
                () = tokio::time::sleep(delay) => {}
            }
        }
        let Some(leg) = self
            .limits
            .hedge_after
            .and_then(|_| self.hedge_leg(app, asked, route, request, failed))
        else {
            return primary.await.map(|o| (o, None)).map_err(|u| unopened(meter, u));
        };
        tracing::info!(app, first = %route.endpoint, second = %leg.route.endpoint, "no first token yet: hedging");
        meter.sent += 1;
        let (hedge_route, hedge_request) = (leg.route.clone(), leg.request.clone());
        let hedge = self.open(&hedge_route, &hedge_request, &carried);
        tokio::pin!(hedge);
        let mut leg = Some(leg);
        let mut primary_failed: Option<Unopened> = None;
        loop {
            tokio::select! {
                r = &mut primary, if primary_failed.is_none() => match r {
                    Ok(opened) => {
                        if let Some(leg) = leg.take() {
                            // The hedge lost before its first token and is dropped with any usage
                            // it may have sent: nothing of it is charged, though its endpoint may
                            // bill its provider for the prompt it read.
                            let waited = self.router.clock().now().saturating_duration_since(leg.sent_at);
                            self.router
                                .report_unanswered(&leg.route.endpoint, &leg.route.model, waited);
                            leg.reservation.commit(0).await;
                        }
                        return Ok((opened, None));
                    }
                    Err(u) => {
                        if leg.is_none() {
                            return Err(unopened(meter, u));
                        }
                        primary_failed = Some(u);
                    }
                },
                r = &mut hedge, if leg.is_some() => {
                    let Some(won) = leg.take() else { continue };
                    match r {
                        Ok(opened) => {
                            if primary_failed.is_none() {
                                // The first endpoint lost the race: it is slower than it waited.
                                let waited = self.router.clock().now().saturating_duration_since(meter.admitted_at);
                                self.router.report_unanswered(&route.endpoint, &route.model, waited);
                            }
                            let primary_used = primary_failed.as_ref().and_then(|u| u.reported).map_or(0, used);
                            return Ok((opened, Some(Won { leg: won, primary_used })));
                        }
                        Err(u) => {
                            // Charged what its endpoint reported, if anything; never failed over to again.
                            won.reservation.commit(u.reported.map_or(0, used)).await;
                            if u.endpoint_fault {
                                failed.push(won.route.endpoint);
                                failures.push(u.stop.2);
                            }
                            if let Some(u) = primary_failed.take() {
                                return Err(unopened(meter, u));
                            }
                        }
                    }
                }
            }
        }
    }

    /// A second leg for a request still waiting for its first token on `route`: the best other
    /// endpoint not yet failed, only if it has a free place now and the ledger can afford both.
    fn hedge_leg(
        &self,
        app: &str,
        asked: &Asked,
        route: &Route,
        request: &ChatRequest,
        failed: &[String],
    ) -> Option<Leg> {
        let mut except = failed.to_vec();
        except.push(route.endpoint.clone());
        let next = self
            .router
            .pick_except(asked.model.as_deref(), |e, m| self.scheduler.outstanding(e, m), &except)
            .ok()?;
        let lane = Lane {
            endpoint: next.endpoint.clone(),
            model: next.model.clone(),
        };
        let Some(ticket) = self.scheduler.try_start(app, lane, next.max_concurrent, asked.priority) else {
            // Not sent: a probe of it is for the next request to make.
            self.router.release_probe(&next);
            return None;
        };
        let request = ChatRequest {
            model: next.model.clone(),
            messages: request.messages.clone(),
            max_tokens: asked.max_tokens.min(next.max_output.unwrap_or(u32::MAX)),
            temperature: request.temperature,
        };
        let prompt_estimate = estimate_prompt_tokens(&request.messages).saturating_add(self.prompt_overhead(&next));
        let reservation = self
            .ledger
            .reserve(
                app,
                u64::from(prompt_estimate) + u64::from(request.max_tokens),
                next.price_per_1k,
                request_digest(&next, &request),
            )
            .inspect_err(|e| {
                tracing::debug!(error = %chain(e), "no hedge: the budget does not cover both");
                self.router.release_probe(&next);
            })
            .ok()?;
        Some(Leg {
            route: next,
            request,
            ticket,
            reservation,
            prompt_estimate,
            sent_at: self.router.clock().now(),
        })
    }

    /// Readies the request for `next`: its model and limits, a fresh start for the TTFT the
    /// router learns, and a place in `next`'s line.
    fn reroute(&self, next: &Route, asked: &Asked, request: &mut ChatRequest, meter: &mut Meter, ticket: &mut Ticket) {
        request.model.clone_from(&next.model);
        request.max_tokens = asked.max_tokens.min(next.max_output.unwrap_or(u32::MAX));
        meter.prompt_estimate = estimate_prompt_tokens(&request.messages).saturating_add(self.prompt_overhead(next));
        meter.admitted_at = self.router.clock().now();
        meter.endpoint_fault = false;
        let lane = Lane {
            endpoint: next.endpoint.clone(),
            model: next.model.clone(),
        };
        self.scheduler
            .requeue(ticket, lane, next.max_concurrent, asked.priority);
    }

    /// Where a request goes after the endpoints in `failed` failed it before its first token:
    /// the best other one, while attempts remain.
    fn failover_route(&self, asked: &Asked, failed: &[String]) -> Option<Route> {
        let attempts = usize::try_from(self.limits.failover_attempts).unwrap_or(usize::MAX);
        if failed.len() >= attempts {
            return None;
        }
        self.router
            .pick_except(asked.model.as_deref(), |e, m| self.scheduler.outstanding(e, m), failed)
            .inspect_err(|e| tracing::info!(error = %e, "no endpoint to fail over to"))
            .ok()
    }

    fn record_relayed(&self, app: &str, carried: &Carried, requests: u64) {
        let mut relayed = self.relayed.lock().expect("relayed lock");
        let entry = relayed.entry(app.to_owned()).or_default();
        entry.requests += requests;
        entry.sent_bytes += carried.sent.load(Ordering::Relaxed);
        entry.received_bytes += carried.received.load(Ordering::Relaxed);
    }

    /// Waits in line until the request's turn, then reserves its tokens; or says why not.
    async fn take_turn(
        &self,
        app: &str,
        ticket: &mut Ticket,
        route: &Route,
        request: &ChatRequest,
        prompt_estimate: u32,
        cancel: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Reservation, (EndState, ErrorName, String)> {
        // Waiting in line costs nothing and has no timeout of its own; only the app ends it.
        tokio::select! {
            biased;
            () = cancel => {
                return Err((EndState::Cancelled, ErrorName::Cancelled, "the request was cancelled".to_owned()));
            }
            () = ticket.dispatched() => {}
        }
        self.ledger
            .reserve(
                app,
                u64::from(prompt_estimate) + u64::from(request.max_tokens),
                route.price_per_1k,
                request_digest(route, request),
            )
            .map_err(|e| {
                let e = BrokerError::refused(e);
                (EndState::Failed, e.name(), chain(&e))
            })
    }

    /// Sends the request to `route` and reads its stream up to the first token (or its end).
    /// When the request probes the endpoint, a first token passes the probe, a failure of the
    /// endpoint's fails it, and anything else (dropped: a lost hedge race, a cancel, the
    /// deadline; the device's fault) releases it for the next request.
    fn open<'a>(
        &'a self,
        route: &'a Route,
        request: &'a ChatRequest,
        carried: &'a Arc<Carried>,
    ) -> impl Future<Output = Result<Opened, Unopened>> + 'a {
        // Made before the first poll: an attempt dropped unpolled releases its probe too.
        let probe = PendingProbe {
            router: &self.router,
            route,
        };
        async move {
            let opened = self.attempt(route, request, carried).await;
            if opened.is_ok() && route.probe.is_some() {
                self.router.report_alive(&route.endpoint);
            }
            drop(probe);
            opened
        }
    }

    /// [`Self::open`]'s work. A failure is held against the endpoint unless it was the
    /// request's or the device's.
    async fn attempt(&self, route: &Route, request: &ChatRequest, carried: &Arc<Carried>) -> Result<Opened, Unopened> {
        let failed = |e: CloudError, reported| {
            let blame = e.blame();
            match blame {
                Blame::Endpoint { retry_after } => {
                    if e.is_overload() {
                        self.router.report_overload(&route.endpoint, &route.model);
                    }
                    self.router.report_failure(&route.endpoint, &route.model, retry_after);
                }
                // A refused content is the caller's error: it says nothing of the endpoint's health.
                Blame::Request => self.router.report_alive(&route.endpoint),
                Blame::Device => {}
            }
            let stop = if blame == Blame::Request {
                (
                    EndState::Failed,
                    ErrorName::InvalidArgument,
                    format!("endpoint \"{}\" refused the request: {}", route.endpoint, chain(&e)),
                )
            } else {
                upstream(route, &e)
            };
            Unopened {
                stop,
                endpoint_fault: matches!(blame, Blame::Endpoint { .. }),
                reported,
            }
        };
        // The transport counts the bytes it carries into the task-local the scope sets.
        let mut events = match CARRIED
            .scope(Arc::clone(carried), self.cloud.chat(&route.url, request))
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(failed(e, None)),
        };
        let mut reported = None;
        loop {
            match CARRIED.scope(Arc::clone(carried), events.next()).await {
                Some(Ok(CloudEvent::Delta(text))) if !text.is_empty() => {
                    return Ok(Opened {
                        events,
                        first: Some(text),
                        reported,
                    });
                }
                Some(Ok(CloudEvent::Delta(_))) => {}
                Some(Ok(CloudEvent::Usage(u))) => reported = Some(u),
                Some(Err(e)) => return Err(failed(e, reported)),
                None => {
                    return Ok(Opened {
                        events,
                        first: None,
                        reported,
                    });
                }
            }
        }
    }

    /// Delivers an opened stream to `sink`, from its first token to its end.
    async fn stream(
        &self,
        route: &Route,
        opened: Opened,
        sink: &mut impl EventSink,
        meter: &mut Meter,
        reservation: &mut Reservation,
    ) -> Result<(), Stop> {
        let Opened {
            mut events,
            first,
            reported,
        } = opened;
        meter.reported = reported;
        let mut answer_bytes = 0usize;
        let carried = Arc::clone(&meter.carried);
        let mut next = first.map(|text| Ok(CloudEvent::Delta(text)));
        loop {
            let event = match next.take() {
                Some(event) => event,
                None => match CARRIED.scope(Arc::clone(&carried), events.next()).await {
                    Some(event) => event,
                    None => break,
                },
            };
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
                    let now = self.router.clock().now();
                    meter.first_delta.get_or_insert(now);
                    meter.last_delta = Some(now);
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
                // After the first token: the app has words, so no failover, and (as the endpoint
                // did answer) no failure held against it.
                Err(e) => return Err(upstream(route, &e)),
            }
        }
        let (ttft, itl) = meter.latency(self.router.clock().now());
        self.router.report_success(&route.endpoint, &route.model, ttft, itl);
        Ok(())
    }
}

/// Why a request stopped: how it ended, the error the app gets, and the message.
type Stop = (EndState, ErrorName, String);

fn upstream(route: &Route, e: &CloudError) -> Stop {
    (
        EndState::Failed,
        ErrorName::UpstreamFailed,
        format!("endpoint \"{}\": {}", route.endpoint, chain(e)),
    )
}

/// The tokens a reported usage counts.
fn used(u: Usage) -> u64 {
    u64::from(u.prompt_tokens) + u64::from(u.completion_tokens)
}

/// An attempt that reached its first token, or ended without one.
struct Opened {
    events: ChatStream,
    /// The first piece of the answer; `None` when the stream ended without one.
    first: Option<String>,
    reported: Option<Usage>,
}

/// An attempt that failed before its first token.
struct Unopened {
    stop: Stop,
    /// The endpoint's fault (not the request's or the device's): another may answer.
    endpoint_fault: bool,
    /// Usage the endpoint reported before failing: billed upstream, so charged.
    reported: Option<Usage>,
}

/// A probe of an endpoint whose attempt is on its way; released when it ends undecided.
struct PendingProbe<'a, K: Clock> {
    router: &'a Router<K>,
    route: &'a Route,
}

impl<K: Clock> Drop for PendingProbe<'_, K> {
    fn drop(&mut self) {
        // A no-op when the attempt decided it (answered or failed), or it was no probe.
        self.router.release_probe(self.route);
    }
}

/// A hedge: the same request on a second endpoint, with its own place and reservation.
struct Leg {
    route: Route,
    request: ChatRequest,
    ticket: Ticket,
    reservation: Reservation,
    prompt_estimate: u32,
    sent_at: std::time::Instant,
}

/// A hedge that answered first, and what the primary's endpoint reported before it lost.
struct Won {
    leg: Leg,
    primary_used: u64,
}

/// Ends a request that was never sent (or not sent again): its one final event, nothing charged.
async fn unserved(
    sink: &mut impl EventSink,
    route: Route,
    (state, name, message): (EndState, ErrorName, String),
) -> Outcome {
    let _ = sink
        .send(&StreamEvent::Error {
            name: name.as_str().to_owned(),
            message: message.clone(),
        })
        .await;
    Outcome {
        state,
        usage: Usage::default(),
        charged: 0,
        endpoint: route.endpoint,
        model: route.model,
        error: Some((name, message)),
    }
}

/// Counts what a request used, for when the endpoint does not say.
struct Meter {
    prompt_estimate: u32,
    deltas: u32,
    reported: Option<Usage>,
    admitted_at: std::time::Instant,
    first_delta: Option<std::time::Instant>,
    last_delta: Option<std::time::Instant>,
    /// The HTTP body bytes the request carried, which the transport counts.
    carried: Arc<Carried>,
    /// The attempt ended with the endpoint's fault (not the caller's, not the device's).
    endpoint_fault: bool,
    /// Requests sent to endpoints: attempts and hedges.
    sent: u64,
}

impl Meter {
    fn new(prompt_estimate: u32, admitted_at: std::time::Instant) -> Self {
        Self {
            prompt_estimate,
            deltas: 0,
            reported: None,
            admitted_at,
            first_delta: None,
            last_delta: None,
            carried: Arc::default(),
            endpoint_fault: false,
            sent: 0,
        }
    }

    /// Time to the first token from admission, and the mean gap between the tokens after it.
    fn latency(&self, ended: std::time::Instant) -> (std::time::Duration, Option<std::time::Duration>) {
        let first = self.first_delta.unwrap_or(ended);
        let ttft = first.saturating_duration_since(self.admitted_at);
        let gaps = self.deltas.saturating_sub(1);
        let itl = self
            .last_delta
            .filter(|_| gaps > 0)
            .map(|last| last.saturating_duration_since(first) / gaps);
        (ttft, itl)
    }

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
        match &m.content {
            Content::Text(text) => h.update(text.as_bytes()),
            // An image as its MIME type between NULs, then its bytes.
            Content::Parts(parts) => {
                for part in parts {
                    match part {
                        Part::Text(text) => h.update(text.as_bytes()),
                        Part::Image(image) => {
                            h.update([0]);
                            h.update(image.info.kind.mime().as_bytes());
                            h.update([0]);
                            h.update(&image.data);
                        }
                    }
                }
            }
        }
        h.update([0]);
    }
    h.finalize().into()
}

/// A pessimistic prompt size: about 3 bytes a token of text plus per-message overhead, and
/// [`image_tokens`] for each image.
fn estimate_prompt_tokens(messages: &[Message]) -> u32 {
    let bytes: usize = messages.iter().map(|m| m.content.text_len() + m.role.len()).sum();
    let images: u64 = messages
        .iter()
        .flat_map(|m| m.content.images())
        .map(|i| u64::from(image_tokens(i.info.width, i.info.height)))
        .sum();
    let tokens = (bytes.div_ceil(3) + 4 * messages.len() + 2) as u64 + images;
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// The tokens reserved for one image: `OpenAI`'s high-detail tile rule. The image is fitted
/// within 2048 x 2048, its shorter side brought down to 768, then it costs 85 plus 170 per
/// 512-pixel tile (rounding up at every step): 85 to 1445 tokens.
pub fn image_tokens(width: u32, height: u32) -> u32 {
    let scale = |(w, h): (u64, u64), num: u64, den: u64| ((w * num).div_ceil(den), (h * num).div_ceil(den));
    let mut size = (u64::from(width.max(1)), u64::from(height.max(1)));
    let longer = size.0.max(size.1);
    if longer > 2048 {
        size = scale(size, 2048, longer);
    }
    let shorter = size.0.min(size.1);
    if shorter > 768 {
        size = scale(size, 768, shorter);
    }
    let tiles = size.0.div_ceil(512) * size.1.div_ceil(512);
    u32::try_from(85 + 170 * tiles).unwrap_or(u32::MAX)
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
    use crate::{clock::ManualClock, config::EndpointConfig, router::Tier};

    /// A scripted cloud: the faults it plays (a broken stream, a refused connection) are ones
    /// the real model server cannot be made to produce on cue.
    /// One scripted chat: refused (`Err`) or a stream of events and failures.
    type Scripted = Result<Vec<Result<CloudEvent, ()>>, CloudError>;

    /// The script, and the base URL of each chat asked of it, in order.
    struct Script(Mutex<Vec<Scripted>>, Mutex<Vec<String>>);

    impl Script {
        fn new(script: Vec<Scripted>) -> Self {
            Self(Mutex::new(script), Mutex::default())
        }
    }

    impl Cloud for Script {
        async fn chat(&self, base_url: &str, _request: &ChatRequest) -> Result<ChatStream, CloudError> {
            self.1.lock().unwrap().push(base_url.to_owned());
            let next = self.0.lock().unwrap().remove(0);
            match next {
                Err(e) => Err(e),
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
        broker_on(Script::new(script), 2, 1_000, 2)
    }

    /// A broker on the first `endpoints` of metro and prov.
    fn broker_on<C: Cloud>(
        cloud: C,
        max_concurrent: usize,
        app_tokens: u64,
        endpoints: usize,
    ) -> Broker<C, ManualClock> {
        let all = [
            EndpointConfig {
                name: "metro".into(),
                url: "http://m/v1".into(),
                tier: Tier::Metro,
                models: vec!["s".into()],
                price_per_1k: crate::router::DEFAULT_PRICE_PER_1K,
                max_concurrent,
            },
            EndpointConfig {
                name: "prov".into(),
                url: "http://p/v1".into(),
                tier: Tier::Province,
                models: vec!["s".into()],
                price_per_1k: crate::router::DEFAULT_PRICE_PER_1K,
                max_concurrent,
            },
        ];
        Broker::new(
            cloud,
            Ledger::in_memory(crate::ledger::Budgets {
                app_tokens,
                device_tokens: 10_000,
                ..crate::ledger::Budgets::default()
            }),
            Router::new(&all[..endpoints], ManualClock::default(), Duration::from_secs(30)),
            Limits {
                default_max_tokens: 100,
                max_tokens_cap: 200,
                max_in_flight: 64,
                deadline: Duration::from_secs(600),
                max_answer_bytes: 1 << 20,
                failover_attempts: 2,
                hedge_after: None,
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
            a.estimate(),
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

    /// An endpoint whose chat template adds prompt tokens the estimate cannot know: the first
    /// request is charged at most its reservation, the next ones reserve for the real prompt
    /// and are charged in full.
    #[tokio::test]
    async fn prompts_the_endpoint_counts_larger_are_reserved_for_next_time() {
        let estimate = estimate_prompt_tokens(&[Message::new("user", "hello there")]);
        let reported = estimate + 20;
        let answer = || {
            Ok(vec![
                delta("Hi"),
                Ok(CloudEvent::Usage(Usage {
                    prompt_tokens: reported,
                    completion_tokens: 1,
                })),
            ])
        };
        let b = broker(vec![answer(), answer()]);
        let first = b.admit("app", ask(Some(5))).unwrap();
        assert_eq!(first.estimate(), u64::from(estimate) + 5);
        let out = b.run(first, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.charged, u64::from(estimate) + 5, "capped at what was reserved");
        let second = b.admit("app", ask(Some(5))).unwrap();
        assert_eq!(second.estimate(), u64::from(reported) + 5);
        let out = b.run(second, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.charged, u64::from(reported) + 1, "the whole real usage");
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
        let mut b = broker(vec![Err(CloudError::test_connect())]);
        b.limits.failover_attempts = 1;
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
        assert_eq!(hostile.estimate(), 200 + prompt, "max_tokens is clamped to the cap");
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
        let broke = broker_on(Script::new(vec![]), 1, 100, 2);
        let err = broke.admit("app", ask(Some(200))).unwrap_err();
        assert_eq!(
            err.name(),
            ErrorName::BudgetExceeded,
            "a hopeless request is refused at once"
        );
        assert!(chain(&err).contains("tokens left"), "{}", chain(&err));
        let held: Vec<_> = (0..64).map(|_| broke.admit("app", ask(Some(10))).unwrap()).collect();
        let err = broke.admit("app", ask(Some(10))).unwrap_err();
        assert_eq!(
            err.name(),
            ErrorName::LimitExceeded,
            "queued requests count against the app"
        );
        assert!(broke.admit("another", ask(Some(10))).is_ok());
        drop(held);
    }

    #[tokio::test]
    async fn a_refused_content_is_the_callers_error_and_leaves_the_endpoint_healthy() {
        let b = broker(vec![Err(CloudError::test_status(400, None)), Ok(vec![delta("fine")])]);
        let a = b.admit("hostile", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        assert_eq!((out.state, out.charged), (EndState::Failed, 0));
        let (name, message) = out.error.unwrap();
        assert_eq!(name, ErrorName::InvalidArgument);
        assert!(
            message.contains("refused the request") && message.contains("scripted 400"),
            "{message}"
        );
        assert_eq!(b.ledger().balance("hostile").spent, 0);
        let next = b.admit("another", ask(Some(10))).unwrap();
        assert_eq!(next.route().endpoint, "metro", "the endpoint is not cooled down");
        let out = b.run(next, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.state, EndState::Done);
    }

    #[tokio::test]
    async fn overload_cools_the_endpoint_and_fails_upstream() {
        for status in [429, 503, 500] {
            let mut b = broker(vec![Err(CloudError::test_status(status, Some(Duration::from_secs(5))))]);
            b.limits.failover_attempts = 1;
            let a = b.admit("app", ask(Some(10))).unwrap();
            let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
            assert_eq!(out.error.unwrap().0, ErrorName::UpstreamFailed);
            assert_eq!(out.charged, 0);
            assert_eq!(
                b.admit("app", ask(Some(10))).unwrap().route().endpoint,
                "prov",
                "{status}"
            );
            // Past its cooldown, it is probed with half as many at once when it said it was
            // overloaded; a plain failure says nothing of its capacity.
            b.router().clock().advance(Duration::from_secs(31));
            let route = b.router().pick(None).unwrap();
            let halved = if status == 500 { 2 } else { 1 };
            assert_eq!(
                (route.endpoint.as_str(), route.max_concurrent),
                ("metro", halved),
                "{status}"
            );
        }
    }

    fn asked(b: &Broker<Script, ManualClock>) -> Vec<String> {
        b.cloud.1.lock().unwrap().clone()
    }

    fn failures(b: &Broker<Script, ManualClock>, endpoint: &str) -> u64 {
        let stats = b.router().statistics();
        stats.iter().find(|s| s.endpoint == endpoint).unwrap().failures
    }

    #[tokio::test]
    async fn an_endpoint_failing_before_the_first_token_is_failed_over() {
        let broken_at_once = Ok(vec![Err(())]);
        for (fault, what) in [
            (Err(CloudError::test_status(503, None)), "503"),
            (Err(CloudError::test_status(500, None)), "500"),
            (Err(CloudError::test_connect()), "connect"),
            (broken_at_once, "broken before a token"),
        ] {
            let b = broker(vec![
                fault,
                Ok(vec![
                    delta("from prov"),
                    Ok(CloudEvent::Usage(Usage {
                        prompt_tokens: 9,
                        completion_tokens: 1,
                    })),
                ]),
            ]);
            let a = b.admit("app", ask(Some(10))).unwrap();
            assert_eq!(a.route().endpoint, "metro", "{what}");
            let mut sink = Collect::default();
            let out = b.run(a, &mut sink, std::future::pending()).await;
            assert_eq!((out.state, out.endpoint.as_str()), (EndState::Done, "prov"), "{what}");
            assert_eq!(asked(&b), ["http://m/v1", "http://p/v1"], "{what}");
            // Charged once, for what prov answered; metro's reservation went back whole.
            assert_eq!(out.charged, 10, "{what}");
            let balance = b.ledger().balance("app");
            assert_eq!((balance.spent, balance.reserved), (10, 0), "{what}");
            assert_eq!(b.relayed()["app"].requests, 2, "{what}");
            assert_eq!((failures(&b, "metro"), failures(&b, "prov")), (1, 0), "{what}");
            // The app saw one answer, with no trace of the failure but the endpoint's name.
            assert_eq!(sink.0.len(), 2, "{what}: {:?}", sink.0);
            assert!(
                matches!(&sink.0[1], StreamEvent::Done { endpoint, charged: 10, .. } if endpoint == "prov"),
                "{what}: {:?}",
                sink.0
            );
            assert_eq!(b.scheduler().held("app"), 0, "{what}");
        }
    }

    #[tokio::test]
    async fn a_refused_request_is_not_failed_over() {
        for status in [400, 413, 422] {
            let b = broker(vec![Err(CloudError::test_status(status, None))]);
            let a = b.admit("app", ask(Some(10))).unwrap();
            let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
            assert_eq!(out.error.unwrap().0, ErrorName::InvalidArgument, "{status}");
            assert_eq!((out.endpoint.as_str(), out.charged), ("metro", 0), "{status}");
            assert_eq!(asked(&b), ["http://m/v1"], "{status}");
            assert_eq!(failures(&b, "metro"), 0, "{status}");
        }
    }

    #[tokio::test]
    async fn a_stream_broken_after_its_first_token_is_not_sent_again() {
        let b = broker(vec![Ok(vec![delta("a"), delta("b"), Err(())])]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        let (name, message) = out.error.clone().unwrap();
        assert_eq!((out.state, name), (EndState::Failed, ErrorName::UpstreamFailed));
        assert!(message.starts_with("endpoint \"metro\""), "{message}");
        let prompt = u64::from(estimate_prompt_tokens(&[Message::new("user", "hello there")]));
        assert_eq!(out.charged, prompt + 2, "the delivered part is charged");
        assert_eq!(b.ledger().balance("app").spent, prompt + 2);
        assert_eq!(asked(&b), ["http://m/v1"]);
        assert_eq!(b.relayed()["app"].requests, 1);
        // Once the app had words the endpoint is not blamed for the break, as before.
        assert_eq!(failures(&b, "metro"), 0);
    }

    #[tokio::test]
    async fn usage_reported_before_a_break_is_charged_not_failed_over() {
        let b = broker(vec![Ok(vec![
            Ok(CloudEvent::Usage(Usage {
                prompt_tokens: 7,
                completion_tokens: 0,
            })),
            Err(()),
        ])]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.error.unwrap().0, ErrorName::UpstreamFailed);
        assert_eq!(
            (out.charged, asked(&b).len()),
            (7, 1),
            "billed upstream: not sent twice"
        );
    }

    #[tokio::test]
    async fn failover_ends_when_its_attempts_or_endpoints_run_out() {
        // Both endpoints fail: two attempts, one error naming both, nothing charged.
        let b = broker(vec![
            Err(CloudError::test_status(503, None)),
            Err(CloudError::test_connect()),
        ]);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        let (name, message) = out.error.unwrap();
        assert_eq!((out.state, name), (EndState::Failed, ErrorName::UpstreamFailed));
        assert!(
            message.contains("endpoint \"metro\"") && message.contains("; then endpoint \"prov\""),
            "{message}"
        );
        assert_eq!((out.endpoint.as_str(), out.charged), ("prov", 0));
        assert_eq!(asked(&b), ["http://m/v1", "http://p/v1"]);
        assert_eq!((failures(&b, "metro"), failures(&b, "prov")), (1, 1));
        let balance = b.ledger().balance("app");
        assert_eq!((balance.spent, balance.reserved), (0, 0));
        assert_eq!(sink.0.iter().filter(|e| e.is_final()).count(), 1);
        assert_eq!(b.relayed()["app"].requests, 2);

        // One attempt configured: no failover.
        let mut b = broker(vec![Err(CloudError::test_status(503, None))]);
        b.limits.failover_attempts = 1;
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.error.unwrap().0, ErrorName::UpstreamFailed);
        assert_eq!(asked(&b), ["http://m/v1"]);

        // Only one endpoint: nowhere to go.
        let b = broker_on(Script::new(vec![Err(CloudError::test_connect())]), 2, 1_000, 1);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.error.unwrap().0, ErrorName::UpstreamFailed);
        assert_eq!(asked(&b), ["http://m/v1"]);
    }

    /// A scripted cloud that runs `hook` before each chat.
    struct Hooked<F>(Script, F);

    impl<F: Fn() + Send + Sync + 'static> Cloud for Hooked<F> {
        async fn chat(&self, base_url: &str, request: &ChatRequest) -> Result<ChatStream, CloudError> {
            (self.1)();
            self.0.chat(base_url, request).await
        }
    }

    #[tokio::test]
    async fn a_failover_the_budget_no_longer_covers_is_refused_and_charges_nothing() {
        // The app's budget is lowered while its request is on its way to metro: metro's
        // reservation goes back whole, and the failover's own is refused.
        let ledger = std::sync::Arc::new(std::sync::OnceLock::<Ledger>::new());
        let lower = std::sync::Arc::clone(&ledger);
        let cloud = Hooked(Script::new(vec![Err(CloudError::test_status(503, None))]), move || {
            lower.get().unwrap().set_budgets(crate::ledger::Budgets {
                app_tokens: 5,
                device_tokens: 10_000,
                ..crate::ledger::Budgets::default()
            });
        });
        let b = broker_on(cloud, 2, 1_000, 2);
        assert!(ledger.set(b.ledger().clone()).is_ok());
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        let (name, message) = out.error.unwrap();
        assert_eq!(name, ErrorName::BudgetExceeded, "{message}");
        assert!(
            message.contains("scripted 503") && message.contains("then failing over to \"prov\""),
            "{message}"
        );
        assert_eq!((out.endpoint.as_str(), out.charged), ("prov", 0));
        assert_eq!(*b.cloud.0.1.lock().unwrap(), ["http://m/v1"]);
        let balance = b.ledger().balance("app");
        assert_eq!((balance.spent, balance.reserved), (0, 0));
        assert_eq!(b.scheduler().held("app"), 0);
        assert_eq!(sink.0.iter().filter(|e| e.is_final()).count(), 1);
    }

    /// A scripted cloud whose endpoints take their time to answer, by base URL.
    struct Slow(Script, Vec<(&'static str, Duration)>);

    impl Cloud for Slow {
        async fn chat(&self, base_url: &str, request: &ChatRequest) -> Result<ChatStream, CloudError> {
            // Taken from the script in the order asked, answered after the endpoint's delay.
            let answer = self.0.chat(base_url, request).await;
            if let Some((_, delay)) = self.1.iter().find(|(url, _)| *url == base_url) {
                tokio::time::sleep(*delay).await;
            }
            answer
        }
    }

    #[expect(clippy::unnecessary_wraps, reason = "scripts are lists of results")]
    fn answer(text: &str, prompt_tokens: u32) -> Scripted {
        Ok(vec![
            delta(text),
            Ok(CloudEvent::Usage(Usage {
                prompt_tokens,
                completion_tokens: 1,
            })),
        ])
    }

    /// A broker hedging after 100 ms, metro answering after `metro` ms and prov after `prov`;
    /// the races are decided by 100 ms or more, in real time.
    fn hedged(script: Vec<Scripted>, metro: u64, prov: u64, app_tokens: u64) -> Broker<Slow, ManualClock> {
        let delays = vec![
            ("http://m/v1", Duration::from_millis(metro)),
            ("http://p/v1", Duration::from_millis(prov)),
        ];
        let mut b = broker_on(Slow(Script::new(script), delays), 2, app_tokens, 2);
        b.limits.hedge_after = Some(Duration::from_millis(100));
        b
    }

    fn slow_asked(b: &Broker<Slow, ManualClock>) -> Vec<String> {
        b.cloud.0.1.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_slow_first_token_is_hedged_and_the_first_answer_wins() {
        let b = hedged(vec![answer("slow", 9), answer("fast", 8)], 5_000, 0, 1_000);
        let a = b.admit("app", ask(Some(10))).unwrap();
        assert_eq!(a.route().endpoint, "metro");
        let mut sink = Collect::default();
        let started = tokio::time::Instant::now();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        assert_eq!((out.state, out.endpoint.as_str()), (EndState::Done, "prov"));
        assert_eq!(slow_asked(&b), ["http://m/v1", "http://p/v1"]);
        // Only the winner's usage is charged; the loser's reservation went back whole.
        assert_eq!(out.charged, 9);
        let balance = b.ledger().balance("app");
        assert_eq!((balance.spent, balance.reserved), (9, 0));
        assert_eq!(sink.0.len(), 2, "{:?}", sink.0);
        assert_eq!(sink.0[0], StreamEvent::Delta { text: "fast".into() });
        assert_eq!(b.scheduler().held("app"), 0);
        assert_eq!(b.relayed()["app"].requests, 2);
        let stats = b.router().statistics();
        assert_eq!(
            stats.iter().map(|s| (s.failures, s.successes)).collect::<Vec<_>>(),
            [(0, 0), (0, 1)],
            "losing a race is no failure"
        );
    }

    #[tokio::test]
    async fn the_first_endpoint_may_still_win_and_the_hedge_is_released() {
        let b = hedged(vec![answer("first", 9), answer("hedge", 8)], 300, 3_000, 1_000);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let mut sink = Collect::default();
        let out = b.run(a, &mut sink, std::future::pending()).await;
        assert_eq!((out.endpoint.as_str(), out.charged), ("metro", 10));
        assert_eq!(slow_asked(&b), ["http://m/v1", "http://p/v1"]);
        let balance = b.ledger().balance("app");
        assert_eq!((balance.spent, balance.reserved), (10, 0));
        assert_eq!(sink.0[0], StreamEvent::Delta { text: "first".into() });
        assert_eq!(b.scheduler().held("app"), 0);
    }

    #[tokio::test]
    async fn no_hedge_within_the_delay_or_beyond_the_budget() {
        // The first token comes before the delay.
        let b = hedged(vec![answer("quick", 9)], 0, 0, 1_000);
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!((out.endpoint.as_str(), out.charged), ("metro", 10));
        assert_eq!(slow_asked(&b), ["http://m/v1"]);

        // The budget covers one reservation, not two: no hedge, however slow.
        let b = hedged(vec![answer("slow", 9)], 300, 0, 30);
        let a = b.admit("app", ask(Some(10))).unwrap();
        assert!(a.estimate() * 2 > 30, "{}", a.estimate());
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!((out.endpoint.as_str(), out.charged), ("metro", 10));
        assert_eq!(slow_asked(&b), ["http://m/v1"]);
        assert_eq!(b.ledger().balance("app").spent, 10);
    }

    #[tokio::test]
    async fn a_hedge_that_fails_leaves_the_race_to_the_first_endpoint() {
        let b = hedged(
            vec![answer("slow", 9), Err(CloudError::test_status(503, None))],
            400,
            0,
            1_000,
        );
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(
            (out.state, out.endpoint.as_str(), out.charged),
            (EndState::Done, "metro", 10)
        );
        let balance = b.ledger().balance("app");
        assert_eq!((balance.spent, balance.reserved), (10, 0));
        let failures: Vec<_> = b.router().statistics().iter().map(|s| s.failures).collect();
        assert_eq!(failures, [0, 1]);
        assert_eq!(b.scheduler().held("app"), 0);
    }

    #[tokio::test]
    async fn when_the_first_endpoint_fails_the_running_hedge_answers() {
        let b = hedged(
            vec![Err(CloudError::test_status(503, None)), answer("hedge", 8)],
            250,
            500,
            1_000,
        );
        let a = b.admit("app", ask(Some(10))).unwrap();
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(
            (out.state, out.endpoint.as_str(), out.charged),
            (EndState::Done, "prov", 9)
        );
        // Not sent a third time: the hedge was already on its way.
        assert_eq!(slow_asked(&b), ["http://m/v1", "http://p/v1"]);
        let balance = b.ledger().balance("app");
        assert_eq!((balance.spent, balance.reserved), (9, 0));
        let failures: Vec<_> = b.router().statistics().iter().map(|s| s.failures).collect();
        assert_eq!(failures, [1, 0]);
    }

    /// The hedge target just back from its cooldown is its probe; losing the race is no verdict
    /// on it, so the next request may probe it, not only the one after another cooldown.
    #[tokio::test]
    async fn a_probe_that_loses_a_hedge_race_leaves_the_endpoint_to_the_next_request() {
        let b = hedged(vec![answer("first", 9), answer("hedge", 8)], 300, 3_000, 1_000);
        b.router().report_failure("prov", "s", None);
        b.router().clock().advance(Duration::from_secs(31));
        let a = b.admit("app", ask(Some(10))).unwrap();
        assert_eq!(a.route().endpoint, "metro");
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!((out.state, out.endpoint.as_str()), (EndState::Done, "metro"));
        assert_eq!(slow_asked(&b), ["http://m/v1", "http://p/v1"], "prov was the hedge");
        let prov = &b.router().statistics()[1];
        assert_eq!(
            (prov.health, prov.cooldown_left, prov.failures),
            ("cooling", Duration::ZERO, 1),
            "half-open again, not failed: {prov:?}"
        );
        let next = b
            .router()
            .pick_except(None, |_, _| 0, &["metro".to_owned()])
            .map(|r| r.endpoint);
        assert_eq!(next, Ok("prov".to_owned()), "the next request probes it");
    }

    /// A probe admitted but abandoned by the front end before it ran leaves the endpoint to the
    /// next request, and its place in line goes back.
    #[tokio::test]
    async fn an_abandoned_probe_leaves_the_endpoint_to_the_next_request() {
        let b = broker_on(Script::new(vec![answer("ok", 9)]), 2, 1_000, 1);
        b.router().report_failure("metro", "s", None);
        b.router().clock().advance(Duration::from_secs(31));
        let a = b.admit("app", ask(Some(10))).unwrap();
        assert!(a.route().probe.is_some());
        assert_eq!(b.router().statistics()[0].health, "probing");
        b.abandon(a);
        assert_eq!(b.router().statistics()[0].health, "cooling");
        assert_eq!(b.scheduler().activity().0, 0, "its place went back");
        let again = b.admit("app", ask(Some(10))).unwrap();
        assert!(again.route().probe.is_some(), "the next request probes it");
        let out = b.run(again, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.state, EndState::Done);
        assert_eq!(b.router().statistics()[0].health, "healthy");
    }

    /// A probe refused before it is sent (here by the app's budget) leaves the endpoint to the
    /// next request too.
    #[tokio::test]
    async fn a_probe_refused_at_admission_leaves_the_endpoint_to_the_next_request() {
        let b = broker_on(Script::new(vec![answer("ok", 9)]), 2, 30, 1);
        b.router().report_failure("metro", "s", None);
        b.router().clock().advance(Duration::from_secs(31));
        let refused = b.admit("app", ask(Some(100)));
        assert!(matches!(refused, Err(BrokerError::Budget(_))));
        assert_eq!(b.router().statistics()[0].health, "cooling");
        let a = b.admit("other", ask(Some(10))).unwrap();
        assert!(a.route().probe.is_some());
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.state, EndState::Done);
        assert_eq!(b.router().statistics()[0].health, "healthy");
    }

    /// A cloud that logs who asked, in order, and holds each answer until the test lets it go;
    /// it answers with 5 prompt and `completion` completion tokens.
    struct Held {
        asked: Mutex<Vec<String>>,
        go: tokio::sync::Semaphore,
        completion: u32,
    }

    impl Held {
        fn new(completion: u32) -> Self {
            Self {
                asked: Mutex::new(Vec::new()),
                go: tokio::sync::Semaphore::new(0),
                completion,
            }
        }
    }

    impl Cloud for std::sync::Arc<Held> {
        async fn chat(&self, _base_url: &str, request: &ChatRequest) -> Result<ChatStream, CloudError> {
            self.asked
                .lock()
                .unwrap()
                .push(request.messages[0].content.texts().collect());
            self.go.acquire().await.unwrap().forget();
            let usage = Usage {
                prompt_tokens: 5,
                completion_tokens: self.completion,
            };
            Ok(Box::pin(stream::iter([
                Ok(CloudEvent::Delta("ok".into())),
                Ok(CloudEvent::Usage(usage)),
            ])))
        }
    }

    fn said(text: &str, priority: Priority) -> ChatOptions {
        ChatOptions {
            messages: vec![Message::new("user", text)],
            max_tokens: Some(100),
            priority,
            ..Default::default()
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn waiting_requests_hold_no_tokens_and_interactive_ones_go_first() {
        let cloud = std::sync::Arc::new(Held::new(1));
        let b = std::sync::Arc::new(broker_on(std::sync::Arc::clone(&cloud), 1, 1_000, 1));
        let start = |text: &str, priority| {
            let a = b.admit("app", said(text, priority)).unwrap();
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move { b.run(a, &mut Collect::default(), std::future::pending()).await })
        };
        let busy = start("busy", Priority::Background);
        settle().await;
        let estimate = b.ledger().balance("app").reserved;
        let mut runs = vec![busy];
        for (text, priority) in [
            ("bg1", Priority::Background),
            ("bg2", Priority::Background),
            ("int1", Priority::Interactive),
            ("int2", Priority::Interactive),
        ] {
            runs.push(start(text, priority));
        }
        settle().await;
        assert_eq!(
            b.ledger().balance("app").reserved,
            estimate,
            "only the running request holds tokens"
        );
        assert_eq!(b.scheduler().load()[0].1.queued, 4);
        cloud.go.add_permits(5);
        for run in runs {
            assert_eq!(run.await.unwrap().state, EndState::Done);
        }
        assert_eq!(*cloud.asked.lock().unwrap(), ["busy", "int1", "int2", "bg1", "bg2"]);
    }

    #[tokio::test]
    async fn queue_time_counts_in_the_ttft_the_router_sees() {
        let cloud = std::sync::Arc::new(Held::new(1));
        let b = std::sync::Arc::new(broker_on(std::sync::Arc::clone(&cloud), 1, 1_000, 1));
        let start = |text: &str| {
            let a = b.admit("app", said(text, Priority::Interactive)).unwrap();
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move { b.run(a, &mut Collect::default(), std::future::pending()).await })
        };
        let (first, second) = (start("first"), start("second"));
        settle().await;
        b.router().clock().advance(Duration::from_secs(5));
        cloud.go.add_permits(2);
        first.await.unwrap();
        second.await.unwrap();
        let stats = &b.router().statistics()[0];
        assert_eq!(stats.successes, 2);
        // Both waited 5 s: the first at its endpoint, the second in line; the peak holds.
        assert!((5_000.0..5_100.0).contains(&stats.ttft_ms), "{stats:?}");
    }

    #[tokio::test]
    async fn a_queued_request_cancelled_costs_nothing_and_leaves_the_line() {
        let cloud = std::sync::Arc::new(Held::new(1));
        let b = std::sync::Arc::new(broker_on(std::sync::Arc::clone(&cloud), 1, 1_000, 1));
        let first = b.admit("app", said("first", Priority::Interactive)).unwrap();
        let b2 = std::sync::Arc::clone(&b);
        let running = tokio::spawn(async move { b2.run(first, &mut Collect::default(), std::future::pending()).await });
        settle().await;
        let queued = b.admit("app", said("queued", Priority::Interactive)).unwrap();
        let mut sink = Collect::default();
        let out = b.run(queued, &mut sink, std::future::ready(())).await;
        assert_eq!((out.state, out.charged), (EndState::Cancelled, 0));
        assert_eq!(sink.0.iter().filter(|e| e.is_final()).count(), 1);
        assert_eq!(b.scheduler().held("app"), 1);
        cloud.go.add_permits(1);
        assert_eq!(running.await.unwrap().state, EndState::Done);
        assert_eq!(*cloud.asked.lock().unwrap(), ["first"]);
    }

    #[tokio::test]
    async fn refusals_start_only_when_the_budget_is_really_spent() {
        // Each request reserves 100 + its prompt estimate at dispatch but uses 25.
        let cloud = std::sync::Arc::new(Held::new(20));
        let b = std::sync::Arc::new(broker_on(std::sync::Arc::clone(&cloud), 1, 1_000, 1));
        cloud.go.add_permits(100);
        let runs: Vec<_> = (0..60)
            .map(|i| {
                let a = b.admit("app", said(&format!("q{i}"), Priority::Interactive)).unwrap();
                let b = std::sync::Arc::clone(&b);
                tokio::spawn(async move { b.run(a, &mut Collect::default(), std::future::pending()).await })
            })
            .collect();
        let mut refused_from = None;
        let mut charged = 0;
        for (i, run) in runs.into_iter().enumerate() {
            let out = run.await.unwrap();
            match out.error {
                None => {
                    assert!(refused_from.is_none(), "request {i} answered after a refusal");
                    charged += out.charged;
                }
                Some((name, _)) => {
                    assert_eq!(name, ErrorName::BudgetExceeded, "request {i}");
                    refused_from.get_or_insert(i);
                }
            }
        }
        assert!(refused_from.is_some(), "the budget ran out");
        assert_eq!(b.ledger().balance("app").spent, charged);
        assert!(
            (900..=1_000).contains(&charged),
            "charged {charged} of 1000 before refusing"
        );
    }

    #[test]
    fn images_are_reserved_by_their_tiles() {
        assert_eq!(image_tokens(1, 1), 85 + 170);
        assert_eq!(image_tokens(512, 512), 85 + 170);
        assert_eq!(image_tokens(513, 512), 85 + 2 * 170);
        // 1024 x 1024: shorter side to 768, so 2 x 2 tiles.
        assert_eq!(image_tokens(1024, 1024), 85 + 4 * 170);
        // 4096 x 8192: fitted to 1024 x 2048, then 768 x 1536: 2 x 3 tiles.
        assert_eq!(image_tokens(4096, 8192), 85 + 6 * 170);
        // A long strip is the worst case: 2048 x 768 is 4 x 2 tiles.
        assert_eq!(image_tokens(60_000, 2), 85 + 4 * 170);
        assert_eq!(image_tokens(8192, 3072), 85 + 8 * 170);
        assert_eq!(image_tokens(u32::MAX, u32::MAX), 85 + 4 * 170);
    }

    #[tokio::test]
    async fn an_image_is_reserved_for_and_named_by_the_digest() {
        use aiesim_wire::{Image, image::samples};
        let image = Image::new(samples::png(1024, 1024)).unwrap();
        let text = Message::new("user", "what is this?");
        let with_image = Message::new(
            "user",
            Content::Parts(vec![Part::Text("what is this?".into()), Part::Image(image)]),
        );
        assert_eq!(
            estimate_prompt_tokens(std::slice::from_ref(&with_image)),
            estimate_prompt_tokens(std::slice::from_ref(&text)) + 85 + 4 * 170
        );
        let b = broker(vec![Ok(vec![delta("a cat")])]);
        let a = b
            .admit(
                "app",
                ChatOptions {
                    messages: vec![with_image.clone()],
                    ..ask(Some(10))
                },
            )
            .unwrap();
        assert_eq!(
            a.estimate(),
            10 + u64::from(estimate_prompt_tokens(std::slice::from_ref(&with_image)))
        );
        let request = |m: Message| ChatRequest {
            model: "s".into(),
            messages: vec![m],
            max_tokens: 10,
            temperature: None,
        };
        let route = a.route().clone();
        let other = Image::new(samples::png(1024, 1023)).unwrap();
        let with_other = Message::new(
            "user",
            Content::Parts(vec![Part::Text("what is this?".into()), Part::Image(other)]),
        );
        let digests = [text, with_image, with_other].map(|m| request_digest(&route, &request(m)));
        assert_ne!(digests[0], digests[1]);
        assert_ne!(digests[1], digests[2], "the image's bytes are paid for");
        let out = b.run(a, &mut Collect::default(), std::future::pending()).await;
        assert_eq!(out.state, EndState::Done);
    }
}
