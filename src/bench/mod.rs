//! `nurtured bench`: end-to-end throughput. Starts a daemon on a fresh SQLite file in a
//! temporary folder with the configured rules, posts generated events to the real HTTP
//! API in batches from several connections, and measures until every event is
//! processed. Prints rates, request latencies and memory along the way. Mail goes to
//! a local SMTP server ([`crate::smtp_sink`]); `--mails` measures mail on its own
//! ([`mail`]).

mod mail;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::daemon::{self, App};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Events to send in all (identify calls for each lead included)
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Distinct leads
    #[arg(long, default_value_t = 10_000)]
    pub leads: usize,
    /// Events per /v1/batch request
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent HTTP connections
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Measure mail instead: this many trigger mails as fast as they go, then the
    /// event-to-SMTP latency at --rate events/s for --seconds
    #[arg(long, default_value_t = 0)]
    pub mails: usize,
    /// Events per second in the latency run (each one triggers a mail)
    #[arg(long, default_value_t = 1000)]
    pub rate: usize,
    /// Length of the latency run
    #[arg(long, default_value_t = 10)]
    pub seconds: usize,
}

/// A small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TITLES: [&str; 6] = [
    "Head of Marketing",
    "Marketing Manager",
    "CEO",
    "Werkstudent",
    "IT-Leiter",
    "Sales Director",
];
const TOPICS: [&str; 5] = ["crm", "automation", "scoring", "analytics", "email"];

