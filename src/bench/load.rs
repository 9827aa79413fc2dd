//! The event run (the default mode): the generated event mix in `/v1/batch` requests
//! from several connections against child daemons that write mail to files: one, or
//! with `--daemons N` N cluster members on one PostgreSQL database ([`Fleet`]), the
//! requests going round-robin to them. Measures ingest (every request answered, so
//! committed), end to end (every event processed, read from GET /v1/stats/queue, which
//! counts the whole database), the daemons' memory over time and at their peaks (each
//! and the sum), database bytes per event, and the sales desk's backlog when the last
//! event was processed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::client::{Queue, batch_body, post_round_robin};
use super::daemon::{Daemon, Stopped};
use super::fleet::Fleet;
use super::report::{Figures, ms, percentile};
use super::{BenchArgs, Rng, Setup, event};
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

/// What the daemons did while the events came in.
struct Progress {
    /// Until every request was answered.
    ingest: Duration,
    /// Until every event was processed.
    total: Duration,
    last: Queue,
    latencies: Vec<Duration>,
    /// The daemons' RSS (summed) at 25, 50, 75 and 100 % processed.
    marks: Vec<(u64, f64)>,
    /// How long each GET /v1/stats/queue took.
    polls: Vec<Duration>,
}

/// The sales desk after the last event: the handoffs waiting then, how many still
/// wait, and how long until none did.
struct Desk {
    backlog: u64,
    end: Queue,
    drained: Option<Duration>,
}

pub async fn run(
    config: &Config,
    args: &BenchArgs,
    setup: Setup,
    leads: usize,
    connections: usize,
    bodies: Arc<Vec<Bytes>>,
) -> anyhow::Result<Figures> {
    let fleet = Fleet::start(config, setup, args.postgres.as_deref()).await?;
    let rss_start: Vec<f64> = fleet.daemons.iter().map(Daemon::rss_mib).collect();
    announce(&fleet, &rss_start, args, leads, connections);
    wait_shared(&fleet, config).await?;
    let cpu_start = fleet.cpu_secs();
    let mut progress = drive(&fleet, bodies, connections, args.events as u64).await?;
    let cpu = fleet.cpu_secs() - cpu_start;
    let threads: Vec<Vec<(String, f64)>> =
        fleet.daemons.iter().map(Daemon::cpu_by_thread).collect();
    let desk = drain_desk(&fleet, &progress.last, &mut progress.polls).await?;
    let peaks = fleet.peaks_mib();
    let (db_file, db_wal) = fleet.first().database_bytes().await?;
    progress.latencies.sort();
    progress.polls.sort();

    println!();
    print_rates(args, &progress, cpu);
    print_threads(&fleet, &threads);
    print_memory(&fleet, &rss_start, &peaks, &progress.marks);
    print_database(args, setup, db_file, db_wal);
    print_desk(&desk);
    let counts = fleet.first().api.stats().await?;
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
        progress.polls.len(),
        ms(percentile(&progress.polls, 0.5)),
        ms(progress.polls.last().copied().unwrap_or_default())
    );
    let names: Vec<String> = (0..fleet.daemons.len()).map(|i| fleet.name(i)).collect();
    let members = fleet.names.clone();
    let stopped = fleet.stop().await?;
    print_shutdown(&names, &stopped);

    let mut f = Figures::default();
    let events = args.events as f64;
    f.add(
        "ingest",
        events / progress.ingest.as_secs_f64(),
        "events/s",
        0,
    );
    f.add(
        "end to end",
        events / progress.total.as_secs_f64(),
        "events/s",
        0,
    );
    f.add("daemon CPU time", cpu, "s", 1);
    f.add("daemon RSS at start", rss_start.iter().sum(), "MiB", 0);
    f.add("daemon peak RSS", peaks.iter().sum(), "MiB", 0);
    // Each cluster member's own peak; on SQLite the one daemon's is the line above.
    for (name, peak) in members.iter().zip(&peaks) {
        f.add(format!("  {name} peak RSS"), *peak, "MiB", 0);
    }
    f.add(
        "database per event",
        (db_file + db_wal) as f64 / events,
        "bytes",
        0,
    );
    f.add("handoffs waiting at the end", desk.backlog as f64, "", 0);
    f.add(
        "until none waits",
        desk.drained.map_or(f64::NAN, |d| d.as_secs_f64()),
        "s",
        2,
    );
    let longest = stopped.iter().map(|s| s.took).max().unwrap_or_default();
    f.add("shutdown", longest.as_secs_f64(), "s", 2);
    Ok(f)
}

