//! Several daemons on one PostgreSQL database.
//!
//! Leads are split into `cluster.shards` shards (lead id modulo the number). Every
//! daemon reports in with a heartbeat every quarter of `cluster.lease_timeout`; the
//! daemons alive, sorted by name, share the shards out (shard `i` to daemon `i mod n`),
//! so each one computes the same split without talking to the others. A daemon takes
//! its shards once they are free or expired, and gives up shards that are no longer
//! its own only after its pipeline stopped working on them; a daemon that died keeps
//! its shards until their leases expire, then the others take them.
//!
//! Each daemon processes the events of the leads in its shards; every processing write
//! checks in its transaction that the daemon still holds those shards
//! ([`crate::store::Fence::Shards`]). One daemon, the leader, holds the processing
//! lease as well (with `cluster.lease_timeout`) and runs what is done once for the
//! whole base: the mailer, the sales desk, webhook calls and schedules. Lead writes
//! outside event processing (the stage API, handoff answers, the desk) check the
//! lead's version, so any daemon can make them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::process::Processor;
use crate::store::cluster::{MemberRow, ShardRow, ShardsDiffer};
use crate::store::{Fence, Store, StoreError};

/// This daemon's part in a cluster.
pub struct Cluster {
    /// This daemon's name (unique among the daemons of the database).
    pub name: String,
    pub shards: u32,
    pub lease_timeout: Duration,
    store: Store,
    http_addr: String,
    started_at: i64,
    /// The shards this daemon may process now.
    owned: watch::Sender<Arc<Vec<i32>>>,
    /// The shards the pipeline works on now (it keeps them until it stopped).
    working: std::sync::Mutex<Arc<Vec<i32>>>,
}

/// A daemon as `/v1/stats` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub daemon: String,
    pub http_addr: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Milliseconds since its last heartbeat (by the database's clock).
    pub heartbeat_age_ms: i64,
    pub alive: bool,
    pub leader: bool,
    pub shards: Vec<i32>,
    /// Events waiting in its shards.
    pub backlog: i64,
}

/// The cluster as `/v1/stats` and `nurtured stats` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    /// This daemon (absent for the command line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this: Option<String>,
    pub shards: u32,
    pub lease_timeout_ms: u64,
    pub leader: Option<String>,
    pub members: Vec<MemberView>,
    /// Events waiting in shards nobody holds.
    pub backlog_unheld: i64,
}

/// The default name of a daemon: `pid@host`.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{}@{host}", std::process::id())
}

