//! The console's funnel, lead list and lead pages against a daemon that took in a
//! journey: an MQL at ACME with consent (a trigger mail sent to a real SMTP server on
//! loopback, a handoff to anna) and a second lead from LinkedIn. The funnel shows the
//! numbers of `GET /v1/reports/funnel`; the lead page its timeline with the rules'
//! file:line and the mail as sent; the list filters, searches and exports CSV; sales
//! users are kept to their own leads. The pages are read in headless Chromium (each
//! test saves screenshots under `target/tmp/console/`); status codes, headers and the
//! CSV over plain HTTP.

use std::time::Duration;

use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{Options, Session};
use crate::console::{UiClient, browser_sign_in, users_toml};
use crate::helpers::{TOKEN, TestApp, mail_dir, spawn_in};

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

/// A rate as the English page shows it.
fn rate_text(rate: &Value) -> String {
    rate.as_f64()
        .map_or_else(|| "–".to_string(), |r| format!("{r:.1} %"))
}

/// Every `rules/FILE.rhai:LINE` in `text`.
fn rule_sources(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("rules/") {
        let tail = &rest[at..];
        let Some(dot) = tail.find(".rhai:") else {
            break;
        };
        let digits: String = tail[dot + 6..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let name = &tail[..dot];
        if !digits.is_empty() && !name.contains(char::is_whitespace) {
            found.push(format!("{name}.rhai:{digits}"));
        }
        rest = &tail[dot + 6..];
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funnel_page_shows_the_numbers_of_the_api() {
    if crate::browser::skipped("the funnel page") {
        return;
    }
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let b = Session::start().await;
    browser_sign_in(&b, &app.base, "mara").await;
    b.click_and_load("nav a[href='/ui/funnel']").await;
    b.wait_for("#period-form").await;
    // The default period is the API's; then 7 days and a first day, picked in the form.
    for (days, since) in [("", ""), ("7", ""), ("", "2020-01-01")] {
        let query = match (days, since) {
            ("", "") => String::new(),
            (d, "") => format!("?days={d}"),
            (_, s) => format!("?since={s}"),
        };
        if !query.is_empty() {
            b.fill("#days", days).await;
            b.execute(
                "document.getElementById('since').value = arguments[0]; return null",
                vec![json!(since)],
            )
            .await;
            b.click_and_load("#period-show").await;
            assert!(
                b.url().await.contains(&query.replace('?', "")),
                "{}",
                b.url().await
            );
        }
        b.wait_for("#h-stages").await;
        let (status, report) = app.get(&format!("/v1/reports/funnel{query}")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        for s in report["stages"].as_array().unwrap() {
            let stage = s["stage"].as_str().unwrap();
            assert_eq!(
                b.text(&format!("#stage-{stage}")).await,
                s["leads"].to_string(),
                "stage {stage} for {query:?}"
            );
        }
        assert_eq!(
            b.text("#leads-created").await,
            report["leads_created"].to_string()
        );
        let mut rates = 0;
        for c in report["conversions"].as_array().unwrap() {
            let from = c["stage"].as_str().unwrap();
            if c["entered"] == 0 {
                assert!(!b.exists(&format!("#entered-{from}")).await, "{from}");
                continue;
            }
            assert_eq!(
                b.text(&format!("#entered-{from}")).await,
                c["entered"].to_string()
            );
            for (i, r) in c["reached"].as_array().unwrap().iter().enumerate() {
                let to = r["stage"].as_str().unwrap();
                let cell = format!("#conv-{from}-{to}");
                if (i == 0 && c["closed"] == false) || r["leads"].as_i64().unwrap() > 0 {
                    assert_eq!(b.text(&cell).await, rate_text(&r["rate_pct"]), "{cell}");
                    assert_eq!(
                        b.text(&format!("#reached-{from}-{to}")).await,
                        r["leads"].to_string()
                    );
                    rates += 1;
                } else {
                    assert!(!b.exists(&cell).await, "{cell}");
                }
            }
        }
        assert!(rates > 0, "some conversion is shown for {query:?}");
        for c in report["channels"].as_array().unwrap() {
            let channel = c["channel"].as_str().unwrap();
            assert_eq!(
                b.text(&format!("#channel-{channel}")).await,
                c["leads"].to_string()
            );
        }
    }
    // The chart of new leads per channel is drawn from the page's JSON block.
    b.goto(&format!("{}/ui/funnel", app.base)).await;
    b.wait_for("#channel-chart canvas").await;
    b.screenshot("funnel").await;
    b.execute(
        "document.getElementById('h-channels').scrollIntoView(); return null",
        vec![],
    )
    .await;
    b.screenshot("funnel-channels").await;
    // A period the API refuses is named.
    b.fill("#days", "7").await;
    b.execute(
        "document.getElementById('since').value = '2020-01-01'; return null",
        vec![],
    )
    .await;
    b.click_and_load("#period-show").await;
    let problem = b.wait_for("#period-problem").await.text().await.unwrap();
    assert!(problem.contains("not both"), "{problem}");
    b.close().await;
    let mara = UiClient::sign_in(&app, "mara").await;
    let (status, _) = mara.get("/ui/funnel?days=7&since=2020-01-01").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_page_shows_the_timeline_with_its_sources_and_the_mail_as_sent() {
    if crate::browser::skipped("the lead page") {
        return;
    }
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let api = app.lead(LEAD).await;
    let sent = api["mails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["status"] == "sent" && m["template"] == "trigger/use-case")
        .unwrap_or_else(|| panic!("no sent use case mail: {api:#}"));
    let id = sent["id"].as_i64().unwrap();

    let b = Session::start().await;
    browser_sign_in(&b, &app.base, "mara").await;
    b.goto(&format!("{}/ui/leads", app.base)).await;
    b.click_and_load("a[href='/ui/leads/anna.schmidt%40acme.de']")
        .await;
    b.wait_for("#timeline").await;
    assert_eq!(b.text("#lead-email").await, LEAD);
    assert_eq!(b.text("#lead-stage").await, "mql");
    assert_eq!(b.text("#lead-company").await, "ACME GmbH");
    let consent = b.text("#consent-email").await;
    assert!(
        consent.starts_with("given") && consent.ends_with("contact form"),
        "{consent}"
    );
    assert_eq!(
        b.text(".matrix .here").await,
        "High fit, high interest: ready for sales"
    );
    let fit: f64 = b.text("#lead-fit").await.parse().unwrap();
    assert_eq!(Some(fit), api["fit"].as_f64());
    // The timeline names the rule lines that scored the lead and moved it to mql.
    let timeline = b.text("#timeline").await;
    let sources = rule_sources(&timeline);
    assert!(
        sources
            .iter()
            .any(|s| s.starts_with("rules/40-funnel.rhai:")),
        "{timeline}"
    );
    assert!(
        sources
            .iter()
            .any(|s| s.starts_with("rules/20-interest.rhai:")),
        "{timeline}"
    );
    for move_ in api["stage_history"].as_array().unwrap() {
        let source = move_["source"].as_str().unwrap();
        assert!(timeline.contains(source), "{source} in {timeline}");
    }
    assert!(timeline.contains("Content Downloaded"), "{timeline}");
    assert!(timeline.contains("trigger/use-case · sent"), "{timeline}");
    let handoffs = b.text("#handoffs").await;
    assert!(
        handoffs.contains("anna") && handoffs.contains("open"),
        "{handoffs}"
    );
    b.screenshot("lead").await;

    // The mail as sent, in its sandboxed frame (its summary opens it).
    b.click(&format!("#mail-{id} summary")).await;
    let frame = b.wait_for(&format!("#preview-{id}")).await;
    assert_eq!(
        frame.attr("src").await.unwrap().as_deref(),
        Some(format!("/ui/mails/{id}/preview").as_str())
    );
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    b.execute(
        "arguments[0].scrollIntoView(); return null",
        vec![json!(b.find(&format!("#mail-{id}")).await)],
    )
    .await;
    b.screenshot("lead-mail").await;
    frame.enter_frame().await.unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        body = b.wait_for("body").await.text().await.unwrap();
        if !body.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.contains("Anwendungsbeispiel"), "{body}");
    assert!(body.contains("scoring"), "{body}");
    b.client().enter_parent_frame().await.unwrap();
    b.close().await;

    // On a phone.
    let b = Session::start_with(Options::phone()).await;
    browser_sign_in(&b, &app.base, "mara").await;
    b.goto(&format!("{}/ui/leads/{LEAD}", app.base)).await;
    b.wait_for("#timeline").await;
    let wide = b
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1",
            vec![],
        )
        .await;
    assert_eq!(wide, json!(false), "the page is wider than the phone");
    b.screenshot("lead-phone").await;
    b.execute(
        "document.getElementById('h-handoffs').scrollIntoView(); return null",
        vec![],
    )
    .await;
    b.screenshot("lead-phone-handoffs").await;
    b.close().await;

    // The preview's own policy loads and runs nothing; it is the stored mail.
    let mara = UiClient::sign_in(&app, "mara").await;
    let resp = mara.fetch(&format!("/ui/mails/{id}/preview")).await;
    assert_eq!(resp.status(), 200);
    let policy = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
        "{policy}"
    );
    let preview = resp.text().await.unwrap();
    let (_, mail) = app.get(&format!("/v1/mails/{id}")).await;
    assert_eq!(preview, mail["content"]["html_body"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_list_filters_searches_and_exports_csv() {
    if crate::browser::skipped("the lead list") {
        return;
    }
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let b = Session::start().await;
    browser_sign_in(&b, &app.base, "mara").await;
    b.click_and_load("nav a[href='/ui/leads']").await;
    let list = b.wait_for("#lead-list").await.text().await.unwrap();
    assert!(list.contains(LEAD) && list.contains(OTHER), "{list}");
    b.screenshot("leads").await;

    // By stage.
    b.find("#f-stage")
        .await
        .select_by_value("mql")
        .await
        .unwrap();
    b.click_and_load("#filter-apply").await;
    let list = b.wait_for("#lead-list").await.text().await.unwrap();
    assert!(list.contains(LEAD) && !list.contains(OTHER), "{list}");
    let other_stage = app.lead(OTHER).await["stage"].as_str().unwrap().to_string();
    assert_ne!(other_stage, "mql");
    b.find("#f-stage")
        .await
        .select_by_value(&other_stage)
        .await
        .unwrap();
    b.click_and_load("#filter-apply").await;
    let list = b.wait_for("#lead-list").await.text().await.unwrap();
    assert!(!list.contains(LEAD) && list.contains(OTHER), "{list}");

    // The search finds a lead by its company; the CSV link keeps the filter.
    b.click_and_load("#filter-reset").await;
    b.fill("#f-q", "Beispiel AG").await;
    b.click_and_load("#filter-apply").await;
    let list = b.wait_for("#lead-list").await.text().await.unwrap();
    assert!(!list.contains(LEAD) && list.contains(OTHER), "{list}");
    assert!(list.contains("Beispiel AG"), "{list}");
    b.screenshot("leads-search").await;
    let href = b.attr("#csv-link", "href").await.unwrap();
    assert_eq!(href, "/ui/leads.csv?q=Beispiel+AG");
    b.close().await;

    let mara = UiClient::sign_in(&app, "mara").await;
    let resp = mara.fetch(&href).await;
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap();
    assert!(kind.starts_with("text/csv"), "{kind}");
    let csv = resp.text().await.unwrap();
    let api = app
        .client
        .get(format!("{}/v1/leads?q=Beispiel+AG&format=csv", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, api, "the API's CSV");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].starts_with(OTHER) && lines[1].contains("Beispiel AG"),
        "{csv}"
    );
    // A bad filter is named.
    let (status, html) = mara.get("/ui/leads?stage=nope").await;
    assert_eq!(status, 400);
    assert!(html.contains("id=\"filter-problem\""), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_users_see_only_their_own_leads_and_not_the_funnel() {
    if crate::browser::skipped("sales on the lead pages") {
        return;
    }
    let sink = SmtpSink::start().unwrap();
    let app = journey_app(&sink).await;
    post_journey(&app).await;
    let (_, handoffs) = app.get("/v1/handoffs?limit=10").await;
    assert_eq!(handoffs["handoffs"][0]["owner"], "anna", "{handoffs}");

    let b = Session::start().await;
    browser_sign_in(&b, &app.base, "anna").await;
    assert!(!b.exists("nav a[href='/ui/funnel']").await);
    b.goto(&format!("{}/ui/funnel", app.base)).await;
    let message = b.wait_for("#error-message").await.text().await.unwrap();
    assert_eq!(message, "The funnel report is for marketing and admins.");
    b.screenshot("funnel-sales-403").await;
    // Her list holds the lead handed to her, and its page opens.
    b.goto(&format!("{}/ui/leads", app.base)).await;
    let list = b.wait_for("#lead-list").await.text().await.unwrap();
    assert!(list.contains(LEAD) && !list.contains(OTHER), "{list}");
    assert!(
        !b.exists("#f-owner").await,
        "sales cannot pick another owner"
    );
    b.click_and_load("a.lead-link").await;
    b.wait_for("#timeline").await;
    // Otto is not hers.
    b.goto(&format!("{}/ui/leads/{OTHER}", app.base)).await;
    let message = b.wait_for("#error-message").await.text().await.unwrap();
    assert_eq!(message, "This lead has no handoff of yours.");
    b.screenshot("lead-sales-403").await;
    b.close().await;

    // The status codes, Ben's view, and the mail preview.
    let anna = UiClient::sign_in(&app, "anna").await;
    let ben = UiClient::sign_in(&app, "ben").await;
    assert_eq!(anna.get("/ui/funnel").await.0, 403);
    assert_eq!(anna.get(&format!("/ui/leads/{LEAD}")).await.0, 200);
    assert_eq!(anna.get(&format!("/ui/leads/{OTHER}")).await.0, 403);
    assert_eq!(ben.get(&format!("/ui/leads/{LEAD}")).await.0, 403);
    let (status, _) = ben.get("/ui/leads/nobody@nowhere.example").await;
    assert_eq!(status, 403, "no hint whether a lead exists");
    let (_, html) = anna.get("/ui/leads?owner=ben").await;
    assert!(html.contains(LEAD) && !html.contains(OTHER), "{html}");
    let (_, html) = ben.get("/ui/leads").await;
    assert!(!html.contains(LEAD) && !html.contains(OTHER), "{html}");
    let (_, csv) = ben.get("/ui/leads.csv").await;
    assert_eq!(csv.lines().count(), 1, "{csv}");
    let (_, csv) = anna.get("/ui/leads.csv").await;
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let (_, mails) = app.get(&format!("/v1/mails?lead={LEAD}")).await;
    let id = mails["mails"][0]["id"].as_i64().unwrap();
    assert_eq!(ben.get(&format!("/ui/mails/{id}/preview")).await.0, 403);
    assert_eq!(anna.get(&format!("/ui/mails/{id}/preview")).await.0, 200);
}
