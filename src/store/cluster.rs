//! The cluster tables on PostgreSQL: who takes part (`cluster_members`, with a
//! heartbeat), which daemon holds which lead shard (`shard_leases`), and the check every
//! processing write makes that its daemon still holds the shards it works on.
//!
//! Times are the database server's (`clock_timestamp()`), so the daemons' clocks do not
//! have to agree. These statements run on the reading pool, apart from the writer
//! lock: a heartbeat never waits for a batch of results.

use sqlx::postgres::PgPool;

use super::{Db, Store, StoreError, Tx, WriteTx};

/// The database server's time in milliseconds since 1970.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A daemon of the cluster as it reported itself.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct MemberRow {
    pub daemon: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub http_addr: String,
}

/// Who holds a shard, until when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ShardRow {
    pub shard: i32,
    pub holder: Option<String>,
    pub expires_at: i64,
}

/// The cluster tables disagree with this daemon's `cluster.shards`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster.shards is {configured} here, but the daemons running on this database use \
     {running}; give every daemon the same cluster.shards (or stop them all to change it)"
)]
pub struct ShardsDiffer {
    pub configured: u32,
    pub running: u32,
}

fn sql(text: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text.replace("{NOW}", NOW_MS))
}

impl Store {
    fn pg(&self) -> Result<&PgPool, StoreError> {
        match &*self.db {
            Db::Postgres { pool } => Ok(pool),
            Db::Sqlite { .. } => Err(StoreError::Db(sqlx::Error::Configuration(
                "several daemons on one database need PostgreSQL".into(),
            ))),
        }
    }

    /// The database server's time in milliseconds.
    pub async fn cluster_now(&self) -> Result<i64, StoreError> {
        let (now,): (i64,) = sqlx::query_as(sql("SELECT {NOW}"))
            .fetch_one(self.pg()?)
            .await?;
        Ok(now)
    }

