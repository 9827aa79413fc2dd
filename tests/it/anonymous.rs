//! Anonymous visitors over real HTTP: anonymous page views wait until an identify with
//! the same `anonymousId` joins them to the lead, once and in time order; `alias` and
//! `group`; gzip bodies and the zip bomb.

use std::io::Write;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, spawn_app};

fn ago(minutes: i64) -> String {
    (Utc::now() - Duration::minutes(minutes)).to_rfc3339()
}

fn pricing_points(lead: &Value) -> Vec<(f64, String)> {
    lead["score_ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"].as_str().unwrap_or("").contains("pricing"))
        .map(|s| {
            (
                s["delta"].as_f64().unwrap_or(f64::NAN),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_page_views_count_for_the_lead_once_after_identify() {
    let app = spawn_app().await;
    let visitor = "anon-7f3a";
    // A Segment batch: two anonymous page views, then the sign-up.
    let batch = json!({"batch": [
        {"type": "page", "anonymousId": visitor, "messageId": "p-1", "name": "Home",
         "properties": {"url": "https://acme.example/"}, "timestamp": ago(90)},
        {"type": "page", "anonymousId": visitor, "messageId": "p-2", "name": "Pricing",
         "properties": {"url": "https://acme.example/pricing?plan=pro"}, "timestamp": ago(60)},
    ]});
    let (status, body) = app.post("/v1/batch", &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["leads_created"], 0, "{body}");
    app.settle().await;
    let profile = app
        .running
        .as_ref()
        .unwrap()
        .app
        .processor
        .store
        .anonymous_profile(visitor)
        .await
        .unwrap()
        .expect("a profile for the visitor");
    assert_eq!((profile.lead_id, profile.waiting_events), (None, 2));

    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "anonymousId": visitor, "userId": "crm-77", "messageId": "i-1",
                 "traits": {"email": "mia.berg@acme.example", "name": "Mia Berg"}, "timestamp": ago(5)},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["accepted"].as_i64(), body["leads_created"].as_i64()),
        (Some(1), Some(1))
    );
    app.settle().await;
    let lead = app.lead("mia.berg@acme.example").await;
    let pricing = pricing_points(&lead);
    assert_eq!(pricing.len(), 1, "{lead:#}");
    assert_eq!(pricing[0].0, 25.0, "{lead:#}");
    // The joined events keep their own times and come before the identify.
    let activity = lead["recent_activity"].as_array().unwrap();
    let kinds: Vec<&str> = activity
        .iter()
        .rev()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["page", "page", "identify"], "{lead:#}");
    assert_eq!(activity[1]["properties"]["path"], "/pricing");
    let when =
        chrono::DateTime::parse_from_rfc3339(activity[1]["occurred_at"].as_str().unwrap()).unwrap();
    assert!(Utc::now() - when.with_timezone(&Utc) > Duration::minutes(55));
    let interest = lead["interest"].as_f64().unwrap();

    // A second identify with the same anonymousId, and a replay of the whole history,
    // count nothing again.
    let (status, _) = app
        .post(
            "/v1/identify",
            &json!({"anonymousId": visitor, "userId": "crm-77", "messageId": "i-2",
                    "traits": {"email": "mia.berg@acme.example"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.post("/v1/batch", &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicates"], 2, "{body}");
    app.settle().await;
    let lead = app.lead("mia.berg@acme.example").await;
    assert_eq!(pricing_points(&lead).len(), 1, "{lead:#}");
    assert_eq!(lead["interest"].as_f64().unwrap(), interest, "{lead:#}");

    // Later anonymous events of a joined visitor go to the lead at once.
    let (status, _) = app
        .post(
            "/v1/track",
            &json!({"anonymousId": visitor, "event": "Webinar Attended", "messageId": "t-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.settle().await;
    let lead = app.lead("mia.berg@acme.example").await;
    assert!(
        lead["score_ledger"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["reason"] == "attended a webinar"),
        "{lead:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_anonymous_and_known_events_is_stored_whole() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "userId": "ole@acme.example", "messageId": "m-1"},
                {"type": "track", "anonymousId": "a-1", "event": "Content Downloaded", "messageId": "m-2",
                 "properties": {"asset": "Price list", "type": "price_brochure"}},
                {"type": "screen", "anonymousId": "a-1", "name": "Pricing", "messageId": "m-3",
                 "properties": {"url": "app://pricing"}},
                {"type": "track", "userId": "ole@acme.example", "event": "Webinar Attended", "messageId": "m-4"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 4, "{body}");
    app.settle().await;
    let lead = app.lead("ole@acme.example").await;
    assert_eq!(
        lead["recent_activity"].as_array().unwrap().len(),
        2,
        "{lead:#}"
    );
    let store = &app.running.as_ref().unwrap().app.processor.store;
    let p = store.anonymous_profile("a-1").await.unwrap().unwrap();
    assert_eq!(p.waiting_events, 2);

    // A track naming the lead by address and carrying the visitor joins it, in the
    // order the events happened: the price list before the later track.
    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"anonymousId": "a-1", "event": "Demo Requested", "messageId": "m-5",
                    "context": {"traits": {"email": "ole@acme.example"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let lead = app.lead("ole@acme.example").await;
    let names: Vec<&str> = lead["recent_activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Demo Requested",
            "Page Viewed",
            "Content Downloaded",
            "Webinar Attended",
            "Identify"
        ],
        "{lead:#}"
    );
    let reasons: Vec<&str> = lead["score_ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"downloaded the price brochure"),
        "{reasons:?}"
    );
    let p = store.anonymous_profile("a-1").await.unwrap().unwrap();
    assert_eq!(p.waiting_events, 0);
    assert!(p.lead_id.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_joins_the_visitor_and_group_traits_reach_every_member() {
    let app = spawn_app().await;
    // An anonymous pricing view and a group call of the visitor, then an alias to a
    // userId no lead has yet, then the identify of that userId.
    for (path, body) in [
        (
            "/v1/page",
            json!({"anonymousId": "v-9", "name": "Pricing", "messageId": "a-1",
                   "properties": {"url": "https://acme.example/preise"}, "timestamp": ago(30)}),
        ),
        (
            "/v1/group",
            json!({"anonymousId": "v-9", "groupId": "acme", "messageId": "a-2",
                   "traits": {"name": "ACME GmbH", "industry": "Maschinenbau", "employees": 250,
                              "plan": "enterprise"}}),
        ),
        (
            "/v1/alias",
            json!({"previousId": "v-9", "userId": "crm-500", "messageId": "a-3"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "crm-500", "messageId": "a-4",
                   "traits": {"email": "jan.roth@acme.example", "firstName": "Jan"}}),
        ),
    ] {
        let (status, body) = app.post(path, &body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    app.settle().await;
    let jan = app.lead("jan.roth@acme.example").await;
    assert_eq!(pricing_points(&jan).len(), 1, "{jan:#}");
    assert_eq!(jan["company"], "ACME GmbH", "{jan:#}");
    assert_eq!(jan["industry"], "Maschinenbau", "{jan:#}");
    assert_eq!(jan["employees"], 250, "{jan:#}");
    assert_eq!(jan["attributes"]["company_plan"], "enterprise", "{jan:#}");

    // A second member joins by userId; a later group call updates both.
    for (path, body) in [
        (
            "/v1/identify",
            json!({"userId": "eva@acme.example", "messageId": "b-1"}),
        ),
        (
            "/v1/group",
            json!({"userId": "eva@acme.example", "groupId": "acme", "messageId": "b-2",
                   "traits": {"employees": 300}}),
        ),
    ] {
        let (status, body) = app.post(path, &body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    app.settle().await;
    let eva = app.lead("eva@acme.example").await;
    let jan = app.lead("jan.roth@acme.example").await;
    assert_eq!(eva["employees"], 300, "{eva:#}");
    assert_eq!(jan["employees"], 300, "{jan:#}");
    assert_eq!(jan["company"], "ACME GmbH", "{jan:#}");
    let store = &app.running.as_ref().unwrap().app.processor.store;
    let jan_id = jan["id"].as_i64().unwrap();
    assert_eq!(store.groups_of_lead(jan_id).await.unwrap(), ["acme"]);

    // An alias from the lead's userId to a new one: the lead is known by the new one.
    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "alias", "previousId": "crm-500", "userId": "crm-501", "messageId": "c-1"},
                {"type": "track", "userId": "crm-501", "event": "Demo Requested", "messageId": "c-2"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = app
        .post(
            "/v1/alias",
            &json!({"previousId": "crm-500", "userId": "crm-501", "messageId": "c-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": "crm-501", "event": "Demo Requested", "messageId": "c-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let jan = app.lead("jan.roth@acme.example").await;
    assert_eq!(jan["external_id"], "crm-501", "{jan:#}");
    assert_eq!(
        jan["recent_activity"][0]["name"], "Demo Requested",
        "{jan:#}"
    );
    assert!(
        store.anonymous_profile("crm-500").await.unwrap().is_none(),
        "a lead's previous userId is not a visitor"
    );

    // A group call without groupId is refused with the field named.
    let (status, body) = app
        .post("/v1/group", &json!({"userId": "eva@acme.example"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["details"][0]["path"], "groupId", "{body}");
    assert_eq!(body["code"], "invalid_input", "{body}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_inflated_and_a_zip_bomb_is_refused() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        client
            .post(format!("{}/v1/batch", app.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
    };
    let batch = json!({"batch": [
        {"type": "track", "userId": "zip@acme.example", "event": "Webinar Attended", "messageId": "z-1"},
    ]});
    let resp = send(gzip(batch.to_string().as_bytes())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");

    // 64 MiB of spaces (valid JSON padding) in a body of about 64 KiB: more than the
    // 8 MiB limit once inflated.
    let limit = app.running.as_ref().unwrap().app.config.max_request_bytes;
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < limit / 16, "{}", bomb.len());
    let resp = send(bomb).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_body", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("inflated"),
        "{body}"
    );

    // Not gzip at all.
    let resp = send(b"{\"batch\": []}".to_vec()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("gzip"), "{body}");
    app.settle().await;
    assert_eq!(app.stats().await["events_received"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_profiles_never_joined_are_deleted_after_the_cutoff() {
    let app = spawn_app().await;
    for (visitor, id) in [("old-1", "o-1"), ("kept-1", "o-2")] {
        let (status, body) = app
            .post(
                "/v1/page",
                &json!({"anonymousId": visitor, "messageId": id,
                        "properties": {"url": "https://acme.example/pricing"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = app
        .post(
            "/v1/identify",
            &json!({"anonymousId": "kept-1", "userId": "kim@acme.example", "messageId": "o-3"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stats = app.settle().await;
    assert_eq!(
        (
            stats["events_received"].as_i64(),
            stats["events_processed"].as_i64(),
            stats["events_anonymous"].as_i64()
        ),
        (Some(3), Some(2), Some(1)),
        "{stats}"
    );
    let store = &app.running.as_ref().unwrap().app.processor.store;
    // Nothing is old enough yet.
    let n = store
        .delete_anonymous_before(Utc::now() - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = store
        .delete_anonymous_before(Utc::now() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(store.anonymous_profile("old-1").await.unwrap(), None);
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["events_received"].as_i64(),
            stats["events_processed"].as_i64(),
            stats["events_anonymous"].as_i64()
        ),
        (Some(2), Some(2), Some(0)),
        "{stats}"
    );
    // The joined profile stays, and the lead keeps its events.
    assert!(store.anonymous_profile("kept-1").await.unwrap().is_some());
    let lead = app.lead("kim@acme.example").await;
    assert_eq!(
        lead["recent_activity"].as_array().unwrap().len(),
        2,
        "{lead:#}"
    );
}

/// A second daemon on the same database when the tests run on PostgreSQL (cluster
/// mode); on SQLite (one daemon per database) the same requests go to one daemon.
async fn second_daemon(first: &crate::helpers::TestApp) -> Option<crate::helpers::TestApp> {
    nurtured::store::testing::postgres_server()?;
    let dir = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(first.dir.path().join("nurtured.toml")).unwrap();
    std::fs::write(
        dir.path().join("nurtured.toml"),
        format!("{toml}\n[cluster]\nname = \"second\"\n"),
    )
    .unwrap();
    crate::helpers::copy_tree(&first.dir.path().join("rules"), &dir.path().join("rules"));
    crate::helpers::copy_tree(
        &first.dir.path().join("templates"),
        &dir.path().join("templates"),
    );
    Some(crate::helpers::spawn_in(dir).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identifies_of_one_visitor_join_its_history_once() {
    let app = spawn_app().await;
    let other = second_daemon(&app).await;
    let target = other.as_ref().unwrap_or(&app);
    let (status, body) = app
        .post(
            "/v1/page",
            &json!({"anonymousId": "both-1", "messageId": "c-1", "timestamp": ago(10),
                    "properties": {"url": "https://acme.example/pricing"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let identify =
        |id: &str| json!({"anonymousId": "both-1", "messageId": id, "userId": "lou@acme.example"});
    let (i2, i3, i4) = (identify("c-2"), identify("c-3"), identify("c-4"));
    let (a, b, c) = tokio::join!(
        app.post("/v1/identify", &i2),
        target.post("/v1/identify", &i3),
        target.post("/v1/identify", &i4),
    );
    for (status, body) in [a, b, c] {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    app.settle().await;
    target.settle().await;
    let lead = app.lead("lou@acme.example").await;
    assert_eq!(
        pricing_points(&lead),
        [(25.0, "viewed the pricing page".to_string())],
        "{lead:#}"
    );
    let pages = lead["recent_activity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "page")
        .count();
    assert_eq!(pages, 1, "{lead:#}");
    if let Some(other) = other {
        other.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_anonymous_views_and_the_identify_puts_the_pricing_points_on_the_lead() {
    let app = spawn_app().await;
    let batch = json!({"batch": [
        {"type": "page", "anonymousId": "one-batch", "messageId": "ob-1", "timestamp": ago(40),
         "properties": {"url": "https://acme.example/blog/scoring"}},
        {"type": "page", "anonymousId": "one-batch", "messageId": "ob-2", "timestamp": ago(30),
         "properties": {"url": "https://acme.example/pricing"}},
        {"type": "identify", "anonymousId": "one-batch", "messageId": "ob-3", "timestamp": ago(20),
         "traits": {"email": "ida@acme.example"}},
    ]});
    let (status, body) = app.post("/v1/batch", &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    app.settle().await;
    let lead = app.lead("ida@acme.example").await;
    assert_eq!(
        pricing_points(&lead),
        [(25.0, "viewed the pricing page".to_string())],
        "{lead:#}"
    );
    assert_eq!(lead["interest"].as_f64().unwrap(), 26.0, "{lead:#}");
    // The pricing view's points carry the view's own event.
    let seqs: Vec<i64> = lead["recent_activity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["properties"]["path"] == "/pricing")
        .map(|a| a["seq"].as_i64().unwrap())
        .collect();
    let ledger = lead["score_ledger"].as_array().unwrap();
    let pricing = ledger
        .iter()
        .find(|s| s["reason"] == "viewed the pricing page")
        .unwrap();
    assert_eq!(seqs, [pricing["event"].as_i64().unwrap()], "{lead:#}");
    let store = &app.running.as_ref().unwrap().app.processor.store;
    let p = store.anonymous_profile("one-batch").await.unwrap().unwrap();
    assert_eq!((p.lead_id, p.waiting_events), (lead["id"].as_i64(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_id_first_seen_with_a_lead_keeps_pointing_at_it() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": "pia@acme.example", "anonymousId": "tab-1", "messageId": "k-1",
                    "event": "Webinar Registered"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The CRM id arrives later with the same anonymousId: the lead is known by it.
    let (status, body) = app
        .post(
            "/v1/identify",
            &json!({"userId": "crm-pia", "anonymousId": "tab-1", "messageId": "k-0",
                    "traits": {"title": "CFO"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // After a logout the tracker sends the same anonymousId alone.
    let (status, body) = app
        .post(
            "/v1/page",
            &json!({"anonymousId": "tab-1", "messageId": "k-2",
                    "properties": {"url": "https://acme.example/pricing"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let lead = app.lead("pia@acme.example").await;
    assert_eq!(pricing_points(&lead).len(), 1, "{lead:#}");
    assert_eq!(lead["external_id"], "crm-pia", "{lead:#}");
    assert_eq!(lead["title"], "CFO", "{lead:#}");
    let store = &app.running.as_ref().unwrap().app.processor.store;
    let p = store.anonymous_profile("tab-1").await.unwrap().unwrap();
    assert_eq!((p.lead_id, p.waiting_events), (lead["id"].as_i64(), 0));
}
