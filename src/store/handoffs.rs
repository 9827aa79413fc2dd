//! Handoffs to sales, their log, and the webhook outbox.
//!
//! A handoff is asked for in the transaction of the change that caused it
//! ([`build::handoffs`], state `new`); the sales desk assigns an owner and queues the
//! notification in one write transaction, and fires escalation steps the same way. Each
//! desk write is guarded by the state it read (`round`, `step`), so a step is never
//! applied twice, even by two passes at once.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use sqlx::QueryBuilder;

use super::rows::ms_as_rfc3339;
use super::{
    Dialect, Statements, Store, StoreError, WriteTx, for_dialect, in_tx, is_pg, read, rounds,
    rows_per_statement, sql, sql_owned, values,
};
use crate::domain::Changes;
use crate::domain::change::{HandoffRequest, SettledHandoff};

/// One handoff.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HandoffRow {
    pub id: i64,
    pub lead_id: i64,
    pub email: String,
    pub team: String,
    pub reason: String,
    pub source: String,
    pub state: String,
    pub owner: Option<String>,
    #[serde(skip)]
    pub owners_had: String,
    pub round: i64,
    #[serde(skip)]
    pub duplicates: String,
    #[serde(serialize_with = "ms_as_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub assigned_at: Option<i64>,
    #[serde(serialize_with = "opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<i64>,
    #[serde(skip)]
    pub step: i64,
    #[serde(serialize_with = "opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_at: Option<i64>,
    #[serde(serialize_with = "opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub breached_at: Option<i64>,
    #[serde(serialize_with = "opt_ms")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub answered_at: Option<i64>,
    pub answered_by: Option<String>,
    pub answer_note: Option<String>,
    pub business_ms: Option<i64>,
}

impl HandoffRow {
    /// Still waiting for sales.
    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "open" | "escalated")
    }

    /// The owners it was assigned to, in order.
    pub fn owners_had(&self) -> Vec<String> {
        serde_json::from_str(&self.owners_had).unwrap_or_default()
    }

    /// Other leads of the same company with sales when it was assigned.
    pub fn duplicates(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.duplicates).unwrap_or_default()
    }
}

fn opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => ms_as_rfc3339(ms, s),
        None => s.serialize_none(),
    }
}

const HANDOFF_COLUMNS: &str = "h.id, h.lead_id, l.email, h.team, h.reason, h.source, h.state, \
    h.owner, h.owners_had, h.round, h.duplicates, h.created_at, h.assigned_at, h.due_at, h.step, \
    h.next_at, h.breached_at, h.answered_at, h.answered_by, h.answer_note, h.business_ms";

#[derive(sqlx::FromRow)]
struct PendingHook {
    #[sqlx(flatten)]
    row: HandoffRow,
    hook_pending: String,
}

/// One line of a handoff's log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HandoffLogRow {
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub at: i64,
    pub what: String,
    pub owner: Option<String>,
    pub detail: Option<String>,
}

/// How many other leads of the same company a handoff names at most.
pub const MAX_DUPLICATES: usize = 10;
/// Company or domain lookups united in one statement.
const KEYS_PER_STATEMENT: usize = 32;
/// The partial indexes of leads with sales: name and key (the company name and the
/// mail domain as compared; addresses are stored lower-cased).
const SALES_INDEXES: [(&str, &str); 2] = [
    ("leads_sales_company", "lower(trim(company))"),
    ("leads_sales_domain", "substr(email, instr(email, '@') + 1)"),
];
/// The keys of [`SALES_INDEXES`] on PostgreSQL, computed as on SQLite: `lower` under
/// the "C" collation changes ASCII letters only (as SQLite's does, and as the keys
/// compared in Rust are made), `strpos` is `instr`.
const PG_SALES_KEYS: [&str; 2] = [
    "lower(trim(company) COLLATE \"C\")",
    "substr(email, strpos(email, '@') + 1)",
];

/// The key of the `i`-th of [`SALES_INDEXES`] in `DB`'s dialect.
fn sales_key<DB: sqlx::Database>(i: usize) -> &'static str {
    if is_pg::<DB>() {
        PG_SALES_KEYS[i]
    } else {
        SALES_INDEXES[i].1
    }
}

/// Stage names as an SQL list of literals. Stage names are lower-case letters, digits,
/// `_` and `-` (checked with the configuration); quotes are doubled all the same.
fn stage_list(stages: &[String]) -> String {
    stages
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A lead whose colleagues with sales are looked for: its company name and its mail
/// domain (`None` for a public mail provider's).
#[derive(Debug, Clone, Copy)]
pub struct CompanyOf<'a> {
    pub lead_id: i64,
    pub company: &'a str,
    pub domain: Option<&'a str>,
}

/// Another lead of the same company that is with sales.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DuplicateRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub company: Option<String>,
    pub stage: String,
    pub owner: Option<String>,
}

/// A webhook call to make.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: i64,
    pub handoff_id: i64,
    pub team: String,
    pub event: String,
    pub body: String,
    pub attempts: i64,
    pub first_try_at: Option<i64>,
}

/// What became of a webhook call.
#[derive(Debug, Clone)]
pub enum WebhookDone {
    Sent { id: i64 },
    Later { id: i64, until: i64, reason: String },
    Failed { id: i64, reason: String },
}

