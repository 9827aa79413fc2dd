//! Privacy in the store: everything kept about one lead as JSON (the export), the
//! erasure of a lead as a list of per-table steps, the list of erased addresses (keyed
//! hashes), and the deletes of the retention job. After an erasure the bytes leave the
//! files: SQLite zeroes deleted content (`secure_delete`) and the WAL is checkpointed
//! and truncated; PostgreSQL vacuums the tables touched.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{Dialect, Store, StoreError, WriteTx, in_tx, is_pg, read, sql, sql_owned};

/// One part of the export: a JSON object per row of a query on the lead (`?1`).
struct Section {
    name: &'static str,
    /// `FROM ... WHERE ... ORDER BY ...`, with the lead's id as `?1`.
    from: &'static str,
    /// `key` or `key=expression`.
    columns: &'static [&'static str],
}

/// Columns that hold JSON text; the export shows them as JSON.
const JSON_COLUMNS: &[&str] = &[
    "properties",
    "traits",
    "context",
    "data",
    "headers",
    "fit_parts",
    "tags",
    "attributes",
    "owners_had",
    "duplicates",
    "error",
    "body",
    "removed",
];

const SECTIONS: &[Section] = &[
    Section {
        name: "lead",
        from: "FROM leads WHERE id = ?1",
        columns: &[
            "id",
            "email",
            "external_id",
            "first_name",
            "last_name",
            "phone",
            "company",
            "title",
            "industry",
            "employees",
            "revenue",
            "country",
            "time_zone",
            "locale",
            "consent_email",
            "consent_email_at",
            "consent_email_source",
            "consent_tracking",
            "consent_tracking_at",
            "consent_tracking_source",
            "stage",
            "stage_since",
            "fit",
            "fit_parts",
            "interest",
            "tags",
            "owner",
            "attributes",
            "topics_left",
            "created_at",
            "updated_at",
        ],
    },
    Section {
        name: "consent_log",
        from: "FROM consent_log WHERE lead_id = ?1 ORDER BY id",
        columns: &["kind", "granted", "at", "source"],
    },
    Section {
        name: "events",
        from: "FROM events e WHERE e.lead_id = ?1 ORDER BY e.seq",
        columns: &[
            "seq=e.seq",
            "message_id=e.message_id",
            "kind=e.kind",
            "name=e.name",
            "properties=e.properties",
            "traits=e.traits",
            "context=e.context",
            "occurred_at=e.occurred_at",
            "received_at=e.received_at",
            "history=e.history",
            "pending=(SELECT COUNT(*) FROM event_queue q WHERE q.seq = e.seq)",
            "error=(SELECT f.error FROM event_failures f WHERE f.seq = e.seq)",
        ],
    },
    Section {
        name: "score_ledger",
        from: "FROM score_ledger WHERE lead_id = ?1 ORDER BY id",
        columns: &[
            "axis",
            "delta",
            "at",
            "source_kind",
            "source",
            "reason",
            "event_seq",
        ],
    },
    Section {
        name: "stage_history",
        from: "FROM stage_history WHERE lead_id = ?1 ORDER BY id",
        columns: &[
            "from_stage",
            "to_stage",
            "at",
            "source_kind",
            "source",
            "reason",
            "event_seq",
        ],
    },
    Section {
        name: "mails",
        from: "FROM outbox o LEFT JOIN mail_content c ON c.outbox_id = o.id \
               WHERE o.lead_id = ?1 ORDER BY o.id",
        columns: &[
            "id=o.id",
            "recipient=COALESCE(c.recipient, o.recipient)",
            "template=o.template",
            "class=o.class",
            "kind=o.kind",
            "status=o.status",
            "reason=o.reason",
            "source=o.source",
            "data=o.data",
            "created_at=o.created_at",
            "finished_at=o.finished_at",
            "message_id=o.message_id",
            "subject=c.subject",
            "text_body=c.text_body",
            "html_body=c.html_body",
            "headers=c.headers",
        ],
    },
    Section {
        name: "enrollments",
        from: "FROM enrollments WHERE lead_id = ?1 ORDER BY id",
        columns: &[
            "stream",
            "status",
            "step",
            "next_due_at",
            "entered_at",
            "updated_at",
            "ended_at",
            "end_reason",
        ],
    },
    Section {
        name: "handoffs",
        from: "FROM handoffs WHERE lead_id = ?1 ORDER BY id",
        columns: &[
            "id",
            "team",
            "reason",
            "source",
            "state",
            "owner",
            "owners_had",
            "duplicates",
            "created_at",
            "assigned_at",
            "due_at",
            "breached_at",
            "answered_at",
            "answered_by",
            "answer_note",
            "business_ms",
        ],
    },
    Section {
        name: "handoff_log",
        from: "FROM handoff_log g JOIN handoffs h ON h.id = g.handoff_id \
               WHERE h.lead_id = ?1 ORDER BY g.id",
        columns: &[
            "handoff_id=g.handoff_id",
            "at=g.at",
            "what=g.what",
            "owner=g.owner",
            "detail=g.detail",
        ],
    },
    Section {
        name: "webhooks",
        from: "FROM webhooks w JOIN handoffs h ON h.id = w.handoff_id \
               WHERE h.lead_id = ?1 ORDER BY w.id",
        columns: &[
            "handoff_id=w.handoff_id",
            "team=w.team",
            "event=w.event",
            "body=w.body",
            "status=w.status",
            "reason=w.reason",
            "attempts=w.attempts",
            "created_at=w.created_at",
            "finished_at=w.finished_at",
        ],
    },
    Section {
        name: "suppressions",
        from: "FROM suppressions s WHERE s.email = (SELECT email FROM leads WHERE id = ?1)",
        columns: &[
            "reason=s.reason",
            "detail=s.detail",
            "created_at=s.created_at",
        ],
    },
    Section {
        name: "topics",
        from: "FROM lead_topics WHERE lead_id = ?1 ORDER BY at",
        columns: &["topic", "state", "at", "source"],
    },
    Section {
        name: "shadow_rules",
        from: "FROM shadow_examples WHERE lead_id = ?1 ORDER BY id",
        columns: &["file", "seq", "source", "action", "message", "at"],
    },
    Section {
        name: "tag_ledger",
        from: "FROM tag_ledger WHERE lead_id = ?1 ORDER BY id",
        columns: &[
            "tag",
            "added",
            "at",
            "source_kind",
            "source",
            "reason",
            "event_seq",
        ],
    },
    Section {
        name: "mail_log",
        from: "FROM mail_log WHERE lead_id = ?1 ORDER BY id",
        columns: &["outbox_id", "at", "what", "actor", "note"],
    },
    Section {
        name: "bounces",
        from: "FROM bounce_log WHERE lead_id = ?1 \
               OR email = (SELECT email FROM leads WHERE id = ?1) ORDER BY id",
        columns: &[
            "at",
            "email",
            "outbox_id",
            "kind",
            "status",
            "diagnostic",
            "source",
            "action",
        ],
    },
    Section {
        name: "visitor_profiles",
        from: "FROM anonymous_profiles WHERE lead_id = ?1 ORDER BY first_seen",
        columns: &[
            "anonymous_id",
            "user_id",
            "first_seen",
            "last_seen",
            "joined_at",
        ],
    },
    Section {
        name: "groups",
        from: "FROM group_members m JOIN company_groups g ON g.group_id = m.group_id \
               WHERE m.lead_id = ?1 ORDER BY m.id",
        columns: &[
            "group_id=m.group_id",
            "traits=g.traits",
            "joined_at=m.joined_at",
        ],
    },
];

