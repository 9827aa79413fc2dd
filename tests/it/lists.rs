//! Lead lists in and out: `GET /v1/leads` and `nurtured lead list` (filters, cursor
//! paging, CSV), `nurtured import FILE.csv`, and `nurtured events export` read back by
//! `nurtured ingest` into a fresh database.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, cli_in, prepare_dir, spawn_app, text};

const COMPANY_0: &str = "=HYPERLINK(\"x\"), \"Söhne\"";

/// Twelve leads: owners, companies, titles and phones vary; the first five converted
/// (stage `lead` with a matrix tag, or `mql`), the trainees disqualified.
async fn twelve_leads(app: &TestApp) {
    let mut batch = Vec::new();
    for i in 0..12 {
        let email = format!("lead{i:02}@list.example");
        let company = if i == 0 {
            COMPANY_0.to_string()
        } else {
            format!("Firma {i}")
        };
        let mut traits = json!({
            "email": email, "firstName": format!("Person{i}"), "lastName": "Liste",
            "company": {"name": company, "employee_count": 100 * i},
            "title": if i % 2 == 0 { "Head of Marketing" } else { "Trainee" },
            "owner": if i % 3 == 0 { "sales-a" } else { "sales-b" },
        });
        if i % 4 == 0 {
            traits["phone"] = json!("+49 30 1234567");
        }
        batch.push(json!({"type": "identify", "messageId": format!("l-{i}"), "traits": traits}));
        if i < 5 {
            for n in 0..=i {
                batch.push(json!({"type": "track", "messageId": format!("l-{i}-{n}"),
                    "userId": email, "event": "Content Downloaded",
                    "properties": {"type": "whitepaper", "asset": format!("Paper {n}")}}));
            }
        }
    }
    let (status, body) = app.post("/v1/batch", &json!({ "batch": batch })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
}

async fn get_text(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// Every lead's full record, by e-mail (from `GET /v1/leads/{email}`).
async fn all_leads(app: &TestApp, emails: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in emails {
        out.insert(e.clone(), app.lead(e).await);
    }
    out
}

/// Walks every page of `query` with `limit`; returns the e-mails in order.
async fn walk(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let (status, body) = app
            .get(&format!("/v1/leads?{query}&limit={limit}&cursor={cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let leads = body["leads"].as_array().unwrap();
        assert!(leads.len() <= limit, "{body}");
        out.extend(
            leads
                .iter()
                .map(|l| l["email"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return out,
        }
    }
    panic!("more than 100 pages");
}

fn expected(leads: &BTreeMap<String, Value>, keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    leads
        .iter()
        .filter(|(_, l)| keep(l))
        .map(|(e, _)| e.clone())
        .collect()
}

fn set(emails: &[String]) -> BTreeSet<String> {
    let s: BTreeSet<String> = emails.iter().cloned().collect();
    assert_eq!(s.len(), emails.len(), "a lead listed twice: {emails:?}");
    s
}

#[tokio::test]
async fn lead_lists_filter_page_and_export_csv() {
    let app = spawn_app().await;
    twelve_leads(&app).await;
    let emails: Vec<String> = (0..12)
        .map(|i| format!("lead{i:02}@list.example"))
        .collect();
    let leads = all_leads(&app, &emails).await;

    // Every filter lists exactly the leads that the lead records say pass it.
    let tag = leads["lead00@list.example"]["tags"][0]
        .as_str()
        .expect("a converted lead has a matrix tag")
        .to_string();
    let fit_of = |l: &Value| l["fit"].as_f64().unwrap();
    let interest_of = |l: &Value| l["interest"].as_f64().unwrap();
    let has_tag = |l: &Value, t: &str| l["tags"].as_array().unwrap().iter().any(|x| x == t);
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (
            "stage=lead".into(),
            expected(&leads, |l| l["stage"] == "lead"),
        ),
        (
            "stage=subscriber".into(),
            expected(&leads, |l| l["stage"] == "subscriber"),
        ),
        (format!("tag={tag}"), expected(&leads, |l| has_tag(l, &tag))),
        ("min_fit=20".into(), expected(&leads, |l| fit_of(l) >= 20.0)),
        (
            "min_interest=10".into(),
            expected(&leads, |l| interest_of(l) >= 10.0),
        ),
        (
            "owner=sales-a".into(),
            expected(&leads, |l| l["owner"] == "sales-a"),
        ),
        // Name, company and address, case-insensitively: "Firma 1", "Firma 10", "Firma 11".
        (
            "q=FIRMA%201".into(),
            expected(&leads, |l| {
                l["company"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains("firma 1")
            }),
        ),
        (
            "q=person3".into(),
            expected(&leads, |l| l["first_name"] == "Person3"),
        ),
        (
            "q=lead07%40".into(),
            BTreeSet::from(["lead07@list.example".to_string()]),
        ),
        (
            "stage=lead&min_fit=20&owner=sales-a".into(),
            expected(&leads, |l| {
                l["stage"] == "lead" && fit_of(l) >= 20.0 && l["owner"] == "sales-a"
            }),
        ),
    ];
    for (query, want) in &cases {
        let got = set(&walk(&app, query, 1000).await);
        assert_eq!(&got, want, "GET /v1/leads?{query}");
    }
    // The filters are not vacuous: each keeps some leads and leaves out others.
    for (query, want) in &cases[..8] {
        assert!(!want.is_empty() && want.len() < 12, "{query}: {want:?}");
    }
    assert_eq!(cases[6].1.len(), 3, "Firma 1, 10 and 11");

    // Cursor paging: pages of 5 over 12 leads, and a lead added between pages; no lead
    // twice, none left out, in id order.
    let (status, first) = app.get("/v1/leads?limit=5").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let mut paged: Vec<String> = first["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paged.len(), 5);
    let (status, body) = app
        .post(
            "/v1/identify",
            &json!({"messageId": "late", "traits": {"email": "late@list.example"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let (_, body) = app.get(&format!("/v1/leads?limit=5&cursor={cursor}")).await;
        paged.extend(
            body["leads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["email"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let mut all = emails.clone();
    all.push("late@list.example".into());
    assert_eq!(set(&paged), set(&all), "every lead once");
    assert_eq!(
        paged.last().unwrap(),
        "late@list.example",
        "in the order they came"
    );

    // CSV over the API: header, quoting, a formula made harmless, the cursor in a header.
    let (status, headers, csv_text) = get_text(&app, "/v1/leads?format=csv&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{csv_text}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(headers.contains_key("x-next-cursor"), "{headers:?}");
    let mut lines = csv_text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "email,first_name,last_name,company,title,stage,fit,interest,tags,owner,created_at,updated_at"
    );
    assert!(
        lines.next().unwrap().starts_with(
            "lead00@list.example,Person0,Liste,\"'=HYPERLINK(\"\"x\"\"), \"\"Söhne\"\"\",Head of Marketing,lead,"
        ),
        "{csv_text}"
    );
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][3], format!("'{COMPANY_0}"));
    let accept_csv = app
        .client
        .get(format!("{}/v1/leads?owner=sales-a", app.base))
        .bearer_auth(TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        accept_csv.lines().count(),
        1 + cases[5].1.len(),
        "{accept_csv}"
    );

    // A bad parameter is refused, named.
    for (query, param) in [
        ("min_fit=ten", "min_fit"),
        ("stage=nope", "stage"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = app.get(&format!("/v1/leads?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["details"][0]["path"], param, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().contains(param), "{body}");
    }

    // The command line: the same leads, every page, as CSV and JSON.
    let out = app.cli(&["lead", "list", "--stage", "lead", "--csv"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(reader.headers().unwrap().len(), 12);
    let listed: BTreeSet<String> = reader
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(listed, cases[0].1);
    let out = app.cli(&["lead", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 13, "{json}");
    let out = app.cli(&["lead", "list", "--limit", "3", "--q", "list.example"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = app.cli(&["lead", "list", "--min-fit", "ten"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--min-fit"), "{}", text(&out));

    // A read-only command: it lists while a rule file does not compile.
    std::fs::write(
        app.rules_dir().join("55-broken.rhai"),
        "fn on_event(lead, event) {",
    )
    .unwrap();
    let out = app.cli(&["lead", "list", "--owner", "sales-a"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        cases[5].1.len(),
        "{}",
        text(&out)
    );
    let out = app.cli(&["events", "export", "--lead", "lead03@list.example"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5,
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn a_stage_filter_reads_the_stage_index() {
    if nurtured::store::testing::postgres_server().is_some() {
        // PostgreSQL's planner scans a table this small whatever the indexes; the plan
        // over 200,000 leads is in docs/performance.md.
        return;
    }
    let app = spawn_app().await;
    let store = nurtured::store::Store::open(
        &nurtured::config::Config::load_with_env(
            Some(&app.dir.path().join("nurtured.toml")),
            Vec::new(),
        )
        .unwrap()
        .database_url,
    )
    .await
    .unwrap();
    let filter = nurtured::store::LeadFilter {
        stage: Some("mql".into()),
        ..Default::default()
    };
    let plan = store.explain_list_leads(&filter).await.unwrap();
    assert!(plan.contains("leads_stage"), "{plan}");
    store.close().await;
}

const MAP: &str = "E-Mail=email,Vorname=first_name,Nachname=last_name,Firma=company,\
                   Mitarbeiter=employees,Messe=attributes.fair";

#[tokio::test]
async fn a_csv_list_becomes_leads_and_bad_rows_are_named() {
    let app = spawn_app().await;
    let dir = app.dir.path();
    std::fs::write(
        dir.join("leads.csv"),
        "E-Mail;Vorname;Nachname;Firma;Mitarbeiter;Messe\n\
         anna@fair.example;Anna;Schmidt;ACME GmbH;200;Hannover\n\
         bad-address;Bob;X;Foo;10;Hannover\n\
         carl@fair.example;Carl;Y;\"Bar; Baz\";zwölf;Hannover\n\
         dora@fair.example;Dora;Z;\"Qux \"\"AG\"\"\";50;Hannover\n\
         Anna@Fair.example;Anna;S;ACME;200;Hannover\n",
    )
    .unwrap();
    let out = app.cli(&[
        "import",
        "leads.csv",
        "--map",
        MAP,
        "--consent-source",
        "Messe Hannover 2026",
    ]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(3), "{report}");
    assert!(
        report.contains("leads.csv:3: refused: bad address"),
        "{report}"
    );
    assert!(
        report.contains("leads.csv:4: refused: bad number in column `Mitarbeiter`"),
        "{report}"
    );
    assert!(
        report.contains("leads.csv:6: refused: duplicate row"),
        "{report}"
    );
    assert!(report.contains("line 2"), "{report}");
    assert!(
        report.contains("taken 2 row(s): 2 new event(s)"),
        "{report}"
    );
    app.settle().await;
    let anna = app.lead("anna@fair.example").await;
    assert_eq!(anna["company"], "ACME GmbH", "{anna}");
    assert_eq!(anna["employees"], 200, "{anna}");
    assert_eq!(anna["attributes"]["fair"], "Hannover", "{anna}");
    assert_eq!(anna["consent_email"]["granted"], true, "{anna}");
    assert_eq!(
        anna["consent_email"]["source"], "Messe Hannover 2026",
        "{anna}"
    );
    assert_eq!(app.lead("dora@fair.example").await["company"], "Qux \"AG\"");
    let (status, _) = app.get("/v1/leads/carl@fair.example").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let received = app.stats().await["events_received"].clone();

    // The same file again: nothing new.
    let out = app.cli(&[
        "import",
        "leads.csv",
        "--map",
        MAP,
        "--consent-source",
        "Messe Hannover 2026",
    ]);
    assert!(
        text(&out).contains("0 new event(s) (0 new lead(s)), 2 imported before"),
        "{}",
        text(&out)
    );
    assert_eq!(app.settle().await["events_received"], received);

    // A mapped column the file lacks, or an unknown field: nothing at all is imported.
    std::fs::write(
        dir.join("more.csv"),
        "E-Mail,Firma\nerik@fair.example,Erik AG\n",
    )
    .unwrap();
    let out = app.cli(&[
        "import",
        "more.csv",
        "--map",
        "E-Mail=email,Firma=company,Telefon=phone",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no column `Telefon`"), "{}", text(&out));
    assert!(
        text(&out).contains("nothing was imported"),
        "{}",
        text(&out)
    );
    let out = app.cli(&["import", "more.csv", "--map", "E-Mail=email,Firma=firma"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("`firma`"), "{}", text(&out));
    let (status, _) = app.get("/v1/leads/erik@fair.example").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Without --consent-source consent stays as it was; --history marks the events.
    let out = app.cli(&[
        "import",
        "more.csv",
        "--map",
        "E-Mail=email,Firma=company",
        "--history",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    app.settle().await;
    let erik = app.lead("erik@fair.example").await;
    assert_eq!(erik["consent_email"]["granted"], false, "{erik}");
    assert_eq!(erik["recent_activity"][0]["history"], true, "{erik}");
}

#[tokio::test]
async fn an_export_ingested_into_a_fresh_database_gives_the_same_events_per_lead() {
    let app = spawn_app().await;
    let (status, body) = app.post_journey("anna.schmidt@acme.example").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "messageId": "b-1", "traits": {"email": "ben@beta.example", "name": "Ben Beta"},
                 "context": {"campaign": {"source": "fair"}}},
                {"type": "track", "messageId": "b-2", "userId": "ben@beta.example", "event": "Webinar Registered",
                 "properties": {"webinar": "Scoring", "n": 2}, "timestamp": "2026-01-05T10:00:00Z"},
                {"type": "page", "messageId": "b-3", "context": {"traits": {"email": "ben@beta.example"}},
                 "name": "Pricing", "properties": {"url": "https://x.example/pricing?a=1"}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;

    let out = app.cli(&["events", "export", "--out", "history.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let exported = std::fs::read_to_string(app.dir.path().join("history.jsonl")).unwrap();
    assert_eq!(exported.lines().count(), 8, "{exported}");
    for line in exported.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for key in ["type", "messageId", "userId", "timestamp", "properties"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
    }
    let one = app.cli(&[
        "events",
        "export",
        "--lead",
        "ben@beta.example",
        "--until",
        "2026-02-01",
    ]);
    assert!(one.status.success(), "{}", text(&one));
    let only: Vec<Value> = String::from_utf8_lossy(&one.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["messageId"], "b-2");
    let none = app.cli(&["events", "export", "--since", "2999-01-01"]);
    assert_eq!(String::from_utf8_lossy(&none.stdout).lines().count(), 0);

    // Into a fresh database through `nurtured ingest`, and out again.
    let fresh = prepare_dir();
    std::fs::copy(
        app.dir.path().join("history.jsonl"),
        fresh.path().join("history.jsonl"),
    )
    .unwrap();
    let out = cli_in(fresh.path(), &["ingest", "history.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stored 8 event(s)"), "{}", text(&out));
    let again = cli_in(fresh.path(), &["events", "export"]);
    assert!(again.status.success(), "{}", text(&again));
    let per_lead = |jsonl: &str| {
        let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in jsonl.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let lead = v["traits"]["email"]
                .as_str()
                .or(v["context"]["traits"]["email"].as_str())
                .or(v["userId"].as_str())
                .unwrap()
                .to_string();
            by.entry(lead).or_default().push(v);
        }
        by
    };
    let before = per_lead(&exported);
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before, per_lead(&String::from_utf8_lossy(&again.stdout)));
    // The fresh database reaches the same lead: stage, scores, tags.
    for email in ["anna.schmidt@acme.example", "ben@beta.example"] {
        let live = app.lead(email).await;
        let out = cli_in(fresh.path(), &["lead", "show", email, "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let copy: Value = serde_json::from_slice(&out.stdout).unwrap();
        for field in ["stage", "fit", "interest", "tags", "external_id"] {
            assert_eq!(live[field], copy[field], "{email}: {field}");
        }
    }
    // Ingesting the export into its own database adds nothing.
    let out = app.cli(&["ingest", "history.jsonl"]);
    assert!(
        text(&out).contains("stored 0 event(s), skipped 8"),
        "{}",
        text(&out)
    );
}
