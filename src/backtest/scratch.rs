//! The scratch state of one replay worker: its leads (every lead with the same id
//! modulo the number of workers, so a lead's steps stay in order on one thread), each
//! as the baseline and the candidate rule set left it, with its event history, and
//! what each set did, counted. Nothing here touches the database or sends anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::shared::{Both, Pair, Result1};
use super::tally::{Tally, file_name};
use super::timeline::{Item, Step};
use crate::clock::{from_ms, to_ms};
use crate::config::{Config, Job};
use crate::domain::change::{Action, Outcome};
use crate::domain::{Changes, Consent, Email, Funnel, Lead, Source};
use crate::mail::StreamPlan;
use crate::mail::would_queue::WouldQueue;
use crate::process::history::{Count, LeadHistory, Recorded};
use crate::rules::api::History;
use crate::rules::run::run_function;
use crate::rules::{Context, Sandbox};

/// What every worker shares.
pub struct Setup {
    pub config: Arc<Config>,
    pub sandbox: Arc<Sandbox>,
    pub pair: Pair,
    pub plan: Arc<StreamPlan>,
    pub funnel: Arc<Funnel>,
    /// Addresses by lead id.
    pub emails: HashMap<i64, String>,
    /// Only what happens in `[since, until]` counts (epoch ms).
    pub since: i64,
    pub until: i64,
    pub outcome_stages: Vec<String>,
    pub mql_stage: String,
    /// Events replayed so far (for the progress bar).
    pub progress: AtomicU64,
}

/// The histories of a worker's leads, as rules count on them.
#[derive(Default)]
pub struct Histories(Mutex<HashMap<i64, LeadHistory>>);

impl Histories {
    pub(crate) fn record(&self, lead_id: i64, e: &Recorded<'_>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(lead_id).or_default().record(e);
    }
}

impl History for Histories {
    fn count(
        &self,
        lead_id: i64,
        name: Option<&str>,
        filter: Option<&Map<String, Value>>,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        upto_seq: i64,
    ) -> Result<i64, String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(&lead_id).map_or(0, |h| {
            h.count(&Count {
                name,
                filter,
                since: since.map(to_ms),
                until: to_ms(until),
                upto_seq,
            })
        }))
    }
}

/// Conversion and the MQL decision, as one rule set's replay saw them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Track {
    /// Scores just before the first move into an outcome stage.
    pub converted: Option<(f64, f64)>,
    /// Rules moved the lead into the MQL stage before it converted.
    pub mql: bool,
}

/// One lead in the scratch state.
pub struct Scratch {
    pub baseline: Lead,
    /// `None` while the candidate's lead equals the baseline's.
    pub candidate: Option<Lead>,
    /// An open handoff, per set.
    open: [bool; 2],
    pub track: [Track; 2],
    /// Had an event in the window.
    pub covered: bool,
    /// Rule actions that ran in one set and not (as often) in the other: baseline
    /// counts up, candidate down.
    pub because: HashMap<String, i64>,
}

impl Scratch {
    pub fn candidate(&self) -> &Lead {
        self.candidate.as_ref().unwrap_or(&self.baseline)
    }
}

/// One worker's results.
#[derive(Default)]
pub struct Finished {
    pub leads: HashMap<i64, Scratch>,
    /// Baseline, candidate, and what both did in one run.
    pub tallies: [Tally; 3],
    /// Events in the window, and all replayed.
    pub events: u64,
    pub replayed: u64,
    /// Events whose rules failed, per set.
    pub failed: [u64; 2],
    /// Handoff answers with no open handoff in the scratch state, per set.
    pub answers_skipped: [u64; 2],
}

/// A replay worker.
pub struct Worker {
    setup: Arc<Setup>,
    histories: Arc<Histories>,
    ctx: Context,
    queues: [WouldQueue; 2],
    out: Finished,
}

const BASE: usize = 0;
const CAND: usize = 1;
const BOTH: usize = 2;

impl Worker {
    pub fn new(setup: Arc<Setup>) -> Self {
        let histories = Arc::new(Histories::default());
        let ctx = Context {
            funnel: setup.funnel.clone(),
            history: histories.clone(),
            streams: Arc::new(setup.plan.names()),
            teams: Arc::new(setup.plan.teams.clone()),
            topics: Arc::new(setup.plan.topics.ids()),
        };
        let queue = || {
            WouldQueue::new(
                Arc::new(setup.config.mail.clone()),
                setup.plan.clone(),
                setup.config.time_zone,
            )
        };
        Self {
            queues: [queue(), queue()],
            histories,
            ctx,
            out: Finished::default(),
            setup,
        }
    }

