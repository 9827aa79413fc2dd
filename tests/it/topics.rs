//! Topic preferences over real HTTP, SQLite (or PostgreSQL) and SMTP: the preference
//! page `/p/`, one-click unsubscribe by topic, "leave all", escaping, and links that
//! keep working after `mail.secret` is rotated.

use base64::Engine as _;
use nurtured::mail::{Purpose, Signer};
use nurtured::smtp_sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{SECRET, TestApp, eventually, mail_dir, spawn_in};
use crate::mail::{body, consenting, link_token, mails_to, pricing_view};
use crate::streams::{Clocked, berlin, clocked, mails, pass_at};

/// Two topics, a stream of each, no frequency cap.
const TWO_TOPICS: &str = r#"
[mail.frequency_cap]
max = 0

[[topics]]
id = "insights"
name = "Fachartikel"
names = { en = "Articles" }
default = true

[[topics]]
id = "events"
name = "Veranstaltungen"
description = "Webinare und Messen"
names = { en = "Events" }

[[streams]]
name = "welcome"
stages = ["subscriber", "lead"]
steps = [
  { after = "1d", template = "stream/lead-welcome" },
  { after = "1d", template = "stream/lead-guide" },
]

[[streams]]
name = "webinars"
stages = ["subscriber", "lead"]
topic = "events"
steps = [
  { after = "1d", template = "stream/lead-webinar" },
  { after = "1d", template = "stream/lead-checklist" },
]
"#;

/// The templates of the mails sent to `email`, oldest first.
async fn sent_templates(app: &TestApp, email: &str) -> Vec<String> {
    mails(app, email)
        .await
        .iter()
        .filter(|m| m["status"] == "sent")
        .map(|m| m["template"].as_str().unwrap().to_string())
        .collect()
}

