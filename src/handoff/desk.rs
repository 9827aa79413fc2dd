//! The sales desk: gives new handoffs an owner and a deadline and tells them (in
//! batches, see [`super::assign`]), then fires the escalation steps at their minute
//! (remind, breach, escalate, reassign, return), one handoff per write transaction. A
//! pass takes turns between a batch of new handoffs and a page of due steps, so neither
//! starves the other, and stops between them at shutdown. Every write holds the
//! processing lease and is guarded by the handoff's round and step, so a step happens
//! once even if two passes race; notifications go through the mail outbox and the
//! webhook outbox of the same transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::brief::{self, Facts, TRACKED, local_time};
use super::ladder::{Point, deadline, point_at};
use super::webhook;
use crate::clock::{SharedClock, from_ms, to_ms};
use crate::config::Config;
use crate::config::sales::{Owner, Step, Team};
use crate::domain::change::Action;
use crate::domain::{Lead, Source};
use crate::mail::token::{Claim, Purpose, Signer};
use crate::process::Processor;
use crate::store::{
    BriefRows, HandoffRow, HandoffUpdate, InternalMail, NewWebhook, Store, StoreError, WriteTx,
};

/// The longest the desk sleeps when nothing is due.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Escalation steps (and ended handoffs' webhooks) handled per read.
const PAGE: i64 = 100;
/// New handoffs assigned per write transaction: the first batch of a pass is small, so
/// a few handoffs go out at once; while more are waiting, batches grow to the largest
/// size, where the batch's fixed costs (the duplicate check, the wait for the writer)
/// weigh least.
const BATCH_FIRST: i64 = 250;
const BATCH_MAX: i64 = 1000;
/// Rounds of a pass, each a batch of new handoffs and a page of due steps. A handoff
/// gets one step per page: steps that fell due together follow round by round.
const ROUNDS: usize = 50;
/// A brief reads at most this many of a lead's newest events and score changes.
const BRIEF_EVENTS: usize = 200;
const BRIEF_LEDGER: usize = 100;

/// Errors of a desk pass.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeskPass {
    pub assigned: usize,
    pub steps: usize,
}

pub struct Desk {
    pub(super) config: Arc<Config>,
    pub(super) processor: Arc<Processor>,
    pub(super) signer: Signer,
    pub(super) clock: SharedClock,
    wake: Arc<Notify>,
    /// Woken when webhook calls were queued.
    pub webhook_wake: Arc<Notify>,
}

