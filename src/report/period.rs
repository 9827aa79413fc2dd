//! The period a report covers: the last N days, or from a calendar day (midnight in
//! the configured time zone), up to now. Parsed once at the edge (CLI flags, query
//! parameters); reports take only a valid [`Period`].

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::clock::{from_ms, local_instant, to_ms};

/// Days covered when neither `days` nor `since` is given.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest period `days` may ask for (about 100 years).
pub const MAX_DAYS: i64 = 36_500;

/// From `since` to `until`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Period {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Why `days` or `since` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("give either `days` or `since`, not both")]
    Both,
    #[error("`days` must be a whole number from 1 to {MAX_DAYS}, not `{0}`")]
    Days(String),
    #[error("`since` must be a day such as 2026-01-31 (YYYY-MM-DD), not `{0}`")]
    Since(String),
    #[error("`since` {0} is in the future; give a day up to today")]
    Future(String),
}

impl Period {
    /// The period of `days` or `since` (raw text as given) ending at `now`; the last
    /// [`DEFAULT_DAYS`] days when neither is given. `since` is a calendar day in `tz`.
    pub fn parse(
        days: Option<&str>,
        since: Option<&str>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Result<Self, PeriodError> {
        // The store keeps milliseconds.
        let now = from_ms(to_ms(now));
        match (days, since) {
            (Some(_), Some(_)) => Err(PeriodError::Both),
            (Some(raw), None) => {
                let n = raw
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_DAYS).contains(n))
                    .ok_or_else(|| PeriodError::Days(raw.to_string()))?;
                Ok(Self::last_days(n, now))
            }
            (None, Some(raw)) => {
                let day = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
                    .map_err(|_| PeriodError::Since(raw.to_string()))?;
                let since = local_instant(tz, day, NaiveTime::MIN)
                    .ok_or_else(|| PeriodError::Since(raw.to_string()))?;
                if since > now {
                    return Err(PeriodError::Future(raw.trim().to_string()));
                }
                Ok(Self { since, until: now })
            }
            (None, None) => Ok(Self::last_days(DEFAULT_DAYS, now)),
        }
    }

    /// The `days` days (of 24 hours) up to `now`.
    pub fn last_days(days: i64, now: DateTime<Utc>) -> Self {
        Self {
            since: now - chrono::Duration::days(days),
            until: now,
        }
    }

    /// Both ends in Unix milliseconds, as the store takes them.
    pub fn ms(&self) -> (i64, i64) {
        (to_ms(self.since), to_ms(self.until))
    }

    /// "2026-02-01 09:00 to 2026-03-03 09:00 UTC".
    pub fn to_text(&self) -> String {
        format!(
            "{} to {} UTC",
            self.since.format("%Y-%m-%d %H:%M"),
            self.until.format("%Y-%m-%d %H:%M")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 12, 30, 0).unwrap()
    }

    #[test]
    fn defaults_to_the_last_thirty_days() {
        let p = Period::parse(None, None, now(), Tz::UTC).unwrap();
        assert_eq!(p.until, now());
        assert_eq!(
            p.since,
            Utc.with_ymd_and_hms(2026, 2, 8, 12, 30, 0).unwrap()
        );
    }

    #[test]
    fn days_count_back_from_now() {
        let p = Period::parse(Some("7"), None, now(), Tz::UTC).unwrap();
        assert_eq!(
            p.since,
            Utc.with_ymd_and_hms(2026, 3, 3, 12, 30, 0).unwrap()
        );
        for bad in ["0", "-3", "x", "1.5", "36501", ""] {
            assert_eq!(
                Period::parse(Some(bad), None, now(), Tz::UTC),
                Err(PeriodError::Days(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn since_is_midnight_in_the_time_zone() {
        let p = Period::parse(None, Some("2026-03-01"), now(), chrono_tz::Europe::Berlin).unwrap();
        // Berlin is UTC+1 in March before the clock change.
        assert_eq!(
            p.since,
            Utc.with_ymd_and_hms(2026, 2, 28, 23, 0, 0).unwrap()
        );
        assert_eq!(p.until, now());
        let p = Period::parse(None, Some("2026-03-10"), now(), Tz::UTC).unwrap();
        assert_eq!(p.since, Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap());
    }

    #[test]
    fn bad_since_and_both_are_refused() {
        assert_eq!(
            Period::parse(None, Some("01.03.2026"), now(), Tz::UTC),
            Err(PeriodError::Since("01.03.2026".into()))
        );
        assert_eq!(
            Period::parse(None, Some("2026-02-30"), now(), Tz::UTC),
            Err(PeriodError::Since("2026-02-30".into()))
        );
        assert_eq!(
            Period::parse(None, Some("2026-03-11"), now(), Tz::UTC),
            Err(PeriodError::Future("2026-03-11".into()))
        );
        assert_eq!(
            Period::parse(Some("7"), Some("2026-03-01"), now(), Tz::UTC),
            Err(PeriodError::Both)
        );
    }
}
