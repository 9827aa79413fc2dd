//! The daemons of one event run: a single daemon on a fresh SQLite file, or N
//! `nurtured run` processes on one fresh PostgreSQL database, a cluster (see
//! `crate::cluster`) whose members are named `bench-1` to `bench-N`, each in a folder
//! of its own on a port of its own. The run starts when every daemon answers /healthz
//! and the shards are shared out. Mail goes to files: the leader (as a rule `bench-1`,
//! the first to start) sends all of it, into its own folder.

use std::time::{Duration, Instant};

use super::Setup;
use super::client::Api;
use super::daemon::{Daemon, MailTo, Stopped};
use crate::config::Config;

/// How often the shard split is read while the daemons share the shards out.
const SHARE_POLL: Duration = Duration::from_millis(100);

/// The running daemons of a run; the first one answers for the database.
pub struct Fleet {
    pub daemons: Vec<Daemon>,
    /// The daemons' cluster names (empty on SQLite).
    pub names: Vec<String>,
}

impl Fleet {
    /// Starts the daemons `setup` asks for, one after the other (the first one leads).
    pub async fn start(
        config: &Config,
        setup: Setup,
        postgres: Option<&str>,
    ) -> anyhow::Result<Self> {
        let Setup::Postgres(count) = setup else {
            let daemon = Daemon::start(config, MailTo::Files, None).await?;
            return Ok(Self {
                daemons: vec![daemon],
                names: Vec::new(),
            });
        };
        let server = postgres.ok_or_else(|| anyhow::anyhow!("no PostgreSQL server given"))?;
        let url = crate::store::testing::fresh_postgres(server);
        let names: Vec<String> = (1..=count).map(|k| format!("bench-{k}")).collect();
        let mut daemons = Vec::new();
        for name in &names {
            daemons.push(Daemon::start_member(config, MailTo::Files, &url, name).await?);
        }
        Ok(Self { daemons, names })
    }

    /// The daemon that answers for all: its database and counters are everyone's.
    pub fn first(&self) -> &Daemon {
        &self.daemons[0]
    }

    pub fn apis(&self) -> Vec<Api> {
        self.daemons.iter().map(|d| d.api.clone()).collect()
    }

    /// The name of the `i`-th daemon as the report shows it.
    pub fn name(&self, i: usize) -> String {
        self.names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("daemon {}", i + 1))
    }

    /// Waits until every daemon holds shards and all of them are held, at most
    /// `limit`. Returns how long that took and how the shards split, or `None` for the
    /// time when they were not shared out by then. Nothing to wait for on SQLite.
    pub async fn wait_shared(&self, limit: Duration) -> anyhow::Result<(Option<Duration>, String)> {
        if self.names.is_empty() {
            return Ok((Some(Duration::ZERO), String::new()));
        }
        let started = Instant::now();
        loop {
            let cluster = self.first().api.stats().await?.cluster;
            let split = cluster.as_ref().map_or(String::new(), |c| c.split_line());
            if cluster.is_some_and(|c| c.shared_out(&self.names)) {
                return Ok((Some(started.elapsed()), split));
            }
            if started.elapsed() >= limit {
                return Ok((None, split));
            }
            tokio::time::sleep(SHARE_POLL).await;
        }
    }

    /// Resident memory of all daemons now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.daemons.iter().map(Daemon::rss_mib).sum()
    }

    /// Each daemon's peak resident memory so far, in MiB.
    pub fn peaks_mib(&self) -> Vec<f64> {
        self.daemons.iter().map(Daemon::peak_rss_mib).collect()
    }

    /// CPU time all daemons used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.daemons.iter().map(Daemon::cpu_secs).sum()
    }

    /// Sends SIGTERM to every daemon at once and waits for each to exit.
    pub async fn stop(self) -> anyhow::Result<Vec<Stopped>> {
        let stopping: Vec<_> = self
            .daemons
            .into_iter()
            .map(|d| tokio::spawn(d.stop()))
            .collect();
        let mut stopped = Vec::new();
        for s in stopping {
            stopped.push(s.await??);
        }
        Ok(stopped)
    }
}
