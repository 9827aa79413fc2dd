//! The sales board, the mail page and the rules page of the console: the owner of a
//! handoff accepts it on the board (the lead becomes `sal`, recorded as `ui:NAME`),
//! another salesperson and marketing cannot answer it, a failed mail and a failed event
//! are retried from their pages, and a rule file with a syntax error is shown at its
//! file:line:column.

use std::time::{Duration, Instant};

use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console::{UiClient, console_app};
use crate::helpers::{SECRET, TestApp, write_rule};
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

/// The number in the first `marker"NUMBER` of `html` (an element id).
fn id_after(html: &str, marker: &str) -> Option<i64> {
    let at = html.find(marker)? + marker.len();
    html[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_accepts_on_the_board_and_nobody_else_may_answer() {
    let app = console_app("").await;
    let email = "board.lead@acme.example";
    let (status, body) = app.post_journey(email).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (id, owner) = assigned_handoff(&app, email).await;
    let other = if owner == "anna" { "ben" } else { "anna" };

    // The other salesperson: 403 on the handoff's page, nothing of it on the board.
    let them = UiClient::sign_in(&app, other).await;
    let (status, html) = them.get(&format!("/ui/handoffs/{id}")).await;
    assert_eq!(status, 403, "{html}");
    let (status, html) = them.get("/ui/board").await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains(&format!("id=\"handoff-{id}\"")), "{html}");
    assert!(!html.contains(&format!("id=\"accept-{id}\"")), "{html}");
    let (status, _) = them.post(&format!("/ui/handoffs/{id}/accept"), &[]).await;
    assert_eq!(status, 403);
    // Sales has no mail or rules page.
    assert_eq!(them.get("/ui/mail").await.0, 403);
    assert_eq!(them.get("/ui/rules").await.0, 403);

    // Marketing sees it, grouped by owner, without buttons; its answer is refused.
    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, html) = mara.get("/ui/board").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("id=\"owner-{owner}\"")), "{html}");
    assert!(html.contains(&format!("id=\"handoff-{id}\"")), "{html}");
    assert!(!html.contains(&format!("id=\"accept-{id}\"")), "{html}");
    assert!(html.contains("id=\"sla-owners\""), "{html}");
    let (status, html) = mara.post(&format!("/ui/handoffs/{id}/accept"), &[]).await;
    assert_eq!(status, 403, "{html}");
    let (status, html) = mara.get(&format!("/ui/handoffs/{id}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains(&format!("id=\"accept-{id}\"")), "{html}");
    assert!(html.contains("id=\"handoff-log\""), "{html}");

    // The owner: the handoff with its countdown and buttons; a rejection needs a reason.
    let me = UiClient::sign_in(&app, &owner).await;
    let (status, html) = me.get("/ui/board").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("id=\"accept-{id}\"")), "{html}");
    assert!(html.contains("(business time)"), "{html}");
    assert!(html.contains(&format!("href=\"/ui/leads/{}\"", email.replace('@', "%40"))));
    let (status, html) = me
        .post(&format!("/ui/handoffs/{id}/reject"), &[("reason", " ")])
        .await;
    assert_eq!(status, 400, "{html}");
    let (status, _) = me
        .post(&format!("/ui/handoffs/{id}/accept"), &[("back", "board")])
        .await;
    assert_eq!(status, 303);
    let (_, html) = me
        .get(&format!("/ui/board?answered={id}&done=accepted"))
        .await;
    assert!(html.contains("id=\"board-notice\""), "{html}");
    assert!(!html.contains(&format!("id=\"handoff-{id}\"")), "{html}");

    let lead = app.lead(email).await;
    assert_eq!(lead["stage"], "sal", "{lead:#}");
    let last = lead["stage_history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["to"], "sal");
    assert!(
        last.to_string().contains(&format!("ui:{owner}")),
        "{last:#}"
    );
    // Answered: the page shows who answered and no buttons.
    let (_, html) = me.get(&format!("/ui/handoffs/{id}")).await;
    assert!(html.contains(&format!("ui:{owner}")), "{html}");
    assert!(!html.contains(&format!("id=\"accept-{id}\"")), "{html}");
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
    let sink = SmtpSink::start().unwrap();
    let app = console_app(&format!(
        "\n[mail]\nurl = \"smtp://127.0.0.1:{}\"\npublic_url = \"https://mail.example.com\"\n\
         secret = \"{SECRET}\"\nretry_base = \"200ms\"\ntimeout = \"5s\"\n",
        sink.port
    ))
    .await;
    let email = "retry.me@kunde.example";
    refuse(&sink, email);
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let mara = UiClient::sign_in(&app, "mara").await;
    let start = Instant::now();
    let (id, html) = loop {
        let (status, html) = mara.get("/ui/mail?state=failed").await;
        assert_eq!(status, 200, "{html}");
        if let Some(id) = id_after(&html, "id=\"retry-") {
            break (id, html);
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{html}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(html.contains("refused by policy"), "{html}");
    assert!(html.contains("id=\"streams\""), "{html}");

    sink.behave(|b| {
        b.rcpt.remove(email);
    });
    let (status, _) = mara.post(&format!("/ui/mails/{id}/retry"), &[]).await;
    assert_eq!(status, 303);
    let (_, html) = mara.get(&format!("/ui/mail?retried={id}")).await;
    assert!(html.contains("id=\"mail-notice\""), "{html}");
    let start = Instant::now();
    loop {
        let (_, html) = mara.get("/ui/mail?state=sent").await;
        if html.contains(&format!("id=\"mail-{id}\"")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{html}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Recorded as the console user.
    let (_, mail) = app.get(&format!("/v1/mails/{id}")).await;
    assert!(mail.to_string().contains("ui:mara"), "{mail:#}");
    // Retrying it again is refused: it is not failed any more.
    let (status, _) = mara.post(&format!("/ui/mails/{id}/retry"), &[]).await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_page_shows_a_syntax_error_and_retries_a_failed_event() {
    let app = console_app("").await;
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

    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, html) = mara.get("/ui/rules").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("rules/50-broken.rhai:2:"), "{html}");
    assert!(html.contains("id=\"templates\""), "{html}");
    let seq = id_after(&html, "id=\"retry-event-").expect("a failed event with a button");
    assert!(html.contains("rules/60-boom.rhai:3:"), "{html}");
    assert!(html.contains("kaputt"), "{html}");

    write_rule(&app, "60-boom.rhai", "fn on_event(lead, event) {\n    if event.properties.boom == true {\n        lead.tag(\"boomed\");\n    }\n}\n").await;
    let (status, _) = mara.post(&format!("/ui/events/{seq}/retry"), &[]).await;
    assert_eq!(status, 303);
    let stats = app
        .wait_for("the retried event", |s: &Value| {
            s["events_failed"] == 0 && s["events_pending"] == 0
        })
        .await;
    assert_eq!(stats["events_failed"], 0);
    assert_eq!(
        app.lead("boom@example.com").await["tags"],
        json!(["boomed"])
    );
    let (_, html) = mara.get(&format!("/ui/rules?retried={seq}")).await;
    assert!(html.contains("id=\"rules-notice\""), "{html}");
    assert!(html.contains("id=\"no-failed\""), "{html}");
}
