//! The lead cache: per lead, its state as last committed ([`CompactLead`]) and its
//! event history ([`LeadHistory`]), in one least-recently-used order under one byte
//! budget (a share of `processing.memory`).
//!
//! Work on a lead takes the lead's slot out ([`LeadCache::take`]) while it holds the
//! lead's lock and puts it back after its commit; a failed commit drops the slot, so
//! what the cache holds is always what the store holds. The cache is split in shards by
//! lead id so that threads working on different leads rarely meet on one lock.

use std::sync::Mutex;

use lru::LruCache;

use super::compact::CompactLead;
use super::history::LeadHistory;
use crate::domain::Lead;

const SHARDS: usize = 16;
/// What the cache's bookkeeping costs per slot (map entry, list links).
const SLOT_OVERHEAD: usize = 96;

/// What is known about one lead.
#[derive(Debug, Default)]
pub struct Slot {
    pub lead: Option<CompactLead>,
    pub history: Option<LeadHistory>,
}

impl Slot {
    fn bytes(&self) -> usize {
        SLOT_OVERHEAD
            + self.lead.as_ref().map_or(0, CompactLead::bytes)
            + self.history.as_ref().map_or(0, LeadHistory::bytes)
    }

    fn is_empty(&self) -> bool {
        self.lead.is_none() && self.history.is_none()
    }
}

struct Entry {
    slot: Slot,
    bytes: usize,
}

struct Shard {
    lru: LruCache<i64, Entry>,
    bytes: usize,
}

/// Leads and their histories in memory, bounded in bytes.
pub struct LeadCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

/// What the cache holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub leads: usize,
    pub bytes: usize,
    pub limit: usize,
}

impl LeadCache {
    /// A cache of at most `bytes` (roughly: sizes are estimated).
    pub fn new(bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            per_shard: (bytes / SHARDS).max(1),
        }
    }

    fn shard(&self, id: i64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(id as u64 % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The largest history worth holding: one lead may take at most an eighth of the
    /// cache; counts for a bigger one go to the store.
    pub fn max_history_bytes(&self) -> usize {
        self.per_shard * SHARDS / 8
    }

    /// Takes a lead's slot out (an empty one when nothing is held).
    pub fn take(&self, id: i64) -> Slot {
        let mut shard = self.shard(id);
        match shard.lru.pop(&id) {
            Some(e) => {
                shard.bytes -= e.bytes;
                e.slot
            }
            None => Slot::default(),
        }
    }

    /// Puts a slot (back) in; the least recently used leads make room.
    pub fn put(&self, id: i64, mut slot: Slot) {
        if let Some(h) = &mut slot.history
            && h.bytes() > self.max_history_bytes()
        {
            slot.history = None;
        }
        if slot.is_empty() {
            return;
        }
        let bytes = slot.bytes();
        let mut shard = self.shard(id);
        if let Some(old) = shard.lru.put(id, Entry { slot, bytes }) {
            shard.bytes -= old.bytes;
        }
        shard.bytes += bytes;
        while shard.bytes > self.per_shard && shard.lru.len() > 1 {
            match shard.lru.pop_lru() {
                Some((_, gone)) => shard.bytes -= gone.bytes,
                None => break,
            }
        }
    }

    /// The lead as last committed, if held.
    pub fn lead(&self, id: i64) -> Option<Lead> {
        let mut shard = self.shard(id);
        shard
            .lru
            .get(&id)
            .and_then(|e| e.slot.lead.as_ref())
            .and_then(CompactLead::decode)
    }

    /// Records a lead as committed (keeping its history).
    pub fn set_lead(&self, lead: &Lead) {
        let mut slot = self.take(lead.id);
        slot.lead = Some(CompactLead::encode(lead));
        self.put(lead.id, slot);
    }

    /// Forgets a lead (its state changed in a way the cache cannot follow).
    pub fn forget(&self, id: i64) {
        drop(self.take(id));
    }

    /// Forgets every lead's state; histories stay (they only grow with events).
    pub fn forget_states(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let mut bytes = 0;
            for (_, e) in shard.lru.iter_mut() {
                e.slot.lead = None;
                e.bytes = e.slot.bytes();
                bytes += e.bytes;
            }
            shard.bytes = bytes;
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.lru.clear();
            shard.bytes = 0;
        }
    }

    pub fn usage(&self) -> CacheUse {
        let mut u = CacheUse {
            limit: self.per_shard * SHARDS,
            ..CacheUse::default()
        };
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            u.leads += shard.lru.len();
            u.bytes += shard.bytes;
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;
    use crate::process::history::Recorded;

    fn lead(id: i64) -> Lead {
        Lead::new(
            id,
            Email::parse(&format!("l{id}@example.com")).unwrap(),
            "lead",
            chrono::Utc::now(),
        )
    }

    #[test]
    fn stays_within_its_bytes_and_drops_the_least_recently_used() {
        let cache = LeadCache::new(160_000);
        for id in 0..10_000 {
            cache.set_lead(&lead(id));
        }
        let u = cache.usage();
        assert!(u.bytes <= u.limit, "{u:?}");
        assert!(u.leads > 100 && u.leads < 10_000, "{u:?}");
        assert!(cache.lead(9_999).is_some(), "the newest stay");
        assert!(cache.lead(0).is_none(), "the oldest went");
    }

    #[test]
    fn a_slot_taken_out_is_gone_until_put_back() {
        let cache = LeadCache::new(1 << 20);
        cache.set_lead(&lead(7));
        let mut slot = cache.take(7);
        assert!(cache.lead(7).is_none());
        let mut h = LeadHistory::default();
        h.record(&Recorded {
            seq: 1,
            at: 1,
            name: "x",
            properties: "{}",
        });
        slot.history = Some(h);
        cache.put(7, slot);
        assert_eq!(cache.lead(7).unwrap().id, 7);
        cache.forget_states();
        assert!(cache.lead(7).is_none());
        assert_eq!(cache.take(7).history.map(|h| h.len()), Some(1));
    }
}
