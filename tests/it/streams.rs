//! Nurture streams with a controllable clock: step delays, the send window in the
//! lead's time zone and the frequency cap, without sleeping for days.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use nurtured::clock::ManualClock;
use nurtured::smtp_sink::SmtpSink;
use serde_json::Value;

use crate::helpers::{TestApp, mail_dir, start_in};
use crate::mail::{consenting, mails_to};

fn berlin(m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
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

async fn mails(app: &TestApp, email: &str) -> Vec<Value> {
    let (_, body) = app.get(&format!("/v1/mails?lead={email}")).await;
    let mut list = body["mails"].as_array().unwrap().clone();
    list.reverse();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_follow_their_delays_the_send_window_and_the_frequency_cap() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, STREAM);
    // Monday 2 March 2026, 10:00 in Berlin.
    let clock = Arc::new(ManualClock::new(berlin(3, 2, 10, 0, 0)));
    let running = start_in(dir.path(), clock.clone()).await;
    let mailer = running.app.mailer.clone();
    let app = TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
    };
    let email = "stream@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.settle().await;
    let sent = |n: usize| {
        let got = mails_to(&sink, email).len();
        assert_eq!(got, n, "mails received");
    };
    let at = |when: DateTime<Utc>| {
        clock.set(when);
        let mailer = mailer.clone();
        async move { mailer.run_due().await.expect("mail pass") }
    };

    // Two hours in: nothing is due.
    at(berlin(3, 2, 12, 0, 0)).await;
    sent(0);
    // A day after joining: step 1; a day later: step 2.
    at(berlin(3, 3, 10, 0, 0)).await;
    sent(1);
    at(berlin(3, 4, 10, 0, 0)).await;
    sent(2);
    // Step 3 is due on Thursday, but two marketing mails went out within 7 days: it
    // waits until the first of them is 7 days old.
    let pass = at(berlin(3, 5, 10, 0, 0)).await;
    assert_eq!(pass.later, 1, "{pass:?}");
    sent(2);
    let list = mails(&app, email).await;
    assert_eq!(list[2]["status"], "queued", "{list:?}");
    assert_eq!(list[2]["reason"], "frequency_cap");
    assert_eq!(
        list[2]["due_at"].as_i64().unwrap(),
        berlin(3, 10, 10, 0, 0).timestamp_millis() + 1
    );
    at(berlin(3, 10, 9, 59, 59)).await;
    sent(2);
    at(berlin(3, 10, 10, 0, 1)).await;
    sent(3);
    // Step 4 comes 3 days later, on Friday 13 March at 10:00; at 17:30 the send window
    // (Mon-Fri 09:00-17:00) is closed: it waits for Monday 09:00.
    let pass = at(berlin(3, 13, 17, 30, 0)).await;
    assert_eq!(pass.later, 1, "{pass:?}");
    let list = mails(&app, email).await;
    assert_eq!(list[3]["reason"], "send_window", "{list:?}");
    assert_eq!(
        list[3]["due_at"].as_i64().unwrap(),
        berlin(3, 16, 9, 0, 0).timestamp_millis()
    );
    at(berlin(3, 15, 12, 0, 0)).await;
    sent(3);
    at(berlin(3, 16, 9, 0, 0)).await;
    sent(4);

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
