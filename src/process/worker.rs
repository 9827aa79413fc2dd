//! The processing worker: one batch at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::history::StoreHistory;
use crate::clock::{SharedClock, from_ms};
use crate::domain::{Changes, Funnel, Lead, Traits};
use crate::rules::{Context, EventView, RuleError, Rules, Sandbox, run::run_event};
use crate::store::{EventRow, Store, StoreError};

/// Everything processing needs.
pub struct Processor {
    pub store: Store,
    pub rules: Arc<Rules>,
    pub sandbox: Arc<Sandbox>,
    pub funnel: Arc<Funnel>,
    pub clock: SharedClock,
    pub batch_size: usize,
    pub poll_interval: Duration,
    /// Held while lead state is read, changed and written, so batches, API changes and
    /// scheduled jobs never overwrite each other.
    pub lead_lock: Arc<Mutex<()>>,
    /// Signalled when events were stored.
    pub wake: Arc<Notify>,
}

/// What happened to one event.
#[derive(Debug)]
pub struct EventOutcome {
    pub seq: i64,
    pub lead_id: i64,
    pub result: Result<Changes, RuleError>,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub events: Vec<EventOutcome>,
}

impl BatchOutcome {
    pub fn failed(&self) -> usize {
        self.events.iter().filter(|e| e.result.is_err()).count()
    }
}

/// Why a batch could not be processed (nothing of it was written).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rule evaluation crashed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Processor {
    /// Processes up to `batch_size` pending events. Returns what happened to each.
    #[tracing::instrument(skip_all)]
    pub async fn run_once(&self) -> Result<BatchOutcome, ProcessError> {
        let _lock = self.lead_lock.lock().await;
        let events = self.store.pending_events(self.batch_size).await?;
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut ids: Vec<i64> = events.iter().map(|e| e.lead_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let leads = self.store.leads_by_ids(&ids).await?;

        let ctx = Context {
            funnel: self.funnel.clone(),
            history: Arc::new(StoreHistory::new(self.store.clone())),
        };
        let (sandbox, rules) = (self.sandbox.clone(), self.rules.current());
        let (leads, outcomes, touched) = tokio::task::spawn_blocking(move || {
            evaluate_batch(&sandbox, &rules, &ctx, leads, events)
        })
        .await?;

        let now = self.clock.now();
        let saved: Vec<&Lead> = touched.iter().filter_map(|id| leads.get(id)).collect();
        let records: Vec<(i64, Option<i64>, &Changes)> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|c| (o.lead_id, Some(o.seq), c)))
            .collect();
        let processed: Vec<i64> = outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.seq)
            .collect();
        let failed: Vec<(i64, String)> = outcomes
            .iter()
            .filter_map(|o| {
                o.result.as_ref().err().map(|e| {
                    (
                        o.seq,
                        serde_json::to_string(e).expect("rule errors serialise"),
                    )
                })
            })
            .collect();
        let mut tx = self.store.begin_write().await?;
        tx.save_leads(&saved).await?;
        tx.record_changes(&records).await?;
        tx.finish_events(&processed, &failed, now).await?;
        tx.commit().await?;
        for o in &outcomes {
            if let Err(e) = &o.result {
                tracing::warn!(seq = o.seq, lead_id = o.lead_id, error = %e, "event failed; fix the rule, then `nurtured events retry`");
            }
        }
        Ok(BatchOutcome { events: outcomes })
    }

    /// Processes until the queue is empty; returns the number of events handled.
    pub async fn drain(&self) -> Result<usize, ProcessError> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?.events.len();
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Runs batches until `shutdown`; sleeps until woken or `poll_interval` passes
    /// (events stored by another process are found by polling).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.run_once().await {
                Ok(outcome) if !outcome.events.is_empty() => {
                    backoff = Duration::from_millis(500);
                    continue;
                }
                Ok(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.poll_interval) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "processing a batch failed; nothing of it was written, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Runs the rules for each event in order. Returns the leads' final state, each
/// event's outcome, and the ids of leads changed by at least one successful event.
fn evaluate_batch(
    sandbox: &Sandbox,
    rules: &crate::rules::RuleSet,
    ctx: &Context,
    mut leads: HashMap<i64, Lead>,
    events: Vec<EventRow>,
) -> (HashMap<i64, Lead>, Vec<EventOutcome>, Vec<i64>) {
    let mut outcomes = Vec::with_capacity(events.len());
    let mut touched = Vec::new();
    let mut seen = HashSet::new();
    for row in events {
        let result = match leads.get(&row.lead_id) {
            None => Err(RuleError::new(
                "event",
                format!("lead {} of this event no longer exists", row.lead_id),
            )),
            Some(lead) => evaluate_event(sandbox, rules, ctx, lead, &row),
        };
        let result = result.map(|(lead, changes)| {
            if seen.insert(lead.id) {
                touched.push(lead.id);
            }
            leads.insert(lead.id, lead);
            changes
        });
        outcomes.push(EventOutcome {
            seq: row.seq,
            lead_id: row.lead_id,
            result,
        });
    }
    (leads, outcomes, touched)
}

fn evaluate_event(
    sandbox: &Sandbox,
    rules: &crate::rules::RuleSet,
    ctx: &Context,
    lead: &Lead,
    row: &EventRow,
) -> Result<(Lead, Changes), RuleError> {
    let parse = |text: Option<&str>, what: &str| -> Result<Value, RuleError> {
        match text {
            None => Ok(Value::Null),
            Some(t) => serde_json::from_str(t)
                .map_err(|e| RuleError::new("event", format!("stored {what} are not JSON: {e}"))),
        }
    };
    let at = from_ms(row.occurred_at);
    let traits = parse(row.traits.as_deref(), "traits")?;
    let mut lead = lead.clone();
    if row.kind == "identify"
        && let Value::Object(obj) = &traits
    {
        let parsed = Traits::parse(obj, "traits").map_err(|errs| {
            let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
            RuleError::new("event", text.join("; "))
        })?;
        lead.apply_traits(&parsed, at, "identify");
    }
    let view = EventView {
        seq: row.seq,
        kind: row.kind.clone(),
        name: row.name.clone(),
        message_id: row.message_id.clone(),
        properties: parse(Some(&row.properties), "properties")?,
        traits,
        context: parse(row.context.as_deref(), "context")?,
        at,
    };
    let eval = run_event(sandbox, rules, ctx, &lead, &view)?;
    Ok((eval.lead, eval.changes))
}
