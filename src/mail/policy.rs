//! May this lead receive this mail now? Decided at send time, in one place, for every
//! mail: the address is not suppressed; marketing mail needs consent, is not sent
//! for a topic the lead left (`topic_left`), is never sent in quarantine and respects the frequency cap; stream steps wait for the send window
//! and end with the stream.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::clock::{from_ms, to_ms};
use crate::config::MailConfig;
use crate::domain::{Lead, MailClass};

/// The outcome of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Not at all; the reason is kept and counted (`quarantine`, `no_consent`, ...).
    Suppress(&'static str),
    /// Not yet.
    Later {
        until: DateTime<Utc>,
        reason: &'static str,
    },
}

/// What is known about a mail and its lead at send time.
pub struct Facts<'a> {
    pub class: MailClass,
    /// A nurture stream step.
    pub stream_step: bool,
    /// For stream steps: the membership is still active.
    pub stream_active: bool,
    pub lead: Option<&'a Lead>,
    /// Why the address is on the suppression list, if it is.
    pub suppressed: Option<&'a str>,
    /// Marketing mails sent to the lead within the cap period: (count, oldest).
    pub recent_marketing: Option<(i64, i64)>,
    /// The topic of a marketing mail.
    pub topic: Option<&'a str>,
}

/// Decides for one mail.
pub fn decide(config: &MailConfig, default_tz: Tz, facts: &Facts, now: DateTime<Utc>) -> Decision {
    let Some(lead) = facts.lead else {
        return Decision::Suppress("lead_deleted");
    };
    // Internal mail goes to colleagues: the suppression list is about leads' addresses.
    if facts.class == MailClass::Internal {
        return Decision::Send;
    }
    if facts.suppressed.is_some() {
        return Decision::Suppress("address_suppressed");
    }
    if facts.class == MailClass::Transactional {
        return Decision::Send;
    }
    if !lead.consent_email.granted {
        return Decision::Suppress("no_consent");
    }
    if facts.topic.is_some_and(|t| lead.topics_left.contains(t)) {
        return Decision::Suppress("topic_left");
    }
    if config.in_quarantine(&lead.stage) {
        return Decision::Suppress("quarantine");
    }
    if facts.stream_step && !facts.stream_active {
        return Decision::Suppress("left_stream");
    }
    if config.cap.max > 0
        && let Some((count, oldest)) = facts.recent_marketing
        && count >= i64::from(config.cap.max)
    {
        // A slot frees when the oldest of those mails leaves the period.
        let mut until = from_ms(oldest + config.cap.per.as_millis() as i64 + 1);
        if facts.stream_step {
            until = config.window.next_open(until, lead_tz(lead, default_tz));
        }
        return Decision::Later {
            until,
            reason: "frequency_cap",
        };
    }
    if facts.stream_step {
        let open = config.window.next_open(now, lead_tz(lead, default_tz));
        if to_ms(open) > to_ms(now) {
            return Decision::Later {
                until: open,
                reason: "send_window",
            };
        }
    }
    Decision::Send
}

/// The lead's time zone, or the configured one.
pub fn lead_tz(lead: &Lead, default_tz: Tz) -> Tz {
    lead.time_zone
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(default_tz)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::config::Config;
    use crate::domain::{Consent, Email};

    fn config() -> MailConfig {
        Config::load_with_env(None, Vec::new())
            .expect("defaults load")
            .mail
    }

    fn lead(stage: &str, consent: bool) -> Lead {
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap();
        let mut l = Lead::new(1, Email::parse("a@example.com").unwrap(), stage, at);
        l.consent_email = Consent {
            granted: consent,
            at: Some(at),
            source: Some("test".into()),
        };
        l
    }

    fn facts(lead: &Lead, class: MailClass) -> Facts<'_> {
        Facts {
            class,
            stream_step: false,
            stream_active: true,
            lead: Some(lead),
            suppressed: None,
            recent_marketing: None,
            topic: Some("news"),
        }
    }

    // Wednesday 2026-03-04 10:00 Berlin.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, 9, 0, 0).unwrap()
    }

    #[test]
    fn quarantine_and_consent_stop_marketing_but_not_transactional_mail() {
        let c = config();
        let tz = chrono_tz::Europe::Berlin;
        let sql = lead("sql", true);
        assert_eq!(
            decide(&c, tz, &facts(&sql, MailClass::Marketing), now()),
            Decision::Suppress("quarantine")
        );
        assert_eq!(
            decide(&c, tz, &facts(&sql, MailClass::Transactional), now()),
            Decision::Send
        );
        let no_consent = lead("lead", false);
        assert_eq!(
            decide(&c, tz, &facts(&no_consent, MailClass::Marketing), now()),
            Decision::Suppress("no_consent")
        );
        let mut ok = lead("lead", true);
        assert_eq!(
            decide(&c, tz, &facts(&ok, MailClass::Marketing), now()),
            Decision::Send
        );
        ok.topics_left.insert("news".into());
        assert_eq!(
            decide(&c, tz, &facts(&ok, MailClass::Marketing), now()),
            Decision::Suppress("topic_left")
        );
        let mut other = facts(&ok, MailClass::Marketing);
        other.topic = Some("events");
        assert_eq!(decide(&c, tz, &other, now()), Decision::Send);
        ok.topics_left.clear();
        let mut f = facts(&ok, MailClass::Transactional);
        f.suppressed = Some("rejected");
        assert_eq!(
            decide(&c, tz, &f, now()),
            Decision::Suppress("address_suppressed")
        );
    }

    #[test]
    fn the_frequency_cap_defers_until_a_slot_frees() {
        let c = config();
        let ok = lead("lead", true);
        let mut f = facts(&ok, MailClass::Marketing);
        let oldest = to_ms(now()) - 3 * 86_400_000;
        f.recent_marketing = Some((3, oldest));
        match decide(&c, chrono_tz::Europe::Berlin, &f, now()) {
            Decision::Later { until, reason } => {
                assert_eq!(reason, "frequency_cap");
                assert_eq!(to_ms(until), oldest + 7 * 86_400_000 + 1);
            }
            other => panic!("{other:?}"),
        }
        f.recent_marketing = Some((2, oldest));
        assert_eq!(
            decide(&c, chrono_tz::Europe::Berlin, &f, now()),
            Decision::Send
        );
    }
}
