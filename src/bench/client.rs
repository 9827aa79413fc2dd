//! The bench's side of the HTTP API: posting event batches from several connections
//! (to one daemon or round-robin to several), reading GET /v1/stats and
//! /v1/stats/queue, and waiting until the daemon has processed what it got.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

/// The counters of GET /v1/stats the bench reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    pub events_received: u64,
    pub events_processed: u64,
    pub events_failed: u64,
    pub leads: u64,
    pub stages: BTreeMap<String, u64>,
    pub handoffs_waiting: u64,
    pub mails_queued: u64,
    pub mails_sent: u64,
    pub mails_failed: u64,
    pub mails_suppressed: u64,
    /// Only on PostgreSQL, where every daemon is a cluster member.
    #[serde(default)]
    pub cluster: Option<ClusterSeen>,
}

/// The `cluster` object of GET /v1/stats, as far as the bench reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSeen {
    pub shards: u32,
    pub members: Vec<MemberSeen>,
}

/// A cluster member: its name and the shards it holds.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberSeen {
    pub daemon: String,
    pub shards: Vec<i32>,
}

impl ClusterSeen {
    /// Every one of `names` holds shards, and together they hold all of them.
    pub fn shared_out(&self, names: &[String]) -> bool {
        let held = |name: &String| self.members.iter().find(|m| &m.daemon == name);
        let mut all: Vec<i32> = Vec::new();
        for name in names {
            match held(name) {
                Some(m) if !m.shards.is_empty() => all.extend(&m.shards),
                _ => return false,
            }
        }
        all.sort_unstable();
        all.dedup();
        all.len() == self.shards as usize
    }

    /// How many shards each member holds, as `name count` pairs.
    pub fn split_line(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{} {}", m.daemon, m.shards.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Stats {
    pub fn stage(&self, name: &str) -> u64 {
        self.stages.get(name).copied().unwrap_or(0)
    }

    pub fn stages_line(&self) -> String {
        self.stages
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn mails_line(&self) -> String {
        format!(
            "{} sent, {} queued, {} suppressed, {} failed",
            self.mails_sent, self.mails_queued, self.mails_suppressed, self.mails_failed
        )
    }
}

/// The counters of GET /v1/stats/queue the bench polls while it waits (cheap for the
/// daemon, unlike the counts over all leads and mails of GET /v1/stats).
#[derive(Debug, Clone, Deserialize)]
pub struct Queue {
    pub events_received: u64,
    pub events_processed: u64,
    pub events_pending: u64,
    pub events_failed: u64,
    pub handoffs_waiting: u64,
}

impl Queue {
    /// Every received event is processed (or failed).
    pub fn settled(&self, received: u64) -> bool {
        self.events_pending == 0 && self.events_received >= received
    }
}

/// A client of one daemon.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()?,
            base: base.to_string(),
            token: token.to_string(),
        })
    }

    pub async fn healthy(&self) -> bool {
        match self.http.get(format!("{}/healthz", self.base)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    pub async fn stats(&self) -> anyhow::Result<Stats> {
        self.get("/v1/stats").await
    }

    pub async fn queue(&self) -> anyhow::Result<Queue> {
        self.get("/v1/stats/queue").await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).with_context(|| format!("GET {path} answered {text}"))
    }

    /// Posts a ready body to /v1/batch; fails unless the daemon answers 2xx.
    pub async fn post_body(&self, body: Bytes) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/batch", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /v1/batch")?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "POST /v1/batch: {status} {text}");
        Ok(())
    }

    /// Posts `events` in batches of `batch`, one request after the other.
    pub async fn post_events(&self, events: &[Value], batch: usize) -> anyhow::Result<()> {
        for chunk in events.chunks(batch.max(1)) {
            self.post_body(batch_body(chunk)).await?;
        }
        Ok(())
    }

    /// Sends `bodies` to this daemon over `connections` connections at once (see
    /// [`post_round_robin`]). Returns each request's latency.
    pub async fn post_all(
        &self,
        bodies: Arc<Vec<Bytes>>,
        connections: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        post_round_robin(std::slice::from_ref(self), bodies, connections).await
    }

    /// Polls GET /v1/stats/queue until `done` holds; fails after `limit`.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        every: Duration,
        done: impl Fn(&Queue) -> bool,
    ) -> anyhow::Result<Queue> {
        let started = Instant::now();
        loop {
            let s = self.queue().await?;
            if done(&s) {
                return Ok(s);
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "{what}: not done after {limit:?}: {s:?}"
            );
            tokio::time::sleep(every).await;
        }
    }
}

/// Sends `bodies` over `connections` connections at once, each taking the next body
/// when its request is answered. Body `i` goes to daemon `i` modulo the number of
/// `daemons`, so each gets the same share. Returns each request's latency.
pub async fn post_round_robin(
    daemons: &[Api],
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
) -> anyhow::Result<Vec<Duration>> {
    anyhow::ensure!(!daemons.is_empty(), "no daemon to send to");
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..connections.max(1) {
        let targets = sender_of(daemons)?;
        let (bodies, next) = (bodies.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i).cloned() else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let t = Instant::now();
                targets[i % targets.len()]
                    .post_body(body)
                    .await
                    .with_context(|| format!("request {i}"))?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for s in senders {
        latencies.extend(s.await??);
    }
    Ok(latencies)
}

/// The daemons as one sender sees them: a client of its own, keeping one connection
/// alive to each daemon.
fn sender_of(daemons: &[Api]) -> anyhow::Result<Vec<Api>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(1)
        .build()?;
    Ok(daemons
        .iter()
        .map(|api| Api {
            http: http.clone(),
            ..api.clone()
        })
        .collect())
}

/// A /v1/batch body.
pub fn batch_body(events: &[Value]) -> Bytes {
    Bytes::from(json!({ "batch": events }).to_string())
}
