//! The send window: the next instant at which a stream step may go out, in the lead's
//! time zone (daylight-saving changes included).

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

use crate::clock::local_instant;
use crate::config::mail::SendWindow;

impl SendWindow {
    /// `at` if it lies inside the window, else the window's next opening.
    pub fn next_open(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = at.with_timezone(&tz);
        let time = local.time();
        if self.days.contains(&local.weekday()) && time >= self.from && time < self.until {
            return at;
        }
        let mut day = local.date_naive();
        if time >= self.from {
            day = day.succ_opt().unwrap_or(day);
        }
        // A window is at most a week away.
        for _ in 0..8 {
            if self.days.contains(&day.weekday())
                && let Some(open) = local_instant(tz, day, self.from)
                && open > at
            {
                return open;
            }
            day = day.succ_opt().unwrap_or(day);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, TimeZone, Weekday};

    use super::*;

    fn window() -> SendWindow {
        SendWindow {
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            from: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            until: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
        }
    }

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn inside_the_window_is_now() {
        let at = berlin(2026, 3, 4, 10, 30);
        assert_eq!(window().next_open(at, chrono_tz::Europe::Berlin), at);
    }

    #[test]
    fn evenings_and_weekends_wait_for_the_next_working_morning() {
        let tz = chrono_tz::Europe::Berlin;
        // Wednesday 18:00 -> Thursday 09:00.
        assert_eq!(
            window().next_open(berlin(2026, 3, 4, 18, 0), tz),
            berlin(2026, 3, 5, 9, 0)
        );
        // Wednesday 07:00 -> Wednesday 09:00.
        assert_eq!(
            window().next_open(berlin(2026, 3, 4, 7, 0), tz),
            berlin(2026, 3, 4, 9, 0)
        );
        // Friday 17:00 -> Monday 09:00, across the change to summer time (29 March).
        assert_eq!(
            window().next_open(berlin(2026, 3, 27, 17, 0), tz),
            berlin(2026, 3, 30, 9, 0)
        );
    }

    #[test]
    fn the_lead_time_zone_counts() {
        // 09:00 in Berlin is 03:00 in New York: wait for 09:00 there.
        let at = berlin(2026, 3, 4, 9, 0);
        let ny = chrono_tz::America::New_York;
        let open = window().next_open(at, ny);
        assert_eq!(open.with_timezone(&ny).time(), window().from);
        assert_eq!(
            open.with_timezone(&ny).date_naive(),
            at.with_timezone(&ny).date_naive()
        );
    }
}
