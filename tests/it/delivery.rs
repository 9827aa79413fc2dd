//! Delivery against an SMTP server that refuses the sender: a pause instead of
//! suppressed addresses, probes, and every mail once when the server takes mail again.
//! The daemon's refusal of an http:// public URL for real mail.

use std::collections::BTreeMap;

use nurtured::smtp_sink::SmtpSink;
use serde_json::Value;

use crate::helpers::{cli_in, eventually, mail_dir, prepare_dir, spawn_in, text};
use crate::mail::{consenting, pricing_view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sender_pauses_delivery_and_every_mail_goes_out_once_after() {
    let sink = SmtpSink::start().unwrap();
    sink.behave(|b| {
        b.rcpt_all = Some((550, "5.1.8 Access denied, bad outbound sender".into()));
    });
    let app = spawn_in(mail_dir(
        sink.port,
        "[mail.pause]\nfirst = \"300ms\"\nmax = \"600ms\"\n",
    ))
    .await;
    let leads: Vec<String> = (0..5).map(|i| format!("lead{i}@kunde.example")).collect();
    for e in &leads {
        app.post("/v1/identify", &consenting(e, false)).await;
        app.post("/v1/page", &pricing_view(e)).await;
    }
    let stats = app
        .wait_for("delivery paused", |s| s["delivery"]["state"] == "paused")
        .await;
    let answer = stats["delivery"]["answer"].as_str().unwrap();
    assert!(answer.contains("5.1.8 Access denied"), "{stats}");
    assert!(stats["delivery"]["since"].is_string(), "{stats}");
    assert!(stats["delivery"]["next_probe"].is_string(), "{stats}");
    // The probes after each pause are refused too; the pause grows.
    let stats = app
        .wait_for("two refused probes", |s| {
            s["delivery"]["refused_probes"].as_i64() >= Some(2)
        })
        .await;
    assert_eq!(stats["mails_sent"], 0, "{stats}");
    assert_eq!(stats["mails_failed"], 0, "{stats}");
    assert_eq!(stats["addresses_suppressed"], 0, "{stats}");
    assert_eq!(sink.count(), 0);
    // Probes: one mail at a time, not the whole queue again.
    let rcpts = sink.log().iter().filter(|l| l.starts_with("RCPT")).count();
    assert!(
        rcpts < 5 * 3,
        "{rcpts} RCPT commands for 5 mails and a few probes"
    );
    // `nurtured stats` shows the pause as well.
    let out = app.cli(&["stats"]);
    assert!(out.status.success(), "{}", text(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["delivery"]["state"], "paused", "{cli}");
    assert!(
        cli["delivery"]["answer"]
            .as_str()
            .unwrap()
            .contains("5.1.8"),
        "{cli}"
    );
    // The mails wait without using up their tries.
    let (_, mails) = app.get("/v1/mails").await;
    for m in mails["mails"].as_array().unwrap() {
        assert_eq!(m["status"], "queued", "{m}");
    }

    sink.behave(|b| b.rcpt_all = None);
    let stats = app
        .wait_for("every mail sent", |s| {
            s["mails_sent"] == 5 && s["delivery"]["state"] == "running"
        })
        .await;
    assert_eq!(stats["mails_failed"], 0, "{stats}");
    assert_eq!(stats["addresses_suppressed"], 0, "{stats}");
    let mut by_message_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in sink.received() {
        *by_message_id
            .entry(r.header("Message-ID").expect("a Message-ID"))
            .or_default() += 1;
    }
    assert_eq!(by_message_id.len(), 5, "{by_message_id:?}");
    assert!(by_message_id.values().all(|n| *n == 1), "{by_message_id:?}");
    for e in &leads {
        eventually(&format!("one mail to {e}"), 5, || {
            (sink.received().iter().filter(|r| r.to.contains(e)).count() == 1).then_some(())
        })
        .await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mail_from_pauses_delivery_too() {
    let sink = SmtpSink::start().unwrap();
    sink.behave(|b| {
        b.mail_from = Some((553, "sender address rejected".into()));
    });
    let app = spawn_in(mail_dir(sink.port, "[mail.pause]\nfirst = \"300ms\"\n")).await;
    let e = "lead@kunde.example";
    app.post("/v1/identify", &consenting(e, false)).await;
    app.post("/v1/page", &pricing_view(e)).await;
    let stats = app
        .wait_for("delivery paused", |s| s["delivery"]["state"] == "paused")
        .await;
    assert!(
        stats["delivery"]["answer"]
            .as_str()
            .unwrap()
            .contains("sender address rejected"),
        "{stats}"
    );
    assert_eq!(stats["mails_failed"], 0, "{stats}");
    sink.behave(|b| b.mail_from = None);
    let stats = app
        .wait_for("the mail sent", |s| s["mails_sent"] == 1)
        .await;
    assert_eq!(stats["delivery"]["state"], "running", "{stats}");
    assert_eq!(sink.count(), 1);
    app.stop().await;
}

#[test]
fn the_daemon_refuses_smtp_with_an_http_public_url() {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(
        "\n[mail]\nurl = \"smtp://mailer:hunter2-secret@127.0.0.1:2525\"\n\
         public_url = \"http://mail.example.com\"\n\
         secret = \"a-secret-of-at-least-thirty-two-characters\"\n",
    );
    std::fs::write(&path, &config).unwrap();
    let out = cli_in(dir.path(), &["run"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("mail.public_url"), "{shown}");
    assert!(shown.contains("https://"), "{shown}");
    assert!(shown.contains("allow_insecure_links"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlasts_a_restart() {
    let sink = SmtpSink::start().unwrap();
    sink.behave(|b| {
        b.rcpt_all = Some((535, "5.7.8 Authentication credentials invalid".into()));
    });
    let app = spawn_in(mail_dir(sink.port, "[mail.pause]\nfirst = \"1s\"\n")).await;
    let e = "lead@kunde.example";
    app.post("/v1/identify", &consenting(e, false)).await;
    app.post("/v1/page", &pricing_view(e)).await;
    let before = app
        .wait_for("delivery paused", |s| s["delivery"]["state"] == "paused")
        .await;
    let dir = app.stop().await;
    let app = spawn_in(dir).await;
    let after = app.stats().await;
    assert_eq!(after["delivery"]["state"], "paused", "{after}");
    assert_eq!(
        after["delivery"]["since"], before["delivery"]["since"],
        "{after}"
    );
    sink.behave(|b| b.rcpt_all = None);
    let stats = app
        .wait_for("the mail sent", |s| {
            s["mails_sent"] == 1 && s["delivery"]["state"] == "running"
        })
        .await;
    assert_eq!(stats["mails_failed"], 0, "{stats}");
    assert_eq!(sink.count(), 1);
    app.stop().await;
}
