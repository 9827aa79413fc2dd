//! `nurtured bench` with tiny numbers, through the built binary: each mode starts the
//! daemon as a child process, drives it over HTTP and prints its report. The figures
//! are checked for what must hold whatever the machine, so a broken bench fails here.
//! Several daemons on one database need a PostgreSQL server (`NURTURED_TEST_POSTGRES`).

use std::path::Path;

use nurtured::store::testing::postgres_server;

use crate::helpers::{cli_in, prepare_dir, text};

/// Runs `nurtured bench ARGS` in a folder with the shipped rules and templates.
fn bench(args: &[&str]) -> String {
    bench_with("", args)
}

/// [`bench`] with `extra` added to the configuration.
fn bench_with(extra: &str, args: &[&str]) -> String {
    let dir = prepare_dir();
    let file = dir.path().join("nurtured.toml");
    let config = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{config}\n{extra}")).unwrap();
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

#[test]
fn several_daemons_need_postgres_and_the_event_run() {
    let dir = prepare_dir();
    let refused = |args: &[&str], why: &str| {
        let out = cli_in(dir.path(), &[&["bench"], args].concat());
        let shown = text(&out);
        assert!(!out.status.success(), "{shown}");
        assert!(shown.contains(why), "{why} not in:\n{shown}");
    };
    refused(&["--daemons", "2"], "needs --postgres SERVER_URL");
    refused(
        &["--sqlite-too"],
        "--sqlite-too compares SQLite with --postgres",
    );
    let server = "postgres://nobody@127.0.0.1:1/none";
    refused(
        &["--burst", "5", "--daemons", "2", "--postgres", server],
        "--daemons and --sqlite-too are for the event run",
    );
    refused(
        &["--daemons", "1,0", "--postgres", server],
        "--daemons must be at least 1",
    );
    refused(
        &["--daemons", "2,2", "--postgres", server],
        "--daemons lists a count twice",
    );
}

#[test]
fn several_daemons_share_one_postgres_database_and_the_setups_are_compared() {
    let Some(server) = postgres_server() else {
        println!("skipped: needs NURTURED_TEST_POSTGRES");
        return;
    };
    // One connection: each request is answered before the next, so every lead is
    // created before events of it go to another daemon.
    // Members share the shards out within two heartbeats (a quarter of this each).
    let fast = "[cluster]\nlease_timeout = \"1s\"\n";
    let shown = bench_with(
        fast,
        &[
            "--postgres",
            &server,
            "--daemons",
            "1,2",
            "--sqlite-too",
            "--events",
            "600",
            "--leads",
            "100",
            "--batch",
            "100",
            "--connections",
            "1",
        ],
    );
    assert!(
        shown.contains("daemons: 1 on SQLite and 1, 2 on PostgreSQL, by turns"),
        "{shown}"
    );
    assert!(shown.contains("run 1 of 1: PG 2 daemons"), "{shown}");
    assert!(shown.contains("round-robin over the 2 daemons"), "{shown}");
    assert!(shown.contains("shards shared out"), "{shown}");
    let bench_1 = number_after(&shown, "peak RSS per daemon: bench-1");
    let bench_2 = number_after(&shown, "MiB, bench-2");
    let sum = number_after(&shown, "MiB; sum");
    assert!((bench_1 + bench_2 - sum).abs() <= 1.0, "{shown}");
    assert_eq!(
        shown
            .matches("events: 600 received, 600 processed, 0 failed; leads 100")
            .count(),
        3,
        "{shown}"
    );
    let (_, table) = shown.split_once("medians per setup").unwrap();
    let head = table.lines().nth(1).unwrap_or_default();
    assert!(
        head.contains("SQLite") && head.contains("PG 1 daemon") && head.contains("PG 2 daemons"),
        "{table}"
    );
    let rates = table
        .lines()
        .find(|l| l.trim_start().starts_with("end to end "))
        .unwrap_or_else(|| panic!("no end-to-end row in:\n{table}"));
    assert_eq!(
        rates
            .split_whitespace()
            .filter(|w| w.parse::<f64>().is_ok())
            .count(),
        3,
        "{rates}"
    );
    let second = table
        .lines()
        .find(|l| l.trim_start().starts_with("bench-2 peak RSS"))
        .unwrap_or_else(|| panic!("no bench-2 row in:\n{table}"));
    // Only the two-daemon setup has a second daemon.
    let dashes = second.split_whitespace().filter(|w| *w == "-").count();
    assert_eq!(dashes, 2, "{second}");
}
