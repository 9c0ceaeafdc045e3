//! Calendar windows: the local day and month a moment falls in, in the configured time zone.
//!
//! A window is named by its key (`yyyymmdd` for a day, `yyyymm` for a month), so a later window
//! always compares greater and a new one starts empty instead of resetting a counter: spend that
//! lands at the boundary can never be overwritten.

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use jiff::{Timestamp, civil::Date, tz::TimeZone};

use crate::clock::{Clock, SystemClock};

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("\"{name}\" is not a time zone in the system's tz database")]
    UnknownZone {
        name: String,
        #[source]
        source: jiff::Error,
    },
}

/// A calendar period a budget can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub const ALL: [Self; 2] = [Self::Day, Self::Month];

    /// The name budgets use for it (config keys, `Budget.Set` keys).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Day => "daily",
            Self::Month => "monthly",
        }
    }

    const fn during(self) -> &'static str {
        match self {
            Self::Day => "today",
            Self::Month => "this month",
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.during())
    }
}

/// The keys of the day (`yyyymmdd`) and month (`yyyymm`) a moment falls in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    pub day: u32,
    pub month: u32,
}

impl Windows {
    /// Each window the later of the two: a clock stepped back never reopens a past window.
    #[must_use]
    pub fn latest(self, other: Self) -> Self {
        Self {
            day: self.day.max(other.day),
            month: self.month.max(other.month),
        }
    }

    pub const fn key(self, period: Period) -> u32 {
        match period {
            Period::Day => self.day,
            Period::Month => self.month,
        }
    }
}

/// The wall clock read in the budgets' time zone.
#[derive(Clone)]
pub struct Calendar {
    zone: TimeZone,
    clock: Arc<dyn Clock>,
    /// The local day last looked up (shared by clones): every moment in it has its windows, so
    /// the zone's rules are consulted once a day, not once per request.
    day: Arc<Mutex<Option<Day>>>,
}

/// A local day: the instants it spans, and its windows.
#[derive(Debug, Clone, Copy)]
struct Day {
    starts: Timestamp,
    ends: Timestamp,
    windows: Windows,
}

impl std::fmt::Debug for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calendar")
            .field("zone", &self.zone_name())
            .finish_non_exhaustive()
    }
}

impl Default for Calendar {
    /// The machine's clocks in its local zone.
    fn default() -> Self {
        Self::new(TimeZone::system(), Arc::new(SystemClock))
    }
}

impl Calendar {
    pub fn new(zone: TimeZone, clock: Arc<dyn Clock>) -> Self {
        Self {
            zone,
            clock,
            day: Arc::default(),
        }
    }

