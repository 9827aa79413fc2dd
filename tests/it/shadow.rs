//! Shadow rules and rule errors that do not stop the funnel: a file in `[rules]
//! shadow` records what it would do and changes no lead; a live file that fails for an
//! event drops only its own changes, and `events retry` runs just that file again.

use serde_json::{Value, json};

use crate::helpers::{TestApp, cli_in, prepare_dir, spawn_app, spawn_in, text, write_rule};

/// A shadow candidate: tags, points, a stage move and an attribute at the webinar, and
/// an error (a tag from a property the event does not have) at the pricing page.
const FAN: &str = "fn on_event(lead, event) {\n    if event.name == \"Webinar Attended\" {\n        lead.tag(\"webinar-fan\");\n        lead.add_interest(50, \"webinar fan\");\n        lead.set_stage(\"mql\", \"webinar fan\");\n        lead.set_attr(\"fan\", true);\n    }\n    if event.type == \"page\" {\n        lead.tag(event.properties.nothing);\n    }\n}\n";

fn with_shadow(dir: &std::path::Path, list: &str) {
    let config = dir.join("nurtured.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    if let Some(i) = toml.find("\n[rules]") {
        toml.truncate(i);
    }
    toml.push_str(&format!("\n[rules]\nshadow = [{list}]\n"));
    std::fs::write(&config, toml).unwrap();
}

