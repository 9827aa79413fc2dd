//! The mail outbox, stream enrollments and the suppression list.
//!
//! Mail intents are inserted by [`build::mails`] in the transaction of the change that
//! caused them. The delivery worker claims due rows (`queued` -> `sending`) in a write
//! transaction that checks the processing lease, sends with no transaction open, and
//! records each outcome afterwards. Rows left `sending` by a process that died are
//! queued again by the next lease holder ([`WriteTx::requeue_claims`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::{Postgres, QueryBuilder, Sqlite, postgres::PgRow, sqlite::SqliteRow};

use super::{
    Dialect, Statements, Store, StoreError, WriteTx, for_dialect, in_tx, is_pg, read, rounds,
    rows_per_statement, sql, sql_owned, values,
};
use crate::clock::to_ms;
use crate::domain::{Changes, MailClass, Repeat, StreamChange};

/// What the store needs to enroll a lead in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrollParams {
    /// Delay of the first step.
    pub first_after_ms: i64,
    /// How long after leaving the stream a lead may join again.
    pub reentry_ms: i64,
}

/// One outbox row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OutboxRow {
    pub id: i64,
    pub lead_id: i64,
    pub email: String,
    pub template: String,
    pub class: String,
    pub kind: String,
    pub dedupe_key: Option<String>,
    pub enrollment_id: Option<i64>,
    pub step: Option<i64>,
    pub data: String,
    pub source: String,
    pub event_seq: Option<i64>,
    pub status: String,
    pub reason: Option<String>,
    pub attempts: i64,
    pub tries: i64,
    pub first_try_at: Option<i64>,
    pub created_at: i64,
    pub due_at: i64,
    pub finished_at: Option<i64>,
    pub message_id: Option<String>,
}

impl OutboxRow {
    pub fn class(&self) -> MailClass {
        MailClass::parse(&self.class).unwrap_or(MailClass::Marketing)
    }
}

const OUTBOX_COLUMNS: &str = "o.id, o.lead_id, COALESCE(o.recipient, l.email) AS email, o.template, o.class, o.kind, \
    o.dedupe_key, o.enrollment_id, o.step, o.data, o.source, o.event_seq, o.status, o.reason, \
    o.attempts, o.tries, o.first_try_at, o.created_at, o.due_at, o.finished_at, o.message_id";

/// A mail as sent, kept for audit.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MailContent {
    pub recipient: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    /// JSON object of the headers nurtured set.
    pub headers: String,
}

/// What became of a claimed mail.
#[derive(Debug, Clone)]
pub enum Finish {
    Sent {
        id: i64,
        message_id: String,
        content: MailContent,
    },
    /// Not now (frequency cap, send window, a temporary SMTP failure): queued again.
    /// `retry` when the SMTP server was tried (counts towards the retry age).
    Later {
        id: i64,
        until: i64,
        reason: String,
        retry: bool,
    },
    Failed {
        id: i64,
        reason: String,
    },
    Suppressed {
        id: i64,
        reason: String,
    },
}

/// What a finished stream mail means for its enrollment.
#[derive(Debug, Clone, Copy)]
pub enum StepDone {
    /// Go on with `next_step` at `next_due`, or complete the stream when `None`.
    Advance {
        enrollment_id: i64,
        next_step: i64,
        next_due: Option<i64>,
    },
    /// Send the same step again once the stream runs (it was held back by quarantine).
    Repeat { enrollment_id: i64 },
}

/// A stream step that is due.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueStep {
    pub enrollment_id: i64,
    pub lead_id: i64,
    pub stream: String,
    pub step: i64,
}

/// A stream step to put in the outbox.
#[derive(Debug, Clone)]
pub struct StepMail {
    pub due: DueStep,
    /// `None`: the stream has no such step (any more); it is complete.
    pub template: Option<String>,
}

