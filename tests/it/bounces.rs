//! Bounces and complaints over real HTTP, a real database and a real SMTP server on
//! loopback: a delivery report built around the VERP address the server saw, a
//! feedback report, Postmark and SES (SNS-signed) webhooks, and `bounces ingest` of
//! an mbox.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nurtured::smtp_sink::{Received, SmtpSink};
use nurtured::store::{BounceLogRow, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, cli_in, config_of, eventually, mail_dir, spawn_in, text};
use crate::mail::{consenting, download, mail_status, mails_to, pricing_view};

const DSN: &str = include_str!("../fixtures/bounces/dsn-postfix.eml");
const ARF: &str = include_str!("../fixtures/bounces/arf.eml");
const POSTMARK_PASSWORD: &str = "postmark-hook-password-0123";

/// A lead with marketing consent who viewed the pricing page, and the follow-up mail
/// the server received for it.
async fn mailed(app: &TestApp, sink: &SmtpSink, email: &str) -> Received {
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    eventually("the follow-up mail", 10, || mails_to(sink, email).pop()).await
}

/// A report fixture filled in for the mail `sent`.
fn report_for(fixture: &str, sent: &Received, email: &str) -> String {
    fixture
        .replace("{{VERP}}", &sent.from)
        .replace("{{RCPT}}", email)
        .replace(
            "{{MESSAGE_ID}}",
            &sent.header("Message-ID").expect("Message-ID"),
        )
}

