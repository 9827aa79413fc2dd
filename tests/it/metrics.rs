//! `/metrics`: Prometheus text that a Prometheus parser reads, on the API listener with
//! a key and on the `[metrics] addr` listener without one; its counters move with the
//! events, its histograms have buckets, and the build is named.

use std::collections::HashMap;

use prometheus_parse::{Sample, Scrape, Value};
use reqwest::StatusCode;
use serde_json::json;

use nurtured::smtp_sink::SmtpSink;

use crate::helpers::{TOKEN, TestApp, eventually, mail_dir, prepare_dir, spawn_in, write_rule};
use crate::mail::{consenting, mails_to, pricing_view};

const DSN: &str = include_str!("../fixtures/bounces/dsn-postfix.eml");

/// A test folder whose daemon also serves `/metrics` on a port of its own.
fn metrics_dir() -> tempfile::TempDir {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[metrics]\naddr = \"127.0.0.1:0\"\n");
    std::fs::write(&path, text).unwrap();
    dir
}

/// Scrapes `url` (with `token`, if any) and parses the answer.
pub(crate) async fn scrape(app: &TestApp, url: &str, token: Option<&str>) -> Scrape {
    let mut req = app.client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = resp.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

fn find<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn counter(s: &Scrape, metric: &str) -> f64 {
    match find(s, metric, &[]).map(|x| &x.value) {
        Some(Value::Counter(v)) => *v,
        other => panic!("{metric} is not a counter: {other:?}"),
    }
}

pub(crate) fn gauge(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Gauge(v)) => *v,
        other => panic!("{metric} {labels:?} is not a gauge: {other:?}"),
    }
}

