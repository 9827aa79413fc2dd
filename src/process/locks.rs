//! Per-lead locks: whoever changes a lead (event processing, the stage API, a handoff
//! answer, a scheduled job) holds that lead's lock from reading its state until the
//! change is committed, so no two changes of one lead overwrite each other, and work on
//! one lead never waits for work on another.
//!
//! Locks exist only while someone holds or waits for them: the table holds one entry
//! per lead in use, not per lead in the database.
//!
//! A second gate ([`Gate`]) lets a change to every lead at once (interest decay) wait
//! until the work in flight is written, and hold new work back while it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};

use tokio::sync::{Mutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The lock table.
#[derive(Default)]
pub struct LeadLocks {
    table: SyncMutex<HashMap<i64, Arc<Mutex<()>>>>,
}

/// A held lead lock; dropping it lets the next holder in.
pub struct LeadGuard {
    id: i64,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<LeadLocks>,
}

impl LeadGuard {
    pub fn lead_id(&self) -> i64 {
        self.id
    }
}

impl std::fmt::Debug for LeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LeadGuard({})", self.id)
    }
}

impl Drop for LeadGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.locks.release(self.id);
    }
}

impl LeadLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Mutex<()>>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, id: i64) -> Arc<Mutex<()>> {
        self.table().entry(id).or_default().clone()
    }

    /// Forgets the lock of `id` once nobody holds or waits for it (every clone of the
    /// entry is made under the table lock, so the count cannot grow behind our back).
    fn release(&self, id: i64) {
        let mut table = self.table();
        if table.get(&id).is_some_and(|m| Arc::strong_count(m) == 1) {
            table.remove(&id);
        }
    }

    /// Waits for the lock of lead `id`.
    pub async fn lock(self: &Arc<Self>, id: i64) -> LeadGuard {
        let entry = self.entry(id);
        // A waiter that is cancelled drops its clone; the entry is removed by the next
        // release (or stays until then, which costs one map entry).
        let guard = entry.lock_owned().await;
        LeadGuard {
            id,
            guard: Some(guard),
            locks: self.clone(),
        }
    }

    /// The lock of lead `id` if nobody holds it now.
    pub fn try_lock(self: &Arc<Self>, id: i64) -> Option<LeadGuard> {
        let entry = self.entry(id);
        match entry.try_lock_owned() {
            Ok(guard) => Some(LeadGuard {
                id,
                guard: Some(guard),
                locks: self.clone(),
            }),
            Err(_) => {
                self.release(id);
                None
            }
        }
    }

    /// Locks several leads, in id order (so two callers never wait on each other).
    pub async fn lock_all(self: &Arc<Self>, ids: &[i64]) -> Vec<LeadGuard> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::with_capacity(sorted.len());
        for id in sorted {
            out.push(self.lock(id).await);
        }
        out
    }

    /// Leads locked or waited for right now.
    pub fn in_use(&self) -> usize {
        self.table().len()
    }
}

/// Work on single leads shares the gate; a change to all leads takes it alone.
#[derive(Clone, Default)]
pub struct Gate(Arc<RwLock<()>>);

/// A share of the gate; clones share it (the jobs of one round hold one share).
pub type Shared = Arc<OwnedRwLockReadGuard<()>>;
pub type Exclusive = OwnedRwLockWriteGuard<()>;

impl Gate {
    pub async fn shared(&self) -> Shared {
        Arc::new(self.0.clone().read_owned().await)
    }

    /// `None` while a change to all leads runs or waits to run.
    pub fn try_shared(&self) -> Option<Shared> {
        self.0.clone().try_read_owned().ok().map(Arc::new)
    }

    pub async fn exclusive(&self) -> Exclusive {
        self.0.clone().write_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_lead_waits_for_itself_only() {
        let locks = Arc::new(LeadLocks::default());
        let a = locks.lock(1).await;
        // Another lead is free.
        let b = locks.try_lock(2).expect("lead 2 is free");
        assert!(locks.try_lock(1).is_none(), "lead 1 is held");
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock(1).await.lead_id() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap(), 1);
        drop(b);
        assert_eq!(locks.in_use(), 0, "entries go when nobody uses them");
    }

    #[tokio::test]
    async fn the_gate_holds_work_back_while_taken_alone() {
        let gate = Gate::default();
        let shared = gate.shared().await;
        let exclusive = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _g = gate.exclusive().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            gate.try_shared().is_none(),
            "new work waits behind the writer"
        );
        drop(shared);
        exclusive.await.unwrap();
        assert!(gate.try_shared().is_some());
    }
}
