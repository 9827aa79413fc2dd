//! Privacy end to end: the export of a lead with events, mails sent through a real SMTP
//! server and a handoff; the erasure (no byte of the address left in the SQLite file,
//! its WAL and shared memory; reports count the same; a re-import without new consent
//! gets no marketing mail); the retention job (old events and mail bodies go, scores
//! and reports stay). On PostgreSQL everything but the file search.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use nurtured::clock::ManualClock;
use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, cli_in, eventually, mail_dir, mql_journey, share, spawn_in, start_in, text,
};
use crate::mail::{download, mails_to};

/// Sends DELETE with a JSON body; the status and the answer.
async fn delete(app: &TestApp, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = app
        .client
        .delete(format!("{}{path}", app.base))
        .bearer_auth(crate::helpers::TOKEN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A report without its period (which names the time it was made).
fn figures(mut report: Value) -> Value {
    report.as_object_mut().unwrap().remove("period");
    report
}

/// The lead's journey to MQL (a handoff to sales), with marketing consent given on a
/// LinkedIn campaign's form, and two downloads on one topic (a trigger mail).
fn journey(email: &str) -> Vec<Value> {
    let mut events = vec![json!({
        "type": "identify", "userId": email, "messageId": format!("c-{email}"),
        "traits": {"email": email, "first_name": "Anna", "last_name": "Schmidt",
                   "consent_email": true, "consent_source": "contact form"},
        "context": {"campaign": {"source": "LinkedIn"}}})];
    events.extend(mql_journey(email).into_iter().map(|mut e| {
        e["userId"] = json!(email);
        e["messageId"] = json!(format!("{}-{email}", e["messageId"].as_str().unwrap()));
        e
    }));
    for (i, asset) in ["SIEM im Mittelstand", "Zero Trust"].iter().enumerate() {
        let mut d = download(email, "security", asset);
        d["type"] = json!("track");
        d["messageId"] = json!(format!("d-{i}-{email}"));
        events.push(d);
    }
    events
}

/// Whether any of `files` holds any of `needles` (bytes, as written).
fn found_in(files: &[std::path::PathBuf], needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                hits.push(format!("{n} in {}", f.display()));
            }
        }
    }
    hits
}

fn db_files(dir: &Path) -> Vec<std::path::PathBuf> {
    ["nurtured.db", "nurtured.db-wal", "nurtured.db-shm"]
        .iter()
        .map(|f| dir.join("data").join(f))
        .collect()
}