/// What a lead's state and the outbox look like, for comparing two runs.
async fn state_of(app: &TestApp, email: &str) -> Value {
    let lead = app.lead(email).await;
    let mails = app.cli(&["mail", "list", "--json", "--lead", email]);
    let mails: Value = serde_json::from_slice(&mails.stdout).unwrap_or(Value::Null);
    let mails: Vec<Value> = mails
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| json!([m["template"], m["status"]]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "stage": lead["stage"],
        "fit": lead["fit"],
        "interest": lead["interest"],
        "tags": lead["tags"],
        "attributes": lead["attributes"],
        "mails": mails,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_file_is_listed_and_changes_no_lead() {
    let dir = prepare_dir();
    with_shadow(dir.path(), "\"55-webinar-fan.rhai\", \"57-broken.rhai\"");
    std::fs::write(dir.path().join("rules/55-webinar-fan.rhai"), FAN).unwrap();
    // A shadow file that does not compile does not stop the daemon; it is reported.
    std::fs::write(
        dir.path().join("rules/57-broken.rhai"),
        "fn on_event(lead, event) {\n    lead.tag(\"x\"\n}\n",
    )
    .unwrap();
    let shadowed = spawn_in(dir).await;
    let plain = spawn_app().await;
    for app in [&shadowed, &plain] {
        let (status, body) = app.post_journey("anna@example.com").await;
        assert!(status.is_success(), "{body}");
        app.settle().await;
    }
    // The lead and its mails are exactly as without the shadow file.
    let with = state_of(&shadowed, "anna@example.com").await;
    let without = state_of(&plain, "anna@example.com").await;
    assert_eq!(with, without);
    assert!(!with["tags"].to_string().contains("webinar-fan"), "{with}");

    // Its error failed no event; /v1/stats over HTTP counts what it would have done.
    let stats = shadowed.stats().await;
    assert_eq!(stats["events_failed"], 0, "{stats}");
    let errors = &stats["rules"]["errors"];
    assert_eq!(errors.as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(errors[0]["file"], "rules/57-broken.rhai", "{stats}");
    assert_eq!(errors[0]["line"], 3, "{stats}");
    let file = &stats["shadow"]["files"][0];
    assert_eq!(file["file"], "rules/55-webinar-fan.rhai", "{stats}");
    assert!(file["actions"].as_i64().unwrap() >= 3, "{stats}");
    assert_eq!(file["errors"], 1, "{stats}");
    let error = &stats["shadow"]["errors"][0];
    assert_eq!(error["source"], "rules/55-webinar-fan.rhai:9", "{stats}");
    assert_eq!(error["email"], "anna@example.com", "{stats}");
    assert_eq!(
        stats["rules"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["shadow"] == true)
            .count(),
        1,
        "{stats}"
    );

    // `nurtured rules shadow`: counts per file:line and action, examples with the lead.
    let out = shadowed.cli(&["rules", "shadow", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = report["files"][0]["counts"].as_array().unwrap();
    let count = |source: &str, action: &str| {
        counts
            .iter()
            .find(|c| c["source"] == source && c["action"] == action)
            .map(|c| c["count"].as_i64().unwrap())
    };
    assert_eq!(
        count("rules/55-webinar-fan.rhai:3", "tag webinar-fan"),
        Some(1),
        "{report}"
    );
    assert_eq!(
        count("rules/55-webinar-fan.rhai:4", "add_interest 50"),
        Some(1),
        "{report}"
    );
    assert_eq!(
        count("rules/55-webinar-fan.rhai:9", "error"),
        Some(1),
        "{report}"
    );
    let out = shadowed.cli(&["rules", "shadow", "55-webinar-fan.rhai"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("anna@example.com"), "{shown}");
    assert!(
        shown.contains("rules/55-webinar-fan.rhai:3: tag webinar-fan"),
        "{shown}"
    );
    assert!(
        shown.contains("rules/55-webinar-fan.rhai:9: error:"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_list_follows_the_config_file_and_promotion_applies_the_file() {
    let app = spawn_app().await;
    // Into shadow while the daemon runs: the file named is not there yet.
    with_shadow(app.dir.path(), "\"55-webinar-fan.rhai\"");
    app.wait_for("the shadow list", |s| {
        s["rules"]["errors"].to_string().contains("[rules] shadow")
    })
    .await;
    write_rule(&app, "55-webinar-fan.rhai", FAN).await;
    app.wait_for("the file in shadow", |s| {
        s["rules"]["files"].to_string().contains("\"shadow\":true")
            && s["rules"]["errors"].as_array().unwrap().is_empty()
    })
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "early@example.com", "event": "Webinar Attended"}),
    )
    .await;
    let stats = app
        .wait_for("the shadow record", |s| {
            s["shadow"]["files"][0]["actions"] == 4
        })
        .await;
    assert_eq!(stats["events_failed"], 0, "{stats}");
    let early = app.lead("early@example.com").await;
    assert!(
        !early["tags"].to_string().contains("webinar-fan"),
        "{early:#}"
    );
    assert_ne!(early["stage"], "mql", "{early:#}");

    // Promoted: out of the list, the file is live from the next event on.
    with_shadow(app.dir.path(), "");
    app.wait_for("the promotion", |s| {
        !s["rules"]["files"].to_string().contains("\"shadow\":true")
    })
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "late@example.com", "event": "Webinar Attended"}),
    )
    .await;
    app.settle().await;
    let late = app.lead("late@example.com").await;
    assert!(late["tags"].to_string().contains("webinar-fan"), "{late:#}");
    assert_eq!(late["stage"], "mql", "{late:#}");
    // Nothing more was recorded in shadow.
    assert_eq!(app.stats().await["shadow"]["files"][0]["actions"], 4);
}

/// A live file with a mistake in one branch that only shows at run time: it treats a
/// flag (`true`) as text.
const TYPO: &str = "fn on_event(lead, event) {\n    if event.name == \"Email Clicked\" {\n        if event.properties.vip == true {\n            lead.tag(event.properties.vip.to_upper());\n        }\n        lead.tag(\"clicked\");\n    }\n}\n";
const FIXED: &str = "fn on_event(lead, event) {\n    if event.name == \"Email Clicked\" {\n        if event.properties.vip == true {\n            lead.tag(\"vip\");\n        }\n        lead.tag(\"clicked\");\n    }\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_live_file_drops_only_its_own_changes_and_retry_runs_just_it() {
    let app = spawn_app().await;
    write_rule(&app, "55-vip.rhai", TYPO).await;
    app.post(
        "/v1/track",
        &json!({"userId": "vip@example.com", "event": "Email Clicked", "properties": {"vip": true}}),
    )
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "plain@example.com", "event": "Email Clicked"}),
    )
    .await;
    let stats = app
        .wait_for("the event to fail", |s| {
            s["events_failed"] == 1 && s["events_pending"] == 0
        })
        .await;
    assert_eq!(stats["events_processed"], 1, "{stats}");
    // The shipped rules' scoring applied; the failing file's tag did not.
    let lead = app.lead("vip@example.com").await;
    assert_eq!(lead["interest"], 3.0, "{lead:#}");
    assert_eq!(lead["tags"], json!([]), "{lead:#}");
    let activity = &lead["recent_activity"][0];
    assert_eq!(activity["status"], "failed", "{activity}");
    assert_eq!(activity["error"]["file"], "rules/55-vip.rhai", "{activity}");
    assert_eq!(activity["error"]["line"], 4, "{activity}");
    // The other lead went through every file.
    let plain = app.lead("plain@example.com").await;
    assert_eq!(plain["tags"], json!(["clicked"]), "{plain:#}");

    let out = app.cli(&["events", "failed"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("vip@example.com"), "{shown}");
    assert!(shown.contains("rules/55-vip.rhai:4:"), "{shown}");
    assert!(
        shown.contains("the other rule files' changes were applied"),
        "{shown}"
    );
    assert!(
        shown.contains("`nurtured events retry` runs only that file"),
        "{shown}"
    );
    let out = app.cli(&["events", "failed", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed[0]["rules"][0]["file"], "rules/55-vip.rhai",
        "{listed}"
    );
    assert_eq!(listed[0]["rules"][0]["line"], 4, "{listed}");

    // Fixed and retried: only that file runs again (the interest is not counted twice).
    write_rule(&app, "55-vip.rhai", FIXED).await;
    let out = app.cli(&["events", "retry"]);
    assert!(out.status.success(), "{}", text(&out));
    app.wait_for("the retried event", |s| {
        s["events_failed"] == 0 && s["events_pending"] == 0
    })
    .await;
    let lead = app.lead("vip@example.com").await;
    assert_eq!(lead["interest"], 3.0, "{lead:#}");
    assert_eq!(lead["tags"], json!(["clicked", "vip"]), "{lead:#}");
    assert_eq!(lead["recent_activity"][0]["status"], "processed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_batch_keeps_shadow_records_and_fails_only_the_broken_file() {
    let dir = prepare_dir();
    with_shadow(dir.path(), "\"55-webinar-fan.rhai\"");
    std::fs::write(dir.path().join("rules/55-webinar-fan.rhai"), FAN).unwrap();
    std::fs::write(dir.path().join("rules/56-vip.rhai"), TYPO).unwrap();
    let events = [
        json!({"type": "track", "userId": "cli@example.com", "event": "Webinar Attended", "messageId": "c-1"}),
        json!({"type": "track", "userId": "cli@example.com", "event": "Email Clicked", "messageId": "c-2", "properties": {"vip": true}}),
    ];
    let file = dir.path().join("events.jsonl");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = cli_in(dir.path(), &["ingest", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 failed in total"), "{}", text(&out));

    let out = cli_in(dir.path(), &["rules", "shadow", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"][0]["actions"], 4, "{report}");
    let out = cli_in(dir.path(), &["lead", "show", "cli@example.com", "--json"]);
    let lead: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!lead["tags"].to_string().contains("webinar-fan"), "{lead}");
    let out = cli_in(dir.path(), &["events", "failed"]);
    assert!(
        text(&out).contains("rules/56-vip.rhai:4:"),
        "{}",
        text(&out)
    );

    std::fs::write(dir.path().join("rules/56-vip.rhai"), FIXED).unwrap();
    let out = cli_in(dir.path(), &["events", "retry"]);
    assert!(text(&out).contains("0 failed in total"), "{}", text(&out));
    let out = cli_in(dir.path(), &["lead", "show", "cli@example.com", "--json"]);
    let lead: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tags = lead["tags"].to_string();
    assert!(tags.contains("vip") && tags.contains("clicked"), "{lead}");
    // The shadow file did not run again for the retried event.
    let out = cli_in(dir.path(), &["rules", "shadow", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"][0]["actions"], 4, "{report}");
}