async fn post_form(app: &TestApp, url: &str, form: &str) -> (StatusCode, String) {
    let r = app
        .client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn get_page(app: &TestApp, url: &str) -> (StatusCode, String) {
    let r = app.client.get(url).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Waits until a mail of `template` to `email` is suppressed for `reason`.
async fn suppressed(app: &TestApp, email: &str, template: &str, reason: &str) {
    let start = std::time::Instant::now();
    loop {
        let list = mails(app, email).await;
        if list.iter().any(|m| {
            m["template"] == template && m["status"] == "suppressed" && m["reason"] == reason
        }) {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{template} not suppressed for {reason}: {list:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_leaves_one_topic_on_the_preference_page_and_keeps_the_other_topics_stream() {
    let sink = SmtpSink::start().unwrap();
    let Clocked { app, clock, mailer } = clocked(&sink, TWO_TOPICS).await;
    let email = "topics@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.settle().await;

    // A day in: the first step of each stream.
    pass_at(&clock, &mailer, berlin(3, 3, 10, 0, 0)).await;
    let first = eventually("two mails", 5, || {
        let m = mails_to(&sink, email);
        (m.len() == 2).then_some(m)
    })
    .await;
    let text = body(&first[0]);
    assert!(text.contains("https://mail.example.com/p/"), "{text}");
    let token = link_token(&text, "https://mail.example.com/p/");
    let page_url = format!("{}/p/{token}", app.base);

    // GET shows both topics ticked and changes nothing.
    let r = app.client.get(&page_url).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let (status, page) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("lang=\"de\""), "{page}");
    assert!(page.contains("t***@kunde.example"), "masked: {page}");
    assert!(!page.contains(email), "{page}");
    for id in ["insights", "events"] {
        assert!(
            page.contains(&format!("value=\"{id}\" checked")),
            "{id}: {page}"
        );
    }
    assert!(page.contains("Veranstaltungen") && page.contains("Webinare und Messen"));
    assert!(page.contains("value=\"leave_all\""), "{page}");
    assert_eq!(app.lead(email).await["topics_left"], json!([]));

    // POST keeps only `events`.
    let (status, page) = post_form(&app, &page_url, "keep=events&action=save").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("value=\"insights\">"),
        "no longer ticked: {page}"
    );
    assert!(page.contains("value=\"events\" checked"), "{page}");
    let lead = app.lead(email).await;
    assert_eq!(lead["topics_left"], json!(["insights"]), "{lead}");
    assert_eq!(lead["consent_email"]["granted"], true, "{lead}");
    assert_eq!(lead["topics"][0]["topic"], "insights", "{lead}");
    assert_eq!(lead["topics"][0]["state"], "left", "{lead}");
    assert!(
        lead["topics"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("preference page (mail "),
        "{lead}"
    );
    let streams: Vec<(Value, Value)> = lead["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stream"].clone(), s["status"].clone()))
        .collect();
    assert!(
        streams.contains(&(json!("webinars"), json!("active"))),
        "{streams:?}"
    );
    assert!(
        !streams.contains(&(json!("welcome"), json!("active"))),
        "{streams:?}"
    );

    // The next day: only the kept topic's stream goes on.
    pass_at(&clock, &mailer, berlin(3, 4, 10, 0, 0)).await;
    eventually("the third mail", 5, || {
        (mails_to(&sink, email).len() == 3).then_some(())
    })
    .await;
    pass_at(&clock, &mailer, berlin(3, 6, 10, 0, 0)).await;
    let mut sent = sent_templates(&app, email).await;
    sent.sort();
    assert_eq!(
        sent,
        [
            "stream/lead-checklist",
            "stream/lead-webinar",
            "stream/lead-welcome"
        ],
        "no more mails of the left topic"
    );

    // A trigger mail of the left topic (the default topic) is suppressed at send time.
    app.post("/v1/page", &pricing_view(email)).await;
    app.settle().await;
    pass_at(&clock, &mailer, berlin(3, 6, 10, 5, 0)).await;
    suppressed(&app, email, "trigger/pricing-follow-up", "topic_left").await;
    assert_eq!(mails_to(&sink, email).len(), 3);

    // "Leave all" withdraws the marketing consent.
    let (status, page) = post_form(&app, &page_url, "keep=events&action=leave_all").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert!(
        lead["consent_email"]["source"]
            .as_str()
            .unwrap()
            .starts_with("preference page"),
        "{lead}"
    );
    let (_, page) = get_page(&app, &page_url).await;
    assert!(page.contains("derzeit keine Marketing-E-Mails"), "{page}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preference_page_escapes_names_and_speaks_the_leads_language() {
    let sink = SmtpSink::start().unwrap();
    let hostile = r#"
[[topics]]
id = "insights"
name = "<script>alert('de')</script>"
description = "\"><img src=x onerror=alert(1)>"
names = { en = "<b>bold</b> & <i>more</i>" }

[[topics]]
id = "product"
name = "Produkt"
"#;
    let app = spawn_in(mail_dir(sink.port, hostile)).await;
    let email = "en@kunde.example";
    let mut identify = consenting(email, false);
    identify["traits"]["locale"] = json!("en-GB");
    app.post("/v1/identify", &identify).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let mail = eventually("the trigger mail", 5, || mails_to(&sink, email).pop()).await;
    let text = body(&mail);
    let token = link_token(&text, "https://mail.example.com/p/");
    let (status, page) = get_page(&app, &format!("{}/p/{token}", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("lang=\"en\""), "{page}");
    assert!(page.contains("E-mail preferences"), "{page}");
    assert!(page.contains("&lt;b&gt;bold&lt;"), "{page}");
    assert!(page.contains("&amp; &lt;i&gt;more"), "{page}");
    assert!(!page.contains("<b>") && !page.contains("<img"), "{page}");
    assert!(!page.contains("<script"), "{page}");

    // A German lead sees the German name, escaped as well.
    let de = "de@kunde.example";
    app.post("/v1/identify", &consenting(de, false)).await;
    app.post("/v1/page", &pricing_view(de)).await;
    let mail = eventually("the trigger mail", 5, || mails_to(&sink, de).pop()).await;
    let token = link_token(&body(&mail), "https://mail.example.com/p/");
    let (_, page) = get_page(&app, &format!("{}/p/{token}", app.base)).await;
    assert!(page.contains("lang=\"de\""), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{page}"
    );

    // A token that does not verify: 400, nothing shown.
    let (status, _) = get_page(&app, &format!("{}/p/{token}x", app.base)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

/// The payload parts of a token, decoded.
fn decoded(token: &str) -> String {
    token
        .split('.')
        .filter_map(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_signed_with_the_previous_secret_still_works_after_a_rotation() {
    let sink = SmtpSink::start().unwrap();
    let app = spawn_in(mail_dir(sink.port, "")).await;
    let email = "rotate@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let mail = eventually("the trigger mail", 5, || mails_to(&sink, email).pop()).await;
    let list = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let old = link_token(&list, "https://mail.example.com/u/");
    let old_preferences = link_token(&body(&mail), "https://mail.example.com/p/");
    // The token names neither the address nor its parts.
    assert!(!decoded(&old).contains("rotate"), "{}", decoded(&old));
    assert!(!old.contains("rotate"));

    // The secret is rotated: the old one moves to previous_secrets.
    let dir = app.stop().await;
    let path = dir.path().join("nurtured.toml");
    let new_secret = "a-new-secret-for-links-0123456789-abcdef";
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{new_secret}\"\nprevious_secrets = [\"{SECRET}\"]"),
    );
    std::fs::write(&path, text).unwrap();
    let app = spawn_in(dir).await;

    // The old unsubscribe page offers the topic and "leave all"; one-click leaves the
    // mail's topic only.
    let url = format!("{}/u/{old}", app.base);
    let (status, page) = get_page(&app, &url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Fachartikel und Leitfäden"), "{page}");
    assert!(page.contains("value=\"leave_all\""), "{page}");
    let (status, page) = post_form(&app, &url, "List-Unsubscribe=One-Click").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let lead = app.lead(email).await;
    assert_eq!(lead["topics_left"], json!(["insights"]), "{lead}");
    assert_eq!(lead["consent_email"]["granted"], true, "{lead}");

    // The old preference link opens too.
    let (status, page) = get_page(&app, &format!("{}/p/{old_preferences}", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("value=\"product\" checked"), "{page}");

    // "Leave all" on the unsubscribe page withdraws the consent.
    let (status, page) = post_form(&app, &url, "action=leave_all").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let lead = app.lead(email).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");

    // New links are signed with the new secret.
    let other = "rotate2@kunde.example";
    app.post("/v1/identify", &consenting(other, false)).await;
    app.post("/v1/page", &pricing_view(other)).await;
    let mail = eventually("the second trigger mail", 5, || {
        mails_to(&sink, other).pop()
    })
    .await;
    let list = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let new = link_token(&list, "https://mail.example.com/u/");
    let claim = Signer::new(new_secret)
        .verify(&new, Purpose::Unsubscribe)
        .expect("signed with the new secret");
    assert_eq!(claim.topic.as_deref(), Some("insights"));
    assert!(
        Signer::new(SECRET)
            .verify(&new, Purpose::Unsubscribe)
            .is_err()
    );

    // A link of the earlier format (the address in the payload, signed with the old
    // secret, no topic) still works, and withdraws the consent as it always did.
    use hmac::{Hmac, KeyInit, Mac};
    let id = app.lead(other).await["id"].as_i64().unwrap();
    let payload = format!(r#"{{"p":"unsubscribe","l":{id},"e":"{other}","m":1}}"#);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let legacy = format!(
        "{}.{}",
        b64.encode(payload),
        b64.encode(mac.finalize().into_bytes())
    );
    let (status, page) = post_form(
        &app,
        &format!("{}/u/{legacy}", app.base),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let lead = app.lead(other).await;
    assert_eq!(lead["consent_email"]["granted"], false, "{lead}");
    assert_eq!(lead["topics_left"], json!([]), "{lead}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_read_whether_the_lead_gets_a_topic() {
    let app = crate::helpers::spawn_app().await;
    crate::helpers::write_rule(
        &app,
        "70-topics.rhai",
        "fn on_event(lead, event) {\n\
         \x20   if event.name == \"Topic Check\" {\n\
         \x20       if lead.subscribed(\"insights\") { lead.tag(\"gets-insights\"); }\n\
         \x20       else { lead.tag(\"left-insights\"); }\n\
         \x20   }\n\
         \x20   if event.name == \"Bad Topic\" { lead.subscribed(\"nope\"); }\n\
         }\n",
    )
    .await;
    // `rules check` names the unknown topic with its position.
    let out = app.cli(&["rules", "check"]);
    assert!(!out.status.success());
    let shown = crate::helpers::text(&out);
    assert!(
        shown.contains(
            "70-topics.rhai:6:41: unknown topic `nope`; the topics are: insights, product"
        ),
        "{shown}"
    );
    let email = "rules@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    let check = json!({"userId": email, "event": "Topic Check"});
    app.post("/v1/track", &check).await;
    app.settle().await;
    let lead = app.lead(email).await;
    assert!(
        lead["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("gets-insights")),
        "{lead}"
    );

    // The lead leaves the topic through a preference link (signed like the daemon does).
    let signer = Signer::new(nurtured::config::raw::DEV_SECRET);
    let token = signer.sign(&nurtured::mail::token::Claim {
        purpose: Purpose::Preferences,
        lead: lead["id"].as_i64().unwrap(),
        to: signer.address(email),
        mail: None,
        url: None,
        expires: None,
        round: None,
        topic: None,
        key: 0,
    });
    let (status, page) = post_form(&app, &format!("{}/p/{token}", app.base), "keep=product").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    app.post("/v1/track", &check).await;
    app.settle().await;
    let lead = app.lead(email).await;
    assert!(
        lead["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("left-insights")),
        "{lead}"
    );

    // An unknown topic fails the event with the topics there are.
    app.post("/v1/track", &json!({"userId": email, "event": "Bad Topic"}))
        .await;
    app.wait_for("the event to fail", |s| s["events_failed"] == 1)
        .await;
    let lead = app.lead(email).await;
    let error = &lead["recent_activity"][0]["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown topic `nope`; the topics are: insights, product"),
        "{error}"
    );
    app.stop().await;
}
