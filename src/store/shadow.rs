//! Shadow rules' records: per rule file, how often each call site asked for each
//! action (or failed), and the most recent examples with lead and event. Written in the
//! same transaction as the events they come from; read by `nurtured rules shadow` and
//! `/v1/stats`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, QueryBuilder};

use super::rows::ms_as_rfc3339;
use super::{Dialect, Statements, Store, StoreError, for_dialect, read, rows_per_statement, sql};
use crate::clock::to_ms;
use crate::domain::change::Outcome;
use crate::rules::ShadowRun;

/// Examples kept per shadow file (the most recent).
pub const EXAMPLES_PER_FILE: usize = 100;

/// What a shadow file's run records: `(source, action, error message)`.
fn records(run: &ShadowRun) -> Vec<(String, String, Option<String>)> {
    match &run.result {
        Ok(changes) => changes
            .actions
            .iter()
            .map(|a| {
                let action = match &a.outcome {
                    Outcome::Skipped(_) => format!("{} (skipped)", a.action),
                    _ => a.action.to_string(),
                };
                (a.source.to_string(), action, None)
            })
            .collect(),
        Err(e) => {
            let source = if e.line == 0 {
                e.file.clone()
            } else {
                format!("{}:{}", e.file, e.line)
            };
            vec![(source, "error".to_string(), Some(e.message.clone()))]
        }
    }
}

/// A count of one call site's action.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ShadowCount {
    pub file: String,
    pub source: String,
    pub action: String,
    pub count: i64,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub last_at: i64,
}

/// A recent example, with the lead's address.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ShadowExample {
    pub file: String,
    pub email: String,
    pub seq: i64,
    pub source: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub at: i64,
}

impl Store {
    /// Counts per file, call site and action; of one file (as shown, or its name).
    pub async fn shadow_counts(&self, file: Option<&str>) -> Result<Vec<ShadowCount>, StoreError> {
        let (shown, name) = file_filter(file);
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT file, source, action, count, last_at FROM shadow_counts \
                 WHERE (? = '' OR file = ? OR file LIKE ?) ORDER BY file, count DESC, source, action",
            ))
            .bind(shown.clone())
            .bind(shown.clone())
            .bind(name.clone())
            .fetch_all(pool)
            .await?
        }))
    }

    /// The most recent examples (errors included), newest first, `limit` per file.
    pub async fn shadow_examples(
        &self,
        file: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ShadowExample>, StoreError> {
        let (shown, name) = file_filter(file);
        let rows: Vec<ShadowExample> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT x.file, l.email, x.seq, x.source, x.action, x.message, x.at \
                 FROM shadow_examples x JOIN leads l ON l.id = x.lead_id \
                 WHERE (? = '' OR x.file = ? OR x.file LIKE ?) ORDER BY x.file, x.id DESC",
            ))
            .bind(shown.clone())
            .bind(shown.clone())
            .bind(name.clone())
            .fetch_all(pool)
            .await?
        });
        let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
        Ok(rows
            .into_iter()
            .filter(|r| {
                let n = per_file.entry(r.file.clone()).or_default();
                *n += 1;
                *n <= limit
            })
            .collect())
    }
}

/// `file` as given (`rules/55-a.rhai`) and as a pattern for its name (`%/55-a.rhai`).
fn file_filter(file: Option<&str>) -> (String, String) {
    match file {
        None => (String::new(), String::new()),
        Some(f) => {
            let name = f.rsplit('/').next().unwrap_or(f);
            (f.to_string(), format!("%/{name}"))
        }
    }
}

pub mod build {
    use super::*;

    /// An example row before it is written: lead, event, source, action, error message.
    type Example = (i64, i64, String, String, Option<String>);

    /// Records shadow runs `(lead id, event seq, run)` at `at`: adds to the counts,
    /// stores the examples and keeps the newest [`EXAMPLES_PER_FILE`] of each file.
    pub fn shadow(
        dialect: Dialect,
        runs: &[(i64, i64, &ShadowRun)],
        at: DateTime<Utc>,
    ) -> Statements {
        let at = to_ms(at);
        let mut counts: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        let mut examples: BTreeMap<String, Vec<Example>> = BTreeMap::new();
        for (lead, seq, run) in runs {
            for (source, action, message) in records(run) {
                *counts
                    .entry((run.file.to_string(), source.clone(), action.clone()))
                    .or_default() += 1;
                examples
                    .entry(run.file.to_string())
                    .or_default()
                    .push((*lead, *seq, source, action, message));
            }
        }
        if counts.is_empty() {
            return Statements::Empty;
        }
        let counts: Vec<_> = counts.into_iter().collect();
        let mut rows: Vec<(String, Example)> = Vec::new();
        for (file, list) in &examples {
            let skip = list.len().saturating_sub(EXAMPLES_PER_FILE);
            rows.extend(list.iter().skip(skip).map(|r| (file.clone(), r.clone())));
        }
        for_dialect!(dialect, |DB| {
            let mut out = Vec::new();
            for chunk in counts.chunks(rows_per_statement(5)) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO shadow_counts (file, source, action, count, last_at) ",
                );
                q.push_values(chunk, |mut b, ((file, source, action), n)| {
                    b.push_bind(file.clone())
                        .push_bind(source.clone())
                        .push_bind(action.clone())
                        .push_bind(*n)
                        .push_bind(at);
                });
                q.push(
                    " ON CONFLICT (file, source, action) DO UPDATE SET \
                     count = shadow_counts.count + excluded.count, last_at = excluded.last_at",
                );
                out.push(q);
            }
            for chunk in rows.chunks(rows_per_statement(7)) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO shadow_examples (file, lead_id, seq, source, action, message, at) ",
                );
                q.push_values(
                    chunk,
                    |mut b, (file, (lead, seq, source, action, message))| {
                        b.push_bind(file.clone())
                            .push_bind(*lead)
                            .push_bind(*seq)
                            .push_bind(source.clone())
                            .push_bind(action.clone())
                            .push_bind(message.clone())
                            .push_bind(at);
                    },
                );
                out.push(q);
            }
            for file in examples.keys() {
                let mut q = QueryBuilder::<DB>::new("DELETE FROM shadow_examples WHERE file = ");
                q.push_bind(file.clone());
                q.push(" AND id < (SELECT COALESCE(MIN(id), 0) FROM (SELECT id FROM shadow_examples WHERE file = ");
                q.push_bind(file.clone());
                q.push(" ORDER BY id DESC LIMIT ");
                q.push_bind(EXAMPLES_PER_FILE as i64);
                q.push(") AS newest)");
                out.push(q);
            }
            out
        })
    }
}
