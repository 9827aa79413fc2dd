//! Past events taken in as history: `nurtured ingest --history` and `"history": true`
//! on the batch API run the rules but queue no mail; live events that were already
//! older than `mail.max_event_age` get no trigger mail (`stale_event`).

use std::path::Path;

use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, cli_in, mail_dir, spawn_in, text};

/// A lead that signs up with consent and looks at the prices (a trigger mail in the
/// shipped rules), `days` ago.
fn past_journey(email: &str, days: i64) -> Vec<Value> {
    let at = |minutes: i64| {
        (chrono::Utc::now() - chrono::Duration::days(days) + chrono::Duration::minutes(minutes))
            .to_rfc3339()
    };
    vec![
        json!({"type": "identify", "userId": email, "timestamp": at(0), "traits": {
            "email": email, "first_name": "Anna", "company": "Beispiel AG",
            "consent_email": true, "consent_source": "contact form"}}),
        json!({"type": "page", "userId": email, "name": "Preise", "timestamp": at(1),
               "properties": {"url": "https://www.example.com/preise"}}),
        json!({"type": "track", "userId": email, "event": "Content Downloaded", "timestamp": at(2),
               "properties": {"type": "whitepaper", "asset": "A", "topic": "cloud"}}),
        json!({"type": "track", "userId": email, "event": "Content Downloaded", "timestamp": at(3),
               "properties": {"type": "whitepaper", "asset": "B", "topic": "cloud"}}),
    ]
}

fn write_jsonl(dir: &Path, name: &str, events: &[Value]) -> String {
    let path = dir.join(name);
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.display().to_string()
}

async fn mails(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/v1/mails").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["mails"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_history_queues_no_mail_and_old_live_events_are_stale() {
    // (Stream steps of the live lead may go out, depending on the send window; trigger
    // mails are what is checked.)
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    let history: Vec<Value> = (0..3)
        .flat_map(|i| past_journey(&format!("past{i}@kunde.example"), 30))
        .collect();
    let file = write_jsonl(dir.path(), "history.jsonl", &history);
    let out = cli_in(dir.path(), &["ingest", "--history", &file]);
    assert!(out.status.success(), "{}", text(&out));

    let app = spawn_in(dir).await;
    app.settle().await;
    // The rules ran: the prices and downloads counted.
    let lead = app.lead("past0@kunde.example").await;
    assert!(lead["interest"].as_f64().unwrap() > 0.0, "{lead}");
    let activity = lead["recent_activity"].as_array().unwrap();
    assert!(
        !activity.is_empty() && activity.iter().all(|a| a["history"] == true),
        "{lead}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(mails(&app).await, Vec::<Value>::new());
    assert_eq!(sink.count(), 0);

    // The same kind of file without --history: the daemon runs, so the command only
    // stores; the events are two days old, so their trigger mails are stale.
    let live: Vec<Value> = past_journey("late@kunde.example", 2);
    let file = write_jsonl(app.dir.path(), "late.jsonl", &live);
    let out = app.cli(&["ingest", &file]);
    assert!(out.status.success(), "{}", text(&out));
    app.wait_for("stale trigger mails", |s| {
        s["suppressed_by_reason"]["stale_event"].as_i64() >= Some(2)
    })
    .await;
    let triggers: Vec<Value> = mails(&app)
        .await
        .into_iter()
        .filter(|m| m["template"].as_str().unwrap().starts_with("trigger/"))
        .collect();
    assert_eq!(triggers.len(), 2, "{triggers:?}");
    for m in &triggers {
        assert_eq!(m["status"], "suppressed", "{m}");
        assert_eq!(m["reason"], "stale_event", "{m}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_api_takes_history_without_mail() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let batch = past_journey("import@kunde.example", 20);
    let (status, body) = app
        .post("/v1/import", &json!({"history": "yes", "batch": batch}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("history"), "{body}");
    let (status, body) = app
        .post("/v1/batch", &json!({"history": true, "batch": batch}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let lead = app.lead("import@kunde.example").await;
    assert!(lead["interest"].as_f64().unwrap() > 0.0, "{lead}");
    // A live event now still gets its trigger mail.
    let (status, body) = app
        .post(
            "/v1/page",
            &json!({"userId": "import@kunde.example", "name": "Preise",
                    "properties": {"url": "https://www.example.com/preise"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = app
        .wait_for("the live mail", |s| s["mails_sent"] == 1)
        .await;
    assert_eq!(
        stats["suppressed_by_reason"]["stale_event"],
        Value::Null,
        "{stats}"
    );
    let all = mails(&app).await;
    assert_eq!(all.len(), 1, "only the live event's mail: {all:?}");
    app.stop().await;
}

/// The main scenario's events for `email`, with its own ids, `days` ago (or now).
fn journey(email: &str, days: Option<i64>) -> Vec<Value> {
    crate::helpers::mql_journey(email)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e["userId"] = json!(format!("crm-{}", email.replace('@', "-at-")));
            e["messageId"] = json!(format!("{email}-{i}"));
            if let Some(days) = days {
                let at = chrono::Utc::now() - chrono::Duration::days(days)
                    + chrono::Duration::minutes(i as i64);
                e["timestamp"] = json!(at.to_rfc3339());
            }
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_that_reached_mql_in_history_is_not_handed_to_sales() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let old = "old-mql@kunde.example";
    let (status, body) = app
        .post(
            "/v1/import",
            &json!({"history": true, "batch": journey(old, Some(30))}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The same journey live: handed over, as always.
    let live = "live-mql@kunde.example";
    let (status, body) = app
        .post("/v1/batch", &json!({"batch": journey(live, None)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let lead = app.lead(live).await;
    assert_eq!(lead["stage"], "mql", "{lead}");
    assert_eq!(lead["handoffs"].as_array().unwrap().len(), 1, "{lead}");

    let lead = app.lead(old).await;
    assert_eq!(lead["stage"], "mql", "{lead}");
    assert_eq!(lead["handoffs"], json!([]), "{lead}");
    assert_eq!(lead["streams"], json!([]), "{lead}");
    assert_eq!(lead["mails"], json!([]), "{lead}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitors_history_stays_history_when_the_visitor_signs_up() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "visitor@kunde.example";
    // Minutes old, so `mail.max_event_age` would let their trigger mails through.
    let at = |minutes: i64| (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339();
    let anonymous = json!({"history": true, "batch": [
        {"type": "page", "anonymousId": "v-42", "name": "Preise", "timestamp": at(20),
         "properties": {"url": "https://www.example.com/preise"}},
        {"type": "track", "anonymousId": "v-42", "event": "Content Downloaded",
         "timestamp": at(19),
         "properties": {"type": "whitepaper", "asset": "A", "topic": "cloud"}},
    ]});
    let (status, body) = app.post("/v1/batch", &anonymous).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            "/v1/identify",
            &json!({"userId": email, "anonymousId": "v-42", "traits": {
                "email": email, "first_name": "Vera", "consent_email": true,
                "consent_source": "contact form"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let lead = app.lead(email).await;
    assert!(
        lead["interest"].as_f64().unwrap() > 0.0,
        "joined and scored: {lead}"
    );
    let triggers: Vec<Value> = mails(&app)
        .await
        .into_iter()
        .filter(|m| m["kind"] == "trigger")
        .collect();
    assert!(
        triggers.is_empty(),
        "history queues no trigger mail: {triggers:?}"
    );
    app.stop().await;
}