async fn post_message(app: &TestApp, raw: String) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(format!("{}/v1/bounces", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn bounce_log(dir: &Path, email: &str) -> Vec<BounceLogRow> {
    let store = Store::open(&config_of(dir).database_url).await.unwrap();
    let rows = store.bounce_log(Some(email), 10).await.unwrap();
    store.close().await;
    rows
}

/// Two downloads on one topic ask for the use-case mail; waits until it is decided.
async fn next_mail_is_suppressed(app: &TestApp, sink: &SmtpSink, email: &str) {
    let before = mails_to(sink, email).len();
    app.post("/v1/track", &download(email, "security", "Zero Trust"))
        .await;
    app.post("/v1/track", &download(email, "security", "SIEM"))
        .await;
    app.settle().await;
    let start = Instant::now();
    loop {
        let m = mail_status(app, email).await;
        if let Some(m) = m.iter().find(|m| m.0 != "trigger/pricing-follow-up")
            && m.1 != "queued"
            && m.1 != "sending"
        {
            assert_eq!(m.1, "suppressed", "{m:?}");
            assert_eq!(m.2.as_deref(), Some("address_suppressed"), "{m:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mails_to(sink, email).len(), before, "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_for_a_sent_mail_suppresses_the_address_and_the_next_mail() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "weg@kunde.example";
    let sent = mailed(&app, &sink, email).await;
    // Every mail goes out with its own VERP envelope sender.
    assert!(
        sent.from.starts_with("bounce+b") && sent.from.ends_with("@example.com"),
        "{}",
        sent.from
    );
    assert_eq!(sent.from, sent.from.to_ascii_lowercase());

    // Not a report: refused, nothing changes.
    let (status, body) = post_message(&app, "Subject: hello\r\n\r\nhi\r\n".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let wrong_type = app
        .client
        .post(format!("{}/v1/bounces", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, body) = post_message(&app, report_for(DSN, &sent, email)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = &body["reports"][0];
    assert_eq!(r["kind"], "hard", "{body}");
    assert_eq!(r["source"], "dsn");
    assert_eq!(r["email"], email);
    assert_eq!(r["action"], "suppressed", "{body}");
    assert!(r["outbox_id"].is_i64(), "mapped to its mail: {body}");

    // The same report again (a retried pipe): logged once.
    let (_, again) = post_message(&app, report_for(DSN, &sent, email)).await;
    assert_eq!(again["reports"][0]["action"], "duplicate", "{again}");
    let log = bounce_log(app.dir.path(), email).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status.as_deref(), Some("5.1.1"));
    assert!(
        log[0]
            .diagnostic
            .as_deref()
            .unwrap()
            .contains("User unknown"),
        "{log:?}"
    );
    assert_eq!(log[0].outbox_id, r["outbox_id"].as_i64());
    let (status, listed) = app.get(&format!("/v1/bounces?email={email}")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["bounces"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["bounces"][0]["action"], "suppressed", "{listed}");
    assert_eq!(listed["bounces"][0]["status"], "5.1.1", "{listed}");
    next_mail_is_suppressed(&app, &sink, email).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arf_complaint_withdraws_marketing_consent() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "spam@kunde.example";
    let sent = mailed(&app, &sink, email).await;
    let (status, body) = post_message(&app, report_for(ARF, &sent, email)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reports"][0]["kind"], "complaint", "{body}");
    assert_eq!(body["reports"][0]["action"], "unsubscribed", "{body}");
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert_eq!(lead["consent_email"]["source"], "complaint:arf", "{lead}");
    let log = bounce_log(app.dir.path(), email).await;
    assert_eq!(log[0].kind, "complaint");
    assert_eq!(log[0].source, "arf");
    // The lead opts in again; the same report sent once more changes nothing.
    let (status, body) = app
        .post(
            "/v1/identify",
            &json!({"userId": email, "traits": {"email": email, "consent_email": true,
                    "consent_source": "newsletter form"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    assert_eq!(app.lead(email).await["consent_email"]["granted"], true);
    let (status, body) = post_message(&app, report_for(ARF, &sent, email)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reports"][0]["action"], "duplicate", "{body}");
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], true, "{lead}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_to_the_unsubscribe_address_unsubscribes() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "unsubscribe_mailto = \"abmelden@example.com\"");
    let app = spawn_in(dir).await;
    let email = "reply@kunde.example";
    let sent = mailed(&app, &sink, email).await;
    let list = sent.header("List-Unsubscribe").unwrap();
    let start = list.find("mailto:").expect("a mailto target") + "mailto:".len();
    let to: String = list[start..]
        .chars()
        .take_while(|c| *c != '?' && *c != '>')
        .collect();
    assert!(to.starts_with("abmelden+u"), "{list}");
    // The mail server names the envelope recipient; the header shows the plain address.
    let reply = format!(
        "From: Anna <{email}>\r\nTo: abmelden@example.com\r\nSubject: unsubscribe\r\nMessage-ID: <r1@kunde.example>\r\n\r\n\r\n"
    );
    let (status, body) = post_message(&app, reply.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(app.lead(email).await["consent_email"]["granted"], true);
    let resp = app
        .client
        .post(format!(
            "{}/v1/bounces?recipient={}",
            app.base,
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        ))
        .bearer_auth(TOKEN)
        .header("content-type", "message/rfc822")
        .body(reply)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reports"][0]["action"], "unsubscribed", "{body}");
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert_eq!(lead["consent_email"]["source"], "unsubscribe:mailto");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postmark_bounce_webhook_suppresses_with_the_right_credentials_only() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    append(
        dir.path(),
        &format!("\n[bounces.postmark]\nuser = \"postmark\"\npassword = \"{POSTMARK_PASSWORD}\"\n"),
    );
    let app = spawn_in(dir).await;
    let email = "pm@kunde.example";
    mailed(&app, &sink, email).await;
    // Postmark's bounce webhook, as documented.
    let payload = json!({
        "RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807_i64,
        "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce", "Tag": "",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {}, "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": email, "From": "marketing@example.com",
        "BouncedAt": "2026-12-07T10:00:00.0000000Z", "DumpAvailable": false,
        "Inactive": true, "CanActivate": true, "Subject": "Ihr Whitepaper", "Content": ""
    });
    let url = format!("{}/hooks/postmark", app.base);
    let post = |user: &'static str, password: &'static str| {
        app.client
            .post(&url)
            .basic_auth(user, Some(password))
            .json(&payload)
            .send()
    };
    let wrong = post("postmark", "not-the-password").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(bounce_log(app.dir.path(), email).await.is_empty());
    let ok = post("postmark", POSTMARK_PASSWORD).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["reports"][0]["action"], "suppressed", "{body}");
    next_mail_is_suppressed(&app, &sink, email).await;
    app.stop().await;
}

fn append(dir: &Path, toml: &str) {
    let path = dir.join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(toml);
    std::fs::write(path, text).unwrap();
}

/// Serves the test signing certificate on loopback; returns its URL.
async fn serve_certificate() -> String {
    let pem = include_str!("../fixtures/bounces/sns-cert.pem");
    let router = axum::Router::new().route(
        "/certs/sns.pem",
        axum::routing::get(move || async move { pem }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/certs/sns.pem")
}

/// An SNS notification carrying `message`, signed (SignatureVersion 2) with the test
/// key, its certificate at `cert_url`.
fn sns_notification(message: &Value, cert_url: &str) -> Value {
    signed_sns(json!({
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:eu-central-1:123456789012:ses-feedback",
        "Subject": "Amazon SES Email Event Notification",
        "Message": message.to_string(),
        "Timestamp": "2026-12-07T10:00:01.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.eu-central-1.amazonaws.com/?Action=Unsubscribe"
    }))
}

/// `n` with its SignatureVersion 2 signature by the test key: SNS signs the listed
/// fields present in `n`, as `name\nvalue\n`, in this order.
fn signed_sns(mut n: Value) -> Value {
    let fields: &[&str] = if n["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let mut text = String::new();
    for k in fields {
        if let Some(v) = n[*k].as_str() {
            text.push_str(&format!("{k}\n{v}\n"));
        }
    }
    let key =
        ring::signature::RsaKeyPair::from_pkcs8(include_bytes!("../fixtures/bounces/sns-key.pk8"))
            .unwrap();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        text.as_bytes(),
        &mut sig,
    )
    .unwrap();
    n["Signature"] = base64::engine::general_purpose::STANDARD.encode(sig).into();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ses_bounce_through_sns_suppresses_and_a_forged_signature_is_refused() {
    let sink = SmtpSink::start().unwrap();
    let cert_url = serve_certificate().await;
    let prefix = cert_url.trim_end_matches("sns.pem");
    let dir = mail_dir(sink.port, "");
    append(
        dir.path(),
        &format!(
            "\n[bounces.ses]\nenabled = true\ncert_url_prefix = \"{prefix}\"\n\
             topic_arns = [\"arn:aws:sns:eu-central-1:123456789012:ses-feedback\"]\n"
        ),
    );
    let app = spawn_in(dir).await;
    let email = "ses@kunde.example";
    let sent = mailed(&app, &sink, email).await;
    // SES's bounce notification, as documented, for the mail sent.
    let bounce = json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": "2026-12-07T10:00:00.000Z",
            "feedbackId": "0100018c-bounce", "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"},
        "mail": {"timestamp": "2026-12-07T09:59:58.000Z", "source": sent.from,
            "sourceArn": "arn:aws:ses:eu-central-1:123456789012:identity/example.com",
            "sendingAccountId": "123456789012", "messageId": "0100018c-ses",
            "destination": [email], "headersTruncated": false,
            "commonHeaders": {"from": ["marketing@example.com"], "to": [email],
                "messageId": sent.header("Message-ID").unwrap(), "subject": "Ihr Whitepaper"}}
    });
    let url = format!("{}/hooks/ses", app.base);
    let post = |body: Value| app.client.post(&url).json(&body).send();

    // Forged: the message changed after signing.
    let mut forged = sns_notification(&bounce, &cert_url);
    let other = forged["Message"]
        .as_str()
        .unwrap()
        .replace(email, "boss@kunde.example");
    forged["Message"] = other.into();
    let r = post(forged).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A certificate from anywhere else is not even fetched.
    let elsewhere = sns_notification(&bounce, "https://certs.evil.example/sns.pem");
    let r = post(elsewhere).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(bounce_log(app.dir.path(), email).await.is_empty());
    assert!(
        bounce_log(app.dir.path(), "boss@kunde.example")
            .await
            .is_empty()
    );

    let r = post(sns_notification(&bounce, &cert_url)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reports"][0]["source"], "ses", "{body}");
    assert_eq!(body["reports"][0]["action"], "suppressed", "{body}");
    assert!(body["reports"][0]["outbox_id"].is_i64(), "{body}");
    next_mail_is_suppressed(&app, &sink, email).await;

    // A subscription confirmation is verified too; its SubscribeURL, not on an SNS
    // host here, is only logged.
    let confirmation = signed_sns(json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425dacbba",
        "TopicArn": "arn:aws:sns:eu-central-1:123456789012:ses-feedback",
        "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
        "SubscribeURL": format!("{prefix}confirm"),
        "Timestamp": "2026-12-07T09:00:00.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": cert_url,
    }));
    let r = post(confirmation.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["subscription"], "logged");
    let mut other_token = confirmation;
    other_token["Token"] = "another".into();
    assert_eq!(
        post(other_token).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_ingest_reads_an_mbox_with_a_dsn_and_a_complaint() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let (gone, annoyed) = ("gone@kunde.example", "annoyed@kunde.example");
    let a = mailed(&app, &sink, gone).await;
    let b = mailed(&app, &sink, annoyed).await;
    let mbox = format!(
        "From MAILER-DAEMON Mon Dec  7 10:00:02 2026\n{}\nFrom abuse@mail.provider.example Mon Dec  7 11:00:00 2026\n{}\n",
        report_for(DSN, &a, gone),
        report_for(ARF, &b, annoyed)
    );
    std::fs::write(app.dir.path().join("reports.mbox"), mbox).unwrap();
    // While the daemon runs, a complaint cannot be applied from here: nothing changes.
    let out = cli_in(app.dir.path(), &["bounces", "ingest", "reports.mbox"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("POST /v1/bounces"), "{}", text(&out));
    assert!(bounce_log(app.dir.path(), gone).await.is_empty());
    let dir = app.stop().await;

    // A file that holds no report is named, and nothing is changed.
    std::fs::write(dir.path().join("hello.eml"), "Subject: hi\r\n\r\nhello\r\n").unwrap();
    let out = cli_in(
        dir.path(),
        &["bounces", "ingest", "reports.mbox", "hello.eml"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("hello.eml: not a delivery report"),
        "{}",
        text(&out)
    );
    assert!(bounce_log(dir.path(), gone).await.is_empty());

    let out = cli_in(dir.path(), &["bounces", "ingest", "reports.mbox"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("2 report(s) read"), "{shown}");
    let log = bounce_log(dir.path(), gone).await;
    assert_eq!(
        (log[0].kind.as_str(), log[0].action.as_str()),
        ("hard", "suppressed")
    );
    let log = bounce_log(dir.path(), annoyed).await;
    assert_eq!(
        (log[0].kind.as_str(), log[0].action.as_str()),
        ("complaint", "unsubscribed")
    );
    let out = cli_in(dir.path(), &["bounces", "list", "--email", gone]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("gone@kunde.example hard (dsn, 5.1.1) -> suppressed"),
        "{shown}"
    );
    let app = spawn_in(dir).await;
    let lead = app.lead(annoyed).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert_eq!(lead["consent_email"]["source"], "complaint:arf");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_bounces_suppress_only_at_the_limit() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    append(
        dir.path(),
        "\n[bounces]\nsoft_limit = 2\nsoft_period = \"7d\"\n",
    );
    let app = spawn_in(dir).await;
    let email = "voll@kunde.example";
    let sent = mailed(&app, &sink, email).await;
    let full = report_for(DSN, &sent, email)
        .replace("Status: 5.1.1", "Status: 5.2.2")
        .replace("550 5.1.1", "552 5.2.2 mailbox full");
    let (_, body) = post_message(&app, full.clone()).await;
    assert_eq!(body["reports"][0]["kind"], "soft", "{body}");
    assert_eq!(body["reports"][0]["action"], "counted", "{body}");
    // The same report again counts nothing; another one reaches the limit.
    let (_, body) = post_message(&app, full.clone()).await;
    assert_eq!(body["reports"][0]["action"], "duplicate", "{body}");
    let second = full.replace("<20261207090002.3F1A2C0123@", "<20261208090002.4A2B3C0456@");
    let (_, body) = post_message(&app, second).await;
    assert_eq!(body["reports"][0]["action"], "suppressed", "{body}");
    next_mail_is_suppressed(&app, &sink, email).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_and_sendgrid_webhooks_need_their_signatures() {
    use hmac::{Hmac, KeyInit, Mac};
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // The verification key as SendGrid shows it: base64 of the DER public key.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(key.public_key().as_ref());
    let public = base64::engine::general_purpose::STANDARD.encode(spki);
    let signing_key = "mailgun-signing-key-0123456789";
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    append(
        dir.path(),
        &format!(
            "\n[bounces.mailgun]\nsigning_key = \"{signing_key}\"\n\n[bounces.sendgrid]\npublic_key = \"{public}\"\n"
        ),
    );
    let app = spawn_in(dir).await;
    let (mg, sg) = ("mg@kunde.example", "sg@kunde.example");
    let sent = mailed(&app, &sink, mg).await;
    mailed(&app, &sink, sg).await;

    // Mailgun: a permanent failure, signed with the key.
    let now = chrono::Utc::now().timestamp().to_string();
    let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(signing_key.as_bytes()).unwrap();
    mac.update(format!("{now}{token}").as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let event = json!({"id": "G9Bn5sl1TC6b8nxE0ulTig", "event": "failed", "severity": "permanent",
        "reason": "bounce", "recipient": mg, "timestamp": 1765098000.0,
        "delivery-status": {"code": 550, "message": "5.1.1 The email account that you tried to reach does not exist",
            "description": ""},
        "envelope": {"sender": sent.from, "targets": mg},
        "message": {"headers": {"message-id": sent.header("Message-ID").unwrap().trim_matches(['<', '>'])}}});
    let url = format!("{}/hooks/mailgun", app.base);
    let forged = json!({"signature": {"timestamp": now, "token": token, "signature": "00".repeat(32)},
        "event-data": event});
    let r = app.client.post(&url).json(&forged).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let signed = json!({"signature": {"timestamp": now, "token": token, "signature": signature},
        "event-data": event});
    let r = app.client.post(&url).json(&signed).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reports"][0]["action"], "suppressed", "{body}");
    assert!(body["reports"][0]["outbox_id"].is_i64(), "{body}");

    // SendGrid: a spam report, signed over the timestamp and the body.
    let events = json!([{"email": sg, "timestamp": 1765098000, "event": "spamreport",
        "sg_event_id": "c3BhbXJlcG9ydC0x", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}])
    .to_string();
    let mut payload = now.as_bytes().to_vec();
    payload.extend_from_slice(events.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&rng, &payload).unwrap());
    let url = format!("{}/hooks/sendgrid", app.base);
    let post = |signature: String| {
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .header("X-Twilio-Email-Event-Webhook-Signature", signature)
            .header("X-Twilio-Email-Event-Webhook-Timestamp", now.clone())
            .body(events.clone())
            .send()
    };
    let other = base64::engine::general_purpose::STANDARD.encode(key.sign(&rng, b"other").unwrap());
    assert_eq!(post(other).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(app.lead(sg).await["consent_email"]["granted"], true);
    let r = post(sig).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lead = app.lead(sg).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert_eq!(lead["consent_email"]["source"], "complaint:sendgrid");

    // A provider that is not configured is not there.
    let r = app
        .client
        .post(format!("{}/hooks/postmark", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounced_mail_to_a_colleague_touches_neither_the_colleague_nor_the_lead() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let lead = "journey@kunde.example";
    let owner = "anna.berger@example.com";
    let (status, body) = app.post_journey(lead).await;
    assert!(status.is_success(), "{body}");
    let notification = eventually("the handoff mail", 10, || {
        mails_to(&sink, owner).into_iter().next()
    })
    .await;
    assert!(
        notification.from.starts_with("bounce+b"),
        "{}",
        notification.from
    );
    let consent = app.lead(lead).await["consent_email"].clone();
    for fixture in [DSN, ARF] {
        let (status, body) = post_message(&app, report_for(fixture, &notification, owner)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["reports"][0]["action"], "none", "{body}");
        assert!(body["reports"][0]["lead_id"].is_null(), "{body}");
    }
    assert_eq!(app.lead(lead).await["consent_email"], consent);
    let stats = app.stats().await;
    assert_eq!(stats["addresses_suppressed"], 0, "{stats}");
    app.stop().await;
}

/// A report mailed to the bounce address is believed only for a mail of ours. Without a
/// VERP token, its Message-ID must be the real one: written from what a recipient sees
/// of another mail (the outbox id and creation time, without the keyed tag) it matches
/// nothing and suppresses nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_with_a_guessed_message_id_matches_no_mail() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "ziel@kunde.example";
    let sent = mailed(&app, &sink, email).await;
    let real = sent.header("Message-ID").expect("Message-ID");
    // <mail-ID.CREATED.TAG@domain>: drop the tag.
    let (local, domain) = real.trim_matches(['<', '>']).split_once('@').unwrap();
    let untagged = local.rsplit_once('.').unwrap().0;
    assert!(
        untagged.starts_with("mail-") && untagged.matches('.').count() == 1,
        "{real}"
    );
    let guessed = format!("<{untagged}@{domain}>");
    let forged = |message_id: &str| {
        DSN.replace("{{VERP}}", "bounce@example.com")
            .replace("{{RCPT}}", email)
            .replace("{{MESSAGE_ID}}", message_id)
    };

    let (status, body) = post_message(&app, forged(&guessed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reports"][0]["email"], Value::Null, "{body}");
    assert!(bounce_log(app.dir.path(), email).await.is_empty());

    // The real Message-ID is believed.
    let (status, body) = post_message(&app, forged(&real)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reports"][0]["email"], email, "{body}");
    assert_eq!(body["reports"][0]["kind"], "hard", "{body}");
    assert_eq!(bounce_log(app.dir.path(), email).await.len(), 1);
}
