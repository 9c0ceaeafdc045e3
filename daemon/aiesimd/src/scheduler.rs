//! Who goes next to a busy endpoint.
//!
//! Each (endpoint, model) lane serves at most its limit of requests at once; the others wait
//! in line. Interactive requests always go before background ones, which wait (never dropped)
//! while interactive work is queued. Within a priority, apps take turns — the app served
//! longest ago first — and each app's requests go in the order they came. An app holds at most
//! `max_per_app` requests, waiting and running together, so it cannot fill the line alone.
//!
//! Plain Rust without time or I/O: a [`Ticket`] is a place in line, [`Ticket::dispatched`]
//! resolves when its turn comes, and dropping it (done, cancelled, refused) hands the turn on.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use aiesim_wire::Priority;
use tokio::sync::{oneshot, watch};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("app \"{app}\" already has {limit} requests queued or in flight")]
    AppFull { app: String, limit: usize },
}

/// One (endpoint, model): what a concurrency limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    pub endpoint: String,
    pub model: String,
}

/// A lane's load, as the router and `Endpoints` see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneLoad {
    pub running: usize,
    pub queued: usize,
    pub limit: usize,
}

struct Waiter {
    id: u64,
    app: String,
    priority: Priority,
    wake: oneshot::Sender<()>,
}

#[derive(Default)]
struct Line {
    limit: usize,
    running: usize,
    waiting: VecDeque<Waiter>,
    /// The turn at which each app was last served, for taking turns.
    last_served: HashMap<String, u64>,
    turns: u64,
}

impl Line {
    /// Starts waiters while there is room, best first.
    fn pump(&mut self) {
        while self.running < self.limit {
            let best = self
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| {
                    let rank = match w.priority {
                        Priority::Interactive => 0u8,
                        Priority::Background => 1,
                    };
                    (rank, self.last_served.get(&w.app).copied().unwrap_or(0), w.id)
                })
                .map(|(i, _)| i);
            let Some(waiter) = best.and_then(|i| self.waiting.remove(i)) else {
                return;
            };
            self.running += 1;
            self.turns += 1;
            self.last_served.insert(waiter.app, self.turns);
            // A waiter whose ticket is gone was removed under the same lock: the send cannot miss.
            let _ = waiter.wake.send(());
        }
    }
}

#[derive(Default)]
struct State {
    lines: HashMap<Lane, Line>,
    /// Requests each app holds, waiting or running.
    per_app: HashMap<String, usize>,
    next_id: u64,
}

pub struct Scheduler {
    state: Arc<Mutex<State>>,
    max_per_app: usize,
    /// Places ever taken, for whoever does work only while requests come (see [`Self::watch`]).
    taken: watch::Sender<u64>,
}

impl Scheduler {
    pub fn new(max_per_app: usize) -> Self {
        Self {
            state: Arc::default(),
            max_per_app,
            taken: watch::Sender::new(0),
        }
    }

