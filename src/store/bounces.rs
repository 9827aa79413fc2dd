//! Bounces and complaints: finding the mail a report is about, the bounce log, and
//! suppressing an address for a hard bounce or too many soft ones.

use super::{Store, StoreError, WriteTx, in_tx, read, sql};

/// The mail a report is about.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BouncedMail {
    pub outbox_id: i64,
    pub lead_id: i64,
    /// The address the mail went to (the lead's, when it was not sent yet).
    pub email: String,
    /// `marketing`, `transactional` or `internal` (to a colleague, not the lead).
    pub class: String,
}

/// One line of the bounce log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct BounceLogRow {
    pub id: i64,
    pub at: i64,
    pub email: String,
    pub lead_id: Option<i64>,
    pub outbox_id: Option<i64>,
    pub kind: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub source: String,
    pub report_id: Option<String>,
    pub action: String,
}

/// A report to log; `action` is decided by [`WriteTx::log_bounce`] for soft bounces.
#[derive(Debug, Clone)]
pub struct NewBounce<'a> {
    pub at: i64,
    pub email: &'a str,
    pub lead_id: Option<i64>,
    pub outbox_id: Option<i64>,
    /// `hard`, `soft`, `complaint` or `unsubscribe`.
    pub kind: &'a str,
    pub status: Option<&'a str>,
    pub diagnostic: Option<&'a str>,
    pub source: &'a str,
    pub report_id: Option<&'a str>,
    /// Whether a bounce may suppress the address (not for a colleague's).
    pub may_suppress: bool,
}

/// When soft bounces suppress an address: `limit` of them since `since`.
#[derive(Debug, Clone, Copy)]
pub struct SoftLimit {
    pub limit: i64,
    pub since: i64,
}

/// The query for a [`BouncedMail`], with `$tail` (the WHERE clause) appended.
macro_rules! mail_query {
    ($tail:literal) => {
        concat!(
            "SELECT o.id AS outbox_id, o.lead_id, COALESCE(c.recipient, l.email) AS email, o.class \
             FROM outbox o JOIN leads l ON l.id = o.lead_id \
             LEFT JOIN mail_content c ON c.outbox_id = o.id ",
            $tail
        )
    };
}

impl Store {
    /// The mail with outbox id `id`.
    pub async fn bounced_mail(&self, id: i64) -> Result<Option<BouncedMail>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(mail_query!("WHERE o.id = ?")))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The mail sent with Message-ID `message_id` (with or without angle brackets).
    pub async fn bounced_mail_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<BouncedMail>, StoreError> {
        let bare = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(mail_query!(
                "WHERE o.message_id = ? ORDER BY o.id DESC LIMIT 1"
            )))
            .bind(format!("<{bare}>"))
            .fetch_optional(pool)
            .await?
        }))
    }

    /// The bounce log, newest first; of one address when `email` is given.
    pub async fn bounce_log(
        &self,
        email: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BounceLogRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            match email {
                Some(email) => sqlx::query_as(sql::<DB>(
                    "SELECT id, at, email, lead_id, outbox_id, kind, status, diagnostic, source, \
                     report_id, action FROM bounce_log WHERE email = ? ORDER BY id DESC LIMIT ?",
                ))
                .bind(email)
                .bind(limit)
                .fetch_all(pool)
                .await?,
                None => sqlx::query_as(sql::<DB>(
                    "SELECT id, at, email, lead_id, outbox_id, kind, status, diagnostic, source, \
                     report_id, action FROM bounce_log ORDER BY id DESC LIMIT ?",
                ))
                .bind(limit)
                .fetch_all(pool)
                .await?,
            }
        }))
    }
}

impl Store {
    /// Whether the report `report_id` of `source` about `email` was logged before.
    pub async fn bounce_logged(
        &self,
        source: &str,
        report_id: &str,
        email: &str,
    ) -> Result<bool, StoreError> {
        let seen: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT id FROM bounce_log WHERE source = ? AND report_id = ? AND email = ?",
            ))
            .bind(source)
            .bind(report_id)
            .bind(email)
            .fetch_optional(pool)
            .await?
        });
        Ok(seen.is_some())
    }
}

impl WriteTx {
    /// Logs a report and suppresses its address when it calls for it: a hard bounce
    /// at once, a soft one when it makes `soft.limit` since `soft.since`. Returns the
    /// action taken: `suppressed`, `counted`, or `action` for other kinds;
    /// `duplicate` (and nothing written) for a report already logged.
    pub async fn log_bounce(
        &mut self,
        b: &NewBounce<'_>,
        soft: SoftLimit,
        action: &'static str,
    ) -> Result<&'static str, StoreError> {
        in_tx!(self, |tx, DB| {
            if let Some(report_id) = b.report_id {
                let seen: Option<(i64,)> = sqlx::query_as(sql::<DB>(
                    "SELECT id FROM bounce_log WHERE source = ? AND report_id = ? AND email = ?",
                ))
                .bind(b.source)
                .bind(report_id)
                .bind(b.email)
                .fetch_optional(&mut **tx)
                .await?;
                if seen.is_some() {
                    return Ok("duplicate");
                }
            }
            let kind = if b.may_suppress { b.kind } else { "" };
            let (action, detail) = match kind {
                "hard" => (
                    "suppressed",
                    Some(format!(
                        "hard bounce ({}): {}",
                        b.status.unwrap_or("no status"),
                        b.diagnostic.unwrap_or("no diagnostic")
                    )),
                ),
                "soft" => {
                    let (before,): (i64,) = sqlx::query_as(sql::<DB>(
                        "SELECT COUNT(*) FROM bounce_log \
                         WHERE email = ? AND kind = 'soft' AND at >= ?",
                    ))
                    .bind(b.email)
                    .bind(soft.since)
                    .fetch_one(&mut **tx)
                    .await?;
                    if before + 1 >= soft.limit {
                        (
                            "suppressed",
                            Some(format!(
                                "{} soft bounces, the last ({}): {}",
                                before + 1,
                                b.status.unwrap_or("no status"),
                                b.diagnostic.unwrap_or("no diagnostic")
                            )),
                        )
                    } else {
                        ("counted", None)
                    }
                }
                _ => (action, None),
            };
            sqlx::query(sql::<DB>(
                "INSERT INTO bounce_log \
                 (at, email, lead_id, outbox_id, kind, status, diagnostic, source, report_id, \
                 action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(b.at)
            .bind(b.email)
            .bind(b.lead_id)
            .bind(b.outbox_id)
            .bind(b.kind)
            .bind(b.status)
            .bind(b.diagnostic)
            .bind(b.source)
            .bind(b.report_id)
            .bind(action)
            .execute(&mut **tx)
            .await?;
            if let Some(detail) = detail {
                sqlx::query(sql::<DB>(
                    "INSERT INTO suppressions (email, reason, detail, created_at) \
                     VALUES (?, 'bounce', ?, ?) ON CONFLICT (email) DO NOTHING",
                ))
                .bind(b.email)
                .bind(detail)
                .bind(b.at)
                .execute(&mut **tx)
                .await?;
            }
            Ok(action)
        })
    }
}
