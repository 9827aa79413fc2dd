//! The command line against a real SQLite file, without a running daemon.

use std::io::Write;

use serde_json::Value;

use crate::helpers::{cli_in, mql_journey, prepare_dir, spawn_in, text};

#[test]
fn ingest_a_file_then_show_the_lead() {
    let dir = prepare_dir();
    let path = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "# exported from the website").unwrap();
    for e in mql_journey("file@example.com") {
        writeln!(f, "{e}").unwrap();
    }
    drop(f);

    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("stored 5 event(s)"), "{shown}");
    assert!(shown.contains("processed 5 event(s)"), "{shown}");

    // The same file again adds nothing.
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(
        text(&out).contains("stored 0 event(s), skipped 5"),
        "{}",
        text(&out)
    );

    let out = cli_in(dir.path(), &["lead", "show", "FILE@example.com"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("stage     mql"), "{shown}");
    assert!(shown.contains("lead -> mql"), "{shown}");
    assert!(shown.contains("rules/40-funnel.rhai:"), "{shown}");
    assert!(shown.contains("Content Downloaded"), "{shown}");

    let out = cli_in(dir.path(), &["lead", "show", "file@example.com", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["stage"], "mql");
    assert_eq!(v["stage_history"].as_array().unwrap().len(), 3);

    let out = cli_in(dir.path(), &["lead", "show", "nobody@example.com"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_the_handoffs_waiting_for_an_owner() {
    // `ingest` processes the events but leaves the handoff to the daemon's sales desk.
    let dir = prepare_dir();
    let path = dir.path().join("events.jsonl");
    let lines: Vec<String> = mql_journey("waits@example.com")
        .iter()
        .map(|e| e.to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli_in(dir.path(), &["stats"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["stages"]["mql"], 1, "{v}");
    assert_eq!(v["handoffs_waiting"], 1, "{v}");

    // The daemon's desk gives it an owner; GET /v1/stats counts down to 0.
    let app = spawn_in(dir).await;
    let stats = app
        .wait_for("the desk to assign", |s| s["handoffs_waiting"] == 0)
        .await;
    assert_eq!(stats["stages"]["mql"], 1, "{stats}");
    let (_, handoffs) = app.get("/v1/handoffs?state=open").await;
    assert_eq!(
        handoffs["handoffs"].as_array().map(Vec::len),
        Some(1),
        "{handoffs}"
    );
    app.stop().await;
}

#[test]
fn ingest_reports_bad_lines_and_stores_nothing() {
    let dir = prepare_dir();
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"type\":\"track\",\"userId\":\"a@example.com\",\"event\":\"Email Clicked\"}\n{\"type\":\"track\",\"userId\":\"a@example.com\"}\nnot json\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["ingest", "bad.jsonl"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("bad.jsonl:2: event: missing"), "{shown}");
    assert!(shown.contains("bad.jsonl:3: $: not valid JSON"), "{shown}");
    assert!(shown.contains("nothing was stored"), "{shown}");
    let out = cli_in(dir.path(), &["stats"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["events_received"], 0);
}

#[test]
fn a_wrong_config_key_stops_with_file_key_and_allowed_keys() {
    let dir = prepare_dir();
    let config = dir.path().join("nurtured.toml");
    let mut text_ = std::fs::read_to_string(&config).unwrap();
    // `max_ops` is the 4th line added (the config may name a database or not).
    let line = text_.lines().count() + 4;
    text_.push_str("\n[limits]\ntimeout = \"200ms\"\nmax_ops = 5\n");
    std::fs::write(&config, text_).unwrap();
    let out = cli_in(dir.path(), &["run"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("nurtured.toml"), "{shown}");
    assert!(shown.contains("unknown field `max_ops`"), "{shown}");
    assert!(shown.contains("max_operations"), "{shown}");
    assert!(shown.contains(&format!("line {line}")), "{shown}");

    let dir = prepare_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurtured"))
        .args(["run"])
        .current_dir(dir.path())
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .env("NURTURED_TIME_ZONE", "Mars/Olympus")
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("environment variable NURTURED_TIME_ZONE: `time_zone`"),
        "{shown}"
    );
}

#[test]
fn templates_check_names_file_line_and_column() {
    let dir = prepare_dir();
    let out = cli_in(dir.path(), &["templates", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok: 18 mails (de, en)"),
        "{}",
        text(&out)
    );

    let t = dir.path().join("templates/de");
    // An unknown variable (a typo), a syntax error, a mail with a part missing.
    let use_case = t.join("trigger/use-case.txt");
    let original = std::fs::read_to_string(&use_case).unwrap();
    std::fs::write(
        &use_case,
        original.replacen("{{ data.topic }}", "{{ lead.firstname }}", 1),
    )
    .unwrap();
    std::fs::write(
        t.join("stream/lead-guide.subject"),
        "Ihr Leitfaden {% if lead.name %}\n",
    )
    .unwrap();
    std::fs::remove_file(t.join("stream/mql-roi.html")).unwrap();
    let out = cli_in(dir.path(), &["templates", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("templates/de/stream/lead-guide.subject:2:1: Unexpected end of input"),
        "syntax error with position: {shown}"
    );
    assert!(
        shown.contains("templates/de/stream/mql-roi: a mail needs .subject, .txt and .html; missing: stream/mql-roi.html"),
        "{shown}"
    );
    // With the syntax error fixed, the unknown variable shows with its line.
    std::fs::write(t.join("stream/lead-guide.subject"), "Ihr Leitfaden\n").unwrap();
    std::fs::remove_file(t.join("stream/mql-roi.txt")).unwrap();
    std::fs::remove_file(t.join("stream/mql-roi.subject")).unwrap();
    let out = cli_in(dir.path(), &["templates", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    let line = original
        .lines()
        .position(|l| l.contains("{{ data.topic }}"))
        .unwrap()
        + 1;
    assert!(
        shown.contains(&format!("templates/de/trigger/use-case.txt:{line}:")),
        "{shown}"
    );
    assert!(shown.contains("`firstname` is not defined"), "{shown}");
    assert!(
        shown.contains("missing mail template `stream/mql-roi` (used by stream `mql` step 3)"),
        "{shown}"
    );
}

#[test]
fn real_mail_with_the_shipped_secret_is_refused() {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(
        "\n[mail]\nurl = \"smtp://127.0.0.1:2525\"\npublic_url = \"https://mail.example.com\"\n",
    );
    std::fs::write(&path, config).unwrap();
    let out = cli_in(dir.path(), &["run"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("mail.secret is the shipped development secret"),
        "{}",
        text(&out)
    );
}
