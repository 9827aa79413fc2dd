//! Changes made by people through the API: a salesperson or CRM moves a lead, a lead
//! gives or withdraws consent. They take the lead's lock, as event processing does,
//! and are recorded the same way; other leads are not held up.

use crate::domain::change::{Action, ChangeError, Outcome};
use crate::domain::{Changes, Email, Lead, Source};
use crate::store::{StoreError, build};

use super::Processor;

/// Why a manual change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("no lead with e-mail {0}")]
    NotFound(String),
    #[error(transparent)]
    Invalid(#[from] ChangeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tries of a manual change that found its lead changed meanwhile by another daemon.
const TRIES: usize = 5;

/// Runs `attempt` again while it finds its lead changed by another daemon.
pub(super) async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, ManualError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ManualError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(ManualError::Store(StoreError::LeadChanged(_))) if tries < TRIES => tries += 1,
            done => return done,
        }
    }
}

impl Processor {
    /// Moves a lead to `stage` on behalf of `user`, with `reason`.
    pub async fn set_stage_by(
        &self,
        email: &Email,
        stage: &str,
        reason: &str,
        user: &str,
    ) -> Result<(Lead, Outcome), ManualError> {
        retried(|| self.try_set_stage_by(email, stage, reason, user)).await
    }

    async fn try_set_stage_by(
        &self,
        email: &Email,
        stage: &str,
        reason: &str,
        user: &str,
    ) -> Result<(Lead, Outcome), ManualError> {
        let id = self
            .store
            .lead_id_by_email(email)
            .await?
            .ok_or_else(|| ManualError::NotFound(email.to_string()))?;
        let _gate = self.gate.shared().await;
        let guard = self.locks.lock(id).await;
        let mut lead = self
            .locked_lead(&guard)
            .await?
            .ok_or_else(|| ManualError::NotFound(email.to_string()))?;
        let mut changes = Changes::default();
        let source = Source::Api {
            user: user.to_string(),
        };
        let before = lead.clone();
        let outcome = lead.apply(
            Action::SetStage {
                stage: stage.to_string(),
                reason: reason.to_string(),
            },
            &source,
            self.clock.now(),
            &self.funnel,
            &mut changes,
        )?;
        if outcome == Outcome::Applied {
            self.plan.follow(&before, &lead, None, &mut changes);
            self.save_one(&mut lead, &changes).await?;
        }
        Ok((lead, outcome))
    }

    /// Sets and takes away tags of a lead on behalf of `user`, with `reason`; the tag
    /// ledger records who and why. Returns the lead and whether anything changed.
    pub async fn set_tags_by(
        &self,
        email: &Email,
        add: &[String],
        remove: &[String],
        reason: &str,
        user: &str,
    ) -> Result<(Lead, bool), ManualError> {
        retried(|| self.try_set_tags_by(email, add, remove, reason, user)).await
    }

    async fn try_set_tags_by(
        &self,
        email: &Email,
        add: &[String],
        remove: &[String],
        reason: &str,
        user: &str,
    ) -> Result<(Lead, bool), ManualError> {
        let id = self
            .store
            .lead_id_by_email(email)
            .await?
            .ok_or_else(|| ManualError::NotFound(email.to_string()))?;
        let _gate = self.gate.shared().await;
        let guard = self.locks.lock(id).await;
        let mut lead = self
            .locked_lead(&guard)
            .await?
            .ok_or_else(|| ManualError::NotFound(email.to_string()))?;
        let mut changes = Changes::default();
        let source = Source::Api {
            user: user.to_string(),
        };
        let before = lead.clone();
        let now = self.clock.now();
        let actions = add
            .iter()
            .map(|t| Action::Tag(t.trim().to_string()))
            .chain(remove.iter().map(|t| Action::Untag(t.trim().to_string())));
        for action in actions {
            lead.apply(action, &source, now, &self.funnel, &mut changes)?;
        }
        for t in &mut changes.tags {
            t.reason = reason.to_string();
        }
        let changed = !changes.tags.is_empty();
        if changed {
            self.plan.follow(&before, &lead, None, &mut changes);
            self.save_one(&mut lead, &changes).await?;
        }
        Ok((lead, changed))
    }

