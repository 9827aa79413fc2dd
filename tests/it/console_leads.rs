//! The console's funnel, lead list and lead pages against a daemon that took in a
//! journey: an MQL at ACME with consent (a trigger mail sent to a real SMTP server on
//! loopback, a handoff to anna) and a second lead from LinkedIn. The funnel shows the
//! numbers of `GET /v1/reports/funnel`; the lead page its timeline with the rules'
//! file:line and the mail as sent; the list filters, searches and exports CSV; sales
//! users are kept to their own leads.

use std::time::Duration;

use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::console::{UiClient, users_toml};
use crate::helpers::{TestApp, mail_dir, spawn_in};

/// The lead that becomes an MQL and gets a mail.
const LEAD: &str = "anna.schmidt@acme.de";
/// A lead from LinkedIn that stays a lead.
const OTHER: &str = "otto.gross@beispiel.example";

/// A daemon with the console users that sends mail to `sink`.
async fn journey_app(sink: &SmtpSink) -> TestApp {
    let dir = mail_dir(sink.port, "");
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&users_toml());
    std::fs::write(&path, text).unwrap();
    spawn_in(dir).await
}

/// The events: Anna Schmidt (ACME GmbH) agrees to mail and tracking, downloads two
/// whitepapers on scoring (the use case mail), attends a webinar and looks at the
/// prices (an MQL, handed to sales); Otto Groß comes from LinkedIn.
fn events() -> Vec<Value> {
    let id = |n: u32| format!("cl-{n}");
    vec![
        json!({"type": "identify", "userId": LEAD, "messageId": id(1),
               "traits": {"email": LEAD, "firstName": "Anna", "lastName": "Schmidt",
                          "phone": "+49 30 1234567", "title": "Head of IT",
                          "consent_email": true, "consent_tracking": true,
                          "consent_source": "contact form",
                          "company": {"name": "ACME GmbH", "employee_count": 200}}}),
        json!({"type": "track", "userId": LEAD, "messageId": id(2), "event": "Content Downloaded",
               "properties": {"asset": "Whitepaper Lead Scoring", "type": "whitepaper", "topic": "scoring"}}),
        json!({"type": "track", "userId": LEAD, "messageId": id(3), "event": "Content Downloaded",
               "properties": {"asset": "Case Study Maschinenbau", "type": "case_study", "topic": "scoring"}}),
        json!({"type": "track", "userId": LEAD, "messageId": id(4), "event": "Webinar Attended",
               "properties": {"webinar": "B2B Funnel"}}),
        json!({"type": "page", "userId": LEAD, "messageId": id(5), "name": "Pricing",
               "properties": {"url": "https://www.example.com/pricing"}}),
        json!({"type": "identify", "userId": OTHER, "messageId": id(6),
               "context": {"campaign": {"source": "LinkedIn"}},
               "traits": {"email": OTHER, "firstName": "Otto", "lastName": "Groß",
                          "company": {"name": "Beispiel AG", "employee_count": 12}}}),
    ]
}

/// Posts [`events`] and waits until Anna's handoff is open and her mail was sent.
async fn post_journey(app: &TestApp) {
    let (status, body) = app.post("/v1/batch", &json!({ "batch": events() })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    for _ in 0..200 {
        let (_, mails) = app.get(&format!("/v1/mails?lead={LEAD}")).await;
        let (_, handoffs) = app.get("/v1/handoffs?limit=10").await;
        let sent = mails["mails"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["status"] == "sent" && m["template"] == "trigger/use-case")
        });
        let handed = handoffs["handoffs"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["email"] == LEAD));
        if sent && handed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, mails) = app.get(&format!("/v1/mails?lead={LEAD}")).await;
    panic!("no sent mail and handoff for {LEAD}: {mails:#}");
}

/// The text of the element with `id` in `html` (up to its first child tag).
fn text_of(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let at = html.find(&marker)? + marker.len();
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(rest[start..end].trim().to_string())
}

