//! Schedules with a controllable clock: no sleeping for days.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use nurtured::clock::ManualClock;
use nurtured::schedule::Scheduler;
use serde_json::json;

use crate::helpers::{TestApp, prepare_dir, start_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decay_halves_interest_per_half_life_and_rule_jobs_run_once() {
    let dir = prepare_dir();
    // Monday 2026-03-02, 09:00 Berlin.
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let running = start_in(dir.path(), clock.clone()).await;
    let app = TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
        share: crate::helpers::share().await,
    };
    app.post(
        "/v1/track",
        &json!({"userId": "decay@example.com", "event": "Webinar Attended",
        "timestamp": start.to_rfc3339()}),
    )
    .await;
    app.settle().await;
    assert_eq!(app.lead("decay@example.com").await["interest"], 20.0);

    let processor = app.running.as_ref().unwrap().app.processor.clone();
    let config = app.running.as_ref().unwrap().app.config.clone();
    let scheduler = Scheduler {
        schedules: config.schedules.clone(),
        time_zone: config.time_zone,
        processor,
        started: start,
    };
    // Nothing is due before 03:00 the next night.
    assert!(
        scheduler
            .run_due(start + Duration::hours(1))
            .await
            .is_empty()
    );
    // 30 days later the daily decay has missed 30 runs; it runs once, for all of them.
    let later = start + Duration::days(30);
    clock.set(later);
    let reports = scheduler.run_due(later).await;
    let decay = reports
        .iter()
        .find(|r| r.schedule == "interest-decay")
        .expect("decay ran");
    assert_eq!(decay.leads, 1);
    // The 03:00 run on day 30 is due; interest fades for the time since the start.
    assert!(
        decay.due <= later && decay.due > later - Duration::days(1),
        "{decay:?}"
    );
    let days = (decay.due - start).num_seconds() as f64 / 86_400.0;
    let expected = 20.0 * 0.5f64.powf(days / 30.0);
    let interest = app.lead("decay@example.com").await["interest"]
        .as_f64()
        .unwrap();
    assert!(
        (interest - expected).abs() < 0.01,
        "interest {interest}, expected {expected}"
    );
    assert!(
        interest > 9.9 && interest < 10.2,
        "about half after about 30 days: {interest}"
    );
    // The weekly review ran once for the lead (a subscriber) and tagged nothing: the
    // lead was active within 180 days.
    let review = reports
        .iter()
        .find(|r| r.schedule == "inactive-leads")
        .expect("review ran");
    assert_eq!((review.leads, review.failed), (1, 0));
    // Nothing runs twice.
    assert!(scheduler.run_due(later).await.is_empty());

    // Half a year later without activity the lead is tagged inactive.
    let much_later = later + Duration::days(200);
    clock.set(much_later);
    scheduler.run_due(much_later).await;
    let lead = app.lead("decay@example.com").await;
    assert!(
        lead["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("inactive")),
        "{lead:#}"
    );
    assert!(lead["interest"].as_f64().unwrap() < 1.5);
    let ledger = lead["score_ledger"].as_array().unwrap();
    assert!(
        ledger.iter().any(|s| s["source"] == "job:interest-decay"),
        "{lead:#}"
    );
}
