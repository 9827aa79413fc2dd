//! All SQL lives here, for two backends through sqlx with runtime queries (a fresh
//! clone builds without a database): SQLite (WAL, `synchronous=NORMAL`, a busy
//! timeout, every write in `BEGIN IMMEDIATE`) and PostgreSQL. Every write runs behind
//! one in-process writer lock on either.
//!
//! Each query is written once with `?` placeholders and compiled for both backends by
//! the macros [`read!`], [`in_tx!`] and [`for_dialect!`]; [`sql`] numbers the
//! placeholders for PostgreSQL, and the few statements whose text differs pick it with
//! [`is_pg`]. Callers see plain functions and a [`WriteTx`] with typed methods; no SQL
//! leaves this module.

mod anonymous;
mod bounces;
mod briefs;
pub mod cluster;
pub mod console;
pub mod copy;
mod events;
mod handoffs;
mod jobs;
mod leads;
pub mod lease;
mod lists;
pub mod mail_overview;
pub mod mail_retry;
mod outbox;
mod pause;
pub mod privacy;
pub mod replay;
mod reports;
mod rows;
pub mod shadow;
mod stats;
pub mod testing;
mod topics;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Database, Postgres, Sqlite, Transaction,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use anonymous::{Joined, ProfileRow, ProfileSummary};
pub use bounces::{BounceLogRow, BouncedMail, NewBounce, SoftLimit};
pub use briefs::BriefRows;
pub use events::{CountQuery, EventRow, FailedEvent, NewEvent, PastEvent, PendingEvent};
pub use handoffs::{
    CompanyOf, DuplicateRow, HandoffFilter, HandoffLog, HandoffLogRow, HandoffRow, HandoffUpdate,
    InternalMail, NewWebhook, WebhookDone, WebhookRow,
};
pub use jobs::JobRun;
pub use leads::LeadKeyRow;
pub use lease::{Fence, Lease, LeaseHeld};
pub use lists::{EventRange, ExportRow, LeadFilter, LeadListRow};
pub use mail_overview::{StreamStep, SuppressionRow};
pub use mail_retry::{MailLogRow, RetryReport, RetrySelection};
pub use outbox::{
    DueStep, EnrollParams, EnrollmentRow, Finish, Gate, MailContent, MailCounts, MailFilter,
    OutboxRow, StepDone, StepMail,
};
pub use privacy::{ERASE_STEPS, EraseStep, ErasureRow, NOT_PERSONAL, Retained};
pub use reports::{
    BreachCountRow, EnteredRow, HandoffReportRow, LeadStageRow, MoveCountRow, NewLeadRow,
    ReachedRow, StayRow, WaitingHandoffRow,
};
pub use rows::{HistoryRow, LedgerRow, TagSource, rfc3339};
pub use stats::{EventCounts, ScrapeCounts};
pub use topics::TopicChoice;

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
    #[error(
        "{} lead(s) were changed meanwhile by another daemon; read again and retry",
        .0.len()
    )]
    LeadChanged(Vec<i64>),
    #[error("stored data is damaged ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// The database behind a [`Store`]: SQLite (one file, one writing connection) or
/// PostgreSQL (one pool for reads and writes).
pub(crate) enum Db {
    Sqlite {
        pool: SqlitePool,
        write_pool: SqlitePool,
    },
    Postgres {
        pool: PgPool,
    },
}

/// Which SQL dialect a store speaks; write statements are built for it before the
/// writer lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The database: readers share a small pool; every write goes through one connection
/// of its own, whose page cache then holds what writes touch (the indexes they update).
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    writer: Arc<Mutex<()>>,
}

