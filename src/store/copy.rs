//! A whole base copied from one database to another, in either direction between
//! SQLite and PostgreSQL (`nurtured store copy`). Every table but the lease moves in
//! foreign-key order with its ids, in chunks read by key from one snapshot of the
//! source and written in one transaction each; both bases stay leased meanwhile, so
//! no daemon works on either, and the rows of every table are counted on both sides
//! at the end.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, QueryBuilder, Row};

use super::lease::{LEASE_TTL, Lease, LeaseHeld};
use super::{
    Db, Dialect, Statements, Store, StoreError, Tx, for_dialect, in_tx, is_postgres_url, read,
    rows_per_statement, sql_owned,
};

/// Rows read and written at a time.
pub const CHUNK: usize = 5_000;

/// Rows of rendered mails read and written at a time (each holds a whole mail).
const MAIL_CHUNK: usize = 500;

/// How a column's values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `INTEGER` on SQLite, `BIGINT` on PostgreSQL.
    Int,
    /// `REAL` on SQLite, `DOUBLE PRECISION` on PostgreSQL.
    Real,
    Text,
    /// `INTEGER` 0 / 1 on SQLite, `BOOLEAN` on PostgreSQL.
    Bool,
}

/// A column of a copied table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

/// A copied table. Its first column is the primary key, by which it is read in order.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The key is an identity column on PostgreSQL (its sequence is set past the
    /// largest key after the copy).
    pub identity: bool,
    pub chunk: usize,
    pub columns: &'static [Column],
}

impl Table {
    fn key(&self) -> &'static str {
        self.columns[0].name
    }
}

const fn int(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        nullable: false,
    }
}

const fn int_or_null(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        nullable: true,
    }
}

const fn real(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Real,
        nullable: false,
    }
}

const fn real_or_null(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Real,
        nullable: true,
    }
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        nullable: false,
    }
}

const fn text_or_null(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        nullable: true,
    }
}

const fn boolean(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Bool,
        nullable: false,
    }
}

