//! SIGTERM stops the daemon within 5 seconds whatever its backlog, and nothing is lost:
//! the work it did not get to is done after the restart.

use std::time::{Duration, Instant};

use nurtured::store::is_postgres_url;
use nurtured::store::testing::{execute, query_i64, quote};

use crate::helpers::prepare_dir;
use crate::lease::{run_daemon, wait_for};

const LEADS: i64 = 20_000;

/// The database of the daemon in `dir` (SQLite or PostgreSQL, as the config says).
fn url(dir: &std::path::Path) -> String {
    crate::helpers::config_of(dir).database_url
}

/// 20,000 leads that just became MQL, each with a handoff waiting for an owner and an
/// event waiting to be processed, written straight into the database.
async fn backlog(dir: &std::path::Path) {
    let url = url(dir);
    // The schema, as the daemon makes it.
    nurtured::store::Store::open(&url)
        .await
        .unwrap()
        .close()
        .await;
    let now = chrono::Utc::now().timestamp_millis();
    // One transaction, 2,000 rows a statement; literal values, so the SQL is the same
    // on SQLite and PostgreSQL.
    let mut sql = String::from("BEGIN;\n");
    for chunk in (0..LEADS).collect::<Vec<_>>().chunks(2_000) {
        let rows = |row: &dyn Fn(i64) -> String| {
            chunk
                .iter()
                .map(|&i| row(i))
                .collect::<Vec<_>>()
                .join(",\n")
        };
        sql.push_str(
            "INSERT INTO leads (id, email, first_name, last_name, phone, company, consent_email, \
             stage, stage_since, fit, interest, created_at, updated_at) VALUES\n",
        );
        sql.push_str(&rows(&|i| {
            format!(
                "({}, {}, 'Lea', {}, '+49 30 123456', {}, TRUE, 'mql', {now}, 40.0, 60.0, {now}, {now})",
                i + 1,
                quote(&format!("lead{i}@firma{}.example.com", i % 300)),
                quote(&format!("Nummer{i}")),
                quote(&format!("Firma {}", i % 300)),
            )
        }));
        sql.push_str(";\n");
        sql.push_str(
            "INSERT INTO handoffs (lead_id, team, reason, source, state, created_at, updated_at) VALUES\n",
        );
        sql.push_str(&rows(&|i| {
            format!(
                "({}, 'inbound', 'fit 40 and interest 60 over the thresholds', 'stage:mql', 'new', {now}, {now})",
                i + 1
            )
        }));
        sql.push_str(";\n");
        sql.push_str(
            "INSERT INTO events (message_id, lead_id, kind, name, properties, occurred_at, received_at) VALUES\n",
        );
        sql.push_str(&rows(&|i| {
            format!(
                "({}, {}, 'track', 'Email Clicked', {}, {now}, {now})",
                quote(&format!("click-{i}")),
                i + 1,
                quote("{\"campaign\":\"newsletter\"}"),
            )
        }));
        sql.push_str(";\n");
    }
    if is_postgres_url(&url) {
        // The lead ids above were given, not taken from the identity sequence.
        sql.push_str(
            "SELECT setval(pg_get_serial_sequence('leads', 'id'), (SELECT max(id) FROM leads));\n",
        );
    }
    sql.push_str("INSERT INTO event_queue (seq) SELECT seq FROM events;\n");
    sql.push_str(&format!(
        "UPDATE counters SET value = {LEADS} WHERE name = 'events_received';\n"
    ));
    sql.push_str("COMMIT;\n");
    execute(&url, sql).await.unwrap();
}

/// (events still queued, handoffs without owner, handoff notifications queued)
async fn left(dir: &std::path::Path) -> (i64, i64, i64) {
    let url = url(dir);
    let count = |sql: &'static str| {
        let url = url.clone();
        async move { query_i64(&url, sql.to_string()).await.unwrap() }
    };
    (
        count("SELECT COUNT(*) FROM event_queue").await,
        count("SELECT COUNT(*) FROM handoffs WHERE state = 'new'").await,
        count("SELECT COUNT(*) FROM outbox WHERE kind = 'handoff'").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_backlog_stops_within_5_seconds_and_the_restart_finishes() {
    // The stop is timed: no other test's daemon shares the machine meanwhile.
    let _alone = crate::helpers::alone().await;
    let dir = prepare_dir();
    backlog(dir.path()).await;

    let (mut daemon, rx) = run_daemon(dir.path());
    wait_for(&rx, "nurtured is running").expect("the daemon starts");
    // Let it get well into the backlog.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = left(dir.path()).await;
    let asked = Instant::now();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "the daemon still runs 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = asked.elapsed();
    let after = left(dir.path()).await;
    println!(
        "SIGTERM with {} events queued and {} handoffs waiting: stopped in {took:?} ({}); \
         left {} events and {} handoffs",
        before.0, before.1, status, after.0, after.1
    );
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        after.0 > 0 || after.1 > 0,
        "the backlog was meant to outlast the stop: {after:?}"
    );

    // The restart does the rest.
    let (_daemon, rx) = run_daemon(dir.path());
    wait_for(&rx, "nurtured is running").expect("the daemon starts again");
    let started = Instant::now();
    loop {
        let now = left(dir.path()).await;
        if now == (0, 0, LEADS) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "after the restart, still left: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = url(dir.path());
    let (processed, assigned, owners) = (
        query_i64(
            &url,
            "SELECT COUNT(*) FROM events WHERE seq NOT IN (SELECT seq FROM event_failures)".into(),
        )
        .await
        .unwrap(),
        query_i64(
            &url,
            "SELECT COUNT(*) FROM handoffs WHERE state = 'open'".into(),
        )
        .await
        .unwrap(),
        query_i64(&url, "SELECT COUNT(DISTINCT owner) FROM handoffs".into())
            .await
            .unwrap(),
    );
    assert_eq!((processed, assigned, owners), (LEADS, LEADS, 2));
}
