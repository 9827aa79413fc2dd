//! Events (lead activity): the durable intake queue and the history rules count on.
//!
//! A row's content never changes after insert; processing only sets `status`,
//! `attempts`, `error` and `processed_at`. `message_id` is unique, so a retried request
//! never adds an event twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::rows::ms_as_rfc3339;
use super::{Statements, Store, StoreError, WriteTx, rows_per_statement};
use crate::clock::to_ms;

/// An accepted event, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub message_id: String,
    /// `identify`, `track` or `page`.
    pub kind: &'static str,
    pub name: String,
    /// JSON object.
    pub properties: String,
    /// JSON object (identify only).
    pub traits: Option<String>,
    /// JSON object: the sender's context (campaign, page, user agent...).
    pub context: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// A stored event.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct EventRow {
    pub seq: i64,
    pub message_id: String,
    pub lead_id: i64,
    pub kind: String,
    pub name: String,
    #[serde(skip)]
    pub properties: String,
    #[serde(skip)]
    pub traits: Option<String>,
    #[serde(skip)]
    pub context: Option<String>,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub occurred_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub received_at: i64,
    pub status: String,
    pub attempts: i64,
    #[serde(skip)]
    pub error: Option<String>,
}

/// A pending event: what processing needs.
#[derive(Debug, Clone, FromRow)]
pub struct PendingEvent {
    pub seq: i64,
    pub message_id: String,
    pub lead_id: i64,
    pub kind: String,
    pub name: String,
    pub properties: String,
    pub traits: Option<String>,
    pub context: Option<String>,
    pub occurred_at: i64,
}

/// A past event as counting needs it.
#[derive(Debug, Clone, FromRow)]
pub struct PastEvent {
    pub lead_id: i64,
    pub seq: i64,
    pub name: String,
    pub occurred_at: i64,
    pub properties: String,
}

/// A failed event with its lead, for `events failed`.
#[derive(Debug, Clone, FromRow)]
pub struct FailedEvent {
    pub seq: i64,
    pub message_id: String,
    pub email: String,
    pub kind: String,
    pub name: String,
    pub occurred_at: i64,
    pub attempts: i64,
    /// JSON written by the processor.
    pub error: Option<String>,
}

/// "How many events named `name` did this lead do in `[since, until]`, up to event
/// `upto_seq`": the history aggregate rules ask for.
#[derive(Debug, Clone)]
pub struct CountQuery<'a> {
    pub lead_id: i64,
    /// `None` counts every event.
    pub name: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: DateTime<Utc>,
    pub upto_seq: i64,
}

pub(super) const EVENT_COLUMNS: &str = "seq, message_id, lead_id, kind, name, properties, traits, context, \
    occurred_at, received_at, status, attempts, error";

