//! The event run (the default mode): the generated event mix in `/v1/batch` requests
//! from several connections against a child daemon that writes mail to files. Measures
//! ingest (every request answered, so committed), end to end (every event processed,
//! read from GET /v1/stats), the daemon's memory over time and at its peak, database
//! bytes per event, and the sales desk's backlog when the last event was processed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::client::batch_body;
use super::daemon::{Daemon, MailTo};
use super::report::{Figures, ms, percentile};
use super::{BenchArgs, Rng, event};
use crate::config::Config;

/// GET /v1/stats costs the daemon a few counting queries, so it is read at most once a
/// second, and more often only towards the end, to catch the moment the last event is
/// processed (or the last handoff assigned) within a few percent of what is left.
const POLL_MAX: Duration = Duration::from_secs(1);
const POLL_MIN: Duration = Duration::from_millis(50);
/// How long the sales desk may take to give every handoff an owner after the last event.
const DESK_LIMIT: Duration = Duration::from_secs(600);

/// When to read the counters next: in half the time that `left` items take at
/// `per_sec`, within [`POLL_MIN`] and [`POLL_MAX`].
fn next_poll(left: u64, per_sec: f64) -> Duration {
    if per_sec <= 0.0 {
        return POLL_MAX;
    }
    Duration::from_secs_f64(left as f64 / per_sec / 2.0).clamp(POLL_MIN, POLL_MAX)
}

/// The request bodies of a run, made before the daemon starts.
pub fn bodies(args: &BenchArgs, leads: usize) -> Vec<Bytes> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..args.events.div_ceil(args.batch))
        .map(|i| {
            let end = ((i + 1) * args.batch).min(args.events);
            let events: Vec<Value> = (i * args.batch..end)
                .map(|j| event(j, leads, &mut rng))
                .collect();
            batch_body(&events)
        })
        .collect()
}