/// Every table of the schema but `leases`, `cluster_members`, `shard_leases` (each
/// base keeps its own), `mail_pause` (the state of the sending daemon's dialogue with
/// its SMTP server, found anew by the daemon on the new base) and `_sqlx_migrations` (written by the migrations), in
/// foreign-key order.
pub const TABLES: &[Table] = &[
    Table {
        name: "leads",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("email"),
            text_or_null("external_id"),
            text_or_null("first_name"),
            text_or_null("last_name"),
            text_or_null("phone"),
            text_or_null("company"),
            text_or_null("title"),
            text_or_null("industry"),
            int_or_null("employees"),
            real_or_null("revenue"),
            text_or_null("country"),
            text_or_null("time_zone"),
            text_or_null("locale"),
            boolean("consent_email"),
            int_or_null("consent_email_at"),
            text_or_null("consent_email_source"),
            boolean("consent_tracking"),
            int_or_null("consent_tracking_at"),
            text_or_null("consent_tracking_source"),
            text("stage"),
            int("stage_since"),
            real("fit"),
            text("fit_parts"),
            real("interest"),
            text("tags"),
            text_or_null("owner"),
            text("attributes"),
            int("created_at"),
            int("updated_at"),
            int("events"),
            int("version"),
            int_or_null("erased_at"),
            text_or_null("first_source"),
            text("topics_left"),
        ],
    },
    Table {
        name: "consent_log",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            text("kind"),
            boolean("granted"),
            int("at"),
            text_or_null("source"),
        ],
    },
    Table {
        name: "erased_addresses",
        identity: false,
        chunk: CHUNK,
        columns: &[text("hash"), int("erased_at")],
    },
    Table {
        name: "erasures",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            int("at"),
            text("by_name"),
            text("reason"),
            text("removed"),
        ],
    },
    Table {
        name: "retention_runs",
        identity: true,
        chunk: CHUNK,
        columns: &[int("id"), int("at"), int("events"), int("mail_bodies")],
    },
    Table {
        name: "events",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("seq"),
            text("message_id"),
            int("lead_id"),
            text("kind"),
            text("name"),
            text("properties"),
            text_or_null("traits"),
            text_or_null("context"),
            int("occurred_at"),
            int("received_at"),
            boolean("history"),
        ],
    },
    Table {
        name: "event_queue",
        identity: false,
        chunk: CHUNK,
        columns: &[int("seq")],
    },
    Table {
        name: "event_failures",
        identity: false,
        chunk: CHUNK,
        columns: &[
            int("seq"),
            int("attempts"),
            text("error"),
            int("failed_at"),
            text_or_null("rules"),
        ],
    },
    Table {
        name: "stage_history",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            text_or_null("from_stage"),
            text("to_stage"),
            int("at"),
            text("source_kind"),
            text("source"),
            text("reason"),
            int_or_null("event_seq"),
        ],
    },
    Table {
        name: "score_ledger",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            text("axis"),
            real("delta"),
            int("at"),
            text("source_kind"),
            text("source"),
            text("reason"),
            int_or_null("event_seq"),
        ],
    },
    Table {
        name: "counters",
        identity: false,
        chunk: CHUNK,
        columns: &[text("name"), int("value")],
    },
    Table {
        name: "job_runs",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("schedule"),
            int("due_at"),
            int("started_at"),
            int_or_null("finished_at"),
            int("leads"),
            int("failed"),
            text_or_null("error"),
        ],
    },
    Table {
        name: "outbox",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("idem_key"),
            int("lead_id"),
            text_or_null("recipient"),
            text("template"),
            text("class"),
            text("kind"),
            text_or_null("dedupe_key"),
            int_or_null("enrollment_id"),
            int_or_null("step"),
            text("data"),
            text("source"),
            int_or_null("event_seq"),
            text("status"),
            text_or_null("reason"),
            int("attempts"),
            int("tries"),
            int_or_null("first_try_at"),
            int("created_at"),
            int("due_at"),
            text_or_null("claimed_by"),
            int_or_null("finished_at"),
            text_or_null("message_id"),
        ],
    },
    Table {
        name: "mail_content",
        identity: false,
        chunk: MAIL_CHUNK,
        columns: &[
            int("outbox_id"),
            text("recipient"),
            text("subject"),
            text("text_body"),
            text("html_body"),
            text("headers"),
        ],
    },
    Table {
        name: "enrollments",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            text("stream"),
            text("status"),
            int("step"),
            int_or_null("next_due_at"),
            int("entered_at"),
            int("updated_at"),
            int_or_null("ended_at"),
            text_or_null("end_reason"),
        ],
    },
    Table {
        name: "suppressions",
        identity: false,
        chunk: CHUNK,
        columns: &[
            text("email"),
            text("reason"),
            text_or_null("detail"),
            int("created_at"),
        ],
    },
    Table {
        name: "handoffs",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            text("team"),
            text("reason"),
            text("source"),
            int_or_null("event_seq"),
            text("state"),
            text_or_null("owner"),
            text("owners_had"),
            int("round"),
            text("duplicates"),
            int("created_at"),
            int_or_null("assigned_at"),
            int_or_null("due_at"),
            int("step"),
            int_or_null("next_at"),
            int_or_null("breached_at"),
            int_or_null("answered_at"),
            text_or_null("answered_by"),
            text_or_null("answer_note"),
            int_or_null("business_ms"),
            text_or_null("hook_pending"),
            int("updated_at"),
            text_or_null("company_key"),
            text_or_null("domain_key"),
        ],
    },
    Table {
        name: "handoff_log",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("handoff_id"),
            int("at"),
            text("what"),
            text_or_null("owner"),
            text_or_null("detail"),
        ],
    },
    Table {
        name: "webhooks",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("idem_key"),
            int("handoff_id"),
            text("team"),
            text("event"),
            text("body"),
            text("status"),
            text_or_null("reason"),
            int("attempts"),
            int_or_null("first_try_at"),
            int("created_at"),
            int("due_at"),
            text_or_null("claimed_by"),
            int_or_null("finished_at"),
        ],
    },
    Table {
        name: "bounce_log",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("at"),
            text("email"),
            int_or_null("lead_id"),
            int_or_null("outbox_id"),
            text("kind"),
            text_or_null("status"),
            text_or_null("diagnostic"),
            text("source"),
            text_or_null("report_id"),
            text("action"),
        ],
    },
    Table {
        name: "anonymous_profiles",
        identity: false,
        chunk: CHUNK,
        columns: &[
            text("anonymous_id"),
            text_or_null("user_id"),
            int_or_null("lead_id"),
            int("first_seen"),
            int("last_seen"),
            int_or_null("joined_at"),
        ],
    },
    Table {
        name: "anonymous_events",
        identity: false,
        chunk: CHUNK,
        columns: &[
            text("message_id"),
            text("anonymous_id"),
            text("kind"),
            text("name"),
            text("properties"),
            text_or_null("traits"),
            text_or_null("context"),
            int("occurred_at"),
            int("received_at"),
            boolean("history"),
        ],
    },
    Table {
        name: "company_groups",
        identity: false,
        chunk: CHUNK,
        columns: &[text("group_id"), text("traits"), int("updated_at")],
    },
    Table {
        name: "group_members",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("group_id"),
            int_or_null("lead_id"),
            text_or_null("anonymous_id"),
            int("joined_at"),
        ],
    },
    Table {
        name: "lead_topics",
        identity: false,
        chunk: CHUNK,
        columns: &[
            int("lead_id"),
            text("topic"),
            text("state"),
            int("at"),
            text("source"),
        ],
    },
    Table {
        name: "shadow_counts",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("file"),
            text("source"),
            text("action"),
            int("count"),
            int("last_at"),
        ],
    },
    Table {
        name: "shadow_examples",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            text("file"),
            int("lead_id"),
            int("seq"),
            text("source"),
            text("action"),
            text_or_null("message"),
            int("at"),
        ],
    },
    Table {
        name: "tag_ledger",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("lead_id"),
            text("tag"),
            boolean("added"),
            int("at"),
            text("source_kind"),
            text("source"),
            text("reason"),
            int_or_null("event_seq"),
        ],
    },
    Table {
        name: "mail_log",
        identity: true,
        chunk: CHUNK,
        columns: &[
            int("id"),
            int("outbox_id"),
            int("lead_id"),
            int("at"),
            text("what"),
            text("actor"),
            text("note"),
        ],
    },
];

