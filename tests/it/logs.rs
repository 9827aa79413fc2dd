//! `log_format = "json"`: the daemon's log is one JSON object per line, each with a
//! timestamp, a level and a message, from the start to the stop.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::prepare_dir;
use crate::lease::{run_daemon, wait_for};

#[test]
fn json_logs_parse_line_by_line() {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Top-level keys go before the first table.
    std::fs::write(&path, format!("log_format = \"json\"\n{text}")).unwrap();

    let (mut daemon, rx) = run_daemon(dir.path());
    let mut lines = wait_for(&rx, "nurtured is running").expect("the daemon starts");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let asked = Instant::now();
    while daemon.try_wait().unwrap().is_none() {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the daemon still runs 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lines.extend(rx.try_iter());

    assert!(lines.len() >= 2, "{lines:#?}");
    let mut running = None;
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let at = v["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("no timestamp: {line}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "timestamp is not RFC 3339: {line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "no level: {line}"
        );
        let message = v["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {line}"));
        if message == "nurtured is running" {
            running = Some(v.clone());
        }
    }
    // Structured fields stay fields.
    let running = running.expect("the start is logged");
    assert!(
        running["fields"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{running}"
    );
}
