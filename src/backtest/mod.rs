//! `nurtured backtest`: the stored history (events, API stage moves, handoff answers,
//! scheduled job runs, consent changes) replayed in time order through two rule sets,
//! the live rules (baseline) and a candidate folder, each into its own scratch state in
//! memory, with the live pipeline's evaluation code. The database is only read; nothing
//! is sent. See docs/backtest.md.
//!
//! - [`timeline`]: the steps to replay, merged in time order;
//! - [`shared`]: one event through both rule sets, once where they agree;
//! - [`scratch`]: a replay worker's leads and counts;
//! - [`tally`]: per rule line, template and team;
//! - [`report`]: the report (text, JSON, per lead) and the diff;
//! - [`outcomes`], [`labels`], [`html`]: figures against real outcomes, outcomes
//!   from a CSV, the HTML page.

pub mod html;
pub mod labels;
pub mod outcomes;
pub mod report;
pub mod scratch;
pub mod shared;
pub mod tally;
pub mod timeline;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::mail::StreamPlan;
use crate::rules::{RuleError, RuleSet, Rules, Sandbox};
use crate::store::{Store, StoreError};
use scratch::{Finished, Setup, Worker};
use timeline::Item;

/// Replay threads (a lead's steps stay on one).
pub const WORKERS: usize = 2;
/// Events read per query.
const PAGE: usize = 20_000;

/// What to replay and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The candidate rules folder; `None`: the live rules.
    pub rules: Option<PathBuf>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Outcome stages; empty: `backtest.outcomes` of the config.
    pub outcomes: Vec<String>,
    pub labels: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<RuleError>),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Labels(#[from] labels::LabelsError),
}

/// A finished backtest.
pub struct Backtest {
    pub report: report::Report,
    pub per_lead: Vec<report::PerLead>,
}

/// The live stream plan, as the daemon builds it.
pub fn stream_plan(config: &Config) -> StreamPlan {
    StreamPlan::new(config.streams.clone(), config.mail.quarantine.clone())
        .with_topics(config.topics.clone())
        .with_sales(
            config.sales.team_names(),
            config.sales.on_stage.clone(),
            config
                .funnel
                .stages()
                .iter()
                .filter(|s| s.side == crate::domain::Side::Sales)
                .map(|s| s.name.clone())
                .collect(),
        )
        .with_erased_key(crate::privacy::AddressKey::for_mail(&config.mail))
}

/// Compiles a rules folder; files in it are named as the live rules are (so a file
/// both sets hold reads the same in both), errors with the folder as given. The files
/// named in `shadow` run in shadow, as they do live: they change nothing, and one
/// that does not compile stops nothing.
fn load_rules(
    sandbox: &Sandbox,
    dir: &std::path::Path,
    shown: &str,
    shadow: &[String],
) -> Result<Arc<RuleSet>, BacktestError> {
    let is_shadow = |e: &crate::rules::RuleError| {
        shadow
            .iter()
            .any(|name| e.file.rsplit('/').next() == Some(name.as_str()))
    };
    let (_, errors) = crate::rules::ruleset::check_dir(sandbox, dir, &dir.display().to_string());
    let errors: Vec<_> = errors.into_iter().filter(|e| !is_shadow(e)).collect();
    if !errors.is_empty() {
        return Err(BacktestError::Rules(errors));
    }
    let rules =
        Rules::load_with_shadow(sandbox, dir, shown, shadow).map_err(BacktestError::Rules)?;
    Ok(rules.current())
}