    pub fn finish(self) -> Finished {
        self.out
    }

    fn in_window(&self, at: i64) -> bool {
        at >= self.setup.since && at <= self.setup.until
    }

    /// Replays one step.
    pub fn step(&mut self, item: &Item) {
        match &item.step {
            Step::Event(row) => self.event(row, item.at),
            Step::Stage {
                stage,
                reason,
                user,
            } => self.stage(item.lead_id, item.at, stage, reason, user, None),
            Step::Answer {
                accept,
                stage,
                reason,
                user,
            } => self.stage(item.lead_id, item.at, stage, reason, user, Some(*accept)),
            Step::Consent { granted, source } => {
                self.consent(item.lead_id, item.at, *granted, source)
            }
            Step::Job { schedule, previous } => self.job(*schedule, *previous, item.at),
        }
    }

    fn event(&mut self, row: &crate::store::PendingEvent, received_at: i64) {
        let setup = self.setup.clone();
        let counting = self.in_window(row.occurred_at);
        if row.occurred_at > setup.until {
            return;
        }
        self.out.replayed += 1;
        setup.progress.fetch_add(1, Ordering::Relaxed);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.out.leads.entry(row.lead_id) {
            let Some(email) = setup
                .emails
                .get(&row.lead_id)
                .and_then(|e| Email::parse(e).ok())
            else {
                return;
            };
            // Created as intake creates it: in the initial stage, when first seen.
            let lead = Lead::new(
                row.lead_id,
                email,
                setup.funnel.initial(),
                from_ms(received_at),
            );
            slot.insert(Scratch {
                baseline: lead,
                candidate: None,
                open: [false; 2],
                track: [Track::default(); 2],
                covered: false,
                because: HashMap::new(),
            });
        }
        self.histories.record(
            row.lead_id,
            &Recorded {
                seq: row.seq,
                at: row.occurred_at,
                name: &row.name,
                properties: &row.properties,
            },
        );
        if counting {
            self.out.events += 1;
        }
        if counting && let Some(s) = self.out.leads.get_mut(&row.lead_id) {
            s.covered = true;
        }
        let scratch = &self.out.leads[&row.lead_id];
        let both = setup.pair.evaluate(
            &setup.sandbox,
            &self.ctx,
            &setup.plan,
            &scratch.baseline,
            scratch.candidate.as_ref(),
            row,
        );
        let at = from_ms(row.occurred_at);
        self.settle(row.lead_id, both, at, counting);
    }

    /// Takes an event's (or a job's) results into the scratch state and the tallies.
    fn settle(&mut self, lead_id: i64, both: Both, at: DateTime<Utc>, counting: bool) {
        let Both {
            baseline,
            candidate,
            shared_actions,
        } = both;
        let Some(mut s) = self.out.leads.remove(&lead_id) else {
            return;
        };
        match candidate {
            None => {
                if let Ok((lead, changes)) = &baseline {
                    let before = s.baseline.clone();
                    for set in [BASE, CAND] {
                        track(&self.setup, &mut s.track[set], &before, lead, changes);
                        self.open(&mut s, set, changes);
                        self.mails(set, lead_id, lead, changes, at, counting);
                    }
                    if counting {
                        self.out.tallies[BOTH].changes(changes);
                    }
                }
                self.take(&mut s, BASE, baseline, counting);
            }
            Some(cand) => {
                let base_before = s.baseline.clone();
                let cand_before = s.candidate().clone();
                if let (Ok((b, bc)), Ok((c, cc))) = (&baseline, &cand) {
                    because(&mut s.because, bc, shared_actions, 1);
                    because(&mut s.because, cc, shared_actions, -1);
                    let _ = (b, c);
                }
                for (set, before, result) in
                    [(BASE, &base_before, &baseline), (CAND, &cand_before, &cand)]
                {
                    if let Ok((lead, changes)) = result {
                        track(&self.setup, &mut s.track[set], before, lead, changes);
                        self.open(&mut s, set, changes);
                        self.mails(set, lead_id, lead, changes, at, counting);
                        if counting {
                            self.out.tallies[set].changes(changes);
                        }
                    }
                }
                if s.candidate.is_none() {
                    s.candidate = Some(s.baseline.clone());
                }
                self.take(&mut s, BASE, baseline, counting);
                self.take(&mut s, CAND, cand, counting);
                if s.candidate.as_ref() == Some(&s.baseline) {
                    s.candidate = None;
                }
            }
        }
        self.out.leads.insert(lead_id, s);
    }

