//! Anonymous visitors and company groups: events that name only an `anonymousId`
//! wait here, outside the event queue, until their profile is joined to a lead; groups
//! keep their latest traits and their members. Profiles never joined are deleted after
//! a cutoff ([`Store::delete_anonymous_before`]).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{FromRow, QueryBuilder};

use super::{Store, StoreError, WriteTx, in_tx, read, rows_per_statement, sql};
use crate::clock::{from_ms, to_ms};
use crate::store::NewEvent;

/// An anonymous profile as intake needs it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ProfileRow {
    pub anonymous_id: String,
    /// A userId the visitor was named by before a lead had it.
    pub user_id: Option<String>,
    /// The lead it is joined to.
    pub lead_id: Option<i64>,
}

/// A stored anonymous event, taken out of the waiting table by a join.
#[derive(Debug, Clone, FromRow)]
struct WaitingRow {
    message_id: String,
    kind: String,
    name: String,
    properties: String,
    traits: Option<String>,
    context: Option<String>,
    occurred_at: i64,
    history: bool,
}

/// What a join took over: the waiting events, oldest first, and the groups the
/// visitor had joined (id, traits JSON).
#[derive(Debug, Default)]
pub struct Joined {
    pub events: Vec<NewEvent>,
    pub groups: Vec<(String, String)>,
}

/// An anonymous profile with its waiting events, for `GET` views and tests.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct ProfileSummary {
    pub anonymous_id: String,
    pub user_id: Option<String>,
    pub lead_id: Option<i64>,
    pub waiting_events: i64,
}

fn kind_of(kind: &str) -> &'static str {
    match kind {
        "identify" => "identify",
        "page" => "page",
        _ => "track",
    }
}

impl WriteTx {
    /// The profiles with one of `anonymous_ids`, or not joined yet and named by one of
    /// `user_ids`.
    pub async fn anonymous_profiles(
        &mut self,
        anonymous_ids: &[String],
        user_ids: &[String],
    ) -> Result<Vec<ProfileRow>, StoreError> {
        let mut out = Vec::new();
        for (column, values) in [("anonymous_id", anonymous_ids), ("user_id", user_ids)] {
            for chunk in values.chunks(rows_per_statement(1)) {
                in_tx!(self, |tx, DB| {
                    let mut q = QueryBuilder::<DB>::new(format!(
                        "SELECT anonymous_id, user_id, lead_id FROM anonymous_profiles \
                         WHERE {column} IN ("
                    ));
                    let mut sep = q.separated(", ");
                    for v in chunk {
                        sep.push_bind(v.clone());
                    }
                    q.push(")");
                    if column == "user_id" {
                        q.push(" AND lead_id IS NULL");
                    }
                    out.extend(
                        q.build_query_as::<ProfileRow>()
                            .persistent(false)
                            .fetch_all(&mut **tx)
                            .await?,
                    );
                });
            }
        }
        Ok(out)
    }

