//! Nurture streams with a controllable clock: step delays, the send window in the
//! lead's time zone and the frequency cap, without sleeping for days.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use nurtured::clock::ManualClock;
use nurtured::mail::{Mailer, Pass};
use nurtured::smtp_sink::SmtpSink;
use serde_json::Value;

use crate::helpers::{TestApp, eventually, mail_dir, start_in};
use crate::mail::{consenting, mails_to};

pub(crate) fn berlin(m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, m, d, h, min, s)
        .unwrap()
        .with_timezone(&Utc)
}

const STREAM: &str = r#"
[mail.frequency_cap]
max = 2
per = "7d"

[[streams]]
name = "welcome"
stages = ["subscriber", "lead"]
steps = [
  { after = "1d", template = "stream/lead-welcome" },
  { after = "1d", template = "stream/lead-guide" },
  { after = "1d", template = "stream/lead-checklist" },
  { after = "3d", template = "stream/lead-webinar" },
]
"#;

/// Waits until mail `i` (oldest first) of `email` has `status` and `reason` (`""` for
/// none).
async fn mail_in(app: &TestApp, email: &str, i: usize, status: &str, reason: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let list = mails(app, email).await;
        if let Some(m) = list.get(i)
            && m["status"] == status
            && m["reason"].as_str().unwrap_or_default() == reason
        {
            return m.clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "mail {i} not {status}/{reason}: {list:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A daemon on a manual clock that starts on Monday 2 March 2026, 10:00 in Berlin,
/// sending to `sink`, with `extra` config.
pub(crate) struct Clocked {
    pub app: TestApp,
    pub clock: Arc<ManualClock>,
    pub mailer: Arc<Mailer>,
}

pub(crate) async fn clocked(sink: &SmtpSink, extra: &str) -> Clocked {
    let dir = mail_dir(sink.port, extra);
    let clock = Arc::new(ManualClock::new(berlin(3, 2, 10, 0, 0)));
    let running = start_in(dir.path(), clock.clone()).await;
    let mailer = running.app.mailer.clone();
    let app = TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
        share: crate::helpers::share().await,
    };
    Clocked { app, clock, mailer }
}

/// Sets the clock to `when` and runs a mail pass there.
pub(crate) async fn pass_at(clock: &ManualClock, mailer: &Mailer, when: DateTime<Utc>) -> Pass {
    clock.set(when);
    mailer.run_due().await.expect("mail pass")
}

pub(crate) async fn mails(app: &TestApp, email: &str) -> Vec<Value> {
    let (_, body) = app.get(&format!("/v1/mails?lead={email}")).await;
    let mut list = body["mails"].as_array().unwrap().clone();
    list.reverse();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_follow_their_delays_the_send_window_and_the_frequency_cap() {
    let sink = SmtpSink::start().unwrap();
    let Clocked { app, clock, mailer } = clocked(&sink, STREAM).await;
    let email = "stream@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.settle().await;
    // Mails expected by now; the worker in the background may be the one sending.
    let sent = |n: usize| {
        let sink = sink.clone();
        async move {
            eventually(&format!("{n} mails"), 5, || {
                (mails_to(&sink, email).len() == n).then_some(())
            })
            .await
        }
    };
    let at = |when: DateTime<Utc>| pass_at(&clock, &mailer, when);

    // Two hours in: nothing is due.
    at(berlin(3, 2, 12, 0, 0)).await;
    sent(0).await;
    // A day after joining: step 1; a day later: step 2.
    at(berlin(3, 3, 10, 0, 0)).await;
    sent(1).await;
    at(berlin(3, 4, 10, 0, 0)).await;
    sent(2).await;
    // Step 3 is due on Thursday, but two marketing mails went out within 7 days: it
    // waits until the first of them is 7 days old.
    at(berlin(3, 5, 10, 0, 0)).await;
    let third = mail_in(&app, email, 2, "queued", "frequency_cap").await;
    sent(2).await;
    assert_eq!(
        third["due_at"].as_i64().unwrap(),
        berlin(3, 10, 10, 0, 0).timestamp_millis() + 1
    );
    at(berlin(3, 10, 9, 59, 59)).await;
    sent(2).await;
    at(berlin(3, 10, 10, 0, 1)).await;
    sent(3).await;
    // Step 4 comes 3 days later, on Friday 13 March at 10:00; at 17:30 the send window
    // (Mon-Fri 09:00-17:00) is closed: it waits for Monday 09:00.
    at(berlin(3, 13, 17, 30, 0)).await;
    let fourth = mail_in(&app, email, 3, "queued", "send_window").await;
    assert_eq!(
        fourth["due_at"].as_i64().unwrap(),
        berlin(3, 16, 9, 0, 0).timestamp_millis()
    );
    at(berlin(3, 15, 12, 0, 0)).await;
    sent(3).await;
    at(berlin(3, 16, 9, 0, 0)).await;
    sent(4).await;

    let got = mails_to(&sink, email);
    let subjects: Vec<String> = got.iter().map(|m| m.header("Subject").unwrap()).collect();
    let templates: Vec<Value> = mails(&app, email)
        .await
        .iter()
        .map(|m| m["template"].clone())
        .collect();
    assert_eq!(
        templates,
        [
            "stream/lead-welcome",
            "stream/lead-guide",
            "stream/lead-checklist",
            "stream/lead-webinar"
        ],
        "{subjects:?}"
    );
    // Every step is marketing: each carries the one-click unsubscribe.
    assert!(
        got.iter()
            .all(|m| m.header("List-Unsubscribe-Post").is_some())
    );
    // The stream is done.
    let lead = app.lead(email).await;
    assert_eq!(lead["streams"][0]["status"], "completed", "{lead}");
    app.stop().await;
}

const MQL_STREAM: &str = r#"
[[streams]]
name = "mql"
stages = ["mql"]
goals = ["Offer Requested"]
reentry = "never"
on_quarantine = "pause"
steps = [
  { after = "1h", template = "stream/mql-solution" },
  { after = "1d", template = "stream/mql-case-study" },
  { after = "1d", template = "stream/mql-roi" },
]
"#;

async fn set_stage(app: &TestApp, email: &str, stage: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/leads/{email}/stage"),
            &serde_json::json!({"stage": stage, "reason": "test", "by": "sales"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

/// Quarantine pauses the stream, coming back resumes it with the next step, a goal
/// ends it, and "never" keeps the lead from joining again. Lead data is escaped in
/// the HTML part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_pauses_and_resumes_a_goal_ends_and_reentry_is_refused() {
    let sink = SmtpSink::start().unwrap();
    let Clocked { app, clock, mailer } = clocked(&sink, MQL_STREAM).await;
    let email = "mql@kunde.example";
    let mut identify = consenting(email, false);
    identify["traits"]["first_name"] = "<b>Eva</b>".into();
    app.post("/v1/identify", &identify).await;
    app.settle().await;
    set_stage(&app, email, "mql").await;
    let at = |when: DateTime<Utc>| pass_at(&clock, &mailer, when);
    at(berlin(3, 2, 11, 0, 0)).await;
    let first = eventually("step 1", 5, || {
        let got = mails_to(&sink, email);
        (got.len() == 1).then_some(got)
    })
    .await;
    let body = crate::mail::body(&first[0]);
    let html = body.split("Content-Type: text/html").nth(1).unwrap();
    assert!(
        html.contains("&lt;b&gt;Eva&lt;/b&gt;"),
        "escaped in HTML:\n{html}"
    );
    assert!(!html.contains("<b>Eva</b>"), "{html}");

    // Sales qualifies the lead: the stream pauses; nothing goes out while in sql.
    set_stage(&app, email, "sql").await;
    let lead = app.lead(email).await;
    assert_eq!(lead["streams"][0]["status"], "paused", "{lead}");
    at(berlin(3, 4, 11, 0, 0)).await;
    at(berlin(3, 6, 11, 0, 0)).await;
    assert_eq!(mails_to(&sink, email).len(), 1);

    // Back to mql: the stream goes on with step 2.
    set_stage(&app, email, "mql").await;
    at(berlin(3, 9, 11, 0, 0)).await;
    // (The worker in the background may be the one sending it.)
    eventually("step 2", 5, || {
        (mails_to(&sink, email).len() == 2).then_some(())
    })
    .await;
    let lead = app.lead(email).await;
    assert_eq!(lead["streams"][0]["status"], "active", "{lead}");
    assert_eq!(
        lead["mails"][0]["template"], "stream/mql-case-study",
        "{lead}"
    );

    // The goal: the lead asks for an offer; the stream ends.
    app.post(
        "/v1/track",
        &serde_json::json!({"userId": email, "event": "Offer Requested"}),
    )
    .await;
    app.settle().await;
    let lead = app.lead(email).await;
    assert_eq!(lead["streams"][0]["status"], "exited", "{lead}");
    assert_eq!(
        lead["streams"][0]["end_reason"], "goal reached: Offer Requested",
        "{lead}"
    );
    at(berlin(3, 12, 11, 0, 0)).await;
    assert_eq!(mails_to(&sink, email).len(), 2);

    // reentry = "never": back in mql later, the lead does not join again.
    set_stage(&app, email, "recycled").await;
    set_stage(&app, email, "mql").await;
    let lead = app.lead(email).await;
    let streams = lead["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{lead}");
    app.stop().await;
}

/// A step that waited (here: for the frequency cap) when the lead became SQL is held
/// back, and sent once the lead is back in a stage the stream serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_held_back_by_quarantine_goes_out_after_the_pause() {
    let sink = SmtpSink::start().unwrap();
    let extra = format!("[mail.frequency_cap]\nmax = 1\nper = \"7d\"\n{MQL_STREAM}");
    let Clocked { app, clock, mailer } = clocked(&sink, &extra).await;
    let email = "held@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.settle().await;
    set_stage(&app, email, "mql").await;
    let at = |when: DateTime<Utc>| pass_at(&clock, &mailer, when);
    at(berlin(3, 2, 11, 0, 0)).await;
    eventually("step 1", 5, || {
        (mails_to(&sink, email).len() == 1).then_some(())
    })
    .await;
    // Step 2 is due a day later but waits for the cap (one mail per 7 days).
    at(berlin(3, 3, 11, 0, 0)).await;
    mail_in(&app, email, 1, "queued", "frequency_cap").await;
    // Sales qualifies the lead; when the cap lets the mail go, quarantine holds it.
    set_stage(&app, email, "sql").await;
    at(berlin(3, 9, 12, 0, 0)).await;
    mail_in(&app, email, 1, "suppressed", "quarantine").await;
    assert_eq!(mails_to(&sink, email).len(), 1);
    // Back to mql: step 2 goes out, then step 3 a day later.
    set_stage(&app, email, "mql").await;
    at(berlin(3, 9, 12, 0, 1)).await;
    eventually("step 2 after the pause", 5, || {
        (mails_to(&sink, email).len() == 2).then_some(())
    })
    .await;
    let third = mail_in(&app, email, 2, "sent", "").await;
    assert_eq!(third["template"], "stream/mql-case-study", "{third}");
    app.stop().await;
}

/// Consent withdrawn through a form ends the streams, like an unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_by_identify_ends_the_streams() {
    let sink = SmtpSink::start().unwrap();
    let Clocked { app, .. } = clocked(&sink, STREAM).await;
    let email = "withdraws@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.settle().await;
    assert_eq!(app.lead(email).await["streams"][0]["status"], "active");
    app.post(
        "/v1/identify",
        &serde_json::json!({"userId": email, "traits": {
            "consent_email": false, "consent_source": "preference centre"}}),
    )
    .await;
    app.settle().await;
    let lead = app.lead(email).await;
    assert_eq!(lead["streams"][0]["status"], "exited", "{lead}");
    assert_eq!(
        lead["streams"][0]["end_reason"],
        "consent withdrawn (preference centre)"
    );
    app.stop().await;
}

/// A stream for leads with a tag: a rule's tag brings the lead in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_set_by_a_rule_enrolls_the_lead() {
    let sink = SmtpSink::start().unwrap();
    let extra = r#"
[[streams]]
name = "low-priority"
stages = ["lead"]
tags = ["low-priority"]
steps = [{ after = "30d", template = "stream/lead-guide" }]
"#;
    let Clocked { app, .. } = clocked(&sink, extra).await;
    let email = "tagged@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.settle().await;
    assert!(
        app.lead(email).await["streams"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A download makes a lead of it; with no fit, the matrix rule tags it low-priority.
    app.post(
        "/v1/track",
        &crate::mail::download(email, "crm", "CRM-Auswahl"),
    )
    .await;
    app.settle().await;
    let lead = app.lead(email).await;
    assert!(lead["tags"].to_string().contains("low-priority"), "{lead}");
    assert_eq!(lead["streams"][0]["stream"], "low-priority", "{lead}");
    assert_eq!(lead["streams"][0]["status"], "active", "{lead}");
    app.stop().await;
}

/// A newsletter subscriber joins the welcome stream at once, but its first step waits
/// for the double opt-in; once confirmed, the step goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_waits_for_the_double_opt_in() {
    let sink = SmtpSink::start().unwrap();
    let extra = r#"
[[streams]]
name = "welcome"
stages = ["subscriber", "lead"]
steps = [{ after = "1h", template = "stream/lead-welcome" }]
"#;
    let Clocked { app, clock, mailer } = clocked(&sink, extra).await;
    let at = |when: DateTime<Utc>| pass_at(&clock, &mailer, when);
    let email = "doi@kunde.example";
    app.post(
        "/v1/track",
        &serde_json::json!({"userId": email, "event": "Newsletter Subscribed",
                            "context": {"traits": {"email": email}}}),
    )
    .await;
    let confirmation =
        eventually("the confirmation mail", 5, || mails_to(&sink, email).pop()).await;
    // An hour later the welcome step is due, but there is no consent yet: it waits.
    at(berlin(3, 2, 11, 0, 0)).await;
    mail_in(&app, email, 1, "suppressed", "no_consent").await;
    assert_eq!(mails_to(&sink, email).len(), 1);
    let lead = app.lead(email).await;
    assert_eq!(lead["streams"][0]["status"], "paused", "{lead}");

    let token = crate::mail::link_token(
        &crate::mail::body(&confirmation),
        "https://mail.example.com/confirm/",
    );
    let r = app
        .client
        .post(format!("{}/confirm/{token}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    at(berlin(3, 2, 11, 0, 1)).await;
    let welcome = eventually("the welcome mail", 5, || {
        let got = mails_to(&sink, email);
        (got.len() == 2).then(|| got[1].clone())
    })
    .await;
    assert!(welcome.header("List-Unsubscribe").is_some(), "marketing");
    let third = mail_in(&app, email, 2, "sent", "").await;
    assert_eq!(third["template"], "stream/lead-welcome", "{third}");
    app.stop().await;
}