    /// Writes one lead changed by hand with its records, mails and stream changes, in
    /// one transaction that checks the lease (in a cluster: the lead's version). Call
    /// with the lead's lock held.
    async fn save_one(&self, lead: &mut Lead, changes: &Changes) -> Result<(), ManualError> {
        self.save_one_with(lead, changes, crate::store::Statements::Empty)
            .await
    }

    /// [`Self::save_one`] with `extra` statements in the same transaction.
    pub(super) async fn save_one_with(
        &self,
        lead: &mut Lead,
        changes: &Changes,
        extra: crate::store::Statements,
    ) -> Result<(), ManualError> {
        let records = [(lead.id, None, changes)];
        let statements = build::leads(self.store.dialect(), &[(lead, 0)])
            .and(build::changes(self.store.dialect(), &records))
            .and(build::mails(
                self.store.dialect(),
                &records,
                &self.plan.params,
                self.clock.now(),
            ))
            .and(build::handoffs(
                self.store.dialect(),
                &records,
                self.clock.now(),
            ))
            .and(extra);
        let mut tx = self.begin_lead_write().await?;
        let claimed = tx.claim_versions(&[(lead.id, lead.version)]).await;
        if let Err(e) = claimed {
            self.cache.forget(lead.id);
            return Err(e.into());
        }
        tx.execute(statements).await?;
        if let Err(e) = tx.commit().await {
            self.cache.forget(lead.id);
            return Err(e.into());
        }
        self.wrote_version(lead);
        self.remember([&*lead]);
        self.wake([changes]);
        Ok(())
    }
}

/// Which consent a person gave or withdrew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentKind {
    /// Marketing mail.
    Email,
    /// Open and click tracking.
    Tracking,
}

impl Processor {
    /// Records a consent change for lead `lead_id`, whose address must pass `is_for`
    /// (links carry the lead and a keyed hash of its address). Withdrawing mail consent
    /// also ends every stream. Returns the lead, or `None` when no such lead has that
    /// address.
    pub async fn set_consent(
        &self,
        lead_id: i64,
        email: &(dyn Fn(&str) -> bool + Sync),
        kind: ConsentKind,
        granted: bool,
        source: &str,
    ) -> Result<Option<Lead>, ManualError> {
        retried(|| self.try_set_consent(lead_id, email, kind, granted, source)).await
    }

    async fn try_set_consent(
        &self,
        lead_id: i64,
        email: &(dyn Fn(&str) -> bool + Sync),
        kind: ConsentKind,
        granted: bool,
        source: &str,
    ) -> Result<Option<Lead>, ManualError> {
        let _gate = self.gate.shared().await;
        let guard = self.locks.lock(lead_id).await;
        let Some(mut lead) = self.locked_lead(&guard).await? else {
            return Ok(None);
        };
        if !email(lead.email.as_str()) {
            return Ok(None);
        }
        let now = self.clock.now();
        let consent = match kind {
            ConsentKind::Email => &mut lead.consent_email,
            ConsentKind::Tracking => &mut lead.consent_tracking,
        };
        // A double opt-in confirmation is always recorded: for an address erased
        // before, it is the new consent marketing mail needs (see
        // `crate::privacy::erased`), even when an import claimed consent already.
        let confirmation =
            granted && source.starts_with(crate::privacy::erased::NEW_CONSENT_SOURCE);
        if consent.granted == granted && consent.at.is_some() && !confirmation {
            return Ok(Some(lead));
        }
        *consent = crate::domain::Consent {
            granted,
            at: Some(now),
            source: Some(source.to_string()),
        };
        lead.updated_at = now;
        let mut changes = Changes::default();
        if kind == ConsentKind::Email && granted {
            // Streams waiting for consent go on.
            changes.streams.extend(self.plan.on_consent(&lead));
        }
        if kind == ConsentKind::Email && !granted {
            changes.streams.push(crate::domain::StreamChange::Exit {
                stream: None,
                reason: format!("consent withdrawn ({source})"),
            });
        }
        self.save_one(&mut lead, &changes).await?;
        tracing::info!(lead = lead.id, ?kind, granted, source, "consent recorded");
        Ok(Some(lead))
    }
}