    /// Makes sure `shards` shard rows exist. When the table holds another number of
    /// shards: renumbers it if no shard is held by a live daemon, else refuses.
    pub async fn prepare_shards(
        &self,
        shards: u32,
    ) -> Result<Result<(), ShardsDiffer>, StoreError> {
        let pool = self.pg()?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('nurtured.shards'))")
            .execute(&mut *tx)
            .await?;
        let (count, held): (i64, i64) = sqlx::query_as(sql(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE holder IS NOT NULL AND expires_at > {NOW}) \
             FROM shard_leases",
        ))
        .fetch_one(&mut *tx)
        .await?;
        if count != i64::from(shards) {
            if held > 0 {
                return Ok(Err(ShardsDiffer {
                    configured: shards,
                    running: count as u32,
                }));
            }
            sqlx::query("DELETE FROM shard_leases")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO shard_leases (shard) SELECT s FROM generate_series(0, $1 - 1) AS s",
            )
            .bind(shards as i32)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Reports `daemon` alive (and adds it on its first heartbeat).
    pub async fn heartbeat(
        &self,
        daemon: &str,
        started_at: i64,
        http_addr: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql(
            "INSERT INTO cluster_members (daemon, started_at, heartbeat_at, http_addr) \
             VALUES ($1, $2, {NOW}, $3) ON CONFLICT (daemon) DO UPDATE SET \
             heartbeat_at = excluded.heartbeat_at, started_at = excluded.started_at, \
             http_addr = excluded.http_addr",
        ))
        .bind(daemon)
        .bind(started_at)
        .bind(http_addr)
        .execute(self.pg()?)
        .await?;
        Ok(())
    }

    /// The daemons, with the database's time now; members silent for longer than a
    /// day are forgotten.
    pub async fn members(&self) -> Result<(Vec<MemberRow>, i64), StoreError> {
        let pool = self.pg()?;
        sqlx::query(sql(
            "DELETE FROM cluster_members WHERE heartbeat_at < {NOW} - 86400000",
        ))
        .execute(pool)
        .await?;
        let rows: Vec<MemberRow> = sqlx::query_as(
            "SELECT daemon, started_at, heartbeat_at, http_addr FROM cluster_members \
             ORDER BY daemon",
        )
        .fetch_all(pool)
        .await?;
        Ok((rows, self.cluster_now().await?))
    }

    /// Every shard with its holder.
    pub async fn shards(&self) -> Result<Vec<ShardRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT shard, holder, expires_at FROM shard_leases ORDER BY shard")
                .fetch_all(self.pg()?)
                .await?,
        )
    }

    /// Takes those of `shards` that are free, expired or already `holder`'s, for
    /// `ttl_ms`; returns the shards `holder` holds now among them.
    pub async fn claim_shards(
        &self,
        holder: &str,
        shards: &[i32],
        ttl_ms: i64,
    ) -> Result<Vec<i32>, StoreError> {
        let rows: Vec<(i32,)> = sqlx::query_as(sql(
            "UPDATE shard_leases SET holder = $1, expires_at = {NOW} + $2 \
             WHERE shard = ANY($3) AND (holder IS NULL OR holder = $1 OR expires_at < {NOW}) \
             RETURNING shard",
        ))
        .bind(holder)
        .bind(ttl_ms)
        .bind(shards)
        .fetch_all(self.pg()?)
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// Extends every shard `holder` still holds; returns them.
    pub async fn renew_shards(&self, holder: &str, ttl_ms: i64) -> Result<Vec<i32>, StoreError> {
        let rows: Vec<(i32,)> = sqlx::query_as(sql(
            "UPDATE shard_leases SET expires_at = {NOW} + $2 WHERE holder = $1 RETURNING shard",
        ))
        .bind(holder)
        .bind(ttl_ms)
        .fetch_all(self.pg()?)
        .await?;
        let mut shards: Vec<i32> = rows.into_iter().map(|(s,)| s).collect();
        shards.sort_unstable();
        Ok(shards)
    }

    /// Gives `shards` up (after nothing works on them here any more).
    pub async fn release_shards(&self, holder: &str, shards: &[i32]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE shard_leases SET holder = NULL, expires_at = 0 \
             WHERE holder = $1 AND shard = ANY($2)",
        )
        .bind(holder)
        .bind(shards)
        .execute(self.pg()?)
        .await?;
        Ok(())
    }

    /// Leaves the cluster: gives up every shard and the membership.
    pub async fn leave_cluster(&self, daemon: &str) -> Result<(), StoreError> {
        let pool = self.pg()?;
        sqlx::query("UPDATE shard_leases SET holder = NULL, expires_at = 0 WHERE holder = $1")
            .bind(daemon)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM cluster_members WHERE daemon = $1")
            .bind(daemon)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Pending events per shard (for the cluster view of `/v1/stats`).
    pub async fn pending_by_shard(&self, shards: u32) -> Result<Vec<(i32, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT (e.lead_id % $1)::int AS shard, COUNT(*) FROM event_queue q \
             JOIN events e ON e.seq = q.seq GROUP BY 1 ORDER BY 1",
        )
        .bind(i64::from(shards))
        .fetch_all(self.pg()?)
        .await?)
    }
}

