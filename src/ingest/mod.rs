//! Events in: Segment-style payloads from HTTP or a JSONL file are checked
//! ([`segment`]), tied to leads (creating a lead for a new e-mail address) or to
//! anonymous visitors, whose events wait until a lead joins them ([`anonymous`]), and
//! stored durably in one transaction. Either the whole request is stored or none of
//! it; concurrent requests share a transaction ([`group`]). CSV lists of people come in
//! as identify events ([`csv_import`]); stored events go back out as Segment JSONL
//! ([`export`]).

mod anonymous;
pub mod csv_import;
pub mod export;
pub mod file;
pub mod group;
pub mod segment;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::Email;
use crate::mail::StreamPlan;
use crate::store::{PendingEvent, Store, StoreError, build};
pub use segment::{Call, InputError, Item, LeadKey};

/// What a request added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Accepted {
    /// New events stored.
    pub accepted: usize,
    /// Events whose `messageId` was already stored (a retried request): skipped.
    pub duplicates: usize,
    /// Leads created for new e-mail addresses.
    pub leads_created: usize,
}

/// Why a request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{} problem(s) in the input", .0.len())]
    Input(Vec<InputError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared write of several requests failed (the first one got the cause).
    #[error("{0}")]
    Failed(String),
}

/// Where a lead seen for the first time starts.
#[derive(Clone, Copy)]
pub struct NewLeads<'a> {
    pub stage: &'a str,
    /// The streams of that stage it joins (none in rule fixtures).
    pub streams: Option<&'a StreamPlan>,
}

/// Who is known: lead ids by e-mail and by the sender's user id.
#[derive(Default)]
struct Known {
    by_email: HashMap<String, i64>,
    by_user: HashMap<String, i64>,
    /// Whether the lead has a user id already.
    has_user: HashMap<i64, bool>,
}

impl Known {
    /// Notes a lead about to be created (id 0: not known yet).
    fn plan(&mut self, email: &Email, user: Option<&str>) {
        self.by_email.insert(email.as_str().to_string(), 0);
        if let Some(u) = user {
            self.by_user.insert(u.to_string(), 0);
        }
    }

    fn add(&mut self, rows: Vec<crate::store::LeadKeyRow>) {
        for row in rows {
            self.by_email.insert(row.email, row.id);
            if let Some(ext) = row.external_id {
                self.by_user.insert(ext, row.id);
                self.has_user.insert(row.id, true);
            } else {
                self.has_user.entry(row.id).or_insert(false);
            }
        }
    }

    /// Drops what is known of lead `id`.
    fn forget(&mut self, id: i64) {
        self.by_email.retain(|_, v| *v != id);
        self.by_user.retain(|_, v| *v != id);
        self.has_user.remove(&id);
    }

    fn find(&self, key: &LeadKey) -> Option<i64> {
        key.email
            .as_ref()
            .and_then(|e| self.by_email.get(e.as_str()).copied())
            .or_else(|| {
                key.user_id
                    .as_ref()
                    .and_then(|u| self.by_user.get(u).copied())
            })
    }

    /// The user id to remember for lead `id`, if it has none and nobody else has it.
    fn new_user_id<'a>(&self, id: i64, key: &'a LeadKey) -> Option<&'a str> {
        key.user_id
            .as_deref()
            .filter(|u| self.has_user.get(&id) == Some(&false) && !self.by_user.contains_key(*u))
    }
}

/// Where an item's errors point: its index and JSON path prefix.
pub type Paths<'a> = dyn Fn(usize) -> (Option<usize>, String) + Send + Sync + 'a;

/// One request's checked items.
pub struct Request<'a> {
    pub items: Vec<Item>,
    pub paths: &'a Paths<'a>,
}

/// Stores checked items: finds or creates their leads and inserts the events, all in
/// one transaction. `paths` gives each item's JSON path prefix for error messages.
pub async fn accept(
    store: &Store,
    items: Vec<Item>,
    paths: &Paths<'_>,
    new_leads: &NewLeads<'_>,
    now: DateTime<Utc>,
) -> Result<Accepted, AcceptError> {
    let mut results = accept_all(store, vec![Request { items, paths }], new_leads, now).await;
    results.pop().unwrap_or_else(|| Ok(Accepted::default()))
}

/// Stores the items of several requests in one transaction; each request is stored
/// whole or (when one of its items cannot be tied to a lead) not at all, and gets its
/// own answer. A failed write fails them all.
///
/// Leads are looked up before the writer lock is taken; only new e-mail addresses and
/// new user ids need work inside the transaction.
pub async fn accept_all(
    store: &Store,
    requests: Vec<Request<'_>>,
    new_leads: &NewLeads<'_>,
    now: DateTime<Utc>,
) -> Vec<Result<Accepted, AcceptError>> {
    accept_all_stored(store, requests, new_leads, now, false)
        .await
        .0
}

