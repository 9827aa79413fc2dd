//! Templates are rendered with the `data` the rules pass to them: `templates check`
//! passes when a rule passes what a template reads and names the rule call when none
//! does; a reload with an unknown variable shows in `template_errors` and the log, and
//! the mail keeps going out with the last good version.

use std::time::Duration;

use nurtured::smtp_sink::SmtpSink;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, cli_in, eventually, free_port, mail_dir, prepare_dir, text};
use crate::lease::{run_daemon, wait_for};
use crate::mail::mails_to;

const WEBINAR_RULE: &str = r#"// Thanks for attending, naming the webinar.
fn on_event(lead, event) {
    if event.type == "track" && event.name == "Webinar Attended" {
        lead.send_mail("trigger/webinar-thanks", #{ data: DATA });
    }
}
"#;

fn write_webinar_mail(dir: &std::path::Path) {
    let t = dir.join("templates/de/trigger");
    std::fs::write(
        t.join("webinar-thanks.subject"),
        "Danke für Ihre Teilnahme\n",
    )
    .unwrap();
    std::fs::write(
        t.join("webinar-thanks.txt"),
        "Guten Tag,\n\ndanke für Ihre Teilnahme am Webinar {{ data.webinar }}.\n",
    )
    .unwrap();
    std::fs::write(
        t.join("webinar-thanks.html"),
        "<p>Danke für Ihre Teilnahme am Webinar {{ data.webinar }}.</p>\n",
    )
    .unwrap();
}

#[test]
fn templates_check_uses_the_data_keys_the_rules_pass() {
    let dir = prepare_dir();
    write_webinar_mail(dir.path());
    let rule = dir.path().join("rules/55-webinar.rhai");
    std::fs::write(
        &rule,
        WEBINAR_RULE.replace("DATA", "#{ webinar: event.properties.webinar }"),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["templates", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ok: 19 mails"), "{}", text(&out));

    // The rule passes `topic`, not `webinar`: the template's line and the call show.
    std::fs::write(
        &rule,
        WEBINAR_RULE.replace("DATA", "#{ topic: event.properties.webinar }"),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["templates", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("templates/de/trigger/webinar-thanks.txt:3:"),
        "file:line:column of the template: {shown}"
    );
    assert!(shown.contains("`webinar` is not defined"), "{shown}");
    assert!(
        shown.contains("rules/55-webinar.rhai:4:14 does not pass it"),
        "the rule call that lacks it: {shown}"
    );
    assert!(shown.contains("passes topic"), "{shown}");
}

/// GET with the test token on the daemon at `base`.
async fn get(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `/v1/stats` once its `template_errors` (as JSON text) pass `done`, or after 10 s.
async fn errors_until(base: &str, done: impl Fn(&str) -> bool) -> Value {
    let mut stats = get(base, "/v1/stats").await;
    for _ in 0..100 {
        if done(&stats["template_errors"].to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = get(base, "/v1/stats").await;
    }
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_an_unknown_variable_keeps_the_last_good_version() {
    nurtured::install_crypto();
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, "");
    let port = free_port();
    let config = dir.path().join("nurtured.toml");
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, toml).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let (_daemon, logs) = run_daemon(dir.path());
    wait_for(&logs, "nurtured is running").expect("daemon starts");
    let stats = get(&base, "/v1/stats").await;
    assert_eq!(stats["template_errors"], json!([]), "{stats}");

    // The pricing follow-up now reads `data.webinar`, which its rule does not pass.
    let subject = dir
        .path()
        .join("templates/de/trigger/pricing-follow-up.subject");
    let good = std::fs::read_to_string(&subject).unwrap();
    std::fs::write(&subject, "Zum Webinar {{ data.webinar }}\n").unwrap();
    let seen = wait_for(&logs, "last good version").expect("the reload warns");
    let warning = seen.last().unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("templates/de/trigger/pricing-follow-up.subject:1:"),
        "{warning}"
    );
    let stats = get(&base, "/v1/stats").await;
    let errors = stats["template_errors"].to_string();
    assert!(
        errors.contains("templates/de/trigger/pricing-follow-up.subject:1:"),
        "{errors}"
    );
    assert!(errors.contains("rules/50-mail.rhai:39:14"), "{errors}");
    // `nurtured stats` shows it too.
    let out = cli_in(dir.path(), &["stats"]);
    assert!(
        text(&out).contains("pricing-follow-up.subject:1:"),
        "{}",
        text(&out)
    );

    // A lead looks at the prices: the mail goes out with the last good subject.
    let email = "preise@kunde.example";
    let events = [
        json!({"type": "identify", "userId": email, "messageId": "t-1", "traits": {
            "email": email, "firstName": "Anna", "consent_email": true, "consent_source": "form"}}),
        json!({"type": "page", "userId": email, "messageId": "t-2", "name": "Preise",
               "properties": {"url": "https://www.example.com/preise"}}),
    ];
    std::fs::write(
        dir.path().join("events.jsonl"),
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let mail = eventually("the mail", 10, || mails_to(&sink, email).pop()).await;
    assert_eq!(mail.header("Subject").as_deref(), Some(good.trim()));

    // Fixed: the error goes, and the new version is used.
    std::fs::write(&subject, "Ihre Preisfrage, {{ lead.first_name }}\n").unwrap();
    let stats = errors_until(&base, |e| e == "[]").await;
    assert_eq!(stats["template_errors"], json!([]), "{stats}");
    let email = "preise-neu@kunde.example";
    std::fs::write(
        dir.path().join("events.jsonl"),
        events
            .iter()
            .map(|e| {
                let line = e.to_string().replace("preise@", "preise-neu@");
                format!("{}\n", line.replace("\"t-", "\"t2-"))
            })
            .collect::<String>(),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let mail = eventually("the mail", 10, || mails_to(&sink, email).pop()).await;
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Ihre Preisfrage, Anna")
    );

    // A rule change that stops passing what a template reads shows as well.
    let rule = dir.path().join("rules/50-mail.rhai");
    let source = std::fs::read_to_string(&rule).unwrap();
    assert!(source.contains("data: #{ topic: topic }"));
    std::fs::write(
        &rule,
        source.replace("data: #{ topic: topic }", "data: #{ thema: topic }"),
    )
    .unwrap();
    let stats = errors_until(&base, |e| e.contains("use-case.txt:")).await;
    let errors = stats["template_errors"].to_string();
    assert!(
        errors.contains("templates/de/trigger/use-case.txt:"),
        "{errors}"
    );
    assert!(errors.contains("rules/50-mail.rhai:31:14"), "{errors}");
}
