//! Leads: lookup, creation at ingest, the batch save after processing, and the score
//! and stage records that explain them.

use std::collections::HashMap;

use sqlx::QueryBuilder;

use super::rows::{HistoryRow, LEAD_COLUMNS, LeadRow, LedgerRow, TagSource};
use super::{
    Dialect, Statements, Store, StoreError, WriteTx, for_dialect, in_tx, is_pg, read,
    rows_per_statement, sql, sql_owned,
};
use crate::clock::to_ms;
use crate::domain::{Changes, Email, Lead, Source, StageMove};
use chrono::{DateTime, Utc};

/// A lead's identity as ingest needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeadKeyRow {
    pub id: i64,
    pub email: String,
    pub external_id: Option<String>,
}

impl Store {
    pub async fn lead_by_email(&self, email: &Email) -> Result<Option<Lead>, StoreError> {
        let row: Option<LeadRow> = read!(self, |pool, DB| {
            let sql = format!("SELECT {LEAD_COLUMNS} FROM leads WHERE email = ?");
            sqlx::query_as(sql_owned::<DB>(sql))
                .bind(email.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(Lead::try_from).transpose()
    }

    pub async fn lead_id_by_email(&self, email: &Email) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>("SELECT id FROM leads WHERE email = ?"))
                .bind(email.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(id,)| id))
    }

    /// Events processed so far for each of the given leads (how long their histories
    /// are).
    pub async fn history_lengths(&self, ids: &[i64]) -> Result<HashMap<i64, i64>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(rows_per_statement(1)) {
            let rows: Vec<(i64, i64)> = read!(self, |pool, DB| {
                let mut q = QueryBuilder::<DB>::new("SELECT id, events FROM leads WHERE id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                q.push(")");
                q.build_query_as().persistent(false).fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Loads the given leads; ids that do not exist (or were erased: see
    /// [`Store::erase_lead`]) are left out.
    pub async fn leads_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, Lead>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(rows_per_statement(1)) {
            let rows: Vec<LeadRow> = read!(self, |pool, DB| {
                let mut q = QueryBuilder::<DB>::new(format!(
                    "SELECT {LEAD_COLUMNS} FROM leads WHERE erased_at IS NULL AND id IN ("
                ));
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                q.push(")");
                q.build_query_as().persistent(false).fetch_all(pool).await?
            });
            for row in rows {
                let lead = Lead::try_from(row)?;
                out.insert(lead.id, lead);
            }
        }
        Ok(out)
    }

    /// Ids of leads in any of `stages` (all stages when empty) that carry every tag in
    /// `tags`, with id above `after`, in id order: one page of a scheduled job.
    pub async fn lead_ids_matching(
        &self,
        stages: &[String],
        tags: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let ids: Vec<(i64,)> = read!(self, |pool, DB| {
            let mut q =
                QueryBuilder::<DB>::new("SELECT id FROM leads WHERE erased_at IS NULL AND id > ");
            q.push_bind(after);
            if !stages.is_empty() {
                q.push(" AND stage IN (");
                let mut sep = q.separated(", ");
                for s in stages {
                    sep.push_bind(s.clone());
                }
                q.push(")");
            }
            for t in tags {
                q.push(if is_pg::<DB>() {
                    " AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(leads.tags::jsonb) \
                     AS t (value) WHERE value = "
                } else {
                    " AND EXISTS (SELECT 1 FROM json_each(leads.tags) WHERE value = "
                });
                q.push_bind(t.clone());
                q.push(")");
            }
            q.push(" ORDER BY id LIMIT ");
            q.push_bind(limit);
            q.build_query_as().persistent(false).fetch_all(pool).await?
        });
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Stage moves, oldest first.
    pub async fn stage_history(&self, lead_id: i64) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT from_stage, to_stage, at, source_kind, source, reason, event_seq \
                 FROM stage_history WHERE lead_id = ? ORDER BY id",
            ))
            .bind(lead_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Who set each of `tags` (the newest time each was set), in tag order; tags with
    /// no record (set before the ledger existed) are left out.
    pub async fn tag_sources(
        &self,
        lead_id: i64,
        tags: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<TagSource>, StoreError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        // A rule's tag says which event ran the rule.
        let rows: Vec<TagSource> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT t.tag, t.at AS since, t.source_kind, t.source,                  CASE WHEN t.reason = '' AND e.seq IS NOT NULL                    THEN 'event ' || e.seq || ': ' || e.kind || ' ' || e.name ELSE t.reason END AS reason,                  t.event_seq                  FROM tag_ledger t LEFT JOIN events e ON e.seq = t.event_seq                  WHERE t.lead_id = ? AND t.added ORDER BY t.id",
            ))
            .bind(lead_id)
            .fetch_all(pool)
            .await?
        });
        let mut newest: std::collections::BTreeMap<String, TagSource> =
            std::collections::BTreeMap::new();
        for r in rows.into_iter().filter(|r| tags.contains(&r.tag)) {
            newest.insert(r.tag.clone(), r);
        }
        Ok(newest.into_values().collect())
    }

    /// The newest `limit` score changes, newest first.
    pub async fn score_ledger(
        &self,
        lead_id: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT axis, delta, at, source_kind, source, reason, event_seq \
                 FROM score_ledger WHERE lead_id = ? ORDER BY id DESC LIMIT ?",
            ))
            .bind(lead_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Number of leads per stage.
    pub async fn stage_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(read!(self, |pool, DB| {
            // SQLite orders text bytewise; PostgreSQL by the database's collation
            // unless told.
            sqlx::query_as(if is_pg::<DB>() {
                "SELECT stage, COUNT(*) FROM leads GROUP BY stage ORDER BY stage COLLATE \"C\""
            } else {
                "SELECT stage, COUNT(*) FROM leads GROUP BY stage ORDER BY stage"
            })
            .fetch_all(pool)
            .await?
        }))
    }
}

