//! Anonymous visitors, `alias` and `group` at intake, inside the intake transaction.
//!
//! An event that names no known lead but an `anonymousId` waits under its anonymous
//! profile, where rules do not see it. An event of a lead that carries the same
//! `anonymousId` (or an `alias` from it, or the userId the visitor used before the
//! lead had it) joins the profile: its waiting events are stored for the lead, oldest
//! first and before the joining event, so processing runs them in time order with
//! their own timestamps. Each waiting event moves once (a joined profile keeps its
//! lead), so a second identify or a replay adds nothing. A group call stores the
//! group's traits and membership and gives every member lead an identify with the
//! traits as company traits; a visitor's memberships pass to the lead on joining.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Known;
use super::segment::{Call, GROUP, Item, LeadKey, company_traits};
use crate::domain::Email;
use crate::store::{NewEvent, StoreError, WriteTx};

/// The anonymous side of one intake transaction.
#[derive(Default)]
pub(super) struct Visitors {
    /// Profiles seen in the transaction: anonymous id -> the lead it is joined to.
    joined: HashMap<String, Option<i64>>,
    /// Profiles not joined yet, by the userId they were named with.
    by_user: HashMap<String, Vec<String>>,
    /// Events of visitors not joined (yet), in arrival order, by anonymous id.
    waiting: HashMap<String, Vec<NewEvent>>,
    /// Profiles to create or mark as seen, with a userId to remember.
    touched: HashMap<String, Option<String>>,
    /// Message ids taken without an event row of a lead: aliases and anonymous group
    /// calls.
    pub taken: HashSet<String>,
    /// Message ids of events made here (a group's traits for its other members, or
    /// for a visitor's lead on joining): received like the events of the request.
    pub made: Vec<String>,
    /// userIds given to a lead in this transaction (a userId names one lead).
    assigned: HashSet<String>,
}

/// The lead key an alias's `previousId` would be, when it names a lead rather than a
/// visitor (a `userId`, or an address).
pub(super) fn previous_key(item: &Item) -> Option<LeadKey> {
    let Call::Alias { previous_id } = &item.call else {
        return None;
    };
    Some(match Email::parse(previous_id) {
        Ok(email) => LeadKey {
            email: Some(email),
            ..LeadKey::default()
        },
        Err(_) => LeadKey {
            user_id: Some(previous_id.clone()),
            ..LeadKey::default()
        },
    })
}

/// Whose an item is.
enum Owner {
    Lead(i64),
    Visitor(String),
}

impl Visitors {
    /// Reads the profiles the items name (by anonymous id, alias previous id, or the
    /// userId of a visitor not joined yet).
    pub async fn load(tx: &mut WriteTx, items: &[&Item]) -> Result<Self, StoreError> {
        let mut ids: Vec<String> = Vec::new();
        let mut users: Vec<String> = Vec::new();
        for item in items {
            if let Some(a) = &item.key.anonymous_id {
                ids.push(a.clone());
            }
            if let Call::Alias { previous_id } = &item.call {
                ids.push(previous_id.clone());
            }
            if let Some(u) = &item.key.user_id {
                users.push(u.clone());
            }
        }
        let mut v = Self::default();
        if ids.is_empty() && users.is_empty() {
            return Ok(v);
        }
        ids.sort_unstable();
        ids.dedup();
        users.sort_unstable();
        users.dedup();
        for p in tx.anonymous_profiles(&ids, &users).await? {
            if p.lead_id.is_none()
                && let Some(u) = &p.user_id
            {
                let list = v.by_user.entry(u.clone()).or_default();
                if !list.contains(&p.anonymous_id) {
                    list.push(p.anonymous_id.clone());
                }
            }
            v.joined.insert(p.anonymous_id, p.lead_id);
        }
        Ok(v)
    }

    /// Whether an item that names no known lead can still be taken: it names a
    /// visitor, or it is an alias (remembered for when the lead appears).
    pub fn can_take(&self, item: &Item) -> bool {
        item.key.anonymous_id.is_some()
            || matches!(item.call, Call::Alias { .. })
            || item
                .key
                .user_id
                .as_ref()
                .is_some_and(|u| self.by_user.contains_key(u))
    }

