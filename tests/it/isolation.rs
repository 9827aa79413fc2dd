//! One lead's work never waits on another lead's: a lead with a long history taking a
//! burst of events, and a rule that runs into its limits, hold up neither other leads'
//! events nor the stage API.

use std::time::{Duration, Instant};

use nurtured::store::testing::{execute, query_i64, quote};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, alone, prepare_dir, spawn_alone, write_rule};

/// Posts one event for `email` and waits until its lead shows it processed; returns
/// how long that took from sending.
async fn one_event(app: &TestApp, email: &str, n: usize) -> Duration {
    let started = Instant::now();
    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": email, "event": "Email Clicked", "messageId": format!("{email}-{n}")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    loop {
        let lead = app.lead(email).await;
        let done = lead["recent_activity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["message_id"] == format!("{email}-{n}") && a["status"] != "pending");
        if done {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{email}'s event was not processed: {lead}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Moves `email` to `stage` through the API; returns how long the call took.
async fn stage_call(app: &TestApp, email: &str, stage: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = app
        .post(
            &format!("/v1/leads/{email}/stage"),
            &json!({"stage": stage, "reason": "checked by phone", "by": "sales:jonas"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    started.elapsed()
}

fn identify(email: &str) -> Value {
    json!({"type": "identify", "userId": email, "messageId": format!("id-{email}"),
           "traits": {"email": email, "firstName": "Kim", "company": "Nordwerk"}})
}

fn pricing_view(email: &str, n: usize) -> Value {
    json!({"type": "page", "userId": email, "messageId": format!("pv-{email}-{n}"),
           "name": "Pricing", "properties": {"url": "https://www.example.com/pricing"}})
}

/// Stores `n` earlier pricing views of lead `email` straight into the database of a
/// stopped daemon, as processed events (as if a bot had been at it for a while).
async fn give_history(dir: &std::path::Path, email: &str, n: usize) {
    let url = crate::helpers::config_of(dir).database_url;
    let id = query_i64(
        &url,
        format!("SELECT id FROM leads WHERE email = {}", quote(email)),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let properties =
        quote(&json!({"url": "https://www.example.com/pricing", "path": "/pricing"}).to_string());
    // One transaction, 2,000 rows a statement.
    let mut sql = String::from("BEGIN;\n");
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        sql.push_str(
            "INSERT INTO events (message_id, lead_id, kind, name, properties, occurred_at, received_at) VALUES ",
        );
        for (k, i) in chunk.iter().enumerate() {
            // A view every 7.2 minutes over the last 300 days.
            let at = now - (n - i) as i64 * 432_000;
            if k > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "({}, {id}, 'page', 'Page Viewed', {properties}, {at}, {at})",
                quote(&format!("bot-{i}"))
            ));
        }
        sql.push_str(";\n");
    }
    sql.push_str(&format!(
        "UPDATE leads SET events = events + {n} WHERE id = {id};\nCOMMIT;\n"
    ));
    execute(&url, sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_with_60000_events_taking_200_more_holds_up_no_other_lead() {
    let _alone = alone().await;
    let app = spawn_alone(prepare_dir()).await;
    let (bot, calm, sales) = ("bot@example.com", "calm@example.com", "sales@example.com");
    app.post(
        "/v1/batch",
        &json!({"batch": [identify(bot), identify(calm), identify(sales)]}),
    )
    .await;
    app.settle().await;
    // Before: what one event and one stage call take on this machine now.
    let quiet_event = one_event(&app, calm, 0).await;
    let quiet_call = stage_call(&app, sales, "lead").await;

    let dir = app.stop().await;
    give_history(dir.path(), bot, 60_000).await;
    let app = spawn_alone(dir).await;

    // 200 pricing views for the bot at once; each rule run counts the bot's views of
    // the last 7 days (thousands of them).
    let views: Vec<Value> = (0..200).map(|n| pricing_view(bot, n)).collect();
    let (status, body) = app.post("/v1/batch", &json!({ "batch": views })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Meanwhile: another lead's event, and a salesperson moving a third lead.
    let busy_event = one_event(&app, calm, 1).await;
    let busy_call = stage_call(&app, sales, "mql").await;
    println!(
        "another lead's event: {quiet_event:?} alone, {busy_event:?} beside the bot; \
         stage call: {quiet_call:?} alone, {busy_call:?} beside the bot"
    );
    let limit = Duration::from_millis(200);
    assert!(
        busy_event.saturating_sub(quiet_event) <= limit,
        "another lead's event waited {busy_event:?} (alone: {quiet_event:?})"
    );
    assert!(
        busy_call.saturating_sub(quiet_call) <= limit,
        "the stage call waited {busy_call:?} (alone: {quiet_call:?})"
    );

    // The bot's events are all processed, and counted right: its history has a view
    // every 7 minutes, about 1,400 in the last week, so every new view is a repeat
    // (5 points), none a first view of the week (25 points).
    let stats = app.settle().await;
    assert_eq!(stats["events_failed"], 0, "{stats}");
    let lead = app.lead(bot).await;
    assert_eq!(lead["interest"], 1000.0, "{}", lead["score_ledger"]);
    assert!(
        lead["score_ledger"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["reason"] == "viewed the pricing page again"),
        "{}",
        lead["score_ledger"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_stopped_by_its_limits_holds_up_no_other_lead() {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str("\n[limits]\ntimeout = \"300ms\"\nmax_operations = 1000000000000\n");
    std::fs::write(&path, toml).unwrap();
    let _alone = alone().await;
    let app = spawn_alone(dir).await;
    write_rule(
        &app,
        "60-spin.rhai",
        "fn on_event(lead, event) {\n    if event.name == \"Spin\" {\n        let n = 0;\n        loop { n += 1; }\n    }\n}\n",
    )
    .await;
    let (spinner, calm, sales) = ("spin@example.com", "calm@example.com", "sales@example.com");
    app.post(
        "/v1/batch",
        &json!({"batch": [identify(spinner), identify(calm), identify(sales)]}),
    )
    .await;
    app.settle().await;
    let quiet_event = one_event(&app, calm, 0).await;

    // Five events that each run into the 300 ms limit: seconds of work for this lead.
    let spins: Vec<Value> = (0..5)
        .map(|n| json!({"type": "track", "userId": spinner, "event": "Spin", "messageId": format!("spin-{n}")}))
        .collect();
    let started = Instant::now();
    app.post("/v1/batch", &json!({ "batch": spins })).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waits = Vec::new();
    for n in 1..=5 {
        waits.push(one_event(&app, calm, n).await);
    }
    let call = stage_call(&app, sales, "lead").await;
    println!(
        "another lead's events beside the spinning rule: {waits:?} (alone {quiet_event:?}); stage call {call:?}"
    );
    for w in &waits {
        assert!(
            w.saturating_sub(quiet_event) <= Duration::from_millis(300),
            "another lead's event waited {w:?}, more than the rule's own limit"
        );
    }
    assert!(call <= Duration::from_millis(300), "{call:?}");
    let stats = app
        .wait_for("the spinning events to fail", |s| s["events_failed"] == 5)
        .await;
    assert_eq!(stats["events_pending"], 0);
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "each spin ran to its limit"
    );
    let lead = app.lead(spinner).await;
    let error = &lead["recent_activity"][0]["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("limits.timeout"),
        "{error}"
    );
}
