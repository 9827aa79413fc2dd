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
        let h = self
            .store()
            .handoff(id)
            .await?
            .ok_or(AnswerError::NotFound(id))?;
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
        let owner = h.owner.as_deref().and_then(|o| self.owner(o));
        edit.set_owner(match &answer {
            Answer::Accept => owner.as_ref().map(|o| o.email.email.to_string()),
            Answer::Reject { .. } => None,
        });
        let now = self.clock.now();
        let team = sales.team(&h.team);
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
        if let Some(team) = team {
            let data = json!({
                "handoff": {
                    "id": h.id,
                    "team": h.team,
                    "state": state,
                    "reason": h.reason,
                    "owner": owner.as_ref().map(|o| json!({
                        "id": o.id, "name": o.name, "email": o.email.email.to_string(),
                    })),
                    "answered_by": by,
                    "answer_note": note,
                    "answered_at": now.to_rfc3339(),
                },
                "brief": {"contact": {"email": h.email, "name": edit.lead().name()}},
            });
            let event = format!("handoff.{state}");
            let answered = HandoffRow {
                state: state.to_string(),
                ..h.clone()
            };
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
        v["duplicates"] = serde_json::from_str(&h.duplicates).unwrap_or(json!([]));
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
