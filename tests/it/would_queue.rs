//! `WouldQueue` (the outbox's decisions without a database, used by the backtest and
//! rule fixtures) against the live outbox: the same sequence of mail requests, once
//! through a running daemon with a real SMTP server, once through `WouldQueue`.

use std::sync::Arc;

use nurtured::domain::{Email, MailClass, MailRequest, Repeat};
use nurtured::mail::StreamPlan;
use nurtured::mail::would_queue::{Verdict, WouldQueue};
use nurtured::smtp_sink::SmtpSink;

use crate::helpers::{config_of, mail_dir, spawn_in};
use crate::mail::{consenting, download, mail_status, pricing_view};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn would_queue_agrees_with_the_live_outbox() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let config = config_of(app.dir.path());
    let store = nurtured::store::Store::open(&config.database_url)
        .await
        .unwrap();
    let plan = StreamPlan::new(config.streams.clone(), config.mail.quarantine.clone())
        .with_topics(config.topics.clone());
    let mut would = WouldQueue::new(
        Arc::new(config.mail.clone()),
        Arc::new(plan),
        config.time_zone,
    );
    let email = "w.queue@kunde.example";
    // What 50-mail.rhai asks for.
    let use_case = MailRequest {
        template: "trigger/use-case".into(),
        class: MailClass::Marketing,
        key: "crm".into(),
        repeat: Repeat::Once,
        data: serde_json::Map::new(),
        opt_in: false,
    };
    let pricing = MailRequest {
        template: "trigger/pricing-follow-up".into(),
        key: String::new(),
        repeat: Repeat::Every(14 * 86_400_000),
        ..use_case.clone()
    };
    let mut verdicts = Vec::new();
    let mut sent = 0;
    // Each request: the live daemon gets the event and decides (sent or suppressed),
    // then `WouldQueue` gets the same mail for the lead as it is now.
    let mut ask = async |app: &crate::helpers::TestApp,
                         path: &str,
                         event: serde_json::Value,
                         mail: &MailRequest| {
        app.post(path, &event).await;
        app.settle().await;
        // The mailer is done with the lead's trigger mails (none waits in the queue).
        let start = std::time::Instant::now();
        while mail_status(app, email)
            .await
            .iter()
            .any(|m| m.0.starts_with("trigger/") && (m.1 == "queued" || m.1 == "sending"))
        {
            assert!(
                start.elapsed().as_secs() < 20,
                "a trigger mail stays queued"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let lead = store
            .lead_by_email(&Email::parse(email).unwrap())
            .await
            .unwrap()
            .expect("the lead");
        let verdict = would.offer(lead.id, &lead, mail, chrono::Utc::now());
        if verdict == Verdict::Queued {
            sent += 1;
        }
        verdicts.push(verdict);
    };
    // Without consent: the second download asks, and the outbox holds it back.
    app.post("/v1/track", &download(email, "crm", "A")).await;
    ask(&app, "/v1/track", download(email, "crm", "B"), &use_case).await;
    // With consent: the next request goes out, the one after it does not.
    app.post("/v1/identify", &consenting(email, false)).await;
    ask(&app, "/v1/track", download(email, "crm", "C"), &use_case).await;
    ask(&app, "/v1/track", download(email, "crm", "D"), &use_case).await;
    ask(&app, "/v1/page", pricing_view(email), &pricing).await;
    ask(&app, "/v1/page", pricing_view(email), &pricing).await;

    assert_eq!(
        verdicts,
        vec![
            Verdict::Suppressed("no_consent"),
            Verdict::Queued,
            Verdict::Suppressed("once_only"),
            Verdict::Queued,
            Verdict::Suppressed("repeat_period"),
        ]
    );
    // The live outbox: a row for each mail not held back by its key, sent or
    // suppressed with the same reason.
    let live: Vec<(String, String, Option<String>)> = mail_status(&app, email)
        .await
        .into_iter()
        .filter(|m| m.0.starts_with("trigger/"))
        .map(|(t, status, reason)| {
            let reason = reason.filter(|_| status == "suppressed");
            (t, status, reason)
        })
        .collect();
    let expected: Vec<(String, String, Option<String>)> = vec![
        (
            "trigger/use-case".into(),
            "suppressed".into(),
            Some("no_consent".into()),
        ),
        ("trigger/use-case".into(), "sent".into(), None),
        ("trigger/pricing-follow-up".into(), "sent".into(), None),
    ];
    let mut live_sorted = live.clone();
    live_sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(live_sorted, expected_sorted, "{live:?}");
    assert_eq!(
        crate::mail::mails_to(&sink, email).len(),
        sent,
        "WouldQueue's queued mails are the mails the server received"
    );
    store.close().await;
    app.stop().await;
}
