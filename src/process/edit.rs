//! A change to one lead made together with other writes in one transaction: sales
//! accepting or rejecting a handoff moves the lead and closes the handoff at once, or
//! neither happens.
//!
//! [`Processor::edit_lead`] takes the lead's lock and loads the lead; the caller applies
//! actions, opens the write transaction with [`LeadEdit::begin`] (which checks the
//! lease), writes its own rows, and hands the transaction to [`LeadEdit::commit`],
//! which adds the lead, its records and what follows (streams, mails) and commits.

use super::Processor;
use super::locks::{LeadGuard, Shared};
use crate::domain::change::{Action, ChangeError, Outcome};
use crate::domain::{Changes, Lead, Source};
use crate::store::{StoreError, WriteTx, build};

/// One lead being changed under its lock.
pub struct LeadEdit<'p> {
    processor: &'p Processor,
    _gate: Shared,
    _lock: LeadGuard,
    before: Lead,
    lead: Lead,
    changes: Changes,
}

impl Processor {
    /// Locks and loads lead `lead_id`; `None` when there is no such lead.
    pub async fn edit_lead(&self, lead_id: i64) -> Result<Option<LeadEdit<'_>>, StoreError> {
        let gate = self.gate.shared().await;
        let lock = self.locks.lock(lead_id).await;
        let Some(lead) = self.locked_lead(&lock).await? else {
            return Ok(None);
        };
        Ok(Some(LeadEdit {
            processor: self,
            _gate: gate,
            _lock: lock,
            before: lead.clone(),
            lead,
            changes: Changes::default(),
        }))
    }
}

impl LeadEdit<'_> {
    pub fn lead(&self) -> &Lead {
        &self.lead
    }

    /// Applies one action, as a rule or the API would.
    pub fn apply(&mut self, action: Action, source: &Source) -> Result<Outcome, ChangeError> {
        let p = self.processor;
        self.lead
            .apply(action, source, p.clock.now(), &p.funnel, &mut self.changes)
    }

    /// Sets the salesperson who owns the lead.
    pub fn set_owner(&mut self, owner: Option<String>) {
        if self.lead.owner != owner {
            self.lead.owner = owner;
            self.lead.updated_at = self.processor.clock.now();
        }
    }

    /// Opens the write transaction, holding the processing lease (in a cluster, where
    /// any daemon may change a lead, the lead's version is checked at commit).
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.processor.begin_lead_write().await
    }

    /// Opens the write transaction holding the processing lease, also in a cluster
    /// (where it is the leader's): for work done once for the base, such as the sales
    /// desk's.
    pub async fn begin_as_leader(&self) -> Result<WriteTx, StoreError> {
        let lease = self.processor.held_lease()?;
        let mut tx = self.processor.store.begin_write().await?;
        tx.hold_lease(&lease).await?;
        Ok(tx)
    }

    /// Writes the lead with what follows from its changes in `tx` and commits.
    pub async fn commit(mut self, mut tx: WriteTx) -> Result<Lead, StoreError> {
        let p = self.processor;
        let now = p.clock.now();
        p.plan
            .follow(&self.before, &self.lead, None, &mut self.changes);
        let records = [(self.lead.id, None, &self.changes)];
        let statements = build::leads(tx.dialect(), &[(&self.lead, 0)])
            .and(build::changes(tx.dialect(), &records))
            .and(build::mails(tx.dialect(), &records, &p.plan.params, now))
            .and(build::handoffs(tx.dialect(), &records, now));
        if let Err(e) = tx
            .claim_versions(&[(self.lead.id, self.lead.version)])
            .await
        {
            p.cache.forget(self.lead.id);
            return Err(e);
        }
        tx.execute(statements).await?;
        if let Err(e) = tx.commit().await {
            p.cache.forget(self.lead.id);
            return Err(e);
        }
        p.wrote_version(&mut self.lead);
        p.remember([&self.lead]);
        p.wake([&self.changes]);
        Ok(self.lead)
    }
}