/// See [`Store::send_gate`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Gate {
    pub consent_email: bool,
    pub stage: String,
    pub suppressed: Option<String>,
    pub enrollment: Option<String>,
    /// JSON array of the topics the lead left.
    pub topics_left: String,
}

/// One of a lead's stream memberships.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EnrollmentRow {
    pub id: i64,
    pub stream: String,
    pub status: String,
    pub step: i64,
    pub next_due_at: Option<i64>,
    pub entered_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

/// Outbox counts for `/v1/stats`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct MailCounts {
    /// Waiting to be sent (including deferred and being sent).
    pub mails_queued: i64,
    pub mails_sent: i64,
    pub mails_failed: i64,
    pub mails_suppressed: i64,
    /// Suppressed mails by reason.
    pub suppressed_by_reason: BTreeMap<String, i64>,
    /// Addresses on the suppression list.
    pub addresses_suppressed: i64,
}

/// Which mails to list.
#[derive(Debug, Clone, Default)]
pub struct MailFilter {
    pub status: Option<String>,
    pub lead_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// What the last moment before sending needs to know about a lead (and a stream
    /// membership): mail consent, stage, why its address is suppressed, the
    /// membership's state. `None` when the lead is gone.
    pub async fn send_gate(
        &self,
        lead_id: i64,
        enrollment_id: Option<i64>,
    ) -> Result<Option<Gate>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT l.consent_email, l.stage, l.topics_left, \
                        (SELECT reason FROM suppressions s WHERE s.email = l.email) AS suppressed, \
                        (SELECT status FROM enrollments e WHERE e.id = ?) AS enrollment \
                 FROM leads l WHERE l.id = ?",
            ))
            .bind(enrollment_id)
            .bind(lead_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// The earliest time a queued mail or a stream step is due.
    pub async fn next_mail_due(&self) -> Result<Option<i64>, StoreError> {
        let (a, b): (Option<i64>, Option<i64>) = read!(self, |pool, DB| {
            sqlx::query_as(
                "SELECT (SELECT MIN(due_at) FROM outbox WHERE status = 'queued'), \
                        (SELECT MIN(next_due_at) FROM enrollments WHERE status = 'active')",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(a.into_iter().chain(b).min())
    }

    /// Stream steps due at `now`.
    pub async fn due_steps(&self, now: i64, limit: i64) -> Result<Vec<DueStep>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT id AS enrollment_id, lead_id, stream, step FROM enrollments \
                 WHERE status = 'active' AND next_due_at <= ? ORDER BY next_due_at LIMIT ?",
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Marketing mails sent to each lead since `since`: (count, oldest send).
    pub async fn marketing_sent_since(
        &self,
        lead_ids: &[i64],
        since: i64,
    ) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
        let head = format!(
            "SELECT lead_id, COUNT(*), MIN(finished_at) FROM outbox \
             WHERE status = 'sent' AND class = 'marketing' AND finished_at > {since} \
             AND lead_id IN "
        );
        let rows: Vec<(i64, i64, i64)> =
            self.fetch_in(&head, lead_ids, " GROUP BY lead_id").await?;
        Ok(rows
            .into_iter()
            .map(|(l, n, oldest)| (l, (n, oldest)))
            .collect())
    }

    /// Which of `emails` are on the suppression list, with the reason.
    pub async fn suppressed_among(
        &self,
        emails: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let head = "SELECT email, reason FROM suppressions WHERE email IN ";
        let rows: Vec<(String, String)> = self.fetch_in(head, emails, "").await?;
        Ok(rows.into_iter().collect())
    }

    /// Name, properties and time (ms) of the given events (what trigger mails refer to).
    pub async fn events_by_seq(
        &self,
        seqs: &[i64],
    ) -> Result<HashMap<i64, (String, serde_json::Value, i64)>, StoreError> {
        let head = "SELECT seq, name, properties, occurred_at FROM events WHERE seq IN ";
        let rows: Vec<(i64, String, String, i64)> = self.fetch_in(head, seqs, "").await?;
        Ok(rows
            .into_iter()
            .map(|(seq, name, properties, at)| {
                let props = serde_json::from_str(&properties).unwrap_or(serde_json::Value::Null);
                (seq, (name, props, at))
            })
            .collect())
    }

    /// Status of the given enrollments.
    pub async fn enrollment_statuses(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, String>, StoreError> {
        let head = "SELECT id, status FROM enrollments WHERE id IN ";
        let rows: Vec<(i64, String)> = self.fetch_in(head, ids, "").await?;
        Ok(rows.into_iter().collect())
    }

    /// The rows of `head (k1, k2, ...) tail` for all `keys`, in as many statements as
    /// the parameter limit needs.
    async fn fetch_in<K, R>(&self, head: &str, keys: &[K], tail: &str) -> Result<Vec<R>, StoreError>
    where
        K: Clone
            + Send
            + 'static
            + for<'q> sqlx::Encode<'q, Sqlite>
            + sqlx::Type<Sqlite>
            + for<'q> sqlx::Encode<'q, Postgres>
            + sqlx::Type<Postgres>,
        R: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let mut out = Vec::new();
        for chunk in keys.chunks(rows_per_statement(1)) {
            read!(self, |pool, DB| {
                let mut q = QueryBuilder::<DB>::new(head);
                q.push("(");
                let mut sep = q.separated(", ");
                for k in chunk {
                    sep.push_bind(k.clone());
                }
                q.push(")").push(tail);
                out.extend(
                    q.build_query_as::<R>()
                        .persistent(false)
                        .fetch_all(pool)
                        .await?,
                );
            });
        }
        Ok(out)
    }

    pub async fn enrollments_of(&self, lead_id: i64) -> Result<Vec<EnrollmentRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT id, stream, status, step, next_due_at, entered_at, ended_at, end_reason \
                 FROM enrollments WHERE lead_id = ? ORDER BY id",
            ))
            .bind(lead_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Mails, newest first.
    pub async fn list_mails(&self, filter: &MailFilter) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            let mut q = QueryBuilder::<DB>::new(format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox o JOIN leads l ON l.id = o.lead_id WHERE 1 = 1"
            ));
            if let Some(s) = &filter.status {
                q.push(" AND o.status = ").push_bind(s.clone());
            }
            if let Some(l) = filter.lead_id {
                // The mails to the lead; notifications about it are listed with its handoffs.
                q.push(" AND o.lead_id = ")
                    .push_bind(l)
                    .push(" AND o.class <> 'internal'");
            }
            q.push(" ORDER BY o.id DESC LIMIT ")
                .push_bind(filter.limit.max(1));
            q.build_query_as().persistent(false).fetch_all(pool).await?
        }))
    }

    /// One mail, with its content once sent.
    pub async fn mail(
        &self,
        id: i64,
    ) -> Result<Option<(OutboxRow, Option<MailContent>)>, StoreError> {
        let text = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o JOIN leads l ON l.id = o.lead_id WHERE o.id = ?"
        );
        let row: Option<OutboxRow> = read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(text))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let content: Option<MailContent> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT recipient, subject, text_body, html_body, headers FROM mail_content \
                 WHERE outbox_id = ?",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(Some((row, content)))
    }

    pub async fn mail_counts(&self) -> Result<MailCounts, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = read!(self, |pool, DB| {
            sqlx::query_as(
                "SELECT status, CASE WHEN status = 'suppressed' THEN reason END, COUNT(*) \
                 FROM outbox GROUP BY 1, 2",
            )
            .fetch_all(pool)
            .await?
        });
        let mut c = MailCounts::default();
        for (status, reason, n) in rows {
            match status.as_str() {
                "queued" | "sending" => c.mails_queued += n,
                "sent" => c.mails_sent += n,
                "failed" => c.mails_failed += n,
                _ => {
                    c.mails_suppressed += n;
                    *c.suppressed_by_reason
                        .entry(reason.unwrap_or_default())
                        .or_default() += n;
                }
            }
        }
        let (n,): (i64,) = read!(self, |pool, DB| {
            sqlx::query_as("SELECT COUNT(*) FROM suppressions")
                .fetch_one(pool)
                .await?
        });
        c.addresses_suppressed = n;
        Ok(c)
    }
}