/// A handoff's new assignment or escalation state, written only if the handoff is
/// still at `expect_round` / `expect_step` (and open).
#[derive(Debug, Clone)]
pub struct HandoffUpdate {
    pub id: i64,
    pub expect_state: &'static [&'static str],
    pub expect_round: i64,
    pub expect_step: i64,
    pub state: String,
    pub owner: Option<String>,
    pub owners_had: Vec<String>,
    pub round: i64,
    pub duplicates: Option<String>,
    pub assigned_at: Option<i64>,
    pub due_at: Option<i64>,
    pub step: i64,
    pub next_at: Option<i64>,
    pub breached_at: Option<i64>,
}

impl HandoffUpdate {
    /// The handoff as it is once this update is written.
    pub fn applied_to(&self, h: HandoffRow) -> HandoffRow {
        HandoffRow {
            state: self.state.clone(),
            owner: self.owner.clone(),
            owners_had: serde_json::to_string(&self.owners_had).unwrap_or_default(),
            round: self.round,
            duplicates: self.duplicates.clone().unwrap_or(h.duplicates),
            assigned_at: self.assigned_at,
            due_at: self.due_at,
            step: self.step,
            next_at: self.next_at,
            breached_at: self.breached_at,
            ..h
        }
    }
}

/// An internal mail (to sales) to queue.
#[derive(Debug, Clone)]
pub struct InternalMail {
    /// Makes queuing the same notification twice a no-op.
    pub idem_key: String,
    pub lead_id: i64,
    pub recipient: String,
    pub template: String,
    /// The template's `data`, as JSON text.
    pub data: String,
    pub source: String,
}

/// A line of a handoff's log to write.
#[derive(Debug, Clone)]
pub struct HandoffLog {
    pub handoff_id: i64,
    pub at: i64,
    pub what: String,
    pub owner: Option<String>,
    pub detail: Option<String>,
}

/// A webhook call to queue.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub idem_key: String,
    pub handoff_id: i64,
    pub team: String,
    pub event: String,
    pub body: String,
}

/// Which handoffs to list.
#[derive(Debug, Clone, Default)]
pub struct HandoffFilter {
    /// `open` means waiting for sales (open or escalated).
    pub state: Option<String>,
    pub lead_id: Option<i64>,
    pub owner: Option<String>,
    pub limit: i64,
}