/// Queries for the leads whose e-mail or external id is among the given ones.
fn key_queries<DB: sqlx::Database>(
    emails: &[String],
    external_ids: &[String],
) -> Vec<QueryBuilder<DB>>
where
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut out = Vec::new();
    for (column, values) in [("email", emails), ("external_id", external_ids)] {
        for chunk in values.chunks(rows_per_statement(1)) {
            let mut q = QueryBuilder::<DB>::new(format!(
                "SELECT id, email, external_id FROM leads WHERE {column} IN ("
            ));
            let mut sep = q.separated(", ");
            for v in chunk {
                sep.push_bind(v.clone());
            }
            q.push(")");
            out.push(q);
        }
    }
    out
}

impl Store {
    /// Leads whose e-mail or external id is among the given ones.
    pub async fn lead_keys(
        &self,
        emails: &[String],
        external_ids: &[String],
    ) -> Result<Vec<LeadKeyRow>, StoreError> {
        let mut out = Vec::new();
        read!(self, |pool, DB| {
            let mut conn = pool.acquire().await?;
            for mut q in key_queries::<DB>(emails, external_ids) {
                out.extend(
                    q.build_query_as::<LeadKeyRow>()
                        .persistent(false)
                        .fetch_all(&mut *conn)
                        .await?,
                );
            }
        });
        Ok(out)
    }
}

impl WriteTx {
    /// Like [`Store::lead_keys`], inside the transaction.
    pub async fn find_lead_keys(
        &mut self,
        emails: &[String],
        external_ids: &[String],
    ) -> Result<Vec<LeadKeyRow>, StoreError> {
        let mut out = Vec::new();
        in_tx!(self, |tx, DB| {
            for mut q in key_queries::<DB>(emails, external_ids) {
                out.extend(
                    q.build_query_as::<LeadKeyRow>()
                        .persistent(false)
                        .fetch_all(&mut **tx)
                        .await?,
                );
            }
        });
        Ok(out)
    }

