//! `nurtured bench --mails N`: mail on its own, against a child daemon whose mail goes
//! to the SMTP server in this process. First N trigger mails (one pricing-page view
//! each, for N consenting leads) as fast as they go: rendered, signed, sent over
//! pooled connections. Then the event-to-SMTP latency at a steady rate: `--rate`
//! events per second for `--seconds`, each triggering a mail, timed from the moment
//! the request is sent to the moment the server has the mail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchArgs;
use super::client::Api;
use super::daemon::{Daemon, MailTo};
use super::report::{Figures, ms, percentile};
use crate::config::Config;
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

/// Creates `n` consenting leads and waits until they are processed.
async fn leads(api: &Api, run: &str, n: usize) -> anyhow::Result<()> {
    let events: Vec<Value> = (0..n).map(|i| identify(run, i)).collect();
    let before = api.stats().await?.events_received;
    api.post_events(&events, 1000).await?;
    api.wait_until(
        "identifying the leads",
        Duration::from_secs(600),
        Duration::from_millis(50),
        |s| s.settled(before + n as u64),
    )
    .await?;
    Ok(())
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

pub async fn run(config: &Config, args: &BenchArgs, sink: &SmtpSink) -> anyhow::Result<Figures> {
    // Every lead gets one trigger mail, so the frequency cap holds none back; it stays
    // on, as its check is part of the cost of sending.
    let daemon = Daemon::start(config, MailTo::Smtp(sink.port), args.postgres.as_deref()).await?;
    let api = &daemon.api;
    println!(
        "daemon: pid {}, RSS {:.0} MiB after start; {} mails, then {} events/s for {} s; {} SMTP connections",
        daemon.pid,
        daemon.rss_mib(),
        args.mails,
        args.rate,
        args.seconds,
        config.mail.connections
    );

    // 1. Throughput.
    leads(api, "t", args.mails).await?;
    let before = sink.count();
    let bodies: Vec<Value> = (0..args.mails).map(|i| pricing("t", i)).collect();
    let started = Instant::now();
    api.post_events(&bodies, 500).await?;
    let posted = started.elapsed();
    wait_for(sink, before + args.mails, Duration::from_secs(600)).await?;
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

    // 2. Latency at a steady rate: every 10 ms a request with the events due by then
    // (rate/100 on average), each for a lead that has had no mail yet.
    let n = args.rate * args.seconds;
    leads(api, "l", n).await?;
    let before = sink.count();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let mut i = 0;
    let mut ticks = 0;
    while i < n {
        tick.tick().await;
        ticks += 1;
        let end = (ticks * args.rate / 100).min(n);
        if end == i {
            continue;
        }
        let now = Instant::now();
        for j in i..end {
            sent_at.insert(email("l", j), now);
        }
        let events: Vec<Value> = (i..end).map(|j| pricing("l", j)).collect();
        api.post_events(&events, events.len()).await?;
        i = end;
    }
    let sending = started.elapsed();
    wait_for(sink, before + n, Duration::from_secs(120)).await?;
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
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        latencies.len()
    );
    // The SMTP server has every mail before the daemon records its answer: wait
    // (briefly) for the outbox to say so too, so the counts below are final.
    let recorded = Instant::now();
    let mut s = api.stats().await?;
    while s.mails_queued > 0 && recorded.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = api.stats().await?;
    }
    println!("mails: {}", s.mails_line());
    let peak = daemon.peak_rss_mib();
    println!("daemon peak RSS: {peak:.0} MiB (VmHWM)");
    let stopped = daemon.stop().await?;
    println!("shutdown (SIGTERM until exit): {}", stopped.describe());

    let mut f = Figures::default();
    f.add(
        "mails/s at the SMTP server",
        args.mails as f64 / smtp_span.as_secs_f64(),
        "/s",
        0,
    );
    f.add(
        "mails/s end to end",
        args.mails as f64 / total.as_secs_f64(),
        "/s",
        0,
    );
    f.add("latency p50", ms(percentile(&latencies, 0.5)), "ms", 1);
    f.add("latency p99", ms(percentile(&latencies, 0.99)), "ms", 1);
    f.add("daemon peak RSS", peak, "MiB", 0);
    f.add("shutdown", stopped.took.as_secs_f64(), "s", 2);
    Ok(f)
}
