//! The backtest's report: per rule set the stages at the end, what each rule line did,
//! mails, handoffs and the figures against outcomes, and the diff between the sets
//! (leads whose stage, tags or scores differ, with the rule lines that made the
//! difference). As text for people, JSON for machines, and one JSON line per lead.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Backtest;
use super::outcomes::{LeadOutcome, Outcomes, outcomes};
use super::scratch::{Finished, Scratch, Track};
use super::tally::{Fired, Mails, Tally};
use crate::domain::{Funnel, Lead};

/// Scores closer than this are equal.
const EPSILON: f64 = 1e-6;
/// Examples shown in the diff.
const EXAMPLES: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The JSON report (`nurtured backtest --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub window: Window,
    pub events: u64,
    pub leads: usize,
    pub seconds: f64,
    pub events_per_second: f64,
    pub outcome_stages: Vec<String>,
    pub labels: Option<String>,
    pub baseline: SetReport,
    pub candidate: SetReport,
    pub diff: Diff,
    /// Shown in the text report only.
    #[serde(skip)]
    pub notes: Notes,
}

/// What the text report adds: failures and skipped answers, per set.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    pub replayed: u64,
    pub failed: [u64; 2],
    pub answers_skipped: [u64; 2],
}

/// One rule set's side.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    pub rules: String,
    pub stages: BTreeMap<String, usize>,
    pub fired: BTreeMap<String, Fired>,
    pub mails: BTreeMap<String, Mails>,
    pub handoffs: BTreeMap<String, u64>,
    pub outcomes: Outcomes,
}

/// A lead's end state in one set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    pub stage: String,
    pub fit: f64,
    pub interest: f64,
    pub tags: Vec<String>,
}

impl State {
    fn of(l: &Lead) -> Self {
        State {
            stage: l.stage.clone(),
            fit: l.fit,
            interest: l.interest,
            tags: l.tags.iter().cloned().collect(),
        }
    }

    fn differs(&self, o: &State) -> bool {
        self.stage != o.stage || self.tags != o.tags || self.scores_differ(o)
    }

    fn scores_differ(&self, o: &State) -> bool {
        (self.fit - o.fit).abs() > EPSILON || (self.interest - o.interest).abs() > EPSILON
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePair {
    pub from: String,
    pub to: String,
    pub leads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagDiff {
    pub tag: String,
    pub added: usize,
    pub removed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub email: String,
    pub baseline: State,
    pub candidate: State,
    pub because: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub leads: usize,
    pub stages: Vec<StagePair>,
    pub tags: Vec<TagDiff>,
    pub scores: usize,
    pub examples: Vec<Example>,
}

/// One line of `--per-lead`.
#[derive(Debug, Clone, Serialize)]
pub struct PerLead {
    pub email: String,
    pub baseline: State,
    pub candidate: State,
    pub converted: bool,
    pub baseline_outcome: LeadOutcome,
    pub candidate_outcome: LeadOutcome,
}

/// What [`build`] needs.
pub struct Inputs<'a> {
    pub done: Vec<Finished>,
    pub seconds: f64,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub outcome_stages: Vec<String>,
    pub labels: Option<HashMap<String, bool>>,
    pub labels_file: Option<String>,
    pub baseline_dir: String,
    pub candidate_dir: String,
    pub funnel: &'a Funnel,
    pub emails: &'a HashMap<i64, String>,
}

fn outcome(email: &str, lead: &Lead, t: &Track, label: Option<bool>) -> LeadOutcome {
    let (fit, interest) = match (label, t.converted) {
        (Some(false), _) | (_, None) => (lead.fit, lead.interest),
        (_, Some(scores)) => scores,
    };
    LeadOutcome {
        email: email.to_string(),
        fit,
        interest,
        mql: t.mql,
        converted: label.unwrap_or(t.converted.is_some()),
    }
}

/// The report from the workers' results.
pub fn build(i: Inputs<'_>) -> Backtest {
    let mut tallies = [Tally::default(), Tally::default()];
    let mut notes = Notes::default();
    let mut events = 0;
    let mut leads: Vec<(i64, Scratch)> = Vec::new();
    let windowed = i.since.is_some() || i.until.is_some();
    for f in i.done {
        let [b, c, both] = f.tallies;
        tallies[0].merge(b);
        tallies[1].merge(c);
        // What both did in one run counts for each.
        let mut copy = Tally::default();
        copy.merge_ref(&both);
        tallies[0].merge(copy);
        tallies[1].merge(both);
        events += f.events;
        notes.replayed += f.replayed;
        for s in 0..2 {
            notes.failed[s] += f.failed[s];
            notes.answers_skipped[s] += f.answers_skipped[s];
        }
        leads.extend(f.leads.into_iter().filter(|(_, s)| !windowed || s.covered));
    }
    leads.sort_by_key(|(id, _)| *id);

    let mut stages = [BTreeMap::new(), BTreeMap::new()];
    let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut tags: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut differ, mut scores) = (0, 0);
    let mut examples = Vec::new();
    let mut per_lead = Vec::with_capacity(leads.len());
    let mut lead_outcomes = [Vec::new(), Vec::new()];
    for (id, s) in &leads {
        let email = i.emails.get(id).cloned().unwrap_or_default();
        let (b, c) = (State::of(&s.baseline), State::of(s.candidate()));
        *stages[0].entry(b.stage.clone()).or_insert(0) += 1;
        *stages[1].entry(c.stage.clone()).or_insert(0) += 1;
        if b.differs(&c) {
            differ += 1;
            if b.stage != c.stage {
                *pairs.entry((b.stage.clone(), c.stage.clone())).or_default() += 1;
            }
            if b.scores_differ(&c) {
                scores += 1;
            }
            for t in c.tags.iter().filter(|t| !b.tags.contains(t)) {
                tags.entry(t.clone()).or_default().0 += 1;
            }
            for t in b.tags.iter().filter(|t| !c.tags.contains(t)) {
                tags.entry(t.clone()).or_default().1 += 1;
            }
            if examples.len() < EXAMPLES {
                let mut because: Vec<(String, i64)> =
                    s.because.iter().map(|(k, v)| (k.clone(), *v)).collect();
                because.sort();
                examples.push(Example {
                    email: email.clone(),
                    baseline: b.clone(),
                    candidate: c.clone(),
                    because: because
                        .into_iter()
                        .map(|(k, n)| {
                            let (set, n) = if n > 0 {
                                ("baseline", n)
                            } else {
                                ("candidate", -n)
                            };
                            if n == 1 {
                                format!("{k} (only {set})")
                            } else {
                                format!("{k} ({n} more times in {set})")
                            }
                        })
                        .collect(),
                });
            }
        }
        let label = i
            .labels
            .as_ref()
            .and_then(|l| l.get(&email.to_lowercase()).copied());
        let bo = outcome(&email, &s.baseline, &s.track[0], label);
        let co = outcome(&email, s.candidate(), &s.track[1], label);
        lead_outcomes[0].push(bo.clone());
        lead_outcomes[1].push(co.clone());
        per_lead.push(PerLead {
            email,
            baseline: b,
            candidate: c,
            converted: bo.converted,
            baseline_outcome: bo,
            candidate_outcome: co,
        });
    }
    // Stages in funnel order, with every stage listed.
    let stages = stages.map(|m: BTreeMap<String, usize>| {
        let mut all: BTreeMap<String, usize> = i
            .funnel
            .stages()
            .iter()
            .map(|s| (s.name.clone(), 0))
            .collect();
        all.extend(m);
        all
    });
    let [sb, sc] = stages;
    let [tb, tc] = tallies;
    let [ob, oc] = lead_outcomes;
    let set = |rules: String, stages, t: &Tally, o: &[LeadOutcome]| SetReport {
        rules,
        stages,
        fired: t.fired(),
        mails: t.mails.clone(),
        handoffs: t.handoffs.clone(),
        outcomes: outcomes(o),
    };
    let report = Report {
        window: Window {
            since: i.since,
            until: i.until,
        },
        events,
        leads: leads.len(),
        seconds: i.seconds,
        events_per_second: notes.replayed as f64 / i.seconds,
        outcome_stages: i.outcome_stages,
        labels: i.labels_file,
        baseline: set(i.baseline_dir, sb, &tb, &ob),
        candidate: set(i.candidate_dir, sc, &tc, &oc),
        diff: Diff {
            leads: differ,
            stages: pairs
                .into_iter()
                .map(|((from, to), leads)| StagePair { from, to, leads })
                .collect(),
            tags: tags
                .into_iter()
                .map(|(tag, (added, removed))| TagDiff {
                    tag,
                    added,
                    removed,
                })
                .collect(),
            scores,
            examples,
        },
        notes,
    };
    Backtest { report, per_lead }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1} %", v * 100.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let (b, c) = (&self.baseline, &self.candidate);
        let _ = writeln!(
            o,
            "Backtest: {} events replayed ({} in the window), {} leads, {:.2} s ({:.0} events/s)",
            self.notes.replayed, self.events, self.leads, self.seconds, self.events_per_second
        );
        let _ = writeln!(o, "baseline: {}   candidate: {}\n", b.rules, c.rules);
        let _ = writeln!(o, "Leads per stage at the end");
        let _ = writeln!(
            o,
            "  {:<16} {:>10} {:>10} {:>8}",
            "stage", "baseline", "candidate", "change"
        );
        for (stage, n) in &b.stages {
            let m = c.stages.get(stage).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "  {stage:<16} {n:>10} {m:>10} {:>+8}",
                m as i64 - *n as i64
            );
        }
        let _ = writeln!(
            o,
            "\nRule lines, most fired (times baseline / candidate, points)"
        );
        let mut lines: Vec<(&String, u64, u64, f64, f64)> = b
            .fired
            .keys()
            .chain(c.fired.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|k| {
                let x = b.fired.get(k).cloned().unwrap_or_default();
                let y = c.fired.get(k).cloned().unwrap_or_default();
                (k, x.times, y.times, x.points, y.points)
            })
            .collect();
        lines.sort_by(|x, y| (y.1.max(y.2)).cmp(&x.1.max(x.2)).then(x.0.cmp(y.0)));
        for (k, x, y, px, py) in lines.iter().take(15) {
            let _ = writeln!(o, "  {k:<28} {x:>9} {y:>9}   {px:>10.1} {py:>10.1}");
        }
        let _ = writeln!(o, "\nMails (asked -> would be queued; suppressed)");
        for (name, side) in [("baseline", b), ("candidate", c)] {
            for (t, m) in &side.mails {
                let why: Vec<String> = m
                    .suppressed
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let _ = writeln!(
                    o,
                    "  {name:<9} {t:<28} {:>7} -> {:>7}  {}",
                    m.asked,
                    m.queued,
                    why.join(", ")
                );
            }
        }
        let _ = writeln!(o, "\nHandoffs per team");
        for (name, side) in [("baseline", b), ("candidate", c)] {
            for (t, n) in &side.handoffs {
                let _ = writeln!(o, "  {name:<9} {t:<20} {n:>7}");
            }
        }
        let _ = writeln!(
            o,
            "\nAgainst outcomes ({})",
            self.labels
                .clone()
                .unwrap_or_else(|| self.outcome_stages.join(", "))
        );
        let _ = writeln!(o, "  {:<18} {:>10} {:>10}", "", "baseline", "candidate");
        let (x, y) = (&b.outcomes, &c.outcomes);
        let rows = [
            (
                "converted",
                x.converted.to_string(),
                y.converted.to_string(),
            ),
            ("MQL decisions", x.mql.to_string(), y.mql.to_string()),
            ("precision", pct(x.precision), pct(y.precision)),
            ("recall", pct(x.recall), pct(y.recall)),
            ("lift", num(x.lift), num(y.lift)),
            ("AUC fit", num(x.auc_fit), num(y.auc_fit)),
            ("AUC interest", num(x.auc_interest), num(y.auc_interest)),
            (
                "AUC fit+interest",
                num(x.auc_fit_interest),
                num(y.auc_fit_interest),
            ),
        ];
        for (k, u, v) in rows {
            let _ = writeln!(o, "  {k:<18} {u:>10} {v:>10}");
        }
        let d = &self.diff;
        let _ = writeln!(
            o,
            "\nDifferences: {} leads ({} with other scores)",
            d.leads, d.scores
        );
        for p in &d.stages {
            let _ = writeln!(o, "  stage {} -> {}: {} leads", p.from, p.to, p.leads);
        }
        for t in &d.tags {
            let _ = writeln!(o, "  tag {}: +{} -{}", t.tag, t.added, t.removed);
        }
        for e in d.examples.iter().take(10) {
            let _ = writeln!(
                o,
                "  {}: {} ({:.1}/{:.1}) -> {} ({:.1}/{:.1}) because {}",
                e.email,
                e.baseline.stage,
                e.baseline.fit,
                e.baseline.interest,
                e.candidate.stage,
                e.candidate.fit,
                e.candidate.interest,
                if e.because.is_empty() {
                    "-".into()
                } else {
                    e.because.join("; ")
                }
            );
        }
        if self.notes.failed.iter().any(|n| *n > 0)
            || self.notes.answers_skipped.iter().any(|n| *n > 0)
        {
            let _ = writeln!(
                o,
                "\nEvents whose rules failed: baseline {}, candidate {}; handoff answers without an open handoff (skipped): baseline {}, candidate {}",
                self.notes.failed[0],
                self.notes.failed[1],
                self.notes.answers_skipped[0],
                self.notes.answers_skipped[1]
            );
        }
        o
    }
}
