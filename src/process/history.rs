//! The event history rules count on (`lead.count(...)`), held per lead in a compact
//! form, and the store behind it.
//!
//! A lead's history is loaded whole (every event of the lead, whatever its outcome) the
//! first time work on the lead needs it, and grows as each event is processed. Each
//! event keeps its sequence number, time, a hash of its name and a hash of each
//! top-level property (key and value), 32 + 8 bytes per property: enough to answer
//! "how many events named N with properties F in [since, until]" exactly (up to 64-bit
//! hash collisions). A long history (from [`INDEX_FROM`] events) also keeps sorted
//! times per name and per name and property, so a count is two binary searches: it
//! costs the same for a lead with 60,000 events as for one with 60. Histories live in
//! the lead cache ([`super::cache`]) under its memory budget; what is not held is
//! counted by the store.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::clock::to_ms;
use crate::rules::api::History;
use crate::store::{CountQuery, PastEvent, Store};

/// From this many events on, a history keeps sorted per-key indexes.
pub const INDEX_FROM: usize = 512;

/// One past event.
#[derive(Debug, Clone, Copy)]
struct Ev {
    seq: i64,
    at: i64,
    name: u64,
    /// The event's property hashes are `pairs[start..start + len]`.
    start: u32,
    len: u32,
}

/// Per key (every event, a name, a name with one property), the events' times and
/// positions, sorted by time.
#[derive(Debug, Default)]
struct Index {
    lists: HashMap<u64, Vec<(i64, u32)>>,
    entries: usize,
}

/// Everything a lead did, as counting needs it.
#[derive(Debug, Default)]
pub struct LeadHistory {
    /// Every event of the lead with a sequence number up to this one is here.
    through: i64,
    /// In sequence order.
    events: Vec<Ev>,
    pairs: Vec<u64>,
    index: Option<Index>,
}

/// An event as the history takes it in.
pub struct Recorded<'a> {
    pub seq: i64,
    pub at: i64,
    pub name: &'a str,
    /// The properties as stored (JSON text).
    pub properties: &'a str,
}

/// A count the history is asked for (see [`History::count`]).
pub struct Count<'a> {
    pub name: Option<&'a str>,
    pub filter: Option<&'a Map<String, Value>>,
    pub since: Option<i64>,
    pub until: i64,
    pub upto_seq: i64,
}

fn hasher() -> std::collections::hash_map::DefaultHasher {
    // SipHash with fixed keys: the same value hashes the same way for the whole run.
    std::collections::hash_map::DefaultHasher::new()
}

/// The hash of an event name.
pub fn name_hash(name: &str) -> u64 {
    let mut h = hasher();
    0u8.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// Hashes a JSON value so that equal values (as `serde_json::Value` compares them)
/// hash alike, whatever the order of an object's keys.
fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        Value::Number(n) => {
            2u8.hash(h);
            n.to_string().hash(h);
        }
        Value::String(s) => {
            3u8.hash(h);
            s.hash(h);
        }
        Value::Array(a) => {
            4u8.hash(h);
            a.len().hash(h);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            5u8.hash(h);
            m.len().hash(h);
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            for k in keys {
                k.hash(h);
                hash_value(&m[k], h);
            }
        }
    }
}

/// The hash of one top-level property.
pub fn pair_hash(key: &str, value: &Value) -> u64 {
    let mut h = hasher();
    1u8.hash(&mut h);
    key.hash(&mut h);
    hash_value(value, &mut h);
    h.finish()
}

/// The index key of a name with one property.
fn combined(name: u64, pair: u64) -> u64 {
    let mut h = hasher();
    2u8.hash(&mut h);
    name.hash(&mut h);
    pair.hash(&mut h);
    h.finish()
}

/// The index key of all events.
const ALL: u64 = 0x5EED_0FA1_1E7E;

/// The property hashes of properties stored as JSON text (none when it is not an
/// object).
fn pairs_of(properties: &str) -> Vec<u64> {
    match serde_json::from_str::<Map<String, Value>>(properties) {
        Ok(m) => m.iter().map(|(k, v)| pair_hash(k, v)).collect(),
        Err(_) => Vec::new(),
    }
}

impl Index {
    fn add(&mut self, key: u64, at: i64, pos: u32) {
        let list = self.lists.entry(key).or_default();
        // Events mostly come in time order: usually a push at the end.
        let i = list.partition_point(|&(t, p)| (t, p) <= (at, pos));
        list.insert(i, (at, pos));
        self.entries += 1;
    }

