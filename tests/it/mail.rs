//! Mail against a real SMTP server on loopback: trigger mails, one-click unsubscribe,
//! quarantine, double opt-in, retries, rejected recipients, and the outbox after a
//! crash.

use std::time::{Duration, Instant};

use nurtured::smtp_sink::{Received, SmtpSink};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, free_port, mail_dir, mql_journey, spawn_in};

/// An identify from a form that asked for marketing (and optionally tracking) consent.
pub fn consenting(email: &str, tracking: bool) -> Value {
    json!({"userId": email, "traits": {
        "email": email, "first_name": "Anna", "last_name": "Beispiel", "company": "Beispiel AG",
        "consent_email": true, "consent_tracking": tracking, "consent_source": "contact form"}})
}

pub fn download(email: &str, topic: &str, asset: &str) -> Value {
    json!({"userId": email, "event": "Content Downloaded",
           "properties": {"type": "whitepaper", "asset": asset, "topic": topic}})
}

pub fn pricing_view(email: &str) -> Value {
    json!({"userId": email, "name": "Preise",
           "properties": {"url": "https://www.example.com/preise"}})
}

/// The mails to `email` the server accepted.
pub fn mails_to(sink: &SmtpSink, email: &str) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.to.iter().any(|t| t == email))
        .collect()
}

