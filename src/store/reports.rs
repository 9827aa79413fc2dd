//! Reads for the funnel and SLA reports: stage moves and stays, the channel of new
//! leads, handoffs with their answers and breaches. Periods are Unix milliseconds,
//! both ends included; the reports do the arithmetic.

use sqlx::FromRow;

use super::{Store, StoreError, is_pg, read, sql, sql_owned};

/// How many moves went from one stage to another.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MoveCountRow {
    pub from_stage: String,
    pub to_stage: String,
    pub moves: i64,
}

/// How many leads entered `stage` in the period (each lead once).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct EnteredRow {
    pub stage: String,
    pub leads: i64,
}

/// Of the leads that entered `stage` in the period, how many moved into `reached`
/// afterwards.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ReachedRow {
    pub stage: String,
    pub reached: String,
    pub leads: i64,
}

/// A stay in a stage that ended in the period: its length in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StayRow {
    pub stage: String,
    pub ms: i64,
}

/// A lead created in the period, with what names its channel.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct NewLeadRow {
    pub id: i64,
    /// `context.campaign.source` of the lead's first event.
    pub campaign_source: Option<String>,
    /// `properties.utm_source` of the lead's first event.
    pub utm_source: Option<String>,
    /// The lead's attribute `source`.
    pub attribute_source: Option<String>,
}

/// A stage a lead is in or has been in.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LeadStageRow {
    pub lead_id: i64,
    pub stage: String,
}

/// A handoff as the SLA report needs it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct HandoffReportRow {
    pub id: i64,
    pub state: String,
    pub owner: Option<String>,
    /// JSON array of owner ids, in order of assignment.
    pub owners_had: String,
    pub created_at: i64,
    pub assigned_at: Option<i64>,
    pub breached_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub business_ms: Option<i64>,
}

impl HandoffReportRow {
    /// Everyone the handoff was assigned to, in order, the current owner included.
    pub fn owners(&self) -> Result<Vec<String>, StoreError> {
        let mut owners: Vec<String> =
            serde_json::from_str(&self.owners_had).map_err(|e| StoreError::Corrupt {
                what: "handoff owners_had",
                detail: format!("handoff {}: {e}", self.id),
            })?;
        if let Some(o) = &self.owner
            && !owners.contains(o)
        {
            owners.push(o.clone());
        }
        Ok(owners)
    }
}

/// Missed deadlines per owner.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BreachCountRow {
    pub owner: String,
    pub breaches: i64,
}

/// A handoff still waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WaitingHandoffRow {
    pub id: i64,
    pub email: String,
    pub team: String,
    pub state: String,
    pub owner: Option<String>,
    pub created_at: i64,
    pub due_at: Option<i64>,
}

