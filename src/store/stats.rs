//! Counters for `GET /v1/stats` and the CLI.

use serde::Serialize;

use super::{Store, StoreError, read};

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
