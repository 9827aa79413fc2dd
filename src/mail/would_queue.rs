//! What the outbox would do with the mails rules ask for, without a database: for the
//! backtest and for rule fixtures. The same rules as live: a mail is queued once per
//! lead, template and key (or once per its repeat period), a mail suppressed at send
//! time does not use that up, and the send-time check is [`policy::decide`] itself
//! (suppressed address, consent, topic left, quarantine, frequency cap).
//!
//! The lead's state at the time the mail is asked for stands for its state at send
//! time (trigger mails go out within seconds). The frequency cap, like the send
//! window, only delays a mail: it goes out when a slot frees, and that slot counts
//! for the mails asked for after it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::clock::to_ms;
use crate::config::MailConfig;
use crate::domain::{Lead, MailClass, MailRequest, Repeat};
use crate::mail::StreamPlan;
use crate::mail::policy::{self, Decision, Facts};

/// What the outbox would do with one mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queued and sent (perhaps later: the send window and the frequency cap delay).
    Queued,
    /// Not sent, with the reason as the outbox names it: `once_only` (the same mail
    /// was queued before), `repeat_period` (within its `every` period), or the send-time
    /// reasons `no_consent`, `quarantine`, `topic_left`, `address_suppressed`.
    Suppressed(&'static str),
}

/// The mails of one lead so far.
#[derive(Debug, Default)]
struct LeadMails {
    /// (template, key) -> when last queued (ms).
    queued: HashMap<(String, String), i64>,
    /// When its marketing mails go out (ms), in order.
    marketing: Vec<i64>,
}

/// The outbox's decisions for a sequence of mail requests, lead by lead.
pub struct WouldQueue {
    config: Arc<MailConfig>,
    plan: Arc<StreamPlan>,
    default_tz: Tz,
    leads: HashMap<i64, LeadMails>,
    suppressed: HashSet<String>,
}

/// At most this many cap delays in a row for one mail (a slot frees after each).
const MAX_DELAYS: usize = 10_000;

impl WouldQueue {
    pub fn new(config: Arc<MailConfig>, plan: Arc<StreamPlan>, default_tz: Tz) -> Self {
        Self {
            config,
            plan,
            default_tz,
            leads: HashMap::new(),
            suppressed: HashSet::new(),
        }
    }

    /// Puts an address on the suppression list (as a bounce or complaint would).
    pub fn suppress_address(&mut self, email: &str) {
        self.suppressed.insert(email.trim().to_lowercase());
    }

