//! The event history rules count on ([`History`]): answered from memory for leads whose
//! recent events the processor holds, from the store otherwise.
//!
//! The first time a rule counts for a lead, the lead's events of the last
//! [`COVERED_DAYS`] days are loaded; from then on the processor adds each of the lead's
//! events as it processes it, so later counts need no query. A count whose window
//! reaches further back, or a lead with very many events, is asked of the store. Memory
//! is bounded: the least recently used leads are dropped first. Rules run on blocking
//! threads, so a store query is driven to completion on the runtime from there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lru::LruCache;
use serde_json::{Map, Value};

use crate::clock::to_ms;
use crate::rules::api::History;
use crate::store::{CountQuery, PastEvent, Store};

/// How far back the in-memory history reaches.
pub const COVERED_DAYS: i64 = 400;
/// Leads with more events than this in the covered time are not kept in memory.
const MAX_PER_LEAD: usize = 2_000;
/// Rows read ahead per batch for leads whose history is not held.
const PREFETCH_ROWS: usize = 20_000;

/// One past event, as counting needs it.
#[derive(Debug, Clone)]
pub struct Past {
    pub seq: i64,
    pub name: Arc<str>,
    pub at: i64,
    /// Properties as JSON text; parsed only when a count filters on them.
    pub properties: Box<str>,
}

struct LeadEvents {
    /// Sorted by seq.
    events: Vec<Past>,
    /// Every event of the lead that happened at or after this instant is here.
    covered_from: i64,
}

struct Inner {
    leads: LruCache<i64, LeadEvents>,
    events: usize,
    max_events: usize,
    /// Event names, shared by all events that carry them.
    names: HashMap<Box<str>, Arc<str>>,
}

/// Distinct event names kept shared; more than this are simply not shared.
const MAX_NAMES: usize = 10_000;

impl Inner {
    /// Drops the least recently used leads until at most `max_events` are held.
    fn shrink(&mut self) {
        while self.events > self.max_events {
            match self.leads.pop_lru() {
                Some((_, gone)) => self.events -= gone.events.len(),
                None => break,
            }
        }
    }
}

/// Recent events per lead, bounded in memory.
pub struct HistoryCache {
    inner: Mutex<Inner>,
}

