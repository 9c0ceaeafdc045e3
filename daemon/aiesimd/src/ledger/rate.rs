//! A tokens-per-minute limit: a token bucket with no I/O and no clock of its own.
//!
//! The bucket holds up to `per_minute` tokens and refills continuously at `per_minute` a
//! minute. Its level is kept in token·nanoseconds (tokens × one minute in ns), so refill is
//! exact integer arithmetic: no drift however often it is read.

use std::time::{Duration, Instant};

/// One minute in nanoseconds: the refill period.
const PERIOD_NS: u128 = 60_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("{needed} tokens will be available in {} s", wait.as_secs().max(1))]
    Wait { needed: u64, wait: Duration },
    #[error("{needed} tokens is more than a whole minute's {per_minute}; ask for fewer max_tokens")]
    TooLarge { needed: u64, per_minute: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    per_minute: u64,
    /// Tokens × `PERIOD_NS`.
    level: u128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_minute: u64, now: Instant) -> Self {
        Self {
            per_minute,
            level: u128::from(per_minute) * PERIOD_NS,
            last: now,
        }
    }

    pub fn per_minute(&self) -> u64 {
        self.per_minute
    }

    /// A new limit takes effect at once; what the bucket held is kept up to the new size.
    pub fn set_per_minute(&mut self, per_minute: u64, now: Instant) {
        self.refill(now);
        self.per_minute = per_minute;
        self.level = self.level.min(self.capacity());
    }

    fn capacity(&self) -> u128 {
        u128::from(self.per_minute) * PERIOD_NS
    }

    fn refill(&mut self, now: Instant) {
        // A clock that reads earlier than before adds nothing.
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(u128::from(self.per_minute)))
            .min(self.capacity());
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level / PERIOD_NS).unwrap_or(u64::MAX)
    }

    /// Whether `n` tokens could be taken now, and if not, how long until they could.
    pub fn check(&mut self, n: u64, now: Instant) -> Result<(), RateError> {
        if n > self.per_minute {
            return Err(RateError::TooLarge {
                needed: n,
                per_minute: self.per_minute,
            });
        }
        self.refill(now);
        let need = u128::from(n) * PERIOD_NS;
        if need <= self.level {
            return Ok(());
        }
        // per_minute > 0 here: n > 0 would have been TooLarge otherwise, and n == 0 fits.
        let wait_ns = (need - self.level).div_ceil(u128::from(self.per_minute));
        Err(RateError::Wait {
            needed: n,
            wait: Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX)),
        })
    }

    /// Takes `n` tokens, or says how long until it could.
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), RateError> {
        self.check(n, now)?;
        self.level -= u128::from(n) * PERIOD_NS;
        Ok(())
    }

    /// Returns `n` tokens taken but not used, up to the bucket's size.
    pub fn give_back(&mut self, n: u64) {
        self.level = self
            .level
            .saturating_add(u128::from(n) * PERIOD_NS)
            .min(self.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_new_bucket_is_full_and_empties_by_what_is_taken() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(600, t0);
        assert_eq!(b.available(t0), 600);
        b.take(250, t0).unwrap();
        assert_eq!(b.available(t0), 350);
        b.take(350, t0).unwrap();
        assert_eq!(b.available(t0), 0);
        assert!(b.take(1, t0).is_err());
    }

    #[test]
    fn it_refills_at_the_rate_and_never_past_its_size() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(600, t0);
        b.take(600, t0).unwrap();
        // 600 a minute is 10 a second.
        assert_eq!(b.available(t0 + SEC), 10);
        assert_eq!(b.available(t0 + 30 * SEC), 300);
        assert_eq!(b.available(t0 + 600 * SEC), 600, "capped at one minute's worth");
    }

    #[test]
    fn fractions_accumulate_exactly_across_many_small_reads() {
        let t0 = Instant::now();
        // 7 a minute: one token every 8.571… s; read every millisecond for a minute.
        let mut b = TokenBucket::new(7, t0);
        b.take(7, t0).unwrap();
        let mut now = t0;
        for _ in 0..60_000 {
            now += Duration::from_millis(1);
            let _ = b.available(now);
        }
        assert_eq!(b.available(now), 7, "no refill lost to rounding");
    }

    #[test]
    fn a_refusal_says_exactly_when_to_retry() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, t0);
        b.take(60, t0).unwrap();
        let Err(RateError::Wait { needed: 5, wait }) = b.take(5, t0) else {
            panic!("refused with a wait");
        };
        assert_eq!(wait, 5 * SEC);
        assert!(
            b.take(5, (t0 + wait).checked_sub(Duration::from_nanos(1)).unwrap())
                .is_err()
        );
        b.take(5, t0 + wait).unwrap();
        assert_eq!(b.available(t0 + wait), 0);
    }

    #[test]
    fn a_refused_take_takes_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        b.take(90, t0).unwrap();
        assert!(b.take(20, t0).is_err());
        assert_eq!(b.available(t0), 10);
    }

    #[test]
    fn more_than_a_minute_can_never_pass() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        assert_eq!(
            b.take(101, t0 + 3600 * SEC),
            Err(RateError::TooLarge {
                needed: 101,
                per_minute: 100
            })
        );
        assert_eq!(b.available(t0), 100, "nothing taken");
    }

    #[test]
    fn given_back_tokens_are_capped_at_the_size() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        b.take(80, t0).unwrap();
        b.give_back(30);
        assert_eq!(b.available(t0), 50);
        b.give_back(1_000);
        assert_eq!(b.available(t0), 100);
    }

    #[test]
    fn a_clock_read_earlier_adds_nothing() {
        let t0 = Instant::now() + 10 * SEC;
        let mut b = TokenBucket::new(60, t0);
        b.take(60, t0).unwrap();
        assert_eq!(b.available(t0.checked_sub(5 * SEC).unwrap()), 0);
        assert_eq!(b.available(t0 + SEC), 1, "time counts from the latest reading");
    }

    #[test]
    fn a_new_limit_applies_at_once_and_keeps_what_fits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, t0);
        b.take(200, t0).unwrap();
        b.set_per_minute(100, t0);
        assert_eq!(b.available(t0), 100);
        assert!(matches!(b.take(150, t0), Err(RateError::TooLarge { .. })));
        b.set_per_minute(6_000, t0);
        assert_eq!(b.available(t0), 100, "raising the limit grants nothing at once");
        assert_eq!(b.available(t0 + SEC), 200);
    }

    #[test]
    fn zero_tokens_always_pass_and_huge_limits_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u64::MAX, t0);
        b.take(u64::MAX, t0).unwrap();
        assert_eq!(b.available(t0 + Duration::from_secs(1_000_000_000)), u64::MAX);
        let mut empty = TokenBucket::new(0, t0);
        empty.take(0, t0).unwrap();
        assert!(matches!(empty.take(1, t0), Err(RateError::TooLarge { .. })));
    }

    #[test]
    fn steady_demand_is_served_at_the_rate() {
        // 1 200 a minute taken 10 at a time as fast as allowed over ten simulated minutes:
        // the first minute's full bucket plus ten minutes of refill, and not a token more.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_200, t0);
        let mut now = t0;
        let mut served = 0u64;
        while now <= t0 + 600 * SEC {
            match b.take(10, now) {
                Ok(()) => served += 10,
                Err(RateError::Wait { wait, .. }) => now += wait,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(served, 1_200 + 1_200 * 10);
    }
}
