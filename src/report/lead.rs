//! A lead with its stage history, score ledger and recent activity: the JSON of
//! `GET /v1/leads/{email}` and `nurtured lead show`.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::domain::change::number;
use crate::domain::{Email, Lead};
use crate::rules::RuleError;
use crate::store::{
    EnrollmentRow, EventRow, HandoffFilter, HandoffRow, HistoryRow, LedgerRow, MailFilter,
    OutboxRow, Store, StoreError, TagSource, TopicChoice,
};

/// Everything worth knowing about one lead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeadReport {
    #[serde(flatten)]
    pub lead: Lead,
    pub name: String,
    #[schema(value_type = Vec<Object>)]
    pub stage_history: Vec<HistoryRow>,
    #[schema(value_type = Vec<Object>)]
    pub score_ledger: Vec<LedgerRow>,
    /// Who set each tag, when and why (next to `tags`, which stays a plain list).
    #[schema(value_type = Vec<Object>)]
    pub tag_sources: Vec<TagSource>,
    #[schema(value_type = Vec<Object>)]
    pub recent_activity: Vec<Activity>,
    /// Nurture stream memberships, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub streams: Vec<EnrollmentRow>,
    /// Recent mails to the lead, newest first.
    pub mails: Vec<OutboxRow>,
    /// Handoffs to sales, newest first, with sales' answers.
    pub handoffs: Vec<HandoffRow>,
    /// The lead's topic choices (left or kept again), with when and where.
    #[schema(value_type = Vec<Object>)]
    pub topics: Vec<TopicChoice>,
}

/// One event in the lead's recent activity.
#[derive(Debug, Serialize)]
pub struct Activity {
    #[serde(flatten)]
    pub event: EventRow,
    #[serde(rename = "type")]
    pub kind: String,
    pub properties: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RuleError>,
}

impl LeadReport {
    /// Loads the lead with `email`; `None` when there is none.
    pub async fn load(
        store: &Store,
        email: &Email,
        recent: usize,
    ) -> Result<Option<Self>, StoreError> {
        let Some(lead) = store.lead_by_email(email).await? else {
            return Ok(None);
        };
        let stage_history = store.stage_history(lead.id).await?;
        let score_ledger = store.score_ledger(lead.id, recent as i64 * 2).await?;
        let tag_sources = store.tag_sources(lead.id, &lead.tags).await?;
        let recent_activity = store
            .recent_events(lead.id, recent)
            .await?
            .into_iter()
            .map(|e| Activity {
                kind: e.kind.clone(),
                properties: serde_json::from_str(&e.properties).unwrap_or(Value::Null),
                error: e
                    .error
                    .as_deref()
                    .and_then(|t| serde_json::from_str(t).ok()),
                event: e,
            })
            .collect();
        let streams = store.enrollments_of(lead.id).await?;
        let mails = store
            .list_mails(&MailFilter {
                status: None,
                lead_id: Some(lead.id),
                limit: recent as i64,
            })
            .await?;
        let handoffs = store
            .handoffs(&HandoffFilter {
                state: None,
                lead_id: Some(lead.id),
                owner: None,
                limit: recent as i64,
            })
            .await?;
        let topics = store.topic_choices(lead.id).await?;
        Ok(Some(Self {
            name: lead.name(),
            lead,
            stage_history,
            score_ledger,
            tag_sources,
            recent_activity,
            streams,
            mails,
            handoffs,
            topics,
        }))
    }

