//! Runs of scheduled jobs: when each schedule last ran, so a restart neither repeats
//! nor skips a run.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;

use super::rows::ms_as_rfc3339;
use super::{Store, StoreError, in_tx, read, sql};
use crate::clock::{from_ms, to_ms};

/// One run of a schedule.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct JobRun {
    pub schedule: String,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub due_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub leads: i64,
    pub failed: i64,
    pub error: Option<String>,
}

impl Store {
    /// The due time of the newest run of `schedule`.
    pub async fn last_job_due(&self, schedule: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT MAX(due_at) FROM job_runs WHERE schedule = ? HAVING COUNT(*) > 0",
            ))
            .bind(schedule)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(ms,)| from_ms(ms)))
    }

    /// The due time of the newest run of `schedule` that finished without error.
    pub async fn last_good_job_due(
        &self,
        schedule: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT MAX(due_at) FROM job_runs WHERE schedule = ? AND finished_at IS NOT NULL \
                 AND error IS NULL HAVING COUNT(*) > 0",
            ))
            .bind(schedule)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(ms,)| from_ms(ms)))
    }

    /// Records the start of a run; returns its id.
    pub async fn start_job(
        &self,
        schedule: &str,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let (id,): (i64,) = in_tx!(tx, |tx, DB| {
            sqlx::query_as(sql::<DB>(
                "INSERT INTO job_runs (schedule, due_at, started_at) VALUES (?, ?, ?) RETURNING id",
            ))
            .bind(schedule)
            .bind(to_ms(due))
            .bind(to_ms(now))
            .fetch_one(&mut **tx)
            .await?
        });
        tx.commit().await?;
        Ok(id)
    }

    pub async fn finish_job(
        &self,
        id: i64,
        now: DateTime<Utc>,
        leads: i64,
        failed: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        in_tx!(tx, |tx, DB| {
            sqlx::query(sql::<DB>(
                "UPDATE job_runs SET finished_at = ?, leads = ?, failed = ?, error = ? WHERE id = ?",
            ))
            .bind(to_ms(now))
            .bind(leads)
            .bind(failed)
            .bind(error)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        });
        tx.commit().await?;
        Ok(())
    }

    /// The newest runs, newest first.
    pub async fn recent_job_runs(&self, limit: i64) -> Result<Vec<JobRun>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT schedule, due_at, started_at, finished_at, leads, failed, error \
                 FROM job_runs ORDER BY id DESC LIMIT ?",
            ))
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