impl Store {
    pub async fn handoff(&self, id: i64) -> Result<Option<HandoffRow>, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs h JOIN leads l ON l.id = h.lead_id \
             WHERE h.id = ?"
        );
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Handoffs by filter, newest first.
    pub async fn handoffs(&self, f: &HandoffFilter) -> Result<Vec<HandoffRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            let mut q = QueryBuilder::<DB>::new(format!(
                "SELECT {HANDOFF_COLUMNS} FROM handoffs h JOIN leads l ON l.id = h.lead_id WHERE 1 = 1"
            ));
            match f.state.as_deref() {
                Some("open") => {
                    q.push(" AND h.state IN ('open', 'escalated')");
                }
                Some(s) => {
                    q.push(" AND h.state = ").push_bind(s.to_string());
                }
                None => {}
            }
            if let Some(id) = f.lead_id {
                q.push(" AND h.lead_id = ").push_bind(id);
            }
            if let Some(o) = &f.owner {
                q.push(" AND h.owner = ").push_bind(o.clone());
            }
            q.push(" ORDER BY h.id DESC LIMIT ")
                .push_bind(f.limit.max(1));
            q.build_query_as().persistent(false).fetch_all(pool).await?
        }))
    }

    /// Handoffs waiting for an owner.
    pub async fn new_handoffs(&self, limit: i64) -> Result<Vec<HandoffRow>, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs h JOIN leads l ON l.id = h.lead_id \
             WHERE h.state = 'new' ORDER BY h.id LIMIT ?"
        );
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(sql))
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Open handoffs whose next escalation step is due at `now`.
    pub async fn due_handoffs(&self, now: i64, limit: i64) -> Result<Vec<HandoffRow>, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs h JOIN leads l ON l.id = h.lead_id \
             WHERE h.state IN ('open', 'escalated') AND h.next_at <= ? ORDER BY h.next_at LIMIT ?"
        );
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(sql))
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// When the desk has work next: a new handoff or a pending webhook now, else the
    /// earliest step.
    pub async fn next_handoff_due(&self) -> Result<Option<i64>, StoreError> {
        let (new, next): (i64, Option<i64>) = read!(self, |pool, DB| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM handoffs WHERE state = 'new' OR hook_pending IS NOT NULL), \
                 (SELECT MIN(next_at) FROM handoffs WHERE state IN ('open', 'escalated'))",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(if new > 0 { Some(0) } else { next })
    }

    /// How many turns of `team`'s round-robin were taken so far.
    pub async fn turns_taken(&self, team: &str) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>("SELECT value FROM counters WHERE name = ?"))
                .bind(format!("round-robin:{team}"))
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map_or(0, |(n,)| n))
    }

    /// Handoffs that ended by a stage change and whose webhook call is still to be
    /// queued: (handoff, event).
    pub async fn handoffs_with_pending_hook(
        &self,
        limit: i64,
    ) -> Result<Vec<(HandoffRow, String)>, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS}, h.hook_pending FROM handoffs h \
             JOIN leads l ON l.id = h.lead_id WHERE h.hook_pending IS NOT NULL ORDER BY h.id LIMIT ?"
        );
        let rows: Vec<PendingHook> = read!(self, |pool, DB| {
            sqlx::query_as(sql_owned::<DB>(sql))
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|r| (r.row, r.hook_pending)).collect())
    }

    pub async fn handoff_log(&self, id: i64) -> Result<Vec<HandoffLogRow>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT at, what, owner, detail FROM handoff_log WHERE handoff_id = ? ORDER BY id",
            ))
            .bind(id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Keeps the partial indexes of leads in the open sales stages (`leads_sales_company`,
    /// `leads_sales_domain`) in step with the configured funnel: made when missing,
    /// made again when the stages changed. They hold only the leads with sales, so
    /// lead writes in marketing stages do not touch them.
    pub async fn keep_sales_indexes(&self, sales_stages: &[String]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        in_tx!(tx, |tx, DB| {
            if is_pg::<DB>() {
                // Other processes may start at the same time: one at a time.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('nurtured.sales_indexes'))")
                    .execute(&mut **tx)
                    .await?;
            }
            for (i, (name, _)) in SALES_INDEXES.into_iter().enumerate() {
                let key = sales_key::<DB>(i);
                let wanted = (!sales_stages.is_empty()).then(|| {
                    format!(
                        "CREATE INDEX {name} ON leads ({key}) WHERE stage IN ({})",
                        stage_list(sales_stages)
                    )
                });
                // PostgreSQL keeps no statement text: the statement an index was made
                // with is its comment ('' when it has none).
                let (have,): (Option<String>,) = sqlx::query_as(sql::<DB>(if is_pg::<DB>() {
                    "SELECT (SELECT COALESCE(obj_description(i.oid, 'pg_class'), '') \
                     FROM (SELECT to_regclass(?) AS oid) i WHERE i.oid IS NOT NULL)"
                } else {
                    "SELECT (SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?)"
                }))
                .bind(name.to_string())
                .fetch_one(&mut **tx)
                .await?;
                if have == wanted {
                    continue;
                }
                sqlx::query(sql_owned::<DB>(format!("DROP INDEX IF EXISTS {name}")))
                    .execute(&mut **tx)
                    .await?;
                if let Some(sql) = wanted {
                    sqlx::query(sql_owned::<DB>(sql.clone()))
                        .execute(&mut **tx)
                        .await?;
                    if is_pg::<DB>() {
                        sqlx::query(sql_owned::<DB>(format!(
                            "COMMENT ON INDEX {name} IS '{}'",
                            sql.replace('\'', "''")
                        )))
                        .execute(&mut **tx)
                        .await?;
                    }
                }
            }
        });
        tx.commit().await
    }

    /// For each of `leads`, the other leads of the same company (same company name, or
    /// the same mail domain unless it is a public mail provider's) that are in one of
    /// `sales_stages` or have an open handoff: at most [`MAX_DUPLICATES`] each, oldest
    /// first. Each company and each domain is looked up in the partial indexes of leads
    /// with sales (see [`Store::keep_sales_indexes`]) and of open handoffs and brings
    /// at most its first rows, so the cost follows the batch, not the number of leads
    /// with sales.
    pub async fn same_company_with_sales(
        &self,
        leads: &[CompanyOf<'_>],
        sales_stages: &[String],
    ) -> Result<HashMap<i64, Vec<DuplicateRow>>, StoreError> {
        let mut out: HashMap<i64, Vec<DuplicateRow>> = HashMap::new();
        // Compared as SQLite's lower() and trim() do: ASCII letters without case,
        // spaces.
        let keys: Vec<(i64, String, Option<String>)> = leads
            .iter()
            .map(|l| {
                let company = l.company.trim_matches(' ').to_ascii_lowercase();
                let domain = l.domain.map(|d| d.to_ascii_lowercase());
                (l.lead_id, company, domain)
            })
            .collect();
        let companies: BTreeSet<&str> = keys
            .iter()
            .map(|(_, c, _)| c.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        let domains: BTreeSet<&str> = keys
            .iter()
            .filter_map(|(_, _, d)| d.as_deref())
            .filter(|d| !d.is_empty())
            .collect();
        // Per key: the first leads by id among those in a sales stage and those with an
        // open handoff. The stages are written as in the partial indexes' condition,
        // which lets SQLite use them. A statement always has [`KEYS_PER_STATEMENT`]
        // lookups (unused ones look for NULL, which finds nothing), so its text stays
        // the same and it is prepared once per connection.
        let stages = stage_list(sales_stages);
        let kinds = [(companies, 0, "company_key"), (domains, 1, "domain_key")];
        let mut found: Vec<DuplicateRow> = Vec::new();
        for (keys, index, handoff_key) in &kinds {
            let keys: Vec<&str> = keys.iter().copied().collect();
            for group in keys.chunks(KEYS_PER_STATEMENT) {
                read!(self, |pool, DB| {
                    let lead_key = sales_key::<DB>(*index);
                    // PostgreSQL wants a name for each table in FROM.
                    let end = if is_pg::<DB>() { ") AS k" } else { ")" };
                    let mut q = QueryBuilder::<DB>::new(
                        "SELECT l.id, l.email, TRIM(COALESCE(l.first_name, '') || ' ' || \
                         COALESCE(l.last_name, '')) AS name, l.company, l.stage, l.owner \
                         FROM leads l WHERE l.id IN (SELECT NULL",
                    );
                    for i in 0..KEYS_PER_STATEMENT {
                        let key = group.get(i).map(|k| k.to_string());
                        q.push(" UNION SELECT id FROM (");
                        if !sales_stages.is_empty() {
                            q.push(format!("SELECT id FROM leads WHERE {lead_key} = "))
                                .push_bind(key.clone())
                                .push(format!(" AND stage IN ({stages}) UNION "));
                        }
                        q.push(format!(
                            "SELECT lead_id FROM handoffs WHERE {handoff_key} = "
                        ))
                        .push_bind(key)
                        .push(" AND state IN ('new', 'open', 'escalated') ORDER BY 1 LIMIT ")
                        .push_bind(MAX_DUPLICATES as i64 + 1)
                        .push(end);
                    }
                    q.push(") ORDER BY l.id");
                    found.extend(
                        q.build_query_as::<DuplicateRow>()
                            .persistent(true)
                            .fetch_all(pool)
                            .await?,
                    );
                });
            }
        }
        found.sort_by_key(|r| r.id);
        found.dedup_by_key(|r| r.id);
        for (lead_id, company, domain) in &keys {
            let same = found
                .iter()
                .filter(|r| r.id != *lead_id)
                .filter(|r| {
                    let by_company = !company.is_empty()
                        && r.company
                            .as_deref()
                            .is_some_and(|c| c.trim_matches(' ').to_ascii_lowercase() == *company);
                    let by_domain = domain
                        .as_deref()
                        .is_some_and(|d| r.email.to_ascii_lowercase().ends_with(&format!("@{d}")));
                    by_company || by_domain
                })
                .take(MAX_DUPLICATES)
                .cloned()
                .collect();
            out.insert(*lead_id, same);
        }
        Ok(out)
    }

    /// Webhook calls due at `now`, claimed by nobody.
    pub async fn next_webhook_due(&self) -> Result<Option<i64>, StoreError> {
        let (next,): (Option<i64>,) = read!(self, |pool, DB| {
            sqlx::query_as("SELECT MIN(due_at) FROM webhooks WHERE status = 'queued'")
                .fetch_one(pool)
                .await?
        });
        Ok(next)
    }

    /// Webhook calls by status, for tests and the API: (event, status, attempts, reason).
    pub async fn webhooks_of(
        &self,
        handoff_id: i64,
    ) -> Result<Vec<(String, String, i64, Option<String>)>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT event, status, attempts, reason FROM webhooks WHERE handoff_id = ? ORDER BY id",
            ))
            .bind(handoff_id)
            .fetch_all(pool)
            .await?
        }))
    }
}

