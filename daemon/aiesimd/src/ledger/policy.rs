//! An app's budget policy: limits an administrator sets over the configured defaults.

use std::fmt;

/// Above this a token limit is a typo, not a budget (a thousand billion tokens).
pub const MAX_TOKENS: u64 = 1_000_000_000_000;
/// Above this a rate limit is a typo (a billion tokens a minute).
pub const MAX_PER_MINUTE: u64 = 1_000_000_000;
/// App ids are systemd unit names, optionally under `uid-N/`: short and printable.
const MAX_APP_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "\"{0}\" is not an app id: use 1 to 255 printable ASCII characters without spaces, as Budget.List shows them"
    )]
    BadApp(String),
    #[error("{key} = {value} is not a sensible limit: at most {max}")]
    TooLarge { key: Key, value: u64, max: u64 },
    #[error("per_minute = 0 would refuse every request; clear per_minute to lift the rate limit")]
    ZeroRate,
    #[error("the device has no per_minute rate: a rate limits an app")]
    DeviceRate,
}

/// One limit of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Tokens over the app's lifetime (the configured `app_tokens` by default).
    Total,
    Daily,
    Monthly,
    PerMinute,
}

impl Key {
    pub const ALL: [Self; 4] = [Self::Total, Self::Daily, Self::Monthly, Self::PerMinute];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::PerMinute => "per_minute",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Refuses values no administrator means.
    pub fn check(self, value: u64) -> Result<u64, PolicyError> {
        let max = match self {
            Self::PerMinute if value == 0 => return Err(PolicyError::ZeroRate),
            Self::PerMinute => MAX_PER_MINUTE,
            Self::Total | Self::Daily | Self::Monthly => MAX_TOKENS,
        };
        if value > max {
            return Err(PolicyError::TooLarge { key: self, value, max });
        }
        Ok(value)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits set for one app; `None` leaves the configured default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub total: Option<u64>,
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    pub per_minute: Option<u64>,
}

impl Policy {
    pub fn get(&self, key: Key) -> Option<u64> {
        match key {
            Key::Total => self.total,
            Key::Daily => self.daily,
            Key::Monthly => self.monthly,
            Key::PerMinute => self.per_minute,
        }
    }

    fn slot(&mut self, key: Key) -> &mut Option<u64> {
        match key {
            Key::Total => &mut self.total,
            Key::Daily => &mut self.daily,
            Key::Monthly => &mut self.monthly,
            Key::PerMinute => &mut self.per_minute,
        }
    }

    /// This policy with `changes` applied (`Some`: set, `None`: back to the default), each
    /// value checked; nothing changes unless all pass.
    pub fn with(mut self, changes: &[(Key, Option<u64>)]) -> Result<Self, PolicyError> {
        for &(key, value) in changes {
            *self.slot(key) = value.map(|v| key.check(v)).transpose()?;
        }
        Ok(self)
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Checks an app id given by an administrator.
pub fn check_app(app: &str) -> Result<(), PolicyError> {
    let printable = app.bytes().all(|b| b.is_ascii_graphic());
    if app.is_empty() || app.len() > MAX_APP_LEN || !printable || app.starts_with('/') {
        return Err(PolicyError::BadApp(app.escape_debug().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_set_and_clear_keys_and_leave_the_others() {
        let p = Policy::default()
            .with(&[(Key::Daily, Some(500)), (Key::PerMinute, Some(60))])
            .unwrap();
        assert_eq!(
            (p.daily, p.per_minute, p.monthly, p.total),
            (Some(500), Some(60), None, None)
        );
        let p = p.with(&[(Key::Daily, None), (Key::Monthly, Some(0))]).unwrap();
        assert_eq!(p.daily, None);
        assert_eq!(p.monthly, Some(0), "a zero window blocks the app: allowed");
        assert!(!p.is_default());
        assert!(
            p.with(&[(Key::Monthly, None), (Key::PerMinute, None)])
                .unwrap()
                .is_default()
        );
    }

    #[test]
    fn absurd_values_are_refused_and_change_nothing() {
        let p = Policy::default().with(&[(Key::Daily, Some(5))]).unwrap();
        let e = p
            .with(&[(Key::Monthly, Some(10)), (Key::Total, Some(MAX_TOKENS + 1))])
            .unwrap_err();
        assert_eq!(
            e,
            PolicyError::TooLarge {
                key: Key::Total,
                value: MAX_TOKENS + 1,
                max: MAX_TOKENS
            }
        );
        assert!(
            e.to_string()
                .starts_with("total = 1000000000001 is not a sensible limit"),
            "{e}"
        );
        assert_eq!(p.with(&[(Key::PerMinute, Some(0))]).unwrap_err(), PolicyError::ZeroRate);
        assert!(p.with(&[(Key::PerMinute, Some(MAX_PER_MINUTE + 1))]).is_err());
        assert_eq!(p.daily, Some(5));
    }

    #[test]
    fn keys_round_trip_by_name() {
        for key in Key::ALL {
            assert_eq!(Key::from_name(key.name()), Some(key));
        }
        assert_eq!(Key::from_name("weekly"), None);
    }

    #[test]
    fn app_ids_must_look_like_app_ids() {
        for good in ["uid-0", "uid-1000/app.scope", "foo.service"] {
            check_app(good).unwrap();
        }
        for bad in ["", "has space", "tab\t", "/abs", "é.service", &"x".repeat(256)] {
            assert!(check_app(bad).is_err(), "{bad:?}");
        }
    }
}
