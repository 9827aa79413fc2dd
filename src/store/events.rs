//! Events (lead activity): the durable intake queue and the history rules count on.
//!
//! An event row never changes after insert. `event_queue` lists the events not yet
//! processed and `event_failures` those whose rules failed; an event in neither is
//! processed. `message_id` is unique, so a retried request never adds an event twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, QueryBuilder};

use super::rows::ms_as_rfc3339;
use super::{
    Db, Dialect, Statements, Store, StoreError, Tx, WriteTx, for_dialect, in_tx, is_pg, read,
    rows_per_statement, sql, sql_owned,
};
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
    /// Taken in as history: processed, but it queues no mail, starts no stream and
    /// hands no lead to sales.
    pub history: bool,
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
    /// Taken in as history (no mail, streams or handoffs came of it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
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
    /// Times it failed before (a retried event), 0 for a new one.
    pub attempts: i64,
    /// Taken in as history (see [`NewEvent::history`]).
    pub history: bool,
    /// A retry of an event that failed for some rule files only: the JSON array of
    /// their errors (only those files run again).
    pub retry_rules: Option<String>,
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
    /// When only some rule files failed: the JSON array of their errors.
    pub rules: Option<String>,
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

/// An event with its state, from `events e` joined with the queue `q` and the
/// failures `f`.
pub(super) const EVENT_COLUMNS: &str = "e.seq, e.message_id, e.lead_id, e.kind, e.name, e.properties, \
    e.traits, e.context, e.occurred_at, e.received_at, \
    CASE WHEN q.seq IS NOT NULL THEN 'pending' WHEN f.seq IS NOT NULL THEN 'failed' \
         ELSE 'processed' END AS status, \
    COALESCE(f.attempts, 0) + CASE WHEN q.seq IS NULL AND f.seq IS NULL THEN 1 ELSE 0 END \
         AS attempts, \
    f.error, e.history";
pub(super) const EVENT_JOINS: &str = "events e LEFT JOIN event_queue q ON q.seq = e.seq \
    LEFT JOIN event_failures f ON f.seq = e.seq";

impl Store {
    /// The oldest pending events, in arrival order.
    /// With `after`, only events that arrived after that one (the events up to it are
    /// still being written).
    pub async fn pending_events(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        self.pending_events_of(after, limit, None).await
    }