    /// Changes each time a request takes a place: work that would wake the radio (a name
    /// lookup) waits for it, so an idle daemon stays off the air.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.taken.subscribe()
    }

    /// Takes a place in `lane`'s line (which serves `limit` at once) for one of `app`'s
    /// requests; it may be dispatched at once. Refused when the app holds its maximum.
    pub fn enqueue(&self, app: &str, lane: Lane, limit: usize, priority: Priority) -> Result<Ticket, SchedulerError> {
        let mut s = self.state.lock().expect("scheduler lock");
        let held = s.per_app.get(app).copied().unwrap_or(0);
        if held >= self.max_per_app {
            return Err(SchedulerError::AppFull {
                app: app.to_owned(),
                limit: self.max_per_app,
            });
        }
        *s.per_app.entry(app.to_owned()).or_default() += 1;
        Ok(self.place(&mut s, app, lane, limit, priority))
    }

    /// Moves a request to `lane`'s line (another endpoint, after its own failed), counted once
    /// against its app however full that is; the turn it held hands on to the next waiter.
    pub fn requeue(&self, ticket: &mut Ticket, lane: Lane, limit: usize, priority: Priority) {
        let moved = {
            let mut s = self.state.lock().expect("scheduler lock");
            *s.per_app.entry(ticket.app.clone()).or_default() += 1;
            self.place(&mut s, &ticket.app, lane, limit, priority)
        };
        // Dropping the old ticket gives back its count and its place.
        *ticket = moved;
    }

    /// A place in `lane` for a second copy of one of `app`'s requests (a hedge), only if it
    /// can run at once: nobody waits there and it has room. Counted against the app.
    pub fn try_start(&self, app: &str, lane: Lane, limit: usize, priority: Priority) -> Option<Ticket> {
        let mut s = self.state.lock().expect("scheduler lock");
        if let Some(line) = s.lines.get(&lane) {
            if !line.waiting.is_empty() || line.running >= limit.max(1) {
                return None;
            }
        }
        *s.per_app.entry(app.to_owned()).or_default() += 1;
        Some(self.place(&mut s, app, lane, limit, priority))
    }

    /// A new place at the back of `lane`'s line; the caller counted it against `app`.
    fn place(&self, s: &mut State, app: &str, lane: Lane, limit: usize, priority: Priority) -> Ticket {
        let id = s.next_id;
        s.next_id += 1;
        self.taken.send_replace(s.next_id);
        let (wake, turn) = oneshot::channel();
        let queue = s.lines.entry(lane.clone()).or_default();
        // The latest configuration wins; a lowered limit takes effect as requests end.
        queue.limit = limit.max(1);
        queue.waiting.push_back(Waiter {
            id,
            app: app.to_owned(),
            priority,
            wake,
        });
        queue.pump();
        Ticket {
            state: Arc::clone(&self.state),
            id,
            app: app.to_owned(),
            lane,
            woken: Some(turn),
        }
    }

    /// Requests held now by every app (waiting or running), and places ever taken: the daemon is
    /// idle while the first is 0 and the second does not move.
    pub fn activity(&self) -> (usize, u64) {
        let s = self.state.lock().expect("scheduler lock");
        (s.per_app.values().sum(), s.next_id)
    }

    /// Requests `app` holds, waiting or running.
    pub fn held(&self, app: &str) -> usize {
        let s = self.state.lock().expect("scheduler lock");
        s.per_app.get(app).copied().unwrap_or(0)
    }

    /// Requests queued or running on `endpoint` for `model`.
    pub fn outstanding(&self, endpoint: &str, model: &str) -> usize {
        let s = self.state.lock().expect("scheduler lock");
        let lane = Lane {
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
        };
        s.lines.get(&lane).map_or(0, |l| l.running + l.waiting.len())
    }

    /// The load of every lane that has requests, by lane.
    pub fn load(&self) -> Vec<(Lane, LaneLoad)> {
        let s = self.state.lock().expect("scheduler lock");
        let mut lanes: Vec<(Lane, LaneLoad)> = s
            .lines
            .iter()
            .map(|(lane, line)| {
                (
                    lane.clone(),
                    LaneLoad {
                        running: line.running,
                        queued: line.waiting.len(),
                        limit: line.limit,
                    },
                )
            })
            .collect();
        lanes.sort_by(|a, b| a.0.cmp(&b.0));
        lanes
    }
}

