//! `nurtured store copy`: a base a daemon left with work pending moves from SQLite to
//! another database (a PostgreSQL database when `NURTURED_TEST_POSTGRES` is set, else
//! another SQLite file) with nothing lost, and a daemon there finishes the work without
//! sending any mail twice. The copy refuses a target that holds data, a missing
//! source, and a source a daemon works on.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use nurtured::smtp_sink::SmtpSink;
use nurtured::store::Store;
use nurtured::store::copy::TABLES;
use nurtured::store::testing::{fresh_database_url, query_i64};
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;

use crate::helpers::{
    TestApp, cli_in, config_of, eventually, mail_dir, mql_journey, prepare_dir, spawn_in, text,
};
use crate::mail::{consenting, mails_to, pricing_view};

/// `dir`'s daemon keeps its base in a SQLite file (`data/nurtured.db`), whatever the
/// test server.
fn on_sqlite(dir: TempDir) -> TempDir {
    set_database(dir.path(), None);
    dir
}

/// Points the config in `dir` at `url` (or at the SQLite file in `data/`).
fn set_database(dir: &Path, url: Option<&str>) {
    let path = dir.join("nurtured.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = config
        .lines()
        .filter(|l| !l.starts_with("database_url"))
        .map(str::to_string)
        .collect();
    if let Some(url) = url {
        lines.insert(0, format!("database_url = \"{url}\""));
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

fn write_events(dir: &Path, name: &str, events: &[Value]) {
    std::fs::write(
        dir.join(name),
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();
}

fn copy(dir: &Path, from: &str, to: &str) -> std::process::Output {
    cli_in(dir, &["store", "copy", "--from", from, "--to", to])
}

/// Every row of every copied table of a SQLite base, as text, in key order.
async fn dump(url: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let mut out = Vec::new();
    for table in TABLES {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("quote({})", c.name))
            .collect();
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {} ORDER BY 1",
            columns.join(" || '|' || "),
            table.name
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        out.push((table.name, rows.into_iter().map(|(r,)| r).collect()));
    }
    conn.close().await.unwrap();
    out
}

async fn count(url: &str, sql: &str) -> i64 {
    query_i64(url, sql.to_string()).await.unwrap()
}

/// The Message-IDs the server received, with how often each came.
fn message_ids(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for mail in sink.received() {
        let id = mail.header("Message-ID").expect("Message-ID");
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

async fn mail_states(app: &TestApp, email: &str) -> Vec<Value> {
    let (_, body) = app.get(&format!("/v1/mails?lead={email}")).await;
    body["mails"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_pending_work_and_the_next_daemon_sends_each_mail_once() {
    let sink = SmtpSink::start().unwrap();
    let (sent, waits, later) = (
        "sent@kunde.example",
        "waits@kunde.example",
        "later@kunde.example",
    );
    // The server puts off every mail to `waits` for now.
    sink.behave(|b| {
        b.rcpt
            .insert(waits.into(), (451, "4.7.1 try again later".into()));
    });
    let dir = on_sqlite(mail_dir(sink.port, ""));
    let source = config_of(dir.path()).database_url;
    assert!(source.starts_with("sqlite://"), "{source}");

    // The daemon on SQLite: one trigger mail sent, one queued, a lead handed to sales.
    let app = spawn_in(dir).await;
    app.post("/v1/identify", &consenting(sent, false)).await;
    app.post("/v1/page", &pricing_view(sent)).await;
    app.post("/v1/identify", &consenting(waits, false)).await;
    app.post("/v1/page", &pricing_view(waits)).await;
    let (status, body) = app.post_journey("journey@kunde.example").await;
    assert!(status.is_success(), "{body}");
    // An anonymous visitor waiting, and a group with a lead and a visitor in it.
    for (path, body) in [
        (
            "/v1/page",
            json!({"anonymousId": "visitor-1", "messageId": "v-1", "name": "Preise"}),
        ),
        (
            "/v1/group",
            json!({"userId": sent, "groupId": "kunde", "traits": {"name": "Kunde AG"}}),
        ),
        (
            "/v1/group",
            json!({"anonymousId": "visitor-1", "groupId": "kunde", "traits": {"plan": "pro"}}),
        ),
    ] {
        let (status, body) = app.post(path, &body).await;
        assert!(status.is_success(), "{path}: {body}");
    }
    eventually("the mail to be sent", 10, || mails_to(&sink, sent).pop()).await;
    let mail = eventually("the mail to be sent", 10, || mails_to(&sink, sent).pop()).await;
    // Its lead leaves the mail's topic (a row of lead_topics).
    let list = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let token = crate::mail::link_token(&list, "https://mail.example.com/u/");
    let left = app
        .client
        .post(format!("{}/u/{token}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(left.status().is_success());
    let start = std::time::Instant::now();
    loop {
        let mails = mail_states(&app, waits).await;
        if mails.len() == 1 && mails[0]["status"] == "queued" && !mails[0]["reason"].is_null() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{mails:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.settle().await;
    let dir = app.stop().await;

    // Events stored while another process holds the lease stay pending.
    let store = Store::open(&source).await.unwrap();
    let lease = store.acquire_lease("test").await.unwrap().unwrap();
    let events = [
        json!({"type": "identify", "userId": later, "messageId": "l-1", "traits": {
            "email": later, "consent_email": true, "consent_source": "form"}}),
        json!({"type": "page", "userId": later, "messageId": "l-2", "name": "Preise",
               "properties": {"url": "https://www.example.com/preise"}}),
        json!({"type": "track", "userId": sent, "messageId": "l-3", "event": "Webinar Attended"}),
    ];
    write_events(dir.path(), "later.jsonl", &events);
    let out = cli_in(dir.path(), &["ingest", "later.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    store.release_lease(&lease).await.unwrap();
    store.close().await;
    assert_eq!(count(&source, "SELECT COUNT(*) FROM event_queue").await, 3);
    assert!(
        count(
            &source,
            "SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')"
        )
        .await
            >= 1
    );
    let sent_before = sink.count();

    // The copy.
    let elsewhere = tempfile::tempdir().unwrap();
    let target = fresh_database_url(elsewhere.path());
    let out = copy(dir.path(), &source, &target);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("every table has as many rows in the target as in the source"),
        "{shown}"
    );
    for table in TABLES {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name);
        assert_eq!(
            count(&source, &sql).await,
            count(&target, &sql).await,
            "{}",
            table.name
        );
    }
    assert_eq!(count(&target, "SELECT COUNT(*) FROM event_queue").await, 3);
    assert_eq!(count(&target, "SELECT COUNT(*) FROM leases").await, 0);
    assert_eq!(count(&target, "SELECT COUNT(*) FROM lead_topics").await, 1);
    assert_eq!(
        count(
            &target,
            "SELECT COUNT(*) FROM leads WHERE consent_email AND email = 'sent@kunde.example'"
        )
        .await,
        1
    );
    // Every value came over: compared on SQLite (a PostgreSQL target is copied back).
    let back = if target.starts_with("sqlite://") {
        target.clone()
    } else {
        let back = format!("sqlite://{}", elsewhere.path().join("back.db").display());
        let out = copy(dir.path(), &target, &back);
        assert!(out.status.success(), "{}", text(&out));
        back
    };
    assert_eq!(dump(&source).await, dump(&back).await);

    // A daemon on the target does the rest: each mail reaches the server once.
    sink.behave(|b| b.rcpt.clear());
    set_database(dir.path(), Some(&target));
    let app = spawn_in(dir).await;
    app.settle().await;
    eventually("the queued mail", 10, || mails_to(&sink, waits).pop()).await;
    eventually("the mail of the pending events", 10, || {
        mails_to(&sink, later).pop()
    })
    .await;
    app.wait_for("no mail left to send", |s| s["mails_queued"] == 0)
        .await;
    // New rows take ids after the copied ones (sequences set on PostgreSQL).
    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": sent, "event": "Webinar Attended", "messageId": "after-copy"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    app.settle().await;
    // Give a mail sent twice the time to show up.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let lead = app.lead(later).await;
    assert_eq!(lead["consent_email"]["granted"], true, "{lead}");
    let dir = app.stop().await;

    assert!(sink.count() > sent_before);
    let ids = message_ids(&sink);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(mails_to(&sink, sent).len(), 1);
    assert_eq!(mails_to(&sink, waits).len(), 1);
    assert_eq!(mails_to(&sink, later).len(), 1);
    assert_eq!(
        count(&target, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await,
        sink.count() as i64,
        "every mail recorded as sent reached the server once"
    );
    assert_eq!(count(&target, "SELECT COUNT(*) FROM event_queue").await, 0);
    drop(dir);
}

#[test]
fn store_copy_refuses_a_target_that_holds_data_and_a_missing_source() {
    let dir = on_sqlite(prepare_dir());
    write_events(dir.path(), "journey.jsonl", &mql_journey("a@kunde.example"));
    let out = cli_in(dir.path(), &["ingest", "journey.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let source = config_of(dir.path()).database_url;

    // A base with a lead in it (on the test server when there is one).
    let other = prepare_dir();
    write_events(
        other.path(),
        "one.jsonl",
        &[
            json!({"type": "identify", "userId": "b@kunde.example", "messageId": "o-1",
                 "traits": {"email": "b@kunde.example"}}),
        ],
    );
    let out = cli_in(other.path(), &["ingest", "one.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let target = config_of(other.path()).database_url;
    let out = copy(dir.path(), &source, &target);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("the target {target} is not empty")),
        "{shown}"
    );
    assert!(shown.contains("1 row(s) in leads"), "{shown}");
    assert!(shown.contains("1 row(s) in events"), "{shown}");

    // A missing file is an error, not a new empty base.
    let missing = dir.path().join("missing.db");
    let fresh = tempfile::tempdir().unwrap();
    let out = copy(
        dir.path(),
        &format!("sqlite://{}", missing.display()),
        &fresh_database_url(fresh.path()),
    );
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("does not exist"), "{shown}");
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_refuses_while_a_daemon_works_on_the_source() {
    let app = spawn_in(on_sqlite(prepare_dir())).await;
    app.post("/v1/identify", &consenting("d@kunde.example", false))
        .await;
    app.settle().await;
    let source = config_of(app.dir.path()).database_url;
    let elsewhere = tempfile::tempdir().unwrap();
    let target = fresh_database_url(elsewhere.path());

    let out = copy(app.dir.path(), &source, &target);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("holds the processing lease of the source"),
        "{shown}"
    );
    assert!(shown.contains("stop the daemon"), "{shown}");

    // Once the daemon stopped, the same copy goes through.
    let dir = app.stop().await;
    let out = copy(dir.path(), &source, &target);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&target, "SELECT COUNT(*) FROM leads").await, 1);
}
