//! The daemon's counters: `GET /v1/stats` and `nurtured stats`.

use serde::Serialize;

use crate::mail::TemplateError;
use crate::rules::ruleset::RulesStatus;
use crate::store::{EventCounts, JobRun, MailCounts, Store, StoreError};

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = Option<Object>)]
    pub rules: Option<RulesStatus>,
    /// Problems of the last template reload (the previous templates stay in use).
    pub template_errors: Vec<TemplateError>,
    #[schema(value_type = Vec<Object>)]
    pub recent_jobs: Vec<JobRun>,
    #[serde(flatten)]
    pub mails: MailCounts,
    /// What the processor holds in memory now (the daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing: Option<Processing>,
    /// The daemons sharing a PostgreSQL database, their shards and backlogs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cluster: Option<crate::cluster::ClusterView>,
    /// Whether mail goes out or waits while the SMTP server refuses the sender.
    pub delivery: Delivery,
    /// What the shadow rule files would have done: counts per file, recent errors.
    #[schema(value_type = Object)]
    pub shadow: super::shadow::ShadowReport,
}

/// `"running"`, or `"paused"` with when it began, the next probe and the server's
/// answer (see `mail::breaker`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub state: &'static str,
    /// Not in the schema: `since`, `next_probe`, `answer` and `refused_probes`, only
    /// while paused.
    #[serde(flatten)]
    #[schema(ignore)]
    pub pause: Option<crate::mail::breaker::Pause>,
}

/// `GET /v1/stats/queue`: the event queue and the sales desk's backlog, without the
/// counts over all leads and mails that `GET /v1/stats` adds; cheap enough to poll
/// every second while a large base is loaded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    #[serde(flatten)]
    pub events: EventCounts,
    /// Events skipped because their `messageId` was already stored, since start.
    pub events_duplicate: u64,
    /// Handoffs not yet given to an owner (state `new`).
    pub handoffs_waiting: i64,
    /// What the processor holds in memory now (the daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing: Option<Processing>,
}

impl QueueStats {
    pub async fn load(store: &Store, duplicates: u64) -> Result<Self, StoreError> {
        Ok(Self {
            events: store.event_counts().await?,
            events_duplicate: duplicates,
            handoffs_waiting: store.handoffs_unassigned().await?,
            processing: None,
        })
    }
}

/// The processor's queues and cache, for operators.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Processing {
    /// Events read from the store and not yet written back.
    pub events_queued: usize,
    /// Leads with events queued or in flight.
    pub leads_queued: usize,
    /// Leads whose events are being run through the rules or written now.
    pub jobs_in_flight: usize,
    /// Leads in the slow lane (their rules recently ran into a limit).
    pub slow_leads: usize,
    /// Leads (with their histories) held in the cache.
    pub cached_leads: usize,
    pub cache_bytes: usize,
    pub cache_limit_bytes: usize,
}

impl Processing {
    pub fn of(p: &crate::process::Processor) -> Self {
        let (q, c) = p.usage();
        Self {
            events_queued: q.events_queued,
            leads_queued: q.leads_queued,
            jobs_in_flight: q.jobs_in_flight,
            slow_leads: q.slow_leads,
            cached_leads: c.leads,
            cache_bytes: c.bytes,
            cache_limit_bytes: c.limit,
        }
    }
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
            processing: None,
            cluster: None,
            delivery: {
                let pause = store.mail_pause().await?;
                Delivery {
                    state: if pause.is_some() { "paused" } else { "running" },
                    pause,
                }
            },
            shadow: super::shadow::ShadowReport::load(store, None, 10).await?,
        })
    }
}
