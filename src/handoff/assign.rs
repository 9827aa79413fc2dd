//! Assigning new handoffs, many at a time: one batch of handoffs (oldest first) gets its
//! owners, deadlines, log lines, notification mails and webhook calls in one write
//! transaction. At the same time, a team's assignment rule is asked for the whole batch
//! in one blocking task, the duplicate check runs as one statement for the batch, and
//! the briefs' rows are read in a few statements per part of the batch. Each team's
//! round-robin turns are taken for the batch at once, in handoff order, so the owners
//! come out as if the handoffs had been assigned one by one.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::brief::{self, local_time};
use super::desk::{Desk, DeskError, mail_to};
use super::ladder::{deadline, point_at};
use crate::clock::{from_ms, to_ms};
use crate::config::sales::{Assign, Team};
use crate::domain::Lead;
use crate::store::{
    CompanyOf, HandoffLog, HandoffRow, HandoffUpdate, InternalMail, NewWebhook, StoreError,
};

/// How many leads' brief rows are read at once.
const BRIEF_PART: usize = 250;

/// A new handoff with what its assignment needs.
struct Ready<'c> {
    handoff: HandoffRow,
    team: &'c Team,
    lead: Lead,
    /// The owner the team's rule picked, if it has a rule and it named one.
    pick: Option<String>,
}

/// A new handoff ready to be assigned: its brief and duplicates are read and its rule
/// asked.
struct Prepared<'c> {
    ready: Ready<'c>,
    /// The other leads of the company with sales, as JSON text.
    duplicates: String,
    brief: Value,
}

/// The writes of a batch, worked out for given first turns per team.
#[derive(Default)]
struct Plan {
    /// The first turn each team's round-robin takes in this batch.
    first_turns: BTreeMap<String, i64>,
    updates: Vec<HandoffUpdate>,
    logs: Vec<HandoffLog>,
    mails: Vec<InternalMail>,
    calls: Vec<NewWebhook>,
    /// (handoff, lead, owner, deadline as the owner reads it)
    assigned: Vec<(i64, i64, String, String)>,
}