    fn add_event(&mut self, ev: &Ev, pos: u32, pairs: &[u64]) {
        self.add(ALL, ev.at, pos);
        self.add(ev.name, ev.at, pos);
        for p in pairs {
            self.add(combined(ev.name, *p), ev.at, pos);
        }
    }

    /// Positions in `key`'s list within `[since, until]`.
    fn range(&self, key: u64, since: i64, until: i64) -> &[(i64, u32)] {
        let Some(list) = self.lists.get(&key) else {
            return &[];
        };
        let lo = list.partition_point(|&(t, _)| t < since);
        let hi = list.partition_point(|&(t, _)| t <= until);
        &list[lo..hi.max(lo)]
    }
}

impl LeadHistory {
    /// A history from the stored events of a lead, complete up to `through`.
    pub fn from_rows(mut rows: Vec<PastEvent>, through: i64) -> Self {
        rows.sort_unstable_by_key(|r| r.seq);
        let mut h = LeadHistory {
            through,
            events: Vec::with_capacity(rows.len()),
            pairs: Vec::new(),
            index: None,
        };
        for r in rows.iter().filter(|r| r.seq <= through) {
            h.push(
                r.seq,
                r.occurred_at,
                name_hash(&r.name),
                &pairs_of(&r.properties),
            );
        }
        h.through = through;
        h
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every event with a sequence number up to this one is held.
    pub fn through(&self) -> i64 {
        self.through
    }

    fn push(&mut self, seq: i64, at: i64, name: u64, pairs: &[u64]) {
        let ev = Ev {
            seq,
            at,
            name,
            start: self.pairs.len() as u32,
            len: pairs.len() as u32,
        };
        let pos = self.events.len() as u32;
        self.pairs.extend_from_slice(pairs);
        self.events.push(ev);
        if let Some(index) = &mut self.index {
            index.add_event(&ev, pos, pairs);
        } else if self.events.len() >= INDEX_FROM {
            let mut index = Index::default();
            for (i, ev) in self.events.iter().enumerate() {
                let p = &self.pairs[ev.start as usize..(ev.start + ev.len) as usize];
                index.add_event(ev, i as u32, p);
            }
            self.index = Some(index);
        }
    }

    /// Adds an event that is being processed now. One that is held already (a retried
    /// event) is not added again.
    pub fn record(&mut self, e: &Recorded<'_>) {
        if e.seq <= self.through {
            if self.events.binary_search_by_key(&e.seq, |x| x.seq).is_ok() {
                return;
            }
            // An older event that was not held (it cannot be, when `through` is
            // right); keep the order by sequence number by rebuilding.
            let mut pairs = pairs_of(e.properties);
            let at = self.events.partition_point(|x| x.seq < e.seq);
            let start = self.pairs.len() as u32;
            let len = pairs.len() as u32;
            self.pairs.append(&mut pairs);
            self.events.insert(
                at,
                Ev {
                    seq: e.seq,
                    at: e.at,
                    name: name_hash(e.name),
                    start,
                    len,
                },
            );
            self.rebuild_index();
            return;
        }
        self.push(e.seq, e.at, name_hash(e.name), &pairs_of(e.properties));
        self.through = e.seq;
    }

    fn rebuild_index(&mut self) {
        if self.events.len() < INDEX_FROM {
            self.index = None;
            return;
        }
        let mut index = Index::default();
        for (i, ev) in self.events.iter().enumerate() {
            let p = &self.pairs[ev.start as usize..(ev.start + ev.len) as usize];
            index.add_event(ev, i as u32, p);
        }
        self.index = Some(index);
    }

    fn pairs(&self, ev: &Ev) -> &[u64] {
        &self.pairs[ev.start as usize..(ev.start + ev.len) as usize]
    }

    /// The count, exact for events up to `through` (every held event counts when
    /// `upto_seq` is at or beyond it).
    pub fn count(&self, q: &Count<'_>) -> i64 {
        let name = q.name.map(name_hash);
        let wanted: Vec<u64> = q
            .filter
            .map(|f| f.iter().map(|(k, v)| pair_hash(k, v)).collect())
            .unwrap_or_default();
        let since = q.since.unwrap_or(i64::MIN);
        let has_all = |ev: &Ev| {
            let p = self.pairs(ev);
            wanted.iter().all(|w| p.contains(w))
        };
        if let Some(index) = &self.index
            && q.upto_seq >= self.through
        {
            let key = match (name, wanted.first()) {
                (Some(n), Some(p)) => combined(n, *p),
                (Some(n), None) => n,
                (None, _) => ALL,
            };
            let range = index.range(key, since, q.until);
            if wanted.len() <= 1 && (name.is_some() || wanted.is_empty()) {
                return range.len() as i64;
            }
            return range
                .iter()
                .filter(|(_, pos)| has_all(&self.events[*pos as usize]))
                .count() as i64;
        }
        self.events
            .iter()
            .filter(|ev| ev.seq <= q.upto_seq && ev.at >= since && ev.at <= q.until)
            .filter(|ev| name.is_none_or(|n| ev.name == n))
            .filter(|ev| has_all(ev))
            .count() as i64
    }

    /// Roughly the bytes this history takes in memory.
    pub fn bytes(&self) -> usize {
        let index = self.index.as_ref().map_or(0, |i| {
            i.lists.capacity() * 48
                + i.lists
                    .values()
                    .map(|l| l.capacity() * 16 + 16)
                    .sum::<usize>()
        });
        std::mem::size_of::<Self>()
            + self.events.capacity() * std::mem::size_of::<Ev>()
            + self.pairs.capacity() * 8
            + index
    }

    /// Gives back memory reserved for growth (before the history goes into the cache).
    pub fn shrink(&mut self) {
        self.events.shrink_to_fit();
        self.pairs.shrink_to_fit();
    }
}

/// True when `properties` has every key of `filter` with an equal value.
pub fn matches(properties: &Value, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(k, v)| properties.get(k) == Some(v))
}

