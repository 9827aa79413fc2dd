//! The daemon's continuous processing: pending events are read in arrival order into
//! per-lead queues; each lead with events and no work in flight gets its lock, its
//! state and history (from the cache, the rest from the store in one query per round)
//! and goes to a rule thread ([`super::lanes`]) as one job; finished jobs are written
//! together ([`super::commit`]), after which the lead can start its next job.
//!
//! So one lead's events run one after the other, in order, while different leads run
//! side by side and are written independently: a lead with a long history, a burst of
//! events or a rule that runs into its limits holds up nobody else. The queues hold at
//! most [`MAX_QUEUED`] events; the rest wait in the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::commit::{self, Stopped};
use super::evaluate::Done;
use super::lanes::Lanes;
use super::locks::LeadGuard;
use super::processor::Processor;
use crate::store::PendingEvent;

/// Events held in the queues (read but not yet written) at most.
pub const MAX_QUEUED: usize = 20_000;
/// Events of one lead per job at most.
const JOB_EVENTS: usize = 256;
/// Leads whose state is loaded in one go.
const START_CHUNK: usize = 512;
/// A lead stays in the slow lane this long after its last slow event.
const SLOW_FOR: Duration = Duration::from_secs(300);
/// How often pending events already read past (put back by `events retry`) are looked
/// for while the queues are busy; when idle, every poll interval.
const RESCAN_BUSY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct LeadQueue {
    events: VecDeque<PendingEvent>,
    /// A job of this lead is in flight.
    busy: bool,
    /// In the ready list.
    ready: bool,
}

#[derive(Default)]
struct State {
    leads: HashMap<i64, LeadQueue>,
    ready: VecDeque<i64>,
    /// Sequence numbers of the events held (queued or in flight).
    seqs: HashSet<i64>,
    /// The highest sequence number read.
    cursor: i64,
    slow: HashMap<i64, Instant>,
    paused_until: Option<Instant>,
    /// While a look for events read past runs: the events written meanwhile (its
    /// answer may still show them as pending).
    written_meanwhile: Option<HashSet<i64>>,
    jobs_in_flight: usize,
}

/// The per-lead queues, shared by the dispatcher and the committer.
#[derive(Default)]
pub struct Queues {
    state: Mutex<State>,
    /// Signalled when a lead can start again or the queues have room.
    changed: Notify,
}

/// What the queues hold now (for `/v1/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueUse {
    pub events_queued: usize,
    pub leads_queued: usize,
    pub jobs_in_flight: usize,
    pub slow_leads: usize,
}

impl Queues {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn usage(&self) -> QueueUse {
        let s = self.state();
        QueueUse {
            events_queued: s.seqs.len(),
            leads_queued: s.leads.len(),
            jobs_in_flight: s.jobs_in_flight,
            slow_leads: s.slow.len(),
        }
    }

    fn room(&self) -> usize {
        MAX_QUEUED.saturating_sub(self.state().seqs.len())
    }

    fn cursor(&self) -> i64 {
        self.state().cursor
    }

    fn paused(&self) -> Option<Duration> {
        let s = self.state();
        s.paused_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
    }

    /// Holds back new jobs for a while (the store or the rules' history failed).
    pub fn pause(&self, wait: Duration) {
        self.state().paused_until = Some(Instant::now() + wait);
    }

    /// Starts a look for pending events read past (see [`Queues::add`]).
    fn begin_rescan(&self) {
        self.state().written_meanwhile = Some(HashSet::new());
    }

    /// Takes events in; those held already, or written since a look for events read
    /// past began (`rescan`), are skipped. Returns how many were new.
    fn add(&self, rows: Vec<PendingEvent>, rescan: bool) -> usize {
        let mut s = self.state();
        let written = if rescan {
            s.written_meanwhile.take().unwrap_or_default()
        } else {
            HashSet::new()
        };
        let mut n = 0;
        for e in rows {
            if !rescan {
                s.cursor = s.cursor.max(e.seq);
            }
            if written.contains(&e.seq) || !s.seqs.insert(e.seq) {
                continue;
            }
            n += 1;
            let id = e.lead_id;
            let q = s.leads.entry(id).or_default();
            if q.events.back().is_none_or(|b| b.seq < e.seq) {
                q.events.push_back(e);
            } else {
                let at = q.events.partition_point(|x| x.seq < e.seq);
                q.events.insert(at, e);
            }
            if !q.busy && !q.ready {
                q.ready = true;
                s.ready.push_back(id);
            }
        }
        n
    }

