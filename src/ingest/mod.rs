//! Events in: Segment-style payloads from HTTP or a JSONL file are checked
//! ([`segment`]), tied to leads (creating a lead for a new e-mail address) and stored
//! durably in one transaction. Either the whole request is stored or none of it.

pub mod file;
pub mod segment;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::mail::StreamPlan;
use crate::store::{Store, StoreError, build};
pub use segment::{InputError, Item, LeadKey};

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

/// Stores checked items: finds or creates their leads and inserts the events, all in
/// one transaction. `paths` gives each item's JSON path prefix for error messages.
///
/// Leads are looked up before the writer lock is taken; only new e-mail addresses and
/// new user ids need work inside the transaction.
pub async fn accept(
    store: &Store,
    items: Vec<Item>,
    paths: &(dyn Fn(usize) -> (Option<usize>, String) + Sync),
    new_leads: &NewLeads<'_>,
    now: DateTime<Utc>,
) -> Result<Accepted, AcceptError> {
    if items.is_empty() {
        return Ok(Accepted::default());
    }
    let total = items.len();
    let (emails, user_ids) = keys_of(items.iter().map(|i| &i.key));
    let mut known = Known::default();
    known.add(store.lead_keys(&emails, &user_ids).await?);
    let all_known = items.iter().all(|i| {
        known
            .find(&i.key)
            .is_some_and(|id| known.new_user_id(id, &i.key).is_none())
    });

    if all_known {
        let resolved = items
            .into_iter()
            .map(|i| (known.find(&i.key).expect("checked above"), i.event))
            .collect();
        let mut tx = store.begin_write().await?;
        let accepted = tx.insert_events(resolved, now).await?;
        tx.count_received(accepted).await?;
        tx.commit().await?;
        return Ok(Accepted {
            accepted: accepted as usize,
            duplicates: total - accepted as usize,
            leads_created: 0,
        });
    }

    let mut tx = store.begin_write().await?;
    // Someone may have created some of the missing leads since the lookup.
    let (emails, user_ids) = keys_of(
        items
            .iter()
            .filter(|i| known.find(&i.key).is_none())
            .map(|i| &i.key),
    );
    known.add(tx.find_lead_keys(&emails, &user_ids).await?);
    let mut errors = Vec::new();
    let mut resolved = Vec::with_capacity(total);
    let mut created = 0;
    for (n, item) in items.into_iter().enumerate() {
        let id = match (known.find(&item.key), &item.key.email) {
            (Some(id), _) => id,
            (None, Some(email)) => {
                let user = item
                    .key
                    .user_id
                    .as_deref()
                    .filter(|u| !known.by_user.contains_key(*u));
                let reason = format!("first seen ({} event)", item.event.kind);
                let id = tx
                    .create_lead(email, user, new_leads.stage, now, &reason)
                    .await?;
                if let Some(plan) = new_leads.streams {
                    let joins = plan.created(new_leads.stage);
                    tx.execute(build::mails(&[(id, None, &joins)], &plan.params, now))
                        .await?;
                }
                known.add(vec![crate::store::LeadKeyRow {
                    id,
                    email: email.as_str().to_string(),
                    external_id: user.map(str::to_string),
                }]);
                created += 1;
                id
            }
            (None, None) => {
                let (index, prefix) = paths(n);
                let uid = item.key.user_id.as_deref().unwrap_or_default();
                errors.push(InputError {
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
                });
                continue;
            }
        };
        // Remember the sender's id for this lead the first time we see one.
        if let Some(u) = known.new_user_id(id, &item.key) {
            tx.set_external_id(id, u).await?;
            known.by_user.insert(u.to_string(), id);
            known.has_user.insert(id, true);
        }
        resolved.push((id, item.event));
    }
    if !errors.is_empty() {
        return Err(AcceptError::Input(errors));
    }
    let accepted = tx.insert_events(resolved, now).await?;
    tx.count_received(accepted).await?;
    tx.commit().await?;
    Ok(Accepted {
        accepted: accepted as usize,
        duplicates: total - accepted as usize,
        leads_created: created,
    })
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
