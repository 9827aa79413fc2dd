//! Cron expressions as marketing ops write them.
//!
//! The `cron` crate wants six or seven fields (with seconds) and counts weekdays from
//! Sunday = 1; crontab lines have five fields and Sunday = 0 or 7. Five-field lines are
//! taken as crontab (seconds = 0, weekday numbers turned into names); six or seven
//! fields go to the crate unchanged.

use std::str::FromStr;

/// Why a cron line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{line}` is not a cron expression: {why}")]
pub struct CronError {
    pub line: String,
    pub why: String,
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a 5-field crontab line or a 6/7-field expression.
pub fn parse(line: &str) -> Result<cron::Schedule, CronError> {
    let fail = |why: String| CronError {
        line: line.to_string(),
        why,
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let expr = match fields.len() {
        5 => {
            let dow = crontab_weekdays(fields[4]).map_err(fail)?;
            format!(
                "0 {} {} {} {} {}",
                fields[0], fields[1], fields[2], fields[3], dow
            )
        }
        6 | 7 => fields.join(" "),
        n => {
            return Err(fail(format!(
                "it has {n} fields; write 5 (minute hour day-of-month month weekday, as in crontab) \
                 or 6-7 (with seconds first, and a year last)"
            )));
        }
    };
    cron::Schedule::from_str(&expr).map_err(|e| fail(e.to_string()))
}

/// Rewrites a crontab weekday field (0-7, Sunday = 0 or 7) into day names.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{s}` is not a step in the weekday field"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (day(a)?, day(b)?)
        } else {
            let d = day(range)?;
            (d, if step > 1 { 6 } else { d })
        };
        // 7 is Sunday again; "5-7" means Friday to Sunday.
        let hi = if hi < lo && hi == 0 { 7 } else { hi };
        if hi < lo {
            return Err(format!("weekday range `{range}` runs backwards"));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    Ok(DAYS
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

fn day(token: &str) -> Result<usize, String> {
    if let Ok(n) = token.parse::<usize>() {
        return if n <= 7 {
            Ok(if n == 7 { 0 } else { n })
        } else {
            Err(format!(
                "weekday `{n}` is out of range: use 0-7 (0 and 7 are Sunday) or MON..SUN"
            ))
        };
    }
    let upper = token.to_ascii_uppercase();
    DAYS.iter()
        .position(|d| upper.starts_with(d))
        .ok_or_else(|| format!("`{token}` is not a weekday: use 0-7 or MON..SUN"))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Utc, Weekday};

    use super::*;

    fn next(line: &str, after: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        parse(line).unwrap().after(&after).next().unwrap()
    }

    #[test]
    fn crontab_weekdays_become_names() {
        assert_eq!(crontab_weekdays("1-5").unwrap(), "MON,TUE,WED,THU,FRI");
        assert_eq!(crontab_weekdays("0").unwrap(), "SUN");
        assert_eq!(crontab_weekdays("7").unwrap(), "SUN");
        assert_eq!(crontab_weekdays("5-7").unwrap(), "SUN,FRI,SAT");
        assert_eq!(crontab_weekdays("*/2").unwrap(), "SUN,TUE,THU,SAT");
        assert_eq!(crontab_weekdays("mon,wed").unwrap(), "MON,WED");
        assert!(crontab_weekdays("8").is_err());
    }

    #[test]
    fn five_fields_run_like_crontab() {
        // Saturday 2026-11-21 12:00 UTC; "weekdays at 06:30" next fires Monday.
        let sat = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        let n = next("30 6 * * 1-5", sat);
        assert_eq!(n.weekday(), Weekday::Mon);
        assert_eq!((n.format("%H:%M:%S").to_string()), "06:30:00");
        // Sunday = 0 in crontab.
        assert_eq!(next("0 3 * * 0", sat).weekday(), Weekday::Sun);
    }

    #[test]
    fn six_fields_pass_through_and_bad_lines_explain() {
        let sat = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        assert_eq!(
            next("15 0 3 * * *", sat).format("%H:%M:%S").to_string(),
            "03:00:15"
        );
        let e = parse("every day").unwrap_err();
        assert!(e.why.contains("2 fields"), "{e}");
        assert!(parse("61 * * * *").is_err());
    }
}