impl Store {
    /// The oldest pending events, in arrival order.
    /// With `after`, only events that arrived after that one (the events up to it are
    /// still being written).
    pub async fn pending_events(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, message_id, lead_id, kind, name, properties, traits, context, occurred_at \
             FROM events WHERE status = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after.unwrap_or(0))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Events of the given leads that happened at or after `since`, in any state: the
    /// history the processor keeps in memory (counting picks by sequence number).
    ///
    /// Rows come in lead-id order. With `limit`, at most that many rows are read; the
    /// caller can tell which leads came complete (all but the last one seen).
    pub async fn past_events(
        &self,
        lead_ids: &[i64],
        since: DateTime<Utc>,
        limit: Option<usize>,
    ) -> Result<Vec<PastEvent>, StoreError> {
        let mut out = Vec::new();
        for chunk in lead_ids.chunks(rows_per_statement(1) - 2) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT lead_id, seq, name, occurred_at, properties FROM events \
                 WHERE occurred_at >= ",
            );
            q.push_bind(to_ms(since)).push(" AND lead_id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            q.push(") ORDER BY lead_id");
            if let Some(limit) = limit {
                q.push(" LIMIT ")
                    .push_bind((limit - out.len().min(limit)) as i64);
            }
            out.extend(
                q.build_query_as::<PastEvent>()
                    .fetch_all(&self.pool)
                    .await?,
            );
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    /// True when at least one event waits.
    pub async fn has_pending(&self) -> Result<bool, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT seq FROM events WHERE status = 'pending' LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// A lead's newest events, newest first.
    pub async fn recent_events(
        &self,
        lead_id: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE lead_id = ? ORDER BY seq DESC LIMIT ?"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lead_id)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn failed_events(&self, limit: usize) -> Result<Vec<FailedEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT e.seq, e.message_id, l.email, e.kind, e.name, e.occurred_at, e.attempts, e.error \
             FROM events e JOIN leads l ON l.id = e.lead_id \
             WHERE e.status = 'failed' ORDER BY e.seq LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Puts failed events back in the queue: all of them, or the listed ones.
    /// Returns how many were re-queued.
    pub async fn retry_failed(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = match seqs {
            None => sqlx::query("UPDATE events SET status = 'pending' WHERE status = 'failed'")
                .execute(&mut *tx.tx)
                .await?
                .rows_affected(),
            Some(seqs) => {
                let mut n = 0;
                for chunk in seqs.chunks(rows_per_statement(1)) {
                    let mut q = QueryBuilder::<Sqlite>::new(
                        "UPDATE events SET status = 'pending' WHERE status = 'failed' AND seq IN (",
                    );
                    let mut sep = q.separated(", ");
                    for s in chunk {
                        sep.push_bind(*s);
                    }
                    q.push(")");
                    n += q.build().execute(&mut *tx.tx).await?.rows_affected();
                }
                n
            }
        };
        tx.commit().await?;
        Ok(n)
    }

    /// Counts a lead's events; see [`CountQuery`]. `matches` filters on the event's
    /// properties JSON when given.
    pub async fn count_events(
        &self,
        q: &CountQuery<'_>,
        matches: Option<&(dyn Fn(&str) -> bool + Send + Sync)>,
    ) -> Result<i64, StoreError> {
        let mut b = QueryBuilder::<Sqlite>::new(if matches.is_some() {
            "SELECT properties FROM events WHERE lead_id = "
        } else {
            "SELECT COUNT(*) FROM events WHERE lead_id = "
        });
        b.push_bind(q.lead_id);
        if let Some(name) = q.name {
            b.push(" AND name = ").push_bind(name.to_string());
        }
        if let Some(since) = q.since {
            b.push(" AND occurred_at >= ").push_bind(to_ms(since));
        }
        b.push(" AND occurred_at <= ").push_bind(to_ms(q.until));
        b.push(" AND seq <= ").push_bind(q.upto_seq);
        match matches {
            None => {
                let (n,): (i64,) = b.build_query_as().fetch_one(&self.pool).await?;
                Ok(n)
            }
            Some(f) => {
                let rows: Vec<(String,)> = b.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows.iter().filter(|(p,)| f(p)).count() as i64)
            }
        }
    }
}

impl WriteTx {
    /// Adds `n` newly stored events to the received counter.
    pub async fn count_received(&mut self, n: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE counters SET value = value + ? WHERE name = 'events_received'")
            .bind(n as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

/// Statements for the event queue; run them with [`WriteTx::execute`].
pub mod build {
    use super::*;

    /// Inserts events for their leads; an event whose `message_id` is already stored
    /// (or repeats within the list) is skipped, so the rows affected are the new ones.
    pub fn events(events: Vec<(i64, NewEvent)>, received_at: DateTime<Utc>) -> Statements {
        let received = to_ms(received_at);
        let per_statement = rows_per_statement(9);
        let mut out = Statements::default();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (message_id, lead_id, kind, name, properties, traits, context, \
                 occurred_at, received_at) ",
            );
            q.push_values(events.by_ref().take(per_statement), |mut b, (lead, e)| {
                b.push_bind(e.message_id)
                    .push_bind(lead)
                    .push_bind(e.kind)
                    .push_bind(e.name)
                    .push_bind(e.properties)
                    .push_bind(e.traits)
                    .push_bind(e.context)
                    .push_bind(to_ms(e.occurred_at))
                    .push_bind(received);
            });
            q.push(" ON CONFLICT (message_id) DO NOTHING");
            out.push(q);
        }
        out
    }

    /// Marks processed and failed events; `failed` carries the error JSON.
    pub fn finished(processed: &[i64], failed: &[(i64, String)], at: DateTime<Utc>) -> Statements {
        let ms = to_ms(at);
        let mut out = Statements::default();
        for chunk in processed.chunks(rows_per_statement(1) - 1) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE events SET status = 'processed', attempts = attempts + 1, error = NULL, \
                 processed_at = ",
            );
            q.push_bind(ms)
                .push(" WHERE status = 'pending' AND seq IN (");
            let mut sep = q.separated(", ");
            for s in chunk {
                sep.push_bind(*s);
            }
            q.push(")");
            out.push(q);
        }
        for (seq, error) in failed {
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE events SET status = 'failed', attempts = attempts + 1, error = ",
            );
            q.push_bind(error.clone())
                .push(", processed_at = ")
                .push_bind(ms)
                .push(" WHERE status = 'pending' AND seq = ")
                .push_bind(*seq);
            out.push(q);
        }
        out
    }
}