    /// Up to `max` leads that can start, each with its next events; they are busy
    /// until settled. The flag says whether the lead goes to the slow lane.
    fn take_ready(&self, max: usize) -> Vec<(i64, Vec<PendingEvent>, bool)> {
        let mut s = self.state();
        let now = Instant::now();
        s.slow.retain(|_, until| *until > now);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = s.ready.pop_front() else { break };
            let slow = s.slow.contains_key(&id);
            let Some(q) = s.leads.get_mut(&id) else {
                continue;
            };
            q.ready = false;
            if q.busy || q.events.is_empty() {
                continue;
            }
            q.busy = true;
            let n = q.events.len().min(if slow { 1 } else { JOB_EVENTS });
            let events: Vec<PendingEvent> = q.events.drain(..n).collect();
            out.push((id, events, slow));
        }
        s.jobs_in_flight += out.len();
        out
    }

    /// Gives a lead's events back without a job having run (it could not be loaded).
    fn give_back(&self, id: i64, events: Vec<PendingEvent>) {
        let mut s = self.state();
        s.jobs_in_flight = s.jobs_in_flight.saturating_sub(1);
        Self::requeue(&mut s, id, events);
        drop(s);
        self.changed.notify_one();
    }

    fn requeue(s: &mut State, id: i64, events: Vec<PendingEvent>) {
        let q = s.leads.entry(id).or_default();
        for e in events.into_iter().rev() {
            q.events.push_front(e);
        }
        q.busy = false;
        if q.events.is_empty() {
            s.leads.remove(&id);
        } else if !q.ready {
            q.ready = true;
            s.ready.push_back(id);
        }
    }

    /// A job is over: `written` when its outcomes are committed. Its lock is let go
    /// here, and the lead can start again.
    pub fn settle(&self, done: Done, written: bool) {
        let Done {
            guard,
            gate,
            lead_id,
            events,
            outcomes,
            leftover,
            slow,
            ..
        } = done;
        drop(guard);
        drop(gate);
        let mut s = self.state();
        s.jobs_in_flight = s.jobs_in_flight.saturating_sub(1);
        if slow {
            s.slow.insert(lead_id, Instant::now() + SLOW_FOR);
        }
        let mut back = leftover;
        if written {
            for o in &outcomes {
                s.seqs.remove(&o.seq);
            }
            if let Some(w) = &mut s.written_meanwhile {
                w.extend(outcomes.iter().map(|o| o.seq));
            }
        } else {
            // What could not be written is done again. Events known only by their
            // outcome are left to the next look at the store.
            let held: HashSet<i64> = events.iter().map(|e| e.seq).collect();
            for o in outcomes.iter().filter(|o| !held.contains(&o.seq)) {
                s.seqs.remove(&o.seq);
            }
            let mut again = events;
            again.append(&mut back);
            back = again;
        }
        Self::requeue(&mut s, lead_id, back);
        drop(s);
        self.changed.notify_one();
    }
}

