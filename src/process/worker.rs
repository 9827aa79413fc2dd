//! The processing worker.
//!
//! A batch is split by lead into shards that run on separate threads (events of one
//! lead stay in order in one shard), and written in one transaction that also checks
//! the processing lease. While one batch is written, the next is evaluated. Leads stay
//! in a bounded cache between batches, so a busy lead is not read back from the
//! database for every batch; the cache is dropped whenever a write fails.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use serde_json::Value;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::history::{HistoryCache, Past, StoreHistory};
use crate::clock::{SharedClock, from_ms};
use crate::domain::{Changes, Funnel, Lead, Traits};
use crate::ingest::NewLeads;
use crate::mail::StreamPlan;
use crate::rules::run::{json_map, run_event};
use crate::rules::{Context, EventView, RuleError, RuleSet, Rules, Sandbox};
use crate::store::{Lease, LeaseHeld, PendingEvent, Store, StoreError, build};

/// Leads kept in memory between batches.
const CACHE_LEADS: usize = 50_000;
/// Below this many events a batch is not worth splitting across threads.
const MIN_SHARD: usize = 64;

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
    /// Signalled when mail was queued or stream memberships changed.
    pub mail_wake: Arc<Notify>,
    /// Woken when a handoff was asked for (the sales desk assigns it).
    pub handoff_wake: Arc<Notify>,
    /// The nurture streams, for moving leads between them.
    pub plan: Arc<StreamPlan>,
    /// Lead state as last written; guarded by `lead_lock`.
    cache: std::sync::Mutex<LruCache<i64, Lead>>,
    /// The processing lease, while this process holds it; every write checks it.
    lease: std::sync::Mutex<Option<Lease>>,
    /// Recent events per lead, for counting.
    pub(super) history: Arc<HistoryCache>,
    shards: usize,
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

/// Why a batch could not be processed (nothing of it was written).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rule evaluation crashed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}; the batch is tried again")]
    Transient(RuleError),
}

/// A lead to write after a batch; `profile` says whether more than its funnel state
/// changed.
pub(super) struct Changed {
    pub lead: Lead,
    pub profile: bool,
}

/// One shard's result: the leads changed, and per-event outcomes.
type ShardResult = (Vec<Changed>, Vec<EventOutcome>);

