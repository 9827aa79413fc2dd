//! API keys and the public surface over real HTTP: scopes per route group, `by` from
//! the key's name, HTTP Basic with the empty password only, `/healthz` without details
//! and `/v1/health` behind a key, CORS for the intake routes, and the rate limit of the
//! link routes.

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, cli_in, mql_journey, prepare_dir, spawn_in, text};

const WEB: &str = "web-key-0123456789abcdef";
const READER: &str = "reader-key-0123456789abcdef";
const CRM: &str = "crm-key-0123456789abcdef";
const ORIGIN: &str = "https://www.example.com";

/// A daemon with an ingest key (`website`), a read key (`dashboard`, given as a hash),
/// a read and write key (`crm`), and `extra` appended to the config.
async fn spawn_with_keys(extra: &str) -> TestApp {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n{extra}\n\
         [[api_keys]]\nname = \"website\"\nkey = \"{WEB}\"\nscopes = [\"ingest\"]\n\
         [[api_keys]]\nname = \"dashboard\"\nkey_hash = \"{}\"\nscopes = [\"read\"]\n\
         [[api_keys]]\nname = \"crm\"\nkey = \"{CRM}\"\nscopes = [\"read\", \"write\"]\n",
        nurtured::config::http::key_hash(READER)
    ));
    std::fs::write(&path, text).unwrap();
    spawn_in(dir).await
}

