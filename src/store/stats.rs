//! Counters for `GET /v1/stats` and the CLI.

use serde::Serialize;

use super::{Store, StoreError, read, sql};

/// Event counts. `received` counts distinct accepted events (duplicates excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EventCounts {
    pub events_received: i64,
    pub events_processed: i64,
    pub events_pending: i64,
    pub events_failed: i64,
    /// Events of anonymous visitors waiting to be joined to a lead (received, not
    /// queued).
    pub events_anonymous: i64,
}

impl Store {
    pub async fn event_counts(&self) -> Result<EventCounts, StoreError> {
        let (received, pending, failed, anonymous): (i64, i64, i64, i64) =
            read!(self, |pool, DB| {
                sqlx::query_as(
                    "SELECT (SELECT value FROM counters WHERE name = 'events_received'), \
                        (SELECT COUNT(*) FROM event_queue), \
                        (SELECT COUNT(*) FROM event_failures \
                         WHERE seq NOT IN (SELECT seq FROM event_queue)), \
                        (SELECT COUNT(*) FROM anonymous_events)",
                )
                .fetch_one(pool)
                .await?
            });
        Ok(EventCounts {
            events_received: received,
            events_processed: received - pending - failed - anonymous,
            events_pending: pending,
            events_failed: failed,
            events_anonymous: anonymous,
        })
    }

    /// Handoffs still waiting for an owner (state `new`); counted on the partial
    /// index `handoffs_new`, so it stays cheap with many handoffs.
    pub async fn handoffs_unassigned(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = read!(self, |pool, DB| {
            sqlx::query_as("SELECT COUNT(*) FROM handoffs WHERE state = 'new'")
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }

    /// Number of leads.
    pub async fn lead_count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = read!(self, |pool, DB| {
            sqlx::query_as("SELECT COUNT(*) FROM leads")
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }
}

/// What `/metrics` reads from the store at each scrape (see [`crate::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    /// Events waiting to be processed.
    pub events_pending: i64,
    /// When the oldest waiting event was received (ms), if any waits.
    pub oldest_pending_ms: Option<i64>,
    /// Outbox rows per `status`.
    pub outbox: Vec<(String, i64)>,
    /// Handoffs not answered yet (`new`, `open`, `escalated`).
    pub handoffs_open: i64,
    /// Of those, the ones past their deadline.
    pub handoffs_overdue: i64,
}

impl Store {
    /// The figures of [`ScrapeCounts`], `now_ms` deciding what is overdue.
    pub async fn scrape_counts(&self, now_ms: i64) -> Result<ScrapeCounts, StoreError> {
        let (events_pending, oldest_pending_ms): (i64, Option<i64>) = read!(self, |pool, DB| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM event_queue), \
                        (SELECT received_at FROM events \
                         WHERE seq = (SELECT MIN(seq) FROM event_queue))",
            )
            .fetch_one(pool)
            .await?
        });
        let outbox: Vec<(String, i64)> = read!(self, |pool, DB| {
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status")
                .fetch_all(pool)
                .await?
        });
        let (handoffs_open, handoffs_overdue): (i64, i64) = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN due_at < ? THEN 1 ELSE 0 END), 0) \
                 FROM handoffs WHERE state IN ('new', 'open', 'escalated')",
            ))
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(ScrapeCounts {
            events_pending,
            oldest_pending_ms,
            outbox,
            handoffs_open,
            handoffs_overdue,
        })
    }
}

impl Store {
    /// Events waiting to be processed (the readiness check's backlog).
    pub async fn backlog(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = read!(self, |pool, DB| {
            sqlx::query_as("SELECT COUNT(*) FROM event_queue")
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }
}