    /// Like [`Store::pending_events`], only of the leads in `shards` (a daemon of a
    /// cluster: `(shards held, number of shards)`; PostgreSQL).
    pub async fn pending_events_of(
        &self,
        after: Option<i64>,
        limit: usize,
        shards: Option<(&[i32], u32)>,
    ) -> Result<Vec<PendingEvent>, StoreError> {
        const SELECT: &str = "SELECT e.seq, e.message_id, e.lead_id, e.kind, e.name, \
             e.properties, e.traits, e.context, e.occurred_at, \
             COALESCE(f.attempts, 0) AS attempts, e.history, f.rules AS retry_rules \
             FROM event_queue q JOIN events e ON e.seq = q.seq \
             LEFT JOIN event_failures f ON f.seq = q.seq";
        if let (Some((held, n)), Db::Postgres { pool }) = (shards, &*self.db) {
            return Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SELECT} WHERE q.seq > $1 AND (e.lead_id % $3)::int = ANY($4) \
                 ORDER BY q.seq LIMIT $2"
            )))
            .bind(after.unwrap_or(0))
            .bind(limit as i64)
            .bind(i64::from(n))
            .bind(held)
            .fetch_all(pool)
            .await?);
        }
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(format!(
                "{SELECT} WHERE q.seq > ? ORDER BY q.seq LIMIT ?"
            )))
            .bind(after.unwrap_or(0))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every stored event of the given leads (in any state), in no particular order:
    /// the histories the processor holds in memory.
    pub async fn histories(&self, lead_ids: &[i64]) -> Result<Vec<PastEvent>, StoreError> {
        let mut out = Vec::new();
        for chunk in lead_ids.chunks(rows_per_statement(1)) {
            read!(self, |pool, DB| {
                let mut q = QueryBuilder::<DB>::new(
                    "SELECT lead_id, seq, name, occurred_at, properties FROM events WHERE lead_id IN (",
                );
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                q.push(")");
                out.extend(
                    q.build_query_as::<PastEvent>()
                        .persistent(false)
                        .fetch_all(pool)
                        .await?,
                );
            });
        }
        Ok(out)
    }

    /// True when at least one event waits.
    pub async fn has_pending(&self) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as("SELECT seq FROM event_queue LIMIT 1")
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some())
    }

    /// A lead's newest events, newest first.
    pub async fn recent_events(
        &self,
        lead_id: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM {EVENT_JOINS} WHERE e.lead_id = ? ORDER BY e.seq DESC LIMIT ?"
            );
            sqlx::query_as(sql_owned::<DB>(sql))
                .bind(lead_id)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?
        }))
    }

    pub async fn failed_events(&self, limit: usize) -> Result<Vec<FailedEvent>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT e.seq, e.message_id, l.email, e.kind, e.name, e.occurred_at, f.attempts, \
                        f.error, f.rules \
                 FROM event_failures f JOIN events e ON e.seq = f.seq \
                 JOIN leads l ON l.id = e.lead_id \
                 WHERE f.seq NOT IN (SELECT seq FROM event_queue) ORDER BY f.seq LIMIT ?",
            ))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Puts failed events back in the queue: all of them, or the listed ones.
    /// Returns how many were re-queued.
    pub async fn retry_failed(&self, seqs: Option<&[i64]>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = in_tx!(tx, |tx, DB| {
            match seqs {
                None => sqlx::query(
                    "INSERT INTO event_queue (seq) SELECT seq FROM event_failures WHERE true \
                     ON CONFLICT (seq) DO NOTHING",
                )
                .execute(&mut **tx)
                .await?
                .rows_affected(),
                Some(seqs) => {
                    let mut n = 0;
                    for chunk in seqs.chunks(rows_per_statement(1)) {
                        let mut q = QueryBuilder::<DB>::new(
                            "INSERT INTO event_queue (seq) SELECT seq FROM event_failures \
                             WHERE seq IN (",
                        );
                        let mut sep = q.separated(", ");
                        for s in chunk {
                            sep.push_bind(*s);
                        }
                        q.push(") ON CONFLICT (seq) DO NOTHING");
                        n += q
                            .build()
                            .persistent(false)
                            .execute(&mut **tx)
                            .await?
                            .rows_affected();
                    }
                    n
                }
            }
        });
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
        read!(self, |pool, DB| {
            let mut b = QueryBuilder::<DB>::new(if matches.is_some() {
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
                    let (n,): (i64,) = b.build_query_as().persistent(false).fetch_one(pool).await?;
                    Ok(n)
                }
                Some(f) => {
                    let rows: Vec<(String,)> =
                        b.build_query_as().persistent(false).fetch_all(pool).await?;
                    Ok(rows.iter().filter(|(p,)| f(p)).count() as i64)
                }
            }
        })
    }
}

impl WriteTx {
    /// Stores events for their leads and queues them; an event whose `message_id` is
    /// already stored (or repeats within the list) is skipped. Returns how many were
    /// new.
    pub async fn insert_events(
        &mut self,
        events: Vec<(i64, NewEvent)>,
        received_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let dialect = self.dialect();
        let statements = build::events(dialect, events, received_at, false);
        if dialect == Dialect::Postgres {
            self.events_in_commit_order().await?;
            // The statements queue what they insert; their rows affected are those.
            return self.execute(statements).await;
        }
        // The writer lock is held: the events inserted now are the ones after this.
        let (before,): (i64,) = in_tx!(self, |tx, DB| {
            sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
                .fetch_one(&mut **tx)
                .await?
        });
        let n = self.execute(statements).await?;
        if n > 0 {
            in_tx!(self, |tx, DB| {
                sqlx::query(sql::<DB>(
                    "INSERT INTO event_queue (seq) SELECT seq FROM events WHERE seq > ?",
                ))
                .bind(before)
                .execute(&mut **tx)
                .await?;
            });
        }
        Ok(n)
    }