impl Cluster {
    pub fn new(config: &config::Cluster, store: Store, http_addr: SocketAddr) -> Self {
        let name = if config.name.is_empty() {
            default_name()
        } else {
            config.name.clone()
        };
        Self {
            name,
            shards: config.shards,
            lease_timeout: config.lease_timeout,
            store,
            http_addr: http_addr.to_string(),
            started_at: crate::clock::to_ms(chrono::Utc::now()),
            owned: watch::Sender::new(Arc::new(Vec::new())),
            working: std::sync::Mutex::new(Arc::new(Vec::new())),
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.lease_timeout.as_millis() as i64
    }

    /// How often this daemon reports in and renews its shards.
    pub fn heartbeat_every(&self) -> Duration {
        self.lease_timeout / 4
    }

    /// The shard of a lead.
    pub fn shard_of(&self, lead_id: i64) -> i32 {
        lead_id.rem_euclid(i64::from(self.shards)) as i32
    }

    /// Follows the shards this daemon may process.
    pub fn owned(&self) -> watch::Receiver<Arc<Vec<i32>>> {
        self.owned.subscribe()
    }

    /// The pipeline says which shards it works on (empty: none, it stopped).
    pub fn set_working(&self, shards: Arc<Vec<i32>>) {
        *self.working.lock().unwrap_or_else(|e| e.into_inner()) = shards;
    }

    fn working(&self) -> Arc<Vec<i32>> {
        self.working
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What a write for `shards` checks.
    pub fn fence(&self, shards: Arc<Vec<i32>>) -> Fence {
        Fence::Shards {
            holder: self.name.clone(),
            shards,
            ttl_ms: self.ttl_ms(),
        }
    }

    /// Joins: makes sure the shards exist (refusing another shard count than the
    /// running daemons use) and reports in.
    pub async fn join(&self) -> Result<Result<(), ShardsDiffer>, StoreError> {
        if let Err(e) = self.store.prepare_shards(self.shards).await? {
            return Ok(Err(e));
        }
        self.store
            .heartbeat(&self.name, self.started_at, &self.http_addr)
            .await?;
        Ok(Ok(()))
    }

    /// One round: report in, renew what is held, give up what is no longer this
    /// daemon's (once the pipeline let go of it), take what is free, and keep or take
    /// the leader's lease.
    pub async fn tick(&self, processor: &Processor) -> Result<(), StoreError> {
        self.store
            .heartbeat(&self.name, self.started_at, &self.http_addr)
            .await?;
        let (members, now) = self.store.members().await?;
        let alive = alive(&members, now, self.ttl_ms());
        let mine: BTreeSet<i32> = (0..self.shards as i32)
            .filter(|s| alive.get(*s as usize % alive.len().max(1)) == Some(&self.name.as_str()))
            .collect();
        let held = self.renew().await?;
        // Shards to hand over: once the pipeline works on them no more.
        let working: BTreeSet<i32> = self.working().iter().copied().collect();
        let leaving: Vec<i32> = held
            .iter()
            .filter(|s| !mine.contains(s) && !working.contains(s))
            .copied()
            .collect();
        if !leaving.is_empty() {
            self.store.release_shards(&self.name, &leaving).await?;
            tracing::info!(shards = ?leaving, "shards handed over to another daemon");
        }
        let wanted: Vec<i32> = mine.difference(&held).copied().collect();
        let taken = if wanted.is_empty() {
            Vec::new()
        } else {
            self.store
                .claim_shards(&self.name, &wanted, self.ttl_ms())
                .await?
        };
        if !taken.is_empty() {
            tracing::info!(shards = ?taken, "shards taken");
        }
        let owned: Vec<i32> = held
            .intersection(&mine)
            .copied()
            .chain(taken)
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .collect();
        self.owned.send_if_modified(|o| {
            if **o == owned {
                false
            } else {
                *o = Arc::new(owned);
                true
            }
        });
        self.lead(processor).await
    }

    /// Keeps the leader's lease, or takes it when it is free.
    async fn lead(&self, processor: &Processor) -> Result<(), StoreError> {
        if processor.held_lease().is_ok() {
            if !processor.renew_lease().await? {
                processor.forget_lease();
                tracing::warn!("lost the leader's lease to another daemon");
            }
            return Ok(());
        }
        if let Ok(lease) = self
            .store
            .acquire_lease_as(self.name.clone(), self.lease_timeout)
            .await?
        {
            processor.set_lease(lease);
            tracing::info!("this daemon leads now: mail, sales desk, webhooks and schedules");
            processor.mail_wake.notify_one();
            processor.handoff_wake.notify_one();
        }
        Ok(())
    }

    /// Extends the shards this daemon still holds; returns them.
    async fn renew(&self) -> Result<BTreeSet<i32>, StoreError> {
        Ok(self
            .store
            .renew_shards(&self.name, self.ttl_ms())
            .await?
            .into_iter()
            .collect())
    }

    /// After a write found a shard gone: keeps only the shards still held.
    pub async fn recheck(&self) -> Result<(), StoreError> {
        let held = self.renew().await?;
        self.owned.send_if_modified(|o| {
            let kept: Vec<i32> = o.iter().copied().filter(|s| held.contains(s)).collect();
            if kept.len() == o.len() {
                false
            } else {
                *o = Arc::new(kept);
                true
            }
        });
        Ok(())
    }

    /// Reports in until `shutdown`.
    pub async fn run(self: Arc<Self>, processor: Arc<Processor>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        // A heartbeat every quarter of the timeout, however long a round takes.
        let mut every = tokio::time::interval(self.heartbeat_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            match self.tick(&processor).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "cluster heartbeat failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
        }
    }

    /// Leaves the cluster after processing stopped: the others take the shards at once.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.owned.send_replace(Arc::new(Vec::new()));
        self.store.leave_cluster(&self.name).await
    }
}

/// The names of the daemons alive, sorted.
fn alive(members: &[MemberRow], now: i64, ttl_ms: i64) -> Vec<&str> {
    let mut names: Vec<&str> = members
        .iter()
        .filter(|m| m.heartbeat_at > now - ttl_ms)
        .map(|m| m.daemon.as_str())
        .collect();
    names.sort_unstable();
    names
}

/// The cluster of the database behind `store`; `this` names the asking daemon.
pub async fn view(
    store: &Store,
    shards: u32,
    lease_timeout: Duration,
    this: Option<&str>,
) -> Result<ClusterView, StoreError> {
    let (members, now) = store.members().await?;
    let rows: Vec<ShardRow> = store.shards().await?;
    let pending = store.pending_by_shard(shards).await?;
    let leader = store.lease_holder().await?;
    let ttl = lease_timeout.as_millis() as i64;
    let backlog_of = |held: &[i32]| -> i64 {
        pending
            .iter()
            .filter(|(s, _)| held.contains(s))
            .map(|(_, n)| n)
            .sum()
    };
    let held_by = |name: &str| -> Vec<i32> {
        rows.iter()
            .filter(|r| r.holder.as_deref() == Some(name) && r.expires_at > now)
            .map(|r| r.shard)
            .collect()
    };
    let views: Vec<MemberView> = members
        .iter()
        .map(|m| {
            let held = held_by(&m.daemon);
            MemberView {
                daemon: m.daemon.clone(),
                http_addr: m.http_addr.clone(),
                started_at: crate::store::rfc3339(m.started_at),
                heartbeat_at: crate::store::rfc3339(m.heartbeat_at),
                heartbeat_age_ms: now - m.heartbeat_at,
                alive: m.heartbeat_at > now - ttl,
                leader: leader.as_deref() == Some(m.daemon.as_str()),
                backlog: backlog_of(&held),
                shards: held,
            }
        })
        .collect();
    let held: Vec<i32> = views.iter().flat_map(|v| v.shards.clone()).collect();
    let unheld: Vec<i32> = (0..shards as i32).filter(|s| !held.contains(s)).collect();
    Ok(ClusterView {
        this: this.map(str::to_string),
        shards,
        lease_timeout_ms: lease_timeout.as_millis() as u64,
        leader,
        members: views,
        backlog_unheld: backlog_of(&unheld),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, heartbeat_at: i64) -> MemberRow {
        MemberRow {
            daemon: name.into(),
            started_at: 0,
            heartbeat_at,
            http_addr: String::new(),
        }
    }

    #[test]
    fn only_daemons_heard_from_within_the_timeout_share_the_shards() {
        let members = [member("c", 9_000), member("a", 10_000), member("b", 1_000)];
        assert_eq!(alive(&members, 10_500, 2_000), vec!["a", "c"]);
        assert_eq!(alive(&members, 20_000, 2_000), Vec::<&str>::new());
    }
}
