//! Writing what jobs did: every job finished while the previous write ran shares the
//! next transaction (group commit), so a lead's result is written a few milliseconds
//! after its rules ran, whatever other leads are doing. A job's lead lock is let go
//! only after its write, and its lead and history go back into the cache with it.
//!
//! A write that fails drops the jobs' cached state (the store is the truth) and puts
//! their events back in their leads' queues; a lost lease stops processing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::evaluate::Done;
use super::pipeline::Queues;
use super::processor::Processor;
use crate::domain::change::Outcome;
use crate::domain::{Changes, Lead};
use crate::mail::StreamPlan;
use crate::store::{Fence, Store, StoreError, build};

/// Events written in one transaction at most.
const MAX_GROUP: usize = 4_000;

/// Writes the results of `dones` in one transaction that checks the lease (or the
/// shards) and, on PostgreSQL, that no lead was written meanwhile by another daemon.
/// On success the leads' versions are counted up as in the store.
pub async fn write_group(
    store: &Store,
    fence: &Fence,
    plan: &StreamPlan,
    now: DateTime<Utc>,
    dones: &[Done],
) -> Result<(), StoreError> {
    // Leads whose contact data changed are written whole, the rest only their funnel
    // state.
    let mut full: Vec<(&Lead, i64)> = Vec::new();
    let mut states: Vec<(&Lead, i64, bool)> = Vec::new();
    for d in dones {
        if let (Some(profile), Some(lead)) = (d.write, &d.lead) {
            let events = d.outcomes.len() as i64;
            if profile {
                full.push((lead, events));
            } else {
                // Every stage change of a lead leaves a move.
                let moved = d
                    .outcomes
                    .iter()
                    .any(|o| o.result.as_ref().is_ok_and(|c| !c.moves.is_empty()));
                states.push((lead, events, moved));
            }
        }
    }
    let outcomes = dones.iter().flat_map(|d| &d.outcomes);
    let records: Vec<(i64, Option<i64>, &Changes)> = outcomes
        .clone()
        .filter_map(|o| o.result.as_ref().ok().map(|c| (o.lead_id, Some(o.seq), c)))
        .collect();
    // An event some rule files failed for is processed (the others' changes apply)
    // and kept as failed for those files.
    let processed: Vec<i64> = outcomes
        .clone()
        .filter(|o| o.result.is_ok() && o.failed_rules.is_empty())
        .map(|o| o.seq)
        .collect();
    let failed: Vec<(i64, String, Option<String>)> = outcomes
        .clone()
        .filter_map(|o| match (&o.result, o.failed_rules.first()) {
            (Err(e), _) => Some((
                o.seq,
                serde_json::to_string(e).expect("rule errors serialise"),
                None,
            )),
            (Ok(_), Some(first)) => Some((
                o.seq,
                serde_json::to_string(first).expect("rule errors serialise"),
                Some(serde_json::to_string(&o.failed_rules).expect("rule errors serialise")),
            )),
            (Ok(_), None) => None,
        })
        .collect();
    let shadow: Vec<(i64, i64, &crate::rules::ShadowRun)> = outcomes
        .clone()
        .flat_map(|o| o.shadow.iter().map(move |r| (o.lead_id, o.seq, r)))
        .collect();
    let count = outcomes.clone().count() as u64;
    // Retried events that succeeded now are failed no more.
    let retried: std::collections::HashSet<i64> = dones
        .iter()
        .flat_map(|d| &d.events)
        .filter(|e| e.attempts > 0)
        .map(|e| e.seq)
        .collect();
    let retried_ok: Vec<i64> = processed
        .iter()
        .copied()
        .filter(|s| retried.contains(s))
        .collect();
    let statements = build::leads(store.dialect(), &full)
        .and(build::lead_states(store.dialect(), &states))
        .and(build::changes(store.dialect(), &records))
        .and(build::mails(store.dialect(), &records, &plan.params, now))
        .and(build::handoffs(store.dialect(), &records, now))
        .and(build::shadow(store.dialect(), &shadow, now));
    let mut versions: Vec<(i64, i64)> = dones
        .iter()
        .filter_map(|d| d.lead.as_ref().map(|l| (l.id, l.version)))
        .collect();
    versions.sort_unstable();
    let waited = Instant::now();
    let mut tx = store.begin_write().await?;
    let held = Instant::now();
    tx.hold(fence).await?;
    tx.claim_versions(&versions).await?;
    tx.execute(statements).await?;
    // Every event must still have been pending; anything else means another process
    // got to them.
    if tx
        .finish_events(&processed, &failed, &retried_ok, now)
        .await?
        != count
    {
        return Err(StoreError::LeaseLost);
    }
    let done = tx.commit().await;
    tracing::debug!(
        events = count,
        leads = dones.len(),
        wait_ms = (held - waited).as_secs_f64() * 1e3,
        held_ms = held.elapsed().as_secs_f64() * 1e3,
        "results written"
    );
    done
}

