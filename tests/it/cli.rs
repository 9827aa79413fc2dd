//! The command line against a real SQLite file, without a running daemon.

use std::io::Write;

use serde_json::Value;

use crate::helpers::{cli_in, mql_journey, prepare_dir, text};

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
    text_.push_str("\n[limits]\ntimeout = \"200ms\"\nmax_ops = 5\n");
    std::fs::write(&config, text_).unwrap();
    let out = cli_in(dir.path(), &["run"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("nurtured.toml"), "{shown}");
    assert!(shown.contains("unknown field `max_ops`"), "{shown}");
    assert!(shown.contains("max_operations"), "{shown}");
    assert!(shown.contains("line 9"), "{shown}");

    let dir = prepare_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurtured"))
        .args(["run"])
        .current_dir(dir.path())
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
