//! `nurtured bench --burst N`: N leads turn MQL at once, as after a trade-fair import.
//! First each lead is identified with complete contact data and a high fit and
//! attends a webinar (a lead, interest 20), and that is processed; then one request
//! wave posts a demo request for every lead (interest 50: over the shipped MQL
//! threshold). Measured from that moment until the sales owners' notifications are
//! at the SMTP server in this process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::BenchArgs;
use super::client::batch_body;
use super::daemon::{Daemon, MailTo};
use super::report::Figures;
use crate::config::Config;
use crate::smtp_sink::SmtpSink;

fn email(i: usize) -> String {
    format!("burst{i}@fair{}.example.com", i % 97)
}

/// Complete contact data, fit 65 with the shipped rules.
fn identify(i: usize) -> Value {
    let e = email(i);
    json!({"type": "identify", "userId": e, "messageId": format!("burst-id-{i}"),
           "traits": {"email": e, "firstName": "Messe", "lastName": format!("Besuch{i}"),
                      "phone": "+49 89 4711", "company": format!("Fair GmbH {}", i % 300),
                      "employees": 1200, "title": "Head of Marketing", "industry": "Software",
                      "country": "DE", "consent_email": true}})
}

/// The first conversion: a lead with interest 20.
fn attended(i: usize) -> Value {
    json!({"type": "track", "userId": email(i), "messageId": format!("burst-wa-{i}"),
           "event": "Webinar Attended", "properties": {"webinar": "Messe-Nachlese"}})
}

/// Interest 20 + 30: over the shipped threshold of 50.
fn demo(i: usize) -> Value {
    json!({"type": "track", "userId": email(i), "messageId": format!("burst-demo-{i}"),
           "event": "Demo Requested", "properties": {"source": "fair"}})
}

pub async fn run(
    config: &Config,
    args: &BenchArgs,
    connections: usize,
    sink: &SmtpSink,
) -> anyhow::Result<Figures> {
    let n = args.burst;
    let owners: Vec<String> = config
        .sales
        .owners
        .iter()
        .map(|o| o.email.email.to_string().to_lowercase())
        .collect();
    anyhow::ensure!(
        !owners.is_empty(),
        "the configuration has no [[sales.owners]]: the burst measures their notifications"
    );
    let daemon = Daemon::start(config, MailTo::Smtp(sink.port), args.postgres.as_deref()).await?;
    println!(
        "daemon: pid {}, RSS {:.0} MiB after start; {n} leads, notifications to {}",
        daemon.pid,
        daemon.rss_mib(),
        owners.join(", ")
    );

    // 1. The leads, ready but for their interest.
    let prepared: Vec<Value> = (0..n).flat_map(|i| [identify(i), attended(i)]).collect();
    let t = Instant::now();
    daemon.api.post_events(&prepared, args.batch).await?;
    daemon
        .api
        .wait_until(
            "identifying the leads",
            Duration::from_secs(600),
            Duration::from_millis(50),
            |s| s.settled(2 * n as u64),
        )
        .await?;
    let s = daemon.api.stats().await?;
    println!(
        "prepared in {:.2} s: {} events processed, stages {}",
        t.elapsed().as_secs_f64(),
        s.events_processed,
        s.stages_line()
    );
    anyhow::ensure!(
        s.stage("lead") == n as u64,
        "the burst needs rules under which an identify with complete contact data and a \
         webinar attendance make a lead, and a demo request then makes it MQL (as the \
         shipped rules do); here the prepared leads are in: {}",
        s.stages_line()
    );

    // 2. The burst: bodies made before the clock starts, then all posted at once.
    let bodies: Vec<_> = (0..n)
        .map(demo)
        .collect::<Vec<_>>()
        .chunks(args.batch.max(1))
        .map(batch_body)
        .collect();
    let before = sink.count();
    let cpu_start = daemon.cpu_secs();
    let started = Instant::now();
    let api = daemon.api.clone();
    let mut posting = Some(tokio::spawn(async move {
        let r = api.post_all(Arc::new(bodies), connections).await;
        (r, started.elapsed())
    }));
    let mut posted = None;
    let mut processed = None;
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let limit = Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    let notified = loop {
        if posting.as_ref().is_some_and(|p| p.is_finished())
            && let Some(p) = posting.take()
        {
            let (r, took) = p.await?;
            r.context("posting the burst")?;
            posted = Some(took);
        }
        if posted.is_some()
            && processed.is_none()
            && last_poll.elapsed() >= Duration::from_millis(50)
        {
            last_poll = Instant::now();
            if daemon.api.queue().await?.settled(3 * n as u64) {
                processed = Some(started.elapsed());
            }
        }
        let arrivals = owner_arrivals(sink, before, &owners);
        if arrivals.len() >= n {
            break arrivals;
        }
        if started.elapsed() > limit {
            let s = daemon.api.stats().await?;
            anyhow::bail!(
                "only {} of {n} owner notifications arrived within {:.0} s (stages {}, {} handoffs waiting, mails {})",
                arrivals.len(),
                limit.as_secs_f64(),
                s.stages_line(),
                s.handoffs_waiting,
                s.mails_line()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cpu = daemon.cpu_secs() - cpu_start;
    let first = notified.iter().map(|(_, at)| *at).min().unwrap_or(started);
    let last = notified.iter().map(|(_, at)| *at).max().unwrap_or(started);
    let took = last.duration_since(started);
    let mut per_owner: BTreeMap<&str, usize> = owners.iter().map(|o| (o.as_str(), 0)).collect();
    for (to, _) in &notified {
        *per_owner.entry(to.as_str()).or_default() += 1;
    }
    let end = daemon.api.stats().await?;
    let peak = daemon.peak_rss_mib();

    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!();
    println!(
        "burst: {n} leads over the MQL threshold, posted in {} ({} events per request, {connections} connections)",
        secs(posted),
        args.batch
    );
    println!("  events processed after {}", secs(processed));
    println!(
        "every owner notification at the SMTP server after {:.2} s: {:.0} notifications/s (first after {:.2} s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        first.duration_since(started).as_secs_f64()
    );
    println!(
        "notifications per owner: {}",
        per_owner
            .iter()
            .map(|(o, c)| format!("{o} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "stages: {}; handoffs waiting {}; mails: {}",
        end.stages_line(),
        end.handoffs_waiting,
        end.mails_line()
    );
    println!("daemon CPU time from the burst to the last notification: {cpu:.2} s");
    println!("daemon peak RSS: {peak:.0} MiB (VmHWM)");
    let stopped = daemon.stop().await?;
    println!("shutdown (SIGTERM until exit): {}", stopped.describe());

    let mut f = Figures::default();
    f.add("all owners notified", took.as_secs_f64(), "s", 2);
    f.add(
        "notifications per second",
        n as f64 / took.as_secs_f64(),
        "/s",
        0,
    );
    f.add(
        "events processed",
        processed.map_or(f64::NAN, |d| d.as_secs_f64()),
        "s",
        2,
    );
    f.add("daemon peak RSS", peak, "MiB", 0);
    f.add("shutdown", stopped.took.as_secs_f64(), "s", 2);
    Ok(f)
}

/// Mails that arrived after the first `skip` and went to one of `owners`.
fn owner_arrivals(sink: &SmtpSink, skip: usize, owners: &[String]) -> Vec<(String, Instant)> {
    sink.arrivals()
        .into_iter()
        .skip(skip)
        .map(|(to, at)| (to.to_lowercase(), at))
        .filter(|(to, _)| owners.contains(to))
        .collect()
}