impl HistoryCache {
    /// Holds at most `max_events` events (about 200 bytes each).
    pub fn new(max_events: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                leads: LruCache::unbounded(),
                events: 0,
                max_events,
                names: HashMap::new(),
            }),
        }
    }

    /// The shared copy of an event name.
    pub fn name(&self, name: &str) -> Arc<str> {
        let mut inner = self.lock();
        if let Some(n) = inner.names.get(name) {
            return Arc::clone(n);
        }
        let shared: Arc<str> = name.into();
        if inner.names.len() < MAX_NAMES {
            inner.names.insert(name.into(), Arc::clone(&shared));
        }
        shared
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stored event as held here.
    pub fn past(&self, e: PastEvent) -> Past {
        Past {
            seq: e.seq,
            name: self.name(&e.name),
            at: e.occurred_at,
            properties: e.properties.into_boxed_str(),
        }
    }

    fn holds(&self, lead: i64) -> bool {
        self.lock().leads.contains(&lead)
    }

    /// Leads among `ids` whose history is not held.
    pub fn missing(&self, ids: &[i64]) -> Vec<i64> {
        let inner = self.lock();
        ids.iter()
            .filter(|id| !inner.leads.contains(id))
            .copied()
            .collect()
    }

    /// Loads, in one query of at most [`PREFETCH_ROWS`] rows, the history of the
    /// leads in `ids` that are not held (all events since `since`). Leads that do not
    /// fit are left to be loaded when a rule first counts for them.
    pub async fn prefetch(
        &self,
        store: &Store,
        ids: &[i64],
        since: DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let mut missing = self.missing(ids);
        if missing.is_empty() || !self.has_room() {
            return Ok(());
        }
        missing.sort_unstable();
        let rows = store
            .past_events(&missing, since, Some(PREFETCH_ROWS + 1))
            .await?;
        // With a full page, the last lead seen may be cut off: only the ones before
        // it (and leads without any events before it) are complete.
        let complete_below = if rows.len() > PREFETCH_ROWS {
            rows.last().map_or(i64::MIN, |r| r.lead_id)
        } else {
            i64::MAX
        };
        let mut by_lead: std::collections::HashMap<i64, Vec<Past>> = missing
            .iter()
            .filter(|id| **id < complete_below)
            .map(|id| (*id, Vec::new()))
            .collect();
        for row in rows {
            if let Some(list) = by_lead.get_mut(&row.lead_id) {
                list.push(self.past(row));
            }
        }
        for (lead, past) in by_lead {
            self.install(lead, past, to_ms(since));
        }
        Ok(())
    }

    /// True while more events fit.
    pub fn has_room(&self) -> bool {
        let inner = self.lock();
        inner.events < inner.max_events
    }

    /// Takes a lead's events as loaded from the store (complete from `covered_from`).
    ///
    /// A lead is only taken in while there is room: when memory is full, counts for
    /// further leads go to the store instead of pushing out leads that are held (with
    /// many active leads, pushing out would mean reloading on every count).
    pub fn install(&self, lead: i64, mut events: Vec<Past>, covered_from: i64) {
        if events.len() > MAX_PER_LEAD {
            return;
        }
        events.sort_by_key(|e| e.seq);
        let mut inner = self.lock();
        if inner.events + events.len() > inner.max_events {
            return;
        }
        inner.events += events.len();
        if let Some(old) = inner.leads.put(
            lead,
            LeadEvents {
                events,
                covered_from,
            },
        ) {
            inner.events -= old.events.len();
        }
        inner.shrink();
    }

    /// Adds an event of a lead whose history is held (a no-op otherwise, or when the
    /// event is there already, as for a retried event).
    pub fn record(&self, lead: i64, event: Past) {
        let mut inner = self.lock();
        let Some(held) = inner.leads.get_mut(&lead) else {
            return;
        };
        let Err(at) = held.events.binary_search_by_key(&event.seq, |e| e.seq) else {
            return;
        };
        held.events.insert(at, event);
        let too_many = held.events.len() > MAX_PER_LEAD;
        inner.events += 1;
        if too_many && let Some(gone) = inner.leads.pop(&lead) {
            inner.events -= gone.events.len();
        }
        inner.shrink();
    }

    /// Forgets everything (e.g. when a batch could not be written).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.leads.clear();
        inner.events = 0;
    }

    /// The count, when the held history can answer it exactly.
    fn count(&self, q: &CountQuery<'_>, filter: Option<&Map<String, Value>>) -> Option<i64> {
        let mut inner = self.lock();
        let held = inner.leads.get(&q.lead_id)?;
        let since = q.since.map(to_ms);
        if since.is_none_or(|s| s < held.covered_from) {
            return None;
        }
        let (since, until) = (since.unwrap_or(i64::MIN), to_ms(q.until));
        let n = held
            .events
            .iter()
            .take_while(|e| e.seq <= q.upto_seq)
            .filter(|e| e.at >= since && e.at <= until)
            .filter(|e| q.name.is_none_or(|n| &*e.name == n))
            .filter(|e| filter.is_none_or(|f| matches_text(&e.properties, f)))
            .count();
        Some(n as i64)
    }
}

/// True when `properties` has every key of `filter` with an equal value.
fn matches(properties: &Value, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(k, v)| properties.get(k) == Some(v))
}

/// [`matches`] on JSON text.
fn matches_text(properties: &str, filter: &Map<String, Value>) -> bool {
    serde_json::from_str::<Value>(properties).is_ok_and(|p| matches(&p, filter))
}

/// [`History`] for rule runs.
pub struct StoreHistory {
    store: Store,
    cache: Arc<HistoryCache>,
    runtime: tokio::runtime::Handle,
}