    /// The zone `name` from the tz database; empty: the system's local zone (UTC without one).
    pub fn zone(name: &str) -> Result<TimeZone, WindowError> {
        if name.is_empty() {
            return Ok(TimeZone::system());
        }
        TimeZone::get(name).map_err(|source| WindowError::UnknownZone {
            name: name.to_owned(),
            source,
        })
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The zone's IANA name, or its offset when it has none.
    pub fn zone_name(&self) -> String {
        self.zone
            .iana_name()
            .map_or_else(|| self.zone.to_offset(Timestamp::now()).to_string(), str::to_owned)
    }

    /// The windows the wall clock is in now.
    pub fn now(&self) -> Windows {
        self.windows_at(self.clock.wall())
    }

    pub fn windows_at(&self, t: SystemTime) -> Windows {
        let at = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut day = self.day.lock().expect("calendar lock");
        if let Some(day) = day.filter(|d| d.starts <= at && at < d.ends) {
            return day.windows;
        }
        let (windows, span) = self.look_up(at);
        *day = span
            .filter(|(starts, ends)| *starts <= at && at < *ends)
            .map(|(starts, ends)| Day { starts, ends, windows });
        windows
    }

    /// The windows of `at` from the zone's rules, and the instants its local day spans.
    fn look_up(&self, at: Timestamp) -> (Windows, Option<(Timestamp, Timestamp)>) {
        let date = at.to_zoned_datetime(self.zone.clone()).date();
        let span = || {
            let starts = date.to_zoned_datetime(self.zone.clone()).ok()?.timestamp();
            let ends = date
                .tomorrow()
                .ok()?
                .to_zoned_datetime(self.zone.clone())
                .ok()?
                .timestamp();
            Some((starts, ends))
        };
        let (y, m, d) = (
            u32::try_from(date.year()).unwrap_or(0),
            u32::try_from(date.month()).unwrap_or(0),
            u32::try_from(date.day()).unwrap_or(0),
        );
        let windows = Windows {
            day: y * 10_000 + m * 100 + d,
            month: y * 100 + m,
        };
        (windows, span())
    }

    /// When window `key` of `period` ends, in local time (`2026-12-03 00:00 +01:00`).
    pub fn ends(&self, period: Period, key: u32) -> String {
        let (y, m, d) = match period {
            Period::Day => (key / 10_000, key / 100 % 100, key % 100),
            Period::Month => (key / 100, key % 100, 1),
        };
        let start = || -> Option<Date> {
            let date = Date::new(i16::try_from(y).ok()?, i8::try_from(m).ok()?, i8::try_from(d).ok()?).ok()?;
            match period {
                Period::Day => date.tomorrow().ok(),
                Period::Month => date.last_of_month().tomorrow().ok(),
            }
        };
        start()
            .and_then(|next| next.to_zoned_datetime(self.zone.clone()).ok())
            .map_or_else(
                || "the next window".to_owned(),
                |z| z.strftime("%Y-%m-%d %H:%M %:z").to_string(),
            )
    }
}

#[cfg(test)]
#[expect(clippy::inconsistent_digit_grouping, reason = "window keys read best as yyyy_mm_dd")]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn at(rfc3339: &str) -> SystemTime {
        let ts = rfc3339.parse::<Timestamp>().unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_secs(ts.as_second().try_into().unwrap())
    }

    fn paris(wall: &str) -> (Calendar, ManualClock) {
        let clock = ManualClock::at(at(wall));
        (
            Calendar::new(Calendar::zone("Europe/Paris").unwrap(), Arc::new(clock.clone())),
            clock,
        )
    }

    /// The day looked up last is remembered; every moment, before it, in it, at its end and
    /// after, still gets its own windows from one calendar, across a DST day.
    #[test]
    fn the_remembered_day_answers_only_for_its_own_moments() {
        let (cal, _) = paris("2026-10-24T12:00:00Z");
        let fresh = || Calendar::new(Calendar::zone("Europe/Paris").unwrap(), Arc::new(SystemClock));
        // 25 October 2026 is 25 hours long in Paris: 22:00 UTC on the 24th to 23:00 on the 25th.
        for moment in [
            "2026-10-24T21:59:59Z",
            "2026-10-24T22:00:00Z",
            "2026-10-25T12:00:00Z",
            "2026-10-24T22:00:01Z",
            "2026-10-25T22:59:59Z",
            "2026-10-25T23:00:00Z",
            "2026-10-24T21:59:59Z",
            "2026-11-30T22:59:59Z",
            "2026-11-30T23:00:00Z",
            "2026-10-25T22:00:00Z",
        ] {
            assert_eq!(cal.windows_at(at(moment)), fresh().windows_at(at(moment)), "{moment}");
        }
        assert_eq!(cal.windows_at(at("2026-10-25T22:59:59Z")).day, 2026_10_25);
        assert_eq!(cal.windows_at(at("2026-10-25T23:00:00Z")).day, 2026_10_26);
        assert_eq!(cal.windows_at(at("2026-11-30T23:00:00Z")).month, 2026_12);
    }

    #[test]
    fn the_day_turns_at_local_midnight_not_at_utc_midnight() {
        // 23:30 UTC on 1 December is 00:30 on the 2nd in Paris (UTC+1 in winter).
        let (cal, clock) = paris("2026-12-01T22:59:59Z");
        assert_eq!(
            cal.now(),
            Windows {
                day: 2026_12_01,
                month: 2026_12
            }
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            cal.now(),
            Windows {
                day: 2026_12_02,
                month: 2026_12
            }
        );
        assert_eq!(cal.ends(Period::Day, 2026_12_02), "2026-12-03 00:00 +01:00");
    }

    #[test]
    fn the_month_turns_on_the_first_at_local_midnight() {
        let (cal, clock) = paris("2026-12-31T22:59:59Z");
        assert_eq!(
            cal.now(),
            Windows {
                day: 2026_12_31,
                month: 2026_12
            }
        );
        assert_eq!(cal.ends(Period::Month, 2026_12), "2027-01-01 00:00 +01:00");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            cal.now(),
            Windows {
                day: 2027_01_01,
                month: 2027_01
            }
        );
        assert_eq!(cal.ends(Period::Month, 2026_02), "2026-03-01 00:00 +01:00");
    }

    #[test]
    fn a_dst_day_is_23_or_25_hours_long() {
        // 29 March 2026: clocks go from 02:00 to 03:00 in Paris; the day starts at 23:00 UTC on
        // the 28th and ends at 22:00 UTC on the 29th.
        let (cal, clock) = paris("2026-03-28T23:00:00Z");
        assert_eq!(cal.now().day, 2026_03_29);
        assert_eq!(cal.ends(Period::Day, 2026_03_29), "2026-03-30 00:00 +02:00");
        clock.advance(Duration::from_secs(23 * 3600 - 1));
        assert_eq!(cal.now().day, 2026_03_29, "the short day has 23 hours");
        clock.advance(Duration::from_secs(1));
        assert_eq!(cal.now().day, 2026_03_30);
        // 25 October 2026: 03:00 goes back to 02:00; the day lasts 25 hours.
        let (cal, clock) = paris("2026-10-24T22:00:00Z");
        assert_eq!(cal.now().day, 2026_10_25);
        clock.advance(Duration::from_secs(25 * 3600 - 1));
        assert_eq!(cal.now().day, 2026_10_25, "the long day has 25 hours");
        clock.advance(Duration::from_secs(1));
        assert_eq!(cal.now().day, 2026_10_26);
    }

    #[test]
    fn unknown_zones_are_refused_by_name() {
        let e = Calendar::zone("Mars/Olympus_Mons").unwrap_err();
        assert!(e.to_string().contains("\"Mars/Olympus_Mons\""), "{e}");
        assert!(Calendar::zone("").is_ok(), "empty is the system's zone");
    }

    #[test]
    fn a_later_window_is_never_replaced_by_an_earlier_one() {
        let a = Windows {
            day: 2026_12_31,
            month: 2026_12,
        };
        let b = Windows {
            day: 2027_01_01,
            month: 2027_01,
        };
        assert_eq!(a.latest(b), b);
        assert_eq!(b.latest(a), b);
    }
}
