//! Events in: Segment-style payloads from HTTP or a JSONL file are checked
//! ([`segment`]), tied to leads (creating a lead for a new e-mail address) and stored
//! durably in one transaction. Either the whole request is stored or none of it.

pub mod file;
pub mod segment;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::{Store, StoreError};
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

/// Stores checked items: finds or creates their leads and inserts the events, all in
/// one transaction. `paths` gives each item's JSON path prefix for error messages.
pub async fn accept(
    store: &Store,
    items: &[Item],
    paths: &(dyn Fn(usize) -> (Option<usize>, String) + Sync),
    initial_stage: &str,
    now: DateTime<Utc>,
) -> Result<Accepted, AcceptError> {
    if items.is_empty() {
        return Ok(Accepted::default());
    }
    let mut emails: Vec<String> = items
        .iter()
        .filter_map(|i| i.key.email.as_ref().map(|e| e.as_str().to_string()))
        .collect();
    emails.sort_unstable();
    emails.dedup();
    let mut user_ids: Vec<String> = items.iter().filter_map(|i| i.key.user_id.clone()).collect();
    user_ids.sort_unstable();
    user_ids.dedup();

    let mut tx = store.begin_write().await?;
    let mut by_email: HashMap<String, i64> = HashMap::new();
    let mut by_user: HashMap<String, i64> = HashMap::new();
    let mut has_user: HashMap<i64, bool> = HashMap::new();
    for row in tx.find_lead_keys(&emails, &user_ids).await? {
        by_email.insert(row.email.clone(), row.id);
        if let Some(ext) = &row.external_id {
            by_user.insert(ext.clone(), row.id);
        }
        has_user.insert(row.id, row.external_id.is_some());
    }

    let mut errors = Vec::new();
    let mut resolved: Vec<(i64, &crate::store::NewEvent)> = Vec::with_capacity(items.len());
    let mut created = 0;
    for (n, item) in items.iter().enumerate() {
        let LeadKey { email, user_id } = &item.key;
        let found = email
            .as_ref()
            .and_then(|e| by_email.get(e.as_str()).copied())
            .or_else(|| user_id.as_ref().and_then(|u| by_user.get(u).copied()));
        let id = match (found, email) {
            (Some(id), _) => id,
            (None, Some(email)) => {
                let ext = user_id.as_deref().filter(|u| !by_user.contains_key(*u));
                let reason = format!("first seen ({} event)", item.event.kind);
                let id = tx
                    .create_lead(email, ext, initial_stage, now, &reason)
                    .await?;
                by_email.insert(email.as_str().to_string(), id);
                if let Some(u) = ext {
                    by_user.insert(u.to_string(), id);
                }
                has_user.insert(id, ext.is_some());
                created += 1;
                id
            }
            (None, None) => {
                let (index, prefix) = paths(n);
                let uid = user_id.as_deref().unwrap_or_default();
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
        if let Some(u) = user_id
            && has_user.get(&id) == Some(&false)
            && !by_user.contains_key(u)
        {
            tx.set_external_id(id, u).await?;
            by_user.insert(u.clone(), id);
            has_user.insert(id, true);
        }
        resolved.push((id, &item.event));
    }
    if !errors.is_empty() {
        return Err(AcceptError::Input(errors));
    }
    let new = tx.insert_events(&resolved, now).await?;
    tx.commit().await?;
    let accepted = new.iter().filter(|n| **n).count();
    Ok(Accepted {
        accepted,
        duplicates: new.len() - accepted,
        leads_created: created,
    })
}