impl WriteTx {
    /// Queues again the mails claimed by anyone but `owner` (a process that stopped or
    /// lost the lease) and, with `ids`, those of `owner`'s that have no outcome (a pass
    /// that failed). Call only while holding the lease.
    pub async fn requeue_claims(&mut self, owner: &str, ids: &[i64]) -> Result<u64, StoreError> {
        in_tx!(self, |tx, DB| {
            // `IS NOT` is SQLite's null-safe `<>`; PostgreSQL spells it `IS DISTINCT FROM`.
            let mut n = sqlx::query(sql::<DB>(if is_pg::<DB>() {
                "UPDATE outbox SET status = 'queued', claimed_by = NULL, \
                 reason = 'interrupted while sending; sent again' \
                 WHERE status = 'sending' AND claimed_by IS DISTINCT FROM ?"
            } else {
                "UPDATE outbox SET status = 'queued', claimed_by = NULL, \
                 reason = 'interrupted while sending; sent again' \
                 WHERE status = 'sending' AND claimed_by IS NOT ?"
            }))
            .bind(owner)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            for chunk in ids.chunks(rows_per_statement(1)) {
                let mut q = QueryBuilder::<DB>::new(
                    "UPDATE outbox SET status = 'queued', claimed_by = NULL, \
                     reason = 'the delivery pass failed; sent again' \
                     WHERE status = 'sending' AND id IN (",
                );
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                q.push(")");
                n += q
                    .build()
                    .persistent(false)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
            }
            Ok(n)
        })
    }

