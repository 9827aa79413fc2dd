//! Reading leads and events in pages, in id order: the lead list of `GET /v1/leads`
//! and `nurtured lead list` (filters, keyset paging by lead id, stable while leads
//! are added), and the event history for `nurtured events export` (by sequence
//! number, so the whole history never sits in memory).

use serde_json::json;
use sqlx::{FromRow, QueryBuilder};

use super::{Store, StoreError, is_pg, read};

/// What a lead list asks for; `None` leaves a filter out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeadFilter {
    pub stage: Option<String>,
    pub tag: Option<String>,
    pub min_fit: Option<f64>,
    pub min_interest: Option<f64>,
    pub owner: Option<String>,
    /// A piece of the e-mail address, the name or the company (case-insensitive).
    pub q: Option<String>,
    /// Only leads with a handoff to this `[[sales.owners]]` id (what a sales user of
    /// the console sees); `owner` is the lead's own field, an e-mail address once
    /// sales accepted it.
    pub handoff_owner: Option<String>,
}

/// One lead in a list.
#[derive(Debug, Clone, FromRow)]
pub struct LeadListRow {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub stage: String,
    pub fit: f64,
    pub interest: f64,
    /// JSON array.
    pub tags: String,
    pub owner: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Which events an export takes: `[since, until)` by the time they happened, one
/// lead's or everyone's.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventRange {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub lead_id: Option<i64>,
}

/// A stored event with the lead it belongs to, as an export writes it.
#[derive(Debug, Clone, FromRow)]
pub struct ExportRow {
    pub seq: i64,
    pub message_id: String,
    pub kind: String,
    pub name: String,
    pub properties: String,
    pub traits: Option<String>,
    pub context: Option<String>,
    pub occurred_at: i64,
    pub email: String,
    pub external_id: Option<String>,
}

/// `LIKE` pattern for a piece of text: lower-cased, with `%`, `_` and `\` escaped.
fn contains_pattern(text: &str) -> String {
    like_escaped(&text.to_lowercase())
}

/// `LIKE` pattern matching `text` anywhere, with `%`, `_` and `\` escaped.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// Up to `limit` leads after lead id `after` that pass `filter`, in id order.
    /// Erased leads are never listed.
    ///
    /// A stage filter reads the `leads_stage` index; on PostgreSQL a tag filter reads
    /// the GIN index over the tags. On SQLite a tag, score, owner or text filter walks
    /// the leads in id order until the page is full.
    pub async fn list_leads(
        &self,
        filter: &LeadFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LeadListRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT id, email, first_name, last_name, company, title, stage, fit, interest, \
                 tags, owner, created_at, updated_at FROM leads \
                 WHERE erased_at IS NULL AND id > ",
            );
            q.push_bind(after);
            if let Some(stage) = &filter.stage {
                q.push(" AND stage = ").push_bind(stage.clone());
            }
            if let Some(tag) = &filter.tag {
                if is_pg::<DB>() {
                    q.push(" AND tags::jsonb @> ")
                        .push_bind(json!([tag]).to_string())
                        .push("::jsonb");
                } else {
                    // A plain text match on the stored JSON first (cheap), then the
                    // exact one on its elements.
                    q.push(" AND tags LIKE ")
                        .push_bind(like_escaped(&json!(tag).to_string()))
                        .push(
                            " ESCAPE '\\' AND EXISTS (SELECT 1 FROM json_each(leads.tags) t \
                               WHERE t.value = ",
                        )
                        .push_bind(tag.clone())
                        .push(")");
                }
            }
            if let Some(min) = filter.min_fit {
                q.push(" AND fit >= ").push_bind(min);
            }
            if let Some(min) = filter.min_interest {
                q.push(" AND interest >= ").push_bind(min);
            }
            if let Some(owner) = &filter.owner {
                q.push(" AND owner = ").push_bind(owner.clone());
            }
            if let Some(owner) = &filter.handoff_owner {
                q.push(" AND EXISTS (SELECT 1 FROM handoffs h WHERE h.lead_id = leads.id AND h.owner = ")
                    .push_bind(owner.clone())
                    .push(")");
            }
            if let Some(text) = &filter.q {
                let pattern = contains_pattern(text);
                q.push(" AND (email LIKE ")
                    .push_bind(pattern.clone())
                    .push(
                        " ESCAPE '\\' OR lower(COALESCE(first_name, '') || ' ' || \
                         COALESCE(last_name, '')) LIKE ",
                    )
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR lower(COALESCE(company, '')) LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
            q.push(" ORDER BY id LIMIT ").push_bind(limit as i64);
            q.build_query_as().persistent(false).fetch_all(pool).await?
        }))
    }

    /// Up to `limit` events after sequence number `after` within `range`, in the order
    /// they were stored, with their lead's address and user id. Events of erased leads
    /// are left out.
    pub async fn export_events(
        &self,
        range: EventRange,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ExportRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT e.seq, e.message_id, e.kind, e.name, e.properties, e.traits, e.context, \
                 e.occurred_at, l.email, l.external_id \
                 FROM events e JOIN leads l ON l.id = e.lead_id \
                 WHERE l.erased_at IS NULL AND e.seq > ",
            );
            q.push_bind(after);
            if let Some(since) = range.since_ms {
                q.push(" AND e.occurred_at >= ").push_bind(since);
            }
            if let Some(until) = range.until_ms {
                q.push(" AND e.occurred_at < ").push_bind(until);
            }
            if let Some(lead) = range.lead_id {
                q.push(" AND e.lead_id = ").push_bind(lead);
            }
            q.push(" ORDER BY e.seq LIMIT ").push_bind(limit as i64);
            q.build_query_as().persistent(false).fetch_all(pool).await?
        }))
    }

    /// The query plan of a lead list (SQLite's `EXPLAIN QUERY PLAN` or PostgreSQL's
    /// `EXPLAIN`), one line per step: for checking that a filter uses an index.
    pub async fn explain_list_leads(&self, filter: &LeadFilter) -> Result<String, StoreError> {
        let lines: Vec<String> = read!(self, |pool, DB| {
            let pg = is_pg::<DB>();
            let mut q = QueryBuilder::<DB>::new(if pg {
                "EXPLAIN SELECT id FROM leads WHERE erased_at IS NULL AND id > "
            } else {
                "EXPLAIN QUERY PLAN SELECT id FROM leads WHERE erased_at IS NULL AND id > "
            });
            q.push_bind(0_i64);
            if let Some(stage) = &filter.stage {
                q.push(" AND stage = ").push_bind(stage.clone());
            }
            if let Some(tag) = &filter.tag {
                if pg {
                    q.push(" AND tags::jsonb @> ")
                        .push_bind(json!([tag]).to_string())
                        .push("::jsonb");
                } else {
                    q.push(" AND tags LIKE ")
                        .push_bind(like_escaped(&json!(tag).to_string()))
                        .push(
                            " ESCAPE '\\' AND EXISTS (SELECT 1 FROM json_each(leads.tags) t \
                               WHERE t.value = ",
                        )
                        .push_bind(tag.clone())
                        .push(")");
                }
            }
            q.push(" ORDER BY id LIMIT 50");
            let query = q.build();
            let rows = query.persistent(false).fetch_all(pool).await?;
            use sqlx::Row;
            rows.iter()
                .map(|r| {
                    if pg {
                        r.try_get::<String, _>(0)
                    } else {
                        r.try_get::<String, _>("detail")
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_search_escapes_like_wildcards() {
        assert_eq!(contains_pattern("ACME"), "%acme%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(like_escaped(&json!("a_b").to_string()), "%\"a\\_b\"%");
    }
}
