//! The [`Processor`]: what every kind of work on leads shares (store, rules, the lead
//! cache, the per-lead locks, the processing lease), and the single batch
//! ([`Processor::run_once`]) that the command line and rule fixtures use. The daemon's
//! continuous processing is in [`super::pipeline`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::cache::{CacheUse, LeadCache, Slot};
use super::commit::write_group;
use super::compact::CompactLead;
use super::evaluate::{Done, Evaluator, EventOutcome, HistorySource, Job};
use super::feed::Feed;
use super::history::StoreHistory;
use super::locks::{Gate, LeadGuard, LeadLocks, Shared};
use super::pipeline::{QueueUse, Queues};
use crate::clock::SharedClock;
use crate::config::Memory;
use crate::domain::{Changes, Funnel, Lead};
use crate::ingest::NewLeads;
use crate::mail::StreamPlan;
use crate::rules::{Context, RuleError, Rules, Sandbox};
use crate::store::{Fence, Lease, LeaseHeld, PendingEvent, Store, StoreError};

/// Everything processing needs.
pub struct Processor {
    pub store: Store,
    pub rules: Arc<Rules>,
    pub sandbox: Arc<Sandbox>,
    pub funnel: Arc<Funnel>,
    pub clock: SharedClock,
    pub batch_size: usize,
    pub poll_interval: Duration,
    /// Held by whoever changes a lead, from reading it until the change is committed.
    pub locks: Arc<LeadLocks>,
    /// Shared by work on single leads; taken alone by changes to all leads.
    pub gate: Gate,
    /// Leads and their histories as committed.
    pub cache: Arc<LeadCache>,
    /// Signalled when events were stored.
    pub wake: Arc<Notify>,
    /// Events intake stored, handed over without a read (see [`super::feed`]).
    pub feed: Arc<Feed>,
    /// Signalled when mail was queued or stream memberships changed.
    pub mail_wake: Arc<Notify>,
    /// Woken when a handoff was asked for (the sales desk assigns it).
    pub handoff_wake: Arc<Notify>,
    /// The nurture streams, for moving leads between them.
    pub plan: Arc<StreamPlan>,
    /// Counters and histograms for `/metrics` (the sandbox's, or a registry of its own).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The processing lease, while this process holds it; every write checks it. In a
    /// cluster: the leader's lease.
    lease: std::sync::Mutex<Option<Lease>>,
    /// This daemon's part in a cluster of daemons (PostgreSQL).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// In a cluster: the shards the pipeline works on now.
    generation: std::sync::Mutex<Option<Arc<Vec<i32>>>>,
    /// The per-lead queues while the daemon's pipeline runs (for the counters).
    queues: std::sync::Mutex<Option<Arc<Queues>>>,
    pub(super) runtime: tokio::runtime::Handle,
}

/// Histories longer than this (in events) are read apart from other leads'.
const LONG_HISTORY: i64 = 2_000;
/// Roughly what an event takes in a held history, to decide before reading it.
const HISTORY_EVENT_BYTES: usize = 64;

