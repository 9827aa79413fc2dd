//! `nurtured bench --single`: single-event intake, one event per request, as a website
//! script or an SDK without batching sends them. wrk (a separate process) drives
//! `--connections` connections for `--seconds` with the script `bench/single.lua`
//! (a pricing-page view of a known lead per request, a fresh messageId each) against
//! a child daemon; then the bench waits until every answered event is processed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use super::daemon::{Daemon, MailTo};
use super::report::Figures;
use super::{BenchArgs, Rng, event};
use crate::config::Config;

/// The wrk script, kept in the repository as `bench/single.lua`.
const SCRIPT: &str = include_str!("../../bench/single.lua");

/// wrk: /usr/bin/wrk, else the first `wrk` on PATH.
pub fn find_wrk() -> Option<PathBuf> {
    let usual = Path::new("/usr/bin/wrk");
    if usual.is_file() {
        return Some(usual.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("wrk"))
        .find(|p| p.is_file())
}

/// What the script's done() prints.
#[derive(Debug, Default, PartialEq)]
struct WrkSummary {
    requests: u64,
    duration_us: u64,
    status_errors: u64,
    socket_errors: u64,
    mean_us: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl WrkSummary {
    fn parse(out: &str) -> Option<Self> {
        let line = out.lines().find(|l| l.starts_with("nurtured-wrk "))?;
        let mut s = Self::default();
        for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
            let v: u64 = value.parse().ok()?;
            match key {
                "requests" => s.requests = v,
                "duration_us" => s.duration_us = v,
                "status_errors" => s.status_errors = v,
                "socket_errors" => s.socket_errors = v,
                "mean" => s.mean_us = v,
                "p50" => s.p50_us = v,
                "p90" => s.p90_us = v,
                "p99" => s.p99_us = v,
                "max" => s.max_us = v,
                _ => {}
            }
        }
        (s.duration_us > 0).then_some(s)
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }
}

pub async fn run(
    config: &Config,
    args: &BenchArgs,
    leads: usize,
    connections: usize,
) -> anyhow::Result<Figures> {
    let wrk = find_wrk().context(
        "--single needs wrk, which is not installed: `apt-get install wrk` (Debian, Ubuntu), \
         or put a wrk binary on PATH",
    )?;
    let daemon = Daemon::start(config, MailTo::Files, args.postgres.as_deref()).await?;
    println!(
        "daemon: pid {}, RSS {:.0} MiB after start; {leads} leads, {connections} connections for {} s, one event per request ({})",
        daemon.pid,
        daemon.rss_mib(),
        args.seconds,
        wrk.display()
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let known: Vec<Value> = (0..leads).map(|i| event(i, leads, &mut rng)).collect();
    daemon.api.post_events(&known, args.batch).await?;
    daemon
        .api
        .wait_until(
            "identifying the leads",
            Duration::from_secs(600),
            Duration::from_millis(50),
            |s| s.settled(leads as u64),
        )
        .await?;

    let script = tempfile::Builder::new()
        .prefix("nurtured-single-")
        .suffix(".lua")
        .tempfile()?;
    std::fs::write(script.path(), SCRIPT)?;
    let cpu_start = daemon.cpu_secs();
    let threads = connections.clamp(1, 2);
    let tag = format!("wrk-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let out = tokio::process::Command::new(&wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", args.seconds))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(script.path())
        .arg(&daemon.api.base)
        .arg("--")
        .arg(&daemon.api.token)
        .arg(leads.to_string())
        .arg(&tag)
        .output()
        .await
        .with_context(|| format!("cannot run {}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = WrkSummary::parse(&stdout)
        .with_context(|| format!("wrk printed no summary line:\n{stdout}"))?;
    println!("wrk says:");
    for line in stdout.lines().filter(|l| !l.starts_with("nurtured-wrk ")) {
        println!("  {line}");
    }

    // Every answered event must be stored; requests still open when wrk stopped may
    // have been stored too (at most one per connection).
    let answered = summary.requests - summary.status_errors;
    let expected = leads as u64 + answered;
    let waited = Instant::now();
    let s = daemon
        .api
        .wait_until(
            "processing the events",
            Duration::from_secs(600),
            Duration::from_millis(50),
            |s| s.settled(expected),
        )
        .await?;
    let processed_after = waited.elapsed();
    let cpu = daemon.cpu_secs() - cpu_start;
    let extra = s.events_received.saturating_sub(expected);
    let peak = daemon.peak_rss_mib();
    let ms = |us: u64| us as f64 / 1e3;

    println!();
    println!(
        "single-event intake: {:.0} requests/s ({} requests in {:.2} s, {} non-2xx, {} socket errors)",
        summary.rate(),
        summary.requests,
        summary.duration_us as f64 / 1e6,
        summary.status_errors,
        summary.socket_errors
    );
    println!(
        "latency: mean {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(summary.mean_us),
        ms(summary.p50_us),
        ms(summary.p90_us),
        ms(summary.p99_us),
        ms(summary.max_us)
    );
    println!(
        "every event processed {:.2} s after wrk ended: {} received ({} for leads, {answered} answered, {extra} still open when wrk stopped), {} failed",
        processed_after.as_secs_f64(),
        s.events_received,
        leads,
        s.events_failed
    );
    println!(
        "daemon CPU time from wrk's start until every event was processed: {cpu:.1} s ({:.0} requests per CPU second)",
        summary.requests as f64 / cpu
    );
    let counts = daemon.api.stats().await?;
    println!(
        "stages: {}; handoffs waiting {}; mails: {}",
        counts.stages_line(),
        counts.handoffs_waiting,
        counts.mails_line()
    );
    println!("daemon peak RSS: {peak:.0} MiB (VmHWM)");
    let stopped = daemon.stop().await?;
    println!("shutdown (SIGTERM until exit): {}", stopped.describe());
    anyhow::ensure!(
        extra <= connections as u64,
        "the daemon stored {extra} events more than it answered, with only {connections} requests open at the end"
    );

    let mut f = Figures::default();
    f.add("requests per second", summary.rate(), "/s", 0);
    f.add("latency mean", ms(summary.mean_us), "ms", 1);
    f.add("latency p50", ms(summary.p50_us), "ms", 1);
    f.add("latency p99", ms(summary.p99_us), "ms", 1);
    f.add(
        "all processed after wrk",
        processed_after.as_secs_f64(),
        "s",
        2,
    );
    f.add("daemon peak RSS", peak, "MiB", 0);
    f.add("shutdown", stopped.took.as_secs_f64(), "s", 2);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scripts_summary_line() {
        let out = "Running 1s test @ http://127.0.0.1:1\n  2 threads and 50 connections\n\
                   nurtured-wrk requests=2111 duration_us=1000500 status_errors=3 socket_errors=0 \
                   latency_us mean=23600 p50=21000 p90=40000 p99=80000 max=120000\n";
        let s = WrkSummary::parse(out).unwrap();
        assert_eq!(s.requests, 2111);
        assert_eq!(s.status_errors, 3);
        assert_eq!(s.p99_us, 80_000);
        assert!((s.rate() - 2109.9).abs() < 0.1, "{}", s.rate());
        assert_eq!(WrkSummary::parse("Running 1s test"), None);
    }
}
