//! Two rule sets evaluated together, with the live pipeline's own steps
//! (`crate::process::evaluate`: identify traits, every file's `on_event` in file
//! order, stream moves, consent, history-only). While the baseline's and the
//! candidate's lead are equal, the rule files both sets share at the start (same name,
//! same text) run once, and only the files from the first difference on run twice,
//! each from a copy of the shared result; when both sets are the same files, an event
//! runs once. Running the files in two steps on one session state is the same as one
//! run: a rule sees only the lead and the changes so far, which carry over.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rhai::Dynamic;

use crate::clock::from_ms;
use crate::domain::{Changes, Lead};
use crate::mail::StreamPlan;
use crate::process::evaluate::{event_view, identify, settle};
use crate::rules::api::{LeadHandle, Session};
use crate::rules::ruleset::{ON_EVENT, RuleFile};
use crate::rules::run::{call, event_dynamic, with_position};
use crate::rules::{Context, Evaluation, RuleError, RuleSet, Sandbox};
use crate::store::PendingEvent;

/// A unit of work's result on one rule set: the new lead and its changes.
pub type Result1 = Result<(Lead, Changes), RuleError>;

/// The two rule sets, split where they first differ.
pub struct Pair {
    pub baseline: Arc<RuleSet>,
    pub candidate: Arc<RuleSet>,
    /// `on_event` files both start with.
    shared: Vec<Arc<RuleFile>>,
    /// The rest of each, from the first difference.
    baseline_rest: Vec<Arc<RuleFile>>,
    candidate_rest: Vec<Arc<RuleFile>>,
}

/// An event's result on both sets.
pub struct Both {
    pub baseline: Result1,
    /// `None`: the same as the baseline's (one run served both).
    pub candidate: Option<Result1>,
    /// The actions at the start of both results that came from the shared run (the
    /// same in both): a difference lies after them.
    pub shared_actions: usize,
}

fn on_event(set: &RuleSet) -> Vec<Arc<RuleFile>> {
    set.files
        .iter()
        .filter(|f| f.has_on_event && !set.is_shadow(&f.name))
        .cloned()
        .collect()
}

impl Pair {
    pub fn new(baseline: Arc<RuleSet>, candidate: Arc<RuleSet>) -> Self {
        let b = on_event(&baseline);
        let c = on_event(&candidate);
        let common = b
            .iter()
            .zip(&c)
            .take_while(|(x, y)| x.name == y.name && x.digest == y.digest && x.shown == y.shown)
            .count();
        Self {
            shared: b[..common].to_vec(),
            baseline_rest: b[common..].to_vec(),
            candidate_rest: c[common..].to_vec(),
            baseline,
            candidate,
        }
    }

    /// Both sets are the same files.
    pub fn identical(&self) -> bool {
        self.baseline_rest.is_empty() && self.candidate_rest.is_empty()
    }

    /// Files both sets run once per event while their leads are equal.
    pub fn shared_files(&self) -> usize {
        self.shared.len()
    }

    /// Runs one event on the baseline's lead and, when it differs, the candidate's.
    pub fn evaluate(
        &self,
        sandbox: &Sandbox,
        ctx: &Context,
        plan: &StreamPlan,
        baseline: &Lead,
        candidate: Option<&Lead>,
        row: &PendingEvent,
    ) -> Both {
        let view = match event_view(row) {
            Ok(v) => v,
            Err(e) => {
                return Both {
                    candidate: candidate.map(|_| Err(e.clone())),
                    baseline: Err(e),
                    shared_actions: 0,
                };
            }
        };
        let event = event_dynamic(&view);
        let at = from_ms(row.occurred_at);
        let whole = |lead: &Lead, rest: &[Arc<RuleFile>]| -> Result1 {
            let identified = identify(lead, row.kind == "identify", row.traits.as_deref(), at)?;
            let start = identified.unwrap_or_else(|| lead.clone());
            let eval = run_files(
                sandbox,
                ctx,
                [self.shared.as_slice(), rest],
                &start,
                &Changes::default(),
                &event,
            )?;
            let eval = settle(plan, lead, eval, &row.name, row.history);
            Ok((eval.lead, eval.changes))
        };
        if let Some(candidate) = candidate {
            return Both {
                baseline: whole(baseline, &self.baseline_rest),
                candidate: Some(whole(candidate, &self.candidate_rest)),
                shared_actions: 0,
            };
        }
        if self.identical() {
            return Both {
                baseline: whole(baseline, &[]),
                candidate: None,
                shared_actions: 0,
            };
        }
        let start = identify(baseline, row.kind == "identify", row.traits.as_deref(), at)
            .map(|i| i.unwrap_or_else(|| baseline.clone()));
        let first = start.and_then(|start| {
            run_files(
                sandbox,
                ctx,
                [self.shared.as_slice(), &[]],
                &start,
                &Changes::default(),
                &event,
            )
        });
        let first = match first {
            Ok(f) => f,
            Err(e) => {
                return Both {
                    baseline: Err(e),
                    candidate: None,
                    shared_actions: 0,
                };
            }
        };
        let shared_actions = first.changes.actions.len();
        let go_on = |rest: &[Arc<RuleFile>]| -> Result1 {
            let eval = run_files(
                sandbox,
                ctx,
                [rest, &[]],
                &first.lead,
                &first.changes,
                &event,
            )?;
            let eval = settle(plan, baseline, eval, &row.name, row.history);
            Ok((eval.lead, eval.changes))
        };
        let c = go_on(&self.candidate_rest);
        let b = go_on(&self.baseline_rest);
        Both {
            baseline: b,
            candidate: Some(c),
            shared_actions,
        }
    }
}

