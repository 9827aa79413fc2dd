//! `[retention]`: how long raw events and stored mail bodies are kept (off unless
//! set), and how long anonymous visitors' profiles live without an identify.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[retention]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Raw events stored longer ago than this are deleted; empty or "off": kept.
    #[serde(default)]
    pub events: String,
    /// Stored mail bodies of mails finished longer ago than this are deleted; empty or
    /// "off": kept.
    #[serde(default)]
    pub mail_content: String,
    /// Anonymous profiles without an identify are deleted after this.
    #[serde(default = "anonymous")]
    pub anonymous: String,
}

fn anonymous() -> String {
    "30d".into()
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            events: String::new(),
            mail_content: String::new(),
            anonymous: anonymous(),
        }
    }
}

/// The checked `[retention]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `None`: raw events are kept.
    pub events: Option<Duration>,
    /// `None`: mail bodies are kept.
    pub mail_content: Option<Duration>,
    pub anonymous: Duration,
}

impl Retention {
    /// Whether the retention job has anything to do.
    pub fn is_on(&self) -> bool {
        self.events.is_some() || self.mail_content.is_some()
    }
}

/// The shortest retention accepted: a day (the job runs daily).
const MIN: Duration = Duration::from_secs(24 * 3600);

/// Checks `[retention]`; problems go to `bad` as (key, message).
pub fn retention(raw: &RawRetention, bad: &dyn Fn(&str, String)) -> Retention {
    let optional = |key: &str, text: &str| -> Option<Duration> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("off") {
            return None;
        }
        match humantime::parse_duration(t) {
            Ok(d) if d >= MIN => Some(d),
            Ok(_) => {
                bad(
                    key,
                    format!("`{t}` is shorter than a day; write e.g. 90d or 1y, or \"off\""),
                );
                None
            }
            Err(_) => {
                bad(
                    key,
                    format!("`{t}` is not a duration: write e.g. 90d, 26weeks or 1y, or \"off\""),
                );
                None
            }
        }
    };
    let events = optional("retention.events", &raw.events);
    let mail_content = optional("retention.mail_content", &raw.mail_content);
    let anonymous = match humantime::parse_duration(raw.anonymous.trim()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            bad(
                "retention.anonymous",
                format!(
                    "`{}` is not a duration: write e.g. 30d or 12h",
                    raw.anonymous
                ),
            );
            Duration::from_secs(30 * 24 * 3600)
        }
    };
    Retention {
        events,
        mail_content,
        anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &RawRetention) -> (Retention, Vec<String>) {
        let problems = std::cell::RefCell::new(Vec::new());
        let r = retention(raw, &|k, m| problems.borrow_mut().push(format!("{k}: {m}")));
        (r, problems.into_inner())
    }

    #[test]
    fn off_by_default_with_anonymous_profiles_for_30_days() {
        let (r, problems) = check(&RawRetention::default());
        assert!(problems.is_empty());
        assert_eq!(r.events, None);
        assert_eq!(r.mail_content, None);
        assert_eq!(r.anonymous, Duration::from_secs(30 * 86_400));
        assert!(!r.is_on());
    }

    #[test]
    fn durations_are_checked() {
        let (r, problems) = check(&RawRetention {
            events: "90d".into(),
            mail_content: "1h".into(),
            anonymous: "soon".into(),
        });
        assert_eq!(r.events, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("retention.mail_content: `1h` is shorter than a day"));
        assert!(problems[1].starts_with("retention.anonymous: `soon` is not a duration"));
    }
}