/// Why a copy was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source {0} does not exist")]
    SourceMissing(String),
    #[error("{0} is not a nurtured database (it has no _sqlx_migrations table)")]
    NotABase(String),
    #[error("the source and the target are the same database ({0})")]
    SameBase(String),
    #[error(
        "another nurtured process ({holder}) holds the processing lease of the source {base}: \
         stop the daemon working on it first, then copy"
    )]
    SourceBusy { base: String, holder: String },
    #[error(
        "another nurtured process ({holder}) holds the processing lease of the target {base}: \
         stop the daemon working on it and copy into a new, empty database"
    )]
    TargetBusy { base: String, holder: String },
    #[error("the target {base} is not empty: it holds {contents}; copy into a new, empty database")]
    TargetNotEmpty { base: String, contents: String },
    #[error(
        "another nurtured process took the processing lease of {base} during the copy; the \
         target is incomplete: stop that process and copy again into a new, empty database"
    )]
    LeaseLost { base: String },
    /// The database failed; `base` names the side (the source or the target).
    #[error("{base}: {source}")]
    Store {
        base: String,
        #[source]
        source: StoreError,
    },
}

/// What [`copy`] tells while it runs.
pub trait Progress {
    /// `table` starts, with `rows` rows in the source.
    fn start(&mut self, table: &'static str, rows: u64);
    /// `done` rows of `table` are in the target.
    fn advance(&mut self, table: &'static str, done: u64);
    /// `table` is copied: `rows` rows in `took`.
    fn finish(&mut self, table: &'static str, rows: u64, took: Duration);
}

/// The rows of one table on both sides after a copy.
#[derive(Debug, Clone)]
pub struct TableCount {
    pub table: &'static str,
    pub source: u64,
    pub target: u64,
    /// How long copying it took.
    pub took: Duration,
}

/// The outcome of a copy: the rows of every table, counted on both sides.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
    pub took: Duration,
}

impl CopyReport {
    /// The tables whose counts differ between source and target.
    pub fn differences(&self) -> Vec<&TableCount> {
        self.tables
            .iter()
            .filter(|t| t.source != t.target)
            .collect()
    }

    /// All rows in the target.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.target).sum()
    }
}

/// A database URL as it may be shown: the password, if any, replaced by `***`.
pub fn shown(url: &str) -> String {
    if !is_postgres_url(url) {
        return url.to_string();
    }
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        // Not a URL the parser takes: masked as text.
        _ => crate::config::redact::url(url),
    }
}