impl Processor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        rules: Arc<Rules>,
        sandbox: Arc<Sandbox>,
        funnel: Arc<Funnel>,
        clock: SharedClock,
        batch_size: usize,
        poll_interval: Duration,
        history_events: usize,
    ) -> Self {
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Self {
            store,
            rules,
            sandbox,
            funnel,
            clock,
            batch_size,
            poll_interval,
            lead_lock: Arc::new(Mutex::new(())),
            wake: Arc::new(Notify::new()),
            mail_wake: Arc::new(Notify::new()),
            handoff_wake: Arc::new(Notify::new()),
            plan: Arc::new(StreamPlan::default()),
            cache: std::sync::Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_LEADS).expect("non-zero"),
            )),
            history: Arc::new(HistoryCache::new(history_events)),
            lease: std::sync::Mutex::new(None),
            shards,
        }
    }

    /// Sets the nurture streams leads move between.
    pub fn with_streams(mut self, plan: StreamPlan) -> Self {
        self.plan = Arc::new(plan);
        self
    }

    /// Where leads seen for the first time start.
    pub fn new_leads(&self) -> NewLeads<'_> {
        NewLeads {
            stage: self.funnel.initial(),
            streams: Some(&self.plan),
        }
    }

    /// Wakes the mailer and the sales desk when written changes give them work.
    pub(super) fn wake<'a>(&self, written: impl IntoIterator<Item = &'a Changes>) {
        let (mut mail, mut sales) = (false, false);
        for c in written {
            mail |= c.has_mail();
            sales |= !c.handoffs.is_empty() || c.handoff_settled.is_some();
        }
        if mail {
            self.mail_wake.notify_one();
        }
        if sales {
            self.handoff_wake.notify_one();
        }
    }

    /// What a rule run needs besides the lead.
    pub(super) fn context(&self) -> Context {
        Context {
            funnel: self.funnel.clone(),
            history: Arc::new(StoreHistory::new(self.store.clone(), self.history.clone())),
            streams: Arc::new(self.plan.names()),
            teams: Arc::new(self.plan.teams.clone()),
        }
    }

    /// Takes the processing lease (see [`crate::store::lease`]); processing writes
    /// nothing without it.
    pub async fn take_lease(&self, tag: &str) -> Result<Result<(), LeaseHeld>, StoreError> {
        let got = self.store.acquire_lease(tag).await?;
        Ok(got.map(|lease| {
            *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        }))
    }

    /// Extends the lease while idle; false when it is not held (any more).
    pub async fn renew_lease(&self) -> Result<bool, StoreError> {
        match self.held_lease() {
            Ok(lease) => self.store.renew_lease(&lease).await,
            Err(_) => Ok(false),
        }
    }

    /// Gives the lease up; call after processing stopped.
    pub async fn give_up_lease(&self) -> Result<(), StoreError> {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        match lease {
            Some(lease) => self.store.release_lease(&lease).await,
            None => Ok(()),
        }
    }

    pub fn held_lease(&self) -> Result<Lease, StoreError> {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::LeaseLost)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LruCache<i64, Lead>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets cached lead state (after a write failed, or state changed elsewhere).
    pub fn forget_leads(&self, ids: Option<&[i64]>) {
        let mut cache = self.cache();
        match ids {
            None => {
                cache.clear();
                self.history.clear();
            }
            Some(ids) => {
                for id in ids {
                    cache.pop(id);
                }
            }
        }
    }

    /// Remembers leads as just written.
    pub(super) fn remember(&self, leads: impl IntoIterator<Item = Lead>) {
        let mut cache = self.cache();
        for lead in leads {
            cache.put(lead.id, lead);
        }
    }

    /// Current state of the given leads: from the cache, the rest from the store.
    pub(super) async fn load_leads(&self, ids: &[i64]) -> Result<HashMap<i64, Lead>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.cache();
            for id in ids {
                match cache.get(id) {
                    Some(l) => {
                        found.insert(*id, l.clone());
                    }
                    None => missing.push(*id),
                }
            }
        }
        if !missing.is_empty() {
            found.extend(self.store.leads_by_ids(&missing).await?);
        }
        Ok(found)
    }

    /// Processes up to `batch_size` pending events. Returns what happened to each.
    pub async fn run_once(&self) -> Result<BatchOutcome, ProcessError> {
        let _lock = self.lead_lock.lock().await;
        let lease = self.held_lease()?;
        let Some(batch) = self.prepare(None).await? else {
            return Ok(BatchOutcome::default());
        };
        let (batch, written) = write_batch(
            self.store.clone(),
            lease,
            self.plan.clone(),
            self.clock.now(),
            batch,
        )
        .await;
        self.finish(batch, written)
    }

    /// Reads the next pending events (after `after`, when a batch is still being
    /// written) and runs the rules on them. The lead cache then holds the results.
    #[tracing::instrument(skip_all)]
    async fn prepare(&self, after: Option<i64>) -> Result<Option<Prepared>, ProcessError> {
        let started = Instant::now();
        let events = self.store.pending_events(after, self.batch_size).await?;
        if events.is_empty() {
            return Ok(None);
        }
        let mut ids: Vec<i64> = events.iter().map(|e| e.lead_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut leads = self.load_leads(&ids).await?;
        let oldest = events
            .iter()
            .map(|e| e.occurred_at)
            .min()
            .unwrap_or_default();
        let since = from_ms(oldest) - chrono::Duration::days(super::history::COVERED_DAYS);
        self.history.prefetch(&self.store, &ids, since).await?;
        let loaded = started.elapsed();

        let ctx = self.context();
        let rules = self.rules.current();
        let count = events.len();
        let last_seq = events.iter().map(|e| e.seq).max().unwrap_or_default();
        let shards = if count < MIN_SHARD { 1 } else { self.shards };
        let mut work: Vec<(Vec<PendingEvent>, HashMap<i64, Lead>)> =
            (0..shards).map(|_| (Vec::new(), HashMap::new())).collect();
        for e in events {
            let shard = (e.lead_id as u64 % shards as u64) as usize;
            if let Some(lead) = leads.remove(&e.lead_id) {
                work[shard].1.insert(e.lead_id, lead);
            }
            work[shard].0.push(e);
        }
        let mut tasks = Vec::with_capacity(shards);
        for (events, leads) in work {
            let (sandbox, rules, ctx) = (self.sandbox.clone(), rules.clone(), ctx.clone());
            let (history, plan) = (self.history.clone(), self.plan.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                let shard = Shard {
                    sandbox: &sandbox,
                    rules: &rules,
                    ctx: &ctx,
                    history: &history,
                    plan: &plan,
                };
                shard.evaluate(leads, events)
            }));
        }
        let mut saved: Vec<Changed> = Vec::new();
        let mut outcomes = Vec::with_capacity(count);
        for t in tasks {
            let (changed, shard_outcomes) = t.await?;
            saved.extend(changed);
            outcomes.extend(shard_outcomes);
        }
        outcomes.sort_unstable_by_key(|o: &EventOutcome| o.seq);
        if let Some(e) = outcomes
            .iter()
            .find_map(|o| o.result.as_ref().err().filter(|e| e.transient))
        {
            return Err(ProcessError::Transient(e.clone()));
        }
        // Later batches start from these results, even before they are written.
        self.remember(saved.iter().map(|c| c.lead.clone()));
        tracing::debug!(
            events = count,
            leads = saved.len(),
            load_ms = loaded.as_secs_f64() * 1e3,
            rules_ms = (started.elapsed() - loaded).as_secs_f64() * 1e3,
            "batch evaluated"
        );
        Ok(Some(Prepared {
            saved,
            outcomes,
            last_seq,
        }))
    }

    /// After a batch's write: on failure, forget everything cached (it may be ahead
    /// of the store); on success, report failed events.
    fn finish(
        &self,
        batch: Prepared,
        written: Result<(), StoreError>,
    ) -> Result<BatchOutcome, ProcessError> {
        if let Err(e) = written {
            self.forget_leads(None);
            return Err(e.into());
        }
        self.wake(batch.outcomes.iter().filter_map(|o| o.result.as_ref().ok()));
        for o in &batch.outcomes {
            match &o.result {
                Err(e) => {
                    tracing::warn!(seq = o.seq, lead_id = o.lead_id, error = %e, "event failed; fix the rule, then `nurtured events retry`");
                }
                Ok(changes) => {
                    for a in &changes.actions {
                        if let crate::domain::change::Outcome::Skipped(why) = &a.outcome {
                            tracing::info!(seq = o.seq, lead_id = o.lead_id, action = %a.action, source = %a.source, "action skipped: {why}");
                        }
                    }
                }
            }
        }
        Ok(BatchOutcome {
            events: batch.outcomes,
        })
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
    ///
    /// While one batch is written, the next is read and evaluated. The lead lock is held
    /// for as long as batches follow each other (at most [`MAX_RUN`] in a row), so API
    /// changes and jobs never see results that are not written yet.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.run_pipelined().await {
                Ok(0) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.poll_interval) => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(500),
                Err(ProcessError::Store(StoreError::LeaseLost)) => {
                    // Another process took over: stop writing, and take the lease back
                    // only once it is free again.
                    self.forget_leads(None);
                    *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    tracing::error!(
                        "lost the processing lease to another process; processing paused until it is free"
                    );
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                        match self.take_lease("daemon").await {
                            Ok(Ok(())) => {
                                tracing::info!("processing lease taken back; processing again");
                                break;
                            }
                            Ok(Err(held)) => {
                                tracing::debug!(holder = %held.holder, "lease still held")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot check the processing lease")
                            }
                        }
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

    /// Up to [`MAX_RUN`] batches, each written while the next is evaluated. Returns
    /// the number of events processed.
    async fn run_pipelined(&self) -> Result<usize, ProcessError> {
        let _lock = self.lead_lock.lock().await;
        let lease = self.held_lease()?;
        let mut done = 0;
        let mut writing: Option<(i64, Writing)> = None;
        for _ in 0..MAX_RUN {
            let next = self.prepare(writing.as_ref().map(|(last, _)| *last)).await;
            if let Some((_, write)) = writing.take() {
                let (batch, written) = self.joined(write.await)?;
                done += self.finish(batch, written)?.events.len();
            }
            let Some(batch) = next? else {
                return Ok(done);
            };
            let last = batch.last_seq;
            let write = write_batch(
                self.store.clone(),
                lease.clone(),
                self.plan.clone(),
                self.clock.now(),
                batch,
            );
            writing = Some((last, tokio::spawn(write)));
        }
        if let Some((_, write)) = writing {
            let (batch, written) = self.joined(write.await)?;
            done += self.finish(batch, written)?.events.len();
        }
        Ok(done)
    }

    /// A write task that panicked leaves the caches ahead of the store: forget them.
    fn joined<T>(&self, joined: Result<T, tokio::task::JoinError>) -> Result<T, ProcessError> {
        joined.map_err(|e| {
            self.forget_leads(None);
            ProcessError::Join(e)
        })
    }
}

