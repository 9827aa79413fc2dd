//! The threads rules run on. Rules are CPU work, so they run on threads of their own,
//! off the async runtime: a normal lane with one thread per core, and a slow lane with
//! one thread for leads whose rules recently ran into their limits, so such a lead
//! costs its own time and never holds up the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::evaluate::{Done, Job};
use super::processor::EvalParts;

/// Where jobs go.
#[derive(Clone)]
pub struct Lanes {
    normal: flume::Sender<Vec<Job>>,
    slow: flume::Sender<Vec<Job>>,
    /// Threads of the normal lane.
    threads: usize,
}

impl Lanes {
    /// Starts the threads; their results go to `done`, a batch of jobs' results at a
    /// time. Once `stopping` is set, jobs not yet started come back untouched (their
    /// events stay pending).
    pub fn start(
        parts: &Arc<EvalParts>,
        done: &flume::Sender<Vec<Done>>,
        stopping: &Arc<AtomicBool>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = cores.max(2);
        let (normal, normal_rx) = flume::unbounded::<Vec<Job>>();
        let (slow, slow_rx) = flume::unbounded::<Vec<Job>>();
        let lanes = [("rules", normal_rx, threads), ("rules-slow", slow_rx, 1)];
        for (name, rx, count) in lanes {
            for i in 0..count {
                let (rx, done, parts, stopping) =
                    (rx.clone(), done.clone(), parts.clone(), stopping.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        lower_priority();
                        while let Ok(jobs) = rx.recv() {
                            let results: Vec<Done> = jobs
                                .into_iter()
                                .map(|job| run(&parts, &stopping, job))
                                .collect();
                            if done.send(results).is_err() {
                                break;
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a rule thread");
                }
            }
        }
        Self {
            normal,
            slow,
            threads,
        }
    }

    /// Hands a job to its lane; `false` when the lanes are closed.
    pub fn submit(&self, job: Job, slow: bool) -> bool {
        let lane = if slow { &self.slow } else { &self.normal };
        lane.send(vec![job]).is_ok()
    }

    /// Hands jobs to their lane in a few batches, so that each thread gets a share
    /// and many small jobs do not wake a thread each; `false` when the lanes are
    /// closed.
    pub fn submit_all(&self, mut jobs: Vec<Job>, slow: bool) -> bool {
        if jobs.is_empty() {
            return true;
        }
        let lane = if slow { &self.slow } else { &self.normal };
        // Two batches per thread: a thread that is done early takes another.
        let size = jobs.len().div_ceil(2 * self.threads).max(1);
        while jobs.len() > size {
            let rest = jobs.split_off(size);
            if lane.send(jobs).is_err() {
                return false;
            }
            jobs = rest;
        }
        lane.send(jobs).is_ok()
    }
}

/// How much lower than the rest of the daemon rule threads run (added to the nice
/// value; 19 is the lowest).
const NICE_OFFSET: i32 = 10;

/// Lowers the calling rule thread's priority: rules are the daemon's CPU-heavy work,
/// and the threads that take events in and write results should not wait behind them
/// for a core. Under full load, intake stays quick and events wait (stored) until the
/// rules get to them; when cores are free, rules use them as before. On Linux the nice
/// value belongs to the thread. Where it cannot be changed, nothing changes.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    let lower = (now + NICE_OFFSET).min(19);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), lower) {
        tracing::debug!(error = %e, "cannot lower the priority of a rule thread");
    }
}

/// Runs `f` on this thread at the rule threads' lower priority, then restores the
/// thread's priority (for a pooled thread that runs other work afterwards).
pub fn at_lower_priority<T>(f: impl FnOnce() -> T) -> T {
    let tid = rustix::thread::gettid();
    let before = rustix::process::getpriority_process(Some(tid)).ok();
    lower_priority();
    let out = f();
    if let Some(before) = before {
        // Raising it back needs no privilege when it goes no higher than it was.
        let _ = rustix::process::setpriority_process(Some(tid), before);
    }
    out
}

/// One job on a rule thread.
fn run(parts: &EvalParts, stopping: &AtomicBool, job: Job) -> Done {
    if stopping.load(Ordering::Relaxed) {
        return Done::untouched(job);
    }
    // A bug that panics fails the job's events, with the message, instead of taking
    // the thread down.
    let (lead_id, seqs) = (job.lead_id, job.seqs());
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parts.evaluate(job)))
        .unwrap_or_else(|panic| Done::crashed(lead_id, &seqs, &*panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_thread_runs_at_a_lower_priority_than_the_rest() {
        let main = rustix::process::getpriority_process(None).unwrap_or(0);
        let (before, after) = std::thread::spawn(|| {
            let tid = rustix::thread::gettid();
            let before = rustix::process::getpriority_process(Some(tid)).unwrap();
            lower_priority();
            (
                before,
                rustix::process::getpriority_process(Some(tid)).unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(after, (before + NICE_OFFSET).min(19));
        // Only that thread changed.
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap_or(0),
            main
        );
    }
}