    /// Creates leads in `stage` (e-mail, the sender's user id, the reason for the
    /// history) and records their first history entries. Returns the new ids in order.
    pub async fn create_leads(
        &mut self,
        new: &[(Email, Option<String>, String)],
        stage: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let ms = to_ms(at);
        let mut ids = Vec::with_capacity(new.len());
        for chunk in new.chunks(rows_per_statement(6)) {
            let rows: Vec<(i64, String)> = in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO leads (email, external_id, stage, stage_since, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut b, (email, user, _)| {
                    b.push_bind(email.as_str().to_string())
                        .push_bind(user.clone())
                        .push_bind(stage.to_string())
                        .push_bind(ms)
                        .push_bind(ms)
                        .push_bind(ms);
                });
                q.push(" RETURNING id, email");
                q.build_query_as()
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?
            });
            // RETURNING gives no order guarantee: match by address.
            let by_email: HashMap<String, i64> = rows.into_iter().map(|(i, e)| (e, i)).collect();
            for (email, _, _) in chunk {
                ids.push(
                    *by_email
                        .get(email.as_str())
                        .ok_or_else(|| StoreError::Corrupt {
                            what: "new lead",
                            detail: format!("{email} was not created"),
                        })?,
                );
            }
        }
        let moves: Vec<StageMove> = new
            .iter()
            .map(|(_, _, reason)| StageMove {
                from: None,
                to: stage.to_string(),
                at,
                source: Source::System("ingest".into()),
                reason: reason.clone(),
            })
            .collect();
        let rows: Vec<(i64, Option<i64>, &StageMove)> = ids
            .iter()
            .zip(&moves)
            .map(|(id, m)| (*id, None, m))
            .collect();
        self.execute(build::moves_rows(self.dialect(), &rows))
            .await?;
        Ok(ids)
    }

    /// Creates a lead in `stage` and records its first history entry.
    pub async fn create_lead(
        &mut self,
        email: &Email,
        external_id: Option<&str>,
        stage: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<i64, StoreError> {
        let ms = to_ms(at);
        let (id,): (i64,) = in_tx!(self, |tx, DB| {
            sqlx::query_as(sql::<DB>(
                "INSERT INTO leads (email, external_id, stage, stage_since, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            ))
            .bind(email.as_str())
            .bind(external_id)
            .bind(stage)
            .bind(ms)
            .bind(ms)
            .bind(ms)
            .fetch_one(&mut **tx)
            .await?
        });
        let created = StageMove {
            from: None,
            to: stage.to_string(),
            at,
            source: Source::System("ingest".into()),
            reason: reason.to_string(),
        };
        self.execute(build::moves_rows(self.dialect(), &[(id, None, &created)]))
            .await?;
        Ok(id)
    }

    pub async fn set_external_id(
        &mut self,
        lead_id: i64,
        external_id: &str,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "UPDATE leads SET external_id = ? WHERE id = ? AND external_id IS NULL",
            ))
            .bind(external_id)
            .bind(lead_id)
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }

    /// Lets every lead's interest fade by `factor` (0..1), with a ledger entry each.
    /// Returns how many leads changed.
    pub async fn decay_interest(
        &mut self,
        factor: f64,
        at: DateTime<Utc>,
        source: &Source,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let ms = to_ms(at);
        // Values that would fall below a hundredth of a point go to zero.
        Ok(in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO score_ledger (lead_id, axis, delta, at, source_kind, source, reason) \
                 SELECT id, 'interest', \
                        CASE WHEN abs(interest * ?1) < 0.01 THEN -interest ELSE interest * (?1 - 1) END, \
                        ?2, ?3, ?4, ?5 \
                 FROM leads WHERE interest <> 0",
            ))
            .bind(factor)
            .bind(ms)
            .bind(source.kind())
            .bind(source.to_string())
            .bind(reason)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql::<DB>(
                "UPDATE leads SET interest = CASE WHEN abs(interest * ?1) < 0.01 THEN 0 \
                 ELSE interest * ?1 END, updated_at = ?2, version = version + 1 \
                 WHERE interest <> 0",
            ))
            .bind(factor)
            .bind(ms)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        }))
    }
}

/// A JSON column's text.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lead JSON columns serialise")
}

/// Statements that write leads and their records; run them with [`WriteTx::execute`].
pub mod build {
    use super::*;