    /// A mail asked for at `at` for lead `lead_id` (state `lead`): what the outbox
    /// would do with it (a mail only delayed by the send window counts as Queued).
    pub fn offer(
        &mut self,
        lead_id: i64,
        lead: &Lead,
        mail: &MailRequest,
        at: DateTime<Utc>,
    ) -> Verdict {
        let now = to_ms(at);
        let mails = self.leads.entry(lead_id).or_default();
        let same = (mail.template.clone(), mail.key.clone());
        // As the outbox's insert: not again after the cut.
        if let Some(&last) = mails.queued.get(&same) {
            match mail.repeat {
                Repeat::Once => return Verdict::Suppressed("once_only"),
                Repeat::Every(ms) if last > now.saturating_sub(ms) => {
                    return Verdict::Suppressed("repeat_period");
                }
                _ => {}
            }
        }
        let marketing = mail.class == MailClass::Marketing;
        let topic = marketing.then(|| self.plan.topic_of("", &mail.template));
        let suppressed = self.suppressed.contains(lead.email.as_str());
        // A mail waiting for the cap goes after the ones that waited before it.
        let mut t = if marketing {
            mails.marketing.last().map_or(now, |&last| last.max(now))
        } else {
            now
        };
        for _ in 0..MAX_DELAYS {
            let per = self.config.cap.per.as_millis() as i64;
            let recent: Vec<i64> = mails
                .marketing
                .iter()
                .copied()
                .filter(|&s| s > t - per && s <= t)
                .collect();
            let facts = Facts {
                class: mail.class,
                stream_step: false,
                stream_active: true,
                lead: Some(lead),
                suppressed: suppressed.then_some("suppressed"),
                recent_marketing: recent.first().map(|&oldest| (recent.len() as i64, oldest)),
                topic,
            };
            match policy::decide(
                &self.config,
                self.default_tz,
                &facts,
                crate::clock::from_ms(t),
            ) {
                Decision::Send => {
                    mails.queued.insert(same, now);
                    if marketing {
                        mails.marketing.push(t);
                    }
                    return Verdict::Queued;
                }
                Decision::Suppress(reason) => return Verdict::Suppressed(reason),
                Decision::Later { until, .. } => t = to_ms(until).max(t + 1),
            }
        }
        // Never in practice: a cap frees a slot per period.
        Verdict::Suppressed("frequency_cap")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::Map;

    use super::*;
    use crate::config::Config;
    use crate::domain::{Consent, Email};

    fn queue() -> WouldQueue {
        let config = Config::load_with_env(None, Vec::new()).expect("defaults load");
        let plan = StreamPlan::new(config.streams.clone(), config.mail.quarantine.clone())
            .with_topics(config.topics.clone());
        WouldQueue::new(
            Arc::new(config.mail.clone()),
            Arc::new(plan),
            config.time_zone,
        )
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

    fn mail(template: &str, key: &str, repeat: Repeat) -> MailRequest {
        MailRequest {
            template: template.into(),
            class: MailClass::Marketing,
            key: key.into(),
            repeat,
            data: Map::new(),
            opt_in: false,
        }
    }

    fn day(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap()
    }

    #[test]
    fn once_per_lead_template_and_key() {
        let mut q = queue();
        let l = lead("lead", true);
        let m = mail("trigger/use-case", "crm", Repeat::Once);
        assert_eq!(q.offer(1, &l, &m, day(2, 9)), Verdict::Queued);
        assert_eq!(
            q.offer(1, &l, &m, day(20, 9)),
            Verdict::Suppressed("once_only")
        );
        // Another key, another lead: each its own.
        let other = mail("trigger/use-case", "security", Repeat::Once);
        assert_eq!(q.offer(1, &l, &other, day(2, 10)), Verdict::Queued);
        assert_eq!(q.offer(2, &l, &m, day(2, 9)), Verdict::Queued);
    }

    #[test]
    fn every_period_slides_from_the_last_queued_mail() {
        let mut q = queue();
        let l = lead("lead", true);
        let m = mail(
            "trigger/pricing-follow-up",
            "",
            Repeat::Every(14 * 86_400_000),
        );
        assert_eq!(q.offer(1, &l, &m, day(1, 9)), Verdict::Queued);
        assert_eq!(
            q.offer(1, &l, &m, day(14, 9)),
            Verdict::Suppressed("repeat_period")
        );
        assert_eq!(q.offer(1, &l, &m, day(15, 10)), Verdict::Queued);
        assert_eq!(
            q.offer(1, &l, &m, day(16, 10)),
            Verdict::Suppressed("repeat_period")
        );
        let always = mail("trigger/x", "", Repeat::Always);
        assert_eq!(q.offer(1, &l, &always, day(16, 10)), Verdict::Queued);
        assert_eq!(q.offer(1, &l, &always, day(16, 10)), Verdict::Queued);
    }

    #[test]
    fn a_suppressed_mail_does_not_use_up_once_only() {
        let mut q = queue();
        let m = mail("trigger/use-case", "crm", Repeat::Once);
        assert_eq!(
            q.offer(1, &lead("lead", false), &m, day(2, 9)),
            Verdict::Suppressed("no_consent")
        );
        assert_eq!(
            q.offer(1, &lead("sql", true), &m, day(3, 9)),
            Verdict::Suppressed("quarantine")
        );
        let mut left = lead("lead", true);
        left.topics_left
            .insert(q.plan.topic_of("", &m.template).to_string());
        assert_eq!(
            q.offer(1, &left, &m, day(4, 9)),
            Verdict::Suppressed("topic_left")
        );
        assert_eq!(
            q.offer(1, &lead("lead", true), &m, day(5, 9)),
            Verdict::Queued
        );
        assert_eq!(
            q.offer(1, &lead("lead", true), &m, day(6, 9)),
            Verdict::Suppressed("once_only")
        );
        // Transactional mail needs no consent, but not to a suppressed address.
        let mut confirm = mail("optin/confirm", "", Repeat::Every(86_400_000));
        confirm.class = MailClass::Transactional;
        assert_eq!(
            q.offer(1, &lead("lead", false), &confirm, day(6, 9)),
            Verdict::Queued
        );
        q.suppress_address(" A@example.com");
        assert_eq!(
            q.offer(1, &lead("lead", false), &confirm, day(8, 9)),
            Verdict::Suppressed("address_suppressed")
        );
    }

    #[test]
    fn the_frequency_cap_delays_and_later_mails_wait_behind() {
        let mut q = queue();
        let (max, per) = (
            q.config.cap.max as usize,
            q.config.cap.per.as_millis() as i64,
        );
        assert!(max > 0);
        let l = lead("lead", true);
        for i in 0..max {
            let m = mail("trigger/x", &i.to_string(), Repeat::Once);
            assert_eq!(q.offer(1, &l, &m, day(2, 9)), Verdict::Queued);
        }
        // Over the cap: still queued, sent when the first slot frees.
        let late = mail("trigger/x", "late", Repeat::Once);
        assert_eq!(q.offer(1, &l, &late, day(2, 10)), Verdict::Queued);
        let sends = &q.leads[&1].marketing;
        assert_eq!(sends.len(), max + 1);
        assert_eq!(sends[max], to_ms(day(2, 9)) + per + 1);
        // The next one waits behind it, and transactional mail is not held.
        let later = mail("trigger/x", "later", Repeat::Once);
        assert_eq!(q.offer(1, &l, &later, day(2, 11)), Verdict::Queued);
        assert!(q.leads[&1].marketing[max + 1] > to_ms(day(2, 9)) + per);
        let mut t = mail("optin/confirm", "", Repeat::Always);
        t.class = MailClass::Transactional;
        assert_eq!(q.offer(1, &l, &t, day(2, 12)), Verdict::Queued);
        assert_eq!(q.leads[&1].marketing.len(), max + 2);
    }
}
