//! Sales' answer to a handoff, from a signed link or the API. Accepting moves the lead
//! to `[sales] accept_stage` and makes the owner its owner; rejecting needs a reason and
//! moves the lead back to marketing (`reject_stage`), where its streams take over. The
//! handoff and the lead change in one transaction; a handoff that was already answered,
//! expired or given to another owner is refused and nothing changes.

use serde_json::{Value, json};

use super::desk::Desk;
use crate::clock::{from_ms, to_ms};
use crate::domain::Source;
use crate::domain::change::{Action, ChangeError};
use crate::store::{HandoffRow, StoreError};

/// The longest reason a rejection may give (the stage history adds who and which
/// handoff).
pub const MAX_REASON: usize = 400;

/// What sales says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Reject { reason: String },
}

/// Why an answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no handoff {0}")]
    NotFound(i64),
    #[error("this handoff is already {0}; nothing was changed")]
    Closed(String),
    #[error("this handoff went to another owner; only their link works now")]
    Reassigned,
    #[error("a rejection needs a reason: say why, marketing sees it in the lead's history")]
    MissingReason,
    #[error("the reason is too long ({0} characters, at most {MAX_REASON})")]
    ReasonTooLong(usize),
    #[error("this handoff is not assigned yet; try again in a moment")]
    NotAssigned,
    #[error("the lead of this handoff no longer exists")]
    NoLead,
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Desk {
    /// Records `answer` to handoff `id` by `by` (an owner id, or an API user). With
    /// `round`, the answer counts only if the handoff is still in that round (a link).
    pub async fn answer(
        &self,
        id: i64,
        round: Option<i64>,
        answer: Answer,
        by: &str,
    ) -> Result<HandoffRow, AnswerError> {
        // In a cluster, the lead may be changed by another daemon between reading and
        // writing it: the answer is then made again on the lead as stored.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.answer_unchanged(id, round, answer.clone(), by).await {
                Err(AnswerError::Store(StoreError::LeadChanged(_))) if tries < 5 => {}
                done => return done,
            }
        }
    }

    async fn answer_unchanged(
        &self,
        id: i64,
        round: Option<i64>,
        answer: Answer,
        by: &str,
    ) -> Result<HandoffRow, AnswerError> {
        match self.answer_once(id, round, answer.clone(), by).await {
            // A CRM answers whoever has the handoff: if it was reassigned just now, the
            // answer counts for the new round.
            Err(AnswerError::Closed(s)) if round.is_none() && s == "answered" => {
                self.answer_once(id, None, answer, by).await
            }
            other => other,
        }
    }

    async fn answer_once(
        &self,
        id: i64,
        round: Option<i64>,
        answer: Answer,
        by: &str,
    ) -> Result<HandoffRow, AnswerError> {
        let h = self
            .store()
            .handoff(id)
            .await?
            .ok_or(AnswerError::NotFound(id))?;
        if h.state == "new" {
            return Err(AnswerError::NotAssigned);
        }
        if !h.is_open() {
            return Err(AnswerError::Closed(h.state));
        }
        if round.is_some_and(|r| r != h.round) {
            return Err(AnswerError::Reassigned);
        }
        let sales = &self.config.sales;
        let (state, stage, reason, note) = match &answer {
            Answer::Accept => (
                "accepted",
                sales.accept_stage.clone(),
                format!("accepted by {by} (handoff {id})"),
                None,
            ),
            Answer::Reject { reason } => {
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(AnswerError::MissingReason);
                }
                let len = reason.chars().count();
                if len > MAX_REASON {
                    return Err(AnswerError::ReasonTooLong(len));
                }
                (
                    "rejected",
                    sales.reject_stage.clone(),
                    format!("rejected by {by} (handoff {id}): {reason}"),
                    Some(reason.to_string()),
                )
            }
        };
        let Some(mut edit) = self.processor.edit_lead(h.lead_id).await? else {
            return Err(AnswerError::NoLead);
        };
        let source = Source::Api {
            user: by.to_string(),
        };
        edit.apply(Action::SetStage { stage, reason }, &source)?;
        // The one who accepts owns the lead: the answering owner if `by` names one of
        // the team (a colleague took it), else the assigned owner.
        let team = sales.team(&h.team);
        let taker = team
            .filter(|t| t.owners.iter().any(|o| o == by))
            .and_then(|_| self.owner(by));
        let owner = taker.or_else(|| h.owner.as_deref().and_then(|o| self.owner(o)));
        if answer == Answer::Accept {
            edit.set_owner(owner.as_ref().map(|o| o.email.email.to_string()));
        }
        let now = self.clock.now();
        let business = team.map_or(now - from_ms(h.created_at), |t| {
            t.calendar(h.owner.as_deref().unwrap_or_default())
                .between(from_ms(h.created_at), now)
        });
        let mut tx = edit.begin().await?;
        if !tx
            .answer_handoff(
                id,
                h.round,
                state,
                by,
                note.as_deref(),
                business.num_milliseconds(),
                to_ms(now),
            )
            .await?
        {
            return Err(AnswerError::Closed("answered".into()));
        }
        tx.log_handoff(id, to_ms(now), state, h.owner.as_deref(), note.as_deref())
            .await?;
        if let Some(team) = team.filter(|t| t.webhook.is_some()) {
            let answered = HandoffRow {
                state: state.to_string(),
                answered_by: Some(by.to_string()),
                answer_note: note.clone(),
                ..h.clone()
            };
            let lead = edit.lead().clone();
            let mut data = self
                .notification(&answered, team, &lead, Some(state))
                .await?;
            data["handoff"]["answered_by"] = json!(by);
            data["handoff"]["answer_note"] = json!(note);
            data["handoff"]["answered_at"] = json!(now.to_rfc3339());
            let event = format!("handoff.{state}");
            self.hook(&mut tx, &answered, team, &event, &data, now)
                .await?;
        }
        edit.commit(tx).await?;
        self.webhook_wake.notify_one();
        tracing::info!(handoff = id, by, state, "handoff answered");
        let row = self
            .store()
            .handoff(id)
            .await?
            .ok_or(AnswerError::NotFound(id))?;
        Ok(row)
    }

    /// A handoff with its log, for the API.
    pub async fn show(&self, id: i64) -> Result<Option<Value>, StoreError> {
        let Some(h) = self.store().handoff(id).await? else {
            return Ok(None);
        };
        let log = self.store().handoff_log(id).await?;
        let webhooks = self.store().webhooks_of(id).await?;
        let mut v = serde_json::to_value(&h).unwrap_or_default();
        v["owners_had"] = json!(h.owners_had());
        v["duplicates"] = json!(h.duplicates());
        v["log"] = json!(log);
        v["webhooks"] = json!(
            webhooks
                .into_iter()
                .map(|(event, status, attempts, reason)| json!({
                    "event": event, "status": status, "attempts": attempts, "reason": reason,
                }))
                .collect::<Vec<_>>()
        );
        Ok(Some(v))
    }
}