/// Jobs ready to go, and leads whose long histories are still to be read.
pub(super) struct Prepared {
    pub jobs: Vec<Job>,
    pub long: Vec<(LeadGuard, Vec<PendingEvent>)>,
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

impl Processor {
    /// Must be called inside the runtime.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        rules: Arc<Rules>,
        sandbox: Arc<Sandbox>,
        funnel: Arc<Funnel>,
        clock: SharedClock,
        batch_size: usize,
        poll_interval: Duration,
        memory: Memory,
    ) -> Self {
        Self {
            store,
            rules,
            metrics: sandbox.metrics.clone().unwrap_or_default(),
            sandbox,
            funnel,
            clock,
            batch_size,
            poll_interval,
            locks: Arc::new(LeadLocks::default()),
            gate: Gate::default(),
            cache: Arc::new(LeadCache::new(memory.lead_cache())),
            wake: Arc::new(Notify::new()),
            feed: Arc::new(Feed::default()),
            mail_wake: Arc::new(Notify::new()),
            handoff_wake: Arc::new(Notify::new()),
            plan: Arc::new(StreamPlan::default()),
            lease: std::sync::Mutex::new(None),
            cluster: std::sync::OnceLock::new(),
            generation: std::sync::Mutex::new(None),
            queues: std::sync::Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Sets the nurture streams leads move between.
    pub fn with_streams(mut self, plan: StreamPlan) -> Self {
        self.plan = Arc::new(plan);
        self
    }

    /// Makes this processor a daemon of a cluster (before it runs).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
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

    /// Lets the mailer look at the outbox now (mail queued outside event processing).
    pub fn wake_mailer(&self) {
        self.mail_wake.notify_one();
    }

    /// Counting in the store, from a rule thread.
    pub(super) fn store_history(&self) -> StoreHistory {
        StoreHistory::new(self.store.clone(), self.runtime.clone())
    }

    /// What a rule run outside event processing needs (scheduled jobs, assignment
    /// rules): its counts go to the store.
    pub(super) fn context(&self) -> Context {
        Context {
            funnel: self.funnel.clone(),
            history: Arc::new(self.store_history()),
            streams: Arc::new(self.plan.names()),
            teams: Arc::new(self.plan.teams.clone()),
            topics: Arc::new(self.plan.topics.ids()),
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

    pub(super) fn set_queues(&self, queues: Option<Arc<Queues>>) {
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) = queues;
    }

    /// What the pipeline's queues and the lead cache hold now.
    pub fn usage(&self) -> (QueueUse, CacheUse) {
        let queues = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|q| q.usage())
            .unwrap_or_default();
        (queues, self.cache.usage())
    }

    /// Opens a write of leads changed outside event processing (the API, sales
    /// answers): it checks the lease; in a cluster, where any daemon may make such a
    /// change, the write checks the leads' versions instead
    /// ([`crate::store::WriteTx::claim_versions`]).
    pub async fn begin_lead_write(&self) -> Result<crate::store::WriteTx, StoreError> {
        if self.cluster.get().is_some() {
            return self.store.begin_write().await;
        }
        let lease = self.held_lease()?;
        let mut tx = self.store.begin_write().await?;
        tx.hold_lease(&lease).await?;
        Ok(tx)
    }

    /// After a lead was written: on PostgreSQL its version went up by one (see
    /// [`crate::store::WriteTx::claim_versions`]).
    pub(super) fn wrote_version(&self, lead: &mut Lead) {
        if self.store.dialect() == crate::store::Dialect::Postgres {
            lead.version += 1;
        }
    }

    /// Forgets the lease after another process took it.
    pub fn forget_lease(&self) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Holds `lease` from now on (a daemon of a cluster became the leader).
    pub fn set_lease(&self, lease: Lease) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
    }

    /// In a cluster: the shards the pipeline works on from now (`None`: it stopped).
    pub(super) fn set_generation(&self, shards: Option<Arc<Vec<i32>>>) {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) = shards;
    }

    /// The shards the pipeline reads events of: `None` when not in a cluster.
    pub(super) fn generation(&self) -> Option<(Arc<Vec<i32>>, u32)> {
        let c = self.cluster.get()?;
        let shards = self
            .generation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        Some((shards, c.shards))
    }

    /// What a write of processing results checks: the lease, or in a cluster the
    /// shards the pipeline works on.
    pub fn processing_fence(&self) -> Result<Fence, StoreError> {
        match self.cluster.get() {
            Some(c) => match self.generation() {
                Some((shards, _)) if !shards.is_empty() => Ok(c.fence(shards)),
                _ => Err(StoreError::LeaseLost),
            },
            None => self.held_lease().map(Fence::Lease),
        }
    }