/// The daemons as they start: pid, address, memory, and what they get.
fn announce(fleet: &Fleet, rss_start: &[f64], args: &BenchArgs, leads: usize, connections: usize) {
    let load = format!(
        "{} events for {leads} leads, {} per request, {connections} connections",
        args.events, args.batch
    );
    if let [daemon] = fleet.daemons.as_slice() {
        println!(
            "daemon: pid {}, RSS {:.0} MiB after start; {load}",
            daemon.pid, rss_start[0]
        );
        return;
    }
    for (i, daemon) in fleet.daemons.iter().enumerate() {
        println!(
            "daemon {}: pid {}, {}, RSS {:.0} MiB after start",
            fleet.name(i),
            daemon.pid,
            daemon.api.base,
            rss_start[i]
        );
    }
    println!(
        "{load}, round-robin over the {} daemons",
        fleet.daemons.len()
    );
}

/// Waits until the daemons have shared the shards out (at most twice the lease
/// timeout: a new member takes its shards within two heartbeats) and says how they
/// split.
async fn wait_shared(fleet: &Fleet, config: &Config) -> anyhow::Result<()> {
    if fleet.names.is_empty() {
        return Ok(());
    }
    let limit = config.cluster.lease_timeout * 2;
    match fleet.wait_shared(limit).await? {
        (Some(took), split) => println!(
            "shards shared out {:.1} s after the last daemon answered /healthz: {split}",
            took.as_secs_f64()
        ),
        (None, split) => println!(
            "warning: shards not shared out {:.0} s after the last daemon answered /healthz, measuring anyway: {split}",
            limit.as_secs_f64()
        ),
    }
    Ok(())
}

/// Sends the events round-robin to the daemons and follows the counters of the
/// database until every event is processed.
async fn drive(
    fleet: &Fleet,
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
    events: u64,
) -> anyhow::Result<Progress> {
    let apis = fleet.apis();
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        let latencies = post_round_robin(&apis, bodies, connections).await;
        (latencies, started.elapsed())
    });
    let mut sending = Some(sending);
    let mut ingest = None;
    let mut latencies = Vec::new();
    let mut marks: Vec<(u64, f64)> = Vec::new();
    let mut next_line = Duration::from_secs(1);
    let mut polls = Vec::new();
    let mut before = (Duration::ZERO, 0);
    let rss = if fleet.daemons.len() > 1 {
        "RSS (sum)"
    } else {
        "daemon RSS"
    };
    println!("   time   received  processed  handoffs waiting  {rss}");
    loop {
        if sending.as_ref().is_some_and(|s| s.is_finished())
            && let Some(s) = sending.take()
        {
            let (l, took) = s.await?;
            latencies = l?;
            ingest = Some(took);
        }
        let asked = Instant::now();
        let s = fleet.first().api.queue().await?;
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
                fleet.rss_mib()
            );
            next_line += Duration::from_secs(1);
        }
        while marks.len() < 4 && done >= events * (marks.len() as u64 + 1) / 4 {
            marks.push(((marks.len() as u64 + 1) * 25, fleet.rss_mib()));
        }
        if let Some(ingest) = ingest
            && s.settled(events)
        {
            return Ok(Progress {
                ingest,
                total: now,
                last: s,
                latencies,
                marks,
                polls,
            });
        }
        let wait = if ingest.is_some() {
            let rate = (done - before.1) as f64 / (now - before.0).as_secs_f64();
            next_poll(events.saturating_sub(done), rate)
        } else {
            POLL_MAX
        };
        before = (now, done);
        tokio::time::sleep(wait.min(next_line.saturating_sub(now)).max(POLL_MIN)).await;
    }
}