/// A request's place in line, then its turn; dropping it hands the turn to the next waiter.
pub struct Ticket {
    state: Arc<Mutex<State>>,
    id: u64,
    app: String,
    lane: Lane,
    /// `None` once the turn came and was seen.
    woken: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Whether the turn has come.
    pub fn is_dispatched(&mut self) -> bool {
        match &mut self.woken {
            None => true,
            Some(woken) => {
                if woken.try_recv().is_ok() {
                    self.woken = None;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Resolves when the turn has come; cancel-safe.
    pub async fn dispatched(&mut self) {
        if let Some(woken) = &mut self.woken {
            // The sender goes only with a grant or with this ticket.
            let _ = woken.await;
            self.woken = None;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.state.lock().expect("scheduler lock");
        if let Some(n) = s.per_app.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                s.per_app.remove(&self.app);
            }
        }
        let Some(line) = s.lines.get_mut(&self.lane) else {
            return;
        };
        if let Some(i) = line.waiting.iter().position(|w| w.id == self.id) {
            line.waiting.remove(i);
        } else {
            line.running -= 1;
        }
        line.pump();
        if line.running == 0 && line.waiting.is_empty() {
            s.lines.remove(&self.lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(endpoint: &str) -> Lane {
        Lane {
            endpoint: endpoint.into(),
            model: "m".into(),
        }
    }

    fn take(s: &Scheduler, app: &str, priority: Priority) -> Ticket {
        s.enqueue(app, lane("metro"), 1, priority).unwrap()
    }

    /// Ends the running ticket and returns which waiter ran next.
    fn next(tickets: &mut Vec<(&'static str, Ticket)>) -> &'static str {
        let running = tickets
            .iter_mut()
            .position(|(_, t)| t.is_dispatched())
            .expect("one runs");
        drop(tickets.remove(running));
        tickets
            .iter_mut()
            .find_map(|(name, t)| t.is_dispatched().then_some(*name))
            .expect("the next runs")
    }

    #[test]
    fn the_watch_moves_with_every_place_taken_and_with_nothing_else() {
        let s = Scheduler::new(10);
        let mut watch = s.watch();
        assert!(!watch.has_changed().unwrap());
        let first = take(&s, "a", Priority::Interactive);
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), 1);
        // Ending or being refused moves nothing.
        drop(first);
        assert!(!watch.has_changed().unwrap());
        let _second = take(&s, "b", Priority::Background);
        assert_eq!(*watch.borrow_and_update(), 2);
        let full = Scheduler::new(0);
        let mut none = full.watch();
        assert!(full.enqueue("a", lane("metro"), 1, Priority::Interactive).is_err());
        assert!(!none.has_changed().unwrap());
        assert_eq!(*none.borrow_and_update(), 0);
    }

    #[test]
    fn the_limit_holds_and_the_turn_passes_on_when_a_request_ends() {
        let s = Scheduler::new(10);
        let mut a = s.enqueue("a", lane("metro"), 2, Priority::Interactive).unwrap();
        let mut b = s.enqueue("a", lane("metro"), 2, Priority::Interactive).unwrap();
        let mut c = s.enqueue("a", lane("metro"), 2, Priority::Interactive).unwrap();
        let mut other = s.enqueue("a", lane("prov"), 2, Priority::Interactive).unwrap();
        assert!(a.is_dispatched() && b.is_dispatched() && other.is_dispatched());
        assert!(!c.is_dispatched(), "a third waits for one of two places");
        assert_eq!(
            s.load()[0],
            (
                lane("metro"),
                LaneLoad {
                    running: 2,
                    queued: 1,
                    limit: 2
                }
            )
        );
        drop(b);
        assert!(c.is_dispatched());
        drop((a, c, other));
        assert!(s.load().is_empty(), "empty lanes are forgotten");
        assert_eq!(s.held("a"), 0);
    }

    #[test]
    fn a_requeued_request_waits_in_its_new_line_and_hands_its_old_turn_on() {
        // The app is at its limit of two: a failover is counted once, not refused.
        let s = Scheduler::new(2);
        let mut failing = s.enqueue("a", lane("metro"), 1, Priority::Interactive).unwrap();
        let mut next = s.enqueue("a", lane("metro"), 1, Priority::Interactive).unwrap();
        let mut busy = s.enqueue("b", lane("prov"), 1, Priority::Interactive).unwrap();
        assert!(failing.is_dispatched() && busy.is_dispatched() && !next.is_dispatched());
        s.requeue(&mut failing, lane("prov"), 1, Priority::Interactive);
        assert!(next.is_dispatched(), "metro's turn went to the next in line");
        assert!(!failing.is_dispatched(), "prov serves one at a time");
        assert_eq!((s.held("a"), s.outstanding("prov", "m")), (2, 2));
        drop(busy);
        assert!(failing.is_dispatched());
        drop((failing, next));
        assert!(s.load().is_empty());
        assert_eq!(s.held("a"), 0);
    }

    #[test]
    fn a_hedge_starts_only_where_it_runs_at_once() {
        let s = Scheduler::new(1);
        let mut busy = s.enqueue("b", lane("prov"), 1, Priority::Interactive).unwrap();
        assert!(busy.is_dispatched());
        assert!(
            s.try_start("a", lane("prov"), 1, Priority::Interactive).is_none(),
            "prov is full"
        );
        let mut hedge = s.try_start("a", lane("nat"), 1, Priority::Interactive).unwrap();
        assert!(hedge.is_dispatched());
        assert_eq!(
            s.held("a"),
            1,
            "counted against the app, past its limit of 1 if need be"
        );
        drop((busy, hedge));
        assert!(s.load().is_empty());
    }

    #[test]
    fn interactive_goes_before_background_which_waits_but_is_not_dropped() {
        let s = Scheduler::new(10);
        let mut t = vec![
            ("busy", take(&s, "a", Priority::Background)),
            ("bg1", take(&s, "a", Priority::Background)),
            ("bg2", take(&s, "a", Priority::Background)),
            ("int1", take(&s, "a", Priority::Interactive)),
            ("int2", take(&s, "a", Priority::Interactive)),
        ];
        let order: Vec<_> = (0..4).map(|_| next(&mut t)).collect();
        assert_eq!(order, ["int1", "int2", "bg1", "bg2"]);
    }

    #[test]
    fn apps_take_turns_within_a_priority() {
        let s = Scheduler::new(10);
        let mut t = vec![
            ("busy", take(&s, "greedy", Priority::Interactive)),
            ("g1", take(&s, "greedy", Priority::Interactive)),
            ("g2", take(&s, "greedy", Priority::Interactive)),
            ("g3", take(&s, "greedy", Priority::Interactive)),
            ("o1", take(&s, "other", Priority::Interactive)),
            ("o2", take(&s, "other", Priority::Interactive)),
        ];
        let order: Vec<_> = (0..5).map(|_| next(&mut t)).collect();
        assert_eq!(order, ["o1", "g1", "o2", "g2", "g3"]);
    }

    #[test]
    fn an_app_holds_at_most_its_share_waiting_and_running() {
        let s = Scheduler::new(2);
        let first = take(&s, "a", Priority::Interactive);
        let _second = take(&s, "a", Priority::Background);
        assert_eq!(
            s.enqueue("a", lane("prov"), 4, Priority::Interactive).unwrap_err(),
            SchedulerError::AppFull {
                app: "a".into(),
                limit: 2
            }
        );
        let mut b = take(&s, "b", Priority::Interactive);
        drop(first);
        assert!(b.is_dispatched(), "another app is not held back by a full one");
        assert!(s.enqueue("a", lane("prov"), 4, Priority::Interactive).is_ok());
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_line() {
        let s = Scheduler::new(10);
        let running = take(&s, "a", Priority::Interactive);
        let gone = take(&s, "a", Priority::Interactive);
        let mut last = take(&s, "a", Priority::Interactive);
        drop(gone);
        assert_eq!(s.load()[0].1.queued, 1);
        drop(running);
        assert!(last.is_dispatched());
        assert_eq!(s.held("a"), 1);
    }

    #[tokio::test]
    async fn dispatched_resolves_when_the_turn_comes() {
        let s = Scheduler::new(10);
        let running = take(&s, "a", Priority::Interactive);
        let mut waiting = take(&s, "a", Priority::Interactive);
        let wait = tokio::spawn(async move {
            waiting.dispatched().await;
            waiting
        });
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(running);
        let mut waiting = wait.await.unwrap();
        assert!(waiting.is_dispatched());
    }
}