impl WriteTx {
    /// Applies `u` if the handoff is still where it was read; false when it moved on
    /// (answered, or another pass got there first).
    pub async fn update_handoff(
        &mut self,
        u: &HandoffUpdate,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = in_tx!(self, |tx, DB| {
            let mut q = QueryBuilder::<DB>::new("UPDATE handoffs SET state = ");
            q.push_bind(u.state.clone())
                .push(", owner = ")
                .push_bind(u.owner.clone())
                .push(", owners_had = ")
                .push_bind(serde_json::to_string(&u.owners_had).unwrap_or_default())
                .push(", round = ")
                .push_bind(u.round)
                .push(", assigned_at = ")
                .push_bind(u.assigned_at)
                .push(", due_at = ")
                .push_bind(u.due_at)
                .push(", step = ")
                .push_bind(u.step)
                .push(", next_at = ")
                .push_bind(u.next_at)
                .push(", breached_at = ")
                .push_bind(u.breached_at)
                .push(", updated_at = ")
                .push_bind(now);
            if let Some(d) = &u.duplicates {
                q.push(", duplicates = ").push_bind(d.clone());
            }
            q.push(" WHERE id = ")
                .push_bind(u.id)
                .push(" AND round = ")
                .push_bind(u.expect_round)
                .push(" AND step = ")
                .push_bind(u.expect_step)
                .push(" AND state IN (");
            let mut sep = q.separated(", ");
            for s in u.expect_state {
                sep.push_bind(*s);
            }
            q.push(")");
            q.build()
                .persistent(false)
                .execute(&mut **tx)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Applies many updates in one statement per chunk, each only if its handoff is
    /// still where it was read (as [`WriteTx::update_handoff`]); returns how many were
    /// applied.
    pub async fn update_handoffs(
        &mut self,
        updates: &[HandoffUpdate],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut applied = 0;
        for chunk in updates.chunks(rows_per_statement(14)) {
            applied += in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(
                    "WITH v (id, expect_state, expect_round, expect_step, state, owner, owners_had, \
                 round, duplicates, assigned_at, due_at, step, next_at, breached_at) AS (",
                );
                q.push_values(chunk, |mut row, u| {
                    row.push_bind(u.id)
                        .push_bind(serde_json::to_string(u.expect_state).unwrap_or_default())
                        .push_bind(u.expect_round)
                        .push_bind(u.expect_step)
                        .push_bind(u.state.clone())
                        .push_bind(u.owner.clone())
                        .push_bind(serde_json::to_string(&u.owners_had).unwrap_or_default())
                        .push_bind(u.round)
                        .push_bind(u.duplicates.clone())
                        .push_bind(u.assigned_at)
                        .push_bind(u.due_at)
                        .push_bind(u.step)
                        .push_bind(u.next_at)
                        .push_bind(u.breached_at);
                });
                q.push(
                ") UPDATE handoffs SET state = v.state, owner = v.owner, owners_had = v.owners_had, \
                 round = v.round, duplicates = COALESCE(v.duplicates, handoffs.duplicates), \
                 assigned_at = v.assigned_at, due_at = v.due_at, step = v.step, \
                 next_at = v.next_at, breached_at = v.breached_at, updated_at = ",
            )
            .push_bind(now)
            .push(if is_pg::<DB>() {
                " FROM v WHERE handoffs.id = v.id AND handoffs.round = v.expect_round \
                 AND handoffs.step = v.expect_step \
                 AND handoffs.state IN (SELECT jsonb_array_elements_text(v.expect_state::jsonb))"
            } else {
                " FROM v WHERE handoffs.id = v.id AND handoffs.round = v.expect_round \
                 AND handoffs.step = v.expect_step \
                 AND handoffs.state IN (SELECT value FROM json_each(v.expect_state))"
            });
                q.build()
                    .persistent(false)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            });
        }
        Ok(applied)
    }

    /// Clears the pending webhook event of a handoff; false when another pass did.
    pub async fn take_pending_hook(&mut self, id: i64, event: &str) -> Result<bool, StoreError> {
        let n = in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "UPDATE handoffs SET hook_pending = NULL WHERE id = ? AND hook_pending = ?",
            ))
            .bind(id)
            .bind(event)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Of the handoffs `(id, round, step)`, those still `new` at that round and step.
    pub async fn still_new(
        &mut self,
        handoffs: &[(i64, i64, i64)],
    ) -> Result<BTreeSet<i64>, StoreError> {
        let mut out = BTreeSet::new();
        for chunk in handoffs.chunks(rows_per_statement(1)) {
            let rows: Vec<(i64, i64, i64)> = in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(
                    "SELECT id, round, step FROM handoffs WHERE state = 'new' AND id IN (",
                );
                let mut sep = q.separated(", ");
                for (id, _, _) in chunk {
                    sep.push_bind(*id);
                }
                q.push(")");
                q.build_query_as()
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?
            });
            out.extend(
                rows.into_iter()
                    .filter(|row| chunk.contains(row))
                    .map(|(id, _, _)| id),
            );
        }
        Ok(out)
    }

    /// Takes the next `n` turns of `team`'s round-robin (1, 2, 3, ... over its life);
    /// returns the first of them.
    pub async fn take_turns(&mut self, team: &str, n: i64) -> Result<i64, StoreError> {
        let (last,): (i64,) = in_tx!(self, |tx, DB| {
            // PostgreSQL finds a bare `value` ambiguous beside `excluded.value`.
            sqlx::query_as(sql::<DB>(if is_pg::<DB>() {
                "INSERT INTO counters (name, value) VALUES (?, ?) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value \
                 RETURNING value"
            } else {
                "INSERT INTO counters (name, value) VALUES (?, ?) \
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value RETURNING value"
            }))
            .bind(format!("round-robin:{team}"))
            .bind(n)
            .fetch_one(&mut **tx)
            .await?
        });
        Ok(last - n + 1)
    }

    pub async fn log_handoff(
        &mut self,
        id: i64,
        at: i64,
        what: &str,
        owner: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.log_handoffs(&[HandoffLog {
            handoff_id: id,
            at,
            what: what.to_string(),
            owner: owner.map(str::to_string),
            detail: detail.map(str::to_string),
        }])
        .await
    }

    /// Appends lines to handoffs' logs, in the order given.
    pub async fn log_handoffs(&mut self, lines: &[HandoffLog]) -> Result<(), StoreError> {
        for chunk in lines.chunks(rows_per_statement(5)) {
            in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO handoff_log (handoff_id, at, what, owner, detail) ",
                );
                q.push_values(chunk, |mut row, l| {
                    row.push_bind(l.handoff_id)
                        .push_bind(l.at)
                        .push_bind(l.what.clone())
                        .push_bind(l.owner.clone())
                        .push_bind(l.detail.clone());
                });
                q.build().persistent(false).execute(&mut **tx).await?;
            });
        }
        Ok(())
    }

    /// Queues a mail to sales (internal: not marketing, not the lead's address).
    pub async fn queue_internal_mail(
        &mut self,
        m: &InternalMail,
        now: i64,
    ) -> Result<(), StoreError> {
        self.queue_internal_mails(std::slice::from_ref(m), now)
            .await
    }

    /// Queues mails to sales, in the order given; one already queued under the same key
    /// is left as it is.
    pub async fn queue_internal_mails(
        &mut self,
        mails: &[InternalMail],
        now: i64,
    ) -> Result<(), StoreError> {
        for chunk in mails.chunks(rows_per_statement(8)) {
            in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(if is_pg::<DB>() {
                    "INSERT INTO outbox (idem_key, lead_id, recipient, template, class, kind, \
                 data, source, created_at, due_at) "
                } else {
                    "INSERT OR IGNORE INTO outbox (idem_key, lead_id, recipient, template, class, kind, \
                 data, source, created_at, due_at) "
                });
                q.push_values(chunk, |mut row, m| {
                    row.push_bind(m.idem_key.clone())
                        .push_bind(m.lead_id)
                        .push_bind(m.recipient.clone())
                        .push_bind(m.template.clone())
                        .push_bind("internal")
                        .push_bind("handoff")
                        .push_bind(m.data.clone())
                        .push_bind(m.source.clone())
                        .push_bind(now)
                        .push_bind(now);
                });
                if is_pg::<DB>() {
                    q.push(" ON CONFLICT DO NOTHING");
                }
                q.build().persistent(false).execute(&mut **tx).await?;
            });
        }
        Ok(())
    }

    pub async fn queue_webhook(&mut self, w: &NewWebhook, now: i64) -> Result<(), StoreError> {
        self.queue_webhooks(std::slice::from_ref(w), now).await
    }

    /// Queues webhook calls, in the order given; one already queued under the same key
    /// is left as it is.
    pub async fn queue_webhooks(
        &mut self,
        calls: &[NewWebhook],
        now: i64,
    ) -> Result<(), StoreError> {
        for chunk in calls.chunks(rows_per_statement(7)) {
            in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(if is_pg::<DB>() {
                    "INSERT INTO webhooks (idem_key, handoff_id, team, event, body, \
                 created_at, due_at) "
                } else {
                    "INSERT OR IGNORE INTO webhooks (idem_key, handoff_id, team, event, body, \
                 created_at, due_at) "
                });
                q.push_values(chunk, |mut row, w| {
                    row.push_bind(w.idem_key.clone())
                        .push_bind(w.handoff_id)
                        .push_bind(w.team.clone())
                        .push_bind(w.event.clone())
                        .push_bind(w.body.clone())
                        .push_bind(now)
                        .push_bind(now);
                });
                if is_pg::<DB>() {
                    q.push(" ON CONFLICT DO NOTHING");
                }
                q.build().persistent(false).execute(&mut **tx).await?;
            });
        }
        Ok(())
    }

    /// Records sales' answer if the handoff is still open in `round`; false otherwise.
    #[allow(clippy::too_many_arguments)]
    pub async fn answer_handoff(
        &mut self,
        id: i64,
        round: i64,
        state: &str,
        by: &str,
        note: Option<&str>,
        business_ms: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "UPDATE handoffs SET state = ?, answered_at = ?, answered_by = ?, answer_note = ?, \
                 business_ms = ?, next_at = NULL, updated_at = ? \
                 WHERE id = ? AND round = ? AND state IN ('open', 'escalated')",
            ))
            .bind(state)
            .bind(now)
            .bind(by)
            .bind(note)
            .bind(business_ms)
            .bind(now)
            .bind(id)
            .bind(round)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Claims up to `limit` webhook calls due at `now` for `owner`, first queuing again
    /// those left `sending` by anyone else (a process that stopped).
    pub async fn claim_webhooks(
        &mut self,
        owner: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        Ok(in_tx!(self, |tx, DB| {
            // `IS NOT` compares values only on SQLite.
            sqlx::query(sql::<DB>(if is_pg::<DB>() {
                "UPDATE webhooks SET status = 'queued', claimed_by = NULL \
                 WHERE status = 'sending' AND claimed_by IS DISTINCT FROM ?"
            } else {
                "UPDATE webhooks SET status = 'queued', claimed_by = NULL \
                 WHERE status = 'sending' AND claimed_by IS NOT ?"
            }))
            .bind(owner)
            .execute(&mut **tx)
            .await?;
            // PostgreSQL: rows another transaction is claiming are passed over.
            sqlx::query_as(sql::<DB>(if is_pg::<DB>() {
                "UPDATE webhooks SET status = 'sending', claimed_by = ?, attempts = attempts + 1, \
                 first_try_at = COALESCE(first_try_at, ?) \
                 WHERE id IN (SELECT id FROM webhooks WHERE status = 'queued' AND due_at <= ? \
                 ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED) \
                 RETURNING id, handoff_id, team, event, body, attempts, first_try_at"
            } else {
                "UPDATE webhooks SET status = 'sending', claimed_by = ?, attempts = attempts + 1, \
                 first_try_at = COALESCE(first_try_at, ?) \
                 WHERE id IN (SELECT id FROM webhooks WHERE status = 'queued' AND due_at <= ? \
                 ORDER BY due_at, id LIMIT ?) \
                 RETURNING id, handoff_id, team, event, body, attempts, first_try_at"
            }))
            .bind(owner)
            .bind(now)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?
        }))
    }

    pub async fn finish_webhooks(
        &mut self,
        done: &[WebhookDone],
        now: i64,
    ) -> Result<(), StoreError> {
        for d in done {
            in_tx!(self, |tx, DB| match d {
                WebhookDone::Sent { id } => {
                    sqlx::query(sql::<DB>(
                        "UPDATE webhooks SET status = 'sent', finished_at = ?, reason = NULL \
                         WHERE id = ? AND status = 'sending'",
                    ))
                    .bind(now)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
                WebhookDone::Later { id, until, reason } => {
                    sqlx::query(sql::<DB>(
                        "UPDATE webhooks SET status = 'queued', claimed_by = NULL, due_at = ?, \
                         reason = ? WHERE id = ? AND status = 'sending'",
                    ))
                    .bind(until)
                    .bind(reason)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
                WebhookDone::Failed { id, reason } => {
                    sqlx::query(sql::<DB>(
                        "UPDATE webhooks SET status = 'failed', finished_at = ?, reason = ? \
                         WHERE id = ? AND status = 'sending'",
                    ))
                    .bind(now)
                    .bind(reason)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                }
            });
        }
        Ok(())
    }
}

/// Statements that ask for handoffs.
pub mod build {
    use super::*;

    /// The handoffs asked for by several units of work: `(lead id, event seq, changes)`.
    /// A lead with a handoff still open is not handed over again. One statement per
    /// round and kind (see [`rounds`]): each lead's handoffs end and start in order.
    pub fn handoffs(
        dialect: Dialect,
        items: &[(i64, Option<i64>, &Changes)],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Statements {
        let now = crate::clock::to_ms(now);
        let mut ops: Vec<(i64, Op)> = Vec::new();
        for (lead, seq, changes) in items {
            if let Some(s) = &changes.handoff_settled {
                // A second end right after the first finds nothing open.
                if !matches!(ops.last(), Some((l, Op::Settle(_))) if l == lead) {
                    ops.push((*lead, Op::Settle(s)));
                }
            }
            for h in &changes.handoffs {
                ops.push((*lead, Op::Create(*seq, h)));
            }
        }
        let rounds = rounds(ops);
        if rounds.is_empty() {
            return Statements::default();
        }
        for_dialect!(dialect, |DB| {
            let mut out: Vec<QueryBuilder<DB>> = Vec::new();
            for round in &rounds {
                let mut settle: Vec<(i64, &'static str, String, String)> = Vec::new();
                let mut create: Vec<Creation> = Vec::new();
                for (lead, op) in round {
                    let lead = *lead;
                    match *op {
                        Op::Settle(s) => {
                            let (state, what) = if s.by_sales {
                                ("accepted", "taken over")
                            } else {
                                ("expired", "moved on")
                            };
                            let note =
                                format!("{what}: the lead moved to {} before an answer", s.stage);
                            settle.push((lead, state, note, s.source.to_string()));
                        }
                        Op::Create(seq, h) => create.push((lead, seq, h)),
                    }
                }
                for chunk in settle.chunks(rows_per_statement(4)) {
                    // The same table of leads heads the log insert and the update.
                    let table = || {
                        let mut q = QueryBuilder::<DB>::new(
                            "WITH v (lead_id, state, note, answered_by) AS (",
                        );
                        values(&mut q, chunk, |row, (lead, state, note, by)| {
                            row.push_bind(*lead)
                                .push_bind(*state)
                                .push_bind(note.clone())
                                .push_bind(by.clone());
                        });
                        q
                    };
                    let mut q = table();
                    let mut update = table();
                    q.push(
                    ") INSERT INTO handoff_log (handoff_id, at, what, owner, detail) \
                     SELECT h.id, ",
                )
                .push_bind(now)
                .push(
                    ", v.state, h.owner, v.note FROM v JOIN handoffs h ON h.lead_id = v.lead_id \
                     WHERE h.state IN ('new', 'open', 'escalated')",
                );
                    out.push(q);
                    update
                        .push(") UPDATE handoffs SET state = v.state, answered_at = ")
                        .push_bind(now)
                        .push(
                            ", answered_by = v.answered_by, answer_note = v.note, \
                         hook_pending = 'handoff.' || v.state, next_at = NULL, updated_at = ",
                        )
                        .push_bind(now)
                        .push(
                            " FROM v WHERE handoffs.lead_id = v.lead_id \
                         AND handoffs.state IN ('new', 'open', 'escalated')",
                        );
                    out.push(update);
                }
                for chunk in create.chunks(rows_per_statement(6)) {
                    // The lead's company and domain keys go with the handoff (see
                    // `same_company_with_sales`); the lead's row is written before.
                    let mut q = QueryBuilder::<DB>::new(
                        "WITH v (n, lead_id, team, reason, source, event_seq) AS (",
                    );
                    let numbered: Vec<(usize, &Creation)> = chunk.iter().enumerate().collect();
                    values(&mut q, &numbered, |row, (n, (lead, seq, h))| {
                        row.push_bind(*n as i64)
                            .push_bind(*lead)
                            .push_bind(h.team.clone())
                            .push_bind(h.reason.clone())
                            .push_bind(h.source.to_string())
                            .push_bind(*seq);
                    });
                    // The keys as `SALES_INDEXES` / `PG_SALES_KEYS` compute them.
                    let pg = is_pg::<DB>();
                    q.push(if pg {
                    ") INSERT INTO handoffs (lead_id, team, reason, source, event_seq, \
                     state, created_at, updated_at, company_key, domain_key) \
                     SELECT v.lead_id, v.team, v.reason, v.source, v.event_seq, 'new', "
                } else {
                    ") INSERT OR IGNORE INTO handoffs (lead_id, team, reason, source, event_seq, \
                     state, created_at, updated_at, company_key, domain_key) \
                     SELECT v.lead_id, v.team, v.reason, v.source, v.event_seq, 'new', "
                })
                .push_bind(now)
                .push(", ")
                .push_bind(now)
                .push(if pg {
                    ", lower(trim(l.company) COLLATE \"C\"), \
                     substr(l.email, strpos(l.email, '@') + 1) \
                     FROM v JOIN leads l ON l.id = v.lead_id ORDER BY v.n ON CONFLICT DO NOTHING"
                } else {
                    ", lower(trim(l.company)), substr(l.email, instr(l.email, '@') + 1) \
                     FROM v JOIN leads l ON l.id = v.lead_id ORDER BY v.n"
                });
                    out.push(q);
                }
            }
            out
        })
    }

    /// A handoff to create: lead, event, request.
    type Creation<'a> = (i64, Option<i64>, &'a HandoffRequest);

    /// One lead's handoff change, in the order asked.
    enum Op<'a> {
        Settle(&'a SettledHandoff),
        Create(Option<i64>, &'a HandoffRequest),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::change::Source;
    use crate::domain::{Email, Lead};

    /// A lead of `company` at `email`, in `stage`, written whole.
    async fn lead(store: &Store, id: i64, email: &str, company: &str, stage: &str) -> Lead {
        let mut lead = Lead::new(id, Email::parse(email).unwrap(), stage, Utc::now());
        lead.company = Some(company.to_string());
        let mut tx = store.begin_write().await.unwrap();
        tx.execute(super::super::build::leads(store.dialect(), &[(&lead, 0)]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        lead
    }

    async fn hand_over(store: &Store, id: i64) {
        let changes = Changes {
            handoffs: vec![HandoffRequest {
                team: "inbound".into(),
                reason: "mql".into(),
                source: Source::System("test".into()),
            }],
            ..Changes::default()
        };
        let mut tx = store.begin_write().await.unwrap();
        tx.execute(build::handoffs(
            store.dialect(),
            &[(id, None, &changes)],
            Utc::now(),
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    fn ids(found: &HashMap<i64, Vec<DuplicateRow>>, lead: i64) -> Vec<i64> {
        found[&lead].iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn finds_colleagues_with_sales_by_company_and_domain_through_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::fresh_database_url(dir.path());
        let store = Store::open(&url).await.unwrap();
        let sales = vec!["sal".to_string(), "sql".to_string()];
        store.keep_sales_indexes(&sales).await.unwrap();
        // With sales by stage (company name differs in case and spaces), with an open
        // handoff (same domain, other company name), a marketing lead, another company.
        lead(&store, 1, "a@acme.example", " ACME GmbH ", "sql").await;
        lead(&store, 2, "b@acme.example", "Acme Labs", "mql").await;
        hand_over(&store, 2).await;
        lead(&store, 3, "c@acme.example", "ACME GmbH", "lead").await;
        lead(&store, 4, "d@other.example", "Other AG", "sal").await;
        let new = lead(&store, 5, "e@acme.example", "acme gmbh", "mql").await;
        let of = [CompanyOf {
            lead_id: new.id,
            company: "acme gmbh",
            domain: Some("acme.example"),
        }];
        let found = store.same_company_with_sales(&of, &sales).await.unwrap();
        assert_eq!(ids(&found, 5), vec![1, 2]);

        // A handoff that ended no longer counts; a lead of a public mail domain is
        // found by company only.
        let mut tx = store.begin_write().await.unwrap();
        in_tx!(tx, |tx, DB| {
            sqlx::query("UPDATE handoffs SET state = 'accepted' WHERE lead_id = 2")
                .execute(&mut **tx)
                .await
                .unwrap();
        });
        tx.commit().await.unwrap();
        let of = [CompanyOf {
            lead_id: 5,
            company: "ACME GMBH",
            domain: None,
        }];
        let found = store.same_company_with_sales(&of, &sales).await.unwrap();
        assert_eq!(ids(&found, 5), vec![1]);

        // The indexes follow a changed funnel: with `lead` a sales stage, lead 3 counts.
        let sales = vec!["lead".to_string(), "sql".to_string()];
        store.keep_sales_indexes(&sales).await.unwrap();
        let found = store.same_company_with_sales(&of, &sales).await.unwrap();
        assert_eq!(ids(&found, 5), vec![1, 3]);
        // Asked on the connection that changed the indexes: a reading connection may
        // still hold a read transaction on the schema from before.
        let super::super::Db::Sqlite {
            write_pool: pool, ..
        } = &*store.db
        else {
            return;
        };
        let (sql,): (String,) =
            sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = 'leads_sales_company'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(sql.contains("'lead', 'sql'"), "{sql}");
        // SQLite sees that the lookups may use the partial indexes.
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT id FROM leads WHERE lower(trim(company)) = ? \
             AND stage IN ('lead', 'sql') UNION SELECT lead_id FROM handoffs \
             WHERE company_key = ? AND state IN ('new', 'open', 'escalated')",
        )
        .bind("acme gmbh")
        .bind("acme gmbh")
        .fetch_all(pool)
        .await
        .unwrap();
        let plan: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            plan.iter().any(|p| p.contains("leads_sales_company"))
                && plan.iter().any(|p| p.contains("handoffs_open_company")),
            "{plan:?}"
        );
    }
}