impl Store {
    /// Stage moves (not creations) in the period, per pair of stages.
    pub async fn stage_move_counts(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<MoveCountRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT from_stage, to_stage, COUNT(*) AS moves FROM stage_history \
             WHERE from_stage IS NOT NULL AND at >= ? AND at <= ? \
             GROUP BY from_stage, to_stage",
            ))
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Leads that entered each stage in the period (a creation counts as entering the
    /// first stage), and of them, how many moved into each other stage afterwards (a
    /// later history row, at most `until`). A lead that entered a stage twice in the
    /// period counts once, from its first entry.
    pub async fn stage_conversions(
        &self,
        since: i64,
        until: i64,
    ) -> Result<(Vec<EnteredRow>, Vec<ReachedRow>), StoreError> {
        const ENTERED: &str = "WITH entered AS ( \
                 SELECT lead_id, to_stage AS stage, MIN(id) AS first_id FROM stage_history \
                 WHERE at >= ?1 AND at <= ?2 GROUP BY lead_id, to_stage) ";
        read!(self, |pool, DB| {
            let entered = sqlx::query_as(sql_owned::<DB>(format!(
                "{ENTERED} SELECT stage, COUNT(*) AS leads FROM entered GROUP BY stage"
            )))
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?;
            let reached = sqlx::query_as(sql_owned::<DB>(format!(
            "{ENTERED} SELECT e.stage, h.to_stage AS reached, COUNT(DISTINCT e.lead_id) AS leads \
             FROM entered e JOIN stage_history h \
               ON h.lead_id = e.lead_id AND h.id > e.first_id AND h.at <= ?2 \
             WHERE h.to_stage <> e.stage \
             GROUP BY e.stage, h.to_stage"
        )))
        .bind(since)
        .bind(until)
        .fetch_all(pool)
        .await?;
            Ok((entered, reached))
        })
    }

    /// Stays that ended in the period: from a lead's move into a stage to its next
    /// move, for moves out of the stage in the period.
    pub async fn stays_ended(&self, since: i64, until: i64) -> Result<Vec<StayRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT stage, left_at - entered_at AS ms FROM ( \
                SELECT to_stage AS stage, at AS entered_at, \
                       LEAD(at) OVER (PARTITION BY lead_id ORDER BY id) AS left_at \
                FROM stage_history WHERE lead_id IN ( \
                    SELECT lead_id FROM stage_history \
                    WHERE from_stage IS NOT NULL AND at >= ?1 AND at <= ?2)) AS stays \
             WHERE left_at >= ?1 AND left_at <= ?2",
            ))
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Leads created in the period, with the sources of their first event (by
    /// `occurred_at`, then arrival) and their `source` attribute. Once the first event
    /// is gone (erased, or deleted by retention), `leads.first_source` stands for it.
    pub async fn leads_created_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<NewLeadRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            let sources = if is_pg::<DB>() {
                "SELECT l.id, \
                COALESCE(l.first_source, e.context::jsonb #>> '{campaign,source}') \
                    AS campaign_source, \
                CASE WHEN l.first_source IS NULL THEN e.properties::jsonb ->> 'utm_source' END \
                    AS utm_source, \
                (l.attributes::jsonb ->> 'source') AS attribute_source \
             FROM leads l LEFT JOIN events e ON e.seq = ( \
                SELECT f.seq FROM events f WHERE f.lead_id = l.id \
                ORDER BY f.occurred_at, f.seq LIMIT 1) \
             WHERE l.created_at >= ? AND l.created_at <= ? \
             ORDER BY l.id"
            } else {
                "SELECT l.id, \
                COALESCE(l.first_source, CAST(json_extract(e.context, '$.campaign.source') AS TEXT)) \
                    AS campaign_source, \
                CASE WHEN l.first_source IS NULL \
                    THEN CAST(json_extract(e.properties, '$.utm_source') AS TEXT) END AS utm_source, \
                CAST(json_extract(l.attributes, '$.source') AS TEXT) AS attribute_source \
             FROM leads l LEFT JOIN events e ON e.seq = ( \
                SELECT f.seq FROM events f WHERE f.lead_id = l.id \
                ORDER BY f.occurred_at, f.seq LIMIT 1) \
             WHERE l.created_at >= ? AND l.created_at <= ? \
             ORDER BY l.id"
            };
            sqlx::query_as(sql::<DB>(sources))
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Every stage that leads created in the period are in or have been in.
    pub async fn stages_of_leads_created(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<LeadStageRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT h.lead_id, h.to_stage AS stage FROM stage_history h \
                JOIN leads l ON l.id = h.lead_id \
             WHERE l.created_at >= ?1 AND l.created_at <= ?2 \
             UNION \
             SELECT id, stage FROM leads WHERE created_at >= ?1 AND created_at <= ?2",
            ))
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Handoffs created in the period, oldest first.
    pub async fn handoffs_created_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<HandoffReportRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT id, state, owner, owners_had, created_at, assigned_at, breached_at, \
                    answered_at, business_ms \
             FROM handoffs WHERE created_at >= ? AND created_at <= ? ORDER BY id",
            ))
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Missed deadlines (`breached` log rows) per owner, of handoffs created in the
    /// period. A row without an owner counts for `-`.
    pub async fn handoff_breaches_by_owner(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<BreachCountRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT COALESCE(g.owner, '-') AS owner, COUNT(*) AS breaches \
             FROM handoff_log g JOIN handoffs h ON h.id = g.handoff_id \
             WHERE g.what = 'breached' AND h.created_at >= ? AND h.created_at <= ? \
             GROUP BY COALESCE(g.owner, '-')",
            ))
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Handoffs waiting for an answer now (new, open, escalated), the earliest
    /// deadline first, those without one last.
    pub async fn handoffs_waiting(&self) -> Result<Vec<WaitingHandoffRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT h.id, l.email, h.team, h.state, h.owner, h.created_at, h.due_at \
             FROM handoffs h JOIN leads l ON l.id = h.lead_id \
             WHERE h.state IN ('new', 'open', 'escalated') \
             ORDER BY h.due_at IS NULL, h.due_at, h.id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }
}