impl WriteTx {
    /// Checks, inside this transaction, that `holder` still holds every one of
    /// `shards`, and extends them. Every processing write of a daemon in a cluster does
    /// this: a daemon whose shards were taken over can never commit for them.
    pub async fn hold_shards(
        &mut self,
        holder: &str,
        shards: &[i32],
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let Tx::Postgres(tx) = &mut self.tx else {
            return Err(StoreError::LeaseLost);
        };
        let done = sqlx::query(sql(
            "UPDATE shard_leases SET expires_at = {NOW} + $2 WHERE holder = $1 AND shard = ANY($3)",
        ))
        .bind(holder)
        .bind(ttl_ms)
        .bind(shards)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if done == shards.len() as u64 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    /// Counts up the version of each lead `(id, version read)` in this transaction;
    /// fails with [`StoreError::LeadChanged`] when any was written since it was read
    /// (by another daemon of the cluster). Only PostgreSQL has other writers.
    pub async fn claim_versions(&mut self, leads: &[(i64, i64)]) -> Result<(), StoreError> {
        let Tx::Postgres(tx) = &mut self.tx else {
            return Ok(());
        };
        if leads.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = leads.iter().map(|(id, _)| *id).collect();
        let versions: Vec<i64> = leads.iter().map(|(_, v)| *v).collect();
        let changed: Vec<(i64,)> = sqlx::query_as(
            "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS v(id, version)), \
             bumped AS (UPDATE leads l SET version = l.version + 1 FROM v \
                        WHERE l.id = v.id AND l.version = v.version RETURNING l.id) \
             SELECT v.id FROM v WHERE v.id NOT IN (SELECT id FROM bumped) \
             AND EXISTS (SELECT 1 FROM leads l WHERE l.id = v.id)",
        )
        .bind(&ids)
        .bind(&versions)
        .fetch_all(&mut **tx)
        .await?;
        if changed.is_empty() {
            Ok(())
        } else {
            Err(StoreError::LeadChanged(
                changed.into_iter().map(|(id,)| id).collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::{Email, Lead};
    use crate::store::build;
    use crate::store::testing::{fresh_postgres, postgres_server};

    /// A store on a fresh PostgreSQL database, when the tests have a server.
    async fn postgres() -> Option<Store> {
        let server = postgres_server()?;
        Some(Store::open(&fresh_postgres(&server)).await.unwrap())
    }

    #[tokio::test]
    async fn a_shard_taken_over_cannot_be_written_for_by_its_old_holder() {
        let Some(store) = postgres().await else {
            return;
        };
        store.prepare_shards(4).await.unwrap().unwrap();
        assert_eq!(
            store.claim_shards("a", &[0, 1], 60_000).await.unwrap(),
            [0, 1]
        );
        // Held and not expired: nobody else gets it.
        assert!(
            store
                .claim_shards("b", &[1], 60_000)
                .await
                .unwrap()
                .is_empty()
        );
        let mut tx = store.begin_write().await.unwrap();
        tx.hold_shards("a", &[0, 1], 60_000).await.unwrap();
        tx.commit().await.unwrap();

        // `a` falls silent; its lease runs out and `b` takes shard 1.
        store.claim_shards("a", &[1], -1).await.unwrap();
        assert_eq!(store.claim_shards("b", &[1], 60_000).await.unwrap(), [1]);
        let mut tx = store.begin_write().await.unwrap();
        assert!(matches!(
            tx.hold_shards("a", &[0, 1], 60_000).await,
            Err(StoreError::LeaseLost)
        ));
        drop(tx);
        assert_eq!(store.renew_shards("a", 60_000).await.unwrap(), [0]);

        // Another shard count is refused while shards are held, taken once none is.
        assert!(store.prepare_shards(8).await.unwrap().is_err());
        store.release_shards("a", &[0]).await.unwrap();
        store.leave_cluster("b").await.unwrap();
        store.prepare_shards(8).await.unwrap().unwrap();
        assert_eq!(store.shards().await.unwrap().len(), 8);
    }

    #[tokio::test]
    async fn a_lead_written_meanwhile_is_not_written_over() {
        let Some(store) = postgres().await else {
            return;
        };
        let lead = Lead::new(7, Email::parse("v@x.example").unwrap(), "lead", Utc::now());
        let mut tx = store.begin_write().await.unwrap();
        tx.execute(build::leads(store.dialect(), &[(&lead, 0)]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // Two daemons read version 0; the first to write counts it up to 1.
        let mut tx = store.begin_write().await.unwrap();
        tx.claim_versions(&[(7, 0)]).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        match tx.claim_versions(&[(7, 0)]).await {
            Err(StoreError::LeadChanged(ids)) => assert_eq!(ids, [7]),
            other => panic!("{other:?}"),
        }
        drop(tx);
        let read = store.leads_by_ids(&[7]).await.unwrap().remove(&7).unwrap();
        assert_eq!(read.version, 1);
        // A lead that is gone is no conflict.
        let mut tx = store.begin_write().await.unwrap();
        tx.claim_versions(&[(7, 1), (99, 0)]).await.unwrap();
        tx.commit().await.unwrap();
    }
}