/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH` or a plain path).
fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest.split('?').next().unwrap_or_default())
}

/// Copies the whole base at `from` into the new, empty base at `to` (each a
/// `sqlite://PATH`, a path, or a `postgres://` URL), holding the processing lease of
/// both meanwhile. The counts of every table on both sides are in the report; the
/// caller decides what a difference means.
pub async fn copy(
    from: &str,
    to: &str,
    progress: &mut dyn Progress,
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    let (from_shown, to_shown) = (shown(from), shown(to));
    let on_source = |source| CopyError::Store {
        base: format!("the source {}", shown(from)),
        source,
    };
    let on_target = |source| CopyError::Store {
        base: format!("the target {}", shown(to)),
        source,
    };
    if !is_postgres_url(from) && !sqlite_path(from).is_file() {
        return Err(CopyError::SourceMissing(from_shown));
    }
    if same_base(from, to) {
        return Err(CopyError::SameBase(from_shown));
    }
    if !is_base(from).await.map_err(on_source)? {
        return Err(CopyError::NotABase(from_shown));
    }
    let source = Store::open_existing(from).await.map_err(on_source)?;
    let source_lease = match taken(
        source.acquire_lease("copy").await,
        |holder| CopyError::SourceBusy {
            base: from_shown.clone(),
            holder,
        },
        on_source,
    ) {
        Ok(lease) => lease,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let target = match Store::open(to).await {
        Ok(target) => target,
        Err(e) => {
            let _ = source.release_lease(&source_lease).await;
            source.close().await;
            return Err(on_target(e));
        }
    };
    let target_lease = match taken(
        target.acquire_lease("copy").await,
        |holder| CopyError::TargetBusy {
            base: to_shown.clone(),
            holder,
        },
        on_target,
    ) {
        Ok(lease) => lease,
        Err(e) => {
            let _ = source.release_lease(&source_lease).await;
            source.close().await;
            target.close().await;
            return Err(e);
        }
    };
    let mut run = Run {
        source: &source,
        target: &target,
        source_lease,
        target_lease,
        renewed: Instant::now(),
        from: &from_shown,
        to: &to_shown,
    };
    let result = run.all(progress).await;
    // Both leases go, whatever happened: a daemon may start on either base again.
    let _ = source.release_lease(&run.source_lease).await;
    let _ = target.release_lease(&run.target_lease).await;
    source.close().await;
    target.close().await;
    Ok(CopyReport {
        tables: result?,
        took: started.elapsed(),
    })
}

/// The lease, or the error for a lease held by `holder` or for a failure.
fn taken(
    acquired: Result<Result<Lease, LeaseHeld>, StoreError>,
    busy: impl FnOnce(String) -> CopyError,
    failed: impl FnOnce(StoreError) -> CopyError,
) -> Result<Lease, CopyError> {
    match acquired {
        Ok(Ok(lease)) => Ok(lease),
        Ok(Err(held)) => Err(busy(held.holder)),
        Err(e) => Err(failed(e)),
    }
}

/// Whether `from` and `to` name one database.
fn same_base(from: &str, to: &str) -> bool {
    match (is_postgres_url(from), is_postgres_url(to)) {
        (true, true) => from.trim_end_matches('/') == to.trim_end_matches('/'),
        (false, false) => {
            let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            canonical(&sqlite_path(from)) == canonical(&sqlite_path(to))
        }
        _ => false,
    }
}

/// Whether the existing database at `url` was made by nurtured (has its migrations
/// table); nothing is created.
async fn is_base(url: &str) -> Result<bool, StoreError> {
    let found = if is_postgres_url(url) {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let (found,): (bool,) =
            sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&mut conn)
                .await?;
        conn.close().await?;
        found
    } else {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(false);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
             AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        n > 0
    };
    Ok(found)
}