    /// Claims up to `limit` mails due at `now` for `owner`.
    pub async fn claim_mails(
        &mut self,
        owner: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        in_tx!(self, |tx, DB| {
            // PostgreSQL: rows another transaction is claiming are passed over, so one
            // mail is never handed to two daemons.
            let ids: Vec<(i64,)> = sqlx::query_as(sql::<DB>(if is_pg::<DB>() {
                "UPDATE outbox SET status = 'sending', claimed_by = ?, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE status = 'queued' AND due_at <= ? \
                 ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING id"
            } else {
                "UPDATE outbox SET status = 'sending', claimed_by = ?, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE status = 'queued' AND due_at <= ? \
                 ORDER BY due_at, id LIMIT ?) RETURNING id"
            }))
            .bind(owner)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut q = QueryBuilder::<DB>::new(format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox o JOIN leads l ON l.id = o.lead_id WHERE o.id IN ("
            ));
            let mut sep = q.separated(", ");
            for (id,) in &ids {
                sep.push_bind(*id);
            }
            q.push(") ORDER BY o.due_at, o.id");
            Ok(q.build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?)
        })
    }

    /// Records what became of claimed mails, what that means for their streams, and
    /// addresses to suppress: `(email, reason, detail)`.
    pub async fn finish_mails(
        &mut self,
        done: &[Finish],
        steps: &[StepDone],
        suppress: &[(String, String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx, DB| {
            for f in done {
                let q = match f {
                    Finish::Sent {
                        id,
                        message_id,
                        content,
                    } => {
                        sqlx::query(sql::<DB>(if is_pg::<DB>() {
                            "INSERT INTO mail_content \
                             (outbox_id, recipient, subject, text_body, html_body, headers) \
                             VALUES (?, ?, ?, ?, ?, ?) \
                             ON CONFLICT (outbox_id) DO UPDATE SET recipient = excluded.recipient, \
                             subject = excluded.subject, text_body = excluded.text_body, \
                             html_body = excluded.html_body, headers = excluded.headers"
                        } else {
                            "INSERT OR REPLACE INTO mail_content \
                             (outbox_id, recipient, subject, text_body, html_body, headers) \
                             VALUES (?, ?, ?, ?, ?, ?)"
                        }))
                        .bind(id)
                        .bind(&content.recipient)
                        .bind(&content.subject)
                        .bind(&content.text_body)
                        .bind(&content.html_body)
                        .bind(&content.headers)
                        .execute(&mut **tx)
                        .await?;
                        sqlx::query(sql::<DB>(
                            "UPDATE outbox SET status = 'sent', finished_at = ?, message_id = ?, \
                             reason = NULL WHERE id = ? AND status = 'sending'",
                        ))
                        .bind(now)
                        .bind(message_id)
                        .bind(id)
                    }
                    Finish::Later {
                        id,
                        until,
                        reason,
                        retry,
                    } => sqlx::query(sql::<DB>(
                        "UPDATE outbox SET status = 'queued', due_at = ?, reason = ?, claimed_by = NULL, \
                         tries = tries + ?, first_try_at = CASE WHEN ? THEN COALESCE(first_try_at, ?) \
                         ELSE first_try_at END WHERE id = ? AND status = 'sending'",
                    ))
                    .bind(until)
                    .bind(reason)
                    .bind(i64::from(*retry))
                    .bind(*retry)
                    .bind(now)
                    .bind(id),
                    Finish::Failed { id, reason } => sqlx::query(sql::<DB>(
                        "UPDATE outbox SET status = 'failed', finished_at = ?, reason = ? \
                         WHERE id = ? AND status = 'sending'",
                    ))
                    .bind(now)
                    .bind(reason)
                    .bind(id),
                    Finish::Suppressed { id, reason } => sqlx::query(sql::<DB>(
                        "UPDATE outbox SET status = 'suppressed', finished_at = ?, reason = ? \
                         WHERE id = ? AND status = 'sending'",
                    ))
                    .bind(now)
                    .bind(reason)
                    .bind(id),
                };
                q.execute(&mut **tx).await?;
            }
            for s in steps {
                let q = match *s {
                    StepDone::Advance {
                        enrollment_id,
                        next_step,
                        next_due: Some(due),
                    } => sqlx::query(sql::<DB>(
                        "UPDATE enrollments SET step = ?, next_due_at = ?, updated_at = ? \
                         WHERE id = ? AND status IN ('active', 'paused')",
                    ))
                    .bind(next_step)
                    .bind(due)
                    .bind(now)
                    .bind(enrollment_id),
                    StepDone::Advance {
                        enrollment_id,
                        next_step,
                        next_due: None,
                    } => sqlx::query(sql::<DB>(
                        "UPDATE enrollments SET step = ?, status = 'completed', next_due_at = NULL, \
                         ended_at = ?, end_reason = 'all steps sent', updated_at = ? \
                         WHERE id = ? AND status IN ('active', 'paused')",
                    ))
                    .bind(next_step)
                    .bind(now)
                    .bind(now)
                    .bind(enrollment_id),
                    // The lead is in quarantine or has not consented (yet): the membership
                    // waits (paused) and sends this step when it resumes.
                    StepDone::Repeat { enrollment_id } => sqlx::query(sql::<DB>(
                        "UPDATE enrollments SET status = 'paused', next_due_at = ?, updated_at = ? \
                         WHERE id = ? AND status IN ('active', 'paused')",
                    ))
                    .bind(now)
                    .bind(now)
                    .bind(enrollment_id),
                };
                q.execute(&mut **tx).await?;
            }
            for (email, reason, detail) in suppress {
                sqlx::query(sql::<DB>(
                    "INSERT INTO suppressions (email, reason, detail, created_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (email) DO NOTHING",
                ))
                .bind(email)
                .bind(reason)
                .bind(detail)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
        });
        Ok(())
    }

    /// Puts due stream steps in the outbox (or completes streams that have no such
    /// step); the step waits for its mail's outcome before the next is timed. Returns
    /// the number of mails queued.
    pub async fn enqueue_steps(
        &mut self,
        steps: &[StepMail],
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut queued = 0;
        in_tx!(self, |tx, DB| {
            for s in steps {
                let d = &s.due;
                // Only if the step is still due (another pass may have queued it since it
                // was read): taking next_due_at away is the claim on the step.
                let claimed = sqlx::query(sql::<DB>(
                    "UPDATE enrollments SET next_due_at = NULL, updated_at = ? WHERE id = ? \
                     AND status = 'active' AND step = ? AND next_due_at IS NOT NULL AND next_due_at <= ?",
                ))
                .bind(now)
                .bind(d.enrollment_id)
                .bind(d.step)
                .bind(now)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    continue;
                }
                match &s.template {
                    Some(template) => {
                        sqlx::query(sql::<DB>(if is_pg::<DB>() {
                            "INSERT INTO outbox (idem_key, lead_id, template, class, kind, \
                             enrollment_id, step, source, created_at, due_at) \
                             VALUES (?, ?, ?, 'marketing', 'stream', ?, ?, ?, ?, ?) \
                             ON CONFLICT DO NOTHING"
                        } else {
                            "INSERT OR IGNORE INTO outbox (idem_key, lead_id, template, class, kind, \
                             enrollment_id, step, source, created_at, due_at) \
                             VALUES (?, ?, ?, 'marketing', 'stream', ?, ?, ?, ?, ?)"
                        }))
                        // A step held back by quarantine is queued again after the pause,
                        // so each queuing has a key of its own; the claim above keeps a step
                        // from being queued twice otherwise.
                        .bind(format!(
                            "stream:{}:{}:{}",
                            d.enrollment_id,
                            d.step,
                            uuid::Uuid::new_v4()
                        ))
                        .bind(d.lead_id)
                        .bind(template)
                        .bind(d.enrollment_id)
                        .bind(d.step)
                        .bind(format!("stream:{}", d.stream))
                        .bind(now)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                        queued += 1;
                    }
                    None => {
                        sqlx::query(sql::<DB>(
                            "UPDATE enrollments SET status = 'completed', next_due_at = NULL, \
                             ended_at = ?, end_reason = 'all steps sent', updated_at = ? WHERE id = ?",
                        ))
                        .bind(now)
                        .bind(now)
                        .bind(d.enrollment_id)
                        .execute(&mut **tx)
                        .await?;
                    }
                }
            }
        });
        Ok(queued)
    }
}

/// Statements that queue mails and change stream memberships.
pub mod build {
    use super::*;

