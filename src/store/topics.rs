//! Topic preferences: per lead and topic the last choice (`left` or `kept`), when and
//! where it was made. The set of left topics also sits on the lead row
//! (`leads.topics_left`), written with the lead.

use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Dialect, Statements, Store, StoreError, for_dialect, read, sql};

/// A lead's choice for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TopicChoice {
    pub topic: String,
    /// `left` or `kept`.
    pub state: String,
    /// Unix milliseconds.
    pub at: i64,
    pub source: String,
}

impl Store {
    /// The topic choices of a lead, by topic.
    pub async fn topic_choices(&self, lead_id: i64) -> Result<Vec<TopicChoice>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT topic, state, at, source FROM lead_topics WHERE lead_id = ? ORDER BY topic",
            ))
            .bind(lead_id)
            .fetch_all(pool)
            .await?
        }))
    }
}

pub mod build {
    use super::*;

    /// Records the choices `(topic, left)` of lead `lead_id` made at `at` (Unix
    /// milliseconds) from `source`.
    pub fn topic_choices(
        dialect: Dialect,
        lead_id: i64,
        choices: &[(String, bool)],
        at: i64,
        source: &str,
    ) -> Statements {
        if choices.is_empty() {
            return Statements::Empty;
        }
        for_dialect!(dialect, |DB| {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO lead_topics (lead_id, topic, state, at, source) ",
            );
            q.push_values(choices, |mut b, (topic, left)| {
                b.push_bind(lead_id)
                    .push_bind(topic.clone())
                    .push_bind(if *left { "left" } else { "kept" })
                    .push_bind(at)
                    .push_bind(source.to_string());
            });
            q.push(
                " ON CONFLICT (lead_id, topic) DO UPDATE SET state = excluded.state, \
                 at = excluded.at, source = excluded.source",
            );
            vec![q]
        })
    }
}
