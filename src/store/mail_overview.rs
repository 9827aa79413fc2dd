//! What the console's mail page reads besides single mails: the outbox counted per
//! state, the suppression list (newest first), and the members of each nurture stream
//! per step.

use serde::Serialize;

use super::{Store, StoreError, read, sql};

/// An address on the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SuppressionRow {
    pub email: String,
    /// `hard_bounce`, `complaint`, `soft_bounces`, `unsubscribe`, ...
    pub reason: String,
    pub detail: Option<String>,
    pub created_at: i64,
}

/// How many leads are at one step of a stream (as members that are active or paused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StreamStep {
    pub stream: String,
    /// Steps sent so far (0: waiting for the first mail).
    pub step: i64,
    /// `active` or `paused`.
    pub status: String,
    pub members: i64,
}

impl Store {
    /// Outbox rows per status (`queued`, `sending`, `sent`, `failed`, `suppressed`),
    /// only the statuses that occur.
    pub async fn mail_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status")
                .fetch_all(pool)
                .await?
        }))
    }

    /// The suppressed addresses, newest first, at most `limit`.
    pub async fn suppressions(&self, limit: i64) -> Result<Vec<SuppressionRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT email, reason, detail, created_at FROM suppressions \
                 ORDER BY created_at DESC, email LIMIT ?",
            ))
            .bind(limit.max(1))
            .fetch_all(pool)
            .await?
        }))
    }

    /// The current members of every stream, per step and status, by stream and step.
    pub async fn stream_steps(&self) -> Result<Vec<StreamStep>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(
                "SELECT stream, step, status, COUNT(*) AS members FROM enrollments \
                 WHERE status IN ('active', 'paused') \
                 GROUP BY stream, step, status ORDER BY stream, step, status",
            )
            .fetch_all(pool)
            .await?
        }))
    }
}