/// A rate as the English page shows it.
fn rate_text(rate: &Value) -> String {
    rate.as_f64()
        .map_or_else(|| "–".to_string(), |r| format!("{r:.1} %"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funnel_page_shows_the_numbers_of_the_api() {
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let mara = UiClient::sign_in(&app, "mara").await;
    for query in ["", "?days=7", "?since=2020-01-01"] {
        let (status, report) = app.get(&format!("/v1/reports/funnel{query}")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let (status, html) = mara.get(&format!("/ui/funnel{query}")).await;
        assert_eq!(status, 200, "{html}");
        for s in report["stages"].as_array().unwrap() {
            let stage = s["stage"].as_str().unwrap();
            assert_eq!(
                text_of(&html, &format!("stage-{stage}")),
                Some(s["leads"].to_string()),
                "stage {stage} for {query:?}"
            );
        }
        assert_eq!(
            text_of(&html, "leads-created"),
            Some(report["leads_created"].to_string())
        );
        let mut rates = 0;
        for c in report["conversions"].as_array().unwrap() {
            let from = c["stage"].as_str().unwrap();
            if c["entered"] == 0 {
                assert_eq!(text_of(&html, &format!("entered-{from}")), None);
                continue;
            }
            assert_eq!(
                text_of(&html, &format!("entered-{from}")),
                Some(c["entered"].to_string())
            );
            for (i, r) in c["reached"].as_array().unwrap().iter().enumerate() {
                let to = r["stage"].as_str().unwrap();
                let shown = text_of(&html, &format!("conv-{from}-{to}"));
                if (i == 0 && c["closed"] == false) || r["leads"].as_i64().unwrap() > 0 {
                    assert_eq!(shown, Some(rate_text(&r["rate_pct"])), "{from} -> {to}");
                    assert_eq!(
                        text_of(&html, &format!("reached-{from}-{to}")),
                        Some(r["leads"].to_string())
                    );
                    rates += 1;
                } else {
                    assert_eq!(shown, None, "{from} -> {to}");
                }
            }
        }
        assert!(rates > 0, "some conversion is shown for {query:?}");
        for c in report["channels"].as_array().unwrap() {
            let channel = c["channel"].as_str().unwrap();
            assert_eq!(
                text_of(&html, &format!("channel-{channel}")),
                Some(c["leads"].to_string())
            );
        }
    }
    // The channel chart's data, and a period the API refuses.
    let (_, html) = mara.get("/ui/funnel").await;
    assert!(html.contains("id=\"channel-data\""), "{html}");
    assert!(html.contains("\"linkedin\""), "{html}");
    let (status, html) = mara.get("/ui/funnel?days=7&since=2026-01-01").await;
    assert_eq!(status, 400);
    assert!(text_of(&html, "period-problem").is_some(), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_page_shows_the_timeline_with_its_sources_and_the_mail_as_sent() {
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, html) = mara.get(&format!("/ui/leads/{LEAD}")).await;
    assert_eq!(status, 200, "{html}");
    for shown in [
        "Anna Schmidt",
        "ACME GmbH",
        "contact form",
        "High fit, high interest: ready for sales",
        "Content Downloaded",
        "trigger/use-case",
        "rules/40-funnel.rhai:",
        "rules/20-interest.rhai:",
    ] {
        assert!(html.contains(shown), "missing {shown:?}");
    }
    assert_eq!(text_of(&html, "lead-stage").as_deref(), Some("mql"));
    let api = app.lead(LEAD).await;
    let handoff = &api["handoffs"][0];
    assert_eq!(handoff["owner"], "anna");
    assert!(html.contains("<td>anna</td>"), "the handoff's owner");
    // The mail's preview is a sandboxed frame of the stored mail.
    let sent = api["mails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["status"] == "sent" && m["template"] == "trigger/use-case")
        .unwrap_or_else(|| panic!("no sent use case mail: {api:#}"));
    let id = sent["id"].as_i64().unwrap();
    let src = format!("/ui/mails/{id}/preview");
    assert!(
        html.contains(&format!("<iframe class=\"preview\" sandbox src=\"{src}\"")),
        "{html}"
    );
    let resp = mara
        .client
        .get(format!("{}{src}", app.base))
        .header("cookie", &mara.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let policy = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'; style-src 'unsafe-inline'; img-src data:"));
    let preview = resp.text().await.unwrap();
    let (_, mail) = app.get(&format!("/v1/mails/{id}")).await;
    assert_eq!(preview, mail["content"]["html_body"].as_str().unwrap());
    assert!(preview.contains("Anwendungsbeispiel"), "{preview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_list_filters_searches_and_exports_csv() {
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, html) = mara.get("/ui/leads").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(LEAD) && html.contains(OTHER));
    let (_, html) = mara.get("/ui/leads?stage=mql").await;
    assert!(html.contains(LEAD) && !html.contains(OTHER), "{html}");
    let (_, html) = mara.get("/ui/leads?q=beispiel+ag").await;
    assert!(!html.contains(LEAD) && html.contains(OTHER), "{html}");
    let (_, html) = mara.get("/ui/leads?q=acme&stage=").await;
    assert!(html.contains("href=\"/ui/leads/anna.schmidt%40acme.de\""));
    assert!(html.contains("href=\"/ui/leads.csv?q=acme\""), "{html}");
    let resp = mara
        .client
        .get(format!("{}/ui/leads.csv?q=acme", app.base))
        .header("cookie", &mara.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    let api = app
        .client
        .get(format!("{}/v1/leads?q=acme&format=csv", app.base))
        .bearer_auth(crate::helpers::TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, api);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    // A bad filter is named.
    let (status, html) = mara.get("/ui/leads?stage=nope").await;
    assert_eq!(status, 400);
    assert!(text_of(&html, "filter-problem").unwrap().contains("stage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_users_see_only_their_own_leads_and_not_the_funnel() {
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let anna = UiClient::sign_in(&app, "anna").await;
    let ben = UiClient::sign_in(&app, "ben").await;
    let (status, _) = anna.get("/ui/funnel").await;
    assert_eq!(status, 403);
    // Anna has Anna Schmidt's handoff, Ben has none.
    let (status, html) = anna.get(&format!("/ui/leads/{LEAD}")).await;
    assert_eq!(status, 200, "{html}");
    let (status, _) = anna.get(&format!("/ui/leads/{OTHER}")).await;
    assert_eq!(status, 403);
    let (status, _) = ben.get(&format!("/ui/leads/{LEAD}")).await;
    assert_eq!(status, 403);
    let (status, _) = ben.get("/ui/leads/nobody@nowhere.example").await;
    assert_eq!(status, 403, "no hint whether a lead exists");
    let (_, html) = anna.get("/ui/leads?owner=ben").await;
    assert!(html.contains(LEAD) && !html.contains(OTHER), "{html}");
    let (_, html) = ben.get("/ui/leads").await;
    assert!(!html.contains(LEAD) && !html.contains(OTHER), "{html}");
    let (_, csv) = ben.get("/ui/leads.csv").await;
    assert_eq!(csv.lines().count(), 1, "{csv}");
    // The mail preview is Anna's too.
    let (_, mails) = app.get(&format!("/v1/mails?lead={LEAD}")).await;
    let id = mails["mails"][0]["id"].as_i64().unwrap();
    let (status, _) = ben.get(&format!("/ui/mails/{id}/preview")).await;
    assert_eq!(status, 403);
}
