//! Business time: the working hours in which an SLA's clock runs. A calendar has
//! working days, opening hours, a time zone and public holidays, or runs always
//! (24/7). Deadlines are found by walking the working intervals in local time, so
//! weekends, holidays and daylight-saving changes fall out right.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;

use crate::clock::local_instant;

/// When the clock runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calendar {
    /// Around the clock.
    Always,
    Business(Hours),
}

/// Working days and hours in a time zone, without the holidays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    pub time_zone: Tz,
    pub days: Vec<Weekday>,
    pub from: NaiveTime,
    pub until: NaiveTime,
    pub holidays: BTreeSet<NaiveDate>,
}

/// How far ahead a deadline is looked for (a calendar with almost no working time).
const MAX_DAYS: i64 = 3 * 366;

impl Calendar {
    /// The instant at which `work` of business time has passed since `start`.
    pub fn add(&self, start: DateTime<Utc>, work: Duration) -> DateTime<Utc> {
        let hours = match self {
            Calendar::Always => return start + work,
            Calendar::Business(h) => h,
        };
        let mut left = work;
        let mut day = start.with_timezone(&hours.time_zone).date_naive();
        for _ in 0..MAX_DAYS {
            if let Some((open, close)) = hours.interval(day) {
                let from = open.max(start);
                if from < close {
                    let here = close - from;
                    if left <= here {
                        return from + left;
                    }
                    left -= here;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        // No working time for years: the deadline is as far away as it can be.
        start + Duration::days(MAX_DAYS)
    }

    /// Business time between `from` and `to` (zero when `to` is not later).
    pub fn between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::zero();
        }
        let hours = match self {
            Calendar::Always => return to - from,
            Calendar::Business(h) => h,
        };
        let mut total = Duration::zero();
        let mut day = from.with_timezone(&hours.time_zone).date_naive();
        let last = to.with_timezone(&hours.time_zone).date_naive();
        while day <= last {
            if let Some((open, close)) = hours.interval(day) {
                let (a, b) = (open.max(from), close.min(to));
                if a < b {
                    total += b - a;
                }
            }
            day = match day.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        total
    }
}

impl Hours {
    /// The working interval of `day` in UTC, or `None` on a free day.
    fn interval(&self, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(&day.weekday()) || self.holidays.contains(&day) {
            return None;
        }
        let open = local_instant(self.time_zone, day, self.from)?;
        let close = local_instant(self.time_zone, day, self.until)?;
        (open < close).then_some((open, close))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn berlin_office(holidays: &[(i32, u32, u32)]) -> Calendar {
        Calendar::Business(Hours {
            time_zone: chrono_tz::Europe::Berlin,
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            from: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            until: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
            holidays: holidays
                .iter()
                .map(|&(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap())
                .collect(),
        })
    }

    fn berlin(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn friday_afternoon_plus_two_hours_is_monday_morning() {
        let c = berlin_office(&[]);
        assert_eq!(
            c.add(berlin(3, 20, 16, 30), Duration::hours(2)),
            berlin(3, 23, 10, 30)
        );
        // Half of it (a reminder at 50 %): half an hour on Friday, half on Monday.
        assert_eq!(
            c.add(berlin(3, 20, 16, 30), Duration::hours(1)),
            berlin(3, 23, 9, 30)
        );
    }

    #[test]
    fn the_weekend_of_the_clock_change_counts_no_more_and_no_less() {
        // Summer time starts on Sunday 29 March 2026: Monday 10:30 is 08:30 UTC, not
        // 09:30 as the week before.
        let c = berlin_office(&[]);
        let due = c.add(berlin(3, 27, 16, 30), Duration::hours(2));
        assert_eq!(due, berlin(3, 30, 10, 30));
        assert_eq!(due, Utc.with_ymd_and_hms(2026, 3, 30, 8, 30, 0).unwrap());
        assert_eq!(c.between(berlin(3, 27, 16, 30), due), Duration::hours(2));
    }

    #[test]
    fn holidays_and_nights_do_not_count() {
        // Good Friday and Easter Monday 2026.
        let c = berlin_office(&[(2026, 4, 3), (2026, 4, 6)]);
        assert_eq!(
            c.add(berlin(4, 2, 16, 0), Duration::hours(2)),
            berlin(4, 7, 10, 0)
        );
        // Started at night or at the weekend: the clock starts at opening time.
        assert_eq!(
            c.add(berlin(3, 21, 11, 0), Duration::minutes(15)),
            berlin(3, 23, 9, 15)
        );
        assert_eq!(
            c.add(berlin(3, 24, 22, 0), Duration::minutes(90)),
            berlin(3, 25, 10, 30)
        );
        // Whole days: 2 working days from Thursday noon is Monday noon.
        assert_eq!(
            c.add(berlin(3, 26, 12, 0), Duration::hours(16)),
            berlin(3, 30, 12, 0)
        );
    }

    #[test]
    fn always_counts_every_minute() {
        let start = berlin(3, 28, 23, 0);
        assert_eq!(
            Calendar::Always.add(start, Duration::hours(5)),
            start + Duration::hours(5)
        );
        assert_eq!(
            Calendar::Always.between(start, start + Duration::hours(5)),
            Duration::hours(5)
        );
    }

    #[test]
    fn business_time_between_two_instants() {
        let c = berlin_office(&[]);
        // Friday 16:00 to Monday 10:00: one hour each side of the weekend.
        assert_eq!(
            c.between(berlin(3, 20, 16, 0), berlin(3, 23, 10, 0)),
            Duration::hours(2)
        );
        assert_eq!(
            c.between(berlin(3, 23, 10, 0), berlin(3, 20, 16, 0)),
            Duration::zero()
        );
    }
}