/// Batches processed in a row before the lead lock is let go once.
const MAX_RUN: usize = 10;

/// A batch being written: the task hands the batch back with the result.
type Writing = tokio::task::JoinHandle<(Prepared, Result<(), StoreError>)>;

/// A batch evaluated but not yet written.
struct Prepared {
    saved: Vec<Changed>,
    outcomes: Vec<EventOutcome>,
    last_seq: i64,
}

/// Writes a batch's results in one transaction.
async fn write_batch(
    store: Store,
    lease: Lease,
    plan: Arc<StreamPlan>,
    now: chrono::DateTime<chrono::Utc>,
    batch: Prepared,
) -> (Prepared, Result<(), StoreError>) {
    let started = Instant::now();
    let result = write(&store, &lease, &plan, now, &batch).await;
    tracing::debug!(
        events = batch.outcomes.len(),
        write_ms = started.elapsed().as_secs_f64() * 1e3,
        "batch written"
    );
    (batch, result)
}

async fn write(
    store: &Store,
    lease: &Lease,
    plan: &StreamPlan,
    now: chrono::DateTime<chrono::Utc>,
    batch: &Prepared,
) -> Result<(), StoreError> {
    // Leads whose contact data changed are written whole, the rest only their funnel
    // state.
    let full: Vec<&Lead> = batch
        .saved
        .iter()
        .filter(|c| c.profile)
        .map(|c| &c.lead)
        .collect();
    let states: Vec<&Lead> = batch
        .saved
        .iter()
        .filter(|c| !c.profile)
        .map(|c| &c.lead)
        .collect();
    let records: Vec<(i64, Option<i64>, &Changes)> = batch
        .outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(|c| (o.lead_id, Some(o.seq), c)))
        .collect();
    let processed: Vec<i64> = batch
        .outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.seq)
        .collect();
    let failed: Vec<(i64, String)> = batch
        .outcomes
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
    let statements = build::leads(&full)
        .and(build::lead_states(&states))
        .and(build::changes(&records))
        .and(build::mails(&records, &plan.params, now))
        .and(build::handoffs(&records, now));
    let finished = build::finished(&processed, &failed, now);
    let waited = Instant::now();
    let mut tx = store.begin_write().await?;
    let held = Instant::now();
    tx.hold_lease(lease).await?;
    tx.execute(statements).await?;
    // Every event of the batch must still have been pending; anything else means
    // another process got to them.
    if tx.execute(finished).await? != batch.outcomes.len() as u64 {
        return Err(StoreError::LeaseLost);
    }
    let done = tx.commit().await;
    tracing::debug!(
        wait_ms = (held - waited).as_secs_f64() * 1e3,
        held_ms = held.elapsed().as_secs_f64() * 1e3,
        "batch write held the writer"
    );
    done
}