    /// Writes the full state of each lead (one statement per few hundred leads), and
    /// adds the number of events processed for it.
    pub fn leads(dialect: Dialect, leads: &[(&Lead, i64)]) -> Statements {
        const COLUMNS: usize = 33;
        for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            for chunk in leads.chunks(rows_per_statement(COLUMNS)) {
                let mut q =
                    QueryBuilder::<DB>::new(format!("INSERT INTO leads ({LEAD_COLUMNS}, events) "));
                q.push_values(chunk, |mut b, (l, events)| {
                    b.push_bind(l.id)
                        .push_bind(l.email.as_str().to_string())
                        .push_bind(l.external_id.clone())
                        .push_bind(l.first_name.clone())
                        .push_bind(l.last_name.clone())
                        .push_bind(l.phone.clone())
                        .push_bind(l.company.clone())
                        .push_bind(l.title.clone())
                        .push_bind(l.industry.clone())
                        .push_bind(l.employees)
                        .push_bind(l.revenue)
                        .push_bind(l.country.clone())
                        .push_bind(l.time_zone.clone())
                        .push_bind(l.locale.clone())
                        .push_bind(l.consent_email.granted)
                        .push_bind(l.consent_email.at.map(to_ms))
                        .push_bind(l.consent_email.source.clone())
                        .push_bind(l.consent_tracking.granted)
                        .push_bind(l.consent_tracking.at.map(to_ms))
                        .push_bind(l.consent_tracking.source.clone())
                        .push_bind(l.stage.clone())
                        .push_bind(to_ms(l.stage_since))
                        .push_bind(l.fit)
                        .push_bind(json(&l.fit_parts))
                        .push_bind(l.interest)
                        .push_bind(json(&l.tags))
                        .push_bind(l.owner.clone())
                        .push_bind(json(&l.attributes))
                        .push_bind(to_ms(l.created_at))
                        .push_bind(to_ms(l.updated_at))
                        .push_bind(l.version)
                        .push_bind(json(&l.topics_left))
                        .push_bind(*events);
                });
                // external_id is left alone: ingest owns it.
                q.push(
                    " ON CONFLICT (id) DO UPDATE SET \
                 first_name = excluded.first_name, last_name = excluded.last_name, \
                 phone = excluded.phone, company = excluded.company, title = excluded.title, \
                 industry = excluded.industry, employees = excluded.employees, \
                 revenue = excluded.revenue, country = excluded.country, \
                 time_zone = excluded.time_zone, locale = excluded.locale, \
                 consent_email = excluded.consent_email, \
                 consent_email_at = excluded.consent_email_at, \
                 consent_email_source = excluded.consent_email_source, \
                 consent_tracking = excluded.consent_tracking, \
                 consent_tracking_at = excluded.consent_tracking_at, \
                 consent_tracking_source = excluded.consent_tracking_source, \
                 stage = excluded.stage, stage_since = excluded.stage_since, fit = excluded.fit, \
                 fit_parts = excluded.fit_parts, interest = excluded.interest, \
                 tags = excluded.tags, owner = excluded.owner, attributes = excluded.attributes, \
                 updated_at = excluded.updated_at, topics_left = excluded.topics_left, \
                 events = leads.events + excluded.events",
                );
                out.push(q);
            }
            out
        })
    }

    /// Writes only the columns rules change on every event (stage, scores, tags,
    /// attributes): for leads whose contact data is unchanged. Adds the number of
    /// events processed for each. `(lead, events, stage moved)`: the stage is written
    /// only for leads whose stage moved, so that the indexes that hold it
    /// (`leads_stage`, `leads_company_key`, `leads_domain_key`) are left alone for the
    /// others.
    pub fn lead_states(dialect: Dialect, leads: &[(&Lead, i64, bool)]) -> Statements {
        for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            let (moved, stayed): (Vec<_>, Vec<_>) = leads.iter().partition(|(_, _, m)| *m);
            for chunk in moved.chunks(rows_per_statement(11)) {
                let mut q = QueryBuilder::<DB>::new(
                    "UPDATE leads SET stage = v.column2, stage_since = v.column3, fit = v.column4, \
                 fit_parts = v.column5, interest = v.column6, tags = v.column7, \
                 attributes = v.column8, owner = v.column9, updated_at = v.column10, \
                 events = leads.events + v.column11 FROM (",
                );
                q.push_values(chunk, |mut b, (l, events, _)| {
                    b.push_bind(l.id)
                        .push_bind(l.stage.clone())
                        .push_bind(to_ms(l.stage_since))
                        .push_bind(l.fit)
                        .push_bind(json(&l.fit_parts))
                        .push_bind(l.interest)
                        .push_bind(json(&l.tags))
                        .push_bind(json(&l.attributes))
                        .push_bind(l.owner.clone())
                        .push_bind(to_ms(l.updated_at))
                        .push_bind(*events);
                });
                q.push(") AS v WHERE leads.id = v.column1");
                out.push(q);
            }
            for chunk in stayed.chunks(rows_per_statement(9)) {
                let mut q = QueryBuilder::<DB>::new(
                    "UPDATE leads SET fit = v.column2, fit_parts = v.column3, interest = v.column4, \
                 tags = v.column5, attributes = v.column6, owner = v.column7, \
                 updated_at = v.column8, events = leads.events + v.column9 FROM (",
                );
                q.push_values(chunk, |mut b, (l, events, _)| {
                    b.push_bind(l.id)
                        .push_bind(l.fit)
                        .push_bind(json(&l.fit_parts))
                        .push_bind(l.interest)
                        .push_bind(json(&l.tags))
                        .push_bind(json(&l.attributes))
                        .push_bind(l.owner.clone())
                        .push_bind(to_ms(l.updated_at))
                        .push_bind(*events);
                });
                q.push(") AS v WHERE leads.id = v.column1");
                out.push(q);
            }
            out
        })
    }

    /// Records the stage moves and score changes of several units of work:
    /// `(lead id, event seq, changes)`.
    pub fn changes(dialect: Dialect, items: &[(i64, Option<i64>, &Changes)]) -> Statements {
        let moves: Vec<_> = items
            .iter()
            .flat_map(|(lead, seq, c)| c.moves.iter().map(move |m| (*lead, *seq, m)))
            .collect();
        let scores: Vec<_> = items
            .iter()
            .flat_map(|(lead, seq, c)| c.scores.iter().map(move |s| (*lead, *seq, s)))
            .collect();
        let scores = for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            for chunk in scores.chunks(rows_per_statement(8)) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO score_ledger (lead_id, axis, delta, at, source_kind, source, reason, event_seq) ",
                );
                q.push_values(chunk, |mut b, (lead, seq, s)| {
                    b.push_bind(*lead)
                        .push_bind(s.axis.as_str())
                        .push_bind(s.delta)
                        .push_bind(to_ms(s.at))
                        .push_bind(s.source.kind())
                        .push_bind(s.source.to_string())
                        .push_bind(s.reason.clone())
                        .push_bind(*seq);
                });
                out.push(q);
            }
            out
        });
        let tags: Vec<_> = items
            .iter()
            .flat_map(|(lead, seq, c)| c.tags.iter().map(move |t| (*lead, *seq, t)))
            .collect();
        let tags = for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            for chunk in tags.chunks(rows_per_statement(8)) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO tag_ledger (lead_id, tag, added, at, source_kind, source, reason, event_seq) ",
                );
                q.push_values(chunk, |mut b, (lead, seq, t)| {
                    b.push_bind(*lead)
                        .push_bind(t.tag.clone())
                        .push_bind(t.added)
                        .push_bind(to_ms(t.at))
                        .push_bind(t.source.kind())
                        .push_bind(t.source.to_string())
                        .push_bind(t.reason.clone())
                        .push_bind(*seq);
                });
                out.push(q);
            }
            out
        });
        moves_rows(dialect, &moves).and(scores).and(tags)
    }

    pub(in crate::store) fn moves_rows(
        dialect: Dialect,
        moves: &[(i64, Option<i64>, &StageMove)],
    ) -> Statements {
        for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            for chunk in moves.chunks(rows_per_statement(8)) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO stage_history (lead_id, from_stage, to_stage, at, source_kind, source, reason, event_seq) ",
                );
                q.push_values(chunk, |mut b, (lead, seq, m)| {
                    b.push_bind(*lead)
                        .push_bind(m.from.clone())
                        .push_bind(m.to.clone())
                        .push_bind(to_ms(m.at))
                        .push_bind(m.source.kind())
                        .push_bind(m.source.to_string())
                        .push_bind(m.reason.clone())
                        .push_bind(*seq);
                });
                out.push(q);
            }
            out
        })
    }
}
