//! Prometheus metrics: counters and histograms kept in memory as work happens, gauges
//! read from the store at each scrape, all rendered as Prometheus text for `GET
//! /metrics` (and the optional `[metrics] addr` listener). Names and meanings are
//! listed in docs/metrics.md.
//!
//! Each daemon has its own registry (no process-wide recorder), so several daemons in
//! one process (the tests) keep their counts apart. Handles are registered once; the
//! hot paths only add to an atomic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram, with_local_recorder,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::store::{ScrapeCounts, Store, StoreError};

/// Buckets of the processing histograms (seconds): rule runs take microseconds, a
/// group write milliseconds.
const FAST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Buckets of the SMTP send duration (seconds).
const SEND_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Outbox states always shown, so a state with no row reads 0 rather than vanishing.
const OUTBOX_STATES: [&str; 5] = ["queued", "sending", "sent", "failed", "suppressed"];

/// The daemon's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    pub events_received: Counter,
    pub events_processed: Counter,
    pub events_failed: Counter,
    /// One group of processed events written in one transaction.
    pub batch_duration: Histogram,
    pub smtp_send_duration: Histogram,
    pub sla_breaches: Counter,
    bounces: HashMap<&'static str, Counter>,
    events_pending: Gauge,
    lag: Gauge,
    handoffs_open: Gauge,
    handoffs_overdue: Gauge,
    outbox: Mutex<HashMap<String, Gauge>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("nurtured_smtp_send_duration_seconds".into()),
                SEND_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FAST_BUCKETS)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        with_local_recorder(&recorder, describe);
        let reg = |name: &'static str| with_local_recorder(&recorder, || counter!(name));
        let gauge_of = |name: &'static str, labels: &[(&'static str, String)]| {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            with_local_recorder(&recorder, || gauge!(name, labels))
        };
        let histogram_of = |name: &'static str| with_local_recorder(&recorder, || histogram!(name));
        gauge_of(
            "nurtured_build_info",
            &[("version", env!("CARGO_PKG_VERSION").to_string())],
        )
        .set(1.0);
        Metrics {
            events_received: reg("nurtured_events_received_total"),
            events_processed: reg("nurtured_events_processed_total"),
            events_failed: reg("nurtured_events_failed_total"),
            batch_duration: histogram_of("nurtured_batch_duration_seconds"),
            smtp_send_duration: histogram_of("nurtured_smtp_send_duration_seconds"),
            sla_breaches: reg("nurtured_sla_breaches_total"),
            bounces: BOUNCE_KINDS
                .into_iter()
                .map(|k| {
                    let c = with_local_recorder(
                        &recorder,
                        || counter!("nurtured_bounces_total", "kind" => k),
                    );
                    (k, c)
                })
                .collect(),
            events_pending: gauge_of("nurtured_events_pending", &[]),
            lag: gauge_of("nurtured_processing_lag_seconds", &[]),
            handoffs_open: gauge_of("nurtured_handoffs_open", &[]),
            handoffs_overdue: gauge_of("nurtured_handoffs_overdue", &[]),
            outbox: Mutex::new(
                OUTBOX_STATES
                    .into_iter()
                    .map(|s| {
                        (
                            s.to_string(),
                            gauge_of("nurtured_outbox_mails", &[("state", s.to_string())]),
                        )
                    })
                    .collect(),
            ),
            recorder,
        }
    }

    /// The run-time histogram of the rule file `file` (as shown, e.g.
    /// `rules/40-funnel.rhai`); taken once per compiled file.
    pub fn rule_file(&self, file: &str) -> Histogram {
        let file = file.to_string();
        with_local_recorder(
            &self.recorder,
            || histogram!("nurtured_rule_file_duration_seconds", "file" => file),
        )
    }

    /// Counts one applied bounce report of `kind` (`hard`, `soft`, `complaint`,
    /// `unsubscribe`).
    pub fn bounce(&self, kind: &str) {
        if let Some(c) = self.bounces.get(kind) {
            c.increment(1);
        }
    }

    /// Reads the gauges from the store, then renders every metric as Prometheus text.
    pub async fn render(&self, store: &Store, now_ms: i64) -> Result<String, StoreError> {
        let counts = store.scrape_counts(now_ms).await?;
        self.set_gauges(&counts, now_ms);
        Ok(self.recorder.handle().render())
    }

    fn set_gauges(&self, c: &ScrapeCounts, now_ms: i64) {
        self.events_pending.set(c.events_pending as f64);
        let lag = c
            .oldest_pending_ms
            .map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1e3);
        self.lag.set(lag);
        self.handoffs_open.set(c.handoffs_open as f64);
        self.handoffs_overdue.set(c.handoffs_overdue as f64);
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        for g in outbox.values() {
            g.set(0.0);
        }
        for (state, n) in &c.outbox {
            if !outbox.contains_key(state) {
                let g = with_local_recorder(
                    &self.recorder,
                    || gauge!("nurtured_outbox_mails", "state" => state.clone()),
                );
                outbox.insert(state.clone(), g);
            }
            outbox[state].set(*n as f64);
        }
    }

    /// Drains recorded histogram samples into their buckets; the daemon calls it every
    /// few seconds so that memory stays flat between scrapes.
    pub fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }
}