/// Runs `on_event` of `files` (two slices, in order) for one event on one session
/// that starts with `lead` and `changes`, as `crate::rules::run::run_event` does: a
/// file that fails is left out (its changes dropped) and the others run again without
/// it, so the other files' changes apply, as live.
fn run_files(
    sandbox: &Sandbox,
    ctx: &Context,
    files: [&[Arc<RuleFile>]; 2],
    lead: &Lead,
    changes: &Changes,
    event: &(Dynamic, DateTime<Utc>, i64),
) -> Result<Evaluation, RuleError> {
    let files: Vec<&Arc<RuleFile>> = files.iter().flat_map(|f| f.iter()).collect();
    let mut left_out: Vec<usize> = Vec::new();
    let mut failed = Vec::new();
    loop {
        let failing = std::cell::Cell::new(None);
        let run = with_position(sandbox, |engine| {
            let handle = LeadHandle::new(Session {
                lead: lead.clone(),
                changes: changes.clone(),
                funnel: ctx.funnel.clone(),
                history: ctx.history.clone(),
                streams: ctx.streams.clone(),
                teams: ctx.teams.clone(),
                topics: ctx.topics.clone(),
                at: event.1,
                upto_seq: event.2,
                file: Arc::from(""),
            });
            for (i, file) in files.iter().enumerate() {
                if left_out.contains(&i) {
                    continue;
                }
                handle.set_file(&file.shown);
                // A fresh copy of the event map for each file, as a file may change
                // the one it was given.
                if let Err(e) = call(
                    sandbox,
                    engine,
                    file,
                    ON_EVENT,
                    vec![Dynamic::from(handle.clone()), event.0.clone()],
                ) {
                    failing.set(Some(i));
                    return Err(e);
                }
            }
            Ok(handle.finish())
        });
        match run {
            Ok(s) => {
                return Ok(Evaluation {
                    lead: s.lead,
                    changes: s.changes,
                    failed,
                    shadow: Vec::new(),
                });
            }
            Err(e) if e.transient => return Err(e),
            Err(e) => match failing.get() {
                Some(i) if !left_out.contains(&i) => {
                    left_out.push(i);
                    failed.push(e);
                }
                _ => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::scratch::Histories;
    use crate::config::Config;
    use crate::domain::Email;
    use crate::rules::Rules;
    use crate::rules::run::run_event;

    fn rules(dir: &std::path::Path, files: &[(&str, &str)], sandbox: &Sandbox) -> Arc<RuleSet> {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Rules::load(sandbox, dir, "rules").unwrap().current()
    }

    fn row(seq: i64, kind: &str, name: &str, traits: Option<&str>) -> PendingEvent {
        PendingEvent {
            seq,
            message_id: format!("m{seq}"),
            lead_id: 1,
            kind: kind.into(),
            name: name.into(),
            properties: r#"{"topic":"crm"}"#.into(),
            traits: traits.map(str::to_string),
            context: None,
            occurred_at: 1_790_000_000_000 + seq * 60_000,
            attempts: 0,
            history: false,
            retry_rules: None,
        }
    }

    /// The live path: `run_event` on one set, then what follows from it.
    fn live(
        sandbox: &Sandbox,
        set: &RuleSet,
        ctx: &Context,
        plan: &StreamPlan,
        lead: &Lead,
        r: &PendingEvent,
    ) -> Result1 {
        let at = from_ms(r.occurred_at);
        let identified = identify(lead, r.kind == "identify", r.traits.as_deref(), at)?;
        let view = event_view(r)?;
        let eval = run_event(
            sandbox,
            set,
            ctx,
            identified.as_ref().unwrap_or(lead),
            &view,
        )?;
        let eval = settle(plan, lead, eval, &r.name, r.history);
        Ok((eval.lead, eval.changes))
    }

    #[test]
    fn the_shared_run_ends_where_each_set_run_apart_ends() {
        let config = Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
        let sandbox = Sandbox::new(&config.limits, Arc::new(config.thresholds.clone()));
        let tmp = tempfile::tempdir().unwrap();
        let common = (
            "10-score.rhai",
            "fn on_event(lead, event) { lead.add_interest(5, \"seen\"); \
             if lead.count(\"Download\") >= 2 { lead.tag(\"twice\"); } }",
        );
        let last = (
            "90-stage.rhai",
            "fn on_event(lead, event) { if lead.interest >= 15.0 && lead.stage == \"subscriber\" \
             { lead.set_stage(\"lead\", \"active\"); } }",
        );
        let extra = (
            "55-title.rhai",
            "fn on_event(lead, event) { if lead.title.to_lower().contains(\"leiter\") \
             { lead.add_interest(10, \"leiter\"); lead.tag(\"leiter\"); } }",
        );
        let base = rules(&tmp.path().join("a"), &[common, last], &sandbox);
        let cand = rules(&tmp.path().join("b"), &[common, extra, last], &sandbox);
        let pair = Pair::new(base.clone(), cand.clone());
        assert_eq!(pair.shared_files(), 1);
        assert!(!pair.identical());
        let plan = crate::backtest::stream_plan(&config);
        let histories = Arc::new(Histories::default());
        let ctx = Context {
            funnel: Arc::new(config.funnel),
            history: histories.clone(),
            streams: Arc::new(plan.names()),
            teams: Arc::new(plan.teams.clone()),
            topics: Arc::new(plan.topics.ids()),
        };
        let events = [
            row(1, "track", "Download", None),
            row(
                2,
                "identify",
                "identify",
                Some(r#"{"title":"Leiter Marketing"}"#),
            ),
            row(3, "track", "Download", None),
            row(4, "track", "Webinar", None),
        ];
        let start = Lead::new(
            1,
            Email::parse("a@b.example").unwrap(),
            "subscriber",
            from_ms(0),
        );
        let (mut b, mut c): (Lead, Option<Lead>) = (start.clone(), None);
        let (mut live_b, mut live_c) = (start.clone(), start);
        for r in &events {
            histories.record(
                1,
                &crate::process::history::Recorded {
                    seq: r.seq,
                    at: r.occurred_at,
                    name: &r.name,
                    properties: &r.properties,
                },
            );
            let both = pair.evaluate(&sandbox, &ctx, &plan, &b, c.as_ref(), r);
            let (lb, cb) = live(&sandbox, &base, &ctx, &plan, &live_b, r).unwrap();
            let (lc, cc) = live(&sandbox, &cand, &ctx, &plan, &live_c, r).unwrap();
            let (nb, changes_b) = both.baseline.unwrap();
            let (nc, changes_c) = match both.candidate {
                Some(x) => x.unwrap(),
                None => (nb.clone(), changes_b.clone()),
            };
            assert_eq!(
                (&nb, &changes_b),
                (&lb, &cb),
                "baseline after event {}",
                r.seq
            );
            assert_eq!(
                (&nc, &changes_c),
                (&lc, &cc),
                "candidate after event {}",
                r.seq
            );
            c = (nc != nb).then_some(nc);
            b = nb;
            (live_b, live_c) = (lb, lc);
        }
        assert!(c.is_some(), "the candidate's lead differs in the end");
        assert!(live_c.tags.contains("leiter") && live_c.tags.contains("twice"));
        // Identical sets run once.
        assert!(Pair::new(base.clone(), base).identical());
    }
}
