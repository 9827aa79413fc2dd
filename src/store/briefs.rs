//! What the sales desk reads about leads for their briefs, for many leads at once: the
//! newest events, the newest score changes with the name of the event behind each, and
//! the stage history. Three statements per batch of leads (window functions pick each
//! lead's newest rows), whatever the batch's size.

use std::collections::HashMap;

use sqlx::{FromRow, QueryBuilder};

use super::events::{EVENT_COLUMNS, EVENT_JOINS};
use super::{EventRow, HistoryRow, LedgerRow, Store, StoreError, read, rows_per_statement};

/// One lead's rows for its brief.
#[derive(Debug, Clone, Default)]
pub struct BriefRows {
    /// The newest events, newest first.
    pub events: Vec<EventRow>,
    /// The newest score changes, newest first.
    pub ledger: Vec<LedgerRow>,
    /// The name of the event behind each score change that has one, by event seq.
    pub ledger_events: HashMap<i64, String>,
    /// Every stage move, oldest first.
    pub history: Vec<HistoryRow>,
}

#[derive(FromRow)]
struct LeadLedgerRow {
    lead_id: i64,
    #[sqlx(flatten)]
    row: LedgerRow,
    event_name: Option<String>,
}

#[derive(FromRow)]
struct LeadHistoryRow {
    lead_id: i64,
    #[sqlx(flatten)]
    row: HistoryRow,
}

impl Store {
    /// The brief rows of each of `lead_ids`: at most `events` events and `ledger` score
    /// changes per lead. Every lead asked for is in the answer (with empty rows when it
    /// has none).
    pub async fn brief_rows(
        &self,
        lead_ids: &[i64],
        events: usize,
        ledger: usize,
    ) -> Result<HashMap<i64, BriefRows>, StoreError> {
        let mut out: HashMap<i64, BriefRows> = lead_ids
            .iter()
            .map(|id| (*id, BriefRows::default()))
            .collect();
        for chunk in lead_ids.chunks(rows_per_statement(1) - 1) {
            read!(self, |pool, DB| {
                // The newest events: numbered per lead from the index on lead_id (which
                // holds seq), then read in full.
                let mut q = QueryBuilder::<DB>::new(format!(
                    "SELECT {EVENT_COLUMNS} FROM {EVENT_JOINS} WHERE e.seq IN (SELECT seq FROM (SELECT seq, \
                 ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY seq DESC) AS n FROM events \
                 WHERE lead_id IN ("
                ));
                push_ids(&mut q, chunk);
                q.push(")) AS numbered WHERE n <= ")
                    .push_bind(events as i64)
                    .push(") ORDER BY e.lead_id, e.seq DESC");
                for row in q
                    .build_query_as::<EventRow>()
                    .persistent(false)
                    .fetch_all(pool)
                    .await?
                {
                    out.entry(row.lead_id).or_default().events.push(row);
                }

                let mut q = QueryBuilder::<DB>::new(
                    "SELECT s.lead_id, s.axis, s.delta, s.at, s.source_kind, s.source, s.reason, \
                 s.event_seq, e.name AS event_name FROM (SELECT *, ROW_NUMBER() OVER \
                 (PARTITION BY lead_id ORDER BY id DESC) AS n FROM score_ledger WHERE lead_id IN (",
                );
                push_ids(&mut q, chunk);
                q.push(")) AS s LEFT JOIN events e ON e.seq = s.event_seq WHERE s.n <= ")
                    .push_bind(ledger as i64)
                    .push(" ORDER BY s.lead_id, s.id DESC");
                for r in q
                    .build_query_as::<LeadLedgerRow>()
                    .persistent(false)
                    .fetch_all(pool)
                    .await?
                {
                    let rows = out.entry(r.lead_id).or_default();
                    if let (Some(seq), Some(name)) = (r.row.event_seq, r.event_name) {
                        rows.ledger_events.insert(seq, name);
                    }
                    rows.ledger.push(r.row);
                }

                let mut q = QueryBuilder::<DB>::new(
                    "SELECT lead_id, from_stage, to_stage, at, source_kind, source, reason, event_seq \
                 FROM stage_history WHERE lead_id IN (",
                );
                push_ids(&mut q, chunk);
                q.push(") ORDER BY lead_id, id");
                for r in q
                    .build_query_as::<LeadHistoryRow>()
                    .persistent(false)
                    .fetch_all(pool)
                    .await?
                {
                    out.entry(r.lead_id).or_default().history.push(r.row);
                }
            });
        }
        Ok(out)
    }
}

fn push_ids<DB: sqlx::Database>(q: &mut QueryBuilder<DB>, ids: &[i64])
where
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut sep = q.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
}