/// A copy under way: both bases, their leases, and when the source's was renewed.
struct Run<'a> {
    source: &'a Store,
    target: &'a Store,
    source_lease: Lease,
    target_lease: Lease,
    renewed: Instant,
    from: &'a str,
    to: &'a str,
}

impl Run<'_> {
    fn on_source(&self, source: StoreError) -> CopyError {
        CopyError::Store {
            base: format!("the source {}", self.from),
            source,
        }
    }

    fn on_target(&self, source: StoreError) -> CopyError {
        match source {
            StoreError::LeaseLost => CopyError::LeaseLost {
                base: format!("the target {}", self.to),
            },
            source => CopyError::Store {
                base: format!("the target {}", self.to),
                source,
            },
        }
    }

    /// Checks that the target is empty, copies every table, sets the sequences and
    /// counts both sides.
    async fn all(&mut self, progress: &mut dyn Progress) -> Result<Vec<TableCount>, CopyError> {
        let contents = self
            .target
            .contents()
            .await
            .map_err(|e| self.on_target(e))?;
        if !contents.is_empty() {
            let listed: Vec<String> = contents
                .iter()
                .map(|(table, n)| format!("{n} row(s) in {table}"))
                .collect();
            return Err(CopyError::TargetNotEmpty {
                base: self.to.to_string(),
                contents: listed.join(", "),
            });
        }
        let mut snapshot = self
            .source
            .snapshot()
            .await
            .map_err(|e| self.on_source(e))?;
        let mut took = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let started = Instant::now();
            let rows = snapshot.count(table).await.map_err(|e| self.on_source(e))?;
            progress.start(table.name, rows);
            let done = self.table(&mut snapshot, table, progress).await?;
            progress.finish(table.name, done, started.elapsed());
            took.push(started.elapsed());
        }
        drop(snapshot);
        self.target
            .set_sequences(&self.target_lease)
            .await
            .map_err(|e| self.on_target(e))?;
        // Counted anew (not in the snapshot): rows written to the source meanwhile
        // show as a difference.
        let mut counts = Vec::with_capacity(TABLES.len());
        for (table, took) in TABLES.iter().zip(took) {
            self.keep_source_lease().await?;
            let source = self
                .source
                .rows_in(table)
                .await
                .map_err(|e| self.on_source(e))?;
            let target = self
                .target
                .rows_in(table)
                .await
                .map_err(|e| self.on_target(e))?;
            counts.push(TableCount {
                table: table.name,
                source,
                target,
                took,
            });
        }
        Ok(counts)
    }

    /// Copies one table in chunks, reading the next chunk while the last one is
    /// written; returns the rows copied.
    async fn table(
        &mut self,
        snapshot: &mut Snapshot,
        table: &'static Table,
        progress: &mut dyn Progress,
    ) -> Result<u64, CopyError> {
        let (target, dialect) = (self.target, self.target.dialect());
        let mut rows = snapshot
            .chunk(table, None)
            .await
            .map_err(|e| self.on_source(e))?;
        let mut first = true;
        let mut done = 0u64;
        while !rows.is_empty() {
            let n = rows.len();
            let last = (n == table.chunk).then(|| rows[n - 1][0].clone());
            let mut statements = Statements::Empty;
            if first && table.name == "counters" {
                // The migrations seed the target's counters; the source's replace them.
                statements = delete_counters(dialect);
            }
            statements = statements.and(inserts(dialect, table, rows));
            let write = write(target, &self.target_lease, statements);
            rows = match last {
                Some(last) => {
                    let (written, next) = tokio::join!(write, snapshot.chunk(table, Some(last)));
                    written.map_err(|e| self.on_target(e))?;
                    next.map_err(|e| self.on_source(e))?
                }
                None => {
                    write.await.map_err(|e| self.on_target(e))?;
                    Vec::new()
                }
            };
            first = false;
            done += n as u64;
            progress.advance(table.name, done);
            self.keep_source_lease().await?;
        }
        Ok(done)
    }

    /// Renews the source's lease once a third of its time has passed (the target's is
    /// renewed by every write).
    async fn keep_source_lease(&mut self) -> Result<(), CopyError> {
        if self.renewed.elapsed() < LEASE_TTL / 3 {
            return Ok(());
        }
        let held = self
            .source
            .renew_lease(&self.source_lease)
            .await
            .map_err(|e| self.on_source(e))?;
        if !held {
            return Err(CopyError::LeaseLost {
                base: format!("the source {}", self.from),
            });
        }
        self.renewed = Instant::now();
        Ok(())
    }
}