/// [`matches`] on JSON text.
pub fn matches_text(properties: &str, filter: &Map<String, Value>) -> bool {
    serde_json::from_str::<Value>(properties).is_ok_and(|p| matches(&p, filter))
}

/// Counts in the store: for leads whose history is not held, and for scheduled jobs.
pub struct StoreHistory {
    store: Store,
    runtime: tokio::runtime::Handle,
}

impl StoreHistory {
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> Self {
        Self { store, runtime }
    }

    /// Counts in the store (blocking: call from a rule thread, not the runtime).
    pub fn count_in_store(
        &self,
        lead_id: i64,
        q: &Count<'_>,
        until: DateTime<Utc>,
    ) -> Result<i64, String> {
        let query = CountQuery {
            lead_id,
            name: q.name,
            since: q.since.map(crate::clock::from_ms),
            until,
            upto_seq: q.upto_seq,
        };
        let matches = q.filter.map(|f| {
            let f = f.clone();
            move |props: &str| matches_text(props, &f)
        });
        let matcher: Option<&(dyn Fn(&str) -> bool + Send + Sync)> = matches
            .as_ref()
            .map(|m| m as &(dyn Fn(&str) -> bool + Send + Sync));
        self.runtime
            .block_on(self.store.count_events(&query, matcher))
            .map_err(|e| e.to_string())
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
        let q = Count {
            name,
            filter,
            since: since.map(to_ms),
            until: to_ms(until),
            upto_seq,
        };
        self.count_in_store(lead_id, &q, until)
    }
}

/// The history of the one lead a job works on: held in memory when the job has it,
/// otherwise counted by the store.
pub struct JobHistory {
    lead_id: i64,
    held: std::sync::Mutex<Option<LeadHistory>>,
    store: StoreHistory,
}