/// The token of the first link in `text` that starts with `prefix`.
pub fn link_token(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
    text[start + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .collect()
}

/// The plain-text part of a received mail (quoted-printable or 7bit as lettre sends it).
pub fn body(r: &Received) -> String {
    r.text().replace("=\r\n", "").replace("=3D", "=")
}

/// The mails to `email`: (template, status, reason).
pub async fn mail_status(app: &TestApp, email: &str) -> Vec<(String, String, Option<String>)> {
    let (status, body) = app.get(&format!("/v1/mails?lead={email}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["mails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["template"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
                m["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_mail_arrives_within_a_second_and_one_click_unsubscribes() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "anna@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/track", &download(email, "security", "Zero Trust"))
        .await;
    app.settle().await;
    assert!(
        mails_to(&sink, email).is_empty(),
        "one download is not enough"
    );

    // The second download on the topic: the use case mail, within a second.
    let sent_at = Instant::now();
    let (status, _) = app
        .post(
            "/v1/track",
            &download(email, "security", "SIEM im Mittelstand"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mail = eventually("the trigger mail", 5, || mails_to(&sink, email).pop()).await;
    let latency = mail.at.duration_since(sent_at);
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    assert!(body(&mail).contains("security"), "{}", mail.text());

    // RFC 8058: both headers, the URL signed for this lead.
    let list = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    assert!(list.starts_with("<https://mail.example.com/u/"), "{list}");
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let message_id = mail.header("Message-ID").expect("Message-ID");
    assert!(message_id.starts_with("<mail-"), "{message_id}");

    // A third download on the topic: the use case went out already.
    app.post("/v1/track", &download(email, "security", "Phishing-Schutz"))
        .await;
    app.settle().await;

    // GET shows a page and changes nothing; the one-click POST leaves the mail's topic
    // at once (the lead keeps its consent for other topics).
    let token = link_token(&list, "https://mail.example.com/u/");
    let url = format!("{}/u/{token}", app.base);
    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("method=\"post\""));
    assert_eq!(app.lead(email).await["consent_email"]["granted"], true);
    let posted = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], true, "{lead}");
    assert_eq!(lead["topics_left"], json!(["insights"]), "{lead}");
    assert!(
        lead["topics"][0]["source"]
            .as_str()
            .unwrap()
            .contains("unsubscribe link"),
        "{lead}"
    );

    // A pricing view asks for a follow-up of the same topic: suppressed, nothing more
    // is sent.
    app.post("/v1/page", &pricing_view(email)).await;
    app.settle().await;
    let stats = app
        .wait_for("the follow-up to be suppressed", |s| {
            s["suppressed_by_reason"]["topic_left"] == 1
        })
        .await;
    assert_eq!(stats["mails_sent"], 1, "{stats}");
    assert_eq!(mails_to(&sink, email).len(), 1);
    let mails = mail_status(&app, email).await;
    assert!(
        mails.contains(&(
            "trigger/pricing-follow-up".into(),
            "suppressed".into(),
            Some("topic_left".into())
        )),
        "{mails:?}"
    );

    // A forged or altered token changes nothing.
    let altered = format!("{}/u/{}x", app.base, &token[..token.len() - 1]);
    let r = app.client.post(&altered).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_stops_marketing_mail_even_when_queued_but_not_transactional_mail() {
    // The server is down at first, so the trigger mail stays queued.
    let port = free_port();
    let dir = mail_dir(port, "");
    std::fs::write(
        dir.path().join("rules/60-report.rhai"),
        "fn on_event(lead, event) {\n  if event.name == \"Report Requested\" {\n    \
         lead.send_mail(\"optin/confirm\", #{ transactional: true, always: true });\n  }\n}\n",
    )
    .unwrap();
    let app = spawn_in(dir).await;
    let email = "q@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    app.settle().await;
    // Tried, refused (connection), queued again.
    let start = Instant::now();
    let mails = loop {
        let mails = mail_status(&app, email).await;
        if mails.len() == 1
            && mails[0].1 == "queued"
            && mails[0].2.as_deref().is_some_and(|r| r.contains("failed"))
        {
            break mails;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{mails:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(mails[0].0, "trigger/pricing-follow-up");

    // Sales qualifies the lead while the mail waits.
    let (status, body) = app
        .post(
            &format!("/v1/leads/{email}/stage"),
            &json!({"stage": "sql", "reason": "qualified in the first call"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A transactional mail asked for now still goes out.
    app.post(
        "/v1/track",
        &json!({"userId": email, "event": "Report Requested"}),
    )
    .await;
    app.settle().await;

    let sink = SmtpSink::start_on(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        true,
    )
    .unwrap();
    let stats = app
        .wait_for("the queued mail to be suppressed", |s| {
            s["suppressed_by_reason"]["quarantine"] == 1 && s["mails_sent"] == 1
        })
        .await;
    assert_eq!(stats["mails_queued"], 0, "{stats}");
    let got = mails_to(&sink, email);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].header("List-Unsubscribe").is_none(),
        "transactional mail carries no unsubscribe"
    );
    // A new trigger in quarantine: suppressed as well.
    app.post("/v1/track", &download(email, "cloud", "A")).await;
    app.post("/v1/track", &download(email, "cloud", "B")).await;
    app.settle().await;
    app.wait_for("the use case suppressed", |s| {
        s["suppressed_by_reason"]["quarantine"] == 2
    })
    .await;
    assert_eq!(mails_to(&sink, email).len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_opt_in_confirms_consent_and_refuses_forged_tokens() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "newsletter@kunde.example";
    app.post(
        "/v1/track",
        &json!({"userId": email, "event": "Newsletter Subscribed",
                "context": {"traits": {"email": email}}}),
    )
    .await;
    let mail = eventually("the confirmation mail", 5, || mails_to(&sink, email).pop()).await;
    assert!(mail.header("List-Unsubscribe").is_none(), "transactional");
    let text = body(&mail);
    let token = link_token(&text, "https://mail.example.com/confirm/");
    assert_eq!(app.lead(email).await["consent_email"]["granted"], false);

    // An altered token and one signed with another secret: refused, nothing changes.
    let (payload, sig) = token.split_once('.').unwrap();
    let mut forged_sig: Vec<char> = sig.chars().collect();
    forged_sig[0] = if forged_sig[0] == 'A' { 'B' } else { 'A' };
    let forged: String = forged_sig.into_iter().collect();
    for bad in [
        format!("{payload}.{forged}"),
        {
            let other =
                nurtured::mail::Signer::new("another secret, also long enough to be accepted");
            other.sign(&nurtured::mail::token::Claim {
                purpose: nurtured::mail::Purpose::Confirm,
                lead: 1,
                to: other.address(email),
                mail: None,
                url: None,
                expires: None,
                round: None,
                topic: None,
                key: 0,
            })
        },
        "not-a-token".to_string(),
    ] {
        let r = app
            .client
            .post(format!("{}/confirm/{bad}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(app.lead(email).await["consent_email"]["granted"], false);

    // Following the link shows a page; a person's click on its button confirms.
    let url = format!("{}/confirm/{token}", app.base);
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("method=\"post\""));
    assert_eq!(app.lead(email).await["consent_email"]["granted"], false);
    let r = app.client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], true, "{lead}");
    assert!(
        lead["consent_email"]["source"]
            .as_str()
            .unwrap()
            .starts_with("double opt-in"),
        "{lead}"
    );
    assert!(lead["consent_email"]["at"].is_string(), "{lead}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_and_a_down_server_delay_mail_and_lose_nothing() {
    let sink = SmtpSink::start().unwrap();
    sink.behave(|b| {
        for _ in 0..2 {
            b.next_rcpt
                .push_back((451, "4.7.1 greylisted, try again later".into()));
        }
    });
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "retry@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let mail = eventually("delivery after two 451 answers", 10, || {
        mails_to(&sink, email).pop()
    })
    .await;
    let (status, list) = app.get(&format!("/v1/mails?lead={email}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["mails"][0]["attempts"], 3, "{list}");
    assert!(mail.header("Subject").is_some());
    app.stop().await;

    // Nothing listens: mails wait and go out once a server is there.
    let port = free_port();
    let app = spawn_in(mail_dir(port, "")).await;
    let emails: Vec<String> = (0..5).map(|i| format!("down{i}@kunde.example")).collect();
    for e in &emails {
        app.post("/v1/identify", &consenting(e, false)).await;
        app.post("/v1/page", &pricing_view(e)).await;
    }
    app.settle().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = app.stats().await;
    assert_eq!(stats["mails_queued"], 5, "{stats}");
    assert_eq!(stats["mails_sent"], 0, "{stats}");
    let sink = SmtpSink::start_on(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        true,
    )
    .unwrap();
    app.wait_for("all five sent", |s| s["mails_sent"] == 5)
        .await;
    for e in &emails {
        assert_eq!(mails_to(&sink, e).len(), 1, "{e}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_recipient_is_suppressed() {
    let sink = SmtpSink::start().unwrap();
    let email = "gone@kunde.example";
    sink.behave(|b| {
        b.rcpt
            .insert(email.into(), (550, "5.1.1 no such mailbox".into()));
    });
    let app = spawn_in(mail_dir(sink.port, "")).await;
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let stats = app
        .wait_for("the mail failed", |s| s["mails_failed"] == 1)
        .await;
    assert_eq!(stats["addresses_suppressed"], 1, "{stats}");
    // The next mail to the address is not even tried.
    app.post("/v1/track", &download(email, "cloud", "A")).await;
    app.post("/v1/track", &download(email, "cloud", "B")).await;
    let stats = app
        .wait_for("the next mail suppressed", |s| {
            s["suppressed_by_reason"]["address_suppressed"] == 1
        })
        .await;
    assert_eq!(stats["mails_failed"], 1, "{stats}");
    let rcpts = sink
        .log()
        .iter()
        .filter(|l| l.as_str() == format!("RCPT {email}"))
        .count();
    assert_eq!(rcpts, 1, "tried once");
    app.stop().await;
}

/// The daemon is killed while it sends (after claiming the mail, before the server
/// answered); the next daemon sends the mail once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_while_sending_leaves_no_mail_lost_or_doubled() {
    use crate::helpers::{cli_in, text};
    use crate::lease::{run_daemon, wait_for};

    let sink = SmtpSink::start().unwrap();
    sink.behave(|b| b.rcpt_delay = Duration::from_secs(3));
    let dir = mail_dir(sink.port, "");
    let email = "crash@kunde.example";
    let events = [
        json!({"type": "identify", "userId": email, "messageId": "c-1", "traits": {
            "email": email, "consent_email": true, "consent_source": "form"}}),
        json!({"type": "page", "userId": email, "messageId": "c-2", "name": "Preise",
               "properties": {"url": "https://www.example.com/preise"}}),
    ];
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();

    let (mut first, logs) = run_daemon(dir.path());
    wait_for(&logs, "nurtured is running").expect("daemon starts");
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    // The daemon claimed the mail and waits for the server's answer to RCPT: kill it.
    eventually("the daemon to start sending", 10, || {
        sink.log()
            .iter()
            .any(|l| l == &format!("RCPT {email}"))
            .then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    sink.behave(|b| b.rcpt_delay = Duration::ZERO);
    assert_eq!(sink.count(), 0);

    let (mut second, logs) = run_daemon(dir.path());
    let seen = wait_for(&logs, "queued again").expect("the interrupted mail is found");
    let mail = eventually("the mail, sent by the second daemon", 10, || {
        mails_to(&sink, email).pop()
    })
    .await;
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mails_to(&sink, email).len(), 1, "{seen:?}");
    assert!(mail.header("Message-ID").unwrap().starts_with("<mail-1."));
    second.kill().unwrap();
    second.wait().unwrap();
    let out = cli_in(dir.path(), &["mail", "list", "--json"]);
    let list: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(list[0]["status"], "sent", "{list}");
    assert_eq!(list[0]["attempts"], 2, "{list}");
}

/// Opens and clicks come back as events, only for leads who allowed tracking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_and_clicks_become_events_only_with_tracking_consent() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let (tracked, untracked) = ("tracked@kunde.example", "private@kunde.example");
    app.post("/v1/identify", &consenting(tracked, true)).await;
    app.post("/v1/identify", &consenting(untracked, false))
        .await;
    app.post("/v1/page", &pricing_view(tracked)).await;
    app.post("/v1/page", &pricing_view(untracked)).await;
    let mail = eventually("the tracked mail", 5, || mails_to(&sink, tracked).pop()).await;
    let plain = eventually("the other mail", 5, || mails_to(&sink, untracked).pop()).await;
    assert!(!body(&plain).contains("https://mail.example.com/o/"));
    assert!(!body(&plain).contains("https://mail.example.com/c/"));

    let html = body(&mail);
    let open = link_token(&html, "https://mail.example.com/o/");
    let click = link_token(&html, "https://mail.example.com/c/");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/o/{open}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/gif");
    let r = client
        .get(format!("{}/c/{click}", app.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let target = r.headers()["location"].to_str().unwrap().to_string();
    assert!(target.starts_with("https://www.example.com/"), "{target}");
    // A second open of the same mail is the same event.
    client
        .get(format!("{}/o/{open}", app.base))
        .send()
        .await
        .unwrap();
    app.settle().await;
    let lead = app.lead(tracked).await;
    let names: Vec<&str> = lead["recent_activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.iter().filter(|n| **n == "Email Opened").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "Email Clicked").count(),
        1,
        "{names:?}"
    );
    // A forged click link is no open redirect.
    let r = client
        .get(format!("{}/c/{}x", app.base, &click[..click.len() - 1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

/// A mail the server keeps refusing for longer than retry_max_age fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_that_cannot_be_delivered_in_time_fails() {
    let port = free_port();
    let app = spawn_in(mail_dir(port, "retry_max_age = \"1s\"")).await;
    let email = "nobody-listens@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let stats = app
        .wait_for("the mail to fail", |s| s["mails_failed"] == 1)
        .await;
    assert_eq!(stats["mails_sent"], 0);
    let mails = mail_status(&app, email).await;
    let reason = mails[0].2.clone().unwrap_or_default();
    assert!(reason.starts_with("gave up after"), "{reason}");
    app.stop().await;
}

/// Templates reload while the daemon runs; a broken change keeps the previous version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_reload_and_a_broken_change_keeps_the_last_good_version() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let subject = app
        .dir
        .path()
        .join("templates/de/trigger/pricing-follow-up.subject");
    // The watcher starts with the daemon and the reload comes a moment after a write:
    // write, and send to new leads until the change shows.
    let start = Instant::now();
    let mut n = 0;
    let mail = loop {
        std::fs::write(&subject, "Neu: Ihre Preisfrage, {{ lead.first_name }}\n").unwrap();
        n += 1;
        let email = format!("reload{n}@kunde.example");
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.post("/v1/identify", &consenting(&email, false)).await;
        app.post("/v1/page", &pricing_view(&email)).await;
        let m = eventually("a mail", 5, || mails_to(&sink, &email).pop()).await;
        if m.header("Subject").is_some_and(|s| s.starts_with("Neu:")) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never reloaded");
    };
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Neu: Ihre Preisfrage, Anna")
    );
    std::fs::write(&subject, "Kaputt {{ lead.first_name \n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = "reload-after-broken@kunde.example";
    app.post("/v1/identify", &consenting(second, false)).await;
    app.post("/v1/page", &pricing_view(second)).await;
    let mail = eventually("a mail", 5, || mails_to(&sink, second).pop()).await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Neu: Ihre Preisfrage, Anna")
    );
    // The problem is shown where the rule errors are.
    let stats = app.stats().await;
    let errors = stats["template_errors"].to_string();
    assert!(
        errors.contains("templates/de/trigger/pricing-follow-up.subject:"),
        "{errors}"
    );
    app.stop().await;
}

/// A burst of `n` new consenting leads, each with a few page views and one look at the
/// pricing page (one trigger mail each), as JSONL for `nurtured ingest`.
fn burst(round: usize, n: usize) -> String {
    let mut lines = String::new();
    for i in 0..n {
        let email = format!("kill{round}-{i}@kunde{}.example", i % 7);
        let id = |what: &str| format!("k{round}-{i}-{what}");
        let mut events = vec![
            json!({"type": "identify", "userId": email, "messageId": id("id"),
            "traits": {"email": email, "firstName": "Kim", "lastName": format!("Nummer {i}"),
                       "consent_email": true, "consent_source": "form"}}),
        ];
        for page in ["/blog/a", "/lp/webinar", "/case-studies/x"] {
            events.push(
                json!({"type": "page", "userId": email, "messageId": id(page),
                "name": "Seite", "properties": {"url": format!("https://www.example.com{page}")}}),
            );
        }
        events.push(
            json!({"type": "page", "userId": email, "messageId": id("pricing"),
            "name": "Preise", "properties": {"url": "https://www.example.com/preise"}}),
        );
        for e in events {
            lines.push_str(&format!("{e}\n"));
        }
    }
    lines
}

/// SIGKILL during bursts of mail over 8 connections, 10 times: every mail arrives, and a
/// kill makes the next daemon send again at most the 8 mails that were in flight (the
/// server accepted them, their outcome was not committed yet); counted at the server by
/// Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_while_eight_connections_send_resend_at_most_eight_mails_each() {
    use std::collections::HashMap;

    use crate::helpers::{cli_in, text};
    use crate::lease::{run_daemon, wait_for};

    const KILLS: usize = 10;
    const PER_BURST: usize = 80;
    const CONNECTIONS: usize = 8;
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, &format!("connections = {CONNECTIONS}"));
    // The end of each kill: mails that arrive later come from a later daemon.
    let mut marks: Vec<Instant> = Vec::new();
    for round in 0..KILLS {
        let file = dir.path().join(format!("burst{round}.jsonl"));
        std::fs::write(&file, burst(round, PER_BURST)).unwrap();
        let (mut daemon, logs) = run_daemon(dir.path());
        wait_for(&logs, "nurtured is running").expect("daemon starts");
        let before = sink.count();
        let out = cli_in(dir.path(), &["ingest", &format!("burst{round}.jsonl")]);
        assert!(out.status.success(), "{}", text(&out));
        // Kill in the middle of the burst, while all connections are busy.
        eventually("sending to be under way", 20, || {
            (sink.count() >= before + PER_BURST / 3).then_some(())
        })
        .await;
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        // Whatever the killed daemon had written to its sockets reaches the server now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        marks.push(Instant::now());
    }
    let (mut last, _logs) = run_daemon(dir.path());
    let total = KILLS * PER_BURST;
    let ids = |sink: &SmtpSink| {
        let mut by_id: HashMap<String, Vec<Received>> = HashMap::new();
        for r in sink.received() {
            by_id
                .entry(r.header("Message-ID").expect("Message-ID"))
                .or_default()
                .push(r);
        }
        by_id
    };
    eventually("every mail at the server", 30, || {
        (ids(&sink).len() == total).then_some(())
    })
    .await;
    // Give late duplicates the chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    last.kill().unwrap();
    last.wait().unwrap();

    let by_id = ids(&sink);
    assert_eq!(by_id.len(), total);
    let mut again_after = vec![0usize; KILLS];
    for (id, mut copies) in by_id {
        assert!(
            copies
                .iter()
                .all(|c| c.to.len() == 1 && c.to == copies[0].to)
        );
        copies.sort_by_key(|c| c.at);
        for pair in copies.windows(2) {
            // A copy is sent again only because of the kill right after the one before.
            let kill = marks
                .iter()
                .position(|m| *m > pair[0].at)
                .unwrap_or_else(|| panic!("{id} sent twice after the last kill"));
            assert!(
                marks[kill] < pair[1].at,
                "{id} sent twice by one daemon (kill {kill})"
            );
            again_after[kill] += 1;
        }
    }
    println!("mails sent again per kill: {again_after:?}");
    assert!(
        again_after.iter().all(|n| *n <= CONNECTIONS),
        "a kill sent more than {CONNECTIONS} mails again: {again_after:?}"
    );
    let out = cli_in(dir.path(), &["mail", "list", "--json"]);
    let list: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let list = list.as_array().unwrap();
    assert!(list.iter().all(|m| m["status"] == "sent"), "{list:?}");
}

/// Events of many leads sent in one request are processed and written together: each
/// lead's once-only mails are queued once, and its stream changes apply in the order
/// its events made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_for_many_leads_queues_each_mail_once_and_keeps_stream_order() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let leads: Vec<String> = (0..3).map(|i| format!("group{i}@kunde.example")).collect();
    let typed = |kind: &str, mut event: Value| {
        event["type"] = json!(kind);
        event
    };
    let mut batch: Vec<Value> = leads
        .iter()
        .map(|e| typed("identify", consenting(e, false)))
        .collect();
    for round in 0..4 {
        for e in &leads {
            batch.push(typed("page", pricing_view(e)));
            batch.push(typed(
                "track",
                download(e, "security", &format!("Asset {round}")),
            ));
        }
    }
    // The journey to MQL: the lead joins the stream of new leads, leaves it for the
    // MQL stream, all within this one request.
    batch.extend(mql_journey("order@kunde.example"));
    let (status, body) = app.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;

    for e in &leads {
        let mut templates: Vec<String> = mail_status(&app, e)
            .await
            .into_iter()
            .map(|(template, _, _)| template)
            .collect();
        templates.sort();
        assert_eq!(
            templates,
            ["trigger/pricing-follow-up", "trigger/use-case"],
            "{e}"
        );
    }
    let lead = app.lead("order@kunde.example").await;
    assert_eq!(lead["stage"], "mql", "{lead}");
    let streams: Vec<(String, String)> = lead["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        streams.contains(&("mql".to_string(), "active".to_string())),
        "{streams:?}"
    );
    assert!(
        !streams.contains(&("new-leads".to_string(), "active".to_string())),
        "{streams:?}"
    );
}
