//! The sales board, the mail page and the rules page of the console in Chromium: the
//! owner of a handoff accepts it on the board (the lead becomes `sal`, recorded as
//! `ui:NAME`), another salesperson and marketing cannot answer it, a failed mail and a
//! failed event are retried from their pages, and a rule file with a syntax error is
//! shown at its file:line:column. Each step saves a screenshot in
//! `target/tmp/console/`.

use std::time::{Duration, Instant};

use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{Options, Session};
use crate::console::{UiClient, browser_sign_in, console_app};
use crate::helpers::{SECRET, TestApp, mql_journey, write_rule};
use crate::mail::{consenting, pricing_view};

/// The open handoff of `email` once the desk assigned it: (id, owner).
async fn assigned_handoff(app: &TestApp, email: &str) -> (i64, String) {
    let start = Instant::now();
    loop {
        let (_, body) = app.get("/v1/handoffs?state=open").await;
        if let Some(h) = body["handoffs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["email"] == email && h["owner"].is_string())
        {
            return (
                h["id"].as_i64().unwrap(),
                h["owner"].as_str().unwrap().to_string(),
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no assigned handoff for {email}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of [`mql_journey`] for `email`, under a user id and message ids of
/// their own (so that two leads do not share them).
async fn post_journey(app: &TestApp, email: &str) {
    let events: Vec<Value> = mql_journey(email)
        .into_iter()
        .map(|mut e| {
            e["userId"] = json!(email);
            e["messageId"] = json!(format!("{email}-{}", e["messageId"].as_str().unwrap()));
            e
        })
        .collect();
    let (status, body) = app.post("/v1/batch", &json!({ "batch": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Reloads `path` until an element matches `selector` (the daemon works in the
/// background); panics after 10 s.
async fn reload_until(b: &Session, url: &str, selector: &str) {
    let start = Instant::now();
    loop {
        b.goto(url).await;
        if b.exists(selector).await {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{selector} never appeared on {url}:\n{}",
            b.source().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_accepts_on_the_board_and_nobody_else_may_answer() {
    if crate::browser::skipped("the sales board") {
        return;
    }
    let app = console_app("").await;
    let base = app.base.clone();
    let email = "board.lead@acme.example";
    post_journey(&app, email).await;
    let (id, owner) = assigned_handoff(&app, email).await;
    let other = if owner == "anna" { "ben" } else { "anna" };
    // A second lead goes to the other owner (round robin): marketing sees two groups.
    let second = "zweiter.lead@beispiel.example";
    post_journey(&app, second).await;
    let (second_id, second_owner) = assigned_handoff(&app, second).await;
    assert_eq!(second_owner, other);

    // Over HTTP: the other salesperson gets 403 on the handoff and its answer; marketing
    // may look but not answer; sales has no mail or rules page.
    let them = UiClient::sign_in(&app, other).await;
    assert_eq!(them.get(&format!("/ui/handoffs/{id}")).await.0, 403);
    let (status, _) = them.post(&format!("/ui/handoffs/{id}/accept"), &[]).await;
    assert_eq!(status, 403);
    assert_eq!(them.get("/ui/mail").await.0, 403);
    assert_eq!(them.get("/ui/rules").await.0, 403);
    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, html) = mara.post(&format!("/ui/handoffs/{id}/accept"), &[]).await;
    assert_eq!(status, 403, "{html}");
    let (status, html) = mara
        .post(
            &format!("/ui/handoffs/{id}/reject"),
            &[("reason", "nicht meiner")],
        )
        .await;
    assert_eq!(status, 403, "{html}");

    // In the browser, the other salesperson sees only their own handoff, and the page of
    // this one is refused.
    let b = Session::start().await;
    browser_sign_in(&b, &base, other).await;
    b.goto(&format!("{base}/ui/board")).await;
    b.wait_for(&format!("#handoff-{second_id}")).await;
    assert!(!b.exists(&format!("#handoff-{id}")).await);
    assert!(!b.exists(&format!("#accept-{id}")).await);
    assert!(b.exists(&format!("#accept-{second_id}")).await);
    b.screenshot("board-other-sales").await;
    b.goto(&format!("{base}/ui/handoffs/{id}")).await;
    let refused = b.wait_for("#error-message").await.text().await.unwrap();
    assert!(refused.contains("another owner"), "{refused}");
    b.click_and_load("#logout").await;

    // Marketing: both owners' groups, the SLA report, no buttons.
    browser_sign_in(&b, &base, "mara").await;
    b.goto(&format!("{base}/ui/board")).await;
    b.wait_for(&format!("#owner-{owner} #handoff-{id}")).await;
    b.wait_for(&format!("#owner-{other} #handoff-{second_id}"))
        .await;
    assert!(!b.exists(".handoff form").await);
    assert!(b.exists("#sla-owners").await);
    b.screenshot("board-marketing").await;
    b.click_and_load(&format!("#details-{id}")).await;
    b.wait_for("#handoff-log").await;
    assert!(!b.exists(&format!("#accept-{id}")).await);
    b.screenshot("handoff-marketing").await;
    b.click_and_load("#logout").await;

    // The owner: the countdown in business time, then Accept.
    browser_sign_in(&b, &base, &owner).await;
    b.goto(&format!("{base}/ui/board")).await;
    let card = b
        .wait_for(&format!("#handoff-{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(card.contains("(business time)"), "{card}");
    assert!(card.contains(email), "{card}");
    let lead_link = b
        .attr(&format!("#handoff-{id} a.lead"), "href")
        .await
        .unwrap();
    assert!(
        lead_link.ends_with("/ui/leads/board.lead%40acme.example"),
        "{lead_link}"
    );
    b.screenshot("board-owner").await;
    b.click_and_load(&format!("#accept-{id}")).await;
    let notice = b.wait_for("#board-notice").await.text().await.unwrap();
    assert!(notice.contains(&format!("#{id}")), "{notice}");
    assert!(!b.exists(&format!("#handoff-{id}")).await);
    b.screenshot("board-accepted").await;
    b.close().await;

    let lead = app.lead(email).await;
    assert_eq!(lead["stage"], "sal", "{lead:#}");
    let last = lead["stage_history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["to"], "sal");
    assert!(
        last.to_string().contains(&format!("ui:{owner}")),
        "{last:#}"
    );
    let (_, h) = app.get(&format!("/v1/handoffs/{id}")).await;
    assert_eq!(h["state"], "accepted");
    assert_eq!(h["answered_by"], format!("ui:{owner}"));

    // The board on a phone, in German: the other owner's open handoff.
    let b = Session::start_with(Options::phone().lang("de-DE")).await;
    browser_sign_in(&b, &base, other).await;
    b.goto(&format!("{base}/ui/board")).await;
    let card = b
        .wait_for(&format!("#handoff-{second_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(card.contains("(Geschäftszeit)"), "{card}");
    assert_eq!(b.text(&format!("#accept-{second_id}")).await, "Annehmen");
    // Nothing is wider than the phone.
    let wide = b
        .execute("return document.documentElement.scrollWidth", vec![])
        .await;
    assert!(wide.as_i64().unwrap() <= 390, "page is {wide} px wide");
    b.screenshot("board-phone").await;
    b.close().await;
}

/// A 550 for this address (not for the sender).
fn refuse(sink: &SmtpSink, email: &str) {
    sink.behave(|b| {
        b.rcpt.insert(
            email.into(),
            (550, "5.7.1 message refused by policy".into()),
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mail_is_retried_from_the_mail_page() {
    if crate::browser::skipped("the mail page") {
        return;
    }
    let sink = SmtpSink::start().unwrap();
    let app = console_app(&format!(
        "\n[mail]\nurl = \"smtp://127.0.0.1:{}\"\npublic_url = \"https://mail.example.com\"\n\
         secret = \"{SECRET}\"\nretry_base = \"200ms\"\ntimeout = \"5s\"\n",
        sink.port
    ))
    .await;
    let base = app.base.clone();
    let email = "retry.me@kunde.example";
    refuse(&sink, email);
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;

    let b = Session::start().await;
    browser_sign_in(&b, &base, "mara").await;
    let failed_url = format!("{base}/ui/mail?state=failed");
    reload_until(&b, &failed_url, "#failed-mails button").await;
    let button = b.find("#failed-mails button").await;
    let id: i64 = button
        .attr("id")
        .await
        .unwrap()
        .unwrap()
        .trim_start_matches("retry-")
        .parse()
        .unwrap();
    let row = b.text(&format!("#failed-{id}")).await;
    assert!(row.contains("refused by policy"), "{row}");
    assert!(row.contains(email), "{row}");
    assert_eq!(
        b.attr(&format!("#mail-{id}"), "data-status")
            .await
            .as_deref(),
        Some("failed")
    );
    assert!(b.exists("#state-failed[aria-current=page]").await);
    assert!(b.exists("#streams").await && b.exists("#suppressions").await);
    b.screenshot("mail-failed").await;

    // The server takes it now: Retry queues it again and it goes out.
    sink.behave(|b| {
        b.rcpt.remove(email);
    });
    b.click_and_load(&format!("#retry-{id}")).await;
    let notice = b.wait_for("#mail-notice").await.text().await.unwrap();
    assert!(notice.contains(&format!("#{id}")), "{notice}");
    let status = b.attr(&format!("#mail-{id}"), "data-status").await;
    assert!(
        matches!(status.as_deref(), Some("queued" | "sending" | "sent")),
        "{status:?}"
    );
    reload_until(
        &b,
        &format!("{base}/ui/mail?state=sent"),
        &format!("#mail-{id}"),
    )
    .await;
    assert!(!b.exists(&format!("#failed-{id}")).await);
    b.screenshot("mail-retried").await;
    b.close().await;

    // Recorded as the console user; a second retry is refused (it is not failed).
    let (_, mail) = app.get(&format!("/v1/mails/{id}")).await;
    assert!(mail.to_string().contains("ui:mara"), "{mail:#}");
    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, _) = mara.post(&format!("/ui/mails/{id}/retry"), &[]).await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_page_shows_a_syntax_error_and_retries_a_failed_event() {
    if crate::browser::skipped("the rules page") {
        return;
    }
    let app = console_app("").await;
    let base = app.base.clone();
    write_rule(
        &app,
        "50-broken.rhai",
        "fn on_event(lead, event) {\n    let x = ;\n}\n",
    )
    .await;
    let boom = "fn on_event(lead, event) {\n    if event.properties.boom == true {\n        throw \"kaputt\";\n    }\n}\n";
    write_rule(&app, "60-boom.rhai", boom).await;
    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": "boom@example.com", "event": "Clicked", "properties": {"boom": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.wait_for("the event to fail", |s| s["events_failed"] == 1)
        .await;

    let b = Session::start().await;
    browser_sign_in(&b, &base, "mara").await;
    b.goto(&format!("{base}/ui/rules")).await;
    let errors = b.wait_for("#rule-errors").await.text().await.unwrap();
    assert!(errors.contains("rules/50-broken.rhai:2:"), "{errors}");
    assert!(b.exists("#rule-files").await && b.exists("#templates").await);
    b.screenshot("rules-errors").await;
    let button = b.find("#failed button").await;
    let seq: i64 = button
        .attr("id")
        .await
        .unwrap()
        .unwrap()
        .trim_start_matches("retry-event-")
        .parse()
        .unwrap();
    let event = b.text(&format!("#event-{seq}")).await;
    assert!(event.contains("rules/60-boom.rhai:3:"), "{event}");
    assert!(event.contains("kaputt"), "{event}");
    b.goto(&format!("{base}/ui/rules#failed")).await;
    b.screenshot("rules-failed").await;

    // Fixed, then retried from the page: the event goes through.
    write_rule(&app, "60-boom.rhai", "fn on_event(lead, event) {\n    if event.properties.boom == true {\n        lead.tag(\"boomed\");\n    }\n}\n").await;
    b.click_and_load(&format!("#retry-event-{seq}")).await;
    let notice = b.wait_for("#rules-notice").await.text().await.unwrap();
    assert!(notice.contains(&format!("#{seq}")), "{notice}");
    app.wait_for("the retried event", |s: &Value| {
        s["events_failed"] == 0 && s["events_pending"] == 0
    })
    .await;
    assert_eq!(
        app.lead("boom@example.com").await["tags"],
        json!(["boomed"])
    );
    reload_until(&b, &format!("{base}/ui/rules"), "#no-failed").await;
    b.screenshot("rules-retried").await;
    b.close().await;
}
