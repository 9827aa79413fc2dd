//! Lead and event data that could break delivery: control characters in names, a send
//! that crashes, event data longer than a reason may be. Each is delivered, cut or
//! failed cleanly, never in a loop and never failing the event.

use std::time::{Duration, Instant};

use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{eventually, mail_dir, spawn_in, spawn_prepared};
use crate::mail::{consenting, download, mails_to, pricing_view};

/// The pricing follow-up's subject names the lead, so the test sees the name there too.
fn with_name_in_subject(dir: &tempfile::TempDir) {
    std::fs::write(
        dir.path()
            .join("templates/de/trigger/pricing-follow-up.subject"),
        "Ihre Preisfrage, {{ lead.first_name }} {{ lead.last_name }}\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_line_breaks_and_nul_is_delivered_without_them() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    with_name_in_subject(&dir);
    let app = spawn_in(dir).await;
    let email = "eve@kunde.example";
    let (status, body) = app
        .post(
            "/v1/identify",
            &json!({"userId": email, "traits": {
                "email": email, "firstName": "Eve\r\nBcc: evil@x.example", "lastName": "Ev\u{0}il\u{7}",
                "company": "Firma\r\nX-Injected: 1", "consent_email": true, "consent_source": "form"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.post("/v1/page", &pricing_view(email)).await;
    let mail = eventually("the mail", 10, || mails_to(&sink, email).pop()).await;

    assert_eq!(mail.to, vec![email.to_string()], "one recipient, the lead");
    let to = decoded(&mail.header("To").expect("To"));
    assert_eq!(to, "Eve Bcc: evil@x.example Evil <eve@kunde.example>");
    assert_eq!(
        decoded(&mail.header("Subject").expect("Subject")),
        "Ihre Preisfrage, Eve Bcc: evil@x.example Evil"
    );
    assert!(mail.header("Bcc").is_none(), "{}", mail.text());
    assert!(mail.header("X-Injected").is_none(), "{}", mail.text());
    let head = mail.text();
    let head = head.split("\r\n\r\n").next().unwrap();
    assert!(!head.contains('\0'), "{head:?}");
    assert!(
        !sink.log().iter().any(|l| l.contains("evil@x.example")),
        "{:?}",
        sink.log()
    );
    let lead = app.lead(email).await;
    assert_eq!(lead["first_name"], "Eve Bcc: evil@x.example", "{lead}");
    assert_eq!(lead["company"], "Firma X-Injected: 1", "{lead}");
    let stats = app.stats().await;
    assert_eq!(stats["mails_sent"], 1, "{stats}");
    app.stop().await;
}

/// A header value with its RFC 2047 encoded words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`)
/// decoded, as a mail program shows it.
fn decoded(value: &str) -> String {
    use base64::Engine;
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("=?") {
        out.push_str(&rest[..start]);
        let word = &rest[start + 2..];
        let mut parts = word.splitn(3, '?');
        let (_charset, encoding, tail) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let end = tail.find("?=").expect("an encoded word ends with ?=");
        let text = &tail[..end];
        let bytes = if encoding.eq_ignore_ascii_case("b") {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap()
        } else {
            let mut bytes = Vec::new();
            let mut it = text.bytes();
            while let Some(b) = it.next() {
                match b {
                    b'_' => bytes.push(b' '),
                    b'=' => {
                        let hex = [it.next().unwrap(), it.next().unwrap()];
                        bytes.push(
                            u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap(),
                        );
                    }
                    b => bytes.push(b),
                }
            }
            bytes
        };
        out.push_str(&String::from_utf8(bytes).unwrap());
        rest = &tail[end + 2..];
        // White space between two encoded words is not part of the text.
        if rest.trim_start().starts_with("=?") {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    out
}

/// The mails of `email` as the API lists them.
async fn mails_of(app: &crate::helpers::TestApp, email: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/v1/mails?lead={email}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["mails"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_panics_counts_as_a_failed_try_and_fails_after_the_retry_age() {
    let sink = SmtpSink::start().unwrap();
    let doomed = "doomed@kunde.example";
    let fine = "fine@kunde.example";
    let app = spawn_prepared(mail_dir(sink.port, "retry_max_age = \"1s\""), |app| {
        app.mailer.inject_send_fault(move |row| {
            if row.email == doomed {
                panic!("injected fault\r\nin the send of mail {}", row.id);
            }
        })
    })
    .await;
    let started = Instant::now();
    for email in [doomed, fine] {
        app.post("/v1/identify", &consenting(email, false)).await;
        app.post("/v1/page", &pricing_view(email)).await;
    }
    let stats = app
        .wait_for("the crashing mail to fail", |s| s["mails_failed"] == 1)
        .await;
    let took = started.elapsed();
    assert_eq!(stats["mails_sent"], 1, "{stats}");
    assert_eq!(mails_to(&sink, fine).len(), 1);
    assert!(mails_to(&sink, doomed).is_empty());

    let mail = &mails_of(&app, doomed).await[0];
    assert_eq!(mail["status"], "failed", "{mail}");
    let reason = mail["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("gave up after")
            && reason.contains("sending crashed: injected fault in the send of mail"),
        "{reason}"
    );
    // Each crash counted as a try, from the first one on: retried with backoff
    // (200 ms, doubled) until the tries spanned the retry age of 1 s.
    let tries = mail["tries"].as_i64().unwrap();
    assert!((3..=6).contains(&tries), "{mail}");
    assert_eq!(mail["attempts"].as_i64().unwrap(), tries + 1, "{mail}");
    assert!(mail["first_try_at"].is_i64(), "{mail}");
    assert!(took >= Duration::from_secs(1), "failed after {took:?}");

    // Nothing more happens to it: no loop.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = &mails_of(&app, doomed).await[0];
    assert_eq!(again["attempts"], mail["attempts"], "{again}");
    assert_eq!(again["status"], "failed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_600_character_asset_and_topic_are_processed_with_a_cut_reason() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "long@kunde.example";
    let asset = format!("Whitepaper {}", "Lead Scoring ".repeat(46));
    assert!(asset.chars().count() >= 600);
    // Topics that differ only at the end are two topics: two use case mails.
    let topic = |end: &str| format!("{}{end}", "t".repeat(600));
    app.post("/v1/identify", &consenting(email, false)).await;
    for end in ["a", "b"] {
        for _ in 0..2 {
            let (status, body) = app
                .post("/v1/track", &download(email, &topic(end), &asset))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let stats = app.settle().await;
    assert_eq!(stats["events_failed"], 0, "{stats}");
    assert_eq!(stats["events_processed"], 5, "{stats}");

    let lead = app.lead(email).await;
    let ledger = lead["score_ledger"].as_array().unwrap();
    let downloads: Vec<&str> = ledger
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .filter(|r| r.starts_with("downloaded whitepaper Whitepaper Lead Scoring"))
        .collect();
    assert_eq!(downloads.len(), 4, "{ledger:?}");
    for r in downloads {
        assert_eq!(r.chars().count(), 500, "{r}");
        assert!(r.ends_with('…'), "{r}");
    }
    assert_eq!(lead["interest"], 40.0, "{lead}");

    // One use case mail per topic, each sent once.
    eventually("both use case mails", 10, || {
        (mails_to(&sink, email).len() == 2).then_some(())
    })
    .await;
    let mails = mails_of(&app, email).await;
    let keys: Vec<&str> = mails
        .iter()
        .filter(|m| m["template"] == "trigger/use-case")
        .map(|m| m["dedupe_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{mails:?}");
    assert_ne!(keys[0], keys[1]);
    for k in keys {
        assert!(k.starts_with(&"t".repeat(100)) && k.contains("…#"), "{k}");
        assert_eq!(k.chars().count(), 166, "{k}");
    }
    app.stop().await;
}