    fn take(&mut self, s: &mut Scratch, set: usize, result: Result1, counting: bool) {
        match result {
            Ok((lead, _)) => {
                if set == BASE {
                    s.baseline = lead;
                } else {
                    s.candidate = Some(lead);
                }
            }
            Err(_) => {
                if counting {
                    self.out.failed[set] += 1;
                    if set == BASE && s.candidate.is_none() {
                        self.out.failed[CAND] += 1;
                    }
                }
            }
        }
    }

    fn open(&mut self, s: &mut Scratch, set: usize, changes: &Changes) {
        if changes.handoff_settled.is_some() {
            s.open[set] = false;
        }
        if !changes.handoffs.is_empty() {
            s.open[set] = true;
        }
    }

    fn mails(
        &mut self,
        set: usize,
        lead_id: i64,
        lead: &Lead,
        changes: &Changes,
        at: DateTime<Utc>,
        counting: bool,
    ) {
        for (mail, source) in &changes.mails {
            if !source.is_rule() {
                continue;
            }
            let verdict = self.queues[set].offer(lead_id, lead, mail, at);
            if counting {
                self.out.tallies[set].mail(&mail.template, source, &verdict);
            }
        }
    }

    /// A stage move through the API, or (`answer`) a handoff answer, which applies only
    /// where the scratch state has the lead's handoff open.
    fn stage(
        &mut self,
        lead_id: i64,
        at: i64,
        stage: &str,
        reason: &str,
        user: &str,
        answer: Option<bool>,
    ) {
        if at > self.setup.until {
            return;
        }
        let Some(mut s) = self.out.leads.remove(&lead_id) else {
            return;
        };
        let when = from_ms(at);
        let counting = self.in_window(at);
        let applies = |s: &Scratch, set: usize| answer.is_none() || s.open[set];
        if s.candidate.is_none() && applies(&s, BASE) != applies(&s, CAND) {
            s.candidate = Some(s.baseline.clone());
        }
        let sets: &[usize] = if s.candidate.is_none() {
            &[BASE]
        } else {
            &[BASE, CAND]
        };
        for &set in sets {
            if !applies(&s, set) {
                if counting {
                    self.out.answers_skipped[set] += 1;
                }
                continue;
            }
            let lead = if set == BASE {
                &mut s.baseline
            } else {
                s.candidate.as_mut().expect("forked above")
            };
            let before = lead.clone();
            let mut changes = Changes::default();
            let source = Source::Api {
                user: user.to_string(),
            };
            let action = Action::SetStage {
                stage: stage.to_string(),
                reason: reason.to_string(),
            };
            if let Ok(Outcome::Applied) =
                lead.apply(action, &source, when, &self.setup.funnel, &mut changes)
            {
                self.setup.plan.follow(&before, lead, None, &mut changes);
                let after = lead.clone();
                let targets: &[usize] = if sets.len() == 1 {
                    &[BASE, CAND]
                } else {
                    &[set]
                };
                for &t in targets {
                    track(&self.setup, &mut s.track[t], &before, &after, &changes);
                }
            }
            if answer.is_some() {
                for t in if sets.len() == 1 {
                    [BASE, CAND].as_slice()
                } else {
                    std::slice::from_ref(&set)
                } {
                    s.open[*t] = false;
                }
            }
        }
        if s.candidate.as_ref() == Some(&s.baseline) {
            s.candidate = None;
        }
        self.out.leads.insert(lead_id, s);
    }

    /// Mail consent given or withdrawn (a confirmation link, an unsubscribe, a bounce),
    /// as `crate::process::manual` records it.
    fn consent(&mut self, lead_id: i64, at: i64, granted: bool, source: &str) {
        if at > self.setup.until {
            return;
        }
        let Some(s) = self.out.leads.get_mut(&lead_id) else {
            return;
        };
        let when = from_ms(at);
        let set = |lead: &mut Lead| {
            if lead.consent_email.granted == granted && lead.consent_email.at.is_some() {
                return;
            }
            lead.consent_email = Consent {
                granted,
                at: Some(when),
                source: Some(source.to_string()),
            };
            lead.updated_at = when;
        };
        set(&mut s.baseline);
        if let Some(c) = s.candidate.as_mut() {
            set(c);
        }
    }

