//! Running the rules for one lead's events, in their order, each starting from the
//! state the one before left. The lead's history is the lead's own (taken from the
//! cache with the lead's lock), so counting needs no lock and no query.
//!
//! A job stops early when its events took longer than [`BUDGET`] (the rest go back to
//! the lead's queue, so the lead's lock is let go in between), and reports an event
//! that took longer than [`SLOW_EVENT`] (a rule that ran into its limits), so the
//! dispatcher moves that lead's later work to the slow lane.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::history::{JobHistory, LeadHistory, Recorded, StoreHistory};
use super::locks::{LeadGuard, Shared};
use crate::clock::from_ms;
use crate::domain::{Changes, Lead, Traits};
use crate::mail::StreamPlan;
use crate::rules::run::{json_map, run_event_files};
use crate::rules::{Context, Evaluation, EventView, RuleError, RuleSet, Sandbox, ShadowRun};
use crate::store::{PastEvent, PendingEvent};

/// Work per job before the lead's lock is let go once.
pub const BUDGET: Duration = Duration::from_millis(20);
/// An event that took this long marks its lead as slow.
pub const SLOW_EVENT: Duration = Duration::from_millis(25);

/// What happened to one event.
#[derive(Debug)]
pub struct EventOutcome {
    pub seq: i64,
    pub lead_id: i64,
    /// An error here failed the event as a whole (nothing of it applies).
    pub result: Result<Changes, RuleError>,
    /// Live rule files that failed for the event: their changes were dropped, the
    /// others' (in `result`) apply; the event is kept as failed for these files.
    pub failed_rules: Vec<RuleError>,
    /// What the shadow files would have done.
    pub shadow: Vec<ShadowRun>,
}

/// Where a job's history comes from.
pub enum HistorySource {
    /// Held in the cache.
    Held(LeadHistory),
    /// Read from the store: built on the rule thread (parsing the properties is work).
    Rows(Vec<PastEvent>, i64),
    /// Too long to hold: counts go to the store.
    Store,
}

impl HistorySource {
    fn into_history(self) -> Option<LeadHistory> {
        match self {
            HistorySource::Held(h) => Some(h),
            HistorySource::Rows(rows, through) => Some(LeadHistory::from_rows(rows, through)),
            HistorySource::Store => None,
        }
    }
}

/// One lead's events to process, with what the lead's lock protects.
pub struct Job {
    pub guard: LeadGuard,
    pub gate: Shared,
    pub lead_id: i64,
    /// The lead as committed; `None` when it no longer exists.
    pub lead: Option<Lead>,
    /// Its history (complete up to the first event's predecessor).
    pub history: HistorySource,
    pub events: Vec<PendingEvent>,
    /// Stop after [`BUDGET`] (the daemon); off for single batches run to the end.
    pub budgeted: bool,
}

/// A job's result, on its way to the commit.
pub struct Done {
    /// `None` only after a crash (the lock was let go while unwinding).
    pub guard: Option<LeadGuard>,
    pub gate: Option<Shared>,
    pub lead_id: i64,
    /// The lead after the successful events (as committed when none succeeded).
    pub lead: Option<Lead>,
    /// Whether the lead is to be written, and whether more than its funnel state
    /// changed.
    pub write: Option<bool>,
    pub history: Option<LeadHistory>,
    /// The events processed, in order, and their outcomes.
    pub events: Vec<PendingEvent>,
    pub outcomes: Vec<EventOutcome>,
    /// Events not started (the budget ran out), for the lead's queue.
    pub leftover: Vec<PendingEvent>,
    /// An event took longer than [`SLOW_EVENT`].
    pub slow: bool,
    /// The daemon, not a rule, failed: nothing of this job is to be written.
    pub transient: Option<RuleError>,
}

impl Job {
    pub fn seqs(&self) -> Vec<i64> {
        self.events.iter().map(|e| e.seq).collect()
    }
}

impl Done {
    /// A job not started (the daemon stops): its events stay pending.
    pub fn untouched(job: Job) -> Self {
        Done {
            guard: Some(job.guard),
            gate: Some(job.gate),
            lead_id: job.lead_id,
            lead: None,
            write: None,
            history: None,
            events: Vec::new(),
            outcomes: Vec::new(),
            leftover: job.events,
            slow: false,
            transient: None,
        }
    }

