//! The HTTP API over a real socket.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, mql_journey, spawn_app, spawn_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qualified_lead_becomes_mql_with_history_naming_the_rules() {
    let app = spawn_app().await;
    let (status, body) = app.post_journey("Anna.Schmidt@ACME.de").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 5);
    app.settle().await;

    // Found by e-mail, case-insensitively.
    let lead = app.lead("anna.schmidt@acme.de").await;
    assert_eq!(lead["stage"], "mql", "{lead:#}");
    assert_eq!(lead["external_id"], "crm-4711");
    assert!(lead["fit"].as_f64().unwrap() >= 30.0, "{lead:#}");
    assert!(lead["interest"].as_f64().unwrap() >= 50.0, "{lead:#}");
    let history = lead["stage_history"].as_array().unwrap();
    let moves: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h["to"].as_str().unwrap(), h["source"].as_str().unwrap()))
        .collect();
    assert_eq!(moves[0], ("subscriber", "ingest"));
    assert_eq!(moves[1].0, "lead");
    assert!(moves[1].1.contains("rules/40-funnel.rhai:"), "{moves:?}");
    assert_eq!(moves[2].0, "mql");
    assert!(moves[2].1.contains("rules/40-funnel.rhai:"), "{moves:?}");
    assert!(
        history[2]["reason"]
            .as_str()
            .unwrap()
            .contains("thresholds")
    );
    assert_eq!(history[2]["from"], "lead");
    assert!(history[2]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lead["recent_activity"].as_array().unwrap().len(), 5);
    let ledger = lead["score_ledger"].as_array().unwrap();
    assert!(ledger.iter().any(|s| {
        s["reason"].as_str().unwrap().contains("pricing")
            && s["source"]
                .as_str()
                .unwrap()
                .contains("rules/20-interest.rhai:")
    }));
    assert!(lead["tags"].as_array().unwrap().is_empty(), "{lead:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_persona_is_disqualified() {
    let app = spawn_app().await;
    let (status, _) = app
        .post("/v1/identify", &json!({"userId": "tim@example.org",
            "traits": {"name": "Tim Becker", "phone": "+49 40 555", "title": "Werkstudent Marketing",
                       "company": "Big Corp AG", "employees": 5000}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .post(
            "/v1/track",
            &json!({"userId": "tim@example.org", "event": "Content Downloaded",
            "properties": {"asset": "Whitepaper", "type": "whitepaper"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.settle().await;
    let lead = app.lead("tim@example.org").await;
    assert_eq!(lead["stage"], "disqualified", "{lead:#}");
    let last = lead["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["source"]
            .as_str()
            .unwrap()
            .starts_with("rules/30-persona.rhai:"),
        "{last}"
    );
    assert!(
        last["reason"].as_str().unwrap().contains("student"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_does_not_count_twice() {
    let app = spawn_app().await;
    let batch = json!({ "batch": mql_journey("retry@example.com") });
    let (_, first) = app.post("/v1/batch", &batch).await;
    assert_eq!(first["accepted"], 5);
    app.settle().await;
    let before = app.lead("retry@example.com").await;

    let (status, again) = app.post("/v1/batch", &batch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["duplicates"], 5, "{again}");
    let stats = app.settle().await;
    assert_eq!(stats["events_received"], 5, "{stats}");
    assert_eq!(stats["events_processed"], 5, "{stats}");
    assert_eq!(stats["events_duplicate"], 5, "{stats}");
    let after = app.lead("retry@example.com").await;
    assert_eq!(before["interest"], after["interest"]);
    assert_eq!(before["fit"], after["fit"]);
    assert_eq!(after["recent_activity"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_accepted_event_and_lead_state() {
    let app = spawn_app().await;
    let (_, body) = app.post_journey("keep@example.com").await;
    assert_eq!(body["accepted"], 5);
    // Stop at once: whatever was not processed yet must be after the restart.
    let dir = app.stop().await;

    let app = spawn_in(dir).await;
    let stats = app.settle().await;
    assert_eq!(stats["events_received"], 5, "{stats}");
    assert_eq!(stats["events_processed"], 5, "{stats}");
    let lead = app.lead("keep@example.com").await;
    assert_eq!(lead["stage"], "mql");
    let state = (
        lead["fit"].clone(),
        lead["interest"].clone(),
        lead["stage_history"].clone(),
    );

    let dir = app.stop().await;
    let app = spawn_in(dir).await;
    let lead = app.lead("keep@example.com").await;
    assert_eq!(
        state,
        (
            lead["fit"].clone(),
            lead["interest"].clone(),
            lead["stage_history"].clone()
        )
    );
    assert_eq!(app.stats().await["events_received"], 5);
    // The cheap counters for polling agree with the full ones.
    app.settle().await;
    let (status, queue) = app.get("/v1/stats/queue").await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    assert_eq!(queue["events_received"], 5, "{queue}");
    assert_eq!(queue["events_processed"], 5, "{queue}");
    assert_eq!(queue["events_pending"], 0, "{queue}");
    assert_eq!(queue["handoffs_waiting"], 0, "{queue}");
    assert!(queue["processing"]["cached_leads"].is_u64(), "{queue}");
    assert!(queue.get("stages").is_none(), "{queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_errors_and_stores_nothing() {
    let app = spawn_app().await;

    let (status, body) = app
        .post_raw("/v1/track", "{\"event\": ".into(), Some(TOKEN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_input");
    assert_eq!(body["details"][0]["path"], "$");
    assert!(
        body["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    let (status, body) = app
        .post("/v1/track", &json!({"userId": "a@example.com"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["details"][0]["path"], "event", "{body}");

    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "userId": "ok@example.com"},
                {"type": "track", "userId": "ok@example.com", "event": "Email Clicked"},
                {"type": "track", "userId": "ok@example.com"},
                {"type": "merge", "userId": "ok@example.com"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let details: Vec<(Value, Value)> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["index"].clone(), d["path"].clone()))
        .collect();
    assert_eq!(
        details,
        vec![
            (json!(2), json!("batch[2].event")),
            (json!(3), json!("batch[3].type"))
        ],
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );

    // A track for an unknown lead without an e-mail: 400, and the valid item before it
    // in the same batch is not stored either.
    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "userId": "new@example.com"},
                {"type": "track", "userId": "crm-unknown", "event": "Email Clicked"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["details"][0]["index"], 1);
    assert_eq!(body["details"][0]["path"], "batch[1].userId");
    let stats = app.stats().await;
    assert_eq!(stats["events_received"], 0, "{stats}");
    assert_eq!(stats["leads"], 0, "{stats}");

    // Tokens.
    let (status, body) = app.post_raw("/v1/track", "{}".into(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = app
        .post_raw("/v1/track", "{}".into(), Some("wrong-token"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}:"));
    let resp = app
        .client
        .post(format!("{}/v1/track", app.base))
        .header("authorization", format!("Basic {basic}"))
        .body(json!({"userId": "basic@example.com", "event": "Email Clicked"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_moves_a_lead_through_the_api() {
    let app = spawn_app().await;
    app.post_journey("sal@example.com").await;
    app.settle().await;
    let (status, body) = app
        .post("/v1/leads/sal@example.com/stage",
              &json!({"stage": "sal", "reason": "accepted: right contact, budget talk booked", "by": "sales:jonas"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true);
    let lead = app.lead("sal@example.com").await;
    assert_eq!(lead["stage"], "sal");
    let last = lead["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "api:sales:jonas");
    assert_eq!(last["source_kind"], "api");
    assert_eq!(last["from"], "mql");

    let (status, body) = app
        .post(
            "/v1/leads/sal@example.com/stage",
            &json!({"stage": "won", "reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("customer"),
        "{body}"
    );
    let (status, _) = app
        .post(
            "/v1/leads/nobody@example.com/stage",
            &json!({"stage": "sal", "reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/leads/nobody@example.com").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Many single-event requests at once share write transactions; each still gets its
/// own answer: stored, a duplicate, or refused without touching the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_answer() {
    let app = spawn_app().await;
    let mut calls = Vec::new();
    for n in 0..200 {
        let body = match n % 50 {
            // An unknown user id without an address: refused.
            7 => {
                json!({"userId": "nobody-known", "event": "Email Clicked", "messageId": format!("c-{n}")})
            }
            // The same message twice: one stored, one duplicate.
            13 | 14 => {
                json!({"userId": "twice@example.com", "event": "Email Clicked", "messageId": format!("twice-{}", n / 50)})
            }
            _ => {
                json!({"userId": format!("c{}@example.com", n % 20), "event": "Email Clicked", "messageId": format!("c-{n}")})
            }
        };
        let app_client = app.client.clone();
        let url = format!("{}/v1/track", app.base);
        calls.push(tokio::spawn(async move {
            let resp = app_client
                .post(url)
                .bearer_auth(crate::helpers::TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (n, resp.status(), resp.json::<Value>().await.unwrap())
        }));
    }
    let (mut stored, mut duplicates, mut refused) = (0, 0, 0);
    for c in calls {
        let (n, status, body) = c.await.unwrap();
        match n % 50 {
            7 => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
                assert_eq!(body["details"][0]["path"], "userId", "{body}");
                refused += 1;
            }
            _ => {
                assert_eq!(status, StatusCode::OK, "{body}");
                stored += body["accepted"].as_i64().unwrap();
                duplicates += body["duplicates"].as_i64().unwrap();
            }
        }
    }
    assert_eq!((stored, duplicates, refused), (192, 4, 4));
    let stats = app.settle().await;
    assert_eq!(stats["events_received"], 192, "{stats}");
    assert_eq!(stats["events_processed"], 192, "{stats}");
    assert_eq!(stats["leads"], 21, "{stats}");
}
