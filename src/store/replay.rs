//! Reading the stored history for `nurtured backtest`: a read-only connection (no
//! migrations, no lease, no write), and the rows replayed in time order: events by
//! sequence number in pages, the stage moves made through the API, the scheduled job
//! runs, and the consent changes that did not come from events.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::FromRow;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::{BUSY_TIMEOUT, Db, Store, StoreError, is_postgres_url, read, sql};

/// An event as the backtest replays it.
#[derive(Debug, Clone, FromRow)]
pub struct ReplayEvent {
    pub seq: i64,
    pub message_id: String,
    pub lead_id: i64,
    pub kind: String,
    pub name: String,
    pub properties: String,
    pub traits: Option<String>,
    pub context: Option<String>,
    pub occurred_at: i64,
    pub received_at: i64,
    pub history: bool,
}

/// A stage move made through the API (a salesperson, the CRM, a handoff answer).
#[derive(Debug, Clone, FromRow)]
pub struct ReplayStageMove {
    pub id: i64,
    pub lead_id: i64,
    pub to_stage: String,
    pub at: i64,
    pub source: String,
    pub reason: String,
}

/// A finished run of a schedule.
#[derive(Debug, Clone, FromRow)]
pub struct ReplayJobRun {
    pub id: i64,
    pub schedule: String,
    pub due_at: i64,
}

/// A consent change of the mail kind that no event made (a confirmation link, an
/// unsubscribe, a bounce or complaint).
#[derive(Debug, Clone, FromRow)]
pub struct ReplayConsent {
    pub id: i64,
    pub lead_id: i64,
    pub granted: bool,
    pub at: i64,
    pub source: Option<String>,
}

impl Store {
    /// Opens an existing database for reading only: no migrations run, and every
    /// connection refuses writes (SQLite `mode=ro`, PostgreSQL read-only transactions).
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let db = if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url)?
                .application_name("nurtured backtest")
                .options([("default_transaction_read_only", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await?;
            Db::Postgres { pool }
        } else {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(false)
                .read_only(true)
                .busy_timeout(BUSY_TIMEOUT)
                .row_buffer_size(1024);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            Db::Sqlite {
                write_pool: pool.clone(),
                pool,
            }
        };
        Ok(Self {
            db: Arc::new(db),
            writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The last event's sequence number (0 without events): the replay stops there,
    /// whatever arrives while it runs.
    pub async fn replay_last_seq(&self) -> Result<i64, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_scalar::<_, Option<i64>>(sql::<DB>("SELECT MAX(seq) FROM events"))
                .fetch_one(pool)
                .await?
                .unwrap_or(0)
        }))
    }

    /// Every lead's id and address (erased leads have none left to replay).
    pub async fn replay_leads(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as::<_, (i64, String)>(sql::<DB>(
                "SELECT id, email FROM leads WHERE erased_at IS NULL",
            ))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Up to `limit` events after `after`, up to `last`, by sequence number.
    pub async fn replay_events(
        &self,
        after: i64,
        last: i64,
        limit: usize,
    ) -> Result<Vec<ReplayEvent>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as::<_, ReplayEvent>(sql::<DB>(
                "SELECT seq, message_id, lead_id, kind, name, properties, traits, context, \
                 occurred_at, received_at, history FROM events \
                 WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            ))
            .bind(after)
            .bind(last)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The stage moves made through the API, in the order they were made.
    pub async fn replay_stage_moves(&self) -> Result<Vec<ReplayStageMove>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as::<_, ReplayStageMove>(sql::<DB>(
                "SELECT id, lead_id, to_stage, at, source, reason FROM stage_history \
                 WHERE source_kind = 'api' ORDER BY at, id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }

    /// The schedule runs that finished without an error, in the order they were due.
    pub async fn replay_job_runs(&self) -> Result<Vec<ReplayJobRun>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as::<_, ReplayJobRun>(sql::<DB>(
                "SELECT id, schedule, due_at FROM job_runs \
                 WHERE finished_at IS NOT NULL AND error IS NULL ORDER BY due_at, id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Mail consent changes that no identify event made (an event's change is logged
    /// at the event's time).
    pub async fn replay_consents(&self) -> Result<Vec<ReplayConsent>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as::<_, ReplayConsent>(sql::<DB>(
                "SELECT c.id, c.lead_id, c.granted, c.at, c.source FROM consent_log c \
                 WHERE c.kind = 'email' AND NOT EXISTS (SELECT 1 FROM events e \
                 WHERE e.lead_id = c.lead_id AND e.kind = 'identify' AND e.occurred_at = c.at) \
                 ORDER BY c.at, c.id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }
}