    /// The mails and stream changes of several units of work: `(lead id, event seq,
    /// changes)`. `streams` gives each stream's enrollment parameters. One statement
    /// per round and kind (see [`rounds`]), so a group of thousands of leads costs a
    /// few statements, and each lead's mails and changes still apply in order.
    pub fn mails(
        dialect: Dialect,
        items: &[(i64, Option<i64>, &Changes)],
        streams: &HashMap<String, EnrollParams>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Statements {
        let now = to_ms(now);
        let mut mails = Vec::new();
        let mut changes_of: Vec<(i64, &StreamChange)> = Vec::new();
        for (lead, seq, changes) in items {
            for (i, (m, source)) in changes.mails.iter().enumerate() {
                let kind = if m.opt_in { "optin" } else { "trigger" };
                let origin = seq.map_or_else(|| format!("t{now}"), |s| format!("e{s}"));
                // The same mail (lead, template, key) within the window: not again.
                // Suppressed and failed ones do not count, so a mail held back by
                // quarantine or missing consent, or refused by the mail server, can still
                // go out later when a rule asks again.
                let cut = match m.repeat {
                    Repeat::Once => Some(now.saturating_sub(i64::MAX / 4)),
                    Repeat::Every(ms) => Some(now.saturating_sub(ms)),
                    Repeat::Always => None,
                };
                mails.push((
                    *lead,
                    MailRow {
                        idem_key: format!("{kind}:{lead}:{}:{}:{origin}:{i}", m.template, m.key),
                        template: m.template.clone(),
                        class: m.class.as_str(),
                        kind,
                        key: m.key.clone(),
                        data: serde_json::Value::Object(m.data.clone()).to_string(),
                        source: source.to_string(),
                        seq: *seq,
                        cut,
                    },
                ));
            }
            for change in &changes.streams {
                // A change right after the same change of the same lead does nothing.
                if changes_of.last() != Some(&(*lead, change)) {
                    changes_of.push((*lead, change));
                }
            }
        }
        for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            for round in rounds(mails) {
                for chunk in round.chunks(rows_per_statement(10)) {
                    let mut q = QueryBuilder::<DB>::new(
                        "WITH v (idem_key, lead_id, template, class, kind, dedupe_key, data, source, \
                         event_seq, cut) AS (",
                    );
                    values(&mut q, chunk, |row, (lead, m)| {
                        row.push_bind(m.idem_key.clone())
                            .push_bind(*lead)
                            .push_bind(m.template.clone())
                            .push_bind(m.class)
                            .push_bind(m.kind)
                            .push_bind(m.key.clone())
                            .push_bind(m.data.clone())
                            .push_bind(m.source.clone())
                            .push_bind(m.seq)
                            .push_bind(m.cut);
                    });
                    q.push(if is_pg::<DB>() {
                        ") INSERT INTO outbox (idem_key, lead_id, template, class, kind, \
                         dedupe_key, data, source, event_seq, created_at, due_at) \
                         SELECT idem_key, lead_id, template, class, kind, dedupe_key, data, source, \
                         event_seq, "
                    } else {
                        ") INSERT OR IGNORE INTO outbox (idem_key, lead_id, template, class, kind, \
                         dedupe_key, data, source, event_seq, created_at, due_at) \
                         SELECT idem_key, lead_id, template, class, kind, dedupe_key, data, source, \
                         event_seq, "
                    })
                    .push_bind(now)
                    .push(", ")
                    .push_bind(now)
                    .push(
                        " FROM v WHERE v.cut IS NULL OR NOT EXISTS (SELECT 1 FROM outbox o \
                         WHERE o.lead_id = v.lead_id AND o.template = v.template \
                         AND o.dedupe_key = v.dedupe_key \
                         AND o.status NOT IN ('suppressed', 'failed') \
                         AND o.created_at > v.cut)",
                    );
                    if is_pg::<DB>() {
                        q.push(" ON CONFLICT DO NOTHING");
                    }
                    out.push(q);
                }
            }
            for round in rounds(changes_of) {
                stream_changes(&mut out, &round, streams, now);
            }
            out
        })
    }