impl Desk {
    /// Assigns `new` (handoffs in id order); returns how many were assigned or ended
    /// (a removed team, a deleted lead). Nothing is written once `shutdown` is
    /// cancelled before the batch's transaction.
    ///
    /// Everything is worked out before the write transaction, with the turns each team
    /// will take if no other writer moved its counter or a handoff in between; inside,
    /// both are checked and, only if something moved, worked out again.
    pub(super) async fn assign_batch(
        &self,
        new: Vec<HandoffRow>,
        shutdown: &CancellationToken,
    ) -> Result<usize, DeskError> {
        if new.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now();
        let started = Instant::now();
        let mut done = 0;
        let lead_ids: Vec<i64> = new.iter().map(|h| h.lead_id).collect();
        let mut leads = self.store().leads_by_ids(&lead_ids).await?;
        let mut ready = Vec::with_capacity(new.len());
        for h in new {
            let Some(team) = self.config.sales.team(&h.team) else {
                let why = format!("team `{}` is not configured", h.team);
                done += usize::from(self.give_back(h, None, now, &why).await?);
                continue;
            };
            // A lead has at most one handoff waiting, so it is in the batch once.
            let Some(lead) = leads.remove(&h.lead_id) else {
                done += usize::from(
                    self.close_unassigned(&h, "the lead no longer exists")
                        .await?,
                );
                continue;
            };
            ready.push(Ready {
                handoff: h,
                team,
                lead,
                pick: None,
            });
        }
        if ready.is_empty() {
            return Ok(done);
        }
        // The rules, the duplicate check and the briefs' reads at the same time.
        let batch_leads = ready_leads(&ready);
        let (_, duplicates, briefs) = tokio::join!(
            self.pick_by_rules(&mut ready, shutdown),
            self.duplicates(&batch_leads),
            self.briefs(&batch_leads)
        );
        let (mut duplicates, mut briefs) = (duplicates?, briefs?);
        if shutdown.is_cancelled() {
            return Ok(done);
        }
        let mut prepared: Vec<Prepared> = ready
            .into_iter()
            .map(|r| {
                let dups = duplicates.remove(&r.lead.id).unwrap_or_default();
                let mut brief = briefs.remove(&r.lead.id).unwrap_or_default();
                let duplicates = serde_json::to_string(&dups).unwrap_or_default();
                brief::set_duplicates(&mut brief, dups);
                Prepared {
                    brief,
                    duplicates,
                    ready: r,
                }
            })
            .collect();
        let mut first_turns = BTreeMap::new();
        for (team, turns) in turns_needed(&prepared) {
            if turns > 0 {
                first_turns.insert(team.to_string(), self.store().turns_taken(team).await? + 1);
            }
        }
        let mut plan = self.plan(&prepared, first_turns, now);
        let worked_out = started.elapsed();

        let mut tx = self.begin().await?;
        let waited = started.elapsed() - worked_out;
        let keys: Vec<(i64, i64, i64)> = prepared
            .iter()
            .map(|p| {
                let h = &p.ready.handoff;
                (h.id, h.round, h.step)
            })
            .collect();
        let still_new = tx.still_new(&keys).await?;
        let moved = still_new.len() < prepared.len();
        prepared.retain(|p| still_new.contains(&p.ready.handoff.id));
        let mut first_turns = BTreeMap::new();
        for (team, turns) in turns_needed(&prepared) {
            if turns > 0 {
                first_turns.insert(team.to_string(), tx.take_turns(team, turns).await?);
            }
        }
        if moved || first_turns != plan.first_turns {
            plan = self.plan(&prepared, first_turns, now);
        }
        let applied = tx.update_handoffs(&plan.updates, to_ms(now)).await?;
        if applied != plan.updates.len() as u64 {
            // Checked above inside this transaction: cannot happen. Write nothing.
            tracing::error!(
                applied,
                planned = plan.updates.len(),
                "handoffs moved during their assignment; trying again"
            );
            return Ok(done);
        }
        tx.log_handoffs(&plan.logs).await?;
        tx.queue_internal_mails(&plan.mails, to_ms(now)).await?;
        tx.queue_webhooks(&plan.calls, to_ms(now)).await?;
        tx.commit().await?;
        self.processor.mail_wake.notify_one();
        if !plan.calls.is_empty() {
            self.webhook_wake.notify_one();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            assigned = plan.assigned.len(),
            prepare_ms = ms(worked_out),
            wait_ms = ms(waited),
            write_ms = ms(started.elapsed() - worked_out - waited),
            "batch of handoffs assigned"
        );
        for (handoff, lead, owner, due) in &plan.assigned {
            tracing::info!(handoff, lead, owner = %owner, due = %due, "lead handed to sales");
        }
        Ok(done + plan.assigned.len())
    }

