//! Failed mails queued again: `nurtured mail retry ID`, `--failed --template T` and
//! `POST /v1/mails/{id}/retry`, against a real SMTP server that first refuses (550) and
//! then accepts; and a failed mail does not use up the rule's once-only.

use reqwest::StatusCode;
use serde_json::Value;

use nurtured::smtp_sink::SmtpSink;

use crate::helpers::{TestApp, eventually, mail_dir, spawn_in, text};
use crate::mail::{consenting, download, mails_to, pricing_view};

/// A refusal of this one mail (not of the address, not of the sender).
const REFUSED: (u16, &str) = (550, "5.7.1 message refused by the recipient's policy");

fn refuse(sink: &SmtpSink, email: &str) {
    sink.behave(|b| {
        b.rcpt.insert(email.into(), (REFUSED.0, REFUSED.1.into()));
    });
}

fn accept(sink: &SmtpSink, email: &str) {
    sink.behave(|b| {
        b.rcpt.remove(email);
    });
}

/// The mails of `email`, oldest first: (id, template, status).
async fn mails_of(app: &TestApp, email: &str) -> Vec<(i64, String, String)> {
    let (status, body) = app.get(&format!("/v1/mails?lead={email}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut out: Vec<_> = body["mails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["template"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.reverse();
    out
}

async fn failed_mail(app: &TestApp, email: &str) -> i64 {
    let mut found = None;
    for _ in 0..500 {
        let mails = mails_of(app, email).await;
        if let Some(m) = mails.iter().find(|m| m.2 == "failed") {
            found = Some(m.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    found.unwrap_or_else(|| panic!("no failed mail for {email}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_mails_are_queued_again_by_id_by_template_and_over_http() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let (one, two, three) = (
        "retry-one@kunde.example",
        "retry-two@kunde.example",
        "retry-three@kunde.example",
    );
    for email in [one, two, three] {
        refuse(&sink, email);
        app.post("/v1/identify", &consenting(email, false)).await;
        app.post("/v1/page", &pricing_view(email)).await;
    }
    let first = failed_mail(&app, one).await;
    let second = failed_mail(&app, two).await;
    let third = failed_mail(&app, three).await;
    assert_eq!(sink.count(), 0);

    // A mail that is not failed is refused with a clear message.
    let out = app.cli(&["mail", "retry", &first.to_string(), "999999"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("mail {first}: queued again")),
        "{shown}"
    );
    assert!(shown.contains("there is no mail 999999"), "{shown}");
    // The server accepts now: the mail goes out.
    accept(&sink, one);
    let mail = eventually("the retried mail", 10, || mails_to(&sink, one).pop()).await;
    assert!(mail.header("Subject").is_some());
    let out = app.cli(&["mail", "show", &first.to_string(), "--json"]);
    let show: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let history = &show["history"][0];
    assert_eq!(history["what"], "retried", "{show}");
    assert!(
        history["actor"].as_str().unwrap().starts_with("cli:"),
        "{show}"
    );
    assert!(
        history["note"].as_str().unwrap().contains("5.7.1"),
        "{show}"
    );
    let page = text(&app.cli(&["mail", "show", &first.to_string()]));
    assert!(page.contains("retried by cli:"), "{page}");
    // Sent now: not again.
    eventually("the mail marked sent", 10, || {
        let out = app.cli(&["mail", "retry", &first.to_string()]);
        text(&out).contains("is sent, not failed").then_some(())
    })
    .await;

    // Every failed mail of a template, after the server accepts.
    accept(&sink, two);
    let out = app.cli(&[
        "mail",
        "retry",
        "--failed",
        "--template",
        "trigger/use-case",
    ]);
    assert!(
        text(&out).contains("no failed mails of template trigger/use-case"),
        "{}",
        text(&out)
    );
    let out = app.cli(&[
        "mail",
        "retry",
        "--failed",
        "--template",
        "trigger/pricing-follow-up",
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("mail {second}: queued again")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("mail {third}: queued again")),
        "{shown}"
    );
    eventually("the second mail", 10, || mails_to(&sink, two).pop()).await;

    // The third is refused again, fails again, and is queued over HTTP.
    eventually("the third mail failed again", 10, || {
        let out = app.cli(&["mail", "list", "--status", "failed", "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .any(|m| m["id"] == third)
            .then_some(())
    })
    .await;
    accept(&sink, three);
    let (status, body) = app
        .post(&format!("/v1/mails/{third}/retry"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually("the third mail", 10, || mails_to(&sink, three).pop()).await;
    let (_, show) = app.get(&format!("/v1/mails/{third}")).await;
    let actors: Vec<&str> = show["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors.len(), 2, "{show}");
    assert_eq!(actors[1], "api:api_token", "{show}");
    let (status, body) = app
        .post(&format!("/v1/mails/{third}/retry"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_once_only_mail_is_queued_again_when_the_rule_asks_again() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "usecase@kunde.example";
    refuse(&sink, email);
    app.post("/v1/identify", &consenting(email, false)).await;
    // Two downloads on a topic ask for the use case mail, once per lead and topic.
    app.post("/v1/track", &download(email, "security", "A"))
        .await;
    app.post("/v1/track", &download(email, "security", "B"))
        .await;
    let failed = failed_mail(&app, email).await;
    accept(&sink, email);
    // The rule asks again: the failed copy does not count.
    app.post("/v1/track", &download(email, "security", "C"))
        .await;
    let mail = eventually("the use case mail", 10, || mails_to(&sink, email).pop()).await;
    assert!(mail.text().contains("security"), "{}", mail.text());
    let mails: Vec<_> = mails_of(&app, email)
        .await
        .into_iter()
        .filter(|m| m.1 == "trigger/use-case")
        .collect();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert_eq!(
        mails[0],
        (failed, "trigger/use-case".into(), "failed".into())
    );
    // A sent copy does: a fourth download queues nothing.
    eventually("the copy sent", 10, || {
        let out = app.cli(&["mail", "list", "--status", "sent", "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        (list.as_array()?.len() == 1).then_some(())
    })
    .await;
    app.post("/v1/track", &download(email, "security", "D"))
        .await;
    app.settle().await;
    let use_case = mails_of(&app, email)
        .await
        .into_iter()
        .filter(|m| m.1 == "trigger/use-case")
        .count();
    assert_eq!(use_case, 2);
    // And the failed copy cannot be queued again beside the sent one.
    let out = app.cli(&["mail", "retry", &failed.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is a later copy of mail"),
        "{}",
        text(&out)
    );
    assert_eq!(mails_to(&sink, email).len(), 1);
    app.stop().await;
}