/// After a write: wakes the mailer and the desk, counts the events for `/metrics`, and
/// logs failed events and skipped actions.
pub fn report(p: &Processor, dones: &[Done]) {
    let (mut processed, mut failed) = (0, 0);
    for o in dones.iter().flat_map(|d| &d.outcomes) {
        if o.result.is_ok() && o.failed_rules.is_empty() {
            processed += 1;
        } else {
            failed += 1;
        }
    }
    p.metrics.events_processed.increment(processed);
    p.metrics.events_failed.increment(failed);
    p.wake(
        dones
            .iter()
            .flat_map(|d| &d.outcomes)
            .filter_map(|o| o.result.as_ref().ok()),
    );
    for o in dones.iter().flat_map(|d| &d.outcomes) {
        match &o.result {
            Err(e) => {
                tracing::warn!(seq = o.seq, lead_id = o.lead_id, error = %e, "event failed; fix the rule, then `nurtured events retry`");
            }
            Ok(changes) => {
                for e in &o.failed_rules {
                    tracing::warn!(seq = o.seq, lead_id = o.lead_id, error = %e, "a rule file failed for the event; the other files' changes apply; fix the file, then `nurtured events retry` runs it again");
                }
                for a in &changes.actions {
                    if let Outcome::Skipped(why) = &a.outcome {
                        tracing::info!(seq = o.seq, lead_id = o.lead_id, action = %a.action, source = %a.source, "action skipped: {why:?}");
                    }
                }
            }
        }
    }
}

/// Why the committer stopped.
pub enum Stopped {
    /// Every job was written (the lanes closed).
    Drained,
    /// Another process holds the lease now.
    LeaseLost,
}

/// Writes finished jobs until the lanes close or the lease is lost.
pub async fn run(
    p: Arc<Processor>,
    queues: Arc<Queues>,
    done: flume::Receiver<Vec<Done>>,
) -> Stopped {
    let mut backoff = Duration::from_millis(500);
    while let Ok(mut group) = done.recv_async().await {
        let mut events: usize = group.iter().map(|d| d.outcomes.len()).sum();
        while events < MAX_GROUP {
            match done.try_recv() {
                Ok(mut more) => {
                    events += more.iter().map(|d| d.outcomes.len()).sum::<usize>();
                    group.append(&mut more);
                }
                Err(_) => break,
            }
        }
        // Jobs the daemon failed (not a rule) go back to their queues as they are.
        let (transient, mut group): (Vec<Done>, Vec<Done>) =
            group.into_iter().partition(|d| d.transient.is_some());
        let mut failed = !transient.is_empty();
        for d in transient {
            if let Some(e) = &d.transient {
                tracing::error!(lead_id = d.lead_id, error = %e, retry_in = ?backoff, "processing a lead failed; nothing of it was written, retrying");
            }
            p.cache.forget(d.lead_id);
            queues.settle(d, false);
        }
        let written = if group.iter().all(|d| d.outcomes.is_empty()) {
            Ok(())
        } else {
            match p.processing_fence() {
                Ok(fence) => {
                    let started = Instant::now();
                    let written =
                        write_group(&p.store, &fence, &p.plan, p.clock.now(), &group).await;
                    p.metrics.batch_duration.record(started.elapsed());
                    written
                }
                Err(e) => Err(e),
            }
        };
        match written {
            Ok(()) => {
                for d in &mut group {
                    if let Some(lead) = &mut d.lead {
                        p.wrote_version(lead);
                    }
                    p.keep(d);
                }
                report(&p, &group);
                for d in group {
                    queues.settle(d, true);
                }
            }
            Err(e) => {
                for d in group {
                    p.cache.forget(d.lead_id);
                    queues.settle(d, false);
                }
                if matches!(e, StoreError::LeaseLost) {
                    return Stopped::LeaseLost;
                }
                if let StoreError::LeadChanged(ids) = &e {
                    // Another daemon changed a lead (the stage API, the desk): the jobs
                    // run again on the leads as stored.
                    tracing::debug!(leads = ?ids, "leads changed by another daemon; processing them again");
                    queues.pause(Duration::from_millis(20));
                    continue;
                }
                tracing::error!(error = %e, retry_in = ?backoff, "writing processing results failed; nothing of it was written, retrying");
                failed = true;
            }
        }
        if failed {
            queues.pause(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(30));
        } else {
            backoff = Duration::from_millis(500);
        }
    }
    Stopped::Drained
}