    /// A readable page for people.
    pub fn to_text(&self) -> String {
        let l = &self.lead;
        let mut out = String::new();
        let when = |ms: i64| {
            crate::clock::from_ms(ms)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        };
        let _ = writeln!(out, "{}", l.email);
        let who: Vec<&str> = [
            Some(self.name.as_str()),
            l.title.as_deref(),
            l.company.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
        if !who.is_empty() {
            let _ = writeln!(out, "  {}", who.join(", "));
        }
        if let Some(phone) = &l.phone {
            let _ = writeln!(out, "  phone {phone}");
        }
        let _ = writeln!(
            out,
            "\nstage     {} (since {})",
            l.stage,
            l.stage_since.format("%Y-%m-%d %H:%M UTC")
        );
        let _ = writeln!(
            out,
            "scores    fit {}   interest {}",
            number(l.fit),
            number(l.interest)
        );
        let tags: Vec<&str> = l.tags.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "tags      {}",
            if tags.is_empty() {
                "-".into()
            } else {
                tags.join(", ")
            }
        );
        let consent = |c: &crate::domain::Consent| match (&c.at, c.granted) {
            (None, _) => "not asked".to_string(),
            (Some(at), g) => format!(
                "{} on {} ({})",
                if g { "yes" } else { "withdrawn" },
                at.format("%Y-%m-%d"),
                c.source.as_deref().unwrap_or("-")
            ),
        };
        let _ = writeln!(
            out,
            "consent   e-mail: {}; tracking: {}",
            consent(&l.consent_email),
            consent(&l.consent_tracking)
        );
        if !l.topics_left.is_empty() {
            let left: Vec<&str> = l.topics_left.iter().map(String::as_str).collect();
            let _ = writeln!(out, "topics    left: {}", left.join(", "));
        }
        if let Some(owner) = &l.owner {
            let _ = writeln!(out, "owner     {owner}");
        }
        if !self.tag_sources.is_empty() {
            let _ = writeln!(out, "\ntag sources");
            for t in &self.tag_sources {
                let _ = writeln!(
                    out,
                    "  {}  {:<20} {}  ({})",
                    when(t.since),
                    t.tag,
                    t.reason,
                    t.source
                );
            }
        }

        let _ = writeln!(out, "\nstage history");
        for h in &self.stage_history {
            let _ = writeln!(
                out,
                "  {}  {:>12} -> {:<12} {}  ({})",
                when(h.at),
                h.from_stage.as_deref().unwrap_or("-"),
                h.to_stage,
                h.reason,
                h.source
            );
        }
        if !self.score_ledger.is_empty() {
            let _ = writeln!(out, "\nscore changes (newest first)");
            for s in &self.score_ledger {
                let sign = if s.delta >= 0.0 { "+" } else { "" };
                let _ = writeln!(
                    out,
                    "  {}  {:<8} {:>7}  {}  ({})",
                    when(s.at),
                    s.axis,
                    format!("{sign}{}", number(s.delta)),
                    s.reason,
                    s.source
                );
            }
        }
        if !self.streams.is_empty() {
            let _ = writeln!(out, "\nstreams");
            for s in &self.streams {
                let state = match (&s.status[..], s.next_due_at) {
                    ("active", Some(due)) => format!("next step {} at {}", s.step + 1, when(due)),
                    ("active", None) => format!("step {} on its way", s.step + 1),
                    (status, _) => format!(
                        "{status}{}",
                        s.end_reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                };
                let _ = writeln!(
                    out,
                    "  {:<14} joined {}  {}",
                    s.stream,
                    when(s.entered_at),
                    state
                );
            }
        }
        if !self.mails.is_empty() {
            let _ = writeln!(out, "\nmails (newest first)");
            for m in &self.mails {
                let _ = writeln!(
                    out,
                    "  {}  {:<10} {:<28} {}",
                    when(m.finished_at.unwrap_or(m.due_at)),
                    m.status,
                    m.template,
                    m.reason.as_deref().unwrap_or("")
                );
            }
        }
        if !self.handoffs.is_empty() {
            let _ = writeln!(out, "\nhandoffs to sales (newest first)");
            for h in &self.handoffs {
                let answer = match (&h.answered_by, &h.answer_note) {
                    (Some(by), Some(note)) => format!("by {by}: {note}"),
                    (Some(by), None) => format!("by {by}"),
                    _ => h
                        .due_at
                        .map_or_else(String::new, |d| format!("due {}", when(d))),
                };
                let _ = writeln!(
                    out,
                    "  {}  #{:<4} {:<9} {:<8} {}",
                    when(h.created_at),
                    h.id,
                    h.state,
                    h.owner.as_deref().unwrap_or("-"),
                    answer
                );
            }
        }
        let _ = writeln!(out, "\nrecent activity (newest first)");
        for a in &self.recent_activity {
            let detail = match a.kind.as_str() {
                "page" => a
                    .properties
                    .get("url")
                    .or_else(|| a.properties.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {}  {:<9} {} {}  [{}]",
                when(a.event.occurred_at),
                a.kind,
                a.event.name,
                detail,
                if a.event.history {
                    format!("{}, history", a.event.status)
                } else {
                    a.event.status.clone()
                }
            );
            if let Some(e) = &a.error {
                let _ = writeln!(out, "      error: {e}");
            }
        }
        out
    }
}