/// What evaluating one shard needs.
struct Shard<'a> {
    sandbox: &'a Sandbox,
    rules: &'a RuleSet,
    ctx: &'a Context,
    history: &'a HistoryCache,
    plan: &'a StreamPlan,
}

impl Shard<'_> {
    /// Runs the rules for each event of one shard in order. Returns the final state of
    /// the leads changed by at least one successful event, and each event's outcome.
    fn evaluate(&self, mut leads: HashMap<i64, Lead>, events: Vec<PendingEvent>) -> ShardResult {
        let mut outcomes = Vec::with_capacity(events.len());
        // Lead id -> whether its profile (not only its funnel state) changed.
        let mut touched: HashMap<i64, bool> = HashMap::new();
        for row in events {
            let result = match leads.get(&row.lead_id) {
                None => Err(RuleError::new(
                    "event",
                    format!("lead {} of this event no longer exists", row.lead_id),
                )),
                Some(before) => self
                    .evaluate_event(before, &row)
                    .map(|(after, changes)| (!before.same_profile(&after), after, changes)),
            };
            let result = result.map(|(profile, lead, changes)| {
                *touched.entry(lead.id).or_default() |= profile;
                leads.insert(lead.id, lead);
                changes
            });
            outcomes.push(EventOutcome {
                seq: row.seq,
                lead_id: row.lead_id,
                result,
            });
        }
        let changed = leads
            .into_iter()
            .filter_map(|(id, lead)| touched.get(&id).map(|&profile| Changed { lead, profile }))
            .collect();
        (changed, outcomes)
    }

    fn evaluate_event(
        &self,
        lead: &Lead,
        row: &PendingEvent,
    ) -> Result<(Lead, Changes), RuleError> {
        let history = self.history;
        let at = from_ms(row.occurred_at);
        // The event counts in the lead's history from now on, whatever the rules make of it.
        history.record(
            row.lead_id,
            Past {
                seq: row.seq,
                name: history.name(&row.name),
                at: row.occurred_at,
                properties: row.properties.as_str().into(),
            },
        );
        fn stored(what: &'static str) -> impl Fn(String) -> RuleError {
            move |e| RuleError::new("event", format!("stored {what} are not a JSON object: {e}"))
        }
        let before = lead;
        let consented = lead.consent_email.granted;
        // Identify traits change the lead before the rules see it.
        let identified;
        let lead = match row.traits.as_deref() {
            Some(text) if row.kind == "identify" => {
                let obj: serde_json::Map<String, Value> =
                    serde_json::from_str(text).map_err(|e| stored("traits")(e.to_string()))?;
                let parsed = Traits::parse(&obj, "traits").map_err(|errs| {
                    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
                    RuleError::new("event", text.join("; "))
                })?;
                let mut changed = lead.clone();
                changed.apply_traits(&parsed, at, "identify");
                identified = changed;
                &identified
            }
            _ => lead,
        };
        let view = EventView {
            seq: row.seq,
            kind: row.kind.clone(),
            name: row.name.clone(),
            message_id: row.message_id.clone(),
            properties: json_map(Some(&row.properties)).map_err(stored("properties"))?,
            traits: json_map(row.traits.as_deref()).map_err(stored("traits"))?,
            context: json_map(row.context.as_deref()).map_err(stored("context"))?,
            at,
        };
        let mut eval = run_event(self.sandbox, self.rules, self.ctx, lead, &view)?;
        self.plan
            .follow(before, &eval.lead, Some(&row.name), &mut eval.changes);
        // Consent withdrawn through a form or the CRM ends the streams, as an
        // unsubscribe link does.
        if !consented && eval.lead.consent_email.granted {
            // Streams waiting for consent go on.
            let resume = self.plan.on_consent(&eval.lead);
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
        Ok((eval.lead, eval.changes))
    }
}
