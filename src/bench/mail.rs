//! `nurtured bench --mails N`: mail on its own. First N trigger mails (one pricing-page
//! view each, for N consenting leads) as fast as they go: rendered, signed, sent to a
//! local SMTP server over pooled connections. Then the event-to-SMTP latency at a
//! steady rate: `--rate` events per second for `--seconds`, each triggering a mail,
//! timed from the moment the request is sent to the moment the server has the mail.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{BenchArgs, cpu_model, percentile};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::daemon::{self, Running};
use crate::smtp_sink::SmtpSink;

fn email(run: &str, i: usize) -> String {
    format!("{run}{i}@mailbench{}.example.com", i % 97)
}

fn identify(run: &str, i: usize) -> Value {
    let e = email(run, i);
    json!({"type": "identify", "userId": e, "messageId": format!("{run}-id-{i}"),
           "traits": {"email": e, "firstName": "Lea", "lastName": format!("Nummer{i}"),
                      "company": "Firma", "consent_email": true, "consent_source": "bench"}})
}

fn pricing(run: &str, i: usize) -> Value {
    json!({"type": "page", "userId": email(run, i), "messageId": format!("{run}-pv-{i}"),
           "name": "Preise", "properties": {"url": "https://example.com/preise"}})
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    async fn post(&self, events: Vec<Value>) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "batch": events }))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "{status}: {}", resp.text().await?);
        Ok(())
    }

    /// Creates `n` consenting leads and waits until they are processed.
    async fn leads(&self, running: &Running, run: &str, n: usize) -> anyhow::Result<()> {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            self.post(chunk.iter().map(|&i| identify(run, i)).collect())
                .await?;
        }
        while running.app.store().event_counts().await?.events_pending > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

async fn wait_for(sink: &SmtpSink, n: usize, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while sink.count() < n {
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {} of {n} mails arrived within {limit:?}",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub async fn run(
    mut config: Config,
    args: &BenchArgs,
    sink: SmtpSink,
) -> anyhow::Result<std::process::ExitCode> {
    let dir = tempfile::tempdir()?;
    config.database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.schedules.clear();
    // Every lead gets one trigger mail, so the frequency cap holds none back; it stays
    // on, as its check is part of the cost of sending.
    let token = config.api_token.clone();
    let connections = config.mail.connections;
    let clock: SharedClock = Arc::new(SystemClock);
    let app = crate::daemon::App::build(config, clock).await?;
    let running = daemon::start(app, TcpListener::bind("127.0.0.1:0").await?).await?;
    let client = Client {
        http: reqwest::Client::new(),
        url: format!("http://{}/v1/batch", running.addr),
        token,
    };
    println!(
        "nurtured bench --mails: {} mails, then {} events/s for {} s; {} SMTP connections",
        args.mails, args.rate, args.seconds, connections
    );
    println!(
        "machine: {} x {}; SMTP server: mailin-embedded on loopback, in this process",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );

    // 1. Throughput.
    client.leads(&running, "t", args.mails).await?;
    let before = sink.count();
    let started = Instant::now();
    for chunk in (0..args.mails).collect::<Vec<_>>().chunks(500) {
        client
            .post(chunk.iter().map(|&i| pricing("t", i)).collect())
            .await?;
    }
    let posted = started.elapsed();
    wait_for(&sink, before + args.mails, Duration::from_secs(600)).await?;
    let total = started.elapsed();
    let arrivals: Vec<Instant> = sink.arrivals()[before..].iter().map(|(_, t)| *t).collect();
    let first = arrivals.iter().min().copied().unwrap_or(started);
    let last = arrivals.iter().max().copied().unwrap_or(started);
    let smtp_span = last.duration_since(first).max(Duration::from_millis(1));
    println!();
    println!(
        "throughput: {} mails; events posted in {:.2} s",
        args.mails,
        posted.as_secs_f64()
    );
    println!(
        "  at the SMTP server, first to last mail: {:>7.0} mails/s ({:.2} s)",
        args.mails as f64 / smtp_span.as_secs_f64(),
        smtp_span.as_secs_f64()
    );
    println!(
        "  end to end, first event to last mail:  {:>7.0} mails/s ({:.2} s)",
        args.mails as f64 / total.as_secs_f64(),
        total.as_secs_f64()
    );

    // 2. Latency at a steady rate: a request every 10 ms with rate/100 events, each
    // for a lead that has had no mail yet.
    let n = args.rate * args.seconds;
    client.leads(&running, "l", n).await?;
    let before = sink.count();
    let per_tick = (args.rate / 100).max(1);
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        tick.tick().await;
        let end = (i + per_tick).min(n);
        let now = Instant::now();
        for j in i..end {
            sent_at.insert(email("l", j), now);
        }
        client
            .post((i..end).map(|j| pricing("l", j)).collect())
            .await?;
        i = end;
    }
    let sending = started.elapsed();
    wait_for(&sink, before + n, Duration::from_secs(120)).await?;
    let mut latencies: Vec<Duration> = sink.arrivals()[before..]
        .iter()
        .filter_map(|(to, at)| sent_at.get(to).map(|s| at.duration_since(*s)))
        .collect();
    latencies.sort();
    println!();
    println!(
        "latency: {} events at {:.0} events/s (one trigger mail each), request sent -> mail at the SMTP server",
        n,
        n as f64 / sending.as_secs_f64()
    );
    println!(
        "  p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} mails)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        latencies.len()
    );
    let counts = running.app.store().mail_counts().await?;
    println!(
        "mails: {} sent, {} queued, {} suppressed {:?}, {} failed",
        counts.mails_sent,
        counts.mails_queued,
        counts.mails_suppressed,
        counts.suppressed_by_reason,
        counts.mails_failed
    );
    running.stop().await;
    Ok(std::process::ExitCode::SUCCESS)
}
