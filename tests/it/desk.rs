//! The sales desk under a burst: many leads turn MQL at once (a trade-fair import) and
//! every owner's notification reaches the SMTP server on loopback, with owners in turn
//! for a round-robin team and by rule for a team that has one, over real HTTP and a
//! real SQLite file.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nurtured::smtp_sink::SmtpSink;
use nurtured::store::HandoffFilter;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, mail_dir, spawn_in};
use crate::mail::body;

/// Two teams: `inbound` hands out in turn, `regional` asks a rule first. No handoff by
/// stage: the rule below decides the team.
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

/// Northern and southern companies go to the regional team, the rest to inbound; the
/// regional rule gives northern companies to Dora and leaves the others to the turn.
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

/// Leads share a mail domain in groups; each group has a colleague already with sales.
const DOMAINS: usize = 20;

fn email(i: usize) -> String {
    format!("lead{i}@firma{}.example", i % DOMAINS)
}

fn colleague(d: usize) -> String {
    format!("kollege{d}@firma{d}.example")
}

fn company(i: usize) -> String {
    match i % 3 {
        0 => format!("Nordwerk {i}"),
        1 => format!("Suedbau {i}"),
        _ => format!("Firma {i}"),
    }
}

/// Everything but the last step to MQL: contact data, two downloads, a webinar.
fn warm_up(i: usize) -> Vec<Value> {
    let (e, id) = (email(i), |n: u32| format!("burst-{i}-{n}"));
    vec![
        json!({"type": "identify", "userId": e, "messageId": id(1),
               "traits": {"email": e, "firstName": "Lea", "lastName": format!("Nummer{i}"),
                          "phone": "+49 30 1234567", "title": "Head of IT",
                          "company": {"name": company(i), "employee_count": 200}}}),
        json!({"type": "track", "userId": e, "messageId": id(2), "event": "Content Downloaded",
               "properties": {"asset": "Whitepaper Lead Scoring", "type": "whitepaper", "topic": "scoring"}}),
        json!({"type": "track", "userId": e, "messageId": id(3), "event": "Content Downloaded",
               "properties": {"asset": "Case Study Maschinenbau", "type": "case_study", "topic": "scoring"}}),
        json!({"type": "track", "userId": e, "messageId": id(4), "event": "Webinar Attended",
               "properties": {"webinar": "B2B Funnel"}}),
    ]
}

/// The pricing page: the step that makes the lead an MQL.
fn pricing(i: usize) -> Value {
    json!({"type": "page", "userId": email(i), "messageId": format!("burst-{i}-5"),
           "name": "Pricing", "properties": {"url": "https://www.example.com/pricing"}})
}

