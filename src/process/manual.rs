//! Changes made by people through the API: a salesperson or CRM moves a lead.
//! They take the same lead lock as event processing and are recorded the same way.

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

impl Processor {
    /// Moves a lead to `stage` on behalf of `user`, with `reason`.
    pub async fn set_stage_by(
        &self,
        email: &Email,
        stage: &str,
        reason: &str,
        user: &str,
    ) -> Result<(Lead, Outcome), ManualError> {
        let _lock = self.lead_lock.lock().await;
        let mut lead = self
            .store
            .lead_by_email(email)
            .await?
            .ok_or_else(|| ManualError::NotFound(email.to_string()))?;
        // The cache may be newer than the store only within a batch, and batches hold
        // the same lock; take the cached state if there is one.
        if let Some(cached) = self.load_leads(&[lead.id]).await?.remove(&lead.id) {
            lead = cached;
        }
        let mut changes = Changes::default();
        let source = Source::Api {
            user: user.to_string(),
        };
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
            let statements =
                build::leads(&[&lead]).and(build::changes(&[(lead.id, None, &changes)]));
            let lease = self.held_lease()?;
            let mut tx = self.store.begin_write().await?;
            tx.hold_lease(&lease).await?;
            tx.execute(statements).await?;
            if let Err(e) = tx.commit().await {
                self.forget_leads(Some(&[lead.id]));
                return Err(e.into());
            }
            self.remember([lead.clone()]);
        }
        Ok((lead, outcome))
    }
}