/// The observations of a histogram (its `+Inf` bucket); its buckets must rise.
fn observations(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(Value::Histogram(buckets)) = find(s, metric, labels).map(|x| &x.value) else {
        panic!("{metric} {labels:?} is not a histogram");
    };
    assert!(buckets.len() > 5, "{metric}: {buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "{metric}: buckets must be cumulative: {buckets:?}"
    );
    let last = buckets.last().unwrap();
    assert!(last.less_than.is_infinite(), "{buckets:?}");
    last.count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_the_events_processed() {
    let app = spawn_in(metrics_dir()).await;
    let own = app
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("[metrics] addr");
    let main_url = format!("{}/metrics", app.base);
    let own_url = format!("http://{own}/metrics");

    // The API listener wants a key with the read scope; the own listener none.
    let resp = app.client.get(&main_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let before = scrape(&app, &main_url, Some(TOKEN)).await;
    let plain = scrape(&app, &own_url, None).await;
    assert_eq!(
        counter(&plain, "nurtured_events_received_total"),
        counter(&before, "nurtured_events_received_total")
    );
    let version = find(&before, "nurtured_build_info", &[]).expect("build info");
    assert_eq!(
        version.labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(gauge(&before, "nurtured_build_info", &[]), 1.0);
    assert!(before.docs.contains_key("nurtured_events_processed_total"));

    // One rule file fails for one kind of event.
    write_rule(
        &app,
        "99-boom.rhai",
        "fn on_event(lead, event) {\n    if event.name == \"Boom\" { throw \"boom on purpose\"; }\n}\n",
    )
    .await;
    let (status, body) = app.post_journey("anna@acme.example").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let boom =
        json!({"type": "track", "userId": "crm-4711", "messageId": "boom-1", "event": "Boom"});
    let (status, body) = app.post("/v1/track", &boom).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The same message again is a duplicate: not received twice.
    app.post("/v1/track", &boom).await;
    app.wait_for("the failed event", |s| {
        s["events_pending"] == 0 && s["events_failed"] == 1
    })
    .await;

    let after = scrape(&app, &own_url, None).await;
    let moved = |metric: &str| counter(&after, metric) - counter(&before, metric);
    assert_eq!(moved("nurtured_events_received_total"), 6.0);
    assert_eq!(moved("nurtured_events_processed_total"), 5.0);
    assert_eq!(moved("nurtured_events_failed_total"), 1.0);
    assert_eq!(gauge(&after, "nurtured_events_pending", &[]), 0.0);
    assert_eq!(gauge(&after, "nurtured_processing_lag_seconds", &[]), 0.0);

    assert!(observations(&after, "nurtured_batch_duration_seconds", &[]) >= 1.0);
    // Every file's on_event ran for each of the 6 events; the failing one too.
    let boom_runs = observations(
        &after,
        "nurtured_rule_file_duration_seconds",
        &[("file", "rules/99-boom.rhai")],
    );
    assert_eq!(boom_runs, 6.0);
    let files: HashMap<&str, f64> = after
        .samples
        .iter()
        .filter(|x| x.metric == "nurtured_rule_file_duration_seconds")
        .filter_map(|x| x.labels.get("file").map(|f| (f, 0.0)))
        .collect();
    assert!(files.len() > 3, "one series per rule file: {files:?}");

    // The journey made an MQL: a handoff waits, mails are in the outbox.
    assert!(gauge(&after, "nurtured_handoffs_open", &[]) >= 1.0);
    assert_eq!(gauge(&after, "nurtured_handoffs_overdue", &[]), 0.0);
    for state in ["queued", "sending", "sent", "failed", "suppressed"] {
        gauge(&after, "nurtured_outbox_mails", &[("state", state)]);
    }
    assert_eq!(counter(&after, "nurtured_sla_breaches_total"), 0.0);
    assert!(
        find(&after, "nurtured_bounces_total", &[("kind", "hard")]).is_some(),
        "bounce counters per kind"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_the_read_scope_cannot_scrape() {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\n[[api_keys]]\nname = \"site\"\nkey = \"ingest-key-0123456789\"\nscopes = [\"ingest\"]\n\n\
         [[api_keys]]\nname = \"prometheus\"\nkey = \"read-key-0123456789\"\nscopes = [\"read\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    let app = spawn_in(dir).await;
    let url = format!("{}/metrics", app.base);
    let get = |key: &'static str| app.client.get(&url).bearer_auth(key).send();
    assert_eq!(
        get("ingest-key-0123456789").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get("read-key-0123456789").await.unwrap().status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sends_and_bounces_are_measured() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let url = format!("{}/metrics", app.base);
    let email = "anna@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let sent = eventually("the follow-up mail", 10, || mails_to(&sink, email).pop()).await;

    // The mail is recorded as sent a moment after the server took it.
    let started = std::time::Instant::now();
    let scraped = loop {
        let s = scrape(&app, &url, Some(TOKEN)).await;
        if gauge(&s, "nurtured_outbox_mails", &[("state", "sent")]) >= 1.0 {
            break s;
        }
        assert!(started.elapsed().as_secs() < 10, "no mail recorded as sent");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(observations(&scraped, "nurtured_smtp_send_duration_seconds", &[]) >= 1.0);
    assert_eq!(
        counter_with(&scraped, "nurtured_bounces_total", &[("kind", "hard")]),
        0.0
    );

    // A delivery report for that mail, posted twice (a retried pipe): counted once.
    let report = DSN
        .replace("{{VERP}}", &sent.from)
        .replace("{{RCPT}}", email)
        .replace(
            "{{MESSAGE_ID}}",
            &sent.header("Message-ID").expect("Message-ID"),
        );
    for _ in 0..2 {
        let resp = app
            .client
            .post(format!("{}/v1/bounces", app.base))
            .bearer_auth(TOKEN)
            .header("content-type", "message/rfc822")
            .body(report.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let after = scrape(&app, &url, Some(TOKEN)).await;
    assert_eq!(
        counter_with(&after, "nurtured_bounces_total", &[("kind", "hard")]),
        1.0
    );
    assert_eq!(
        counter_with(&after, "nurtured_bounces_total", &[("kind", "complaint")]),
        0.0
    );
    app.stop().await;
}

pub(crate) fn counter_with(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Counter(v)) => *v,
        other => panic!("{metric} {labels:?} is not a counter: {other:?}"),
    }
}