impl Desk {
    pub fn new(config: Arc<Config>, processor: Arc<Processor>, clock: SharedClock) -> Self {
        Self {
            signer: Signer::from_config(&config.mail),
            wake: processor.handoff_wake.clone(),
            webhook_wake: Arc::new(Notify::new()),
            config,
            processor,
            clock,
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.processor.store
    }

    /// Runs passes until `shutdown`: woken when a handoff is asked for, otherwise when
    /// the next step is due (at most [`MAX_IDLE`] apart).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = self.run_due(&shutdown).await {
                tracing::error!(error = %e, "sales desk pass failed; trying again");
            }
            let idle = match self.store().next_handoff_due().await {
                Ok(Some(due)) => Duration::from_millis(
                    (due - to_ms(self.clock.now())).clamp(0, MAX_IDLE.as_millis() as i64) as u64,
                ),
                _ => MAX_IDLE,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle.max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// Assigns new handoffs and fires the steps due now, in rounds of a batch of new
    /// handoffs and a page of due steps, until nothing is left, [`ROUNDS`] rounds are
    /// done (the next pass goes on) or `shutdown` is cancelled (checked between batches
    /// and between steps; what is left stays in the database for the next pass).
    pub async fn run_due(&self, shutdown: &CancellationToken) -> Result<DeskPass, DeskError> {
        let mut pass = DeskPass::default();
        if self.processor.held_lease().is_err() {
            return Ok(pass); // another process does the work
        }
        let mut batch = BATCH_FIRST;
        for _ in 0..ROUNDS {
            if shutdown.is_cancelled() {
                break;
            }
            let new = self.store().new_handoffs(batch).await?;
            let more_new = new.len() as i64 == batch;
            batch = if more_new {
                (batch * 2).min(BATCH_MAX)
            } else {
                BATCH_FIRST
            };
            pass.assigned += self.assign_batch(new, shutdown).await?;
            if shutdown.is_cancelled() {
                break;
            }
            let (hooks, more_hooks) = self.pending_hooks().await?;
            let (fired, more_steps) = self.fire_due(shutdown).await?;
            pass.steps += hooks + fired;
            if !more_new && !more_hooks && !more_steps {
                break;
            }
        }
        Ok(pass)
    }

    /// Fires one page of due steps; true as well when there may be more.
    async fn fire_due(&self, shutdown: &CancellationToken) -> Result<(usize, bool), DeskError> {
        let due = self
            .store()
            .due_handoffs(to_ms(self.clock.now()), PAGE)
            .await?;
        let more = !due.is_empty();
        let mut fired = 0;
        for h in due {
            if shutdown.is_cancelled() {
                break;
            }
            if self.fire(h).await? {
                fired += 1;
            }
        }
        Ok((fired, more))
    }

    /// Fires the next point of an open handoff if it is due; false when it moved on.
    async fn fire(&self, h: HandoffRow) -> Result<bool, DeskError> {
        let now = self.clock.now();
        let (Some(team), Some(owner_id), Some(assigned_at)) = (
            self.config.sales.team(&h.team),
            h.owner.clone(),
            h.assigned_at,
        ) else {
            let why = format!("team `{}` is not configured", h.team);
            return self.give_back(h, None, now, &why).await;
        };
        let Some((at, point)) = point_at(team, &owner_id, from_ms(assigned_at), h.step as usize)
        else {
            // The ladder got shorter since: nothing more to fire; the handoff waits
            // (overdue) for an answer.
            let mut tx = self.begin().await?;
            let done = HandoffUpdate {
                step: h.step,
                next_at: None,
                ..self.next_point(&h, team, &owner_id, from_ms(assigned_at))
            };
            tx.update_handoff(&done, to_ms(now)).await?;
            tx.commit().await?;
            return Ok(false);
        };
        if at > now {
            // The configuration changed (a holiday, another ladder) since next_at was
            // written: the step is later now. Keep next_at true, so the handoff is not
            // read again and again.
            let mut tx = self.begin().await?;
            let later = HandoffUpdate {
                step: h.step,
                next_at: Some(to_ms(at)),
                ..self.next_point(&h, team, &owner_id, from_ms(assigned_at))
            };
            tx.update_handoff(&later, to_ms(now)).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let mut update = self.next_point(&h, team, &owner_id, from_ms(assigned_at));
        let owner = self.owner(&owner_id);
        let Some(lead) = self.lead_of(h.lead_id).await? else {
            return self.close_unassigned(&h, "the lead no longer exists").await;
        };
        let step = match point {
            Point::Breach => None,
            Point::Step(s) => Some(s),
        };
        if step == Some(Step::Reassign) {
            let had = h.owners_had();
            let start = team.owners.iter().position(|o| o == &owner_id).unwrap_or(0);
            let next = (1..=team.owners.len())
                .map(|i| &team.owners[(start + i) % team.owners.len()])
                .find(|o| !had.contains(o));
            match next {
                Some(next) => return self.reassign(h, team, &lead, next, now).await,
                None => {
                    return self
                        .give_back(h, Some(team), now, "every owner of the team had it")
                        .await;
                }
            }
        }
        if step == Some(Step::Return) {
            return self
                .give_back(h, Some(team), now, "the escalation ladder returns it")
                .await;
        }
        let mut tx = self.begin().await?;
        let (what, event) = match point {
            Point::Breach => {
                update.breached_at = h.breached_at.or(Some(to_ms(at)));
                ("breached", "handoff.breached")
            }
            Point::Step(Step::Remind) => ("reminded", "handoff.reminded"),
            Point::Step(_) => {
                update.state = "escalated".into();
                ("escalated", "handoff.escalated")
            }
        };
        if !tx.update_handoff(&update, to_ms(now)).await? {
            return Ok(false);
        }
        let due_text = local_time(
            from_ms(h.due_at.unwrap_or_default()),
            team.time_zone(&owner_id),
        );
        tx.log_handoff(
            h.id,
            to_ms(at),
            what,
            Some(&owner_id),
            Some(&format!("due {due_text}")),
        )
        .await?;
        let fired = HandoffRow {
            state: update.state.clone(),
            breached_at: update.breached_at,
            ..h
        };
        let data = self.notification(&fired, team, &lead, Some(what)).await?;
        match point {
            Point::Step(Step::Remind) => {
                self.notify(&mut tx, &fired, owner.as_ref(), "reminder", &data, now)
                    .await?;
            }
            Point::Step(Step::Escalate) => {
                if let Some(to) = &team.escalate_to {
                    self.queue_mail(
                        &mut tx,
                        &fired,
                        to.email.to_string(),
                        "escalation",
                        &data,
                        now,
                    )
                    .await?;
                }
            }
            _ => {}
        }
        self.hook(&mut tx, &fired, team, event, &data, now).await?;
        tx.commit().await?;
        if what == "breached" {
            self.processor.metrics.sla_breaches.increment(1);
        }
        self.processor.mail_wake.notify_one();
        self.webhook_wake.notify_one();
        tracing::info!(handoff = fired.id, owner = %owner_id, step = what, "handoff step");
        Ok(true)
    }

    /// The handoff moved on to its next point (same owner).
    fn next_point(
        &self,
        h: &HandoffRow,
        team: &Team,
        owner: &str,
        assigned: DateTime<Utc>,
    ) -> HandoffUpdate {
        HandoffUpdate {
            id: h.id,
            expect_state: &["open", "escalated"],
            expect_round: h.round,
            expect_step: h.step,
            state: h.state.clone(),
            owner: h.owner.clone(),
            owners_had: h.owners_had(),
            round: h.round,
            duplicates: None,
            assigned_at: h.assigned_at,
            due_at: h.due_at,
            step: h.step + 1,
            next_at: point_at(team, owner, assigned, h.step as usize + 1).map(|(at, _)| to_ms(at)),
            breached_at: h.breached_at,
        }
    }

    /// Gives the handoff to `next`, with a fresh deadline and ladder.
    async fn reassign(
        &self,
        h: HandoffRow,
        team: &Team,
        lead: &Lead,
        next: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DeskError> {
        let mut had = h.owners_had();
        had.push(next.to_string());
        let update = HandoffUpdate {
            id: h.id,
            expect_state: &["open", "escalated"],
            expect_round: h.round,
            expect_step: h.step,
            state: "open".into(),
            owner: Some(next.to_string()),
            owners_had: had,
            round: h.round + 1,
            duplicates: None,
            assigned_at: Some(to_ms(now)),
            due_at: Some(to_ms(deadline(team, next, now))),
            step: 0,
            next_at: point_at(team, next, now, 0).map(|(at, _)| to_ms(at)),
            breached_at: h.breached_at,
        };
        let mut tx = self.begin().await?;
        if !tx.update_handoff(&update, to_ms(now)).await? {
            return Ok(false);
        }
        let previous = h.owner.clone().unwrap_or_default();
        tx.log_handoff(
            h.id,
            to_ms(now),
            "reassigned",
            Some(next),
            Some(&format!("from {previous}")),
        )
        .await?;
        let moved = update.applied_to(h);
        let mut data = self
            .notification(&moved, team, lead, Some("reassigned"))
            .await?;
        data["handoff"]["reassigned_from"] =
            json!(self.owner(&previous).map_or(previous.clone(), |o| o.name));
        let owner = self.owner(next);
        self.notify(&mut tx, &moved, owner.as_ref(), "new", &data, now)
            .await?;
        self.hook(&mut tx, &moved, team, "handoff.reassigned", &data, now)
            .await?;
        tx.commit().await?;
        self.processor.mail_wake.notify_one();
        self.webhook_wake.notify_one();
        tracing::info!(handoff = moved.id, from = %previous, to = %next, "handoff reassigned");
        Ok(true)
    }

    /// Nobody answered (or the team is gone): the handoff expires and the lead goes
    /// back to marketing.
    pub(super) async fn give_back(
        &self,
        h: HandoffRow,
        team: Option<&Team>,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<bool, DeskError> {
        let Some(mut edit) = self.processor.edit_lead(h.lead_id).await? else {
            return self.close_unassigned(&h, "the lead no longer exists").await;
        };
        let stage = self.config.sales.reject_stage.clone();
        let reason = format!(
            "no answer from sales in time (handoff {}, {why}); back to marketing",
            h.id
        );
        let source = Source::System(format!("handoff:{}", h.id));
        if let Err(e) = edit.apply(
            Action::SetStage {
                stage,
                reason: reason.clone(),
            },
            &source,
        ) {
            tracing::warn!(handoff = h.id, error = %e, "cannot return the lead to marketing");
        }
        let update = ended(&h);
        let mut tx = edit.begin_as_leader().await?;
        if !tx.update_handoff(&update, to_ms(now)).await? {
            return Ok(false);
        }
        tx.log_handoff(
            h.id,
            to_ms(now),
            "expired",
            h.owner.as_deref(),
            Some(&reason),
        )
        .await?;
        let ended = HandoffRow {
            state: "expired".into(),
            next_at: None,
            ..h
        };
        if let Some(team) = team {
            let lead = edit.lead().clone();
            let data = self
                .notification(&ended, team, &lead, Some("expired"))
                .await?;
            self.hook(&mut tx, &ended, team, "handoff.expired", &data, now)
                .await?;
        }
        edit.commit(tx).await?;
        self.webhook_wake.notify_one();
        tracing::warn!(
            handoff = ended.id,
            lead = ended.lead_id,
            "handoff expired: {reason}"
        );
        Ok(true)
    }

    /// A handoff whose lead is gone ends.
    pub(super) async fn close_unassigned(
        &self,
        h: &HandoffRow,
        why: &str,
    ) -> Result<bool, DeskError> {
        let now = to_ms(self.clock.now());
        let mut tx = self.begin().await?;
        if !tx.update_handoff(&ended(h), now).await? {
            return Ok(false);
        }
        tx.log_handoff(h.id, now, "expired", h.owner.as_deref(), Some(why))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues the webhook calls of one page of handoffs that ended by a stage change
    /// (written with that change, without the team's configuration at hand), in one
    /// transaction; true as well when there may be more.
    async fn pending_hooks(&self) -> Result<(usize, bool), DeskError> {
        let pending = self.store().handoffs_with_pending_hook(PAGE).await?;
        if pending.is_empty() {
            return Ok((0, false));
        }
        let more = pending.len() as i64 == PAGE;
        let now = self.clock.now();
        let hooked: Vec<i64> = pending
            .iter()
            .filter(|(h, _)| {
                self.config
                    .sales
                    .team(&h.team)
                    .is_some_and(|t| t.webhook.is_some())
            })
            .map(|(h, _)| h.lead_id)
            .collect();
        let mut leads = self.store().leads_by_ids(&hooked).await?;
        let mut facts = self.facts(&hooked).await?;
        let mut calls = Vec::new();
        for (h, event) in &pending {
            let (Some(team), Some(lead)) =
                (self.config.sales.team(&h.team), leads.remove(&h.lead_id))
            else {
                continue;
            };
            let rows = facts.remove(&h.lead_id).unwrap_or_default();
            let brief = self.brief(&lead, &rows, &h.duplicates());
            let data = self.notification_with(h, team, &lead, &brief, Some(&h.state));
            calls.extend(self.webhook_call(h, team, event, &data, now));
        }
        let mut tx = self.begin().await?;
        let mut n = 0;
        let mut taken = std::collections::HashSet::new();
        for (h, event) in &pending {
            if tx.take_pending_hook(h.id, event).await? {
                taken.insert(h.id);
                n += 1;
            }
        }
        calls.retain(|c| taken.contains(&c.handoff_id));
        tx.queue_webhooks(&calls, to_ms(now)).await?;
        tx.commit().await?;
        if !calls.is_empty() {
            self.webhook_wake.notify_one();
        }
        Ok((n, more))
    }

    pub(super) async fn begin(&self) -> Result<WriteTx, StoreError> {
        let lease = self.processor.held_lease()?;
        let mut tx = self.store().begin_write().await?;
        tx.hold_lease(&lease).await?;
        Ok(tx)
    }

    pub(super) async fn lead_of(&self, id: i64) -> Result<Option<Lead>, StoreError> {
        Ok(self.store().leads_by_ids(&[id]).await?.remove(&id))
    }

    pub(super) fn owner(&self, id: &str) -> Option<Owner> {
        self.config.sales.owner(id).cloned()
    }

    /// What the desk reads about `lead_ids` for their briefs, in a few statements.
    pub(super) async fn facts(
        &self,
        lead_ids: &[i64],
    ) -> Result<HashMap<i64, BriefRows>, StoreError> {
        self.store()
            .brief_rows(lead_ids, BRIEF_EVENTS, BRIEF_LEDGER)
            .await
    }

    /// The brief on `lead` from its rows and the colleagues with sales.
    pub(super) fn brief(&self, lead: &Lead, rows: &BriefRows, duplicates: &[Value]) -> Value {
        let tracked_seqs: std::collections::HashSet<i64> = rows
            .ledger_events
            .iter()
            .filter(|(_, name)| TRACKED.contains(&name.as_str()))
            .map(|(seq, _)| *seq)
            .collect();
        brief::brief(&Facts {
            lead,
            events: &rows.events,
            ledger: &rows.ledger,
            history: &rows.history,
            tracked_seqs: &tracked_seqs,
            duplicates,
            fit_threshold: self.config.thresholds.get("mql_fit").copied(),
            interest_threshold: self.config.thresholds.get("mql_interest").copied(),
        })
    }

    /// The data of a notification: the handoff with its deadline and links, and the
    /// brief on the lead (read now).
    pub(super) async fn notification(
        &self,
        h: &HandoffRow,
        team: &Team,
        lead: &Lead,
        step: Option<&str>,
    ) -> Result<Value, StoreError> {
        let rows = self.facts(&[lead.id]).await?.remove(&lead.id);
        let brief = self.brief(lead, &rows.unwrap_or_default(), &h.duplicates());
        Ok(self.notification_with(h, team, lead, &brief, step))
    }

    /// The data of a notification: the handoff with its deadline and links, and
    /// `brief`.
    pub(super) fn notification_with(
        &self,
        h: &HandoffRow,
        team: &Team,
        lead: &Lead,
        brief: &Value,
        step: Option<&str>,
    ) -> Value {
        let owner_id = h.owner.clone().unwrap_or_default();
        let owner = self.owner(&owner_id);
        let tz = team.time_zone(&owner_id);
        let due = h.due_at.map(from_ms);
        let links = self.links(h, lead, owner.as_ref());
        let mut data = json!({
            "handoff": {
                "id": h.id,
                "team": h.team,
                "reason": h.reason,
                "source": h.source,
                "state": h.state,
                "round": h.round,
                "step": step.unwrap_or("assigned"),
                // An owner removed from the configuration still has a name here.
                "owner": owner.as_ref().map_or_else(
                    || json!({"id": owner_id, "name": owner_id, "email": ""}),
                    |o| json!({"id": o.id, "name": o.name, "email": o.email.email.to_string()}),
                ),
                "escalate_to": team.escalate_to.as_ref().map(ToString::to_string),
                "created_at": from_ms(h.created_at).to_rfc3339(),
                "due_at": due.map(|d| d.to_rfc3339()),
                "due_local": due.map(|d| local_time(d, tz)),
                "time_zone": tz.name(),
                "reaction": humantime::format_duration(team.reaction).to_string(),
                "reassigned_from": "",
                "accept_url": links.0,
                "reject_url": links.1,
            },
        });
        data["brief"] = brief.clone();
        data
    }

    /// The signed accept and reject links of the current round.
    fn links(&self, h: &HandoffRow, lead: &Lead, owner: Option<&Owner>) -> (String, String) {
        let expires = (self.clock.now()
            + chrono::Duration::from_std(self.config.sales.link_valid).unwrap_or_default())
        .timestamp();
        let claim = |purpose| Claim {
            purpose,
            lead: lead.id,
            to: self
                .signer
                .address(&owner.map(|o| o.email.email.to_string()).unwrap_or_default()),
            mail: Some(h.id),
            url: None,
            expires: Some(expires),
            round: Some(h.round),
            topic: None,
            key: 0,
        };
        let base = &self.config.mail.public_url;
        (
            format!("{base}/h/{}", self.signer.sign(&claim(Purpose::Accept))),
            format!("{base}/h/{}", self.signer.sign(&claim(Purpose::Reject))),
        )
    }

    /// Queues `handoff/<template>` to the handoff's owner.
    async fn notify(
        &self,
        tx: &mut WriteTx,
        h: &HandoffRow,
        owner: Option<&Owner>,
        template: &str,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(owner) = owner else {
            return Ok(());
        };
        self.queue_mail(tx, h, owner.email.email.to_string(), template, data, now)
            .await
    }

    async fn queue_mail(
        &self,
        tx: &mut WriteTx,
        h: &HandoffRow,
        recipient: String,
        template: &str,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        tx.queue_internal_mail(&mail_to(h, recipient, template, data), to_ms(now))
            .await
    }

    /// Queues the team's webhook call for `event`, if the team has a webhook.
    pub(super) async fn hook(
        &self,
        tx: &mut WriteTx,
        h: &HandoffRow,
        team: &Team,
        event: &str,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self.webhook_call(h, team, event, data, now) {
            Some(call) => tx.queue_webhook(&call, to_ms(now)).await,
            None => Ok(()),
        }
    }

    /// The team's webhook call for `event`, if the team has a webhook.
    pub(super) fn webhook_call(
        &self,
        h: &HandoffRow,
        team: &Team,
        event: &str,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Option<NewWebhook> {
        let hook = team.webhook.as_ref()?;
        Some(NewWebhook {
            idem_key: format!("{event}:{}:{}:{}", h.id, h.round, h.step),
            handoff_id: h.id,
            team: team.name.clone(),
            event: event.to_string(),
            body: webhook::body(hook.format, event, data, now),
        })
    }
}

/// The mail `handoff/<template>` about `h` to `recipient`; its key makes queuing it twice
/// for the same round and step a no-op.
pub(super) fn mail_to(
    h: &HandoffRow,
    recipient: String,
    template: &str,
    data: &Value,
) -> InternalMail {
    InternalMail {
        idem_key: format!("handoff:{}:{}:{}:{template}", h.id, h.round, h.step),
        lead_id: h.lead_id,
        recipient,
        template: format!("handoff/{template}"),
        data: data.to_string(),
        source: format!("handoff:{}", h.id),
    }
}

/// The update that ends an open (or new) handoff as expired.
fn ended(h: &HandoffRow) -> HandoffUpdate {
    HandoffUpdate {
        id: h.id,
        expect_state: &["new", "open", "escalated"],
        expect_round: h.round,
        expect_step: h.step,
        state: "expired".into(),
        owner: h.owner.clone(),
        owners_had: h.owners_had(),
        round: h.round,
        duplicates: None,
        assigned_at: h.assigned_at,
        due_at: h.due_at,
        step: h.step,
        next_at: None,
        breached_at: h.breached_at,
    }
}