/// `json_object('k', expr, ...)` (SQLite) or `json_build_object(...)::text`.
fn object<DB: sqlx::Database>(columns: &[&str]) -> String {
    let pairs: Vec<String> = columns
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, e)) => format!("'{k}', {e}"),
            None => format!("'{c}', {c}"),
        })
        .collect();
    if is_pg::<DB>() {
        format!("json_build_object({})::text", pairs.join(", "))
    } else {
        format!("json_object({})", pairs.join(", "))
    }
}

/// Flag columns: SQLite stores them as 0 and 1, PostgreSQL as booleans.
const FLAG_COLUMNS: &[&str] = &["consent_email", "consent_tracking", "granted"];

/// Turns the JSON text of [`JSON_COLUMNS`] into JSON, and flags into booleans.
fn unfold(mut row: Value) -> Value {
    if let Value::Object(map) = &mut row {
        for key in FLAG_COLUMNS {
            if let Some(n) = map.get(*key).and_then(Value::as_i64) {
                map.insert((*key).to_string(), Value::Bool(n != 0));
            }
        }
        for key in JSON_COLUMNS {
            if let Some(Value::String(text)) = map.get(*key)
                && let Ok(v @ (Value::Object(_) | Value::Array(_))) =
                    serde_json::from_str::<Value>(text)
            {
                map.insert((*key).to_string(), v);
            }
        }
    }
    row
}

