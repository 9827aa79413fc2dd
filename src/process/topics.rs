//! A lead's topic preferences, changed by the lead (the preference page, one-click
//! unsubscribe): under the lead's lock and fenced like every manual change, so it is
//! safe while events are processed, also by other daemons of a cluster.

use std::collections::BTreeSet;

use crate::domain::{Changes, Lead, StreamChange};
use crate::store::build;

use super::Processor;
use super::manual::{ManualError, retried};

/// What the lead chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicChoice {
    /// Topics to leave.
    pub leave: BTreeSet<String>,
    /// Topics to keep (or take again).
    pub keep: BTreeSet<String>,
    /// Leave all marketing mail: withdraws the mail consent.
    pub leave_all: bool,
}

impl Processor {
    /// Applies `choice` to lead `lead_id`, whose address must pass `is_for`. Leaving a
    /// topic ends the lead's streams of that topic; taking one again lets the streams
    /// of it that serve the lead start. Returns the lead, or `None` when no such lead
    /// has that address.
    pub async fn set_topics(
        &self,
        lead_id: i64,
        is_for: &(dyn Fn(&str) -> bool + Sync),
        choice: &TopicChoice,
        source: &str,
    ) -> Result<Option<Lead>, ManualError> {
        retried(|| self.try_set_topics(lead_id, is_for, choice, source)).await
    }

    async fn try_set_topics(
        &self,
        lead_id: i64,
        is_for: &(dyn Fn(&str) -> bool + Sync),
        choice: &TopicChoice,
        source: &str,
    ) -> Result<Option<Lead>, ManualError> {
        let _gate = self.gate.shared().await;
        let guard = self.locks.lock(lead_id).await;
        let Some(mut lead) = self.locked_lead(&guard).await? else {
            return Ok(None);
        };
        if !is_for(lead.email.as_str()) {
            return Ok(None);
        }
        let now = self.clock.now();
        let mut changed: Vec<(String, bool)> = Vec::new();
        for t in &choice.leave {
            if lead.topics_left.insert(t.clone()) {
                changed.push((t.clone(), true));
            }
        }
        for t in &choice.keep {
            if !choice.leave.contains(t) && lead.topics_left.remove(t) {
                changed.push((t.clone(), false));
            }
        }
        let mut changes = Changes::default();
        for s in &self.plan.streams {
            if changed.iter().any(|(t, left)| *left && *t == s.topic) {
                changes.streams.push(StreamChange::Exit {
                    stream: Some(s.name.clone()),
                    reason: format!("left topic {} ({source})", s.topic),
                });
            }
        }
        let withdraw = choice.leave_all && lead.consent_email.granted;
        if withdraw {
            lead.consent_email = crate::domain::Consent {
                granted: false,
                at: Some(now),
                source: Some(source.to_string()),
            };
            changes.streams.push(StreamChange::Exit {
                stream: None,
                reason: format!("consent withdrawn ({source})"),
            });
        } else if lead.consent_email.granted {
            let taken: Vec<&String> = changed
                .iter()
                .filter(|(_, left)| !left)
                .map(|(t, _)| t)
                .collect();
            changes
                .streams
                .extend(self.plan.on_consent(&lead).into_iter().filter(|c| {
                    matches!(c, StreamChange::Enroll { stream } if self
                        .plan
                        .stream(stream)
                        .is_some_and(|s| taken.contains(&&s.topic)))
                }));
        }
        if changed.is_empty() && !withdraw {
            return Ok(Some(lead));
        }
        lead.updated_at = now;
        let extra = build::topic_choices(
            self.store.dialect(),
            lead.id,
            &changed,
            crate::clock::to_ms(now),
            source,
        );
        self.save_one_with(&mut lead, &changes, extra).await?;
        tracing::info!(
            lead = lead.id,
            ?changed,
            withdraw,
            source,
            "topic preferences recorded"
        );
        Ok(Some(lead))
    }
}