    pub fn held_lease(&self) -> Result<Lease, StoreError> {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::LeaseLost)
    }

    /// The lead as committed, with its lock held: from the cache, else the store. In a
    /// cluster always from the store (another daemon may have changed it).
    pub(super) async fn locked_lead(&self, guard: &LeadGuard) -> Result<Option<Lead>, StoreError> {
        let id = guard.lead_id();
        if self.cluster.get().is_none()
            && let Some(lead) = self.cache.lead(id)
        {
            return Ok(Some(lead));
        }
        Ok(self.store.leads_by_ids(&[id]).await?.remove(&id))
    }

    /// Records leads as committed by a change made under their locks.
    pub(super) fn remember<'a>(&self, leads: impl IntoIterator<Item = &'a Lead>) {
        for lead in leads {
            self.cache.set_lead(lead);
        }
    }

    /// Turns locked leads with their events into jobs: each lead's state and history
    /// from the cache, the rest from the store in one query each. Leads with a long
    /// history to read are left out unless `load_long` (the caller reads each of them
    /// apart, so they hold up no other lead). When the store cannot be read, the work
    /// comes back with the error.
    pub(super) async fn jobs(
        &self,
        work: Vec<(LeadGuard, Vec<PendingEvent>)>,
        gate: &Shared,
        budgeted: bool,
        load_long: bool,
    ) -> Result<Prepared, (StoreError, Vec<(LeadGuard, Vec<PendingEvent>)>)> {
        let mut slots: Vec<(LeadGuard, Vec<PendingEvent>, Slot)> = work
            .into_iter()
            .map(|(g, events)| {
                let slot = self.cache.take(g.lead_id());
                (g, events, slot)
            })
            .collect();
        let missing_leads: Vec<i64> = slots
            .iter()
            .filter(|(_, _, s)| s.lead.is_none())
            .map(|(g, _, _)| g.lead_id())
            .collect();
        let missing_history: Vec<i64> = slots
            .iter()
            .filter(|(_, _, s)| s.history.is_none())
            .map(|(g, _, _)| g.lead_id())
            .collect();
        // Histories that would not fit in the cache are not read at all: their leads'
        // counts go to the store.
        let max_events = (self.cache.max_history_bytes() / HISTORY_EVENT_BYTES) as i64;
        let read = async {
            let leads = if missing_leads.is_empty() {
                Default::default()
            } else {
                self.store.leads_by_ids(&missing_leads).await?
            };
            let lengths = if missing_history.is_empty() {
                Default::default()
            } else {
                self.store.history_lengths(&missing_history).await?
            };
            let wanted: Vec<i64> = missing_history
                .iter()
                .copied()
                .filter(|id| {
                    let n = lengths.get(id).copied().unwrap_or(0);
                    n <= max_events && (load_long || n <= LONG_HISTORY)
                })
                .collect();
            let rows = if wanted.is_empty() {
                Vec::new()
            } else {
                self.store.histories(&wanted).await?
            };
            Ok::<_, StoreError>((leads, lengths, rows))
        };
        let (mut loaded, lengths, rows) = match read.await {
            Ok(r) => r,
            Err(e) => {
                let work = slots
                    .into_iter()
                    .map(|(g, events, slot)| {
                        self.cache.put(g.lead_id(), slot);
                        (g, events)
                    })
                    .collect();
                return Err((e, work));
            }
        };
        let mut histories: BTreeMap<i64, Vec<crate::store::PastEvent>> = BTreeMap::new();
        for row in rows {
            histories.entry(row.lead_id).or_default().push(row);
        }
        let mut out = Prepared {
            jobs: Vec::with_capacity(slots.len()),
            long: Vec::new(),
        };
        for (guard, events, mut slot) in slots.drain(..) {
            let id = guard.lead_id();
            let length = lengths.get(&id).copied().unwrap_or(0);
            if slot.history.is_none() && length <= max_events && length > LONG_HISTORY && !load_long
            {
                if slot.lead.is_none() {
                    slot.lead = loaded.remove(&id).map(|l| CompactLead::encode(&l));
                }
                self.cache.put(id, slot);
                out.long.push((guard, events));
                continue;
            }
            let first = events.first().map_or(i64::MAX, |e| e.seq);
            let lead = match slot.lead {
                Some(c) => c.decode(),
                None => loaded.remove(&id),
            };
            let history = match slot.history {
                Some(h) => HistorySource::Held(h),
                None if length <= max_events => {
                    HistorySource::Rows(histories.remove(&id).unwrap_or_default(), first - 1)
                }
                None => HistorySource::Store,
            };
            out.jobs.push(Job {
                guard,
                gate: gate.clone(),
                lead_id: id,
                lead,
                history,
                events,
                budgeted,
            });
        }
        Ok(out)
    }

    /// Puts a committed job's lead and history back in the cache.
    pub(super) fn keep(&self, done: &mut Done) {
        let slot = Slot {
            lead: done.lead.as_ref().map(CompactLead::encode),
            history: done.history.take(),
        };
        self.cache.put(done.lead_id, slot);
    }

    /// Processes up to `batch_size` pending events to the end, in one transaction.
    /// Returns what happened to each. For the command line and rule fixtures; the daemon
    /// runs [`Processor::run`].
    pub async fn run_once(&self) -> Result<BatchOutcome, ProcessError> {
        let lease = self.held_lease()?;
        let gate = self.gate.shared().await;
        let events = self.store.pending_events(None, self.batch_size).await?;
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut by_lead: BTreeMap<i64, Vec<PendingEvent>> = BTreeMap::new();
        for e in events {
            by_lead.entry(e.lead_id).or_default().push(e);
        }
        let ids: Vec<i64> = by_lead.keys().copied().collect();
        let guards = self.locks.lock_all(&ids).await;
        let work = guards
            .into_iter()
            .map(|g| {
                let events = by_lead.remove(&g.lead_id()).unwrap_or_default();
                (g, events)
            })
            .collect();
        let jobs = self
            .jobs(work, &gate, false, true)
            .await
            .map_err(|(e, _)| e)?
            .jobs;
        let dones = {
            let me = self.parts();
            tokio::task::spawn_blocking(move || {
                jobs.into_iter().map(|j| me.evaluate(j)).collect::<Vec<_>>()
            })
            .await?
        };
        if let Some(e) = dones.iter().find_map(|d| d.transient.clone()) {
            return Err(ProcessError::Transient(e));
        }
        let mut dones = dones;
        let fence = Fence::Lease(lease);
        let started = std::time::Instant::now();
        let written = write_group(&self.store, &fence, &self.plan, self.clock.now(), &dones).await;
        self.metrics.batch_duration.record(started.elapsed());
        if let Err(e) = written {
            for d in &dones {
                self.cache.forget(d.lead_id);
            }
            return Err(e.into());
        }
        for d in &mut dones {
            if let Some(lead) = &mut d.lead {
                self.wrote_version(lead);
            }
            self.keep(d);
        }
        super::commit::report(self, &dones);
        let mut outcomes: Vec<EventOutcome> = dones.into_iter().flat_map(|d| d.outcomes).collect();
        outcomes.sort_unstable_by_key(|o| o.seq);
        Ok(BatchOutcome { events: outcomes })
    }

    /// Processes until the queue is empty; returns the number of events handled.
    pub async fn drain(&self) -> Result<usize, ProcessError> {
        self.drain_with(|_| {}).await
    }

    /// As [`Processor::drain`], telling `done` the number of events of each batch (for a
    /// progress bar).
    pub async fn drain_with(&self, mut done: impl FnMut(usize)) -> Result<usize, ProcessError> {
        let mut total = 0;
        loop {
            let n = match self.run_once().await {
                Ok(batch) => batch.events.len(),
                // A daemon of the cluster changed a lead meanwhile: again, as stored.
                Err(ProcessError::Store(StoreError::LeadChanged(_))) => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(total);
            }
            total += n;
            done(n);
        }
    }

    /// What evaluating jobs on another thread needs.
    pub(super) fn parts(&self) -> Arc<EvalParts> {
        Arc::new(EvalParts {
            store: self.store.clone(),
            rules: self.rules.clone(),
            sandbox: self.sandbox.clone(),
            funnel: self.funnel.clone(),
            plan: self.plan.clone(),
            streams: Arc::new(self.plan.names()),
            teams: Arc::new(self.plan.teams.clone()),
            runtime: self.runtime.clone(),
        })
    }
}

/// What evaluating jobs on a thread of its own needs (see [`Processor::evaluate`]).
pub struct EvalParts {
    pub store: Store,
    pub rules: Arc<Rules>,
    pub sandbox: Arc<Sandbox>,
    pub funnel: Arc<Funnel>,
    pub plan: Arc<StreamPlan>,
    pub streams: Arc<Vec<String>>,
    pub teams: Arc<Vec<String>>,
    pub runtime: tokio::runtime::Handle,
}

impl EvalParts {
    pub fn evaluate(&self, job: Job) -> Done {
        let rules = self.rules.current();
        let store_history = || StoreHistory::new(self.store.clone(), self.runtime.clone());
        let context = Context {
            funnel: self.funnel.clone(),
            history: Arc::new(store_history()),
            streams: self.streams.clone(),
            teams: self.teams.clone(),
            topics: Arc::new(self.plan.topics.ids()),
        };
        Evaluator {
            sandbox: &self.sandbox,
            rules: &rules,
            context: &context,
            plan: &self.plan,
            store_history: &store_history,
        }
        .run(job)
    }
}