    fn owner(&self, known: &Known, item: &Item) -> Option<Owner> {
        if let Some(id) = known.find(&item.key) {
            return Some(Owner::Lead(id));
        }
        // An alias from a visitor joined already, or from a lead's other id, names
        // that lead.
        if let Call::Alias { previous_id } = &item.call {
            if let Some(Some(lead)) = self.joined.get(previous_id) {
                return Some(Owner::Lead(*lead));
            }
            if let Some(lead) = previous_key(item).and_then(|k| known.find(&k)) {
                return Some(Owner::Lead(lead));
            }
        }
        let visitor = item.key.anonymous_id.clone().or_else(|| {
            item.key
                .user_id
                .as_ref()
                .and_then(|u| self.by_user.get(u))
                .and_then(|l| l.first().cloned())
        })?;
        Some(match self.joined.get(&visitor).copied().flatten() {
            Some(lead) => Owner::Lead(lead),
            None => Owner::Visitor(visitor),
        })
    }

    /// Places one item: events for leads go to `events` (joined history first),
    /// events of visitors wait.
    pub async fn place(
        &mut self,
        tx: &mut WriteTx,
        known: &Known,
        item: Item,
        now: DateTime<Utc>,
        events: &mut Vec<(i64, NewEvent)>,
    ) -> Result<(), StoreError> {
        match self.owner(known, &item) {
            Some(Owner::Lead(lead)) => {
                let mut joins: Vec<String> = Vec::new();
                if let Some(a) = &item.key.anonymous_id {
                    joins.push(a.clone());
                }
                if let Call::Alias { previous_id } = &item.call
                    && previous_key(&item).and_then(|k| known.find(&k)).is_none()
                {
                    joins.push(previous_id.clone());
                }
                if let Some(u) = &item.key.user_id
                    && let Some(list) = self.by_user.remove(u)
                {
                    joins.extend(list);
                }
                for a in joins {
                    self.join(tx, &a, lead, now, events).await?;
                }
                // The lead was found through a visitor (its anonymousId, or an
                // alias's previous id): it is known by the item's userId from now on,
                // if it has none yet (no lead has that userId, or it would have been
                // found by it).
                if known.find(&item.key).is_none()
                    && let Some(u) = &item.key.user_id
                    && self.assigned.insert(u.clone())
                {
                    if matches!(item.call, Call::Alias { .. }) {
                        // An alias moves the lead to its new userId.
                        tx.replace_external_id(lead, u).await?;
                    } else {
                        tx.set_external_id(lead, u).await?;
                    }
                }
                match item.call {
                    Call::Event => events.push((lead, item.event)),
                    Call::Alias { .. } => {
                        self.taken.insert(item.event.message_id);
                    }
                    Call::Group { group_id, traits } => {
                        tx.update_group(&group_id, &traits, now).await?;
                        tx.add_group_member(&group_id, Some(lead), None, now)
                            .await?;
                        for member in tx.group_member_leads(&group_id).await? {
                            if member != lead {
                                let mut e = item.event.clone();
                                e.message_id = format!("{}/{member}", e.message_id);
                                self.made.push(e.message_id.clone());
                                events.push((member, e));
                            }
                        }
                        events.push((lead, item.event));
                    }
                }
            }
            Some(Owner::Visitor(visitor)) => {
                let user = item.key.user_id.clone();
                if let Some(u) = &user {
                    let list = self.by_user.entry(u.clone()).or_default();
                    if !list.contains(&visitor) {
                        list.push(visitor.clone());
                    }
                }
                match item.call {
                    Call::Event => {
                        self.waiting
                            .entry(visitor.clone())
                            .or_default()
                            .push(item.event);
                    }
                    Call::Alias { previous_id } => {
                        // Both names are visitors: the previous one waits for the
                        // same lead.
                        self.touch(&previous_id, user.clone());
                        if let Some(u) = &user {
                            let list = self.by_user.entry(u.clone()).or_default();
                            if !list.contains(&previous_id) {
                                list.push(previous_id);
                            }
                        }
                        self.taken.insert(item.event.message_id);
                    }
                    Call::Group { group_id, traits } => {
                        tx.update_group(&group_id, &traits, now).await?;
                        self.touch(&visitor, user.clone());
                        tx.add_group_member(&group_id, None, Some(&visitor), now)
                            .await?;
                        self.taken.insert(item.event.message_id);
                    }
                }
                self.touch(&visitor, user);
            }
            None => {
                // An alias from a visitor to a userId no lead has yet: remembered on
                // the visitor's profile, joined when a lead gets that userId.
                if let Call::Alias { previous_id } = &item.call {
                    self.touch(previous_id, item.key.user_id.clone());
                    if let Some(u) = &item.key.user_id {
                        self.by_user
                            .entry(u.clone())
                            .or_default()
                            .push(previous_id.clone());
                    }
                    self.taken.insert(item.event.message_id);
                } else {
                    return Err(StoreError::Corrupt {
                        what: "intake",
                        detail: "an event was accepted without a lead or visitor".into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn touch(&mut self, anonymous_id: &str, user: Option<String>) {
        self.joined.entry(anonymous_id.to_string()).or_insert(None);
        let slot = self.touched.entry(anonymous_id.to_string()).or_default();
        if slot.is_none() {
            *slot = user;
        }
    }

    /// Joins a visitor to a lead: its stored and newly arrived events, oldest first,
    /// then the traits of the groups it had joined.
    async fn join(
        &mut self,
        tx: &mut WriteTx,
        anonymous_id: &str,
        lead: i64,
        now: DateTime<Utc>,
        events: &mut Vec<(i64, NewEvent)>,
    ) -> Result<(), StoreError> {
        match self.joined.get(anonymous_id) {
            Some(Some(_)) => return Ok(()),
            Some(None) => {}
            None => {
                // No profile in the database or this transaction (all were read):
                // nothing waits, the profile starts joined.
                tx.add_joined_profile(anonymous_id, lead, now).await?;
                self.joined.insert(anonymous_id.to_string(), Some(lead));
                return Ok(());
            }
        }
        // A profile first named in this transaction is created before it is joined.
        if let Some(user) = self.touched.remove(anonymous_id) {
            tx.touch_profile(anonymous_id, user.as_deref(), now).await?;
        }
        let joined = tx.join_profile(anonymous_id, lead, now).await?;
        let mut history = joined.events;
        history.extend(self.waiting.remove(anonymous_id).unwrap_or_default());
        history.sort_by_key(|e| e.occurred_at);
        events.extend(history.into_iter().map(|e| (lead, e)));
        for (group_id, traits) in joined.groups {
            let traits: serde_json::Map<String, Value> =
                serde_json::from_str(&traits).unwrap_or_default();
            let message_id = format!("group:{group_id}:{anonymous_id}");
            self.made.push(message_id.clone());
            events.push((
                lead,
                NewEvent {
                    message_id,
                    kind: "identify",
                    name: GROUP.into(),
                    properties: serde_json::json!({ "groupId": group_id }).to_string(),
                    traits: Some(Value::Object(company_traits(Some(&traits))).to_string()),
                    context: None,
                    occurred_at: now,
                    history: false,
                },
            ));
        }
        self.joined.insert(anonymous_id.to_string(), Some(lead));
        for list in self.by_user.values_mut() {
            list.retain(|a| a != anonymous_id);
        }
        Ok(())
    }

    /// Stores what still waits: the profiles, then the events of visitors not joined.
    /// Returns the message ids stored new.
    pub async fn finish(
        &mut self,
        tx: &mut WriteTx,
        now: DateTime<Utc>,
    ) -> Result<HashSet<String>, StoreError> {
        for (a, user) in &self.touched {
            tx.touch_profile(a, user.as_deref(), now).await?;
        }
        // Profiles created in `join` but also named again later are touched above.
        for a in self.waiting.keys() {
            if !self.touched.contains_key(a) {
                tx.touch_profile(a, None, now).await?;
            }
        }
        let waiting: Vec<(String, NewEvent)> = self
            .waiting
            .drain()
            .flat_map(|(a, list)| list.into_iter().map(move |e| (a.clone(), e)))
            .collect();
        let mut taken = std::mem::take(&mut self.taken);
        if !waiting.is_empty() {
            taken.extend(tx.insert_anonymous_events(waiting, now).await?);
        }
        Ok(taken)
    }
}
