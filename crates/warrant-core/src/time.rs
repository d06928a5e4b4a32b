//! Points in time and lifetimes.
//!
//! A [`Timestamp`] is milliseconds since the Unix epoch, written as RFC 3339 in
//! UTC wherever people read it. A [`Ttl`] is a lifetime given on the command line
//! as `30s`, `5m`, `1h30m`. Lifetimes of anything warrant issues are capped at
//! [`MAX_TOKEN_LIFETIME`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The hard cap on any token warrant issues (DESIGN §3).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How much clock difference between warrant and a relying party is tolerated
/// when deciding that every token a key signed has expired.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (JWT `iat`/`exp` style).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Hour of the day, 0..=23, UTC.
    pub fn hour_utc(self) -> i64 {
        self.as_secs().rem_euclid(86_400) / 3600
    }

    /// Day of the week, UTC, 0 = Sunday ... 6 = Saturday (1970-01-01 was a Thursday).
    pub fn weekday_utc(self) -> i64 {
        (self.as_secs().div_euclid(86_400) + 4).rem_euclid(7)
    }

    fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// Parses RFC 3339 (`2026-11-22T10:00:00Z`, fractional seconds allowed).
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeError> {
        let t = humantime::parse_rfc3339(s).map_err(|_| TimeError::Rfc3339(s.to_owned()))?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TimeError::Rfc3339(s.to_owned()))?
            .as_millis();
        Ok(Self(
            i64::try_from(ms).map_err(|_| TimeError::Rfc3339(s.to_owned()))?,
        ))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturating.
    fn add(self, d: Duration) -> Timestamp {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturating.
    fn sub(self, d: Duration) -> Timestamp {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a time or lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an RFC 3339 timestamp.
    #[error("`{0}` is not an RFC 3339 time; write it like `2026-11-22T10:00:00Z`")]
    Rfc3339(String),
    /// Not a duration.
    #[error("`{0}` is not a duration; write it like `30s`, `5m`, `1h` or `1h30m`")]
    Duration(String),
    /// A duration outside the allowed range.
    #[error("{what} `{value}` is out of range; it must be between {min} and {max}")]
    Range {
        what: &'static str,
        value: String,
        min: Ttl,
        max: Ttl,
    },
}

/// A lifetime, written `30s`, `5m`, `1h30m`. Always a whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// A lifetime of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The lifetime as a duration.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// The lifetime in whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// Checks that `self` lies in `min..=max`, naming `what` in the error.
    pub fn within(self, what: &'static str, min: Ttl, max: Ttl) -> Result<Self, TimeError> {
        if self < min || self > max {
            return Err(TimeError::Range {
                what,
                value: self.to_string(),
                min,
                max,
            });
        }
        Ok(self)
    }
}

impl FromStr for Ttl {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d =
            humantime::parse_duration(s.trim()).map_err(|_| TimeError::Duration(s.to_owned()))?;
        if d.subsec_nanos() != 0 {
            return Err(TimeError::Duration(s.to_owned()));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_millis(1_795_000_000_123);
        let s = t.to_string();
        assert_eq!(s, "2026-11-18T11:06:40.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn calendar_fields() {
        // 2026-11-22 is a Sunday.
        let t = Timestamp::parse_rfc3339("2026-11-22T13:05:00Z").unwrap();
        assert_eq!(t.hour_utc(), 13);
        assert_eq!(t.weekday_utc(), 0);
        let mon = Timestamp::parse_rfc3339("2026-11-23T00:00:00Z").unwrap();
        assert_eq!(mon.weekday_utc(), 1);
    }

    #[test]
    fn ttl_parse_and_display() {
        for (s, secs, shown) in [
            ("30s", 30, "30s"),
            ("5m", 300, "5m"),
            ("1h30m", 5400, "1h30m"),
            ("90s", 90, "1m30s"),
            ("2d", 172_800, "2d"),
        ] {
            let t: Ttl = s.parse().unwrap();
            assert_eq!(t.as_secs(), secs);
            assert_eq!(t.to_string(), shown);
        }
        for bad in ["", "5", "five minutes", "1.5s", "-5m"] {
            let err = bad.parse::<Ttl>().unwrap_err().to_string();
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn ttl_range() {
        let t: Ttl = "2h".parse().unwrap();
        let err = t
            .within("max-ttl", Ttl::from_secs(1), Ttl::from_secs(3600))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "max-ttl `2h` is out of range; it must be between 1s and 1h"
        );
    }
}
