//! The daemon's counters: `GET /v1/stats` and `nurtured stats`.

use serde::Serialize;

use crate::mail::TemplateError;
use crate::rules::ruleset::RulesStatus;
use crate::store::{EventCounts, JobRun, MailCounts, Store, StoreError};

#[derive(Debug, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub events: EventCounts,
    /// Events skipped because their `messageId` was already stored, since start.
    pub events_duplicate: u64,
    pub leads: i64,
    pub stages: std::collections::BTreeMap<String, i64>,
    /// Handoffs not yet given to an owner (state `new`): the sales desk's backlog.
    pub handoffs_waiting: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesStatus>,
    /// Problems of the last template reload (the previous templates stay in use).
    pub template_errors: Vec<TemplateError>,
    pub recent_jobs: Vec<JobRun>,
    #[serde(flatten)]
    pub mails: MailCounts,
}

impl Stats {
    pub async fn load(
        store: &Store,
        duplicates: u64,
        rules: Option<RulesStatus>,
        template_errors: Vec<TemplateError>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            events: store.event_counts().await?,
            events_duplicate: duplicates,
            leads: store.lead_count().await?,
            stages: store.stage_counts().await?.into_iter().collect(),
            handoffs_waiting: store.handoffs_unassigned().await?,
            rules,
            template_errors,
            recent_jobs: store.recent_job_runs(10).await?,
            mails: store.mail_counts().await?,
        })
    }
}