    /// On PostgreSQL, makes the transactions that store events (of every daemon on the
    /// database) take their sequence numbers one transaction after the other, until
    /// commit: so events become visible in sequence order, and a reader that saw event
    /// `n` has seen every event before it. Processing reads on from the last sequence
    /// number it saw, and keeps each lead's events in order, by this.
    pub async fn events_in_commit_order(&mut self) -> Result<(), StoreError> {
        if let Tx::Postgres(tx) = &mut self.tx {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('nurtured.events'))")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Like [`WriteTx::insert_events`], for the events of several requests at once:
    /// returns the message ids of the events that were new, with their sequence
    /// numbers.
    pub async fn insert_events_returning(
        &mut self,
        events: Vec<(i64, NewEvent)>,
        received_at: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let dialect = self.dialect();
        let pg = dialect == Dialect::Postgres;
        // On PostgreSQL the statements queue what they insert (see `build::events`).
        let before: i64 = if pg {
            self.events_in_commit_order().await?;
            0
        } else {
            let (before,): (i64,) = in_tx!(self, |tx, DB| {
                sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
                    .fetch_one(&mut **tx)
                    .await?
            });
            before
        };
        let mut new = std::collections::HashMap::with_capacity(events.len());
        macro_rules! run {
            ($tx:expr, $all:expr) => {
                for mut q in $all {
                    let rows: Vec<(String, i64)> = q
                        .build_query_as()
                        .persistent(false)
                        .fetch_all(&mut **$tx)
                        .await?;
                    new.extend(rows);
                }
            };
        }
        match (
            &mut self.tx,
            build::events(dialect, events, received_at, true),
        ) {
            (Tx::Sqlite(tx), Statements::Sqlite(all)) => run!(tx, all),
            (Tx::Postgres(tx), Statements::Postgres(all)) => run!(tx, all),
            (_, Statements::Empty) => {}
            _ => {
                return Err(StoreError::Corrupt {
                    what: "write statements",
                    detail: "built for the other database".into(),
                });
            }
        }
        if !pg && !new.is_empty() {
            in_tx!(self, |tx, DB| {
                sqlx::query(sql::<DB>(
                    "INSERT INTO event_queue (seq) SELECT seq FROM events WHERE seq > ?",
                ))
                .bind(before)
                .execute(&mut **tx)
                .await?;
            });
        }
        Ok(new)
    }

    /// Takes processed and failed events off the queue, records the failures (with the
    /// error JSON, and for an event that failed for some rule files only the JSON array
    /// of their errors) and forgets the earlier failures of retried events that now
    /// succeeded. Returns how many events were still queued.
    pub async fn finish_events(
        &mut self,
        processed: &[i64],
        failed: &[(i64, String, Option<String>)],
        retried_ok: &[i64],
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let all: Vec<i64> = processed
            .iter()
            .copied()
            .chain(failed.iter().map(|(s, _, _)| *s))
            .collect();
        let ms = to_ms(at);
        Ok(in_tx!(self, |tx, DB| {
            let mut queued = 0;
            for chunk in all.chunks(rows_per_statement(1)) {
                let mut q = QueryBuilder::<DB>::new("DELETE FROM event_queue WHERE seq IN (");
                let mut sep = q.separated(", ");
                for s in chunk {
                    sep.push_bind(*s);
                }
                q.push(")");
                queued += q
                    .build()
                    .persistent(false)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
            }
            for chunk in failed.chunks(rows_per_statement(5)) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO event_failures (seq, attempts, error, failed_at, rules) ",
                );
                q.push_values(chunk, |mut b, (seq, error, rules)| {
                    b.push_bind(*seq)
                        .push_bind(1i64)
                        .push_bind(error.clone())
                        .push_bind(ms)
                        .push_bind(rules.clone());
                });
                q.push(
                    " ON CONFLICT (seq) DO UPDATE SET attempts = event_failures.attempts + 1, \
                     error = excluded.error, failed_at = excluded.failed_at, rules = excluded.rules",
                );
                q.build().persistent(false).execute(&mut **tx).await?;
            }
            for chunk in retried_ok.chunks(rows_per_statement(1)) {
                let mut q = QueryBuilder::<DB>::new("DELETE FROM event_failures WHERE seq IN (");
                let mut sep = q.separated(", ");
                for s in chunk {
                    sep.push_bind(*s);
                }
                q.push(")");
                q.build().persistent(false).execute(&mut **tx).await?;
            }
            queued
        }))
    }

    /// Adds `n` newly stored events to the received counter.
    pub async fn count_received(&mut self, n: u64) -> Result<(), StoreError> {
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "UPDATE counters SET value = value + ? WHERE name = 'events_received'",
            ))
            .bind(n as i64)
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }
}

/// Statements for the event queue; run them with [`WriteTx::execute`].
mod build {
    use super::*;