/// Which rows an erasure step's statement takes: `?1` is the lead's id, `?2` the time
/// of the erasure (Unix milliseconds) when `with_now`.
pub struct EraseStep {
    /// The table the step empties or clears (named in the erasure's record).
    pub table: &'static str,
    pub statement: &'static str,
    pub with_now: bool,
}

/// What an erasure does, in order (foreign keys first). Rows that only hold personal
/// data are deleted; rows the reports count (stage history, handoffs and their log, the
/// lead itself) are kept with their personal parts cleared. A table added later gets
/// its step here.
pub const ERASE_STEPS: &[EraseStep] = &[
    EraseStep {
        table: "event_failures",
        statement: "DELETE FROM event_failures WHERE seq IN \
                    (SELECT seq FROM events WHERE lead_id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "event_queue",
        statement: "DELETE FROM event_queue WHERE seq IN \
                    (SELECT seq FROM events WHERE lead_id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "events",
        statement: "DELETE FROM events WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "mail_content",
        statement: "DELETE FROM mail_content WHERE outbox_id IN \
                    (SELECT id FROM outbox WHERE lead_id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "mail_log",
        statement: "DELETE FROM mail_log WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "outbox",
        statement: "DELETE FROM outbox WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "enrollments",
        statement: "DELETE FROM enrollments WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "webhooks",
        statement: "DELETE FROM webhooks WHERE handoff_id IN \
                    (SELECT id FROM handoffs WHERE lead_id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "handoff_log",
        statement: "UPDATE handoff_log SET detail = NULL WHERE handoff_id IN \
                    (SELECT id FROM handoffs WHERE lead_id = ?1)",
        with_now: false,
    },
    // Kept for the SLA report; a handoff still waiting ends as expired.
    EraseStep {
        table: "handoffs",
        statement: "UPDATE handoffs SET reason = 'erased', event_seq = NULL, \
                    duplicates = '[]', answer_note = NULL, hook_pending = NULL, \
                    company_key = NULL, domain_key = NULL, next_at = NULL, \
                    state = CASE WHEN state IN ('new', 'open', 'escalated') \
                        THEN 'expired' ELSE state END, \
                    updated_at = ?2 WHERE lead_id = ?1",
        with_now: true,
    },
    EraseStep {
        table: "score_ledger",
        statement: "DELETE FROM score_ledger WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "tag_ledger",
        statement: "DELETE FROM tag_ledger WHERE lead_id = ?1",
        with_now: false,
    },
    // Kept for the funnel report: stages and times, no reasons.
    EraseStep {
        table: "stage_history",
        statement: "UPDATE stage_history SET reason = 'erased', event_seq = NULL \
                    WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "suppressions",
        statement: "DELETE FROM suppressions WHERE email = \
                    (SELECT email FROM leads WHERE id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "consent_log",
        statement: "DELETE FROM consent_log WHERE lead_id = ?1",
        with_now: false,
    },
    // Bounce and complaint reports name the address (and quote it in the answer).
    EraseStep {
        table: "bounce_log",
        statement: "DELETE FROM bounce_log WHERE lead_id = ?1 \
                    OR email = (SELECT email FROM leads WHERE id = ?1)",
        with_now: false,
    },
    // The visitor profiles joined to the lead, and anything still waiting under them.
    EraseStep {
        table: "anonymous_events",
        statement: "DELETE FROM anonymous_events WHERE anonymous_id IN \
                    (SELECT anonymous_id FROM anonymous_profiles WHERE lead_id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "group_members",
        statement: "DELETE FROM group_members WHERE lead_id = ?1 OR anonymous_id IN \
                    (SELECT anonymous_id FROM anonymous_profiles WHERE lead_id = ?1)",
        with_now: false,
    },
    EraseStep {
        table: "anonymous_profiles",
        statement: "DELETE FROM anonymous_profiles WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "lead_topics",
        statement: "DELETE FROM lead_topics WHERE lead_id = ?1",
        with_now: false,
    },
    EraseStep {
        table: "shadow_examples",
        statement: "DELETE FROM shadow_examples WHERE lead_id = ?1",
        with_now: false,
    },
    // The tombstone: stage and times stay, everything about the person goes.
    EraseStep {
        table: "leads",
        statement: "UPDATE leads SET email = 'erased-' || id || '@erased.invalid', \
                    external_id = NULL, first_name = NULL, last_name = NULL, phone = NULL, \
                    company = NULL, title = NULL, industry = NULL, employees = NULL, \
                    revenue = NULL, country = NULL, time_zone = NULL, locale = NULL, \
                    consent_email = FALSE, consent_email_at = NULL, \
                    consent_email_source = NULL, consent_tracking = FALSE, \
                    consent_tracking_at = NULL, consent_tracking_source = NULL, fit = 0, \
                    fit_parts = '{}', interest = 0, tags = '[]', owner = NULL, \
                    attributes = '{}', topics_left = '[]', events = 0, version = version + 1, \
                    erased_at = ?2, updated_at = ?2 WHERE id = ?1",
        with_now: true,
    },
];

