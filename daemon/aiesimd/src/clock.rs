//! Time, behind a trait so tests control it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for durations and rates.
    fn now(&self) -> Instant;
    /// Wall-clock time, for calendar windows.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The clocks of the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; its wall clock moves with it.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<(Instant, SystemTime)>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::at(SystemTime::now())
    }
}

impl ManualClock {
    /// A clock whose wall clock reads `wall`.
    pub fn at(wall: SystemTime) -> Self {
        Self(Arc::new(Mutex::new((Instant::now(), wall))))
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().expect("clock lock");
        t.0 += by;
        t.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.0.lock().expect("clock lock").0
    }
    fn wall(&self) -> SystemTime {
        self.0.lock().expect("clock lock").1
    }
}