    /// Inserts events for their leads; an event whose `message_id` is already stored
    /// (or repeats within the list) is skipped, so the rows affected are the new ones.
    /// With `returning`, each statement returns the `(message_id, seq)` of the new
    /// events.
    ///
    /// On PostgreSQL each statement also queues the events it inserts (sequence values
    /// come from an identity column that other processes' transactions share, so "the
    /// events above the highest seq before" is not a safe way to find them): its rows
    /// affected are still the new events. On SQLite the caller queues them.
    pub fn events(
        dialect: Dialect,
        events: Vec<(i64, NewEvent)>,
        received_at: DateTime<Utc>,
        returning: bool,
    ) -> Statements {
        let received = to_ms(received_at);
        let per_statement = rows_per_statement(10);
        for_dialect!(dialect, |DB| {
            let pg = is_pg::<DB>();
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            let mut events = events.into_iter().peekable();
            while events.peek().is_some() {
                let mut q = QueryBuilder::<DB>::new(if pg {
                    "WITH new AS (INSERT INTO events (message_id, lead_id, kind, name, properties, \
                     traits, context, occurred_at, received_at, history) "
                } else {
                    "INSERT INTO events (message_id, lead_id, kind, name, properties, traits, context, \
                     occurred_at, received_at, history) "
                });
                q.push_values(events.by_ref().take(per_statement), |mut b, (lead, e)| {
                    b.push_bind(e.message_id)
                        .push_bind(lead)
                        .push_bind(e.kind)
                        .push_bind(e.name)
                        .push_bind(e.properties)
                        .push_bind(e.traits)
                        .push_bind(e.context)
                        .push_bind(to_ms(e.occurred_at))
                        .push_bind(received)
                        .push_bind(e.history);
                });
                q.push(" ON CONFLICT (message_id) DO NOTHING");
                match (pg, returning) {
                    (false, false) => {}
                    (false, true) => {
                        q.push(" RETURNING message_id, seq");
                    }
                    (true, false) => {
                        q.push(" RETURNING seq) INSERT INTO event_queue (seq) SELECT seq FROM new");
                    }
                    (true, true) => {
                        q.push(
                            " RETURNING message_id, seq), \
                             queued AS (INSERT INTO event_queue (seq) SELECT seq FROM new) \
                             SELECT message_id, seq FROM new",
                        );
                    }
                }
                out.push(q);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;

    fn event(message_id: &str, name: &str, properties: &str) -> NewEvent {
        NewEvent {
            message_id: message_id.into(),
            kind: "track",
            name: name.into(),
            properties: properties.into(),
            traits: None,
            context: Some(r#"{"ip":"192.0.2.1"}"#.into()),
            occurred_at: chrono::DateTime::from_timestamp_millis(-62_167_219_200_000).unwrap(),
            history: true,
        }
    }

    /// The events insert keeps every text byte for byte: NUL, other control characters,
    /// quotes, backslashes, characters beyond the BMP, a long text; and it skips a
    /// message id stored before or repeated in the list.
    #[tokio::test]
    async fn events_keep_odd_text_exactly_and_skip_repeated_message_ids() {
        let dir = tempfile::tempdir().unwrap();
        // SQLite only: PostgreSQL refuses NUL in text (intake refuses it in keys).
        let url = format!("sqlite://{}", dir.path().join("nurtured.db").display());
        let store = Store::open(&url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let email = Email::parse("odd@example.com").unwrap();
        let lead = tx
            .create_leads(&[(email, None, "test".into())], "subscriber", Utc::now())
            .await
            .unwrap()[0];
        let long = "x".repeat(100_000);
        let odd = [
            event("a\0b", "Nul\0Name", r#"{"k":"v\u0000w"}"#),
            event("a\0c", "Ctl\u{1}\u{7f}\r\n\t", r#"{"q":"\"\\"}"#),
            event("emoji-😀", "\"quoted\" \\ back", "{}"),
            event(&long, &long, "{}"),
            event("a\0b", "repeated in the list", "{}"),
        ];
        let first = tx
            .insert_events_returning(odd.iter().map(|e| (lead, e.clone())).collect(), Utc::now())
            .await
            .unwrap();
        assert_eq!(first.len(), 4, "{:?}", first.keys().collect::<Vec<_>>());
        let again = tx
            .insert_events_returning(vec![(lead, odd[1].clone())], Utc::now())
            .await
            .unwrap();
        assert!(again.is_empty(), "stored before: skipped");
        tx.commit().await.unwrap();
        let stored = store.pending_events(None, 10).await.unwrap();
        assert_eq!(stored.len(), 4);
        for (e, s) in odd.iter().zip(&stored) {
            assert_eq!(s.message_id, e.message_id);
            assert_eq!(s.name, e.name);
            assert_eq!(s.properties, e.properties);
            assert_eq!(s.traits, e.traits);
            assert_eq!(s.context, e.context);
            assert_eq!(s.occurred_at, to_ms(e.occurred_at));
            assert!(s.history);
            assert_eq!(first[&e.message_id], s.seq);
        }
    }
}