    /// A scheduled job's run, on this worker's leads.
    fn job(&mut self, schedule: usize, previous: Option<i64>, at: i64) {
        if at > self.setup.until {
            return;
        }
        let setup = self.setup.clone();
        let Some(s) = setup.config.schedules.get(schedule) else {
            return;
        };
        let when = from_ms(at);
        let counting = self.in_window(at);
        match &s.job {
            Job::Decay { half_life } => {
                // The first run decays from the start of the history (the daemon's
                // start is not recorded).
                let from = previous.unwrap_or_else(|| self.first_at());
                let elapsed = (at - from).max(0) as f64;
                let factor = 0.5f64.powf(elapsed / half_life.as_millis() as f64);
                for s in self.out.leads.values_mut() {
                    decay(&mut s.baseline, factor, when);
                    if let Some(c) = s.candidate.as_mut() {
                        decay(c, factor, when);
                    }
                }
            }
            Job::Rule {
                file,
                function,
                stages,
                tags,
            } => {
                let open: Vec<String>;
                let stages = if stages.is_empty() {
                    open = setup
                        .funnel
                        .stages()
                        .iter()
                        .filter(|s| !s.closed)
                        .map(|s| s.name.clone())
                        .collect();
                    &open
                } else {
                    stages
                };
                let pick =
                    |l: &Lead| stages.contains(&l.stage) && tags.iter().all(|t| l.tags.contains(t));
                let files = [
                    setup.pair.baseline.file(file).cloned(),
                    setup.pair.candidate.file(file).cloned(),
                ];
                let same_file = match (&files[0], &files[1]) {
                    (Some(a), Some(b)) => a.digest == b.digest,
                    (None, None) => true,
                    _ => false,
                };
                let mut ids: Vec<i64> = self.out.leads.keys().copied().collect();
                ids.sort_unstable();
                for id in ids {
                    let s = &self.out.leads[&id];
                    let run = |set: usize, lead: &Lead| -> Option<Result1> {
                        if !pick(lead) {
                            return None;
                        }
                        let f = files[set].as_ref()?;
                        if !f.has_function(function, 1) {
                            return None;
                        }
                        Some(
                            run_function(&setup.sandbox, f, function, &self.ctx, lead, when).map(
                                |mut e| {
                                    setup.plan.follow(lead, &e.lead, None, &mut e.changes);
                                    (e.lead, e.changes)
                                },
                            ),
                        )
                    };
                    let unchanged = |l: &Lead| Ok((l.clone(), Changes::default()));
                    let both = if s.candidate.is_none() && same_file {
                        match run(BASE, &s.baseline) {
                            None => continue,
                            Some(r) => Both {
                                baseline: r,
                                candidate: None,
                                shared_actions: 0,
                            },
                        }
                    } else {
                        let b = run(BASE, &s.baseline);
                        let c = run(CAND, s.candidate());
                        if b.is_none() && c.is_none() {
                            continue;
                        }
                        Both {
                            baseline: b.unwrap_or_else(|| unchanged(&s.baseline)),
                            candidate: Some(c.unwrap_or_else(|| unchanged(s.candidate()))),
                            shared_actions: 0,
                        }
                    };
                    self.settle(id, both, when, counting);
                }
            }
        }
    }

    fn first_at(&self) -> i64 {
        self.out
            .leads
            .values()
            .map(|s| crate::clock::to_ms(s.baseline.created_at))
            .min()
            .unwrap_or(0)
    }
}

/// Interest decay as the store applies it: below a hundredth of a point it is zero.
fn decay(lead: &mut Lead, factor: f64, at: DateTime<Utc>) {
    if lead.interest == 0.0 {
        return;
    }
    let v = lead.interest * factor;
    lead.interest = if v.abs() < 0.01 { 0.0 } else { v };
    lead.updated_at = at;
}

/// Follows conversion and the MQL decision through one unit of work.
fn track(setup: &Setup, t: &mut Track, before: &Lead, after: &Lead, changes: &Changes) {
    if t.converted.is_some() {
        return;
    }
    if changes
        .moves
        .iter()
        .any(|m| m.source.is_rule() && m.to == setup.mql_stage)
    {
        t.mql = true;
    }
    if setup.outcome_stages.contains(&after.stage) {
        t.converted = Some((before.fit, before.interest));
    }
}

/// Counts a result's rule actions after the shared ones, as `file.rhai:line action`.
fn because(net: &mut HashMap<String, i64>, changes: &Changes, skip: usize, sign: i64) {
    for a in changes.actions.iter().skip(skip) {
        if let Source::Rule { file, line, .. } = &a.source {
            let key = format!("{}:{} {}", file_name(file), line, a.action);
            let n = net.entry(key).or_default();
            *n += sign;
        }
    }
    net.retain(|_, n| *n != 0);
}