/// Like [`accept_all`]; with `keep`, also returns the new events as stored (in the
/// order of their sequence numbers), for processing to take without reading them back.
pub async fn accept_all_stored(
    store: &Store,
    requests: Vec<Request<'_>>,
    new_leads: &NewLeads<'_>,
    now: DateTime<Utc>,
    keep: bool,
) -> (Vec<Result<Accepted, AcceptError>>, Vec<PendingEvent>) {
    let n = requests.len();
    match store_all(store, requests, new_leads, now, keep).await {
        Ok(stored) => stored,
        Err(e) => {
            let message = e.to_string();
            let mut out = Vec::with_capacity(n);
            out.push(Err(AcceptError::Store(e)));
            out.extend((1..n).map(|_| Err(AcceptError::Failed(message.clone()))));
            (out, Vec::new())
        }
    }
}

async fn store_all(
    store: &Store,
    requests: Vec<Request<'_>>,
    new_leads: &NewLeads<'_>,
    now: DateTime<Utc>,
    keep: bool,
) -> Result<(Vec<Result<Accepted, AcceptError>>, Vec<PendingEvent>), StoreError> {
    // An alias's previous id may name a lead too.
    let previous: Vec<LeadKey> = requests
        .iter()
        .flat_map(|r| &r.items)
        .filter_map(anonymous::previous_key)
        .collect();
    let (emails, user_ids) = keys_of(
        requests
            .iter()
            .flat_map(|r| &r.items)
            .map(|i| &i.key)
            .chain(&previous),
    );
    let mut known = Known::default();
    let erasures = || crate::store::privacy::ERASURES.load(std::sync::atomic::Ordering::SeqCst);
    let erasures_before = erasures();
    known.add(store.lead_keys(&emails, &user_ids).await?);
    let mut tx = store.begin_write().await?;
    // A lead erased since the lookup is not this person's any more: looked up again
    // below (and made anew).
    if erasures() != erasures_before {
        let ids: Vec<i64> = known.has_user.keys().copied().collect();
        for id in tx.erased_among(&ids).await? {
            known.forget(id);
        }
    }
    // On PostgreSQL the intake of every daemon goes one transaction at a time from here
    // (see `WriteTx::events_in_commit_order`): a lead that another daemon's intake is
    // creating is found below once that one committed, not created twice.
    tx.events_in_commit_order().await?;
    // Someone may have created some of the missing leads since the lookup.
    let (emails, user_ids) = keys_of(
        requests
            .iter()
            .flat_map(|r| &r.items)
            .filter(|i| {
                known
                    .find(&i.key)
                    .is_none_or(|id| known.new_user_id(id, &i.key).is_some())
            })
            .map(|i| &i.key),
    );
    if !emails.is_empty() || !user_ids.is_empty() {
        known.add(tx.find_lead_keys(&emails, &user_ids).await?);
    }
    let all: Vec<&Item> = requests.iter().flat_map(|r| &r.items).collect();
    let mut visitors = anonymous::Visitors::load(&mut tx, &all).await?;
    drop(all);

    // Which requests can be stored, and the leads they create.
    let mut results: Vec<Result<Accepted, AcceptError>> = Vec::with_capacity(requests.len());
    let mut creating: Vec<(Email, Option<String>, String)> = Vec::new();
    // Per lead created: created by an event taken in as history (joins no stream).
    let mut created_by_history: Vec<bool> = Vec::new();
    let mut planned = Known::default();
    for r in &requests {
        let mut errors = Vec::new();
        let mut mine: Vec<(Email, Option<String>, String)> = Vec::new();
        let mut mine_history: Vec<bool> = Vec::new();
        let mut overlay = Known::default();
        for (n, item) in r.items.iter().enumerate() {
            let found = known
                .find(&item.key)
                .or_else(|| planned.find(&item.key))
                .or_else(|| overlay.find(&item.key));
            match (found, &item.key.email) {
                (Some(_), _) => {}
                (None, Some(email)) => {
                    let user = item.key.user_id.clone().filter(|u| {
                        !known.by_user.contains_key(u)
                            && !planned.by_user.contains_key(u)
                            && !overlay.by_user.contains_key(u)
                    });
                    overlay.plan(email, user.as_deref());
                    let reason = format!("first seen ({} event)", item.event.kind);
                    mine.push((email.clone(), user, reason));
                    mine_history.push(item.event.history);
                }
                (None, None) if visitors.can_take(item) => {}
                (None, None) => {
                    let (index, prefix) = (r.paths)(n);
                    errors.push(unknown_user(item, index, &prefix));
                }
            }
        }
        if errors.is_empty() {
            for (email, user, _) in &mine {
                planned.plan(email, user.as_deref());
            }
            results.push(Ok(Accepted {
                leads_created: mine.len(),
                ..Accepted::default()
            }));
            creating.extend(mine);
            created_by_history.extend(mine_history);
        } else {
            results.push(Err(AcceptError::Input(errors)));
        }
    }

    // Create the new leads, with the streams their stage joins.
    if !creating.is_empty() {
        let ids = tx.create_leads(&creating, new_leads.stage, now).await?;
        if let Some(key) = new_leads.streams.and_then(|p| p.erased_key.as_ref()) {
            let hashed: Vec<(i64, String)> = creating
                .iter()
                .zip(&ids)
                .flat_map(|((email, _, _), id)| {
                    // Under the current and the earlier secrets.
                    key.hashes(email.as_str())
                        .into_iter()
                        .map(move |h| (*id, h))
                })
                .collect();
            tx.renew_consent_of_erased(&hashed, crate::clock::to_ms(now))
                .await?;
        }
        if let Some(plan) = new_leads.streams {
            let joins = plan.created(new_leads.stage);
            if !joins.streams.is_empty() {
                let records: Vec<(i64, Option<i64>, &crate::domain::Changes)> = ids
                    .iter()
                    .zip(&created_by_history)
                    .filter(|(_, history)| !**history)
                    .map(|(id, _)| (*id, None, &joins))
                    .collect();
                if !records.is_empty() {
                    tx.execute(build::mails(tx.dialect(), &records, &plan.params, now))
                        .await?;
                }
            }
        }
        known.add(
            creating
                .iter()
                .zip(&ids)
                .map(|((email, user, _), id)| crate::store::LeadKeyRow {
                    id: *id,
                    email: email.as_str().to_string(),
                    external_id: user.clone(),
                })
                .collect(),
        );
    }

    // The events, and the user ids first seen for known leads.
    let mut events = Vec::new();
    let mut counted: Vec<(usize, String)> = Vec::new();
    for (r_index, r) in requests.into_iter().enumerate() {
        if results[r_index].is_err() {
            continue;
        }
        for item in r.items {
            if item.key.email.is_some() && known.find(&item.key).is_none() {
                return Err(StoreError::Corrupt {
                    what: "intake",
                    detail: "a lead planned for an event was not created".into(),
                });
            }
            // Remember the sender's id for this lead the first time we see one.
            if let Some(id) = known.find(&item.key)
                && let Some(u) = known.new_user_id(id, &item.key)
            {
                let u = u.to_string();
                tx.set_external_id(id, &u).await?;
                known.by_user.insert(u, id);
                known.has_user.insert(id, true);
            }
            counted.push((r_index, item.event.message_id.clone()));
            visitors
                .place(&mut tx, &known, item, now, &mut events)
                .await?;
        }
    }
    // Events of visitors not joined wait; aliases and visitors' group calls are taken.
    let taken = visitors.finish(&mut tx, now).await?;
    // What processing needs of each event, copied before the insert takes the text.
    let mut kept: Vec<PendingEvent> = if keep {
        events
            .iter()
            .map(|(lead_id, e)| PendingEvent {
                seq: 0,
                message_id: e.message_id.clone(),
                lead_id: *lead_id,
                kind: e.kind.to_string(),
                name: e.name.clone(),
                properties: e.properties.clone(),
                traits: e.traits.clone(),
                context: e.context.clone(),
                occurred_at: crate::clock::to_ms(e.occurred_at),
                attempts: 0,
                history: e.history,
                retry_rules: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let new = tx.insert_events_returning(events, now).await?;
    // Each new message id counts for the first request that brought it.
    let mut claimed = std::collections::HashSet::with_capacity(new.len());
    for (r_index, message_id) in counted {
        if let Ok(a) = &mut results[r_index] {
            if (new.contains_key(&message_id) || taken.contains(&message_id))
                && claimed.insert(message_id)
            {
                a.accepted += 1;
            } else {
                a.duplicates += 1;
            }
        }
    }
    let made = visitors
        .made
        .iter()
        .filter(|m| new.contains_key(*m))
        .count();
    tx.count_received((claimed.len() + made) as u64).await?;
    tx.commit().await?;
    // A message id sent twice in the group was stored once: keep its first copy.
    let mut seen = std::collections::HashSet::with_capacity(kept.len());
    kept.retain_mut(|e| match new.get(&e.message_id) {
        Some(seq) if seen.insert(*seq) => {
            e.seq = *seq;
            true
        }
        _ => false,
    });
    kept.sort_unstable_by_key(|e| e.seq);
    Ok((results, kept))
}

fn unknown_user(item: &Item, index: Option<usize>, prefix: &str) -> InputError {
    let uid = item.key.user_id.as_deref().unwrap_or_default();
    InputError {
        index,
        path: if prefix.is_empty() {
            "userId".into()
        } else {
            format!("{prefix}.userId")
        },
        message: format!(
            "no lead is known with userId `{uid}`; send an identify with \
             traits.email first, or put the address in {}",
            if item.event.kind == "identify" {
                "traits.email"
            } else {
                "context.traits.email"
            }
        ),
    }
}

/// The distinct e-mails and user ids of some keys.
fn keys_of<'a>(keys: impl Iterator<Item = &'a LeadKey>) -> (Vec<String>, Vec<String>) {
    let (mut emails, mut users) = (Vec::new(), Vec::new());
    for k in keys {
        if let Some(e) = &k.email {
            emails.push(e.as_str().to_string());
        }
        if let Some(u) = &k.user_id {
            users.push(u.clone());
        }
    }
    emails.sort_unstable();
    emails.dedup();
    users.sort_unstable();
    users.dedup();
    (emails, users)
}