/// Runs `$body` with `$pool` bound to the reading pool and `$DB` to the database type:
/// the body is compiled once per backend.
macro_rules! read {
    ($store:expr, |$pool:ident, $DB:ident| $body:expr) => {
        match &*$store.db {
            $crate::store::Db::Sqlite { pool: $pool, .. } => {
                #[allow(dead_code, clippy::upper_case_acronyms)]
                type $DB = ::sqlx::Sqlite;
                $body
            }
            $crate::store::Db::Postgres { pool: $pool } => {
                #[allow(dead_code, clippy::upper_case_acronyms)]
                type $DB = ::sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use read;

/// Like [`read!`], for a [`WriteTx`]: `$tx` is the open transaction.
macro_rules! in_tx {
    ($wtx:expr, |$tx:ident, $DB:ident| $body:expr) => {
        match &mut $wtx.tx {
            $crate::store::Tx::Sqlite($tx) => {
                #[allow(dead_code, clippy::upper_case_acronyms)]
                type $DB = ::sqlx::Sqlite;
                $body
            }
            $crate::store::Tx::Postgres($tx) => {
                #[allow(dead_code, clippy::upper_case_acronyms)]
                type $DB = ::sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use in_tx;

/// Like [`read!`], building statements for a [`Dialect`].
macro_rules! for_dialect {
    ($dialect:expr, |$DB:ident| $body:expr) => {
        match $dialect {
            $crate::store::Dialect::Sqlite => {
                #[allow(dead_code, clippy::upper_case_acronyms)]
                type $DB = ::sqlx::Sqlite;
                $crate::store::Statements::Sqlite($body)
            }
            $crate::store::Dialect::Postgres => {
                #[allow(dead_code, clippy::upper_case_acronyms)]
                type $DB = ::sqlx::Postgres;
                $crate::store::Statements::Postgres($body)
            }
        }
    };
}
pub(crate) use for_dialect;

/// Whether `DB` is PostgreSQL (for the few statements whose text differs).
pub(crate) fn is_pg<DB: sqlx::Database>() -> bool {
    DB::NAME == sqlx::Postgres::NAME
}

/// SQL written with `?` placeholders, as `DB` wants it: unchanged for SQLite, `$1`,
/// `$2`, ... for PostgreSQL (translated once per statement text and kept).
pub(crate) fn sql<DB: sqlx::Database>(text: &'static str) -> &'static str {
    if !is_pg::<DB>() {
        return text;
    }
    static DONE: std::sync::LazyLock<
        std::sync::RwLock<std::collections::HashMap<&'static str, &'static str>>,
    > = std::sync::LazyLock::new(Default::default);
    if let Some(done) = DONE.read().expect("sql cache").get(text) {
        return done;
    }
    let numbered: &'static str = Box::leak(numbered(text).into_boxed_str());
    DONE.write().expect("sql cache").insert(text, numbered);
    numbered
}

/// [`sql`] for a statement built at run time.
pub(crate) fn sql_owned<DB: sqlx::Database>(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(if is_pg::<DB>() { numbered(&text) } else { text })
}

/// Replaces each `?` outside quotes with `$1`, `$2`, ..., and `?N` with `$N`.
fn numbered(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut n, mut quoted) = (0, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    n += 1;
                    out.push_str(&n.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// SQLite's page cache, in KiB: for the writing connection, and for each reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCache {
    pub writer_kib: u64,
    pub reader_kib: u64,
}

impl Default for PageCache {
    fn default() -> Self {
        Self {
            writer_kib: DEFAULT_PAGE_CACHE_KIB,
            reader_kib: DEFAULT_PAGE_CACHE_KIB,
        }
    }
}

/// Pooled connections for reading.
pub const READERS: u32 = 3;
/// Pooled connections to PostgreSQL when nothing else is said.
pub const PG_CONNECTIONS: u32 = 8;
/// The page cache of a connection when nothing else is said, in KiB.
const DEFAULT_PAGE_CACHE_KIB: u64 = 8 * 1024;

/// How long a write waits for another process (the CLI) to finish its write.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a database URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// Opens (creating if needed) the database at a `sqlite://PATH` or `postgres://`
    /// URL and runs the embedded migrations, with SQLite's default page cache.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, PageCache::default()).await
    }

    /// Like [`Store::open`], with the given page caches (SQLite only).
    pub async fn open_with(url: &str, cache: PageCache) -> Result<Self, StoreError> {
        Self::connect(url, cache, true, PG_CONNECTIONS).await
    }

    /// Like [`Store::open_with`], keeping at most `pg_connections` connections to
    /// PostgreSQL (the daemon: `database.max_connections`).
    pub async fn open_tuned(
        url: &str,
        cache: PageCache,
        pg_connections: u32,
    ) -> Result<Self, StoreError> {
        Self::connect(url, cache, true, pg_connections).await
    }

    /// Like [`Store::open`] for a base that exists already: a missing SQLite file is an
    /// error instead of a new empty database. Pending migrations run, as the daemon
    /// runs them at start.
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, PageCache::default(), false, PG_CONNECTIONS).await
    }

    async fn connect(
        url: &str,
        cache: PageCache,
        create: bool,
        pg_connections: u32,
    ) -> Result<Self, StoreError> {
        let db = if is_postgres_url(url) {
            Self::open_postgres(url, pg_connections).await?
        } else {
            Self::open_sqlite(url, cache, create).await?
        };
        Ok(Self {
            db: Arc::new(db),
            writer: Arc::new(Mutex::new(())),
        })
    }

    async fn open_postgres(url: &str, connections: u32) -> Result<Db, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("nurtured");
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Db::Postgres { pool })
    }

    async fn open_sqlite(url: &str, cache: PageCache, create: bool) -> Result<Db, StoreError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| create && !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create)
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
                    .pragma("cache_size", format!("-{}", cache.writer_kib))
                    // Rows deleted or rewritten are zeroed where that costs no extra
                    // I/O, so no stale copy of a person's data stays in free space; an
                    // erasure turns it fully on (see `WriteTx::erase_lead`).
                    .pragma("secure_delete", "fast"),
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
        Ok(Db::Sqlite { pool, write_pool })
    }

    /// The dialect to build write statements in.
    pub fn dialect(&self) -> Dialect {
        match &*self.db {
            Db::Sqlite { .. } => Dialect::Sqlite,
            Db::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite), one at a time per
    /// process.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let guard = self.writer.clone().lock_owned().await;
        let tx = match &*self.db {
            Db::Sqlite { write_pool, .. } => {
                Tx::Sqlite(write_pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            Db::Postgres { pool } => Tx::Postgres(pool.begin().await?),
        };
        Ok(WriteTx { tx, _guard: guard })
    }

    pub async fn close(&self) {
        match &*self.db {
            Db::Sqlite { pool, write_pool } => {
                pool.close().await;
                write_pool.close().await;
            }
            Db::Postgres { pool } => pool.close().await,
        }
    }
}

/// An open transaction of either backend.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// An open write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    tx: Tx,
    _guard: OwnedMutexGuard<()>,
}

impl WriteTx {
    /// The dialect to build statements for this transaction in.
    pub fn dialect(&self) -> Dialect {
        match self.tx {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Runs statements built beforehand (see [`build`]); returns the rows affected.
    pub async fn execute(&mut self, statements: Statements) -> Result<u64, StoreError> {
        let mut rows = 0;
        match (&mut self.tx, statements) {
            (Tx::Sqlite(tx), Statements::Sqlite(all)) => {
                for mut q in all {
                    rows += q
                        .build()
                        .persistent(false)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                }
            }
            (Tx::Postgres(tx), Statements::Postgres(all)) => {
                for mut q in all {
                    rows += q
                        .build()
                        .persistent(false)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                }
            }
            (_, Statements::Empty) => {}
            _ => {
                return Err(StoreError::Corrupt {
                    what: "write statements",
                    detail: "built for the other database".into(),
                });
            }
        }
        Ok(rows)
    }
}

/// Write statements built before the writer lock is taken, so it is held only while
/// they run.
#[derive(Default)]
pub enum Statements {
    #[default]
    Empty,
    Sqlite(Vec<sqlx::QueryBuilder<Sqlite>>),
    Postgres(Vec<sqlx::QueryBuilder<Postgres>>),
}

impl Statements {
    /// Appends another set, to run after these.
    pub fn and(self, other: Statements) -> Self {
        match (self, other) {
            (Statements::Empty, o) | (o, Statements::Empty) => o,
            (Statements::Sqlite(mut a), Statements::Sqlite(b)) => {
                a.extend(b);
                Statements::Sqlite(a)
            }
            (Statements::Postgres(mut a), Statements::Postgres(b)) => {
                a.extend(b);
                Statements::Postgres(a)
            }
            (a, _) => a,
        }
    }
}

/// Builders of write statements, by table.
pub mod build {
    pub use super::handoffs::build::handoffs;
    pub use super::leads::build::{changes, lead_states, leads};
    pub use super::outbox::build::mails;
    pub use super::shadow::build::shadow;
    pub use super::topics::build::topic_choices;
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
fn values<DB: Database, T>(
    q: &mut sqlx::QueryBuilder<DB>,
    items: &[T],
    mut row: impl FnMut(&mut sqlx::query_builder::Separated<'_, DB, &'static str>, &T),
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

/// SQLite allows 32766 bound parameters per statement, PostgreSQL 65535; stay well
/// below.
const MAX_PARAMS: usize = 30_000;

/// How many rows of `columns` parameters fit in one statement.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns).max(1)
}