/// The i-th generated event.
fn event(i: usize, leads: usize, rng: &mut Rng) -> Value {
    let lead = i % leads;
    let email = format!("lead{lead}@bench{}.example.com", lead % 97);
    let ts = chrono::Utc::now().to_rfc3339();
    if i < leads {
        return json!({
            "type": "identify", "userId": email, "messageId": format!("bench-{i}"), "timestamp": ts,
            "traits": {
                "email": email, "firstName": "Lea", "lastName": format!("Nummer{lead}"),
                "phone": if lead.is_multiple_of(3) { Value::Null } else { json!("+49 30 123456") },
                "company": format!("Firma {}", lead % 500), "employees": (lead % 7) * 90 + 5,
                "title": TITLES[lead % TITLES.len()], "industry": "Software",
                "consent_email": true
            }
        });
    }
    let base = json!({"userId": email, "messageId": format!("bench-{i}"), "timestamp": ts});
    let mut v = base;
    match rng.below(10) {
        0..=2 => {
            v["type"] = json!("track");
            v["event"] = json!("Content Downloaded");
            v["properties"] = json!({"asset": "Whitepaper", "topic": TOPICS[rng.below(TOPICS.len())], "type": "whitepaper"});
        }
        3 => {
            v["type"] = json!("track");
            v["event"] = json!(if rng.below(2) == 0 {
                "Webinar Registered"
            } else {
                "Webinar Attended"
            });
            v["properties"] = json!({"webinar": "Lead Scoring 101"});
        }
        4 => {
            v["type"] = json!("track");
            v["event"] = json!("Email Clicked");
            v["properties"] = json!({"campaign": "newsletter"});
        }
        _ => {
            let (name, url) = [
                ("Blog", "https://example.com/blog/lead-nurturing"),
                ("Pricing", "https://example.com/pricing"),
                ("Case Study", "https://example.com/case-studies/acme"),
                ("Landing", "https://example.com/lp/webinar"),
            ][rng.below(4)];
            v["type"] = json!("page");
            v["name"] = json!(name);
            v["properties"] = json!({"url": url});
        }
    }
    v
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(mut config: Config, args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    // Mail goes to a local SMTP server that only counts, never to the data folder.
    let sink =
        crate::smtp_sink::SmtpSink::start_on(std::net::TcpListener::bind("127.0.0.1:0")?, false)?;
    config.mail.transport =
        crate::config::mail::TransportConfig::Smtp(format!("smtp://127.0.0.1:{}", sink.port));
    if args.mails > 0 {
        return mail::run(config, &args, sink).await;
    }
    anyhow::ensure!(
        args.leads > 0 && args.events >= args.leads,
        "--events must be at least --leads"
    );
    let dir = tempfile::tempdir()?;
    config.database_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.schedules.clear();
    let token = config.api_token.clone();
    let clock: SharedClock = Arc::new(SystemClock);
    let app = App::build(config, clock).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let running = daemon::start(app, listener).await?;
    let base = format!("http://{}/v1/batch", running.addr);

    println!(
        "nurtured bench: {} events for {} leads, {} per request, {} connections",
        args.events, args.leads, args.batch, args.connections
    );
    println!(
        "machine: {} x {}, rules from {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        running.app.config.rules_dir.display()
    );
    // The request bodies are made before the clock starts, so the client spends as little
    // of the machine as possible while measuring (they stay in memory: the memory
    // figures below include them, so watch how memory grows, not where it starts).
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..args.events.div_ceil(args.batch))
            .map(|i| {
                let end = ((i + 1) * args.batch).min(args.events);
                let events: Vec<Value> = (i * args.batch..end)
                    .map(|j| event(j, args.leads, &mut rng))
                    .collect();
                bytes::Bytes::from(json!({ "batch": events }).to_string())
            })
            .collect(),
    );
    let rss_start = rss_mib();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        let (client, bodies, next, base, token) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            base.clone(),
            token.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i).cloned() else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let t = Instant::now();
                let resp = client
                    .post(&base)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                let text = resp.text().await?;
                anyhow::ensure!(status.is_success(), "request {i} failed: {status} {text}");
                latencies.push(t.elapsed());
            }
        }));
    }

    // Watch progress while sending.
    let store = running.app.store().clone();
    let mut marks = Vec::new();
    let mut next_mark = 1;
    let mut ingest_done = None;
    let mut latencies = Vec::new();
    let mut pending_senders = senders;
    let mut next_report = Duration::from_secs(1);
    println!("  time   received  processed    RSS");
    loop {
        if ingest_done.is_none() && pending_senders.iter().all(|s| s.is_finished()) {
            for s in pending_senders.drain(..) {
                latencies.extend(s.await??);
            }
            ingest_done = Some(started.elapsed());
        }
        let counts = store.event_counts().await?;
        let done = counts.events_processed + counts.events_failed;
        if started.elapsed() >= next_report {
            println!(
                "{:>5.1}s {:>10} {:>10} {:>5.0} MiB",
                started.elapsed().as_secs_f64(),
                counts.events_received,
                done,
                rss_mib()
            );
            next_report += Duration::from_secs(1);
        }
        while next_mark <= 4 && done as usize >= args.events * next_mark / 4 {
            marks.push((next_mark * 25, done, rss_mib()));
            next_mark += 1;
        }
        if ingest_done.is_some() && counts.events_pending == 0 && done as usize >= args.events {
            break;
        }
        // Counting pending events costs the database time too; look rarely.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    let ingest = ingest_done.unwrap_or(total);
    latencies.sort();
    let counts = store.event_counts().await?;
    let stages = store.stage_counts().await?;
    println!();
    println!(
        "ingest (HTTP, committed): {:>9.0} events/s  ({:.2} s)",
        args.events as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64()
    );
    println!(
        "end to end (processed):   {:>9.0} events/s  ({:.2} s)",
        args.events as f64 / total.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "request latency ({} events each): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        args.batch,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!("memory (RSS, whole process incl. client): start {rss_start:.0} MiB");
    for (pct, done, rss) in &marks {
        println!("  {pct:>3}% processed ({done:>8} events): {rss:.0} MiB");
    }
    println!(
        "events: {} received, {} processed, {} failed",
        counts.events_received, counts.events_processed, counts.events_failed
    );
    let mails = store.mail_counts().await?;
    println!(
        "mails: {} sent, {} queued, {} suppressed {:?}, {} failed; {} at the SMTP server",
        mails.mails_sent,
        mails.mails_queued,
        mails.mails_suppressed,
        mails.suppressed_by_reason,
        mails.mails_failed,
        sink.count()
    );
    println!(
        "stages: {}",
        stages
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    running.stop().await;
    Ok(std::process::ExitCode::SUCCESS)
}