fn on_postgres() -> bool {
    nurtured::store::testing::postgres_server().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_has_everything_and_erase_leaves_no_trace_while_reports_count_the_same() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let shown = "Anna.Schmidt@Kunde.example";
    let email = "anna.schmidt@kunde.example";
    let (status, body) = app
        .post("/v1/batch", &json!({ "batch": journey(shown) }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;

    // The trigger mail went out through SMTP, and the lead went to sales.
    let mail = eventually("the trigger mail", 10, || mails_to(&sink, email).pop()).await;
    let subject = mail.header("Subject").expect("a subject");
    let mut handoff = Value::Null;
    for _ in 0..200 {
        let (_, handoffs) = app.get("/v1/handoffs?limit=10").await;
        handoff = handoffs["handoffs"][0].clone();
        if handoff["state"] == "open" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(handoff["state"], "open", "{handoff}");
    let handoffs = json!({ "handoffs": [handoff.clone()] });
    assert_eq!(handoff["email"], email, "{handoffs}");
    let (status, body) = app
        .post(
            &format!("/v1/handoffs/{}/accept", handoff["id"]),
            &json!({"by": "anna"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let sent = async || {
        let (_, mails) = app.get(&format!("/v1/mails?lead={email}")).await;
        mails["mails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["status"] == "sent" && m["class"] == "marketing")
    };
    for _ in 0..100 {
        if sent().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(sent().await, "the marketing mail is recorded as sent");

    // The export: everything, one document.
    let (status, export) = app.get(&format!("/v1/leads/{shown}/export")).await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["version"], 1);
    assert!(export["exported_at"].as_str().unwrap().ends_with('Z'));
    let data = &export["data"];
    assert_eq!(data["lead"]["email"], email);
    assert_eq!(data["lead"]["last_name"], "Schmidt");
    assert_eq!(data["lead"]["consent_email"], true);
    let events = data["events"].as_array().unwrap();
    assert_eq!(events.len(), 8, "{events:?}");
    assert!(events.iter().any(|e| e["traits"]["last_name"] == "Schmidt"));
    assert!(
        events
            .iter()
            .any(|e| e["context"]["campaign"]["source"] == "LinkedIn")
    );
    let consent = data["consent_log"].as_array().unwrap();
    assert!(
        consent
            .iter()
            .any(|c| c["kind"] == "email" && c["granted"] == true && c["source"] == "contact form"),
        "{consent:?}"
    );
    assert!(!data["score_ledger"].as_array().unwrap().is_empty());
    assert!(data["stage_history"].as_array().unwrap().len() >= 2);
    assert!(
        !data["tag_ledger"].as_array().unwrap().is_empty(),
        "who set the tags"
    );
    let mails = data["mails"].as_array().unwrap();
    let marketing = mails
        .iter()
        .find(|m| m["status"] == "sent" && m["subject"].as_str() == Some(subject.as_str()))
        .unwrap_or_else(|| panic!("{subject}: {mails:?}"));
    assert_eq!(marketing["class"], "marketing");
    assert!(!marketing["text_body"].as_str().unwrap().is_empty());
    assert!(
        mails.iter().any(|m| m["class"] == "internal"),
        "the handoff mail to sales"
    );
    assert_eq!(data["handoffs"].as_array().unwrap().len(), 1);
    assert_eq!(data["handoffs"][0]["state"], "accepted");
    assert!(data["handoff_log"].as_array().unwrap().len() >= 2);
    assert!(data["webhooks"].is_array());
    assert!(data["suppressions"].is_array());

    // The command line writes the same document.
    let out = app.dir.path().join("export.json");
    let run = app.cli(&["lead", "export", email, "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(file["data"]["events"], export["data"]["events"]);
    std::fs::remove_file(&out).unwrap();

    let (_, funnel_before) = app.get("/v1/reports/funnel?days=7").await;
    let (_, sla_before) = app.get("/v1/reports/sla?days=7").await;
    assert_eq!(funnel_before["leads_created"], 1, "{funnel_before}");
    assert_eq!(funnel_before["channels"][0]["channel"], "linkedin");

    // The command line refuses while the daemon works on the base.
    let run = app.cli(&["lead", "erase", email]);
    assert!(!run.status.success());
    assert!(text(&run).contains("DELETE"), "{}", text(&run));

    if !on_postgres() {
        let files = db_files(app.dir.path());
        assert!(files[0].exists(), "{}", files[0].display());
        let hits = found_in(&files, &[email]);
        assert!(
            !hits.is_empty(),
            "the search finds the address before the erasure"
        );
    }
    let (status, erased) = delete(
        &app,
        &format!("/v1/leads/{shown}?by=dpo"),
        Some(json!({"reason": "Art. 17 request, ticket 4711"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(erased["removed"]["events"], 8, "{erased}");
    assert!(erased["removed"]["mail_content"].as_u64().unwrap() >= 2);
    assert!(
        erased["removed"]["tag_ledger"].as_u64().unwrap() >= 1,
        "{erased}"
    );

    // Gone for every reader; a second erasure is a clear 404.
    let (status, _) = app.get(&format!("/v1/leads/{email}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("/v1/leads/{email}/export")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, again) = delete(&app, &format!("/v1/leads/{email}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{again}");
    assert!(again.to_string().contains("no lead with e-mail"), "{again}");

    // Reports count the lead as before.
    let (_, funnel_after) = app.get("/v1/reports/funnel?days=7").await;
    let (_, sla_after) = app.get("/v1/reports/sla?days=7").await;
    assert_eq!(figures(funnel_after), figures(funnel_before));
    assert_eq!(figures(sla_after), figures(sla_before));

    // The address is nowhere in the files.
    if !on_postgres() {
        let needles = [email, shown, "Schmidt", "1234567"];
        let hits = found_in(&db_files(app.dir.path()), &needles);
        assert!(hits.is_empty(), "{hits:?}");
    }

    // A re-import of the address with consent claimed in its traits: a new lead, but no
    // marketing mail without new consent.
    let before = mails_to(&sink, email).len();
    let again: Vec<Value> = journey(shown)
        .into_iter()
        .map(|mut e| {
            e["messageId"] = json!(format!("re-{}", e["messageId"].as_str().unwrap()));
            e
        })
        .collect();
    let (status, body) = app.post("/v1/batch", &json!({ "batch": again })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let suppressed = async || {
        let (_, mails) = app.get(&format!("/v1/mails?lead={email}")).await;
        mails["mails"].as_array().unwrap().iter().any(|m| {
            m["class"] == "marketing" && m["status"] == "suppressed" && m["reason"] == "no_consent"
        })
    };
    for _ in 0..100 {
        if suppressed().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(suppressed().await, "the trigger mail is held back");
    assert_eq!(mails_to(&sink, email).len(), before, "no marketing mail");
    // The consent the import claimed is withdrawn on the lead, with the reason.
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert!(
        lead["consent_email"]["source"]
            .as_str()
            .unwrap()
            .starts_with("address erased before"),
        "{lead}"
    );

    // From its creation on: the claimed consent was never granted.
    let (_, export) = app.get(&format!("/v1/leads/{email}/export")).await;
    let ledger = export["data"]["consent_log"].as_array().unwrap();
    assert!(
        !ledger.is_empty() && ledger.iter().all(|c| c["granted"] == false),
        "{ledger:?}"
    );

    // New consent: the double opt-in confirmation, given after the erasure. Then
    // marketing mail flows again.
    app.post(
        "/v1/track",
        &json!({"userId": email, "event": "Newsletter Subscribed"}),
    )
    .await;
    let confirm = eventually("the confirmation mail", 10, || {
        mails_to(&sink, email)
            .into_iter()
            .map(|m| crate::mail::body(&m))
            .find(|t| t.contains("https://mail.example.com/confirm/"))
    })
    .await;
    let token = crate::mail::link_token(&confirm, "https://mail.example.com/confirm/");
    let r = app
        .client
        .post(format!("{}/confirm/{token}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lead = app.lead(email).await;
    assert!(
        lead["consent_email"]["source"]
            .as_str()
            .unwrap()
            .starts_with("double opt-in"),
        "{lead}"
    );
    let with_confirmation = mails_to(&sink, email).len();
    let (status, _) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
            {"type": "track", "userId": email, "event": "Content Downloaded",
             "properties": {"type": "whitepaper", "asset": "Cloud 1", "topic": "cloud"}},
            {"type": "track", "userId": email, "event": "Content Downloaded",
             "properties": {"type": "whitepaper", "asset": "Cloud 2", "topic": "cloud"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("a marketing mail after the new consent", 10, || {
        (mails_to(&sink, email).len() > with_confirmation).then_some(())
    })
    .await;

    let dir = app.stop().await;
    if !on_postgres() {
        let hits = found_in(&db_files(dir.path()), &["Art. 17"]);
        assert!(!hits.is_empty(), "the erasure is recorded with its reason");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_events_and_mail_bodies_and_keeps_scores_and_reports() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(
        sink.port,
        "\n[retention]\nevents = \"30d\"\nmail_content = \"30d\"\n",
    );
    let email = "ben.alt@kunde.example";
    // The daemon lives forty days ago: what it stores is old today.
    let _share = share().await;
    let clock = Arc::new(ManualClock::new(Utc::now() - chrono::Duration::days(40)));
    let running = start_in(dir.path(), clock).await;
    let app = TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
        share: None,
    };
    let (status, body) = app
        .post("/v1/batch", &json!({ "batch": journey(email) }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A visitor who never signs up: deleted after `retention.anonymous` (30 days).
    let (status, body) = app
        .post(
            "/v1/page",
            &json!({ "anonymousId": "visitor-40-days-ago", "name": "Pricing",
                     "properties": { "url": "https://www.example.com/pricing" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.get("/v1/stats").await.1["events_anonymous"], 1);
    app.settle().await;
    eventually("the trigger mail", 10, || mails_to(&sink, email).pop()).await;
    let sent = async || {
        let (_, mails) = app.get(&format!("/v1/mails?lead={email}")).await;
        mails["mails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["status"] == "sent" && m["class"] == "marketing")
    };
    for _ in 0..100 {
        if sent().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(sent().await);
    let dir = app.stop().await;

    let show = |dir: &Path| -> Value {
        let out = cli_in(dir, &["lead", "show", email, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = |dir: &Path| -> Value {
        let out = cli_in(dir, &["report", "funnel", "--days", "60", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        figures(serde_json::from_slice(&out.stdout).unwrap())
    };
    let lead_before = show(dir.path());
    let report_before = report(dir.path());
    assert_eq!(report_before["channels"][0]["channel"], "linkedin");
    assert_eq!(report_before["leads_created"], 1);

    // The daemon, started today, runs the job at once (its last run was 40 days ago).
    let app = spawn_in(dir).await;
    let mut export = Value::Null;
    for _ in 0..200 {
        export = app.get(&format!("/v1/leads/{email}/export")).await.1;
        if export["data"]["events"] == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(export["data"]["events"], json!([]), "{export}");
    for _ in 0..200 {
        if app.get("/v1/stats").await.1["events_anonymous"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.get("/v1/stats").await.1["events_anonymous"], 0);
    let dir = app.stop().await;

    let lead_after = show(dir.path());
    for key in ["stage", "fit", "interest"] {
        assert_eq!(lead_after[key], lead_before[key], "{key}");
    }
    assert_eq!(lead_after["stage_history"], lead_before["stage_history"]);
    assert_eq!(lead_after["score_ledger"], lead_before["score_ledger"]);
    assert_eq!(report(dir.path()), report_before);

    let out = cli_in(dir.path(), &["lead", "export", email]);
    assert!(out.status.success(), "{}", text(&out));
    let export: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(export["data"]["events"], json!([]));
    // The mails of forty days ago keep their rows without their text (the restarted
    // daemon mailed sales about the overdue handoff since: those keep theirs).
    let cutoff = (Utc::now() - chrono::Duration::days(30)).timestamp_millis();
    let old: Vec<&Value> = export["data"]["mails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["finished_at"].as_i64().is_some_and(|t| t < cutoff))
        .collect();
    assert!(old.len() >= 2, "{export}");
    assert!(
        old.iter()
            .all(|m| m["text_body"].is_null() && m["status"] == "sent")
    );

    // A second run finds nothing more; new events are processed on the kept state.
    let out = cli_in(dir.path(), &["retention", "run"]);
    assert!(
        text(&out).contains("deleted 0 raw event(s)"),
        "{}",
        text(&out)
    );
    let app = spawn_in(dir).await;
    let (status, _) = app
        .post("/v1/track", &download(email, "cloud", "Cloud Migration"))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.settle().await;
    let now = app.lead(email).await;
    assert!(
        now["interest"].as_f64().unwrap() >= lead_before["interest"].as_f64().unwrap(),
        "{now}"
    );
    let dir = app.stop().await;

    // With no daemon on the base, the command line erases.
    let out = cli_in(
        dir.path(),
        &["lead", "erase", email, "--reason", "request", "--by", "dpo"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).starts_with(&format!("erased {email}")),
        "{}",
        text(&out)
    );
    let out = cli_in(dir.path(), &["lead", "export", email]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no lead with e-mail"), "{}", text(&out));
    let out = cli_in(dir.path(), &["lead", "erase", email]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no lead with e-mail"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_lead_whose_events_are_being_processed_drops_them_cleanly() {
    let app = spawn_in(crate::helpers::prepare_dir()).await;
    let email = "eilig@kunde.example";
    let mut batch = vec![
        json!({"type": "identify", "userId": email, "messageId": "e-0",
        "traits": {"email": email, "last_name": "Eilig"}}),
    ];
    for i in 1..400 {
        batch.push(
            json!({"type": "page", "userId": email, "messageId": format!("e-{i}"),
            "name": "Preise", "properties": {"url": format!("https://www.example.com/p/{i}")}}),
        );
    }
    let (status, body) = app.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // At once, while the events are processed.
    let (status, erased) = delete(&app, &format!("/v1/leads/{email}"), None).await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    let stats = app.settle().await;
    assert_eq!(stats["events_failed"], 0, "{stats}");
    let (status, _) = app.get(&format!("/v1/leads/{email}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, funnel) = app.get("/v1/reports/funnel?days=1").await;
    assert_eq!(funnel["leads_created"], 1, "{funnel}");
    if !on_postgres() {
        let hits = found_in(&db_files(app.dir.path()), &[email, "Eilig"]);
        assert!(hits.is_empty(), "{hits:?}");
    }
    app.stop().await;
}

/// Adds `[cluster] name` to a test folder's config.
fn name_daemon(dir: &Path, name: &str) {
    let path = dir.join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[cluster]\nname = \"{name}\"\nlease_timeout = \"2s\"\n"
    ));
    std::fs::write(path, text).unwrap();
}

/// Whether both daemons hold shards, all of them together.
fn both_hold_shards(stats: &Value) -> bool {
    let members = stats["cluster"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let held: Vec<usize> = members
        .iter()
        .map(|m| m["shards"].as_array().map_or(0, Vec::len))
        .collect();
    held.len() == 2 && held.iter().all(|n| *n > 0) && held.iter().sum::<usize>() == 32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_an_erasure_through_one_daemon_reaches_leads_the_other_holds() {
    if !on_postgres() {
        println!("skipped: needs NURTURED_TEST_POSTGRES");
        return;
    }
    let a_dir = crate::helpers::prepare_dir();
    let b_dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_tree(a_dir.path(), b_dir.path());
    name_daemon(a_dir.path(), "privacy-a");
    name_daemon(b_dir.path(), "privacy-b");
    let a = spawn_in(a_dir).await;
    let b = spawn_in(b_dir).await;
    for _ in 0..200 {
        if both_hold_shards(&b.stats().await) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(both_hold_shards(&b.stats().await), "{}", b.stats().await);

    let emails: Vec<String> = (0..20).map(|i| format!("cl{i}@kunde.example")).collect();
    let mut batch = Vec::new();
    for (i, email) in emails.iter().enumerate() {
        batch.push(
            json!({"type": "identify", "userId": email, "messageId": format!("cl-{i}"),
            "traits": {"email": email, "last_name": "Verteilt"}}),
        );
        for n in 0..20 {
            batch.push(json!({"type": "page", "userId": email,
                "messageId": format!("cl-{i}-{n}"), "name": "Preise"}));
        }
    }
    let (status, body) = a.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Every other lead is erased through the other daemon, while events are processed.
    for email in emails.iter().step_by(2) {
        let (status, erased) = delete(&b, &format!("/v1/leads/{email}"), None).await;
        assert_eq!(status, StatusCode::OK, "{email}: {erased}");
    }
    a.settle().await;
    let stats = b.settle().await;
    assert_eq!(stats["events_failed"], 0, "{stats}");
    for (i, email) in emails.iter().enumerate() {
        for app in [&a, &b] {
            let (status, lead) = app.get(&format!("/v1/leads/{email}")).await;
            if i % 2 == 0 {
                assert_eq!(status, StatusCode::NOT_FOUND, "{email}: {lead}");
            } else {
                assert_eq!(status, StatusCode::OK, "{email}");
                assert_eq!(lead["last_name"], "Verteilt", "{lead}");
            }
        }
    }
    let (_, funnel) = a.get("/v1/reports/funnel?days=1").await;
    assert_eq!(funnel["leads_created"], 20, "{funnel}");
    // Nothing of the erased leads was written back by the daemon that held them.
    let url = crate::helpers::config_of(a.dir.path()).database_url;
    let count = async |sql: &str| {
        nurtured::store::testing::query_i64(&url, sql.to_string())
            .await
            .unwrap()
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM leads WHERE email LIKE 'cl%@kunde.example'").await,
        10
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM leads WHERE erased_at IS NOT NULL \
             AND (last_name IS NOT NULL OR events <> 0)"
        )
        .await,
        0
    );
    let rows_of_erased = [
        "events",
        "score_ledger",
        "consent_log",
        "outbox",
        "enrollments",
    ]
    .map(|t| {
        format!(
            "SELECT COUNT(*) FROM {t} WHERE lead_id IN (SELECT id FROM leads WHERE erased_at IS NOT NULL)"
        )
    });
    for sql in rows_of_erased {
        assert_eq!(count(&sql).await, 0, "{sql}");
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_lead_leaves_the_colleague_lists_of_other_handoffs() {
    let app = crate::helpers::spawn_app().await;
    // Two people at ACME, one after the other: the second's handoff names the first.
    let first = "erika.first@acme.de";
    let second = "max.second@acme.de";
    for email in [first, second] {
        let (status, body) = app
            .post("/v1/batch", &json!({ "batch": journey(email) }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        app.settle().await;
    }
    // Each handoff in full (its `duplicates` are the colleagues' leads).
    let handoffs = || async {
        let (status, list) = app.get("/v1/handoffs?limit=10").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let mut text = String::new();
        for h in list["handoffs"].as_array().unwrap() {
            let (status, body) = app.get(&format!("/v1/handoffs/{}", h["id"])).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            text.push_str(&body.to_string());
        }
        text
    };
    let mut text = String::new();
    for _ in 0..200 {
        text = handoffs().await;
        if text.contains(second) && text.matches(first).count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains(second) && text.matches(first).count() >= 2,
        "the second handoff names the first lead: {text}"
    );
    let (status, body) = delete(&app, &format!("/v1/leads/{first}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = handoffs().await;
    assert!(
        !text.contains(first),
        "the erased address is still listed: {text}"
    );
    assert!(text.contains(second), "{text}");
    app.stop().await;
}