/// Runs the pipeline until `shutdown` (returns `true`) or until the lease is lost
/// (returns `false`).
pub async fn run(p: Arc<Processor>, shutdown: CancellationToken) -> bool {
    let queues = Arc::new(Queues::default());
    p.set_queues(Some(queues.clone()));
    // In a cluster, intake hands over events of every shard: the pipeline reads its
    // own from the store.
    if p.cluster.get().is_none() {
        p.feed.open();
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = flume::unbounded::<Vec<Done>>();
    let lanes = Lanes::start(&p.parts(), &done_tx, &stopping);
    drop(done_tx);
    let stop = CancellationToken::new();
    let mut committer = tokio::spawn(commit::run(p.clone(), queues.clone(), done_rx));
    let dispatcher = tokio::spawn(dispatch(p.clone(), queues.clone(), lanes, stop.clone()));
    let lease_lost = tokio::select! {
        _ = shutdown.cancelled() => false,
        r = &mut committer => !matches!(r, Ok(Stopped::Drained)),
    };
    // Jobs not started yet come back untouched; the committer writes what finished
    // and ends when the lanes are closed.
    stopping.store(true, Ordering::Relaxed);
    stop.cancel();
    let _ = dispatcher.await;
    let lease_lost = lease_lost || !matches!(committer.await, Ok(Stopped::Drained));
    p.feed.close();
    p.set_queues(None);
    !lease_lost
}

/// Reads pending events and starts jobs until stopped.
async fn dispatch(p: Arc<Processor>, queues: Arc<Queues>, lanes: Lanes, stop: CancellationToken) {
    let mut rescanned = Instant::now();
    let mut read_failures = 0u32;
    // The last read of the store, and whether it left events to read.
    let mut store_read = Instant::now();
    let mut store_behind = true;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if let Some(wait) = queues.paused() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let mut progressed = false;
        // 1. Take what arrived: from the feed while it follows on without a gap, else
        // from the store. The store is also read when the feed is empty and the last
        // read is a poll interval ago (events stored by another process).
        let room = queues.room();
        if room > 0 {
            let ask = room.min(p.batch_size);
            // In a cluster the feed is closed: every wake reads the store.
            let fed = if p.cluster.get().is_some() {
                None
            } else {
                p.feed.take(queues.cursor(), ask)
            };
            let in_step = fed.is_some() && !store_behind && store_read.elapsed() < p.poll_interval;
            let complete = match fed {
                Some((rows, _)) if !rows.is_empty() => {
                    progressed |= queues.add(rows, false) > 0;
                    true
                }
                _ if in_step => true,
                _ => match pending(&p, Some(queues.cursor()), ask).await {
                    Ok(rows) => {
                        read_failures = 0;
                        store_read = Instant::now();
                        let complete = rows.len() < ask;
                        store_behind = !complete;
                        progressed |= queues.add(rows, false) > 0;
                        complete
                    }
                    Err(e) => {
                        read_failures += 1;
                        let wait = Duration::from_millis(500) * read_failures.min(60);
                        tracing::error!(error = %e, retry_in = ?wait, "cannot read pending events");
                        queues.pause(wait);
                        continue;
                    }
                },
            };
            // Events put back in the queue after the cursor passed them (a retry of
            // failed events).
            let idle = queues.usage().events_queued == 0;
            let every = if idle { p.poll_interval } else { RESCAN_BUSY };
            if complete && rescanned.elapsed() >= every {
                let held = MAX_QUEUED - queues.room();
                queues.begin_rescan();
                match pending(&p, None, held + 1_000).await {
                    Ok(rows) => progressed |= queues.add(rows, true) > 0,
                    Err(_) => {
                        queues.add(Vec::new(), true);
                    }
                }
                rescanned = Instant::now();
            }
        }
        // 2. Start the leads that can.
        if let Some(gate) = p.gate.try_shared() {
            loop {
                let ready = queues.take_ready(START_CHUNK);
                if ready.is_empty() {
                    break;
                }
                progressed = true;
                let mut locked: Vec<(LeadGuard, Vec<PendingEvent>)> = Vec::new();
                let mut slow: HashSet<i64> = HashSet::new();
                for (id, events, is_slow) in ready {
                    if is_slow {
                        slow.insert(id);
                    }
                    match p.locks.try_lock(id) {
                        Some(g) => locked.push((g, events)),
                        // Someone changes the lead now (the API, the desk): wait for it
                        // apart from the others.
                        None => {
                            let (p, queues, lanes) = (p.clone(), queues.clone(), lanes.clone());
                            tokio::spawn(async move {
                                // The gate first, as everywhere: a change to all leads
                                // waiting for it must not wait on this lead's lock.
                                let gate = p.gate.shared().await;
                                let g = p.locks.lock(id).await;
                                start(&p, &queues, &lanes, vec![(g, events)], &gate, is_slow).await;
                            });
                        }
                    }
                }
                let (fast, slow_work): (Vec<_>, Vec<_>) = locked
                    .into_iter()
                    .partition(|(g, _)| !slow.contains(&g.lead_id()));
                start(&p, &queues, &lanes, fast, &gate, false).await;
                start(&p, &queues, &lanes, slow_work, &gate, true).await;
                if stop.is_cancelled() {
                    return;
                }
            }
        }
        if !progressed {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = p.wake.notified() => {}
                _ = queues.changed.notified() => {}
                _ = tokio::time::sleep(p.poll_interval) => {}
            }
        }
    }
}