/// Erasures committed by this process: intake, which looks leads up before it takes
/// the writer, checks its finds again when this changed in between.
pub static ERASURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tables an erasure or the retention job deletes from (PostgreSQL vacuums them).
const TOUCHED: &[&str] = &[
    "leads",
    "events",
    "event_queue",
    "event_failures",
    "outbox",
    "mail_content",
    "enrollments",
    "webhooks",
    "handoffs",
    "handoff_log",
    "score_ledger",
    "stage_history",
    "suppressions",
    "consent_log",
    "bounce_log",
    "anonymous_events",
    "group_members",
    "anonymous_profiles",
    "lead_topics",
    "shadow_examples",
    "tag_ledger",
    "mail_log",
];

/// One recorded erasure.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ErasureRow {
    pub id: i64,
    pub lead_id: i64,
    pub at: i64,
    pub by_name: String,
    pub reason: String,
    pub removed: String,
}

/// What one retention batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retained {
    pub events: u64,
    pub mail_bodies: u64,
    /// Anonymous visitors never joined to a lead (`retention.anonymous`).
    pub visitors: u64,
}

impl Store {
    /// Everything stored about lead `lead_id`, one JSON array per part (the `lead`
    /// part holds one object); `None` when no such lead.
    pub async fn export_lead(
        &self,
        lead_id: i64,
    ) -> Result<Option<BTreeMap<&'static str, Vec<Value>>>, StoreError> {
        let mut out = BTreeMap::new();
        for s in SECTIONS {
            let rows: Vec<(String,)> = read!(self, |pool, DB| {
                let text = format!("SELECT {} {}", object::<DB>(s.columns), s.from);
                sqlx::query_as(sql_owned::<DB>(text))
                    .bind(lead_id)
                    .fetch_all(pool)
                    .await?
            });
            let rows = rows
                .into_iter()
                .map(|(t,)| {
                    serde_json::from_str(&t)
                        .map(unfold)
                        .map_err(|e| StoreError::Corrupt {
                            what: "export row",
                            detail: format!("{}: {e}", s.name),
                        })
                })
                .collect::<Result<Vec<Value>, _>>()?;
            if s.name == "lead" && rows.is_empty() {
                return Ok(None);
            }
            out.insert(s.name, rows);
        }
        Ok(Some(out))
    }

    /// The id of the (not erased) lead with `email`.
    pub async fn live_lead_id(&self, email: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT id FROM leads WHERE email = ? AND erased_at IS NULL",
            ))
            .bind(email)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(id,)| id))
    }

    /// When each of the given address hashes was last erased.
    pub async fn erased_at_of(
        &self,
        hashes: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        if hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let mut out = HashMap::new();
        for chunk in hashes.chunks(500) {
            let rows: Vec<(String, i64)> = read!(self, |pool, DB| {
                let mut q = sqlx::QueryBuilder::<DB>::new(
                    "SELECT hash, erased_at FROM erased_addresses WHERE hash IN (",
                );
                let mut sep = q.separated(", ");
                for h in chunk {
                    sep.push_bind(h.clone());
                }
                q.push(")");
                q.build_query_as().persistent(false).fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// The recorded erasures, newest first.
    pub async fn erasures(&self, limit: i64) -> Result<Vec<ErasureRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT id, lead_id, at, by_name, reason, removed FROM erasures \
                 ORDER BY id DESC LIMIT ?",
            ))
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// After erasures and retention deletes: SQLite copies the WAL into the database
    /// file and truncates it (tried again while readers hold old pages); PostgreSQL
    /// vacuums the tables touched, so dead rows leave the table files.
    pub async fn scrub_files(&self, tables: &[&str]) -> Result<(), StoreError> {
        match &*self.db {
            super::Db::Sqlite { write_pool, .. } => {
                for _ in 0..50 {
                    let _writer = self.writer.lock().await;
                    let (busy, _, _): (i64, i64, i64) =
                        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                            .fetch_one(write_pool)
                            .await?;
                    if busy == 0 {
                        return Ok(());
                    }
                    drop(_writer);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                tracing::warn!("the WAL could not be truncated: readers kept it busy");
                Ok(())
            }
            super::Db::Postgres { pool } => {
                // Only the tables rows went from (names from the fixed list).
                for t in TOUCHED.iter().filter(|t| tables.contains(t)) {
                    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM {t}")))
                        .execute(pool)
                        .await?;
                }
                Ok(())
            }
        }
    }
}

impl WriteTx {
    /// Turns SQLite's full `secure_delete` on (or back to `fast`) for the writing
    /// connection: deleted rows are overwritten with zeros.
    pub async fn secure_delete(&mut self, full: bool) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Sqlite {
            let text = if full {
                "PRAGMA secure_delete = ON"
            } else {
                "PRAGMA secure_delete = FAST"
            };
            in_tx!(self, |tx, DB| {
                sqlx::query(text).execute(&mut **tx).await?;
            });
        }
        Ok(())
    }

    /// Of `ids`, the leads erased (tombstones).
    pub async fn erased_among(&mut self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut erased = Vec::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(i64,)> = in_tx!(self, |tx, DB| {
                let mut q = sqlx::QueryBuilder::<DB>::new("SELECT id FROM leads WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                q.push(") AND erased_at IS NOT NULL");
                q.build_query_as()
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?
            });
            erased.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(erased)
    }

    /// Mail to the lead that a mailer is sending right now.
    pub async fn mails_sending(&mut self, lead_id: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = in_tx!(self, |tx, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT COUNT(*) FROM outbox WHERE lead_id = ? AND status = 'sending'",
            ))
            .bind(lead_id)
            .fetch_one(&mut **tx)
            .await?
        });
        Ok(n)
    }

    /// Erases lead `lead_id` (see [`ERASE_STEPS`]) at `now` (ms): keeps `channel` as
    /// its first source for the funnel report, puts `hash` on the list of erased
    /// addresses and records the erasure. Returns the rows removed or cleared per
    /// table.
    pub async fn erase_lead(
        &mut self,
        lead_id: i64,
        now: i64,
        channel: &str,
        hash: &str,
        by: &str,
        reason: &str,
    ) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>("UPDATE leads SET first_source = ? WHERE id = ?"))
                .bind(channel)
                .bind(lead_id)
                .execute(&mut **tx)
                .await?;
        });
        let mut removed = BTreeMap::new();
        for step in ERASE_STEPS {
            let n = in_tx!(self, |tx, DB| {
                let q = sqlx::query(sql::<DB>(step.statement)).bind(lead_id);
                let q = if step.with_now { q.bind(now) } else { q };
                q.execute(&mut **tx).await?.rows_affected()
            });
            removed.insert(step.table, n);
        }
        // Other leads' handoffs list the lead among the colleagues' leads at the same
        // company (`duplicates`): it leaves those lists.
        let n = in_tx!(self, |tx, DB| {
            let text = if super::is_pg::<DB>() {
                "UPDATE handoffs SET duplicates = COALESCE((SELECT jsonb_agg(e) \
                 FROM jsonb_array_elements(handoffs.duplicates::jsonb) e \
                 WHERE (e->>'id')::bigint IS DISTINCT FROM ?), '[]'::jsonb)::text \
                 WHERE lead_id <> ? AND duplicates <> '[]' \
                 AND duplicates::jsonb @> jsonb_build_array(jsonb_build_object('id', ?::bigint))"
            } else {
                "UPDATE handoffs SET duplicates = (SELECT json_group_array(json(value)) \
                 FROM json_each(handoffs.duplicates) WHERE json_extract(value, '$.id') IS NOT ?) \
                 WHERE lead_id <> ? AND duplicates <> '[]' AND EXISTS (SELECT 1 \
                 FROM json_each(handoffs.duplicates) WHERE json_extract(value, '$.id') = ?)"
            };
            sqlx::query(sql::<DB>(text))
                .bind(lead_id)
                .bind(lead_id)
                .bind(lead_id)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        });
        removed.insert("handoffs of other leads", n);
        let record = serde_json::to_string(&removed).expect("counts serialise");
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO erased_addresses (hash, erased_at) VALUES (?, ?) \
                 ON CONFLICT (hash) DO UPDATE SET erased_at = excluded.erased_at",
            ))
            .bind(hash)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql::<DB>(
                "INSERT INTO erasures (lead_id, at, by_name, reason, removed) \
                 VALUES (?, ?, ?, ?, ?)",
            ))
            .bind(lead_id)
            .bind(now)
            .bind(by)
            .bind(reason)
            .bind(&record)
            .execute(&mut **tx)
            .await?;
        });
        Ok(removed)
    }

    /// Deletes up to `limit` processed events stored before `before` (ms): first the
    /// leads whose first event goes keep its channel sources, and each lead's count of
    /// processed events goes down. Returns how many were deleted.
    pub async fn delete_old_events(&mut self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let seqs: Vec<(i64,)> = in_tx!(self, |tx, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT seq FROM events WHERE received_at < ? \
                 AND seq NOT IN (SELECT seq FROM event_queue) ORDER BY seq LIMIT ?",
            ))
            .bind(before)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?
        });
        if seqs.is_empty() {
            return Ok(0);
        }
        let (lo, hi) = (seqs[0].0, seqs[seqs.len() - 1].0);
        // The batch is the events in [lo, hi] stored before `before` and not pending.
        const BATCH: &str = "SELECT seq FROM events WHERE seq >= ?1 AND seq <= ?2 \
             AND received_at < ?3 AND seq NOT IN (SELECT seq FROM event_queue)";
        let n = in_tx!(self, |tx, DB| {
            let first_source = if is_pg::<DB>() {
                "COALESCE(NULLIF(trim(f.context::jsonb #>> '{campaign,source}'), ''), \
                 NULLIF(trim(f.properties::jsonb ->> 'utm_source'), ''), '')"
            } else {
                "COALESCE(NULLIF(trim(CAST(json_extract(f.context, '$.campaign.source') AS TEXT)), ''), \
                 NULLIF(trim(CAST(json_extract(f.properties, '$.utm_source') AS TEXT)), ''), '')"
            };
            sqlx::query(sql_owned::<DB>(format!(
                "UPDATE leads SET first_source = (SELECT {first_source} FROM events f \
                    WHERE f.lead_id = leads.id ORDER BY f.occurred_at, f.seq LIMIT 1) \
                 WHERE first_source IS NULL AND id IN \
                    (SELECT lead_id FROM events WHERE seq IN ({BATCH}))"
            )))
            .bind(lo)
            .bind(hi)
            .bind(before)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql_owned::<DB>(format!(
                "UPDATE leads SET events = events - \
                    (SELECT COUNT(*) FROM events e WHERE e.lead_id = leads.id \
                     AND e.seq IN ({BATCH})) \
                 WHERE id IN (SELECT lead_id FROM events WHERE seq IN ({BATCH}))"
            )))
            .bind(lo)
            .bind(hi)
            .bind(before)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql_owned::<DB>(format!(
                "DELETE FROM event_failures WHERE seq IN ({BATCH})"
            )))
            .bind(lo)
            .bind(hi)
            .bind(before)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql_owned::<DB>(format!(
                "DELETE FROM events WHERE seq IN ({BATCH})"
            )))
            .bind(lo)
            .bind(hi)
            .bind(before)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Deletes up to `limit` stored mail bodies of mails finished before `before`
    /// (ms); the outbox rows (state, times, template) stay.
    pub async fn delete_old_mail_bodies(
        &mut self,
        before: i64,
        limit: i64,
    ) -> Result<u64, StoreError> {
        Ok(in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "DELETE FROM mail_content WHERE outbox_id IN (SELECT id FROM outbox \
                 WHERE finished_at < ? AND status <> 'queued' AND status <> 'sending' \
                 AND id IN (SELECT outbox_id FROM mail_content) ORDER BY id LIMIT ?)",
            ))
            .bind(before)
            .bind(limit)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        }))
    }

    /// Of new leads `(id, address hash)`, those whose address was erased before start
    /// with their mail consent withdrawn ([`crate::domain::lead::RENEW_SOURCE`]).
    /// Returns how many.
    pub async fn renew_consent_of_erased(
        &mut self,
        leads: &[(i64, String)],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut erased = std::collections::HashSet::new();
        for chunk in leads.chunks(500) {
            let rows: Vec<(String,)> = in_tx!(self, |tx, DB| {
                let mut q = sqlx::QueryBuilder::<DB>::new(
                    "SELECT hash FROM erased_addresses WHERE hash IN (",
                );
                let mut sep = q.separated(", ");
                for (_, h) in chunk {
                    sep.push_bind(h.clone());
                }
                q.push(")");
                q.build_query_as()
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?
            });
            erased.extend(rows.into_iter().map(|(h,)| h));
        }
        let mut n = 0;
        for (id, _) in leads.iter().filter(|(_, h)| erased.contains(h)) {
            n += in_tx!(self, |tx, DB| {
                sqlx::query(sql::<DB>(
                    "UPDATE leads SET consent_email = FALSE, consent_email_at = ?, \
                     consent_email_source = ? WHERE id = ?",
                ))
                .bind(now)
                .bind(crate::domain::lead::RENEW_SOURCE)
                .bind(*id)
                .execute(&mut **tx)
                .await?
                .rows_affected()
            });
        }
        Ok(n)
    }

    /// Records a run of the retention job.
    pub async fn record_retention(&mut self, now: i64, done: Retained) -> Result<(), StoreError> {
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO retention_runs (at, events, mail_bodies) VALUES (?, ?, ?)",
            ))
            .bind(now)
            .bind(done.events as i64)
            .bind(done.mail_bodies as i64)
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }
}

