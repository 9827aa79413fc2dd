//! The processing lease: one process at a time works the event queue of a database,
//! so events of a lead are processed in order and lead state has one writer.
//!
//! The daemon holds the lease while it runs and renews it; a CLI command that finds it
//! free processes the queue itself. A holder that died on this host is taken over at
//! once; one on another host after the lease expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Store, StoreError, in_tx, is_pg, sql};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

const NAME: &str = "processor";

/// A held lease; renew it more often than [`LEASE_TTL`] and release it when done.
#[derive(Debug, Clone)]
pub struct Lease {
    holder: String,
    /// How long it lasts without renewal, in milliseconds.
    ttl_ms: i64,
}

/// What a processing write checks in its transaction: the processing lease (one daemon
/// on the database), or the lead shards of a daemon in a cluster.
#[derive(Debug, Clone)]
pub enum Fence {
    Lease(Lease),
    Shards {
        holder: String,
        shards: std::sync::Arc<Vec<i32>>,
        ttl_ms: i64,
    },
}

impl Lease {
    /// Who holds it: `host:pid:tag`.
    pub fn holder(&self) -> &str {
        &self.holder
    }
}

/// The lease is held by another live process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "another nurtured process ({holder}) is processing events for this database; \
     stop it first, or let it do the work"
)]
pub struct LeaseHeld {
    pub holder: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// True when `holder` names a process on this host that no longer runs.
fn holder_is_dead(holder: &str) -> bool {
    let Some((pid, host)) = holder.split_once('@') else {
        return false;
    };
    let Some((pid, _)) = pid.split_once(':').or(Some((pid, ""))) else {
        return false;
    };
    host == hostname()
        && pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
}

impl Store {
    /// Takes the processing lease for this process, or says who holds it.
    /// `tag` tells holders in one process apart (e.g. a test running two daemons).
    pub async fn acquire_lease(&self, tag: &str) -> Result<Result<Lease, LeaseHeld>, StoreError> {
        let holder = format!("{}:{tag}@{}", std::process::id(), hostname());
        self.acquire_lease_as(holder, LEASE_TTL).await
    }

    /// Takes the processing lease as `holder` for `ttl` (the leader of a cluster).
    pub async fn acquire_lease_as(
        &self,
        holder: String,
        ttl: Duration,
    ) -> Result<Result<Lease, LeaseHeld>, StoreError> {
        let ttl_ms = ttl.as_millis() as i64;
        let mut tx = self.begin_write().await?;
        let current: Option<(String, i64)> = in_tx!(tx, |tx, DB| {
            if is_pg::<DB>() {
                // Other processes take the lease at the same time: one at a time.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('nurtured.leases'))")
                    .execute(&mut **tx)
                    .await?;
            }
            sqlx::query_as(sql::<DB>(
                "SELECT holder, expires_at FROM leases WHERE name = ?",
            ))
            .bind(NAME)
            .fetch_optional(&mut **tx)
            .await?
        });
        let now = tx.lease_clock().await?;
        let free = match &current {
            None => true,
            Some((h, expires)) => *h == holder || *expires < now || holder_is_dead(h),
        };
        if !free {
            return Ok(Err(LeaseHeld {
                holder: current.map(|(h, _)| h).unwrap_or_default(),
            }));
        }
        in_tx!(tx, |tx, DB| {
            sqlx::query(sql::<DB>(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at",
            ))
            .bind(NAME)
            .bind(&holder)
            .bind(now + ttl_ms)
            .execute(&mut **tx)
            .await?;
        });
        tx.commit().await?;
        Ok(Ok(Lease { holder, ttl_ms }))
    }

    /// Who holds the processing lease now (not expired), if anyone.
    pub async fn lease_holder(&self) -> Result<Option<String>, StoreError> {
        let row: Option<(String, i64, i64)> = super::read!(self, |pool, DB| {
            sqlx::query_as(sql::<DB>(if is_pg::<DB>() {
                "SELECT holder, expires_at, \
                 (extract(epoch from clock_timestamp()) * 1000)::bigint \
                 FROM leases WHERE name = ?"
            } else {
                "SELECT holder, expires_at, 0 FROM leases WHERE name = ?"
            }))
            .bind(NAME)
            .fetch_optional(pool)
            .await?
        });
        Ok(row
            .filter(|(_, exp, db_now)| *exp >= if *db_now > 0 { *db_now } else { now_ms() })
            .map(|(h, _, _)| h))
    }

    /// Extends the lease; false when it was lost to another process.
    pub async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        match tx.hold_lease(lease).await {
            Ok(()) => {
                tx.commit().await?;
                Ok(true)
            }
            Err(StoreError::LeaseLost) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (after processing stopped).
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        in_tx!(tx, |tx, DB| {
            sqlx::query(sql::<DB>(
                "DELETE FROM leases WHERE name = ? AND holder = ?",
            ))
            .bind(NAME)
            .bind(&lease.holder)
            .execute(&mut **tx)
            .await?;
        });
        tx.commit().await?;
        Ok(())
    }
}

impl super::WriteTx {
    /// The time leases are measured in, in milliseconds: the database server's on
    /// PostgreSQL (shared by the daemons of a cluster, whatever their hosts' clocks
    /// say), this host's on SQLite.
    async fn lease_clock(&mut self) -> Result<i64, StoreError> {
        Ok(in_tx!(self, |tx, DB| {
            if is_pg::<DB>() {
                let (now,): (i64,) =
                    sqlx::query_as("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
                        .fetch_one(&mut **tx)
                        .await?;
                now
            } else {
                now_ms()
            }
        }))
    }

    /// Checks `fence` in this transaction (see [`WriteTx::hold_lease`] and
    /// [`WriteTx::hold_shards`]).
    pub async fn hold(&mut self, fence: &Fence) -> Result<(), StoreError> {
        match fence {
            Fence::Lease(lease) => self.hold_lease(lease).await,
            Fence::Shards {
                holder,
                shards,
                ttl_ms,
            } => self.hold_shards(holder, shards, *ttl_ms).await,
        }
    }

    /// Checks, inside this transaction, that `lease` is still held, and extends it.
    /// Every processing write does this, so a process that lost the lease can never
    /// commit: two processes never apply the same events.
    pub async fn hold_lease(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let done = in_tx!(self, |tx, DB| {
            // PostgreSQL: by the database server's clock, which all daemons share.
            sqlx::query(sql::<DB>(if is_pg::<DB>() {
                "UPDATE leases SET expires_at = \
                 (extract(epoch from clock_timestamp()) * 1000)::bigint + ? \
                 WHERE name = ? AND holder = ?"
            } else {
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?"
            }))
            .bind(if is_pg::<DB>() {
                lease.ttl_ms
            } else {
                now_ms() + lease.ttl_ms
            })
            .bind(NAME)
            .bind(&lease.holder)
            .execute(&mut **tx)
            .await?
            .rows_affected()
        });
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }
}