/// Pending events from the store: in a cluster, of the shards the pipeline works on.
async fn pending(
    p: &Processor,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<PendingEvent>, crate::store::StoreError> {
    match p.generation() {
        Some((shards, n)) => {
            p.store
                .pending_events_of(after, limit, Some((&shards, n)))
                .await
        }
        None => p.store.pending_events(after, limit).await,
    }
}

/// Reads one lead with a long history and hands its job to its lane.
async fn read_long(
    p: &Processor,
    queues: &Queues,
    lanes: &Lanes,
    work: (LeadGuard, Vec<PendingEvent>),
    gate: &super::locks::Shared,
    slow: bool,
) {
    match p.jobs(vec![work], gate, true, true).await {
        Ok(prepared) => {
            for job in prepared.jobs {
                lanes.submit(job, slow);
            }
        }
        Err((e, work)) => {
            tracing::error!(error = %e, "cannot load a lead for processing; trying again");
            for (guard, events) in work {
                let id = guard.lead_id();
                drop(guard);
                queues.give_back(id, events);
            }
            queues.pause(Duration::from_millis(500));
        }
    }
}

/// Loads the locked leads and hands their jobs to the lanes.
async fn start(
    p: &Arc<Processor>,
    queues: &Arc<Queues>,
    lanes: &Lanes,
    work: Vec<(LeadGuard, Vec<PendingEvent>)>,
    gate: &super::locks::Shared,
    slow: bool,
) {
    if work.is_empty() {
        return;
    }
    match p.jobs(work, gate, true, false).await {
        Ok(prepared) => {
            if !lanes.submit_all(prepared.jobs, slow) {
                tracing::debug!("rule lanes closed; the events stay pending");
            }
            // A long history is read on its own, while the others go on, on a thread
            // of its own at the rule threads' priority: reading and decoding tens of
            // thousands of rows is work that must not hold up intake or other leads.
            for (guard, events) in prepared.long {
                let (p, queues, lanes, gate) =
                    (p.clone(), queues.clone(), lanes.clone(), gate.clone());
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    super::lanes::at_lower_priority(|| {
                        runtime.block_on(read_long(
                            &p,
                            &queues,
                            &lanes,
                            (guard, events),
                            &gate,
                            slow,
                        ));
                    });
                });
            }
        }
        Err((e, work)) => {
            tracing::error!(error = %e, "cannot load leads for processing; trying again");
            for (guard, events) in work {
                let id = guard.lead_id();
                drop(guard);
                queues.give_back(id, events);
            }
            queues.pause(Duration::from_millis(500));
        }
    }
}

impl Processor {
    /// Processes events until `shutdown`. When another process takes the lease, stops
    /// writing, forgets what it held, and takes the lease back once it is free.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if let Some(cluster) = self.cluster.get().cloned() {
            return self.run_in_cluster(&cluster, shutdown).await;
        }
        loop {
            if run(self.clone(), shutdown.clone()).await {
                return;
            }
            self.cache.clear();
            self.forget_lease();
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
                    Ok(Err(held)) => tracing::debug!(holder = %held.holder, "lease still held"),
                    Err(e) => tracing::warn!(error = %e, "cannot check the processing lease"),
                }
            }
        }
    }
}

impl Processor {
    /// In a cluster: processes the events of the shards this daemon holds, starting
    /// over (from the oldest pending event of those shards, with nothing cached) each
    /// time they change.
    async fn run_in_cluster(
        self: Arc<Self>,
        cluster: &crate::cluster::Cluster,
        shutdown: CancellationToken,
    ) {
        let mut owned = cluster.owned();
        loop {
            let shards = owned.borrow_and_update().clone();
            cluster.set_working(shards.clone());
            self.set_generation(Some(shards.clone()));
            if shards.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = owned.changed() => if r.is_err() { break },
                }
                continue;
            }
            tracing::info!(shards = ?shards, "processing the events of these shards");
            let stop = shutdown.child_token();
            let watcher = {
                let (mut owned, stop) = (owned.clone(), stop.clone());
                tokio::spawn(async move {
                    let _ = owned.changed().await;
                    stop.cancel();
                })
            };
            let kept = run(self.clone(), stop).await;
            watcher.abort();
            self.cache.clear();
            self.set_generation(None);
            cluster.set_working(Arc::new(Vec::new()));
            if shutdown.is_cancelled() {
                break;
            }
            if !kept {
                tracing::warn!("a shard was taken over by another daemon; processing the others");
                if let Err(e) = cluster.recheck().await {
                    tracing::warn!(error = %e, "cannot read which shards are held");
                    tokio::time::sleep(cluster.heartbeat_every()).await;
                }
            }
        }
        self.set_generation(None);
        cluster.set_working(Arc::new(Vec::new()));
    }
}
