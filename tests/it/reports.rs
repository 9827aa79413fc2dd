//! The funnel and SLA reports over HTTP and from the command line, on leads sent
//! through the API at known times (a manual clock and event timestamps) and handoffs
//! written straight into the database.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nurtured::clock::ManualClock;
use nurtured::store::is_postgres_url;
use nurtured::store::testing::{execute, query_i64, quote};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, cli_in, mql_journey, prepare_dir, start_in, text};

const HOUR: i64 = 3_600_000;

/// 08:00 UTC four days ago: everything seeded lies in the past of the real clock too,
/// which the `nurtured` binary runs on.
fn start() -> DateTime<Utc> {
    let today = Utc::now().date_naive() - Duration::days(4);
    today.and_hms_opt(8, 0, 0).unwrap().and_utc()
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Four leads, created at `t0`:
/// - anna (`context.campaign.source` Google): the MQL journey, one event an hour from
///   `t0`; sales takes her (sal) a day after `t0`;
/// - ben (`properties.utm_source` LinkedIn): downloads a whitepaper two hours after `t0`;
/// - carla (trait `source` Partner) and dave (nothing): only identified.
async fn seed_leads(app: &TestApp, clock: &ManualClock, t0: DateTime<Utc>) {
    let mut anna = mql_journey("anna@acme.example");
    for (i, e) in anna.iter_mut().enumerate() {
        e["userId"] = json!("crm-anna");
        e["messageId"] = json!(format!("anna-{i}"));
        e["timestamp"] = json!(at(t0 + Duration::hours(i as i64)));
    }
    anna[0]["context"] = json!({"campaign": {"source": "Google", "medium": "cpc"}});
    let (status, body) = app.post("/v1/batch", &json!({ "batch": anna })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = app
        .post(
            "/v1/track",
            &json!({"userId": "ben@beta.example", "messageId": "ben-1",
                    "event": "Content Downloaded", "timestamp": at(t0 + Duration::hours(2)),
                    "properties": {"asset": "Whitepaper Lead Scoring", "type": "whitepaper",
                                   "utm_source": "LinkedIn"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (who, traits) in [
        (
            "carla@gamma.example",
            json!({"name": "Carla Weiss", "source": "Partner"}),
        ),
        ("dave@delta.example", json!({"name": "Dave Klein"})),
    ] {
        let (status, body) = app
            .post(
                "/v1/identify",
                &json!({"userId": who, "traits": traits, "timestamp": at(t0)}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    app.settle().await;
    assert_eq!(app.lead("anna@acme.example").await["stage"], "mql");

    clock.set(t0 + Duration::days(1));
    let (status, body) = app
        .post(
            "/v1/leads/anna@acme.example/stage",
            &json!({"stage": "sal", "reason": "accepted by sales", "by": "jonas"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The time anna became MQL, from her history.
async fn mql_at(app: &TestApp) -> i64 {
    let lead = app.lead("anna@acme.example").await;
    let row = lead["stage_history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["to"] == "mql")
        .cloned()
        .expect("anna became mql");
    DateTime::parse_from_rfc3339(row["at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// One `handoffs` row, instants in Unix milliseconds.
struct Handoff {
    id: i64,
    lead: i64,
    state: &'static str,
    owner: &'static str,
    owners_had: String,
    created: i64,
    assigned: i64,
    due: i64,
    breached: Option<i64>,
    answered: Option<i64>,
    business: Option<i64>,
}

/// Handoffs as the sales handoff writes them (created at `t0` unless said otherwise):
/// 1. anna, accepted by jonas after 2h (business 2h);
/// 2. ben, mia missed the 4h deadline, jonas took it over at 5h and accepted at 6h
///    (business 6h);
/// 3. carla, mia missed the deadline, expired;
/// 4. dave, created a day after `t0`, open with mia, due 4h later;
/// 5. anna, 40 days before `t0`, rejected by jonas (outside a 30-day period).
async fn seed_handoffs(app: &TestApp, t0: DateTime<Utc>) {
    let url = crate::helpers::config_of(app.dir.path()).database_url;
    let t = t0.timestamp_millis();
    let id = |email: &'static str| {
        let url = url.clone();
        async move {
            query_i64(
                &url,
                format!("SELECT id FROM leads WHERE email = {}", quote(email)),
            )
            .await
            .unwrap()
        }
    };
    let (anna, ben, carla, dave) = (
        id("anna@acme.example").await,
        id("ben@beta.example").await,
        id("carla@gamma.example").await,
        id("dave@delta.example").await,
    );
    let day = 24 * HOUR;
    let h = |id, lead, state, owner, created, due| Handoff {
        id,
        lead,
        state,
        owner,
        owners_had: format!("[\"{owner}\"]"),
        created,
        assigned: created,
        due,
        breached: None,
        answered: None,
        business: None,
    };
    let rows = [
        Handoff {
            answered: Some(t + 2 * HOUR),
            business: Some(2 * HOUR),
            ..h(1, anna, "accepted", "jonas", t, t + 4 * HOUR)
        },
        Handoff {
            owners_had: r#"["mia","jonas"]"#.into(),
            assigned: t + 5 * HOUR,
            breached: Some(t + 4 * HOUR),
            answered: Some(t + 6 * HOUR),
            business: Some(6 * HOUR),
            ..h(2, ben, "accepted", "jonas", t, t + 9 * HOUR)
        },
        Handoff {
            breached: Some(t + 4 * HOUR),
            ..h(3, carla, "expired", "mia", t, t + 4 * HOUR)
        },
        h(4, dave, "open", "mia", t + day, t + day + 4 * HOUR),
        Handoff {
            answered: Some(t - 40 * day + HOUR),
            business: Some(HOUR),
            ..h(
                5,
                anna,
                "rejected",
                "jonas",
                t - 40 * day,
                t - 40 * day + 4 * HOUR,
            )
        },
    ];
    // Literal values: the same SQL on SQLite and PostgreSQL.
    let int = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    let string = |v: Option<&str>| v.map_or("NULL".to_string(), quote);
    let mut sql = String::new();
    for r in rows {
        sql.push_str(&format!(
            "INSERT INTO handoffs (id, lead_id, team, reason, source, state, owner, owners_had, \
                created_at, assigned_at, due_at, breached_at, answered_at, answered_by, \
                business_ms, updated_at) \
             VALUES ({}, {}, 'sales', 'mql', 'stage:mql', {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});\n",
            r.id,
            r.lead,
            quote(r.state),
            quote(r.owner),
            quote(&r.owners_had),
            r.created,
            r.assigned,
            r.due,
            int(r.breached),
            int(r.answered),
            string(r.answered.map(|_| r.owner)),
            int(r.business),
            r.answered.unwrap_or(r.created),
        ));
    }
    if is_postgres_url(&url) {
        // The ids above were given, not taken from the identity sequence.
        sql.push_str(
            "SELECT setval(pg_get_serial_sequence('handoffs', 'id'), (SELECT max(id) FROM handoffs));\n",
        );
    }
    for (handoff, what, owner, when) in [
        (1, "created", None, t),
        (1, "assigned", Some("jonas"), t),
        (1, "accepted", Some("jonas"), t + 2 * HOUR),
        (2, "assigned", Some("mia"), t),
        (2, "breached", Some("mia"), t + 4 * HOUR),
        (2, "reassigned", Some("jonas"), t + 5 * HOUR),
        (3, "breached", Some("mia"), t + 4 * HOUR),
        (3, "expired", Some("mia"), t + 8 * HOUR),
        (4, "assigned", Some("mia"), t + day),
    ] {
        sql.push_str(&format!(
            "INSERT INTO handoff_log (handoff_id, at, what, owner) VALUES ({handoff}, {when}, {}, {});\n",
            quote(what),
            string(owner),
        ));
    }
    execute(&url, sql).await.unwrap();
}

async fn seeded() -> (TestApp, Arc<ManualClock>, DateTime<Utc>) {
    let t0 = start();
    let clock = Arc::new(ManualClock::new(t0));
    let dir = prepare_dir();
    // The handoffs are written below with known times; no automatic handoff at MQL.
    let config = dir.path().join("nurtured.toml");
    let text = std::fs::read_to_string(&config).unwrap() + "\n[sales]\non_stage = {}\n";
    std::fs::write(&config, text).unwrap();
    let running = start_in(dir.path(), clock.clone()).await;
    let app = TestApp {
        base: format!("http://{}", running.addr),
        running: Some(running),
        dir,
        client: reqwest::Client::new(),
        share: crate::helpers::share().await,
    };
    seed_leads(&app, &clock, t0).await;
    seed_handoffs(&app, t0).await;
    clock.set(t0 + Duration::days(2));
    (app, clock, t0)
}

/// The lines of `text` with runs of spaces made one, trimmed.
fn squeezed(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn counts(list: &Value, key: &str, value: &str) -> Vec<(String, i64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v[key].as_str().unwrap().to_string(),
                v[value].as_i64().unwrap(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

fn stage<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_report_counts_stages_moves_conversions_times_and_channels() {
    let (app, _clock, t0) = seeded().await;
    let t = t0.timestamp_millis();
    let mql = mql_at(&app).await;
    assert!(mql > t + HOUR && mql <= t + 4 * HOUR, "mql at {mql}");

    let (status, r) = app.get("/v1/reports/funnel").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["period"]["until"], json!(t0 + Duration::days(2)));
    assert_eq!(r["period"]["since"], json!(t0 - Duration::days(28)));
    assert_eq!(
        counts(&r["stages"], "stage", "leads"),
        pairs(&[
            ("subscriber", 2),
            ("lead", 1),
            ("mql", 0),
            ("sal", 1),
            ("sql", 0),
            ("opportunity", 0),
            ("customer", 0),
            ("closed_lost", 0),
            ("disqualified", 0),
            ("recycled", 0),
        ])
    );
    assert_eq!(r["leads_created"], 4);
    let moves: Vec<(&str, &str, i64)> = r["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap(),
                m["to"].as_str().unwrap(),
                m["moves"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("subscriber", "lead", 2),
            ("lead", "mql", 1),
            ("mql", "sal", 1)
        ]
    );

    // All four were created (entered subscriber) in the period; two became leads.
    let sub = stage(&r["conversions"], "subscriber");
    assert_eq!(sub["entered"], 4);
    let reached = |c: &Value, to: &str| {
        let x = stage(&c["reached"], to);
        (x["leads"].as_i64().unwrap(), x["rate_pct"].as_f64())
    };
    assert_eq!(reached(sub, "lead"), (2, Some(50.0)));
    assert_eq!(reached(sub, "mql"), (1, Some(25.0)));
    assert_eq!(reached(sub, "sal"), (1, Some(25.0)));
    assert_eq!(reached(sub, "customer"), (0, Some(0.0)));
    let lead = stage(&r["conversions"], "lead");
    assert_eq!(lead["entered"], 2);
    assert_eq!(reached(lead, "mql"), (1, Some(50.0)));
    let mql_c = stage(&r["conversions"], "mql");
    assert_eq!(
        (mql_c["entered"].as_i64(), reached(mql_c, "sal")),
        (Some(1), (1, Some(100.0)))
    );
    assert_eq!(
        reached(stage(&r["conversions"], "sql"), "customer"),
        (0, None)
    );

    // Subscriber: anna 1h, ben 2h. Lead: anna from 1h to her MQL event. MQL: to the
    // move to sal, a day after t0.
    let times = &r["time_in_stage"];
    let s = stage(times, "subscriber");
    assert_eq!(
        (s["count"].as_i64(), s["median_ms"].as_i64()),
        (Some(2), Some(HOUR * 3 / 2))
    );
    let l = stage(times, "lead");
    assert_eq!(
        (l["count"].as_i64(), l["median_ms"].as_i64()),
        (Some(1), Some(mql - t - HOUR))
    );
    let m = stage(times, "mql");
    assert_eq!(m["median_ms"].as_i64(), Some(t + 24 * HOUR - mql));
    assert_eq!(stage(times, "sal")["count"], 0);

    let channels: Vec<(String, i64)> = counts(&r["channels"], "channel", "leads");
    assert_eq!(
        channels,
        pairs(&[
            ("direct", 1),
            ("google", 1),
            ("linkedin", 1),
            ("partner", 1)
        ])
    );
    let google = &r["channels"][1]["stages"];
    assert_eq!(stage(google, "sal")["leads"], 1);
    assert_eq!(stage(google, "mql")["leads"], 1);
    let linkedin = &r["channels"][2]["stages"];
    assert_eq!(stage(linkedin, "lead")["leads"], 1);
    assert_eq!(stage(linkedin, "mql")["leads"], 0);

    // From the day after t0 (midnight in Berlin): only the move to sal and the end of
    // anna's MQL stay fall in it; no lead was created.
    let day = (t0 + Duration::days(1)).date_naive();
    let (status, r) = app.get(&format!("/v1/reports/funnel?since={day}")).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["leads_created"], 0);
    assert_eq!(
        r["moves"],
        json!([{"from": "mql", "to": "sal", "moves": 1}])
    );
    assert_eq!(stage(&r["conversions"], "sal")["entered"], 1);
    assert_eq!(stage(&r["conversions"], "subscriber")["entered"], 0);
    assert_eq!(stage(&r["time_in_stage"], "mql")["count"], 1);
    assert_eq!(stage(&r["time_in_stage"], "subscriber")["count"], 0);
    assert_eq!(stage(&r["stages"], "sal")["leads"], 1);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_report_counts_states_times_owners_and_overdue_handoffs() {
    let (app, _clock, t0) = seeded().await;
    let (status, r) = app.get("/v1/reports/sla?days=30").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["handoffs"], 4, "the rejected one is older than 30 days");
    assert_eq!(
        counts(&r["by_state"], "state", "handoffs"),
        pairs(&[
            ("new", 0),
            ("open", 1),
            ("escalated", 0),
            ("accepted", 2),
            ("rejected", 0),
            ("expired", 1),
        ])
    );
    assert_eq!(
        (r["breached"].as_i64(), r["breached_pct"].as_f64()),
        (Some(2), Some(50.0))
    );
    // Accepted after 2h and 6h.
    assert_eq!(
        r["time_to_accept"],
        json!({"count": 2, "median_ms": 4 * HOUR, "p90_ms": 5 * HOUR + 36 * 60_000})
    );
    assert_eq!(r["business_time_to_accept"]["median_ms"], 4 * HOUR);
    let owners = r["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 2, "{r:#}");
    let jonas = &owners[0];
    assert_eq!(jonas["owner"], "jonas");
    assert_eq!(
        (&jonas["assigned"], &jonas["accepted"], &jonas["breaches"]),
        (&json!(2), &json!(2), &json!(0))
    );
    // 2h on the first, 1h from taking over the second.
    assert_eq!(jonas["time_to_accept"]["median_ms"], HOUR * 3 / 2);
    let mia = &owners[1];
    assert_eq!(mia["owner"], "mia");
    assert_eq!(
        (
            &mia["assigned"],
            &mia["accepted"],
            &mia["expired"],
            &mia["breaches"]
        ),
        (&json!(3), &json!(0), &json!(1), &json!(2))
    );
    assert_eq!(mia["time_to_accept"]["median_ms"], Value::Null);

    let open = r["open"].as_array().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["email"], "dave@delta.example");
    assert_eq!(open[0]["owner"], "mia");
    assert_eq!(open[0]["overdue"], true);
    assert_eq!(open[0]["due_in_ms"], -20 * HOUR);
    assert_eq!(open[0]["due_at"], json!(t0 + Duration::hours(28)));

    // A longer period takes in the old rejection.
    let (_, r) = app.get("/v1/reports/sla?days=60").await;
    assert_eq!(r["handoffs"], 5);
    assert_eq!(r["owners"][0]["rejected"], 1);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_periods_get_400_with_a_clear_message() {
    let app = crate::helpers::spawn_app().await;
    for (query, says) in [
        ("days=abc", "`days` must be a whole number"),
        ("days=0", "`days` must be a whole number from 1"),
        ("since=2026-02-30", "`since` must be a day such as"),
        ("since=2999-01-01", "is in the future"),
        ("days=7&since=2026-01-01", "either `days` or `since`"),
        ("day=7", "unknown parameter `day`"),
    ] {
        for report in ["funnel", "sla"] {
            let (status, body) = app.get(&format!("/v1/reports/{report}?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"], "invalid_query", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains(says),
                "{query}: {body}"
            );
        }
    }
    let resp = app
        .client
        .get(format!("{}/v1/reports/funnel", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/v1/reports/sla").await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_both_reports_without_the_daemon() {
    let (app, _clock, _t0) = seeded().await;
    let dir = app.stop().await;

    let out = cli_in(dir.path(), &["report", "funnel"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let lines = squeezed(&shown);
    for line in [
        "subscriber 2",
        "sal 1",
        "subscriber lead 2",
        "subscriber 4 lead 2 50.0 %",
        "mql 1 25.0 %",
        "subscriber 2 1h 30m 1h 54m",
        "channel leads subscriber lead mql sal",
        "google 1 1 1 1 1",
    ] {
        assert!(lines.iter().any(|l| l == line), "no `{line}` in\n{shown}");
    }

    let out = cli_in(dir.path(), &["report", "funnel", "--json", "--days", "10"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["leads_created"], 4);

    let out = cli_in(dir.path(), &["report", "sla"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let lines = squeezed(&shown);
    for line in [
        "4 handoff(s); 2 missed a deadline (50.0 %)",
        "accepted 2",
        "wall-clock 2 4h 5h 36m",
        "business time 2 4h 5h 36m",
        "jonas 2 2 0 0 0 1h 30m",
        "mia 3 0 0 1 2 -",
        "Waiting for an answer now: 1 (1 overdue)",
    ] {
        assert!(lines.iter().any(|l| l == line), "no `{line}` in\n{shown}");
    }
    assert!(shown.contains("dave@delta.example"), "{shown}");
    assert!(shown.contains("OVERDUE by "), "{shown}");

    let out = cli_in(dir.path(), &["report", "sla", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["owners"][1]["breaches"], 2);

    let out = cli_in(dir.path(), &["report", "funnel", "--days", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("`days` must be a whole number"),
        "{}",
        text(&out)
    );
    let out = cli_in(dir.path(), &["report", "sla", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("YYYY-MM-DD"), "{}", text(&out));
}