impl JobHistory {
    pub fn new(lead_id: i64, held: Option<LeadHistory>, store: StoreHistory) -> Self {
        Self {
            lead_id,
            held: std::sync::Mutex::new(held),
            store,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<LeadHistory>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the event being processed (when the history is held).
    pub fn record(&self, e: &Recorded<'_>) {
        if let Some(h) = self.held().as_mut() {
            h.record(e);
        }
    }

    /// The history, for the cache.
    pub fn into_held(self) -> Option<LeadHistory> {
        self.held.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl History for JobHistory {
    fn count(
        &self,
        lead_id: i64,
        name: Option<&str>,
        filter: Option<&Map<String, Value>>,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        upto_seq: i64,
    ) -> Result<i64, String> {
        let q = Count {
            name,
            filter,
            since: since.map(to_ms),
            until: to_ms(until),
            upto_seq,
        };
        if lead_id == self.lead_id
            && let Some(h) = self.held().as_ref()
        {
            return Ok(h.count(&q));
        }
        self.store.count_in_store(lead_id, &q, until)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec<'a>(seq: i64, name: &'a str, at: i64, props: &'a str) -> Recorded<'a> {
        Recorded {
            seq,
            at,
            name,
            properties: props,
        }
    }

    fn count(
        h: &LeadHistory,
        name: Option<&str>,
        f: Option<&Value>,
        since: i64,
        until: i64,
        upto: i64,
    ) -> i64 {
        h.count(&Count {
            name,
            filter: f.and_then(Value::as_object),
            since: Some(since),
            until,
            upto_seq: upto,
        })
    }

    #[test]
    fn counts_by_name_window_filter_and_sequence() {
        let mut h = LeadHistory::default();
        h.record(&rec(
            1,
            "Content Downloaded",
            50,
            r#"{"topic":"crm","n":1}"#,
        ));
        h.record(&rec(2, "Page Viewed", 55, "{}"));
        h.record(&rec(
            3,
            "Content Downloaded",
            60,
            r#"{"n":1,"topic":"seo"}"#,
        ));
        h.record(&rec(
            3,
            "Content Downloaded",
            60,
            r#"{"n":1,"topic":"seo"}"#,
        ));
        let d = Some("Content Downloaded");
        assert_eq!(count(&h, d, None, 20, 100, 10), 2);
        assert_eq!(
            count(&h, d, None, 20, 100, 2),
            1,
            "later events do not count"
        );
        assert_eq!(count(&h, d, None, 55, 100, 10), 1);
        assert_eq!(count(&h, d, None, 20, 59, 10), 1);
        assert_eq!(count(&h, None, None, 0, 100, 10), 3);
        let crm = json!({"topic": "crm"});
        assert_eq!(count(&h, d, Some(&crm), 0, 100, 10), 1);
        let both = json!({"n": 1, "topic": "seo"});
        assert_eq!(count(&h, d, Some(&both), 0, 100, 10), 1);
        let float = json!({"n": 1.0});
        assert_eq!(
            count(&h, d, Some(&float), 0, 100, 10),
            0,
            "1.0 is not 1, as in JSON"
        );
        assert_eq!(h.through(), 3);
    }

    #[test]
    fn a_long_history_answers_from_its_index_like_a_short_one() {
        let mut long = LeadHistory::default();
        let topics = ["crm", "seo", "ads"];
        for seq in 1..=5_000i64 {
            let props =
                json!({"topic": topics[(seq % 3) as usize], "page": {"b": 1, "a": seq % 2}})
                    .to_string();
            let name = if seq % 5 == 0 {
                "Page Viewed"
            } else {
                "Content Downloaded"
            };
            // Times go back now and then, as late events do.
            let at = seq * 10 - if seq % 7 == 0 { 25 } else { 0 };
            long.record(&rec(seq, name, at, &props));
        }
        assert!(long.index.is_some());
        let mut flat = LeadHistory {
            index: None,
            ..LeadHistory::default()
        };
        flat.events = long.events.clone();
        flat.pairs = long.pairs.clone();
        flat.through = long.through;
        let filters = [
            None,
            Some(json!({"topic": "crm"})),
            Some(json!({"topic": "seo", "page": {"a": 1, "b": 1}})),
            Some(json!({"page": {"a": 0, "b": 1}})),
        ];
        for name in [
            None,
            Some("Content Downloaded"),
            Some("Page Viewed"),
            Some("Other"),
        ] {
            for f in &filters {
                for (since, until) in [
                    (0, 60_000),
                    (1_000, 2_000),
                    (33_305, 33_305),
                    (49_000, 49_990),
                ] {
                    assert_eq!(
                        count(&long, name, f.as_ref(), since, until, i64::MAX),
                        count(&flat, name, f.as_ref(), since, until, i64::MAX),
                        "{name:?} {f:?} {since}..{until}"
                    );
                }
            }
        }
        // A retried older event counts only what came before it.
        assert_eq!(
            count(&long, Some("Page Viewed"), None, 0, i64::MAX, 100),
            20
        );
    }

    #[test]
    fn loads_from_stored_rows_up_to_a_sequence_number() {
        let row = |seq: i64, name: &str| PastEvent {
            lead_id: 1,
            seq,
            name: name.into(),
            occurred_at: seq * 10,
            properties: "{}".into(),
        };
        let h = LeadHistory::from_rows(vec![row(3, "B"), row(1, "A"), row(9, "A")], 5);
        assert_eq!(h.len(), 2, "event 9 comes later, with its own batch");
        assert_eq!(count(&h, Some("A"), None, 0, 1000, 100), 1);
        assert!(h.bytes() > 0);
    }
}