    /// The owners, updates, log lines, notifications and webhook calls of `prepared`
    /// when each team's turns start at `first_turns`.
    fn plan(
        &self,
        prepared: &[Prepared<'_>],
        first_turns: BTreeMap<String, i64>,
        now: DateTime<Utc>,
    ) -> Plan {
        let mut owners: HashMap<&str, std::vec::IntoIter<String>> = HashMap::new();
        for (team, picks) in picks_by_team(prepared).into_values() {
            let first = first_turns.get(team.name.as_str()).copied().unwrap_or(1);
            owners.insert(
                team.name.as_str(),
                in_turn(&team.owners, first, &picks).into_iter(),
            );
        }
        let mut plan = Plan {
            first_turns,
            ..Plan::default()
        };
        for p in prepared {
            let (h, team, lead) = (&p.ready.handoff, p.ready.team, &p.ready.lead);
            let Some(owner_id) = owners.get_mut(team.name.as_str()).and_then(Iterator::next) else {
                continue;
            };
            let update = HandoffUpdate {
                id: h.id,
                expect_state: &["new"],
                expect_round: h.round,
                expect_step: h.step,
                state: "open".into(),
                owner: Some(owner_id.clone()),
                owners_had: vec![owner_id.clone()],
                round: h.round + 1,
                duplicates: Some(p.duplicates.clone()),
                assigned_at: Some(to_ms(now)),
                due_at: Some(to_ms(deadline(team, &owner_id, now))),
                step: 0,
                next_at: point_at(team, &owner_id, now, 0).map(|(at, _)| to_ms(at)),
                breached_at: None,
            };
            let due = from_ms(update.due_at.unwrap_or_default());
            let due_text = local_time(due, team.time_zone(&owner_id));
            plan.logs.push(HandoffLog {
                handoff_id: h.id,
                at: h.created_at,
                what: "created".into(),
                owner: None,
                detail: Some(h.reason.clone()),
            });
            plan.logs.push(HandoffLog {
                handoff_id: h.id,
                at: to_ms(now),
                what: "assigned".into(),
                owner: Some(owner_id.clone()),
                detail: Some(format!("due {due_text}")),
            });
            let assigned = update.applied_to(h.clone());
            let data = self.notification_with(&assigned, team, lead, &p.brief, None);
            plan.calls
                .extend(self.webhook_call(&assigned, team, "handoff.assigned", &data, now));
            if let Some(owner) = self.config.sales.owner(&owner_id) {
                let to = owner.email.email.to_string();
                plan.mails.push(mail_to(&assigned, to, "new", &data));
            }
            plan.assigned.push((h.id, h.lead_id, owner_id, due_text));
            plan.updates.push(update);
        }
        plan
    }

    /// Asks the teams' assignment rules for owners: each rule once for all its leads of
    /// the batch, in one blocking task. An answer that names no owner of the team, or a
    /// failing rule, leaves the handoff to the turn (and is logged).
    async fn pick_by_rules(&self, ready: &mut [Ready<'_>], shutdown: &CancellationToken) {
        let mut by_rule: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (i, r) in ready.iter().enumerate() {
            if let Assign::Rule { file, function } = &r.team.assign {
                by_rule.entry((file, function)).or_default().push(i);
            }
        }
        for ((file, function), batch) in by_rule {
            let leads = batch.iter().map(|&i| ready[i].lead.clone()).collect();
            let answers = self
                .processor
                .ask_rule_each(file, function, leads, shutdown)
                .await;
            for (i, answer) in batch.into_iter().zip(answers) {
                let team = ready[i].team;
                ready[i].pick = match answer {
                    Ok(id) if id.is_empty() => None,
                    Ok(id) if team.owners.contains(&id) => Some(id),
                    Ok(id) => {
                        tracing::warn!(team = %team.name, owner = %id, "the assignment rule named no owner of the team; taking the next in turn");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(team = %team.name, error = %e, "the assignment rule failed; taking the next in turn");
                        None
                    }
                };
            }
        }
    }

    /// The briefs of `leads` (without duplicates), read a part of the batch at a time so
    /// that only one part's events are in memory at once.
    async fn briefs(&self, leads: &[Lead]) -> Result<HashMap<i64, Value>, StoreError> {
        let mut out = HashMap::with_capacity(leads.len());
        for part in leads.chunks(BRIEF_PART) {
            let ids: Vec<i64> = part.iter().map(|l| l.id).collect();
            let mut facts = self.facts(&ids).await?;
            for lead in part {
                let rows = facts.remove(&lead.id).unwrap_or_default();
                out.insert(lead.id, self.brief(lead, &rows, &[]));
            }
        }
        Ok(out)
    }

    /// For each lead of the batch, the other leads of the same company already with
    /// sales (as JSON for the brief), by lead id.
    async fn duplicates(&self, leads: &[Lead]) -> Result<HashMap<i64, Vec<Value>>, StoreError> {
        let sales = self.config.funnel.open_sales_stages();
        let of: Vec<CompanyOf> = leads
            .iter()
            .map(|lead| {
                let domain = lead.email.as_str().rsplit_once('@').map(|(_, d)| d);
                CompanyOf {
                    lead_id: lead.id,
                    company: lead.company.as_deref().unwrap_or_default(),
                    domain: domain.filter(|d| !FREEMAIL.contains(d)),
                }
            })
            .collect();
        let found = self.store().same_company_with_sales(&of, &sales).await?;
        Ok(found
            .into_iter()
            .map(|(id, rows)| {
                let rows = rows
                    .into_iter()
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
                    .collect();
                (id, rows)
            })
            .collect())
    }
}

/// The leads of a batch (copies: the rules may be asked about them at the same time).
fn ready_leads(ready: &[Ready<'_>]) -> Vec<Lead> {
    ready.iter().map(|r| r.lead.clone()).collect()
}

/// Each team's rule picks (`None`: the turn decides), in handoff order.
fn picks_by_team<'c>(
    prepared: &[Prepared<'c>],
) -> BTreeMap<&'c str, (&'c Team, Vec<Option<String>>)> {
    let mut out: BTreeMap<&str, (&Team, Vec<Option<String>>)> = BTreeMap::new();
    for p in prepared {
        let team = p.ready.team;
        out.entry(team.name.as_str())
            .or_insert((team, Vec::new()))
            .1
            .push(p.ready.pick.clone());
    }
    out
}

/// How many turns each team's round-robin takes for `prepared`.
fn turns_needed<'c>(prepared: &[Prepared<'c>]) -> Vec<(&'c str, i64)> {
    picks_by_team(prepared)
        .into_iter()
        .map(|(name, (_, picks))| (name, picks.iter().filter(|p| p.is_none()).count() as i64))
        .collect()
}