/// Runs `statements` in one transaction of `target` that checks and extends its lease.
async fn write(target: &Store, lease: &Lease, statements: Statements) -> Result<(), StoreError> {
    let mut tx = target.begin_write().await?;
    tx.hold_lease(lease).await?;
    tx.execute(statements).await?;
    tx.commit().await
}

/// A value of a column, typed.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bool(Option<bool>),
}

impl Value {
    fn is_null(&self) -> bool {
        match self {
            Value::Int(v) => v.is_none(),
            Value::Real(v) => v.is_none(),
            Value::Text(v) => v.is_none(),
            Value::Bool(v) => v.is_none(),
        }
    }
}

/// A row's values in the order of its table's columns.
trait Values {
    fn values(&self, table: &Table) -> Result<Vec<Value>, sqlx::Error>;
}

impl Values for SqliteRow {
    fn values(&self, table: &Table) -> Result<Vec<Value>, sqlx::Error> {
        let mut out = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            out.push(match c.kind {
                Kind::Int => Value::Int(self.try_get(i)?),
                // SQLite may keep a whole number in a REAL column as an integer.
                Kind::Real => Value::Real(self.try_get_unchecked(i)?),
                Kind::Text => Value::Text(self.try_get(i)?),
                Kind::Bool => Value::Bool(self.try_get::<Option<i64>, _>(i)?.map(|v| v != 0)),
            });
        }
        Ok(out)
    }
}

impl Values for PgRow {
    fn values(&self, table: &Table) -> Result<Vec<Value>, sqlx::Error> {
        let mut out = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            out.push(match c.kind {
                Kind::Int => Value::Int(self.try_get(i)?),
                Kind::Real => Value::Real(self.try_get(i)?),
                Kind::Text => Value::Text(self.try_get(i)?),
                Kind::Bool => Value::Bool(self.try_get(i)?),
            });
        }
        Ok(out)
    }
}

/// A read transaction on the source that sees one state of the base throughout (a
/// deferred transaction on SQLite, `REPEATABLE READ` on PostgreSQL).
struct Snapshot {
    tx: Tx,
}

