//! Runs schedules when they are due. Each run is recorded, so after a restart a missed
//! run happens once (not once per missed occurrence) and nothing runs twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use crate::config::{Job, Schedule};
use crate::domain::Source;
use crate::process::Processor;

/// The newest occurrence of `s` after `from` and at or before `until`.
fn newest_between(
    s: &Schedule,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    s.cron
        .after(&from.with_timezone(&tz))
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= until)
        .last()
}

/// Leads handled per transaction in a rule job.
const PAGE: i64 = 200;

/// What one run did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub schedule: String,
    pub due: DateTime<Utc>,
    pub leads: i64,
    pub failed: i64,
    pub error: Option<String>,
}

pub struct Scheduler {
    pub schedules: Vec<Schedule>,
    pub time_zone: Tz,
    pub processor: Arc<Processor>,
    /// Schedules that never ran count from here.
    pub started: DateTime<Utc>,
}

impl Scheduler {
    /// The newest occurrence of `s` that is due at `now` and has not run, with the
    /// due time of the last run that succeeded (for decay: the time that passed, so a
    /// failed run's interval is made up by the next one).
    async fn due(
        &self,
        s: &Schedule,
        now: DateTime<Utc>,
    ) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, crate::store::StoreError> {
        let store = &self.processor.store;
        let last = store.last_job_due(&s.name).await?;
        let from = last.unwrap_or(self.started);
        // After a long outage, look for the newest occurrence in the last month first
        // instead of stepping through every missed one.
        let recent = now - chrono::Duration::days(31);
        let due = match newest_between(s, recent.max(from), now, self.time_zone) {
            Some(d) => Some(d),
            None if from < recent => newest_between(s, from, recent, self.time_zone),
            None => None,
        };
        let Some(due) = due else {
            return Ok(None);
        };
        // A schedule that never ran counts from when the scheduler started.
        let good = store.last_good_job_due(&s.name).await?;
        Ok(Some((due, good.unwrap_or(self.started).min(due))))
    }

    /// When the next schedule falls due after `now`.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedules
            .iter()
            .filter_map(|s| s.cron.after(&now.with_timezone(&self.time_zone)).next())
            .map(|t| t.with_timezone(&Utc))
            .min()
    }

    /// Runs every schedule that is due at `now`.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Vec<JobReport> {
        let mut reports = Vec::new();
        for s in &self.schedules {
            match self.due(s, now).await {
                Ok(Some((due, prev))) => reports.push(self.run_job(s, due, prev, now).await),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(schedule = %s.name, error = %e, "cannot read schedule state")
                }
            }
        }
        reports
    }

    #[tracing::instrument(skip_all, fields(schedule = %s.name))]
    async fn run_job(
        &self,
        s: &Schedule,
        due: DateTime<Utc>,
        prev: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> JobReport {
        let store = &self.processor.store;
        let mut report = JobReport {
            schedule: s.name.clone(),
            due,
            leads: 0,
            failed: 0,
            error: None,
        };
        let run_id = match store.start_job(&s.name, due, now).await {
            Ok(id) => id,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let result = match &s.job {
            Job::Decay { half_life } => {
                let elapsed = (due - prev).num_milliseconds().max(0) as f64;
                let factor = 0.5f64.powf(elapsed / half_life.as_millis() as f64);
                let source = Source::System(format!("job:{}", s.name));
                let reason = format!(
                    "interest fades (half-life {})",
                    humantime::format_duration(*half_life)
                );
                self.processor
                    .decay_interest(factor, due, &source, &reason)
                    .await
                    .map(|n| report.leads = n as i64)
                    .map_err(|e| e.to_string())
            }
            Job::Rule {
                file,
                function,
                stages,
                tags,
            } => {
                self.rule_job(file, function, stages, tags, due, &mut report)
                    .await
            }
        };
        if let Err(e) = result {
            report.error = Some(e);
        }
        if let Err(e) = store
            .finish_job(
                run_id,
                self.processor.clock.now(),
                report.leads,
                report.failed,
                report.error.as_deref(),
            )
            .await
        {
            tracing::error!(error = %e, "cannot record the end of a job run");
        }
        match &report.error {
            Some(e) => tracing::error!(leads = report.leads, error = %e, "scheduled job failed"),
            None => tracing::info!(
                leads = report.leads,
                failed = report.failed,
                "scheduled job done"
            ),
        }
        report
    }

    async fn rule_job(
        &self,
        file: &str,
        function: &str,
        stages: &[String],
        tags: &[String],
        at: DateTime<Utc>,
        report: &mut JobReport,
    ) -> Result<(), String> {
        let funnel = &self.processor.funnel;
        let stages: Vec<String> = if stages.is_empty() {
            funnel
                .stages()
                .iter()
                .filter(|s| !s.closed)
                .map(|s| s.name.clone())
                .collect()
        } else {
            stages.to_vec()
        };
        let mut after = 0;
        loop {
            let ids = self
                .processor
                .store
                .lead_ids_matching(&stages, tags, after, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = ids.last() else {
                return Ok(());
            };
            after = *last;
            let results = self
                .processor
                .run_rule_on(file, function, &ids, at)
                .await
                .map_err(|e| e.to_string())?;
            for (id, r) in results {
                report.leads += 1;
                if let Err(e) = r {
                    report.failed += 1;
                    tracing::warn!(lead_id = id, error = %e, "scheduled rule failed for a lead");
                }
            }
        }
    }

    /// Runs due schedules until `shutdown`, waking for the next due time (at least once
    /// a minute, so clock changes are noticed).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = self.processor.clock.now();
            // Schedules run where the lease is: once for the base, by the leader of a
            // cluster.
            if self.processor.held_lease().is_ok() {
                self.run_due(now).await;
            }
            let wait = self
                .next_due(now)
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(60))
                .clamp(Duration::from_millis(200), Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