/// Replays the history of the configured database.
pub async fn run(config: Arc<Config>, options: &Options) -> Result<Backtest, BacktestError> {
    let started = Instant::now();
    let sandbox = Arc::new(Sandbox::new(
        &config.limits,
        Arc::new(config.thresholds.clone()),
    ));
    let baseline = load_rules(
        &sandbox,
        &config.rules_dir,
        &config.rules_shown,
        &config.rules_shadow,
    )?;
    let candidate = match &options.rules {
        Some(dir) => load_rules(&sandbox, dir, &config.rules_shown, &[])?,
        None => baseline.clone(),
    };
    let outcome_stages = if options.outcomes.is_empty() {
        config.backtest.outcomes.clone()
    } else {
        options.outcomes.clone()
    };
    for s in &outcome_stages {
        if config.funnel.stage(s).is_none() {
            return Err(BacktestError::Usage(format!(
                "--outcome {s}: unknown stage; the stages are: {}",
                config.funnel.names_joined()
            )));
        }
    }
    let labels = match &options.labels {
        Some(p) => Some(labels::read(p)?),
        None => None,
    };
    let store = Store::open_read_only(&config.database_url).await?;
    let emails: HashMap<i64, String> = store.replay_leads().await?.into_iter().collect();
    let last = store.replay_last_seq().await?;
    let schedules: Vec<String> = config.schedules.iter().map(|s| s.name.clone()).collect();
    let mut side = timeline::side_steps(
        store.replay_stage_moves().await?,
        store.replay_job_runs().await?,
        store.replay_consents().await?,
        &|name| schedules.iter().position(|s| s == name),
    );
    let plan = Arc::new(stream_plan(&config));
    let setup = Arc::new(Setup {
        sandbox,
        pair: shared::Pair::new(baseline, candidate),
        plan,
        funnel: Arc::new(config.funnel.clone()),
        emails,
        since: options.since.map_or(i64::MIN, crate::clock::to_ms),
        until: options.until.map_or(i64::MAX, crate::clock::to_ms),
        outcome_stages: outcome_stages.clone(),
        mql_stage: config.backtest.mql_stage.clone(),
        progress: Default::default(),
        config: config.clone(),
    });

    // The workers, each fed its leads' steps in order.
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(4);
        let setup = setup.clone();
        senders.push(tx);
        handles.push(std::thread::spawn(move || {
            let mut w = Worker::new(setup);
            for batch in rx {
                for item in &batch {
                    w.step(item);
                }
            }
            w.finish()
        }));
    }
    let bar = options.progress.then(|| progress_bar(last));
    let send = |items: Vec<Item>| {
        let mut parts: Vec<Vec<Item>> = (0..WORKERS).map(|_| Vec::new()).collect();
        for item in items {
            if item.lead_id == 0 {
                for p in parts.iter_mut() {
                    p.push(item.clone());
                }
            } else {
                parts[(item.lead_id.rem_euclid(WORKERS as i64)) as usize].push(item);
            }
        }
        for (tx, p) in senders.iter().zip(parts) {
            if !p.is_empty() {
                // A worker that is gone panicked: its join reports it.
                let _ = tx.send(p);
            }
        }
    };
    let mut after = 0;
    loop {
        let page = store.replay_events(after, last, PAGE).await?;
        let Some(l) = page.last() else { break };
        after = l.seq;
        let mut items = Vec::with_capacity(page.len() + 16);
        timeline::merge(page, &mut side, &mut items);
        send(items);
        if let Some(b) = &bar {
            b.set_position(setup.progress.load(Ordering::Relaxed));
        }
    }
    send(side.drain(..).collect());
    drop(senders);
    store.close().await;
    let mut done: Vec<Finished> = Vec::new();
    for h in handles {
        match h.join() {
            Ok(f) => done.push(f),
            Err(_) => {
                return Err(BacktestError::Usage(
                    "a replay worker crashed; report this with the command line".into(),
                ));
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = started
        .elapsed()
        .max(Duration::from_micros(1))
        .as_secs_f64();
    let candidate_dir = options
        .rules
        .as_ref()
        .map_or(config.rules_shown.clone(), |p| p.display().to_string());
    Ok(report::build(report::Inputs {
        done,
        seconds,
        since: options.since,
        until: options.until,
        outcome_stages,
        labels,
        labels_file: options.labels.as_ref().map(|p| p.display().to_string()),
        baseline_dir: config.rules_shown.clone(),
        candidate_dir,
        funnel: &config.funnel,
        emails: &setup.emails,
    }))
}

fn progress_bar(total: i64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying [{bar:40}] {pos}/{len} events ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