/// Waits (at most [`DESK_LIMIT`]) until the sales desk gave every handoff an owner.
async fn drain_desk(
    fleet: &Fleet,
    last: &Queue,
    polls: &mut Vec<Duration>,
) -> anyhow::Result<Desk> {
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
        end = fleet.first().api.queue().await?;
        polls.push(asked.elapsed());
    }
    let drained = (end.handoffs_waiting == 0).then(|| desk_started.elapsed());
    Ok(Desk {
        backlog,
        end,
        drained,
    })
}

fn print_rates(args: &BenchArgs, progress: &Progress, cpu: f64) {
    let events = args.events as f64;
    let (ingest, total) = (progress.ingest.as_secs_f64(), progress.total.as_secs_f64());
    println!(
        "ingest (all requests answered, committed): {:>8.0} events/s ({ingest:.2} s)",
        events / ingest
    );
    println!(
        "end to end (all events processed):         {:>8.0} events/s ({total:.2} s)",
        events / total
    );
    let latencies = &progress.latencies;
    println!(
        "request latency ({} events each): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        args.batch,
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.9)),
        ms(percentile(latencies, 0.99))
    );
    println!(
        "daemon CPU time until the last event was processed: {cpu:.1} s ({:.2} cores on average, {:.0} events per CPU second)",
        cpu / total,
        events / cpu
    );
}

/// CPU time by kind of thread, per daemon when there are several.
fn print_threads(fleet: &Fleet, threads: &[Vec<(String, f64)>]) {
    let line = |t: &[(String, f64)]| {
        t.iter()
            .map(|(name, secs)| format!("{name} {secs:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let [t] = threads {
        println!("  by thread (since start): {}", line(t));
        return;
    }
    for (i, t) in threads.iter().enumerate() {
        println!("  {} by thread (since start): {}", fleet.name(i), line(t));
    }
}

/// The daemons' RSS at start, at their peaks and as processing went on; with several
/// daemons the sums, then each daemon's own.
fn print_memory(fleet: &Fleet, rss_start: &[f64], peaks: &[f64], marks: &[(u64, f64)]) {
    let several = fleet.daemons.len() > 1;
    println!(
        "daemon RSS{}: {:.0} MiB at start, peak {:.0} MiB (VmHWM{}); {}",
        if several { ", all daemons" } else { "" },
        rss_start.iter().sum::<f64>(),
        peaks.iter().sum::<f64>(),
        if several {
            ", each daemon's summed"
        } else {
            ""
        },
        marks
            .iter()
            .map(|(pct, rss)| format!("{rss:.0} MiB at {pct}% processed"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if several {
        println!(
            "peak RSS per daemon: {}; sum {:.0} MiB",
            peaks
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{} {p:.0} MiB", fleet.name(i)))
                .collect::<Vec<_>>()
                .join(", "),
            peaks.iter().sum::<f64>()
        );
    }
}

fn print_database(args: &BenchArgs, setup: Setup, db_file: u64, db_wal: u64) {
    let db_bytes = db_file + db_wal;
    let parts = match setup {
        Setup::Sqlite => format!("file {db_file} + WAL {db_wal}"),
        Setup::Postgres(_) => "pg_database_size".to_string(),
    };
    println!(
        "database: {db_bytes} bytes ({parts}), {:.0} bytes per event",
        db_bytes as f64 / args.events as f64
    );
}

fn print_desk(desk: &Desk) {
    println!(
        "handoffs waiting for an owner when the last event was processed: {}; {}",
        desk.backlog,
        match desk.drained {
            Some(d) => format!("none {:.2} s later", d.as_secs_f64()),
            None => format!(
                "{} still waiting {:.0} s later",
                desk.end.handoffs_waiting,
                DESK_LIMIT.as_secs_f64()
            ),
        }
    );
}

fn print_shutdown(names: &[String], stopped: &[Stopped]) {
    if let [s] = stopped {
        println!("shutdown (SIGTERM until exit): {}", s.describe());
        return;
    }
    for (name, s) in names.iter().zip(stopped) {
        println!("shutdown of {name} (SIGTERM until exit): {}", s.describe());
    }
}
