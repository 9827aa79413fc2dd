//! Erasing a lead (GDPR Art. 17) while the daemon runs: under the lead's lock (no job
//! of the lead is in flight, none starts), in one transaction that checks the
//! processing lease (in a cluster: the lead's version, so another daemon holding the
//! lead notices and reads it again, and finds it gone). The lead is dropped from the
//! cache; processing and mail then treat it as gone (see
//! [`crate::store::Store::leads_by_ids`]). Afterwards the database files are scrubbed
//! ([`crate::store::Store::scrub_files`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::to_ms;
use crate::domain::Email;
use crate::privacy::AddressKey;
use crate::report::funnel::channel_of;
use crate::store::StoreError;

use super::Processor;

/// Why an erasure did not happen (nothing was erased).
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("no lead with e-mail {0} (erased already, or never stored)")]
    NotFound(String),
    #[error(
        "a mail to this lead is being sent right now; nothing was erased: try again in a minute"
    )]
    Sending,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an erasure did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Erased {
    /// The id of the tombstone left for the reports.
    pub lead_id: i64,
    /// Rows removed or cleared, per table.
    pub removed: BTreeMap<&'static str, u64>,
}

/// Tries while a mail to the lead is being sent, a fifth of a second apart.
const TRIES: usize = 150;

impl Processor {
    /// Erases the lead with `email` on behalf of `by`, for `reason`.
    pub async fn erase(
        &self,
        email: &Email,
        key: &AddressKey,
        by: &str,
        reason: &str,
    ) -> Result<Erased, EraseError> {
        let missing = || EraseError::NotFound(email.to_string());
        let id = self
            .store
            .live_lead_id(email.as_str())
            .await?
            .ok_or_else(missing)?;
        let hash = key.hash(email.as_str());
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_erase(id, &hash, by, reason).await {
                Err(EraseError::Sending) if tries < TRIES => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(EraseError::Store(StoreError::LeadChanged(_))) if tries < TRIES => {
                    // Another daemon wrote the lead meanwhile: read it again shortly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => return Err(missing()),
                Ok(Some(removed)) => {
                    let touched: Vec<&str> = removed
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(t, _)| *t)
                        .chain(["leads"])
                        .collect();
                    self.store.scrub_files(&touched).await?;
                    tracing::info!(lead = id, by, "lead erased");
                    return Ok(Erased {
                        lead_id: id,
                        removed,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_erase(
        &self,
        id: i64,
        hash: &str,
        by: &str,
        reason: &str,
    ) -> Result<Option<BTreeMap<&'static str, u64>>, EraseError> {
        let _gate = self.gate.shared().await;
        let guard = self.locks.lock(id).await;
        self.cache.forget(id);
        let Some(lead) = self.locked_lead(&guard).await? else {
            return Ok(None);
        };
        // The funnel report names the lead's channel from its first event, which goes.
        let created = to_ms(lead.created_at);
        let channel = self
            .store
            .leads_created_between(created, created)
            .await?
            .iter()
            .find(|r| r.id == id)
            .map(channel_of)
            .unwrap_or_else(|| crate::report::funnel::DIRECT.to_string());
        let now = to_ms(self.clock.now());
        let mut tx = self.begin_lead_write().await?;
        tx.claim_versions(&[(id, lead.version)]).await?;
        if tx.mails_sending(id).await? > 0 {
            return Err(EraseError::Sending);
        }
        tx.secure_delete(true).await?;
        let removed = tx.erase_lead(id, now, &channel, hash, by, reason).await;
        // The setting belongs to the connection, not the transaction: it goes back to
        // `fast` whether the erasure worked or not.
        let reset = tx.secure_delete(false).await;
        let removed = removed?;
        reset?;
        tx.commit().await?;
        crate::store::privacy::ERASURES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.forget(id);
        Ok(Some(removed))
    }
}
