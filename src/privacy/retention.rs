//! Retention: a daily job deletes raw events stored longer ago than
//! `retention.events` and the stored text of mails finished longer ago than
//! `retention.mail_content`, and anonymous visitors never joined to a lead and last
//! seen longer ago than `retention.anonymous`. What the reports and rules read keeps
//! its figures: scores and stage history are rows of their own, each lead keeps its
//! count of processed events, and the source of a lead's first event (its channel in
//! the funnel report) is kept on the lead before that event goes. Events still pending are never deleted.
//!
//! The job runs where the schedules run (the daemon holding the processing lease, the
//! leader of a cluster), once a day, and by hand with `nurtured retention run`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::to_ms;
use crate::config::retention::Retention;
use crate::process::Processor;
use crate::store::{Retained, StoreError};

/// Rows deleted per transaction.
const BATCH: i64 = 5_000;
/// How often the job runs.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Why a retention run stopped (what it deleted before stays deleted).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retention: {0}")]
    Store(#[from] StoreError),
}

/// Runs the retention job once at `now`.
pub async fn run_once(
    p: &Processor,
    r: &Retention,
    now: DateTime<Utc>,
) -> Result<Retained, RetentionError> {
    let mut done = Retained::default();
    if let Some(keep) = r.events {
        let before = to_ms(now) - keep.as_millis() as i64;
        loop {
            // Histories in memory must not count events the store no longer has: work
            // in flight is written first, and the cache is emptied.
            let n = {
                let _all = p.gate.exclusive().await;
                let mut tx = p.begin_lead_write().await?;
                let n = tx.delete_old_events(before, BATCH).await?;
                tx.commit().await?;
                p.cache.clear();
                n
            };
            done.events += n;
            if n == 0 {
                break;
            }
        }
    }
    if let Some(keep) = r.mail_content {
        let before = to_ms(now) - keep.as_millis() as i64;
        loop {
            let mut tx = p.begin_lead_write().await?;
            let n = tx.delete_old_mail_bodies(before, BATCH).await?;
            tx.commit().await?;
            done.mail_bodies += n;
            if n == 0 {
                break;
            }
        }
    }
    let cutoff = now - chrono::Duration::milliseconds(r.anonymous.as_millis() as i64);
    done.visitors = p.store.delete_anonymous_before(cutoff).await?;
    let mut tx = p.begin_lead_write().await?;
    tx.record_retention(to_ms(now), done).await?;
    tx.commit().await?;
    if done.events + done.mail_bodies + done.visitors > 0 {
        p.store
            .scrub_files(&[
                "events",
                "event_queue",
                "event_failures",
                "mail_content",
                "anonymous_events",
                "anonymous_profiles",
                "group_members",
            ])
            .await?;
    }
    Ok(done)
}

/// Runs the job once a day while this daemon holds the processing lease, until
/// `shutdown` (anonymous visitors always have a retention period).
pub async fn run(p: Arc<Processor>, r: Retention, shutdown: CancellationToken) {
    loop {
        if p.held_lease().is_ok() {
            let now = p.clock.now();
            match p.store.last_retention_run().await {
                Ok(last) if last.is_none_or(|l| to_ms(now) - l >= DAY_MS) => {
                    match run_once(&p, &r, now).await {
                        Ok(d) => tracing::info!(
                            events = d.events,
                            mail_bodies = d.mail_bodies,
                            visitors = d.visitors,
                            "retention: old data deleted"
                        ),
                        Err(e) => tracing::error!(error = %e, "retention run failed"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read when retention last ran"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}