impl StoreHistory {
    /// Must be created inside the runtime.
    pub fn new(store: Store, cache: Arc<HistoryCache>) -> Self {
        Self {
            store,
            cache,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl History for StoreHistory {
    fn count(
        &self,
        lead_id: i64,
        name: Option<&str>,
        filter: Option<&Map<String, Value>>,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        upto_seq: i64,
    ) -> Result<i64, String> {
        let q = CountQuery {
            lead_id,
            name,
            since,
            until,
            upto_seq,
        };
        if let Some(n) = self.cache.count(&q, filter) {
            return Ok(n);
        }
        if !self.cache.holds(lead_id) && self.cache.has_room() {
            // First count for this lead: load its recent events (whatever their state:
            // the batch before may still be being written), then count from memory.
            let since = until - chrono::Duration::days(COVERED_DAYS);
            let past = self
                .runtime
                .block_on(self.store.past_events(&[lead_id], since, None))
                .map_err(|e| e.to_string())?;
            let past = past.into_iter().map(|e| self.cache.past(e)).collect();
            self.cache.install(lead_id, past, to_ms(since));
            if let Some(n) = self.cache.count(&q, filter) {
                return Ok(n);
            }
        }
        let matches = filter.map(|f| {
            let f = f.clone();
            move |props: &str| matches_text(props, &f)
        });
        let matcher: Option<&(dyn Fn(&str) -> bool + Send + Sync)> = matches
            .as_ref()
            .map(|m| m as &(dyn Fn(&str) -> bool + Send + Sync));
        self.runtime
            .block_on(self.store.count_events(&q, matcher))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn past(seq: i64, name: &str, at: i64, props: &Value) -> Past {
        Past {
            seq,
            name: name.into(),
            at,
            properties: props.to_string().into_boxed_str(),
        }
    }

    fn q(since: Option<i64>, until: i64, upto: i64) -> CountQuery<'static> {
        CountQuery {
            lead_id: 1,
            name: Some("Content Downloaded"),
            since: since.map(crate::clock::from_ms),
            until: crate::clock::from_ms(until),
            upto_seq: upto,
        }
    }

    #[test]
    fn counts_from_memory_within_coverage_only() {
        let cache = HistoryCache::new(1_000);
        assert_eq!(cache.count(&q(Some(0), 100, 10), None), None);
        cache.install(
            1,
            vec![past(1, "Content Downloaded", 50, &json!({"topic": "crm"}))],
            10,
        );
        cache.record(
            1,
            past(3, "Content Downloaded", 60, &json!({"topic": "seo"})),
        );
        cache.record(
            1,
            past(3, "Content Downloaded", 60, &json!({"topic": "seo"})),
        );
        cache.record(1, past(2, "Page Viewed", 55, &json!({})));
        assert_eq!(cache.count(&q(Some(20), 100, 10), None), Some(2));
        assert_eq!(cache.count(&q(Some(20), 100, 2), None), Some(1));
        assert_eq!(cache.count(&q(Some(55), 100, 10), None), Some(1));
        let crm = json!({"topic": "crm"});
        assert_eq!(cache.count(&q(Some(20), 100, 10), crm.as_object()), Some(1));
        // Reaching back before what is held, or without a window: ask the store.
        assert_eq!(cache.count(&q(Some(5), 100, 10), None), None);
        assert_eq!(cache.count(&q(None, 100, 10), None), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let cache = HistoryCache::new(1_000);
        for lead in 0..100 {
            cache.install(lead, Vec::new(), 0);
        }
        for seq in 0..6_000 {
            cache.record(seq % 100, past(seq, "Page Viewed", seq, &json!({})));
        }
        let inner = cache.lock();
        assert!(inner.events <= 1_000, "{}", inner.events);
        let held: usize = inner.leads.iter().map(|(_, l)| l.events.len()).sum();
        assert_eq!(held, inner.events);
    }
}
