//! Times and spans as the console shows them: instants in the configured time zone
//! (`2026-12-07 14:03`), spans rounded to the two largest units (`3 d 4 h`, `25 min`).

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// `ms` (Unix) as `YYYY-MM-DD HH:MM` in `tz`; empty for an impossible instant.
pub fn at(ms: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// A span of `ms` (negative taken as its size) in at most two units.
pub fn span(ms: i64) -> String {
    let s = ms.unsigned_abs() / 1000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// Midnight of the day of `now` in `tz`, in Unix ms.
pub fn start_of_day(now: DateTime<Utc>, tz: Tz) -> i64 {
    let local = now.with_timezone(&tz).date_naive();
    local
        .and_hms_opt(0, 0, 0)
        .and_then(|m| tz.from_local_datetime(&m).earliest())
        .map_or(now.timestamp_millis(), |t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_instants_read_well() {
        assert_eq!(span(42_000), "42 s");
        assert_eq!(span(25 * 60_000), "25 min");
        assert_eq!(span(-(3 * 3_600_000 + 20 * 60_000)), "3 h 20 min");
        assert_eq!(span(2 * 86_400_000 + 5 * 3_600_000), "2 d 5 h");
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(at(0, tz), "1970-01-01 01:00");
        let now = DateTime::<Utc>::from_timestamp_millis(1_765_000_000_000).unwrap();
        let day = start_of_day(now, tz);
        assert!(day <= now.timestamp_millis() && now.timestamp_millis() - day < 86_400_000);
        assert_eq!(at(day, tz).split(' ').nth(1), Some("00:00"));
    }
}
