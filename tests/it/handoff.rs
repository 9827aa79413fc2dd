//! The sales handoff end to end: a real SQLite file, the daemon over HTTP, the SMTP
//! sink on loopback, a webhook receiver on loopback, and for the SLA a manual clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use nurtured::clock::ManualClock;
use nurtured::handoff::Desk;
use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, eventually, mail_dir, spawn_in, start_in};
use crate::mail::{body, link_token, mails_to};

/// Calls a webhook receiver got: (headers, body).
type Calls = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A receiver on a loopback port that answers 500 to the first `fail` calls.
async fn receiver(fail: usize) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let state = (calls.clone(), Arc::new(Mutex::new(fail)));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((calls, fail)): State<(Calls, Arc<Mutex<usize>>)>,
                 headers: HeaderMap,
                 text: String| async move {
                    calls.lock().unwrap().push((headers, text));
                    let mut left = fail.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        AxStatus::INTERNAL_SERVER_ERROR
                    } else {
                        AxStatus::OK
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

const HOOK_SECRET: &str = "hook-secret-0123456789";

/// The two salespeople of the shipped configuration (a test that sets its own team
/// names them again).
const OWNERS: &str = r#"
[[sales.owners]]
id = "anna"
name = "Anna Berger"
email = "anna.berger@example.com"

[[sales.owners]]
id = "ben"
name = "Ben Okafor"
email = "ben.okafor@example.com"
"#;

/// The shipped team, with a webhook to `url`.
fn team_with_hook(url: &str) -> String {
    format!(
        r#"{OWNERS}
[[sales.teams]]
name = "inbound"
owners = ["anna", "ben"]
escalate_to = "Vertriebsleitung <vertrieb@example.com>"
reaction = "2h"
time_zone = "Europe/Berlin"
escalation = [
    {{ at = "50%", do = "remind" }},
    {{ at = "100%", do = "escalate" }},
    {{ at = "150%", do = "reassign" }},
]
webhook = {{ url = "{url}", secret = "{HOOK_SECRET}", format = "json" }}
"#
    )
}

/// A lead that becomes MQL: contact data, two whitepapers, a webinar, the pricing page.
fn journey(email: &str, name: (&str, &str), company: &str, tracking: bool) -> Vec<Value> {
    let id = |n: u32| format!("{email}-{n}");
    vec![
        json!({"type": "identify", "userId": email, "messageId": id(1),
               "traits": {"email": email, "firstName": name.0, "lastName": name.1,
                          "phone": "+49 30 1234567", "title": "Head of IT",
                          "consent_tracking": tracking, "consent_source": "contact form",
                          "company": {"name": company, "employee_count": 200}}}),
        json!({"type": "track", "userId": email, "messageId": id(2), "event": "Content Downloaded",
               "properties": {"asset": "Whitepaper Lead Scoring", "type": "whitepaper", "topic": "scoring"}}),
        json!({"type": "track", "userId": email, "messageId": id(3), "event": "Content Downloaded",
               "properties": {"asset": "Case Study Maschinenbau", "type": "case_study", "topic": "scoring"}}),
        json!({"type": "track", "userId": email, "messageId": id(4), "event": "Webinar Attended",
               "properties": {"webinar": "B2B Funnel"}}),
        json!({"type": "page", "userId": email, "messageId": id(5), "name": "Pricing",
               "properties": {"url": "https://www.example.com/pricing"}}),
    ]
}

async fn post_journey(app: &TestApp, events: Vec<Value>) {
    let (status, body) = app.post("/v1/batch", &json!({ "batch": events })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The handoffs of a lead, newest first.
async fn handoffs_of(app: &TestApp, email: &str) -> Vec<Value> {
    let (_, body) = app.get("/v1/handoffs?limit=100").await;
    body["handoffs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["email"] == email)
        .cloned()
        .collect()
}

/// POSTs a handoff link (the button on its page); the answer's status.
async fn press(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .post(format!("{}/h/{token}", app.base))
        .send()
        .await
        .unwrap()
        .status()
}

/// The reason of the lead's latest stage move.
fn last_reason(lead: &Value) -> String {
    let history = lead["stage_history"].as_array().unwrap();
    history.last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sign(ts: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mql_reaches_sales_at_once_and_is_accepted_or_rejected_by_its_owner() {
    let sink = SmtpSink::start().unwrap();
    // The receiver fails twice: the first call is tried again.
    let (url, calls) = receiver(2).await;
    let app = spawn_in(mail_dir(sink.port, &team_with_hook(&url))).await;

    // 1. Anna Schmidt becomes MQL; the first owner in turn hears of it within a second.
    let email = "anna.schmidt@acme.de";
    let started = Instant::now();
    post_journey(
        &app,
        journey(email, ("Anna", "Schmidt"), "ACME GmbH", false),
    )
    .await;
    let mail = eventually("the handoff mail", 5, || {
        mails_to(&sink, "anna.berger@example.com")
            .into_iter()
            .next()
    })
    .await;
    let took = mail.at.duration_since(started);
    eprintln!("handoff notification at the SMTP server {took:?} after the events were sent");
    assert!(took < Duration::from_secs(1), "notification took {took:?}");
    let text = body(&mail);
    for essential in [
        "Anna Schmidt",
        "+49 30 1234567",
        email,
        "ACME GmbH",
        "Head of IT",
        "200 Mitarbeitende",
        "Fit ",
        "Interesse ",
        "passt und ist interessiert",
        "entered mql",
        "rules/40-funnel.rhai:",
        "Case Study Maschinenbau",
        "Whitepaper Lead Scoring",
        "scoring (2x)",
        "Webinar Attended: B2B Funnel",
        " CE",
        "https://mail.example.com/h/",
    ] {
        assert!(
            text.contains(essential),
            "missing {essential:?} in:\n{text}"
        );
    }
    // No tracking consent: no pages, no opens and clicks, not even the score reason.
    for tracked in ["pricing", "WEBSITE-BESUCHE", "Geöffnete", "Ge=C3=B6ffnete"] {
        assert!(
            !text.contains(tracked),
            "tracking detail {tracked:?} in:\n{text}"
        );
    }
    let handoff = handoffs_of(&app, email).await.remove(0);
    assert_eq!(handoff["state"], "open");
    assert_eq!(handoff["owner"], "anna");
    assert_eq!(handoff["team"], "inbound");
    assert!(handoff["due_at"].as_str().unwrap().ends_with('Z'));
    let id = handoff["id"].as_i64().unwrap();

    // The open list shows it with its deadline.
    let (_, open) = app.get("/v1/handoffs?state=open").await;
    assert!(
        open["handoffs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == id && h["due_at"].is_string()),
        "{open}"
    );

    // The webhook: correctly signed, tried again after two 500s, then delivered once.
    let assigned = eventually("the webhook delivered", 10, || {
        let c = calls.lock().unwrap();
        (c.len() >= 3).then(|| c.clone())
    })
    .await;
    for (headers, text) in &assigned[..3] {
        let ts = headers["x-nurtured-timestamp"].to_str().unwrap();
        assert_eq!(
            headers["x-nurtured-signature"].to_str().unwrap(),
            sign(ts, text)
        );
        assert_eq!(headers["x-nurtured-event"], "handoff.assigned");
        assert_eq!(text, &assigned[0].1, "every try sends the same body");
    }
    let payload: Value = serde_json::from_str(&assigned[0].1).unwrap();
    assert_eq!(payload["event"], "handoff.assigned");
    assert_eq!(payload["handoff"]["owner"]["id"], "anna");
    assert_eq!(payload["lead"]["contact"]["phone"], "+49 30 1234567");
    assert_eq!(payload["lead"]["tracking"], Value::Null, "{payload:#}");
    // The owner's links act in her name: they are not given to the receiver.
    assert!(
        payload["handoff"].get("accept_url").is_none(),
        "{payload:#}"
    );
    assert!(!assigned[0].1.contains("/h/"), "{payload:#}");
    assert!(!assigned[0].1.contains("/pricing"));
    // The receiver has the third call; the sender records it right after the answer.
    let started = Instant::now();
    let shown = loop {
        let (_, shown) = app.get(&format!("/v1/handoffs/{id}")).await;
        if shown["webhooks"][0]["status"] == "sent" || started.elapsed() > Duration::from_secs(5) {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(shown["webhooks"][0]["status"], "sent", "{shown:#}");
    assert_eq!(shown["webhooks"][0]["attempts"], 3, "{shown:#}");

    // 2. A forged or altered link is refused and changes nothing.
    let accept = link_token(&text, "https://mail.example.com/h/");
    let (payload_part, sig) = accept.split_once('.').unwrap();
    // Another first character of the signature (the replacement must differ from it).
    let first = sig.chars().next().unwrap();
    let altered = format!(
        "{payload_part}.{}{}",
        if first == 'x' { 'y' } else { 'x' },
        &sig[first.len_utf8()..]
    );
    for bad in [altered.as_str(), "forged.token"] {
        assert_eq!(press(&app, bad).await, StatusCode::BAD_REQUEST);
    }
    assert_eq!(handoffs_of(&app, email).await[0]["state"], "open");

    // 3. The accept link: a page with a button; POST accepts; the lead is SAL and Anna
    // Berger's. Used again, the link is refused.
    let page = app
        .client
        .get(format!("{}/h/{accept}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Annehmen"));
    assert_eq!(app.lead(email).await["stage"], "mql", "GET changes nothing");
    assert_eq!(press(&app, &accept).await, StatusCode::OK);
    let lead = app.lead(email).await;
    assert_eq!(lead["stage"], "sal", "{lead:#}");
    assert_eq!(lead["owner"], "anna.berger@example.com");
    let last = last_reason(&lead);
    assert!(last.contains("accepted by anna"), "{last}");
    assert_eq!(press(&app, &accept).await, StatusCode::CONFLICT);
    let h = handoffs_of(&app, email).await.remove(0);
    assert_eq!(h["state"], "accepted");
    assert_eq!(h["answered_by"], "anna");

    // 4. The next MQL goes to the next owner in turn; a colleague at the same company
    // already with sales is pointed out.
    let colleague = "max.huber@acme.de";
    post_journey(
        &app,
        journey(colleague, ("Max", "Huber"), "ACME GmbH", true),
    )
    .await;
    let mail = eventually("Ben's handoff mail", 5, || {
        mails_to(&sink, "ben.okafor@example.com").into_iter().next()
    })
    .await;
    let text = body(&mail);
    assert!(text.contains("Max Huber"), "{text}");
    assert!(
        text.contains(email),
        "the colleague at ACME is named:\n{text}"
    );
    // Max allowed tracking: the pages are there.
    assert!(text.contains("https://www.example.com/pricing"), "{text}");
    let h = handoffs_of(&app, colleague).await.remove(0);
    assert_eq!(h["owner"], "ben");
    let id = h["id"].as_i64().unwrap();

    // 5. Ben rejects through the CRM API: without a reason it is refused; with one, the
    // lead goes back to marketing with the reason, and into the nurture stream.
    let (status, body_json) = app
        .post(&format!("/v1/handoffs/{id}/reject"), &json!({"by": "ben"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body_json}");
    assert_eq!(app.lead(colleague).await["stage"], "mql");
    let (status, body_json) = app
        .post(
            &format!("/v1/handoffs/{id}/reject"),
            &json!({"by": "ben", "reason": "kein Budget vor Q3"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body_json}");
    assert_eq!(body_json["state"], "rejected");
    assert_eq!(body_json["answer_note"], "kein Budget vor Q3");
    let lead = app.lead(colleague).await;
    assert_eq!(lead["stage"], "recycled", "{lead:#}");
    let last = last_reason(&lead);
    assert!(last.contains("kein Budget vor Q3"), "{last}");
    let streams = lead["streams"].as_array().unwrap();
    assert!(
        streams
            .iter()
            .any(|s| s["stream"] == "recycled" && s["status"] == "active"),
        "{streams:#?}"
    );
    // Answering twice is refused.
    let (status, _) = app
        .post(&format!("/v1/handoffs/{id}/accept"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // 6. The third goes to Anna again.
    let third = "lea.wolf@example-industrie.de";
    post_journey(
        &app,
        journey(third, ("Lea", "Wolf"), "Wolf Industrie", false),
    )
    .await;
    eventually("the third handoff", 5, || {
        (mails_to(&sink, "anna.berger@example.com").len() == 2).then_some(())
    })
    .await;
    let h = handoffs_of(&app, third).await.remove(0);
    assert_eq!(h["owner"], "anna");

    // 7. The CRM moves her to sql before Anna answers: the handoff ends as taken over,
    // and the receiver hears of it.
    let (status, _) = app
        .post(
            &format!("/v1/leads/{third}/stage"),
            &json!({"stage": "sql", "reason": "called in herself", "by": "crm"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let h = handoffs_of(&app, third).await.remove(0);
    assert_eq!(h["state"], "accepted");
    assert_eq!(h["answered_by"], "api:crm");
    let taken = eventually("the webhook of the ended handoff", 10, || {
        calls
            .lock()
            .unwrap()
            .iter()
            .find(|(headers, text)| {
                headers["x-nurtured-event"] == "handoff.accepted" && text.contains(third)
            })
            .cloned()
    })
    .await;
    let payload: Value = serde_json::from_str(&taken.1).unwrap();
    assert_eq!(payload["handoff"]["state"], "accepted", "{payload:#}");
}

/// A handoff with its log, as the API shows it.
async fn shown(app: &TestApp, id: i64) -> Value {
    app.get(&format!("/v1/handoffs/{id}")).await.1
}

fn berlin(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Sets the clock and runs a desk pass, then a mail pass.
async fn at(clock: &ManualClock, desk: &Desk, app: &TestApp, when: DateTime<Utc>) {
    clock.set(when);
    desk.run_due(&CancellationToken::new())
        .await
        .expect("desk pass");
    app.running
        .as_ref()
        .unwrap()
        .app
        .mailer
        .run_due()
        .await
        .expect("mail pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_counts_business_hours_and_escalates_on_time_across_the_clock_change() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    // Friday 27 March 2026, 16:30 in Berlin; summer time starts on Sunday.
    let clock = Arc::new(ManualClock::new(berlin(3, 27, 16, 30)));
    let running = start_in(dir.path(), clock.clone()).await;
    let desk = running.app.desk.clone();
    let app = TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
        share: crate::helpers::share().await,
    };
    let email = "jana.koch@kunde.example";
    post_journey(&app, journey(email, ("Jana", "Koch"), "Kunde AG", false)).await;
    app.settle().await;
    at(&clock, &desk, &app, berlin(3, 27, 16, 30)).await;
    let h = handoffs_of(&app, email).await.remove(0);
    let id = h["id"].as_i64().unwrap();
    assert_eq!(h["owner"], "anna");
    // Two business hours from Friday 16:30: Monday 10:30 (CEST, UTC+2).
    assert_eq!(h["due_at"], "2026-03-30T08:30:00.000Z");
    let anna = "anna.berger@example.com";
    let lead_mail = |n: usize, to: &'static str| {
        let sink = sink.clone();
        async move {
            eventually(&format!("{n} mails to {to}"), 5, || {
                (mails_to(&sink, to).len() == n).then_some(())
            })
            .await
        }
    };
    lead_mail(1, anna).await;
    let first_text = body(&mails_to(&sink, anna)[0]);
    assert!(
        first_text.contains("Mo 30.03.2026 10:30 CEST"),
        "{first_text}"
    );
    let anna_accept = link_token(&first_text, "https://mail.example.com/h/");

    // Nothing over the weekend or before the reminder at half time (Monday 09:30).
    for when in [
        berlin(3, 27, 18, 0),
        berlin(3, 28, 12, 0),
        berlin(3, 29, 12, 0),
        berlin(3, 30, 9, 29),
    ] {
        at(&clock, &desk, &app, when).await;
    }
    assert_eq!(mails_to(&sink, anna).len(), 1);
    assert_eq!(
        shown(&app, id).await["log"].as_array().unwrap().len(),
        2,
        "created, assigned"
    );

    // 09:30: the reminder to Anna.
    at(&clock, &desk, &app, berlin(3, 30, 9, 30)).await;
    lead_mail(2, anna).await;
    assert!(body(&mails_to(&sink, anna)[1]).contains("wartet noch"));
    // 10:30: the deadline passes (a breach) and the team lead hears of it.
    at(&clock, &desk, &app, berlin(3, 30, 10, 30)).await;
    lead_mail(1, "vertrieb@example.com").await;
    let v = shown(&app, id).await;
    assert_eq!(v["state"], "escalated");
    assert_eq!(v["breached_at"], "2026-03-30T08:30:00.000Z");
    // 11:30: reassigned to Ben, with a fresh deadline; Anna's link no longer works.
    at(&clock, &desk, &app, berlin(3, 30, 11, 29)).await;
    assert_eq!(shown(&app, id).await["owner"], "anna");
    // Past the deadline and still Anna's: overdue.
    let metrics = crate::metrics::scrape(
        &app,
        &format!("{}/metrics", app.base),
        Some(crate::helpers::TOKEN),
    )
    .await;
    assert_eq!(
        crate::metrics::gauge(&metrics, "nurtured_handoffs_overdue", &[]),
        1.0
    );
    at(&clock, &desk, &app, berlin(3, 30, 11, 30)).await;
    let v = shown(&app, id).await;
    assert_eq!(v["owner"], "ben");
    assert_eq!(v["state"], "open");
    assert_eq!(v["due_at"], "2026-03-30T11:30:00.000Z");
    lead_mail(1, "ben.okafor@example.com").await;
    let ben_text = body(&mails_to(&sink, "ben.okafor@example.com")[0]);
    assert!(
        ben_text.contains("Anna Berger hat nicht rechtzeitig reagiert"),
        "{ben_text}"
    );
    assert_eq!(press(&app, &anna_accept).await, StatusCode::CONFLICT);
    assert_eq!(app.lead(email).await["stage"], "mql");

    // Ben does not react either: reminder 12:30, escalation 13:30, and at 14:30 every
    // owner had it: the lead goes back to marketing.
    at(&clock, &desk, &app, berlin(3, 30, 12, 30)).await;
    at(&clock, &desk, &app, berlin(3, 30, 13, 30)).await;
    at(&clock, &desk, &app, berlin(3, 30, 14, 30)).await;
    let v = shown(&app, id).await;
    assert_eq!(v["state"], "expired", "{v:#}");
    let steps: Vec<(String, String, String)> = v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["what"].as_str().unwrap().to_string(),
                l["owner"].as_str().unwrap_or_default().to_string(),
                l["at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("created", "", "2026-03-27T15:30:00.000Z"),
        ("assigned", "anna", "2026-03-27T15:30:00.000Z"),
        ("reminded", "anna", "2026-03-30T07:30:00.000Z"),
        ("breached", "anna", "2026-03-30T08:30:00.000Z"),
        ("escalated", "anna", "2026-03-30T08:30:00.000Z"),
        ("reassigned", "ben", "2026-03-30T09:30:00.000Z"),
        ("reminded", "ben", "2026-03-30T10:30:00.000Z"),
        ("breached", "ben", "2026-03-30T11:30:00.000Z"),
        ("escalated", "ben", "2026-03-30T11:30:00.000Z"),
        ("expired", "ben", "2026-03-30T12:30:00.000Z"),
    ];
    let got: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, expect);
    let lead = app.lead(email).await;
    assert_eq!(lead["stage"], "recycled", "{lead:#}");
    // Both deadlines passed without an answer; nothing is open any more.
    let metrics = crate::metrics::scrape(
        &app,
        &format!("{}/metrics", app.base),
        Some(crate::helpers::TOKEN),
    )
    .await;
    assert_eq!(
        crate::metrics::counter_with(&metrics, "nurtured_sla_breaches_total", &[]),
        2.0
    );
    assert_eq!(
        crate::metrics::gauge(&metrics, "nurtured_handoffs_open", &[]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hand_over_and_pick_owners_and_a_crm_move_ends_the_handoff() {
    let sink = SmtpSink::start().unwrap();
    // The team's owner is picked by a rule: northern companies go to Ben.
    let extra = format!(
        r#"{OWNERS}
[[sales.teams]]
name = "inbound"
owners = ["anna", "ben"]
assign = "60-sales.rhai:owner_for"
reaction = "4h"
calendar = "always"
"#
    );
    let dir = mail_dir(sink.port, &extra);
    std::fs::write(
        dir.path().join("rules/60-sales.rhai"),
        r#"
fn on_event(lead, event) {
    if event.name == "Demo Requested" {
        lead.handoff("inbound", "asked for a demo");
    }
    if event.name == "Callback Requested" {
        lead.handoff("outbound", "wants a call");
    }
}

fn owner_for(lead) {
    if lead.company.contains("Nord") { "ben" } else { "" }
}
"#,
    )
    .unwrap();
    let app = spawn_in(dir).await;
    let email = "kai@nordwerk.example";
    let (status, _) = app
        .post(
            "/v1/identify",
            &json!({"userId": email, "traits": {"email": email, "name": "Kai Lund", "company": "Nordwerk GmbH"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.post(
        "/v1/track",
        &json!({"userId": email, "event": "Demo Requested"}),
    )
    .await;
    let h = eventually_handoff(&app, email).await;
    assert_eq!(h["owner"], "ben", "{h:#}");
    assert_eq!(h["reason"], "asked for a demo");
    assert!(
        h["source"]
            .as_str()
            .unwrap()
            .starts_with("rules/60-sales.rhai:"),
        "{h:#}"
    );

    // An unknown team is a rule error naming the teams; the event is kept as failed.
    app.post(
        "/v1/track",
        &json!({"userId": email, "event": "Callback Requested"}),
    )
    .await;
    app.wait_for("the failed event", |s| s["events_failed"] == 1)
        .await;
    let lead = app.lead(email).await;
    let error = &lead["recent_activity"][0]["error"];
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown team `outbound`") && message.contains("inbound"),
        "{error}"
    );
    assert!(
        error["file"]
            .as_str()
            .unwrap()
            .ends_with("rules/60-sales.rhai"),
        "{error}"
    );
    assert_eq!(error["line"], 7, "{error}");

    // The CRM moves the lead on before anyone answered: the handoff ends as taken over.
    let (status, body) = app
        .post(
            &format!("/v1/leads/{email}/stage"),
            &json!({"stage": "sql", "reason": "called back", "by": "crm"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let h = handoffs_of(&app, email).await.remove(0);
    assert_eq!(h["state"], "accepted", "{h:#}");
    assert_eq!(h["answered_by"], "api:crm");
    assert!(h["next_at"].is_null());
}

async fn eventually_handoff(app: &TestApp, email: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(h) = handoffs_of(app, email).await.into_iter().next()
            && h["state"] == "open"
        {
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no open handoff for {email}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