    /// A job whose evaluation panicked: its events fail with the panic's message, and
    /// the lead stays as committed.
    pub fn crashed(lead_id: i64, seqs: &[i64], panic: &(dyn std::any::Any + Send)) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        tracing::error!(lead_id, error = %message, "processing crashed; the lead's events are marked failed");
        Done {
            guard: None,
            gate: None,
            lead_id,
            lead: None,
            write: None,
            history: None,
            events: Vec::new(),
            outcomes: seqs
                .iter()
                .map(|&seq| EventOutcome {
                    seq,
                    lead_id,
                    result: Err(RuleError::new(
                        "event",
                        format!("processing crashed ({message}); report this, then `nurtured events retry`"),
                    )),
                    failed_rules: Vec::new(),
                    shadow: Vec::new(),
                })
                .collect(),
            leftover: Vec::new(),
            slow: true,
            transient: None,
        }
    }
}

/// What evaluating needs besides the job.
pub struct Evaluator<'a> {
    pub sandbox: &'a Sandbox,
    pub rules: &'a RuleSet,
    pub context: &'a Context,
    pub plan: &'a StreamPlan,
    pub store_history: &'a dyn Fn() -> StoreHistory,
}

impl Evaluator<'_> {
    pub fn run(&self, job: Job) -> Done {
        let Job {
            guard,
            gate,
            lead_id,
            lead,
            history,
            events,
            budgeted,
        } = job;
        let history = Arc::new(JobHistory::new(
            lead_id,
            history.into_history(),
            (self.store_history)(),
        ));
        let ctx = Context {
            history: history.clone(),
            ..self.context.clone()
        };
        let started = Instant::now();
        let mut current = lead.clone();
        let mut write: Option<bool> = None;
        let mut outcomes = Vec::with_capacity(events.len());
        let mut slow = false;
        let mut transient = None;
        let mut done_events = Vec::with_capacity(events.len());
        let mut rest = events.into_iter();
        for row in rest.by_ref() {
            let Some(before) = current.as_ref() else {
                // The lead was erased (see `super::erase`) after its event was read:
                // the event is dropped, and nothing of it is kept, in memory or stored.
                outcomes.push(EventOutcome {
                    seq: row.seq,
                    lead_id,
                    result: Ok(Changes::default()),
                    failed_rules: Vec::new(),
                    shadow: Vec::new(),
                });
                done_events.push(row);
                continue;
            };
            let at = Instant::now();
            history.record(&Recorded {
                seq: row.seq,
                at: row.occurred_at,
                name: &row.name,
                properties: &row.properties,
            });
            let result = evaluate_event(self, &ctx, before, &row)
                .map(|eval| (!before.same_profile(&eval.lead), eval));
            let took = at.elapsed();
            slow |= took >= SLOW_EVENT;
            let (mut failed_rules, mut shadow) = (Vec::new(), Vec::new());
            let result = match result {
                Ok((profile, eval)) => {
                    *write.get_or_insert(false) |= profile;
                    current = Some(eval.lead);
                    failed_rules = eval.failed;
                    shadow = eval.shadow;
                    Ok(eval.changes)
                }
                Err(e) if e.transient => {
                    transient = Some(e);
                    done_events.push(row);
                    break;
                }
                Err(e) => Err(e),
            };
            outcomes.push(EventOutcome {
                seq: row.seq,
                lead_id,
                result,
                failed_rules,
                shadow,
            });
            done_events.push(row);
            if budgeted && started.elapsed() >= BUDGET {
                break;
            }
        }
        let mut leftover: Vec<PendingEvent> = rest.collect();
        if transient.is_some() {
            // Nothing of this job is written: every event goes back.
            done_events.append(&mut leftover);
            leftover = done_events;
            done_events = Vec::new();
            outcomes.clear();
            write = None;
            current = lead;
        }
        drop(ctx);
        let history = Arc::try_unwrap(history)
            .ok()
            .and_then(JobHistory::into_held)
            .map(|mut h| {
                h.shrink();
                h
            });
        Done {
            guard: Some(guard),
            gate: Some(gate),
            lead_id,
            lead: current,
            write,
            history: if transient.is_some() { None } else { history },
            events: done_events,
            outcomes,
            leftover,
            slow,
            transient,
        }
    }
}