    /// Creates the profile or notes that it was seen again; remembers `user_id` if it
    /// has none.
    pub async fn touch_profile(
        &mut self,
        anonymous_id: &str,
        user_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ms = to_ms(at);
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO anonymous_profiles (anonymous_id, user_id, first_seen, last_seen) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (anonymous_id) DO UPDATE SET \
                 last_seen = excluded.last_seen, \
                 user_id = COALESCE(anonymous_profiles.user_id, excluded.user_id)",
            ))
            .bind(anonymous_id)
            .bind(user_id)
            .bind(ms)
            .bind(ms)
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }

    /// Stores events of anonymous visitors (whose profiles exist); an event whose
    /// `message_id` is already waiting is skipped. Returns the message ids stored.
    pub async fn insert_anonymous_events(
        &mut self,
        events: Vec<(String, NewEvent)>,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let received = to_ms(received_at);
        let mut new = Vec::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<(String, NewEvent)> =
                events.by_ref().take(rows_per_statement(10)).collect();
            in_tx!(self, |tx, DB| {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO anonymous_events (message_id, anonymous_id, kind, name, \
                     properties, traits, context, occurred_at, received_at, history) ",
                );
                q.push_values(chunk, |mut b, (anonymous_id, e)| {
                    b.push_bind(e.message_id)
                        .push_bind(anonymous_id)
                        .push_bind(e.kind)
                        .push_bind(e.name)
                        .push_bind(e.properties)
                        .push_bind(e.traits)
                        .push_bind(e.context)
                        .push_bind(to_ms(e.occurred_at))
                        .push_bind(received)
                        .push_bind(e.history);
                });
                q.push(" ON CONFLICT (message_id) DO NOTHING RETURNING message_id");
                let rows: Vec<(String,)> = q
                    .build_query_as()
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?;
                new.extend(rows.into_iter().map(|(m,)| m));
            });
        }
        Ok(new)
    }

    /// Gives a lead a new userId (an `alias` from its previous one); the caller made
    /// sure no lead has it.
    pub async fn replace_external_id(
        &mut self,
        lead_id: i64,
        external_id: &str,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>("UPDATE leads SET external_id = ? WHERE id = ?"))
                .bind(external_id)
                .bind(lead_id)
                .execute(&mut **tx)
                .await?;
        });
        Ok(())
    }

    /// Records a profile seen for the first time with its lead (nothing of it waits).
    pub async fn add_joined_profile(
        &mut self,
        anonymous_id: &str,
        lead_id: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ms = to_ms(at);
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO anonymous_profiles \
                 (anonymous_id, lead_id, first_seen, last_seen, joined_at) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (anonymous_id) DO NOTHING",
            ))
            .bind(anonymous_id)
            .bind(lead_id)
            .bind(ms)
            .bind(ms)
            .bind(ms)
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }

    /// Joins an anonymous profile to a lead (creating it joined when it does not
    /// exist): takes its waiting events out, oldest first, and turns its group
    /// memberships into the lead's. A profile joined already keeps its lead and gives
    /// nothing.
    pub async fn join_profile(
        &mut self,
        anonymous_id: &str,
        lead_id: i64,
        at: DateTime<Utc>,
    ) -> Result<Joined, StoreError> {
        let ms = to_ms(at);
        let claimed: Option<(String,)> = in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO anonymous_profiles (anonymous_id, first_seen, last_seen) \
                 VALUES (?, ?, ?) ON CONFLICT (anonymous_id) DO NOTHING",
            ))
            .bind(anonymous_id)
            .bind(ms)
            .bind(ms)
            .execute(&mut **tx)
            .await?;
            sqlx::query_as(sql::<DB>(
                "UPDATE anonymous_profiles SET lead_id = ?, joined_at = ?, last_seen = ? \
                 WHERE anonymous_id = ? AND lead_id IS NULL RETURNING anonymous_id",
            ))
            .bind(lead_id)
            .bind(ms)
            .bind(ms)
            .bind(anonymous_id)
            .fetch_optional(&mut **tx)
            .await?
        });
        if claimed.is_none() {
            return Ok(Joined::default());
        }
        let (mut waiting, groups): (Vec<WaitingRow>, Vec<(String, String)>) =
            in_tx!(self, |tx, DB| {
                let waiting = sqlx::query_as(sql::<DB>(
                    "DELETE FROM anonymous_events WHERE anonymous_id = ? \
                     RETURNING message_id, kind, name, properties, traits, context, occurred_at, \
                     history",
                ))
                .bind(anonymous_id)
                .fetch_all(&mut **tx)
                .await?;
                // A lead in a group already keeps its one membership.
                sqlx::query(sql::<DB>(
                    "DELETE FROM group_members WHERE anonymous_id = ? AND group_id IN \
                     (SELECT group_id FROM group_members WHERE lead_id = ?)",
                ))
                .bind(anonymous_id)
                .bind(lead_id)
                .execute(&mut **tx)
                .await?;
                let groups = sqlx::query_as(sql::<DB>(
                    "SELECT g.group_id, g.traits FROM group_members m \
                     JOIN company_groups g ON g.group_id = m.group_id \
                     WHERE m.anonymous_id = ? ORDER BY g.group_id",
                ))
                .bind(anonymous_id)
                .fetch_all(&mut **tx)
                .await?;
                sqlx::query(sql::<DB>(
                    "UPDATE group_members SET lead_id = ?, anonymous_id = NULL \
                     WHERE anonymous_id = ?",
                ))
                .bind(lead_id)
                .bind(anonymous_id)
                .execute(&mut **tx)
                .await?;
                (waiting, groups)
            });
        waiting.sort_by(|a, b| (a.occurred_at, &a.message_id).cmp(&(b.occurred_at, &b.message_id)));
        Ok(Joined {
            events: waiting
                .into_iter()
                .map(|w| NewEvent {
                    message_id: w.message_id,
                    kind: kind_of(&w.kind),
                    name: w.name,
                    properties: w.properties,
                    traits: w.traits,
                    context: w.context,
                    occurred_at: from_ms(w.occurred_at),
                    // A visitor's events taken in as history stay history when joined.
                    history: w.history,
                })
                .collect(),
            groups,
        })
    }

    /// Stores a group's traits, the new ones over the ones it had; returns the merged
    /// traits (JSON object).
    pub async fn update_group(
        &mut self,
        group_id: &str,
        traits: &str,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let old: Option<(String,)> = in_tx!(self, |tx, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT traits FROM company_groups WHERE group_id = ?",
            ))
            .bind(group_id)
            .fetch_optional(&mut **tx)
            .await?
        });
        let mut merged: Map<String, Value> = old
            .and_then(|(t,)| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if let Ok(Value::Object(new)) = serde_json::from_str::<Value>(traits) {
            merged.extend(new);
        }
        let merged = Value::Object(merged).to_string();
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO company_groups (group_id, traits, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (group_id) DO UPDATE SET traits = excluded.traits, \
                 updated_at = excluded.updated_at",
            ))
            .bind(group_id)
            .bind(&merged)
            .bind(to_ms(at))
            .execute(&mut **tx)
            .await?;
        });
        Ok(merged)
    }

    /// Adds a member (a lead, or an anonymous profile) to a group that exists; a
    /// member already in it stays once.
    pub async fn add_group_member(
        &mut self,
        group_id: &str,
        lead_id: Option<i64>,
        anonymous_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO group_members (group_id, lead_id, anonymous_id, joined_at) \
                 VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            ))
            .bind(group_id)
            .bind(lead_id)
            .bind(anonymous_id)
            .bind(to_ms(at))
            .execute(&mut **tx)
            .await?;
        });
        Ok(())
    }

    /// The leads in a group.
    pub async fn group_member_leads(&mut self, group_id: &str) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = in_tx!(self, |tx, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT lead_id FROM group_members WHERE group_id = ? AND lead_id IS NOT NULL \
                 ORDER BY lead_id",
            ))
            .bind(group_id)
            .fetch_all(&mut **tx)
            .await?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}

