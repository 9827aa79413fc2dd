//! `/readyz` is not ready while more events wait than `[health] max_backlog`, names the
//! failed check, and is ready again once they are processed; `/healthz` stays up.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, prepare_dir, spawn_in};

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    // Public, like /healthz: no key.
    let resp = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_over_the_backlog_limit_and_recovers_once_drained() {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[health]\nmax_backlog = 5\n");
    std::fs::write(&path, text).unwrap();
    let app = spawn_in(dir).await;

    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["failed"], json!([]));
    assert_eq!(body["checks"]["database"], true);
    let held = if nurtured::store::testing::postgres_server().is_some() {
        "shards"
    } else {
        "lease"
    };
    assert_eq!(body["checks"][held], true, "{body}");

    // A change to all leads holds processing back (as an erasure does) while 8 events
    // arrive: they wait.
    let gate = app
        .running
        .as_ref()
        .unwrap()
        .app
        .processor
        .gate
        .exclusive()
        .await;
    let batch: Vec<Value> = (0..8)
        .map(|i| {
            json!({"type": "identify", "userId": format!("u-{i}"), "messageId": format!("m-{i}"),
                   "traits": {"email": format!("lead{i}@firma.example")}})
        })
        .collect();
    let (status, body) = app.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["failed"], json!(["backlog"]));
    assert_eq!(body["checks"]["backlog"]["pending"], 8);
    assert_eq!(body["checks"]["backlog"]["max"], 5);
    assert_eq!(body["checks"]["backlog"]["ok"], false);
    // Alive all the same.
    let live = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    drop(gate);
    app.settle().await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["backlog"]["pending"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_once_the_lease_is_gone() {
    if nurtured::store::testing::postgres_server().is_some() {
        // On PostgreSQL the cluster's shards stand for the lease (see the test above).
        return;
    }
    let app = spawn_in(prepare_dir()).await;
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    // The daemon lost its lease (another process took it over after it expired).
    app.running.as_ref().unwrap().app.processor.forget_lease();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["failed"], json!(["lease"]));
    assert_eq!(body["checks"]["lease"], false);
    app.stop().await;
}
