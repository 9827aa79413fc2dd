//! What the console's overview counts since a point in time (today, in the
//! configured time zone): events received, new leads, stage entries, mails by outcome.

use super::{Store, StoreError, read, sql};

/// The overview's figures since a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Since {
    pub events: i64,
    pub leads: i64,
    /// Moves into each stage: (stage, moves).
    pub entries: Vec<(String, i64)>,
    pub mails_sent: i64,
    pub mails_failed: i64,
    pub mails_suppressed: i64,
}

impl Store {
    /// The figures of [`Since`] from `since_ms` on.
    pub async fn counts_since(&self, since_ms: i64) -> Result<Since, StoreError> {
        let (events, leads): (i64, i64) = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT (SELECT COUNT(*) FROM events WHERE received_at >= ?), \
                        (SELECT COUNT(*) FROM leads WHERE created_at >= ?)",
            ))
            .bind(since_ms)
            .bind(since_ms)
            .fetch_one(pool)
            .await?
        });
        let entries: Vec<(String, i64)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT to_stage, COUNT(*) FROM stage_history WHERE at >= ? \
                 GROUP BY to_stage ORDER BY to_stage",
            ))
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        let mails: Vec<(String, i64)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT status, COUNT(*) FROM outbox \
                 WHERE status IN ('sent', 'failed', 'suppressed') AND finished_at >= ? \
                 GROUP BY status",
            ))
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        let mail = |s: &str| mails.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        Ok(Since {
            events,
            leads,
            entries,
            mails_sent: mail("sent"),
            mails_failed: mail("failed"),
            mails_suppressed: mail("suppressed"),
        })
    }
}
