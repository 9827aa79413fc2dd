//! All SQL lives here. SQLite through sqlx with runtime queries (a fresh clone builds
//! without a database), WAL, `synchronous=NORMAL`, a busy timeout, and every write in
//! `BEGIN IMMEDIATE` behind one in-process writer lock.
//!
//! Callers see plain functions and a [`WriteTx`] with typed methods; no SQL leaves this
//! module, so a PostgreSQL backend can be added beside it.

mod briefs;
mod events;
mod handoffs;
mod jobs;
mod leads;
pub mod lease;
mod outbox;
mod reports;
mod rows;
mod stats;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Sqlite, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use briefs::BriefRows;
pub use events::{CountQuery, EventRow, FailedEvent, NewEvent, PastEvent, PendingEvent};
pub use handoffs::{
    CompanyOf, DuplicateRow, HandoffFilter, HandoffLog, HandoffLogRow, HandoffRow, HandoffUpdate,
    InternalMail, NewWebhook, WebhookDone, WebhookRow,
};
pub use jobs::JobRun;
pub use leads::LeadKeyRow;
pub use lease::{Lease, LeaseHeld};
pub use outbox::{
    DueStep, EnrollParams, EnrollmentRow, Finish, Gate, MailContent, MailCounts, MailFilter,
    OutboxRow, StepDone, StepMail,
};
pub use reports::{
    BreachCountRow, EnteredRow, HandoffReportRow, LeadStageRow, MoveCountRow, NewLeadRow,
    ReachedRow, StayRow, WaitingHandoffRow,
};
pub use rows::{HistoryRow, LedgerRow};
pub use stats::EventCounts;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "this process no longer holds the processing lease (another nurtured process took \
         over); nothing was written"
    )]
    LeaseLost,
    #[error("stored data is damaged ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// The database: readers share a small pool; every write goes through one connection
/// of its own, whose page cache then holds what writes touch (the indexes they update).
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    write_pool: SqlitePool,
    writer: Arc<Mutex<()>>,
}

/// SQLite's page cache, in KiB: for the writing connection, and for each reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCache {
    pub writer_kib: u64,
    pub reader_kib: u64,
}

/// Pooled connections for reading.
pub const READERS: u32 = 3;
/// The page cache of a connection when nothing else is said, in KiB.
const DEFAULT_PAGE_CACHE_KIB: u64 = 8 * 1024;

/// How long a write waits for another process (the CLI) to finish its write.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and runs the
    /// embedded migrations, with SQLite's default page cache.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let kib = DEFAULT_PAGE_CACHE_KIB;
        let cache = PageCache {
            writer_kib: kib,
            reader_kib: kib,
        };
        Self::open_with(url, cache).await
    }

    /// Like [`Store::open`], with the given page caches.
    pub async fn open_with(url: &str, cache: PageCache) -> Result<Self, StoreError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // Rows come from each connection's thread through a channel; a deeper one
            // lets that thread run ahead instead of waiting every 50 rows.
            .row_buffer_size(1024);
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", format!("-{}", cache.writer_kib)),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write_pool)
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .connect_with(options.pragma("cache_size", format!("-{}", cache.reader_kib)))
            .await?;
        Ok(Self {
            pool,
            write_pool,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`), one at a time per process.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let guard = self.writer.clone().lock_owned().await;
        let tx = self.write_pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _guard: guard })
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.write_pool.close().await;
    }
}

/// An open write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _guard: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Runs statements built beforehand (see [`build`]); returns the rows affected.
    pub async fn execute(&mut self, statements: Statements) -> Result<u64, StoreError> {
        let mut rows = 0;
        for mut q in statements.0 {
            rows += q
                .build()
                .persistent(false)
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
        }
        Ok(rows)
    }
}

/// Write statements built before the writer lock is taken, so it is held only while
/// they run.
#[derive(Default)]
pub struct Statements(Vec<sqlx::QueryBuilder<Sqlite>>);

impl Statements {
    fn push(&mut self, q: sqlx::QueryBuilder<Sqlite>) {
        self.0.push(q);
    }

    /// Appends another set, to run after these.
    pub fn and(mut self, other: Statements) -> Self {
        self.0.extend(other.0);
        self
    }
}

/// Builders of write statements, by table.
pub mod build {
    pub use super::handoffs::build::handoffs;
    pub use super::leads::build::{changes, lead_states, leads};
    pub use super::outbox::build::mails;
}

/// Splits per-lead operations into rounds: round `r` holds every lead's `r`-th
/// operation, in the order given. Operations of different leads touch different rows,
/// so one statement per round keeps each lead's order with few statements in all.
fn rounds<T>(ops: impl IntoIterator<Item = (i64, T)>) -> Vec<Vec<(i64, T)>> {
    let mut next: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let mut out: Vec<Vec<(i64, T)>> = Vec::new();
    for (lead, op) in ops {
        let r = next.entry(lead).or_insert(0);
        if *r == out.len() {
            out.push(Vec::new());
        }
        out[*r].push((lead, op));
        *r += 1;
    }
    out
}

/// Appends `VALUES (..), (..)` with one row per item, for a `WITH v (...) AS (` table.
fn values<T>(
    q: &mut sqlx::QueryBuilder<Sqlite>,
    items: &[T],
    mut row: impl FnMut(&mut sqlx::query_builder::Separated<'_, Sqlite, &'static str>, &T),
) {
    q.push("VALUES ");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(");
        let mut sep = q.separated(", ");
        row(&mut sep, item);
        q.push(")");
    }
}

/// SQLite allows 32766 bound parameters per statement; stay well below.
const MAX_PARAMS: usize = 30_000;

/// How many rows of `columns` parameters fit in one statement.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns).max(1)
}