impl Store {
    /// When the retention job last ran.
    pub async fn last_retention_run(&self) -> Result<Option<i64>, StoreError> {
        let row: (Option<i64>,) = read!(self, |pool, DB| {
            sqlx::query_as("SELECT MAX(at) FROM retention_runs")
                .fetch_one(pool)
                .await?
        });
        Ok(row.0)
    }
}

/// Tables that hold nothing about a person, so an erasure leaves them alone. A new
/// table goes either here or into [`ERASE_STEPS`] (a test checks every copied table).
pub const NOT_PERSONAL: &[&str] = &[
    // Company traits of an account (`group`), not of a person.
    "company_groups",
    "counters",
    "job_runs",
    "erased_addresses",
    "erasures",
    "retention_runs",
    // Counts per rule call site, with no lead.
    "shadow_counts",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_erased_or_holds_nothing_personal() {
        for table in super::super::copy::TABLES {
            assert!(
                ERASE_STEPS.iter().any(|s| s.table == table.name)
                    || NOT_PERSONAL.contains(&table.name),
                "table {} has no erasure step: add one to ERASE_STEPS, or name it in \
                 NOT_PERSONAL",
                table.name
            );
        }
    }

    #[test]
    fn every_step_names_its_parameters() {
        for s in ERASE_STEPS {
            assert!(s.statement.contains("?1"), "{}", s.table);
            assert_eq!(s.statement.contains("?2"), s.with_now, "{}", s.table);
        }
    }

    #[test]
    fn json_text_columns_become_json() {
        let row = unfold(serde_json::json!({"traits": "{\"a\":1}", "name": "[x", "granted": 1}));
        assert_eq!(row["traits"]["a"], 1);
        assert_eq!(row["name"], "[x");
        assert_eq!(row["granted"], true);
    }
}
