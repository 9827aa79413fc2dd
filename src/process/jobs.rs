//! Work on many leads at once for scheduled jobs: a rule function over a page of leads
//! (under those leads' locks, one transaction per page), and interest decay (every lead
//! at once: it waits until the work in flight is written and holds new work back while
//! it runs).

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::processor::{ProcessError, Processor};
use crate::domain::{Changes, Lead, Source};
use crate::rules::{RuleError, run::run_function};
use crate::store::build;

/// One lead's result: its new state and changes, or the rule error.
type RunResult = Result<(Lead, Changes), RuleError>;

impl Processor {
    /// Calls `function(lead)` of rule file `file` for each lead in `ids`, at time `at`.
    /// Successful runs are saved; each lead's result is returned.
    pub async fn run_rule_on(
        &self,
        file: &str,
        function: &str,
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<Vec<(i64, Result<Changes, RuleError>)>, ProcessError> {
        let set = self.rules.current();
        let Some(rule) = set.file(file).cloned() else {
            let e = RuleError::new(
                &format!("{}/{file}", self.rules.shown_dir()),
                "this rule file (named in a schedule) is not loaded",
            );
            return Ok(ids.iter().map(|id| (*id, Err(e.clone()))).collect());
        };
        if !rule.has_function(function, 1) {
            let e = RuleError::new(
                &rule.shown,
                format!("there is no function {function}(lead) in this file (named in a schedule)"),
            );
            return Ok(ids.iter().map(|id| (*id, Err(e.clone()))).collect());
        }
        let _gate = self.gate.shared().await;
        let guards = self.locks.lock_all(ids).await;
        let mut leads = std::collections::HashMap::with_capacity(guards.len());
        let mut missing = Vec::new();
        for g in &guards {
            match self.cache.lead(g.lead_id()) {
                Some(l) => {
                    leads.insert(l.id, l);
                }
                None => missing.push(g.lead_id()),
            }
        }
        if !missing.is_empty() {
            leads.extend(self.store.leads_by_ids(&missing).await?);
        }
        let ctx = self.context();
        let plan = self.plan.clone();
        let sandbox = self.sandbox.clone();
        let function = function.to_string();
        let results = tokio::task::spawn_blocking(move || {
            let mut out: Vec<(i64, RunResult)> = Vec::new();
            for (id, lead) in leads {
                let r = run_function(&sandbox, &rule, &function, &ctx, &lead, at).map(|mut e| {
                    plan.follow(&lead, &e.lead, None, &mut e.changes);
                    (e.lead, e.changes)
                });
                out.push((id, r));
            }
            out.sort_by_key(|(id, _)| *id);
            out
        })
        .await?;
        let saved: Vec<&Lead> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .filter(|(_, c)| {
                !c.moves.is_empty()
                    || !c.scores.is_empty()
                    || c.actions
                        .iter()
                        .any(|a| a.outcome == crate::domain::change::Outcome::Applied)
            })
            .map(|(l, _)| l)
            .collect();
        let records: Vec<(i64, Option<i64>, &Changes)> = results
            .iter()
            .filter_map(|(id, r)| r.as_ref().ok().map(|(_, c)| (*id, None, c)))
            .collect();
        let rows: Vec<(&Lead, i64)> = saved.iter().map(|l| (*l, 0)).collect();
        let statements = build::leads(self.store.dialect(), &rows)
            .and(build::changes(self.store.dialect(), &records))
            .and(build::mails(
                self.store.dialect(),
                &records,
                &self.plan.params,
                at,
            ))
            .and(build::handoffs(self.store.dialect(), &records, at));
        let mut versions: Vec<(i64, i64)> = results
            .iter()
            .filter_map(|(id, r)| r.as_ref().ok().map(|(l, _)| (*id, l.version)))
            .collect();
        versions.sort_unstable();
        let lease = self.held_lease()?;
        let mut tx = self.store.begin_write().await?;
        tx.hold_lease(&lease).await?;
        let written = match tx.claim_versions(&versions).await {
            Ok(()) => match tx.execute(statements).await {
                Ok(_) => tx.commit().await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            for id in ids {
                self.cache.forget(*id);
            }
            return Err(e.into());
        }
        let saved: Vec<Lead> = saved
            .into_iter()
            .map(|l| {
                let mut l = l.clone();
                self.wrote_version(&mut l);
                l
            })
            .collect();
        self.remember(&saved);
        self.wake(records.iter().map(|(_, _, c)| *c));
        Ok(results
            .into_iter()
            .map(|(id, r)| (id, r.map(|(_, c)| c)))
            .collect())
    }

    /// Multiplies every lead's interest by `factor` (0..1). Returns leads changed.
    pub async fn decay_interest(
        &self,
        factor: f64,
        at: DateTime<Utc>,
        source: &Source,
        reason: &str,
    ) -> Result<u64, ProcessError> {
        let _all = self.gate.exclusive().await;
        let lease = self.held_lease()?;
        let mut tx = self.store.begin_write().await?;
        tx.hold_lease(&lease).await?;
        let n = tx.decay_interest(factor, at, source, reason).await?;
        let done = tx.commit().await;
        // Interest changed in the store for every lead.
        self.cache.forget_states();
        done?;
        Ok(n)
    }
}

impl Processor {
    /// Asks `function(lead)` of rule file `file` for an answer (the owner a team's
    /// assignment rule picks). Nothing the function asks to change is kept.
    pub async fn ask_rule(
        &self,
        file: &str,
        function: &str,
        lead: &Lead,
    ) -> Result<String, RuleError> {
        let go_on = CancellationToken::new();
        self.ask_rule_each(file, function, vec![lead.clone()], &go_on)
            .await
            .pop()
            .unwrap_or_else(|| Err(RuleError::new(file, "the rule gave no answer")))
    }

    /// [`Processor::ask_rule`] for each of `leads`, in one blocking task; the answers
    /// come in the order of `leads`. Once `shutdown` is cancelled the leads not asked yet
    /// get an error.
    pub async fn ask_rule_each(
        &self,
        file: &str,
        function: &str,
        leads: Vec<Lead>,
        shutdown: &CancellationToken,
    ) -> Vec<Result<String, RuleError>> {
        let set = self.rules.current();
        let Some(rule) = set.file(file).cloned() else {
            let e = RuleError::new(
                &format!("{}/{file}", self.rules.shown_dir()),
                "this rule file (named in [[sales.teams]] assign) is not loaded",
            );
            return vec![Err(e); leads.len()];
        };
        if !rule.has_function(function, 1) {
            let e = RuleError::new(
                &rule.shown,
                format!(
                    "there is no function {function}(lead) in this file (named in [[sales.teams]] assign)"
                ),
            );
            return vec![Err(e); leads.len()];
        }
        let (ctx, sandbox) = (self.context(), self.sandbox.clone());
        let (function, at, n) = (function.to_string(), self.clock.now(), leads.len());
        let shutdown = shutdown.clone();
        tokio::task::spawn_blocking(move || {
            leads
                .iter()
                .map(|lead| {
                    if shutdown.is_cancelled() {
                        return Err(RuleError::new(&rule.shown, "not asked: shutting down"));
                    }
                    crate::rules::run::ask_function(&sandbox, &rule, &function, &ctx, lead, at)
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            vec![Err(RuleError::new(file, format!("the rule call crashed: {e}"))); n]
        })
    }
}