async fn post_all(app: &TestApp, events: Vec<Value>) {
    for chunk in events.chunks(500) {
        let (status, body) = app.post("/v1/batch", &json!({ "batch": chunk })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// `n` leads turn MQL at once; returns how long it took from sending their last events
/// until the last notification was at the SMTP server.
async fn burst(n: usize) -> Duration {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, SALES);
    std::fs::write(dir.path().join("rules/60-sales.rhai"), RULE).unwrap();
    let app = spawn_in(dir).await;

    // A colleague per mail domain is already with sales (created first, so named first).
    for d in 0..DOMAINS {
        let e = colleague(d);
        let (status, _) = app
            .post(
                "/v1/identify",
                &json!({"userId": e, "traits": {"email": e, "name": format!("Kollege {d}")}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        app.settle().await;
        let (status, body) = app
            .post(
                &format!("/v1/leads/{e}/stage"),
                &json!({"stage": "sal", "reason": "met at the fair", "by": "crm"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    post_all(&app, (0..n).flat_map(warm_up).collect()).await;
    app.settle().await;
    let (_, open) = app.get("/v1/handoffs?state=open").await;
    assert_eq!(open["handoffs"], json!([]), "nobody is with sales yet");

    // The burst.
    let started = Instant::now();
    post_all(&app, (0..n).map(pricing).collect()).await;
    let owners = [
        "anna.berger@example.com",
        "ben.okafor@example.com",
        "carla.nowak@example.com",
        "dora.lind@example.com",
    ];
    eventually("every notification at the SMTP server", 300, || {
        (sink.count() >= n).then_some(())
    })
    .await;
    let mails: Vec<_> = sink
        .received()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| owners.contains(&t.as_str())))
        .collect();
    let took = mails
        .iter()
        .map(|m| m.at.duration_since(started))
        .max()
        .unwrap();
    eprintln!(
        "burst of {n} MQLs: the last of {} notifications at the SMTP server {took:?} after the events were sent",
        mails.len()
    );

    // One notification per lead, to the owner of its handoff.
    let store = &app.running.as_ref().unwrap().app.processor.store;
    let mut handoffs = store
        .handoffs(&HandoffFilter {
            limit: 10 * n as i64,
            ..HandoffFilter::default()
        })
        .await
        .unwrap();
    handoffs.sort_by_key(|h| h.id);
    assert_eq!(handoffs.len(), n);
    assert_eq!(mails.len(), n, "one notification per handoff");
    let mut by_lead: HashMap<String, (String, String)> = HashMap::new();
    for m in &mails {
        let text = body(m);
        let lead = text
            .split("E-Mail: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no lead address in:\n{text}"))
            .to_string();
        let previous = by_lead.insert(lead.clone(), (m.to[0].clone(), text));
        assert!(previous.is_none(), "{lead} was notified twice");
    }
    let index = |email: &str| -> usize {
        email["lead".len()..email.find('@').unwrap()]
            .parse()
            .unwrap()
    };

    // Round-robin in handoff order; the rule's pick, else the turn, for the regional team.
    let mut inbound_turn = 0;
    let mut regional_turn = 0;
    for h in &handoffs {
        assert_eq!(h.state, "open", "{h:?}");
        let i = index(&h.email);
        let expected = match (h.team.as_str(), i % 3) {
            ("inbound", 2) => {
                inbound_turn += 1;
                ["anna", "ben"][(inbound_turn - 1) % 2]
            }
            ("regional", 0) => "dora",
            ("regional", 1) => {
                regional_turn += 1;
                ["carla", "dora"][(regional_turn - 1) % 2]
            }
            other => panic!("lead {i} went to the wrong team: {other:?}"),
        };
        assert_eq!(
            h.owner.as_deref(),
            Some(expected),
            "handoff {} of lead {i}",
            h.id
        );
        let (to, text) = &by_lead[&h.email];
        assert!(
            to.starts_with(expected),
            "lead {i}: mail to {to}, owner {expected}"
        );
        // The brief: what the lead did, and its colleague already with sales.
        for essential in [
            format!("Lea Nummer{i}"),
            company(i),
            "Whitepaper Lead Scoring".into(),
            "Webinar Attended: B2B Funnel".into(),
            colleague(i % DOMAINS),
            "https://mail.example.com/h/".into(),
        ] {
            assert!(
                text.contains(&essential),
                "lead {i}: no {essential:?} in:\n{text}"
            );
        }
        let other = colleague((i + 1) % DOMAINS);
        assert!(
            !text.contains(&other),
            "lead {i}: {other} is of another company"
        );
    }
    assert!(inbound_turn > 0 && regional_turn > 0);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_mqls_reaches_every_owner_in_turn_and_by_rule() {
    // A debug build on a shared machine: 600 leads, with a bound per handoff. The
    // release figure for 2,000: `nurtured bench --burst 2000`.
    let n = 600;
    let took = burst(n).await;
    let bound = Duration::from_millis(30) * n as u32;
    assert!(
        took < bound,
        "{n} notifications took {took:?}, more than {bound:?}"
    );
}

/// One team whose rule is slow to answer (it counts for a while, then leaves the lead
/// to the turn); every identify hands the lead over.
const SLOW: &str = r#"
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

[[sales.teams]]
name = "inbound"
owners = ["anna", "ben"]
assign = "60-sales.rhai:owner_for"
reaction = "2h"
calendar = "always"
"#;

const SLOW_RULE: &str = r#"
fn on_event(lead, event) {
    if event.type == "identify" {
        lead.handoff("inbound", "imported from the fair");
    }
}

fn owner_for(lead) {
    let n = 0;
    for i in 0..10000 { n += i; }
    ""
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_the_backlog_to_the_restart_and_the_turns_go_on() {
    let sink = SmtpSink::start().unwrap();
    let dir = mail_dir(sink.port, SLOW);
    std::fs::write(dir.path().join("rules/60-sales.rhai"), SLOW_RULE).unwrap();
    let app = spawn_in(dir).await;
    let n = 1000;
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let e = format!("messe{i}@kunde{i}.example");
            json!({"type": "identify", "userId": e, "messageId": format!("fair-{i}"),
                   "traits": {"email": e, "name": format!("Besucher {i}")}})
        })
        .collect();
    post_all(&app, events).await;
    app.settle().await;
    // The first batch is assigned: its turns are taken.
    let start = Instant::now();
    loop {
        let (_, open) = app.get("/v1/handoffs?state=open&limit=1").await;
        if !open["handoffs"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no handoff assigned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The desk is busy asking the slow rule; a stop does not wait for the backlog.
    let url = app
        .running
        .as_ref()
        .unwrap()
        .app
        .config
        .database_url
        .clone();
    let started = Instant::now();
    let dir = app.stop().await;
    let took = started.elapsed();
    eprintln!("stopped in {took:?} with the desk at work");
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    let store = nurtured::store::Store::open(&url).await.unwrap();
    let waiting = |state: &'static str| {
        let store = store.clone();
        async move {
            store
                .handoffs(&HandoffFilter {
                    state: Some(state.into()),
                    limit: 10 * n as i64,
                    ..HandoffFilter::default()
                })
                .await
                .unwrap()
        }
    };
    let left = waiting("new").await.len();
    eprintln!("{left} of {n} handoffs left for the restart");
    assert!(
        left > 0,
        "the backlog was done before the stop; make the rule slower"
    );
    store.close().await;

    // After the restart (with a quick rule) the rest is assigned, and the turns go on
    // where they stood: anna, ben, anna, ... in handoff order across the stop.
    std::fs::write(
        dir.path().join("rules/60-sales.rhai"),
        SLOW_RULE.replace("for i in 0..10000 { n += i; }", ""),
    )
    .unwrap();
    let app = spawn_in(dir).await;
    eventually("every notification after the restart", 60, || {
        (sink.count() >= n).then_some(())
    })
    .await;
    let store = &app.running.as_ref().unwrap().app.processor.store;
    let mut open = store
        .handoffs(&HandoffFilter {
            state: Some("open".into()),
            limit: 10 * n as i64,
            ..HandoffFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), n);
    open.sort_by_key(|h| h.id);
    for (k, h) in open.iter().enumerate() {
        let expected = ["anna", "ben"][k % 2];
        assert_eq!(
            h.owner.as_deref(),
            Some(expected),
            "handoff {} ({k}.)",
            h.id
        );
    }
    assert_eq!(sink.count(), n, "each owner was told once");
}