fn stored(what: &'static str) -> impl Fn(String) -> RuleError {
    move |e| RuleError::new("event", format!("stored {what} are not a JSON object: {e}"))
}

/// Runs the rules for one event on `lead`; the changed lead and what changed.
fn evaluate_event(
    ev: &Evaluator<'_>,
    ctx: &Context,
    lead: &Lead,
    row: &PendingEvent,
) -> Result<Evaluation, RuleError> {
    let at = from_ms(row.occurred_at);
    // A retry of the rule files that failed for the event: only they run, on the lead
    // as it is now (its traits were applied when the event was processed).
    let only = retry_files(row)?;
    let identified = match only {
        None => identify(lead, row.kind == "identify", row.traits.as_deref(), at)?,
        Some(_) => None,
    };
    let view = event_view(row)?;
    let eval = run_event_files(
        ev.sandbox,
        ev.rules,
        ctx,
        identified.as_ref().unwrap_or(lead),
        &view,
        only.as_deref(),
    )?;
    Ok(settle(ev.plan, lead, eval, &row.name, row.history))
}
/// The lead as an identify event's traits change it before the rules see it (`None`
/// for other events: the lead as it is).
pub(crate) fn identify(
    lead: &Lead,
    is_identify: bool,
    traits: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Lead>, RuleError> {
    match traits {
        Some(text) if is_identify => {
            let obj: serde_json::Map<String, Value> =
                serde_json::from_str(text).map_err(|e| stored("traits")(e.to_string()))?;
            let parsed = Traits::parse(&obj, "traits").map_err(|errs| {
                let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
                RuleError::new("event", text.join("; "))
            })?;
            let mut changed = lead.clone();
            changed.apply_traits(&parsed, at, "identify");
            Ok(Some(changed))
        }
        _ => Ok(None),
    }
}

/// The event as rules see it, from its stored form.
pub(crate) fn event_view(row: &PendingEvent) -> Result<EventView, RuleError> {
    Ok(EventView {
        seq: row.seq,
        kind: row.kind.clone(),
        name: row.name.clone(),
        message_id: row.message_id.clone(),
        properties: json_map(Some(&row.properties)).map_err(stored("properties"))?,
        traits: json_map(row.traits.as_deref()).map_err(stored("traits"))?,
        context: json_map(row.context.as_deref()).map_err(stored("context"))?,
        at: from_ms(row.occurred_at),
    })
}

/// What follows from the rules' result for an event named `name` on the lead that was
/// `before`: stream moves, consent given or withdrawn, and for an event taken in as
/// history only its scores, stages and tags.
pub(crate) fn settle(
    plan: &StreamPlan,
    before: &Lead,
    mut eval: Evaluation,
    name: &str,
    history: bool,
) -> Evaluation {
    let consented = before.consent_email.granted;
    plan.follow(before, &eval.lead, Some(name), &mut eval.changes);
    // Consent given through a form or the CRM lets waiting streams go on; consent
    // withdrawn ends them, as an unsubscribe link does.
    if !consented && eval.lead.consent_email.granted {
        let resume = plan.on_consent(&eval.lead);
        eval.changes.streams.extend(resume);
    }
    if consented && !eval.lead.consent_email.granted {
        let source = eval
            .lead
            .consent_email
            .source
            .as_deref()
            .unwrap_or("identify");
        eval.changes
            .streams
            .push(crate::domain::StreamChange::Exit {
                stream: None,
                reason: format!("consent withdrawn ({source})"),
            });
    }
    if history {
        crate::process::history_only::strip(&mut eval.changes);
        for run in &mut eval.shadow {
            if let Ok(c) = &mut run.result {
                crate::process::history_only::strip(c);
            }
        }
    }
    eval
}

/// The rule files to run again for a retried event that failed for some files only.
fn retry_files(row: &PendingEvent) -> Result<Option<Vec<String>>, RuleError> {
    let Some(text) = row.retry_rules.as_deref() else {
        return Ok(None);
    };
    let errors: Vec<RuleError> =
        serde_json::from_str(text).map_err(|e| stored("rule failures")(e.to_string()))?;
    let names = errors
        .iter()
        .map(|e| e.file.rsplit('/').next().unwrap_or(&e.file).to_string())
        .collect();
    Ok(Some(names))
}