pub async fn run(
    config: &Config,
    args: &BenchArgs,
    leads: usize,
    connections: usize,
    bodies: Arc<Vec<Bytes>>,
) -> anyhow::Result<Figures> {
    let events = args.events as u64;
    let daemon = Daemon::start(config, MailTo::Files, args.postgres.as_deref()).await?;
    let rss_start = daemon.rss_mib();
    println!(
        "daemon: pid {}, RSS {rss_start:.0} MiB after start; {} events for {leads} leads, {} per request, {connections} connections",
        daemon.pid, args.events, args.batch
    );
    let api = daemon.api.clone();
    let cpu_start = daemon.cpu_secs();
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        let latencies = api.post_all(bodies, connections).await;
        (latencies, started.elapsed())
    });
    let mut sending = Some(sending);
    let mut ingest = None;
    let mut latencies = Vec::new();
    let mut marks: Vec<(u64, f64)> = Vec::new();
    let mut next_line = Duration::from_secs(1);
    let mut polls = Vec::new();
    let mut before = (Duration::ZERO, 0);
    println!("   time   received  processed  handoffs waiting  daemon RSS");
    let (total, last) = loop {
        if sending.as_ref().is_some_and(|s| s.is_finished())
            && let Some(s) = sending.take()
        {
            let (l, took) = s.await?;
            latencies = l?;
            ingest = Some(took);
        }
        let asked = Instant::now();
        let s = daemon.api.queue().await?;
        polls.push(asked.elapsed());
        let done = s.events_processed + s.events_failed;
        let now = started.elapsed();
        if now >= next_line {
            println!(
                "{:>6.1}s {:>10} {:>10} {:>17} {:>7.0} MiB",
                now.as_secs_f64(),
                s.events_received,
                done,
                s.handoffs_waiting,
                daemon.rss_mib()
            );
            next_line += Duration::from_secs(1);
        }
        while marks.len() < 4 && done >= events * (marks.len() as u64 + 1) / 4 {
            marks.push(((marks.len() as u64 + 1) * 25, daemon.rss_mib()));
        }
        if ingest.is_some() && s.settled(events) {
            break (now, s);
        }
        let wait = if ingest.is_some() {
            let rate = (done - before.1) as f64 / (now - before.0).as_secs_f64();
            next_poll(events.saturating_sub(done), rate)
        } else {
            POLL_MAX
        };
        before = (now, done);
        tokio::time::sleep(wait.min(next_line.saturating_sub(now)).max(POLL_MIN)).await;
    };
    let cpu = daemon.cpu_secs() - cpu_start;
    let threads = daemon.cpu_by_thread();
    let ingest = ingest.unwrap_or(total);
    // The desk may still be handing leads to sales.
    let backlog = last.handoffs_waiting;
    let desk_started = Instant::now();
    let mut end = last.clone();
    while end.handoffs_waiting > 0 && desk_started.elapsed() < DESK_LIMIT {
        let assigned = backlog.saturating_sub(end.handoffs_waiting);
        let rate = assigned as f64 / desk_started.elapsed().as_secs_f64();
        tokio::time::sleep(if assigned == 0 {
            POLL_MIN * 4
        } else {
            next_poll(end.handoffs_waiting, rate)
        })
        .await;
        let asked = Instant::now();
        end = daemon.api.queue().await?;
        polls.push(asked.elapsed());
    }
    let counts = daemon.api.stats().await?;
    let drained = (end.handoffs_waiting == 0).then(|| desk_started.elapsed());
    let peak = daemon.peak_rss_mib();
    let (db_file, db_wal) = daemon.database_bytes().await?;
    let db_bytes = db_file + db_wal;
    latencies.sort();
    polls.sort();

    println!();
    println!(
        "ingest (all requests answered, committed): {:>8.0} events/s ({:.2} s)",
        events as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64()
    );
    println!(
        "end to end (all events processed):         {:>8.0} events/s ({:.2} s)",
        events as f64 / total.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "request latency ({} events each): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        args.batch,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "daemon CPU time until the last event was processed: {cpu:.1} s ({:.2} cores on average, {:.0} events per CPU second)",
        cpu / total.as_secs_f64(),
        events as f64 / cpu
    );
    println!(
        "  by thread (since start): {}",
        threads
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "daemon RSS: {rss_start:.0} MiB at start, peak {peak:.0} MiB (VmHWM); {}",
        marks
            .iter()
            .map(|(pct, rss)| format!("{rss:.0} MiB at {pct}% processed"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let parts = if args.postgres.is_some() {
        "pg_database_size".to_string()
    } else {
        format!("file {db_file} + WAL {db_wal}")
    };
    println!(
        "database: {db_bytes} bytes ({parts}), {:.0} bytes per event",
        db_bytes as f64 / events as f64
    );
    println!(
        "handoffs waiting for an owner when the last event was processed: {backlog}; {}",
        match drained {
            Some(d) => format!("none {:.2} s later", d.as_secs_f64()),
            None => format!(
                "{} still waiting {:.0} s later",
                end.handoffs_waiting,
                DESK_LIMIT.as_secs_f64()
            ),
        }
    );
    println!(
        "events: {} received, {} processed, {} failed; leads {}; mails: {}",
        counts.events_received,
        counts.events_processed,
        counts.events_failed,
        counts.leads,
        counts.mails_line()
    );
    println!("stages: {}", counts.stages_line());
    println!(
        "GET /v1/stats/queue read {} times, p50 {:.1} ms, max {:.1} ms",
        polls.len(),
        ms(percentile(&polls, 0.5)),
        ms(polls.last().copied().unwrap_or_default())
    );
    let stopped = daemon.stop().await?;
    println!("shutdown (SIGTERM until exit): {}", stopped.describe());

    let mut f = Figures::default();
    f.add(
        "ingest",
        events as f64 / ingest.as_secs_f64(),
        "events/s",
        0,
    );
    f.add(
        "end to end",
        events as f64 / total.as_secs_f64(),
        "events/s",
        0,
    );
    f.add("daemon CPU time", cpu, "s", 1);
    f.add("daemon RSS at start", rss_start, "MiB", 0);
    f.add("daemon peak RSS", peak, "MiB", 0);
    f.add(
        "database per event",
        db_bytes as f64 / events as f64,
        "bytes",
        0,
    );
    f.add("handoffs waiting at the end", backlog as f64, "", 0);
    f.add(
        "until none waits",
        drained.map_or(f64::NAN, |d| d.as_secs_f64()),
        "s",
        2,
    );
    f.add("shutdown", stopped.took.as_secs_f64(), "s", 2);
    Ok(f)
}
