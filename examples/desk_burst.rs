//! Measures the sales desk under a burst: `N` leads turn MQL at once and the time from
//! sending their last events to the last owner's notification at the SMTP server is
//! printed. The daemon runs in this process with the shipped rules and templates, a
//! fresh SQLite file, real HTTP on loopback and the local SMTP server; two teams, one
//! handing out in turn and one asking a rule.
//!
//! ```sh
//! cargo run --release --example desk_burst -- 2000
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nurtured::clock::SystemClock;
use nurtured::config::Config;
use nurtured::daemon::{self, App};
use nurtured::smtp_sink::SmtpSink;
use serde_json::{Value, json};

const TOKEN: &str = "burst-token-0123456789";

const SALES: &str = r#"
[sales]
on_stage = {}

[[sales.owners]]
id = "anna"
name = "Anna Berger"
email = "anna.berger@example.com"

[[sales.owners]]
id = "ben"
name = "Ben Okafor"
email = "ben.okafor@example.com"

[[sales.owners]]
id = "carla"
name = "Carla Nowak"
email = "carla.nowak@example.com"

[[sales.owners]]
id = "dora"
name = "Dora Lind"
email = "dora.lind@example.com"

[[sales.teams]]
name = "inbound"
owners = ["anna", "ben"]
reaction = "2h"
calendar = "always"

[[sales.teams]]
name = "regional"
owners = ["carla", "dora"]
assign = "60-sales.rhai:owner_for"
reaction = "2h"
calendar = "always"
"#;

const RULE: &str = r#"
fn on_event(lead, event) {
    if lead.stage == "mql" && event.type == "page" {
        if lead.company.starts_with("Nord") || lead.company.starts_with("Sued") {
            lead.handoff("regional", "ready for the regional team");
        } else {
            lead.handoff("inbound", "ready for sales");
        }
    }
}

fn owner_for(lead) {
    if lead.company.starts_with("Nord") { "dora" } else { "" }
}
"#;

fn email(i: usize) -> String {
    format!("lead{i}@firma{}.example", i % 20)
}

fn warm_up(i: usize) -> Vec<Value> {
    let e = email(i);
    let company = match i % 3 {
        0 => format!("Nordwerk {i}"),
        1 => format!("Suedbau {i}"),
        _ => format!("Firma {i}"),
    };
    let id = |n: u32| format!("burst-{i}-{n}");
    vec![
        json!({"type": "identify", "userId": e, "messageId": id(1),
               "traits": {"email": e, "firstName": "Lea", "lastName": format!("Nummer{i}"),
                          "phone": "+49 30 1234567", "title": "Head of IT",
                          "company": {"name": company, "employee_count": 200}}}),
        json!({"type": "track", "userId": e, "messageId": id(2), "event": "Content Downloaded",
               "properties": {"asset": "Whitepaper Lead Scoring", "type": "whitepaper", "topic": "scoring"}}),
        json!({"type": "track", "userId": e, "messageId": id(3), "event": "Content Downloaded",
               "properties": {"asset": "Case Study Maschinenbau", "type": "case_study", "topic": "scoring"}}),
        json!({"type": "track", "userId": e, "messageId": id(4), "event": "Webinar Attended",
               "properties": {"webinar": "B2B Funnel"}}),
    ]
}

fn pricing(i: usize) -> Value {
    json!({"type": "page", "userId": email(i), "messageId": format!("burst-{i}-5"),
           "name": "Pricing", "properties": {"url": "https://www.example.com/pricing"}})
}

fn copy_tree(from: &Path, to: &Path) {
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

async fn post_all(client: &reqwest::Client, base: &str, events: Vec<Value>) {
    for chunk in events.chunks(500) {
        let resp = client
            .post(format!("{base}/v1/batch"))
            .bearer_auth(TOKEN)
            .json(&json!({ "batch": chunk }))
            .send()
            .await
            .expect("request");
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
}

async fn pending(client: &reqwest::Client, base: &str) -> i64 {
    let stats: Value = client
        .get(format!("{base}/v1/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("stats");
    stats["events_pending"].as_i64().unwrap_or(-1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(2000, |a| a.parse().expect("the number of leads"));
    nurtured::install_crypto();
    // RUST_LOG=nurtured::handoff::assign=debug shows how each batch spent its time.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let sink = SmtpSink::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), false)
        .expect("SMTP server");
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&root.join("rules"), &dir.path().join("rules"));
    std::fs::remove_dir_all(dir.path().join("rules/tests")).ok();
    copy_tree(&root.join("templates"), &dir.path().join("templates"));
    std::fs::write(dir.path().join("rules/60-sales.rhai"), RULE).unwrap();
    let config = dir.path().join("nurtured.toml");
    std::fs::write(
        &config,
        format!(
            "api_token = \"{TOKEN}\"\nhttp_addr = \"127.0.0.1:0\"\n\n[processing]\n\
             poll_interval = \"50ms\"\n\n[mail]\nurl = \"smtp://127.0.0.1:{}\"\n\
             public_url = \"https://mail.example.com\"\n\
             secret = \"burst-secret-0123456789-0123456789-abcdef\"\n{SALES}",
            sink.port
        ),
    )
    .unwrap();
    let config = Config::load_with_env(Some(&config), Vec::new()).expect("config");
    let app = App::build(config, Arc::new(SystemClock))
        .await
        .expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = daemon::start(app, listener).await.expect("daemon");
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();

    post_all(&client, &base, (0..n).flat_map(warm_up).collect()).await;
    while pending(&client, &base).await != 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    post_all(&client, &base, (0..n).map(pricing).collect()).await;
    let sent = started.elapsed();
    while sink.count() < n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {n} notifications arrived",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let arrivals = sink.arrivals();
    let at = |k: usize| {
        let mut times: Vec<Duration> = arrivals
            .iter()
            .map(|(_, t)| t.duration_since(started))
            .collect();
        times.sort();
        times[k.min(times.len() - 1)]
    };
    println!(
        "{n} leads turned MQL: events sent in {sent:?}; notifications at the SMTP server: \
         first {:?}, half {:?}, last {:?}",
        at(0),
        at(n / 2),
        at(n - 1)
    );
    running.stop().await;
}