/// The owners of one team's handoffs, in handoff order: the rule's pick where there is
/// one, else the team's owners in turn, from turn `first` on (turns count 1, 2, 3, ...
/// over the team's life, and turn `t` is `owners[(t - 1) % owners.len()]`).
fn in_turn(owners: &[String], first: i64, picks: &[Option<String>]) -> Vec<String> {
    let mut turn = first;
    picks
        .iter()
        .map(|pick| match pick {
            Some(id) => id.clone(),
            None => {
                let owner = owners[((turn - 1) as usize) % owners.len()].clone();
                turn += 1;
                owner
            }
        })
        .collect()
}

/// Public mail providers: the same domain says nothing about the company.
const FREEMAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "t-online.de",
    "outlook.com",
    "hotmail.com",
    "yahoo.com",
    "yahoo.de",
    "icloud.com",
    "posteo.de",
    "mail.de",
    "freenet.de",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn owners() -> Vec<String> {
        vec!["anna".into(), "ben".into(), "carla".into()]
    }

    /// One handoff at a time, as the desk did before batches: a picked owner takes no
    /// turn, anyone else takes the next turn of the counter.
    fn one_by_one(counter: &mut i64, picks: &[Option<String>]) -> Vec<String> {
        let owners = owners();
        picks
            .iter()
            .map(|p| match p {
                Some(id) => id.clone(),
                None => {
                    *counter += 1;
                    owners[((*counter - 1) as usize) % owners.len()].clone()
                }
            })
            .collect()
    }

    #[test]
    fn turns_go_round_the_team_and_skip_rule_picks() {
        let ben = Some("ben".to_string());
        let got = in_turn(&owners(), 1, &[None, None, ben.clone(), None, None, ben]);
        assert_eq!(got, ["anna", "ben", "ben", "carla", "anna", "ben"]);
        // A counter that has gone round before starts where it stood.
        assert_eq!(in_turn(&owners(), 8, &[None, None]), ["ben", "carla"]);
    }

    #[test]
    fn a_batch_gets_the_owners_it_would_get_one_by_one() {
        // 40 handoffs, every fifth picked by a rule, cut into batches of every size
        // from 1 to 40: the owners match handing them out one at a time.
        let picks: Vec<Option<String>> = (0..40)
            .map(|i| (i % 5 == 3).then(|| "carla".to_string()))
            .collect();
        let mut counter = 4; // the team had four turns before
        let expected = one_by_one(&mut counter, &picks);
        for size in 1..=picks.len() {
            let mut taken = 4;
            let mut got = Vec::new();
            for batch in picks.chunks(size) {
                let turns = batch.iter().filter(|p| p.is_none()).count() as i64;
                // What `take_turns` answers: the first of the next `turns` turns.
                let first = taken + 1;
                taken += turns;
                got.extend(in_turn(&owners(), first, batch));
            }
            assert_eq!(got, expected, "batches of {size}");
            assert_eq!(taken, counter, "turns used with batches of {size}");
        }
    }
}
