//! One process processes a database: a second daemon is refused, a crashed one is
//! taken over at once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::helpers::prepare_dir;

/// A daemon process, killed when the test ends (also when it fails).
pub struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nurtured run` in `dir`; returns the child and a channel of its log lines.
pub fn run_daemon(dir: &std::path::Path) -> (Daemon, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurtured"))
        .arg("run")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        // The database is in nurtured.toml; the binary would take the variable for an
        // (unknown) config override.
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nurtured runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Daemon(child), rx)
}

/// Waits for a log line containing `text`; returns all lines seen.
pub fn wait_for(rx: &mpsc::Receiver<String>, text: &str) -> Result<Vec<String>, Vec<String>> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(text);
                seen.push(line);
                if hit {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    Err(seen)
}

#[test]
fn a_second_daemon_is_refused_and_a_killed_one_is_taken_over() {
    let dir = prepare_dir();
    let (mut first, rx) = run_daemon(dir.path());
    wait_for(&rx, "nurtured is running").expect("first daemon starts");
    if nurtured::store::testing::postgres_server().is_some() {
        // On PostgreSQL daemons share a database: the second joins, and leads once the
        // first was killed.
        let (mut second, rx2) = run_daemon(dir.path());
        wait_for(&rx2, "joined the cluster").expect("a second daemon joins");
        first.kill().unwrap();
        first.wait().unwrap();
        let leads = wait_for(&rx2, "this daemon leads now");
        second.kill().unwrap();
        second.wait().unwrap();
        leads.expect("the second daemon takes over from the killed one");
        return;
    }

    let (mut second, rx2) = run_daemon(dir.path());
    let status = second.wait().unwrap();
    // All of its output: the reader ends when the process's stderr closes.
    let lines: Vec<String> = rx2.iter().collect();
    assert!(!status.success(), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("another nurtured process")),
        "{lines:?}"
    );

    // A daemon killed outright leaves its lease behind; the next one on this host takes
    // it over at once instead of waiting for it to expire.
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut third, rx3) = run_daemon(dir.path());
    let started = wait_for(&rx3, "nurtured is running");
    third.kill().unwrap();
    third.wait().unwrap();
    started.expect("a daemon starts after the previous one was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_without_the_lease_writes_nothing() {
    use std::sync::Arc;

    use nurtured::clock::SystemClock;
    use nurtured::daemon::App;
    use nurtured::store::StoreError;
    use serde_json::json;

    let app = crate::helpers::spawn_app().await;
    let other = App::build(
        crate::helpers::config_of(app.dir.path()),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    // The running daemon holds the lease; another process cannot take it.
    assert!(other.processor.take_lease("other").await.unwrap().is_err());
    app.post(
        "/v1/track",
        &json!({"userId": "x@example.com", "event": "Email Clicked"}),
    )
    .await;
    let err = other.processor.run_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            nurtured::process::ProcessError::Store(StoreError::LeaseLost)
        ),
        "{err}"
    );
    let stats = app.settle().await;
    assert_eq!(stats["events_processed"], 1, "{stats}");
    assert_eq!(app.lead("x@example.com").await["interest"], 3.0);
}