impl Store {
    /// Deletes the anonymous profiles never joined to a lead and last seen before
    /// `cutoff`, with their waiting events and group memberships. Returns how many
    /// profiles went.
    pub async fn delete_anonymous_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let ms = to_ms(cutoff);
        let mut tx = self.begin_write().await?;
        let n = in_tx!(tx, |tx, DB| {
            let events = sqlx::query(sql::<DB>(
                "DELETE FROM anonymous_events WHERE anonymous_id IN (SELECT anonymous_id \
                 FROM anonymous_profiles WHERE lead_id IS NULL AND last_seen < ?)",
            ))
            .bind(ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            // The event counts go on as if these had never been received (else they
            // would count as processed).
            sqlx::query(sql::<DB>(
                "UPDATE counters SET value = value - ? WHERE name = 'events_received'",
            ))
            .bind(events as i64)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql::<DB>(
                "DELETE FROM group_members WHERE anonymous_id IN (SELECT anonymous_id \
                 FROM anonymous_profiles WHERE lead_id IS NULL AND last_seen < ?)",
            ))
            .bind(ms)
            .execute(&mut **tx)
            .await?;
            sqlx::query(sql::<DB>(
                "DELETE FROM anonymous_profiles WHERE lead_id IS NULL AND last_seen < ?",
            ))
            .bind(ms)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(n)
    }

    /// An anonymous profile with the number of its waiting events.
    pub async fn anonymous_profile(
        &self,
        anonymous_id: &str,
    ) -> Result<Option<ProfileSummary>, StoreError> {
        Ok(read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT p.anonymous_id, p.user_id, p.lead_id, \
                 (SELECT COUNT(*) FROM anonymous_events e WHERE e.anonymous_id = p.anonymous_id) \
                 AS waiting_events \
                 FROM anonymous_profiles p WHERE p.anonymous_id = ?",
            ))
            .bind(anonymous_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// The group ids a lead belongs to, in order.
    pub async fn groups_of_lead(&self, lead_id: i64) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(
                "SELECT group_id FROM group_members WHERE lead_id = ? ORDER BY group_id",
            ))
            .bind(lead_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|(g,)| g).collect())
    }
}