    /// A mail to queue, as bound into the insert.
    struct MailRow {
        idem_key: String,
        template: String,
        class: &'static str,
        kind: &'static str,
        key: String,
        data: String,
        source: String,
        seq: Option<i64>,
        /// Not if the same mail was queued after this time (`None`: always).
        cut: Option<i64>,
    }

    /// The statements of one round of stream changes (at most one per lead).
    fn stream_changes<DB: sqlx::Database>(
        out: &mut Vec<QueryBuilder<DB>>,
        round: &[(i64, &StreamChange)],
        streams: &HashMap<String, EnrollParams>,
        now: i64,
    ) where
        for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        for<'a> Option<String>: sqlx::Encode<'a, DB>,
    {
        let mut enroll: Vec<(i64, &str, &EnrollParams)> = Vec::new();
        let mut pause: Vec<(i64, &str)> = Vec::new();
        let mut exit: Vec<(i64, Option<&str>, &str)> = Vec::new();
        for (lead, change) in round {
            match change {
                StreamChange::Enroll { stream } => match streams.get(stream) {
                    Some(p) => enroll.push((*lead, stream, p)),
                    None => {
                        tracing::warn!(%stream, lead, "enroll: no such stream (any more); ignored");
                    }
                },
                StreamChange::Pause { stream } => pause.push((*lead, stream)),
                StreamChange::Exit { stream, reason } => {
                    exit.push((*lead, stream.as_deref(), reason));
                }
            }
        }
        for chunk in enroll.chunks(rows_per_statement(4)) {
            // A paused membership resumes where it stopped.
            let mut q = QueryBuilder::<DB>::new("WITH v (lead_id, stream) AS (");
            values(&mut q, chunk, |row, (lead, stream, _)| {
                row.push_bind(*lead).push_bind(stream.to_string());
            });
            q.push(if is_pg::<DB>() {
                ") UPDATE enrollments SET status = 'active', next_due_at = \
                 CASE WHEN next_due_at IS NULL THEN NULL ELSE GREATEST(next_due_at, "
            } else {
                ") UPDATE enrollments SET status = 'active', next_due_at = \
                 CASE WHEN next_due_at IS NULL THEN NULL ELSE MAX(next_due_at, "
            })
            .push_bind(now)
            .push(") END, updated_at = ")
            .push_bind(now)
            .push(
                " WHERE status = 'paused' AND (lead_id, stream) IN (SELECT lead_id, stream FROM v)",
            );
            out.push(q);
            let mut q =
                QueryBuilder::<DB>::new("WITH v (lead_id, stream, first_due, reentry_cut) AS (");
            values(&mut q, chunk, |row, (lead, stream, p)| {
                row.push_bind(*lead)
                    .push_bind(stream.to_string())
                    .push_bind(now + p.first_after_ms)
                    .push_bind(now.saturating_sub(p.reentry_ms));
            });
            q.push(
                ") INSERT INTO enrollments (lead_id, stream, status, step, next_due_at, \
                 entered_at, updated_at) SELECT lead_id, stream, 'active', 0, first_due, ",
            )
            .push_bind(now)
            .push(", ")
            .push_bind(now)
            .push(
                " FROM v WHERE NOT EXISTS (SELECT 1 FROM enrollments e \
                 WHERE e.lead_id = v.lead_id AND e.stream = v.stream \
                 AND (e.status IN ('active', 'paused') OR e.ended_at > v.reentry_cut))",
            );
            out.push(q);
        }
        for chunk in pause.chunks(rows_per_statement(2)) {
            let mut q = QueryBuilder::<DB>::new("WITH v (lead_id, stream) AS (");
            values(&mut q, chunk, |row, (lead, stream)| {
                row.push_bind(*lead).push_bind(stream.to_string());
            });
            q.push(") UPDATE enrollments SET status = 'paused', updated_at = ")
                .push_bind(now)
                .push(
                    " WHERE status = 'active' AND (lead_id, stream) IN \
                     (SELECT lead_id, stream FROM v)",
                );
            out.push(q);
        }
        for chunk in exit.chunks(rows_per_statement(3)) {
            let mut q = QueryBuilder::<DB>::new("WITH v (lead_id, stream, reason) AS (");
            values(&mut q, chunk, |row, (lead, stream, reason)| {
                row.push_bind(*lead)
                    .push_bind(stream.map(str::to_string))
                    .push_bind(reason.to_string());
            });
            q.push(") UPDATE enrollments SET status = 'exited', next_due_at = NULL, ended_at = ")
                .push_bind(now)
                .push(", end_reason = v.reason, updated_at = ")
                .push_bind(now)
                .push(
                    " FROM v WHERE enrollments.lead_id = v.lead_id \
                     AND (v.stream IS NULL OR enrollments.stream = v.stream) \
                     AND enrollments.status IN ('active', 'paused')",
                );
            out.push(q);
        }
    }
}