/// Sends `body` (or nothing) with `key` as Bearer token; the status and the JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_does_what_its_scopes_allow() {
    let app = spawn_with_keys("").await;
    let email = "keys@example.com";

    // The website's key sends events...
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/batch",
        Some(WEB),
        Some(json!({ "batch": mql_journey(email) })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/track",
        Some(WEB),
        Some(json!({"userId": email, "event": "Email Clicked", "messageId": "k-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    // ...but reads no lead: 403 naming the scope it lacks.
    let lead_path = format!("/v1/leads/{email}");
    let (status, body) = call(&app, Method::GET, &lead_path, Some(WEB), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`website`"), "{message}");
    assert!(message.contains("`read` scope"), "{message}");
    assert!(!message.contains(WEB), "{message}");
    let (status, _) = call(&app, Method::GET, "/v1/mails", Some(WEB), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The read key reads, but sends no events and moves no stage.
    let (status, lead) = call(&app, Method::GET, &lead_path, Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{lead}");
    assert_eq!(lead["stage"], "mql");
    for path in ["/v1/stats", "/v1/handoffs", "/v1/reports/funnel"] {
        let (status, body) = call(&app, Method::GET, path, Some(READER), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let move_to_sal = json!({"stage": "sal", "reason": "called back", "by": "anna"});
    let stage_path = format!("/v1/leads/{email}/stage");
    let (status, body) = call(
        &app,
        Method::POST,
        &stage_path,
        Some(READER),
        Some(move_to_sal.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("`write` scope"),
        "{body}"
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/track",
        Some(READER),
        Some(json!({"userId": email, "event": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The CRM's key moves the stage; the history names the key, not the `by` it sent
    // (only an admin key may name someone).
    let (status, body) = call(
        &app,
        Method::POST,
        &stage_path,
        Some(CRM),
        Some(move_to_sal),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true);
    let lead = app.lead(email).await;
    let last = lead["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["to"], "sal", "{last}");
    assert_eq!(last["source"], "api:crm", "{last}");

    // The admin token names someone; without a name it is `api:api_token`.
    let (status, body) = app
        .post(
            &stage_path,
            &json!({"stage": "sql", "reason": "budget confirmed", "by": "jonas"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &stage_path,
            &json!({"stage": "mql", "reason": "back to marketing"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lead = app.lead(email).await;
    let sources: Vec<&str> = lead["stage_history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["api:api_token", "api:jonas"]);

    // No key, or a wrong one: 401, and the wrong key is not repeated.
    let (status, body) = call(&app, Method::GET, &lead_path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(&app, Method::GET, &lead_path, Some("guessed-key-42"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.to_string().contains("guessed-key-42"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_needs_the_empty_password() {
    let app = spawn_with_keys("").await;
    let send = |user_pass: String| {
        let basic = base64::engine::general_purpose::STANDARD.encode(user_pass);
        app.client
            .post(format!("{}/v1/track", app.base))
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/json")
            .body(json!({"userId": "basic@example.com", "event": "Email Clicked"}).to_string())
            .send()
    };
    let resp = send(format!("{WEB}:")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(format!("{WEB}:anything")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("empty password"), "{message}");
    assert!(!message.contains(WEB), "{message}");
    let resp = send(format!("{TOKEN}:x")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_only_ok_and_details_need_a_read_key() {
    let app = spawn_with_keys("").await;
    let resp = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"status": "ok"}));

    let (status, _) = call(&app, Method::GET, "/v1/health", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, Method::GET, "/v1/health", Some(WEB), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, Method::GET, "/v1/health", Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["database"]["ok"], true, "{body}");
    assert!(body["backlog"]["events_pending"].is_i64(), "{body}");
    assert!(body.get("lease").is_some(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_website_script_may_send_events_but_read_nothing() {
    let app = spawn_with_keys(&format!("[http]\ncors_origins = [\"{ORIGIN}\"]\n")).await;
    let preflight = |path: &str, origin: &str| {
        app.client
            .request(Method::OPTIONS, format!("{}{path}", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let resp = preflight("/v1/track", ORIGIN).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    // Another site gets no permission; the lead routes send no CORS headers at all.
    let resp = preflight("/v1/track", "https://evil.example")
        .await
        .unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        resp.headers()
    );
    let resp = preflight("/v1/leads/x@example.com", ORIGIN).await.unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "{:?}",
        resp.headers()
    );

    // The request that follows the preflight.
    let resp = app
        .client
        .post(format!("{}/v1/page", app.base))
        .header("origin", ORIGIN)
        .bearer_auth(WEB)
        .header("content-type", "application/json")
        .body(json!({"userId": "site@example.com", "name": "Pricing"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], ORIGIN);
    let resp = app
        .client
        .get(format!("{}/v1/leads/site@example.com", app.base))
        .header("origin", ORIGIN)
        .bearer_auth(WEB)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_link_requests_from_one_address_gets_429() {
    let app = spawn_with_keys(
        "[http]\nlink_rate = \"1/h\"\nlink_burst = 5\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .await;
    let open = |forwarded: Option<&str>| {
        let mut req = app.client.get(format!("{}/o/not-a-token", app.base));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        req.send()
    };
    // Normal use: a few clicks pass (to the link's own answer).
    for _ in 0..5 {
        let resp = open(Some("198.51.100.7")).await.unwrap();
        assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // One more from the same client: refused, with when to come back.
    let resp = open(Some("198.51.100.7")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // The limit is per client: another one behind the same proxy still gets through,
    // and so does the API.
    let resp = open(Some("203.0.113.9")).await.unwrap();
    assert_ne!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    for path in ["/u/not-a-token", "/c/not-a-token", "/confirm/x", "/h/x"] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .header("x-forwarded-for", "198.51.100.7")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
    let (status, _) = app.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_answered_with_a_write_key_names_the_key() {
    let app = spawn_with_keys("").await;
    let email = "handoff-key@example.com";
    let (status, body) = app.post_journey(email).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The MQL goes to sales; wait until an owner has it.
    let start = std::time::Instant::now();
    let id = loop {
        let (status, body) = call(&app, Method::GET, "/v1/handoffs", Some(READER), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let open = body["handoffs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["email"] == email && h["state"] == "open")
            .map(|h| h["id"].as_i64().unwrap());
        if let Some(id) = open {
            break id;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no open handoff: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let accept = format!("/v1/handoffs/{id}/accept");
    let (status, _) = call(&app, Method::POST, &accept, Some(READER), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, h) = call(
        &app,
        Method::POST,
        &accept,
        Some(CRM),
        Some(json!({"by": "anna"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(h["state"], "accepted", "{h}");
    assert_eq!(h["answered_by"], "api:crm", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_by_the_command_line_works_with_its_printed_entry() {
    let dir = prepare_dir();
    let out = cli_in(dir.path(), &["key", "new", "shop", "--scopes", "ingest"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().next().unwrap().trim().to_string();
    assert!(key.starts_with("nk_"), "{stdout}");
    let entry = &stdout[stdout.find("[[api_keys]]").expect("an entry")..];
    assert!(
        !entry.contains(&key),
        "the entry holds only the hash:\n{entry}"
    );
    let path = dir.path().join("nurtured.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{config}\n{entry}")).unwrap();
    let app = spawn_in(dir).await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/identify",
        Some(&key),
        Some(json!({"userId": "shop@example.com", "traits": {"email": "shop@example.com"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&app, Method::GET, "/v1/stats", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let out = cli_in(
        app.dir.path(),
        &["key", "new", "shop", "--scopes", "ingest,owner"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("`owner` is not a scope"),
        "{}",
        text(&out)
    );
}
