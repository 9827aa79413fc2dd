//! Failed mails queued again by hand (`nurtured mail retry`, `POST /v1/mails/{id}/retry`):
//! the mail goes back to `queued` with its attempts reset, and `mail_log` notes who
//! retried it and why it had failed. Only failed mails qualify, and not when a later
//! copy of the same mail (lead, template, key) was queued or sent since.

use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Store, StoreError, in_tx, rows_per_statement, sql};

/// Which mails to queue again.
#[derive(Debug, Clone)]
pub enum RetrySelection<'a> {
    /// These mails; each must be failed.
    Ids(&'a [i64]),
    /// Every failed mail, or those of one template.
    Failed { template: Option<&'a str> },
}

/// What a retry did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    /// The mails queued again.
    pub queued: Vec<i64>,
    /// The mails left alone, with why.
    pub refused: Vec<Refused>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub id: i64,
    pub reason: String,
}

/// One entry of a mail's log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MailLogRow {
    #[serde(serialize_with = "super::rows::ms_as_rfc3339")]
    pub at: i64,
    pub what: String,
    /// `cli:USER` or `api:KEY`.
    pub actor: String,
    pub note: String,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: i64,
    lead_id: i64,
    status: String,
    reason: Option<String>,
    /// A later copy of the same mail that was queued or sent.
    later: Option<i64>,
}

const CANDIDATE: &str = "SELECT o.id, o.lead_id, o.status, o.reason, \
    (SELECT MIN(n.id) FROM outbox n WHERE n.lead_id = o.lead_id AND n.template = o.template \
     AND n.dedupe_key = o.dedupe_key AND n.id > o.id \
     AND n.status NOT IN ('failed', 'suppressed')) AS later FROM outbox o WHERE ";

impl Store {
    /// Queues the selected failed mails again at `now` on behalf of `actor`.
    pub async fn retry_mails(
        &self,
        selection: RetrySelection<'_>,
        actor: &str,
        now: i64,
    ) -> Result<RetryReport, StoreError> {
        let mut tx = self.begin_write().await?;
        let report = in_tx!(tx, |tx, DB| {
            let mut found: Vec<Candidate> = Vec::new();
            match &selection {
                RetrySelection::Ids(ids) => {
                    for chunk in ids.chunks(rows_per_statement(1)) {
                        let mut q = QueryBuilder::<DB>::new(CANDIDATE);
                        q.push("o.id IN (");
                        let mut sep = q.separated(", ");
                        for id in chunk {
                            sep.push_bind(*id);
                        }
                        q.push(")");
                        found.extend(
                            q.build_query_as::<Candidate>()
                                .persistent(false)
                                .fetch_all(&mut **tx)
                                .await?,
                        );
                    }
                }
                RetrySelection::Failed { template } => {
                    let mut q = QueryBuilder::<DB>::new(CANDIDATE);
                    q.push("o.status = 'failed'");
                    if let Some(t) = template {
                        q.push(" AND o.template = ").push_bind(t.to_string());
                    }
                    q.push(" ORDER BY o.id");
                    found = q
                        .build_query_as::<Candidate>()
                        .persistent(false)
                        .fetch_all(&mut **tx)
                        .await?;
                }
            }
            let mut report = RetryReport::default();
            if let RetrySelection::Ids(ids) = &selection {
                for id in ids.iter().filter(|id| !found.iter().any(|c| c.id == **id)) {
                    report.refused.push(Refused {
                        id: *id,
                        reason: format!("there is no mail {id}"),
                    });
                }
            }
            for c in found {
                if c.status != "failed" {
                    report.refused.push(Refused {
                        id: c.id,
                        reason: format!(
                            "mail {} is {}, not failed: only failed mails can be queued again",
                            c.id, c.status
                        ),
                    });
                    continue;
                }
                if let Some(later) = c.later {
                    report.refused.push(Refused {
                        id: c.id,
                        reason: format!(
                            "mail {later} is a later copy of mail {} (same lead, template and \
                             key) that was queued or sent: see `nurtured mail show {later}`",
                            c.id
                        ),
                    });
                    continue;
                }
                let updated = sqlx::query(sql::<DB>(
                    "UPDATE outbox SET status = 'queued', attempts = 0, tries = 0, \
                     first_try_at = NULL, finished_at = NULL, claimed_by = NULL, due_at = ?, \
                     reason = ? WHERE id = ? AND status = 'failed'",
                ))
                .bind(now)
                .bind(format!("queued again by {actor}"))
                .bind(c.id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    continue;
                }
                sqlx::query(sql::<DB>(
                    "INSERT INTO mail_log (outbox_id, lead_id, at, what, actor, note) \
                     VALUES (?, ?, ?, 'retried', ?, ?)",
                ))
                .bind(c.id)
                .bind(c.lead_id)
                .bind(now)
                .bind(actor)
                .bind(format!(
                    "had failed: {}",
                    c.reason.as_deref().unwrap_or("no reason recorded")
                ))
                .execute(&mut **tx)
                .await?;
                report.queued.push(c.id);
            }
            report
        });
        tx.commit().await?;
        Ok(report)
    }

    /// What people did to mail `id` by hand, oldest first.
    pub async fn mail_log(&self, id: i64) -> Result<Vec<MailLogRow>, StoreError> {
        Ok(super::read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT at, what, actor, note FROM mail_log WHERE outbox_id = ? ORDER BY id",
            ))
            .bind(id)
            .fetch_all(pool)
            .await?
        }))
    }
}
