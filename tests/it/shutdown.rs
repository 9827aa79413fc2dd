//! SIGTERM stops the daemon within 5 seconds whatever its backlog, and nothing is lost:
//! the work it did not get to is done after the restart.

use std::time::{Duration, Instant};

use crate::helpers::prepare_dir;
use crate::lease::{run_daemon, wait_for};

const LEADS: i64 = 20_000;

async fn pool(dir: &std::path::Path) -> sqlx::SqlitePool {
    let db = dir.join("data/nurtured.db");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

/// 20,000 leads that just became MQL, each with a handoff waiting for an owner and an
/// event waiting to be processed, written straight into the database file.
async fn backlog(dir: &std::path::Path) {
    // The schema, as the daemon makes it.
    nurtured::store::Store::open(&format!(
        "sqlite://{}",
        dir.join("data/nurtured.db").display()
    ))
    .await
    .unwrap()
    .close()
    .await;
    let pool = pool(dir).await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut tx = pool.begin().await.unwrap();
    for chunk in (0..LEADS).collect::<Vec<_>>().chunks(2_000) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO leads (id, email, first_name, last_name, phone, company, consent_email, \
             stage, stage_since, fit, interest, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i + 1)
                .push_bind(format!("lead{i}@firma{}.example.com", i % 300))
                .push_bind("Lea")
                .push_bind(format!("Nummer{i}"))
                .push_bind("+49 30 123456")
                .push_bind(format!("Firma {}", i % 300))
                .push_bind(true)
                .push_bind("mql")
                .push_bind(now)
                .push_bind(40.0)
                .push_bind(60.0)
                .push_bind(now)
                .push_bind(now);
        });
        q.build().execute(&mut *tx).await.unwrap();
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO handoffs (lead_id, team, reason, source, state, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i + 1)
                .push_bind("inbound")
                .push_bind("fit 40 and interest 60 over the thresholds")
                .push_bind("stage:mql")
                .push_bind("new")
                .push_bind(now)
                .push_bind(now);
        });
        q.build().execute(&mut *tx).await.unwrap();
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO events (message_id, lead_id, kind, name, properties, occurred_at, received_at) ",
        );
        q.push_values(chunk, |mut b, i| {
            b.push_bind(format!("click-{i}"))
                .push_bind(i + 1)
                .push_bind("track")
                .push_bind("Email Clicked")
                .push_bind("{\"campaign\":\"newsletter\"}")
                .push_bind(now)
                .push_bind(now);
        });
        q.build().execute(&mut *tx).await.unwrap();
    }
    sqlx::query("INSERT INTO event_queue (seq) SELECT seq FROM events")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE counters SET value = ? WHERE name = 'events_received'")
        .bind(LEADS)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

/// (events still queued, handoffs without owner, handoff notifications queued)
async fn left(dir: &std::path::Path) -> (i64, i64, i64) {
    let pool = pool(dir).await;
    let r = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM event_queue), \
                (SELECT COUNT(*) FROM handoffs WHERE state = 'new'), \
                (SELECT COUNT(*) FROM outbox WHERE kind = 'handoff')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    r
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
    let pool = pool(dir.path()).await;
    let (processed, assigned, owners): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM events WHERE seq NOT IN (SELECT seq FROM event_failures)), \
                (SELECT COUNT(*) FROM handoffs WHERE state = 'open'), \
                (SELECT COUNT(DISTINCT owner) FROM handoffs)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((processed, assigned, owners), (LEADS, LEADS, 2));
}
