//! What one rule set did during the replay, counted: per rule file:line (times fired,
//! points, stage moves, tags, mails, handoffs), per mail template (asked, queued,
//! suppressed and why), per sales team (handoffs).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::domain::change::{Action, Outcome};
use crate::domain::{Changes, Source};
use crate::mail::would_queue::Verdict;

/// One rule line's work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Fired {
    pub times: u64,
    pub points: f64,
    pub stage_moves: u64,
    pub tags: u64,
    pub mails: u64,
    pub handoffs: u64,
}

impl Fired {
    fn add(&mut self, o: &Fired) {
        self.times += o.times;
        self.points += o.points;
        self.stage_moves += o.stage_moves;
        self.tags += o.tags;
        self.mails += o.mails;
        self.handoffs += o.handoffs;
    }
}

/// One template's mails.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Mails {
    pub asked: u64,
    pub queued: u64,
    pub suppressed: BTreeMap<String, u64>,
}

/// Everything counted for one rule set.
#[derive(Debug, Default)]
pub struct Tally {
    fired: HashMap<(Arc<str>, usize), Fired>,
    pub mails: BTreeMap<String, Mails>,
    pub handoffs: BTreeMap<String, u64>,
}

/// `rules/20-interest.rhai` -> `20-interest.rhai`.
pub fn file_name(shown: &str) -> &str {
    shown.rsplit('/').next().unwrap_or(shown)
}

impl Tally {
    fn at(&mut self, source: &Source) -> Option<&mut Fired> {
        match source {
            Source::Rule { file, line, .. } => {
                Some(self.fired.entry((file.clone(), *line)).or_default())
            }
            _ => None,
        }
    }

    /// Counts what rules did in one unit of work (mails are counted with their verdict,
    /// see [`Tally::mail`]).
    pub fn changes(&mut self, c: &Changes) {
        for a in &c.actions {
            let applied = a.outcome == Outcome::Applied;
            if let Some(f) = self.at(&a.source) {
                f.times += 1;
                if applied && matches!(a.action, Action::Tag(_)) {
                    f.tags += 1;
                }
            }
        }
        for s in &c.scores {
            if let Some(f) = self.at(&s.source) {
                f.points += s.delta;
            }
        }
        for m in &c.moves {
            if let Some(f) = self.at(&m.source) {
                f.stage_moves += 1;
            }
        }
        for h in &c.handoffs {
            if let Some(f) = self.at(&h.source) {
                f.handoffs += 1;
            }
            *self.handoffs.entry(h.team.clone()).or_default() += 1;
        }
    }

    /// A mail a rule asked for, and what the outbox would do with it.
    pub fn mail(&mut self, template: &str, source: &Source, verdict: &Verdict) {
        if let Some(f) = self.at(source) {
            f.mails += 1;
        }
        let m = self.mails.entry(template.to_string()).or_default();
        m.asked += 1;
        match verdict {
            Verdict::Queued => m.queued += 1,
            Verdict::Suppressed(why) => *m.suppressed.entry((*why).to_string()).or_default() += 1,
        }
    }

    /// Adds `other`'s counts.
    pub fn merge_ref(&mut self, other: &Tally) {
        for (k, v) in &other.fired {
            self.fired.entry(k.clone()).or_default().add(v);
        }
        for (k, v) in &other.mails {
            let m = self.mails.entry(k.clone()).or_default();
            m.asked += v.asked;
            m.queued += v.queued;
            for (why, n) in &v.suppressed {
                *m.suppressed.entry(why.clone()).or_default() += n;
            }
        }
        for (k, v) in &other.handoffs {
            *self.handoffs.entry(k.clone()).or_default() += v;
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (k, v) in other.fired {
            self.fired.entry(k).or_default().add(&v);
        }
        for (k, v) in other.mails {
            let m = self.mails.entry(k).or_default();
            m.asked += v.asked;
            m.queued += v.queued;
            for (why, n) in v.suppressed {
                *m.suppressed.entry(why).or_default() += n;
            }
        }
        for (k, v) in other.handoffs {
            *self.handoffs.entry(k).or_default() += v;
        }
    }

    /// Per `file.rhai:line`, in file and line order.
    pub fn fired(&self) -> BTreeMap<String, Fired> {
        let mut by_line: BTreeMap<(String, usize), Fired> = BTreeMap::new();
        for ((file, line), f) in &self.fired {
            by_line
                .entry((file_name(file).to_string(), *line))
                .or_default()
                .add(f);
        }
        by_line
            .into_iter()
            .map(|((file, line), f)| (format!("{file}:{line}"), f))
            .collect()
    }
}
