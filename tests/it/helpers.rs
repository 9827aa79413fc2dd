//! `spawn_app()`: a daemon with the shipped rules (copied, so tests may change them),
//! a fresh database (a SQLite file, or a PostgreSQL database of its own when
//! `NURTURED_TEST_POSTGRES` names a server) and an HTTP listener on port 0.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nurtured::clock::{SharedClock, SystemClock};
use nurtured::config::Config;
use nurtured::daemon::{self, App, Running};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;

pub const TOKEN: &str = "test-token-0123456789";

pub struct TestApp {
    pub dir: TempDir,
    pub base: String,
    pub running: Option<Running>,
    pub client: reqwest::Client,
    /// Held while the daemon runs, so that tests measuring time can run alone.
    pub share: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

/// Daemons of tests share the machine; a test that measures how long something takes
/// runs [`alone`].
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Waits until no other test's daemon runs, and keeps new ones from starting until the
/// guard is dropped. Start daemons with [`spawn_alone`] meanwhile.
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// A share of the machine, for a daemon started by hand.
pub async fn share() -> Option<tokio::sync::RwLockReadGuard<'static, ()>> {
    Some(MACHINE.read().await)
}

/// Writes a config and a copy of the shipped rules into a new temporary folder.
pub fn prepare_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    // SQLite in data/nurtured.db, or a database of its own on the test PostgreSQL server.
    let database = match nurtured::store::testing::postgres_server() {
        Some(server) => format!(
            "database_url = \"{}\"\n",
            nurtured::store::testing::fresh_postgres(&server)
        ),
        None => String::new(),
    };
    std::fs::write(
        dir.path().join("nurtured.toml"),
        format!(
            "api_token = \"{TOKEN}\"\nhttp_addr = \"127.0.0.1:0\"\n{database}\n[processing]\npoll_interval = \"50ms\"\n"
        ),
    )
    .unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for entry in std::fs::read_dir(shipped).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "rhai") {
            std::fs::copy(entry.path(), rules.join(entry.file_name())).unwrap();
        }
    }
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        &dir.path().join("templates"),
    );
    dir
}

/// Copies a folder with everything in it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn config_of(dir: &Path) -> Config {
    Config::load_with_env(Some(&dir.join("nurtured.toml")), Vec::new()).expect("test config")
}

pub async fn start_in(dir: &Path, clock: SharedClock) -> Running {
    nurtured::install_crypto();
    let app = App::build(config_of(dir), clock).await.expect("app builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    daemon::start(app, listener).await.expect("daemon starts")
}

pub async fn spawn_app() -> TestApp {
    spawn_in(prepare_dir()).await
}

pub async fn spawn_in(dir: TempDir) -> TestApp {
    spawn_prepared(dir, |_| {}).await
}

/// Like [`spawn_in`], with `prepare` run on the built app before the daemon starts
/// (to inject a fault, say).
pub async fn spawn_prepared(dir: TempDir, prepare: impl FnOnce(&App)) -> TestApp {
    let share = share().await;
    let mut app = prepared(dir, prepare).await;
    app.share = share;
    app
}

/// [`spawn_in`] for a test that holds [`alone`].
pub async fn spawn_alone(dir: TempDir) -> TestApp {
    prepared(dir, |_| {}).await
}

async fn prepared(dir: TempDir, prepare: impl FnOnce(&App)) -> TestApp {
    nurtured::install_crypto();
    let app = App::build(config_of(dir.path()), Arc::new(SystemClock))
        .await
        .expect("app builds");
    prepare(&app);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = daemon::start(app, listener).await.expect("daemon starts");
    TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
        share: None,
    }
}

impl TestApp {
    pub fn rules_dir(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    /// Posts the events of [`mql_journey`] for `email` as one batch.
    pub async fn post_journey(&self, email: &str) -> (StatusCode, Value) {
        self.post("/v1/batch", &json!({ "batch": mql_journey(email) }))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_raw(path, body.to_string(), Some(TOKEN)).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: String,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.get("/v1/stats").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until no event is pending.
    pub async fn settle(&self) -> Value {
        let start = Instant::now();
        loop {
            let s = self.stats().await;
            if s["events_pending"] == 0 {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "events still pending: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check(stats)` holds.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.stats().await;
            if check(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn lead(&self, email: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/leads/{email}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Stops the daemon and hands back its folder (for a restart).
    pub async fn stop(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.dir
    }

    /// Runs the `nurtured` binary in this app's folder.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_in(self.dir.path(), args)
    }
}

/// Runs the `nurtured` binary in `dir` (where its nurtured.toml is).
pub fn cli_in(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nurtured"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        // The database is in nurtured.toml; the binary would take the variable for an
        // (unknown) config override.
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .output()
        .expect("nurtured runs")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The events of the main scenario: a manager at a 200-employee company who downloads
/// two whitepapers, attends a webinar and views the pricing page.
pub fn mql_journey(email: &str) -> Vec<Value> {
    vec![
        json!({"type": "identify", "userId": "crm-4711", "messageId": "j-1",
               "traits": {"email": email, "firstName": "Anna", "lastName": "Schmidt",
                          "phone": "+49 30 1234567", "title": "Marketing Manager",
                          "company": {"name": "ACME GmbH", "employee_count": 200}}}),
        json!({"type": "track", "userId": "crm-4711", "messageId": "j-2", "event": "Content Downloaded",
               "properties": {"asset": "Whitepaper Lead Scoring", "type": "whitepaper", "topic": "scoring"}}),
        json!({"type": "track", "userId": "crm-4711", "messageId": "j-3", "event": "Content Downloaded",
               "properties": {"asset": "Whitepaper Nurturing", "type": "whitepaper", "topic": "nurturing"}}),
        json!({"type": "track", "userId": "crm-4711", "messageId": "j-4", "event": "Webinar Attended",
               "properties": {"webinar": "B2B Funnel"}}),
        json!({"type": "page", "userId": "crm-4711", "messageId": "j-5", "name": "Pricing",
               "properties": {"url": "https://www.example.com/pricing"}}),
    ]
}

/// Replaces a rule file and waits until the daemon has reloaded it (its version moved
/// on, or a new error names it).
pub async fn write_rule(app: &TestApp, name: &str, text: &str) {
    let before = app.stats().await;
    std::fs::write(app.rules_dir().join(name), text).unwrap();
    let version = before["rules"]["version"].as_i64().unwrap();
    let errors = before["rules"]["errors"].as_array().unwrap().len();
    app.wait_for(&format!("reload of {name}"), |s| {
        s["rules"]["version"].as_i64().unwrap() > version
            || s["rules"]["errors"].as_array().unwrap().len() != errors
            || s["rules"]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["file"].as_str().unwrap().ends_with(name))
    })
    .await;
}

/// The secret tests sign mail links with.
pub const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

/// A test folder whose daemon sends mail to the SMTP server on `smtp_port`, retries
/// quickly, and takes `extra` TOML (more `[mail]` keys, streams) at the end of `[mail]`.
pub fn mail_dir(smtp_port: u16, extra: &str) -> TempDir {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[mail]\nurl = \"smtp://127.0.0.1:{smtp_port}\"\npublic_url = \"https://mail.example.com\"\n\
         secret = \"{SECRET}\"\nretry_base = \"200ms\"\ntimeout = \"5s\"\n{extra}\n"
    ));
    std::fs::write(&path, text).unwrap();
    dir
}

/// A free loopback port (nothing listens on it until someone binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `check()` holds, polling; fails after `secs` seconds with `what`.
pub async fn eventually<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