/// How often [`Metrics::upkeep`] runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs [`Metrics::upkeep`] every few seconds while `metrics` lives (call inside the
/// runtime).
pub fn keep_up(metrics: &Arc<Metrics>) {
    let weak = Arc::downgrade(metrics);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            match weak.upgrade() {
                Some(m) => m.upkeep(),
                None => break,
            }
        }
    });
}

/// The kinds of bounce reports, each with its own counter.
const BOUNCE_KINDS: [&str; 4] = ["hard", "soft", "complaint", "unsubscribe"];

/// The `# HELP` lines.
fn describe() {
    describe_counter!(
        "nurtured_events_received_total",
        "Events accepted and stored (duplicates excluded)"
    );
    describe_counter!(
        "nurtured_events_processed_total",
        "Events run through every rule file without an error"
    );
    describe_counter!(
        "nurtured_events_failed_total",
        "Events for which a rule file failed (kept for `nurtured events retry`)"
    );
    describe_gauge!("nurtured_events_pending", "Events waiting to be processed");
    describe_gauge!(
        "nurtured_processing_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event waiting to be processed (0 when none waits)"
    );
    describe_histogram!(
        "nurtured_batch_duration_seconds",
        Unit::Seconds,
        "Time to write one group of processed events in one transaction"
    );
    describe_histogram!(
        "nurtured_rule_file_duration_seconds",
        Unit::Seconds,
        "Time of one rule file's on_event for one event"
    );
    describe_gauge!("nurtured_outbox_mails", "Outbox rows by state");
    describe_histogram!(
        "nurtured_smtp_send_duration_seconds",
        Unit::Seconds,
        "Time of one SMTP send, from handing the mail over to the server's answer"
    );
    describe_counter!(
        "nurtured_bounces_total",
        "Bounce, complaint and unsubscribe reports applied, by kind"
    );
    describe_gauge!(
        "nurtured_handoffs_open",
        "Handoffs to sales not answered yet"
    );
    describe_gauge!(
        "nurtured_handoffs_overdue",
        "Open handoffs past their deadline"
    );
    describe_counter!(
        "nurtured_sla_breaches_total",
        "Handoffs whose deadline passed without an answer"
    );
    describe_gauge!(
        "nurtured_build_info",
        "Always 1; the labels name the running build"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` in:\n{text}"))
    }

    #[test]
    fn gauges_follow_the_store_and_states_gone_read_zero() {
        let m = Metrics::new();
        let now = 1_000_000;
        m.set_gauges(
            &ScrapeCounts {
                events_pending: 7,
                oldest_pending_ms: Some(now - 2_500),
                outbox: vec![("queued".into(), 3), ("held".into(), 1)],
                handoffs_open: 4,
                handoffs_overdue: 1,
            },
            now,
        );
        let text = m.recorder.handle().render();
        assert_eq!(
            line(&text, "nurtured_events_pending "),
            "nurtured_events_pending 7"
        );
        assert_eq!(
            line(&text, "nurtured_processing_lag_seconds "),
            "nurtured_processing_lag_seconds 2.5"
        );
        assert!(
            text.contains("nurtured_outbox_mails{state=\"queued\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("nurtured_outbox_mails{state=\"held\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nurtured_outbox_mails{state=\"sent\"} 0"),
            "{text}"
        );
        assert_eq!(
            line(&text, "nurtured_handoffs_overdue "),
            "nurtured_handoffs_overdue 1"
        );

        m.set_gauges(&ScrapeCounts::default(), now);
        let text = m.recorder.handle().render();
        assert!(
            text.contains("nurtured_outbox_mails{state=\"queued\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("nurtured_outbox_mails{state=\"held\"} 0"),
            "{text}"
        );
        assert_eq!(
            line(&text, "nurtured_processing_lag_seconds "),
            "nurtured_processing_lag_seconds 0"
        );
    }

    #[test]
    fn two_registries_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.events_received.increment(3);
        a.bounce("hard");
        a.bounce("no such kind");
        a.rule_file("rules/10-fit.rhai").record(0.001);
        let text = a.recorder.handle().render();
        assert!(text.contains("nurtured_events_received_total 3"), "{text}");
        assert!(
            text.contains("nurtured_bounces_total{kind=\"hard\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "nurtured_rule_file_duration_seconds_count{file=\"rules/10-fit.rhai\"} 1"
            ),
            "{text}"
        );
        let other = b.recorder.handle().render();
        assert!(
            other.contains("nurtured_events_received_total 0"),
            "{other}"
        );
        assert!(!other.contains("10-fit"), "{other}");
    }
}