impl Snapshot {
    async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
        let text = format!("SELECT COUNT(*) FROM {}", table.name);
        let (n,): (i64,) = in_tx!(self, |tx, DB| {
            sqlx::query_as(sql_owned::<DB>(text))
                .fetch_one(&mut **tx)
                .await?
        });
        Ok(n as u64)
    }

    /// The next rows of `table` in key order, after the key `after`.
    async fn chunk(
        &mut self,
        table: &Table,
        after: Option<Value>,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let text = format!(
            "SELECT {} FROM {}{} ORDER BY {} LIMIT {}",
            columns.join(", "),
            table.name,
            if after.is_some() {
                format!(" WHERE {} > ?", table.key())
            } else {
                String::new()
            },
            table.key(),
            table.chunk
        );
        let rows: Vec<Vec<Value>> = in_tx!(self, |tx, DB| {
            let mut query = sqlx::query(sql_owned::<DB>(text));
            query = match after {
                None => query,
                Some(Value::Int(v)) => query.bind(v),
                Some(Value::Text(v)) => query.bind(v),
                Some(other) => {
                    return Err(StoreError::Corrupt {
                        what: "copy key",
                        detail: format!("{}: {other:?}", table.name),
                    });
                }
            };
            let rows = query.fetch_all(&mut **tx).await?;
            rows.iter()
                .map(|r| r.values(table))
                .collect::<Result<_, _>>()?
        });
        for row in &rows {
            for (value, column) in row.iter().zip(table.columns) {
                if value.is_null() && (!column.nullable || column.name == table.key()) {
                    return Err(StoreError::Corrupt {
                        what: "copied row",
                        detail: format!("{}.{} is NULL", table.name, column.name),
                    });
                }
            }
        }
        Ok(rows)
    }
}

/// `INSERT` statements for `rows` of `table`, as many rows in each as the bound
/// parameters allow.
fn inserts(dialect: Dialect, table: &Table, rows: Vec<Vec<Value>>) -> Statements {
    let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        table.name,
        columns.join(", ")
    );
    let per = rows_per_statement(columns.len());
    for_dialect!(dialect, |DB| {
        let mut out = Vec::new();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut q = QueryBuilder::<DB>::new(head.as_str());
            for (i, row) in rows.by_ref().take(per).enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(");
                let mut sep = q.separated(", ");
                for value in row {
                    match value {
                        Value::Int(v) => sep.push_bind(v),
                        Value::Real(v) => sep.push_bind(v),
                        Value::Text(v) => sep.push_bind(v),
                        Value::Bool(v) => sep.push_bind(v),
                    };
                }
                q.push(")");
            }
            out.push(q);
        }
        out
    })
}

/// Removes the counters the target's migrations seeded.
fn delete_counters(dialect: Dialect) -> Statements {
    for_dialect!(dialect, |DB| vec![QueryBuilder::<DB>::new(
        "DELETE FROM counters"
    )])
}

