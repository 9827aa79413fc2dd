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
    normal: flume::Sender<Job>,
    slow: flume::Sender<Job>,
}

impl Lanes {
    /// Starts the threads; their results go to `done`. Once `stopping` is set, jobs
    /// not yet started come back untouched (their events stay pending).
    pub fn start(
        parts: &Arc<EvalParts>,
        done: &flume::Sender<Done>,
        stopping: &Arc<AtomicBool>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (normal, normal_rx) = flume::unbounded::<Job>();
        let (slow, slow_rx) = flume::unbounded::<Job>();
        let lanes = [
            ("rules", normal_rx, cores.max(2)),
            ("rules-slow", slow_rx, 1),
        ];
        for (name, rx, threads) in lanes {
            for i in 0..threads {
                let (rx, done, parts, stopping) =
                    (rx.clone(), done.clone(), parts.clone(), stopping.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            let result = if stopping.load(Ordering::Relaxed) {
                                Done::untouched(job)
                            } else {
                                // A bug that panics fails the job's events, with the
                                // message, instead of taking the thread down.
                                let (lead_id, seqs) = (job.lead_id, job.seqs());
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    parts.evaluate(job)
                                }))
                                .unwrap_or_else(|panic| Done::crashed(lead_id, &seqs, &*panic))
                            };
                            if done.send(result).is_err() {
                                break;
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a rule thread");
                }
            }
        }
        Self { normal, slow }
    }

    /// Hands a job to its lane; `false` when the lanes are closed.
    pub fn submit(&self, job: Job, slow: bool) -> bool {
        let lane = if slow { &self.slow } else { &self.normal };
        lane.send(job).is_ok()
    }
}
