//! Rules: checking, hot reload, the sandbox, failed events and retry.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{cli_in, prepare_dir, spawn_app, text, write_rule};

#[test]
fn rules_check_reports_file_line_and_column() {
    let dir = prepare_dir();
    let out = cli_in(dir.path(), &["rules", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok: 6 rule file(s) compiled"),
        "{}",
        text(&out)
    );

    std::fs::write(
        dir.path().join("rules/50-broken.rhai"),
        "// a broken rule\nfn on_event(lead, event) {\n    if event.name == \"X\" {\n        lead.tag(\"x\"\n    }\n}\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    let line = shown
        .lines()
        .find(|l| l.starts_with("rules/50-broken.rhai:"))
        .unwrap_or_else(|| panic!("{shown}"));
    // FILE:LINE:COLUMN: message
    let parts: Vec<&str> = line.splitn(4, ':').collect();
    assert_eq!(parts[1], "5", "{line}");
    assert!(parts[2].parse::<usize>().is_ok(), "{line}");
    assert!(parts[3].len() > 5, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_takes_changes_and_keeps_the_old_version_when_broken() {
    let app = spawn_app().await;
    let original = std::fs::read_to_string(app.rules_dir().join("20-interest.rhai")).unwrap();
    assert!(original.contains("lead.add_interest(3, \"clicked a link in a mail\")"));
    let changed = original.replace(
        "lead.add_interest(3, \"clicked a link in a mail\")",
        "lead.add_interest(7, \"clicked a link in a mail\")",
    );
    write_rule(&app, "20-interest.rhai", &changed).await;
    let click = json!({"userId": "hot@example.com", "event": "Email Clicked"});
    app.post("/v1/track", &click).await;
    app.settle().await;
    assert_eq!(app.lead("hot@example.com").await["interest"], 7.0);

    // Break the file: the error is reported with its position, and the last good
    // version stays live.
    let broken = changed.replace(
        "fn download(lead, event) {",
        "fn download(lead, event) {\n    let = ;",
    );
    write_rule(&app, "20-interest.rhai", &broken).await;
    let stats = app.stats().await;
    let error = &stats["rules"]["errors"][0];
    assert!(
        error["file"]
            .as_str()
            .unwrap()
            .ends_with("rules/20-interest.rhai"),
        "{stats}"
    );
    assert!(error["line"].as_u64().unwrap() > 1, "{stats}");
    assert!(error["column"].as_u64().unwrap() > 0, "{stats}");
    app.post("/v1/track", &click).await;
    app.settle().await;
    assert_eq!(app.lead("hot@example.com").await["interest"], 14.0);

    // Fixed again: the error goes away.
    write_rule(&app, "20-interest.rhai", &original).await;
    app.wait_for("errors cleared", |s| {
        s["rules"]["errors"].as_array().unwrap().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_kept_as_failed_and_retried_after_the_fix() {
    let app = spawn_app().await;
    write_rule(
        &app,
        "50-loop.rhai",
        "fn on_event(lead, event) {\n    if event.properties.spin == true {\n        let n = 0;\n        while true { n += 1; }\n    }\n}\n",
    )
    .await;
    let (status, _) = app
        .post("/v1/track", &json!({"userId": "loop@example.com", "event": "Email Clicked", "properties": {"spin": true}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stats = app
        .wait_for("the event to fail", |s| s["events_failed"] == 1)
        .await;
    assert_eq!(stats["events_pending"], 0);

    // Only the failing file's changes were dropped: the interest points that
    // 20-interest.rhai gave still apply.
    let lead = app.lead("loop@example.com").await;
    assert_eq!(lead["interest"], 3.0, "{lead:#}");
    let activity = &lead["recent_activity"][0];
    assert_eq!(activity["status"], "failed");
    assert!(
        activity["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("rules/50-loop.rhai")
    );
    assert_eq!(activity["error"]["line"], 4, "{activity}");

    let out = app.cli(&["events", "failed"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("loop@example.com"), "{shown}");
    assert!(shown.contains("rules/50-loop.rhai:4:"), "{shown}");
    assert!(shown.contains("endless loop"), "{shown}");

    // Fix the rule, then retry: the running daemon processes the event.
    write_rule(&app, "50-loop.rhai", "fn on_event(lead, event) {\n    if event.properties.spin == true {\n        lead.tag(\"looped\");\n    }\n}\n").await;
    let out = app.cli(&["events", "retry"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("queued 1 failed event(s) again"),
        "{}",
        text(&out)
    );
    let stats = app
        .wait_for("the retried event", |s| {
            s["events_failed"] == 0 && s["events_pending"] == 0
        })
        .await;
    assert_eq!(stats["events_processed"], 1);
    let lead = app.lead("loop@example.com").await;
    assert_eq!(lead["interest"], 3.0);
    assert_eq!(lead["tags"], json!(["looped"]));
    assert_eq!(lead["recent_activity"][0]["status"], "processed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_asking_for_an_unknown_stage_fails_the_event_with_its_position() {
    let app = spawn_app().await;
    write_rule(
        &app,
        "50-typo.rhai",
        "fn on_event(lead, event) {\n    lead.set_stage(\"marketing-qualified\", \"typo\");\n}\n",
    )
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "typo@example.com", "event": "Email Clicked"}),
    )
    .await;
    app.wait_for("the event to fail", |s| s["events_failed"] == 1)
        .await;
    let lead = app.lead("typo@example.com").await;
    let error = &lead["recent_activity"][0]["error"];
    assert_eq!(error["line"], 2, "{lead:#}");
    assert_eq!(error["column"], 10, "{lead:#}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown stage `marketing-qualified`"),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("mql"),
        "{error}"
    );
}

#[test]
fn the_shipped_fixtures_pass() {
    let dir = prepare_dir();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests");
    let out = cli_in(dir.path(), &["rules", "test", fixtures.to_str().unwrap()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains(" 0 failed"), "{shown}");
}

#[test]
fn a_failing_fixture_shows_a_diff() {
    let dir = prepare_dir();
    let tests = dir.path().join("rules/tests");
    std::fs::create_dir(&tests).unwrap();
    std::fs::write(
        tests.join("wrong.toml"),
        "description = \"expects too much\"\n[lead]\nemail = \"x@example.com\"\n\n[[events]]\ntype = \"track\"\nevent = \"Email Clicked\"\nexpect = { interest = 5, actions = [\"add_interest 5\"] }\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "test"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("FAIL"), "{shown}");
    assert!(shown.contains("-interest: 5"), "{shown}");
    assert!(shown.contains("+interest: 3"), "{shown}");
    assert!(shown.contains("+  add_interest 3"), "{shown}");
    assert!(shown.contains("0 passed, 1 failed"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_stops_slow_rules_and_refuses_eval_and_imports() {
    let dir = prepare_dir();
    // A huge step limit, so the wall-clock limit is the one that stops the rule.
    let config = dir.path().join("nurtured.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\n[limits]\nmax_operations = 1000000000\ntimeout = \"50ms\"\n");
    std::fs::write(&config, toml).unwrap();

    std::fs::write(
        dir.path().join("rules/60-eval.rhai"),
        "fn on_event(lead, event) {\n    eval(\"lead.tag(\\\"x\\\")\");\n}\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("rules/60-eval.rhai:2:"), "{shown}");
    std::fs::remove_file(dir.path().join("rules/60-eval.rhai")).unwrap();

    let app = crate::helpers::spawn_in(dir).await;
    write_rule(
        &app,
        "60-slow.rhai",
        "fn on_event(lead, event) {\n    if event.name == \"Slow\" {\n        let x = 0;\n        loop { x += 1; }\n    }\n    if event.name == \"Import\" {\n        import \"secrets\" as s;\n        lead.tag(\"imported\");\n    }\n}\n",
    )
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "slow@example.com", "event": "Slow"}),
    )
    .await;
    app.post(
        "/v1/track",
        &json!({"userId": "slow@example.com", "event": "Import"}),
    )
    .await;
    app.settle().await;
    let lead = app.lead("slow@example.com").await;
    assert_eq!(app.stats().await["events_failed"], 2, "{lead:#}");
    let errors: Vec<&serde_json::Value> = lead["recent_activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["error"])
        .collect();
    let import = errors[0]["message"].as_str().unwrap();
    let slow = errors[1]["message"].as_str().unwrap();
    assert!(slow.contains("ran longer than 50ms"), "{slow}");
    assert_eq!(errors[1]["line"], 4, "{lead:#}");
    assert!(import.to_lowercase().contains("module"), "{import}");
    assert_eq!(errors[0]["line"], 7, "{lead:#}");
}