impl Store {
    /// Starts a [`Snapshot`] of this base.
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let tx = match &*self.db {
            Db::Sqlite { pool, .. } => Tx::Sqlite(pool.begin().await?),
            Db::Postgres { pool } => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        };
        Ok(Snapshot { tx })
    }

    /// The rows of `table`.
    async fn rows_in(&self, table: &Table) -> Result<u64, StoreError> {
        let text = format!("SELECT COUNT(*) FROM {}", table.name);
        let (n,): (i64,) = read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(text))
                .fetch_one(pool)
                .await?
        });
        Ok(n as u64)
    }

    /// The copied tables that hold rows, with their counts (counters only when one is
    /// not zero: the migrations seed them).
    async fn contents(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut out = Vec::new();
        for table in TABLES {
            let text = if table.name == "counters" {
                "SELECT COUNT(*) FROM counters WHERE value <> 0".to_string()
            } else {
                format!("SELECT COUNT(*) FROM {}", table.name)
            };
            let (n,): (i64,) = read!(self, |pool, DB| {
                sqlx::query_as(sql_owned::<DB>(text))
                    .fetch_one(pool)
                    .await?
            });
            if n > 0 {
                out.push((table.name, n as u64));
            }
        }
        Ok(out)
    }

    /// On PostgreSQL, sets the sequence of every identity key past the largest key
    /// (the copied rows kept their ids); on SQLite the next id follows the largest.
    async fn set_sequences(&self, lease: &Lease) -> Result<(), StoreError> {
        if self.dialect() != Dialect::Postgres {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        tx.hold_lease(lease).await?;
        for table in TABLES.iter().filter(|t| t.identity) {
            let text = format!(
                "SELECT setval(pg_get_serial_sequence('{name}', '{key}'), \
                 COALESCE(MAX({key}), 0) + 1, false) FROM {name}",
                name = table.name,
                key = table.key()
            );
            in_tx!(tx, |tx, DB| {
                sqlx::query(sql_owned::<DB>(text))
                    .execute(&mut **tx)
                    .await?;
            });
        }
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown("postgres://nurtured:secret@db.internal:5432/nurtured"),
            "postgres://nurtured:***@db.internal:5432/nurtured"
        );
        assert_eq!(
            shown("postgres://postgres@127.0.0.1:5432/x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(shown("sqlite://data/n.db"), "sqlite://data/n.db");
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), Path::new("/tmp/a.db"));
        assert_eq!(sqlite_path("sqlite://data/a.db"), Path::new("data/a.db"));
        assert_eq!(sqlite_path("sqlite:a.db?mode=rwc"), Path::new("a.db"));
        assert_eq!(sqlite_path("/tmp/a.db"), Path::new("/tmp/a.db"));
    }

    /// The column spec follows the schema the migrations make: every table but the
    /// lease, every column in order, with its kind and whether it may be NULL.
    #[tokio::test]
    async fn the_spec_matches_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::fresh_database_url(dir.path());
        let store = Store::open(&url).await.unwrap();
        let pg = store.dialect() == Dialect::Postgres;
        let tables: Vec<(String,)> = read!(store, |pool, DB| {
            sqlx::query_as(if pg {
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() ORDER BY 1"
            } else {
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1"
            })
            .fetch_all(pool)
            .await
            .unwrap()
        });
        let mut found: Vec<&str> = tables
            .iter()
            .map(|(t,)| t.as_str())
            .filter(|t| {
                ![
                    "leases",
                    "_sqlx_migrations",
                    "sqlite_sequence",
                    "cluster_members",
                    "shard_leases",
                    "mail_pause",
                ]
                .contains(t)
            })
            .collect();
        found.sort_unstable();
        let mut spec: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        spec.sort_unstable();
        assert_eq!(found, spec);

        for table in TABLES {
            // (name, type, may be NULL)
            let columns: Vec<(String, String, bool)> = read!(store, |pool, DB| {
                if pg {
                    sqlx::query_as(
                        "SELECT column_name::text, data_type::text, is_nullable = 'YES' \
                         FROM information_schema.columns \
                         WHERE table_schema = current_schema() AND table_name = $1 \
                         ORDER BY ordinal_position",
                    )
                    .bind(table.name)
                    .fetch_all(pool)
                    .await
                    .unwrap()
                } else {
                    sqlx::query_as(
                        "SELECT name, type, \"notnull\" = 0 AND pk = 0 \
                         FROM pragma_table_info(?) ORDER BY cid",
                    )
                    .bind(table.name)
                    .fetch_all(pool)
                    .await
                    .unwrap()
                }
            });
            let expected: Vec<(String, String, bool)> = table
                .columns
                .iter()
                .map(|c| {
                    let ty = match (c.kind, pg) {
                        (Kind::Int, false) | (Kind::Bool, false) => "INTEGER",
                        (Kind::Real, false) => "REAL",
                        (Kind::Text, false) => "TEXT",
                        (Kind::Int, true) => "bigint",
                        (Kind::Real, true) => "double precision",
                        (Kind::Text, true) => "text",
                        (Kind::Bool, true) => "boolean",
                    };
                    (c.name.to_string(), ty.to_string(), c.nullable)
                })
                .collect();
            assert_eq!(columns, expected, "{}", table.name);
        }
        store.close().await;
    }
}
