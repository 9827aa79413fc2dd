//! `nurtured bench` with tiny numbers, through the built binary: each mode starts the
//! daemon as a child process, drives it over HTTP and prints its report. The figures
//! are checked for what must hold whatever the machine, so a broken bench fails here.

use std::path::Path;

use crate::helpers::{cli_in, prepare_dir, text};

/// Runs `nurtured bench ARGS` in a folder with the shipped rules and templates.
fn bench(args: &[&str]) -> String {
    let dir = prepare_dir();
    let out = cli_in(dir.path(), &[&["bench"], args].concat());
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("machine: "), "{shown}");
    assert!(shown.contains(" cores, "), "{shown}");
    assert!(
        shown.contains("shutdown (SIGTERM until exit): exited in"),
        "{shown}"
    );
    shown
}

/// The number right after `prefix` in the first line containing it.
fn number_after(shown: &str, prefix: &str) -> f64 {
    let rest = shown
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{shown}"));
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{prefix}` in:\n{shown}"))
}

#[test]
fn the_event_run_reports_rates_memory_database_and_backlog_of_each_run_and_the_medians() {
    let shown = bench(&["--events", "1000", "--leads", "100", "--runs", "2"]);
    assert!(shown.contains("run 2 of 2"), "{shown}");
    let ingest = number_after(&shown, "ingest (all requests answered, committed):");
    let end_to_end = number_after(&shown, "end to end (all events processed):");
    assert!(ingest > 0.0 && end_to_end > 0.0, "{shown}");
    // Processing ends after the last request is answered.
    assert!(end_to_end <= ingest, "{shown}");
    assert!(
        shown.contains("events: 1000 received, 1000 processed, 0 failed; leads 100"),
        "{shown}"
    );
    assert!(
        number_after(
            &shown,
            "daemon CPU time until the last event was processed:"
        ) > 0.0,
        "{shown}"
    );
    let start = number_after(&shown, "daemon RSS:");
    let peak = number_after(&shown, "MiB at start, peak");
    assert!(start > 1.0 && peak >= start, "{shown}");
    assert!(shown.contains("MiB at 100% processed"), "{shown}");
    let db = number_after(&shown, "database:");
    let file = number_after(&shown, "bytes (file");
    assert!(db > 0.0 && file > 0.0 && file <= db, "{shown}");
    let per_event = number_after(&shown, &format!("+ WAL {}), ", db as u64 - file as u64));
    assert!(per_event > 0.0, "{shown}");
    number_after(
        &shown,
        "handoffs waiting for an owner when the last event was processed:",
    );
    assert!(shown.contains("s later"), "{shown}");
    // The generated mix makes MQLs with the shipped rules.
    assert!(shown.contains("mql "), "{shown}");
    let (_, medians) = shown.split_once("all 2 runs and their medians").unwrap();
    let median_line = medians
        .lines()
        .find(|l| l.trim_start().starts_with("end to end "))
        .unwrap_or_else(|| panic!("no median line in:\n{shown}"));
    assert!(median_line.ends_with("events/s"), "{median_line}");
}

#[test]
fn a_burst_reports_when_every_owner_was_notified_and_how_they_split() {
    let shown = bench(&["--burst", "20"]);
    assert!(shown.contains("stages lead 20"), "{shown}");
    let took = number_after(&shown, "every owner notification at the SMTP server after");
    assert!(took > 0.0, "{shown}");
    // The shipped owners take turns.
    assert!(
        shown.contains(
            "notifications per owner: anna.berger@example.com 10, ben.okafor@example.com 10"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("stages: mql 20; handoffs waiting 0"),
        "{shown}"
    );
}

#[test]
fn the_mail_run_reports_throughput_and_latency() {
    let shown = bench(&["--mails", "20", "--rate", "50", "--seconds", "1"]);
    assert!(shown.contains("throughput: 20 mails"), "{shown}");
    assert!(
        number_after(&shown, "at the SMTP server, first to last mail:") > 0.0,
        "{shown}"
    );
    assert!(shown.contains("(50 mails)"), "{shown}");
    assert!(shown.contains("mails: 70 sent, 0 queued"), "{shown}");
}

#[test]
fn single_event_intake_is_driven_by_wrk_and_every_answered_event_is_processed() {
    if !Path::new("/usr/bin/wrk").exists()
        && !std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("wrk").is_file()))
    {
        println!("skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let shown = bench(&[
        "--single",
        "--seconds",
        "1",
        "--leads",
        "200",
        "--connections",
        "10",
    ]);
    let rate = number_after(&shown, "single-event intake:");
    assert!(rate > 0.0, "{shown}");
    let requests = number_after(&shown, "requests/s (") as u64;
    assert!(shown.contains(" 0 non-2xx, 0 socket errors"), "{shown}");
    number_after(&shown, "latency: mean");
    // Every answered event arrived, plus at most one open request per connection.
    let received = number_after(&shown, "s after wrk ended:") as u64;
    let open = number_after(&shown, "answered, ") as u64;
    assert_eq!(received, 200 + requests + open, "{shown}");
    assert!(open <= 10, "{shown}");
    assert!(shown.contains(", 0 failed"), "{shown}");
}
