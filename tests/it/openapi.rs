//! The OpenAPI document against the live daemon: its operations are exactly the routes
//! the router serves (read from the router's source, `src/http/mod.rs`), and every
//! operation, called over HTTP, answers with a status the document declares and a body
//! that the declared schema accepts; refused keys and malformed bodies too.

use std::collections::{BTreeMap, BTreeSet};

use nurtured::mail::token::Claim;
use nurtured::mail::{Purpose, Signer};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, mql_journey, prepare_dir, spawn_in};

/// A key with the `read` scope only.
const READER: &str = "reader-key-0123456789";

/// `(method, path)` of every route `http::router` serves, from its source: the
/// `.route(PATH, get(..).post(..))` calls of each `let NAME = Router::new()` group and
/// of the final router, each group under the prefix it is nested or merged at.
fn served_routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs"),
    )
    .unwrap();
    let start = source
        .find("pub fn router(")
        .expect("http::router in src/http/mod.rs");
    let body = &source[start..];
    for unread in [".route_service(", ".nest_service(", ".fallback("] {
        assert!(
            !body.contains(unread),
            "http::router uses `{unread}`, which this test cannot read: teach \
             `served_routes` its paths"
        );
    }
    // The groups, `let NAME = Router::new() ... ;`, and the router returned at the end.
    let mut groups: BTreeMap<String, &str> = BTreeMap::new();
    let mut rest = body;
    while let Some(at) = rest.find("let ") {
        let after = &rest[at + 4..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let decl = after[name.len()..].trim_start();
        let end = statement_end(after);
        if decl.starts_with("= Router::new()") {
            groups.insert(name, &after[..end]);
        }
        rest = &after[end..];
    }
    let last = rest;
    assert!(
        last.contains("Router::new()"),
        "the router returned at the end of http::router"
    );
    // Where each group is mounted: `.nest("/v1", v1)` or merged into another group.
    let mut prefix: BTreeMap<String, String> = BTreeMap::new();
    for name in groups.keys() {
        if let Some(p) = nest_prefix(last, name) {
            prefix.insert(name.clone(), p);
        } else if mentions(last, name) {
            prefix.insert(name.clone(), String::new());
        }
    }
    for _ in 0..groups.len() {
        for (name, text) in &groups {
            for other in groups.keys() {
                if other != name
                    && mentions(text, other)
                    && let Some(p) = prefix.get(name).cloned()
                {
                    prefix.entry(other.clone()).or_insert(p);
                }
            }
        }
    }
    let mut routes = BTreeSet::new();
    let mut add = |text: &str, prefix: &str| {
        for (method, path) in route_calls(text) {
            routes.insert((method, format!("{prefix}{path}")));
        }
    };
    for (name, text) in &groups {
        if text.contains(".route(") {
            let p = prefix
                .get(name)
                .unwrap_or_else(|| panic!("the routes of `{name}` are mounted nowhere"));
            add(text, p);
        }
    }
    add(last, "");
    assert!(routes.len() > 30, "{routes:?}");
    routes
}

/// The byte offset of the `;` that ends the statement starting `text` (outside
/// brackets and string literals).
fn statement_end(text: &str) -> usize {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '(' | '[' | '{' if !in_str => depth += 1,
            ')' | ']' | '}' if !in_str => depth -= 1,
            ';' if !in_str && depth == 0 => return i,
            _ => {}
        }
        prev = c;
    }
    text.len()
}

fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

fn nest_prefix(text: &str, name: &str) -> Option<String> {
    text.match_indices(".nest(\"").find_map(|(i, m)| {
        let args = &text[i + m.len()..];
        let (path, tail) = args.split_once('"')?;
        let arg = tail.trim_start_matches([',', ' ', '\n']);
        let ident: String = arg
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        (ident == name).then(|| path.to_string())
    })
}

/// `(method, path)` of the `.route("PATH", ...)` calls in `text`.
fn route_calls(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, m) in text.match_indices(".route(") {
        let args = &text[i + m.len()..];
        let args = &args[..statement_end_paren(args)];
        let first = args.trim_start();
        let path = first
            .strip_prefix('"')
            .and_then(|p| p.split_once('"'))
            .map(|(p, _)| p.to_string())
            .unwrap_or_else(|| panic!("a route whose path is not a literal: {args}"));
        let handlers = &first[path.len() + 2..];
        let mut found = false;
        for method in ["get", "post", "put", "patch", "delete"] {
            for (j, _) in handlers.match_indices(&format!("{method}(")) {
                let before = handlers[..j].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    out.push((method.to_string(), path.clone()));
                    found = true;
                }
            }
        }
        assert!(found, "no method found in the route {path}: {handlers}");
    }
    out
}

/// The offset of the `)` that closes the call whose arguments start `text`.
fn statement_end_paren(text: &str) -> usize {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return i,
            ')' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

/// `(method, path)` of every operation of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

/// One request: the operation it exercises and what it should answer.
struct Call {
    method: &'static str,
    /// The document's path template.
    template: &'static str,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    key: Option<&'static str>,
    expect: u16,
}

fn call(method: &'static str, template: &'static str, path: impl Into<String>) -> Call {
    Call {
        method,
        template,
        path: path.into(),
        body: None,
        key: Some(TOKEN),
        expect: 200,
    }
}

impl Call {
    fn json(mut self, body: &Value) -> Self {
        self.body = Some(("application/json", serde_json::to_vec(body).unwrap()));
        self
    }
    fn raw(mut self, content_type: &'static str, body: &str) -> Self {
        self.body = Some((content_type, body.as_bytes().to_vec()));
        self
    }
    fn key(mut self, key: Option<&'static str>) -> Self {
        self.key = key;
        self
    }
    fn expect(mut self, status: u16) -> Self {
        self.expect = status;
        self
    }
}

/// Sends `c` and checks its answer against the document; returns the JSON body (null
/// when it is not JSON).
async fn check(app: &TestApp, client: &reqwest::Client, doc: &Value, c: &Call) -> Value {
    let url = format!("{}{}", app.base, c.path);
    let mut req = client.request(c.method.to_uppercase().parse().unwrap(), &url);
    if let Some(key) = c.key {
        req = req.bearer_auth(key);
    }
    if let Some((content_type, body)) = &c.body {
        req = req.header(CONTENT_TYPE, *content_type).body(body.clone());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
    let bytes = res.bytes().await.unwrap();
    let what = format!("{} {} ({})", c.method.to_uppercase(), c.path, c.template);
    assert_eq!(
        status,
        c.expect,
        "{what}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let op = &doc["paths"][c.template][c.method];
    assert!(op.is_object(), "{what}: not in the document");
    let declared = &op["responses"][status.to_string()];
    assert!(
        declared.is_object(),
        "{what}: status {status} is not declared; declared: {:?}",
        op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    let Some(content) = declared["content"].as_object() else {
        assert!(bytes.is_empty(), "{what}: a body where none is declared");
        return Value::Null;
    };
    let content_type = content_type.unwrap_or_else(|| panic!("{what}: no Content-Type"));
    let media = content.get(&content_type).unwrap_or_else(|| {
        panic!(
            "{what}: Content-Type {content_type} is not declared for {status}: {:?}",
            content.keys().collect::<Vec<_>>()
        )
    });
    if content_type != "application/json" {
        return Value::Null;
    }
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e})"));
    validate(doc, &media["schema"], &body, &what);
    body
}

/// Validates `instance` against `schema`, whose `$ref`s point into the document's
/// `#/components/schemas`.
fn validate(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let mut schema = schema.clone();
    assert!(schema.is_object(), "{what}: no schema");
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the body does not match the document:\n{}\n{instance:#}",
        errors.join("\n")
    );
}

/// A link as the daemon signs it; `mail` is the mail's id, or the handoff's.
fn token(signer: &Signer, purpose: Purpose, lead: i64, email: &str, mail: i64) -> String {
    signer.sign(&Claim {
        purpose,
        lead,
        to: signer.address(email),
        mail: Some(mail),
        url: (purpose == Purpose::Click).then(|| "https://example.com/pricing".to_string()),
        expires: None,
        round: Some(1),
        topic: None,
        key: 0,
    })
}

async fn spawn() -> TestApp {
    let dir = prepare_dir();
    let path = dir.path().join("nurtured.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[api_keys]]\nname = \"dashboard\"\nkey = \"{READER}\"\nscopes = [\"read\"]\n"
    ));
    std::fs::write(&path, text).unwrap();
    spawn_in(dir).await
}

#[tokio::test]
async fn the_document_lists_every_route_and_the_live_api_keeps_to_it() {
    let app = spawn().await;
    // Links answer with redirects that the test reads rather than follows.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The document is public and OpenAPI 3.1.
    let res = client
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    // (a) Its operations are the router's routes, no more and no fewer.
    let served = served_routes();
    let ops = documented(&doc);
    let undocumented: Vec<_> = served.difference(&ops).collect();
    let unserved: Vec<_> = ops.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes missing in the document: {undocumented:?}; documented but not served: \
         {unserved:?}"
    );
    // Every operation of a `/v1` route but the document itself, and `/metrics`, names
    // the key schemes.
    for (method, path) in &ops {
        let security = &doc["paths"][path][method]["security"];
        if (path.starts_with("/v1/") && path != "/v1/openapi.json") || path == "/metrics" {
            let names: Vec<_> = security
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path}: no security"))
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys().cloned())
                .collect();
            assert_eq!(names, ["bearer", "basic"], "{method} {path}");
        } else {
            assert!(security.is_null(), "{method} {path}: {security}");
        }
    }

    // Data for the calls: two leads with a journey to a handoff (one answered by its
    // link, one over the API), one to erase, one for the links in mails.
    let email = "oa-anna@example.com";
    let crm = "oa-cem@example.com";
    for (lead, company) in [(email, "ACME GmbH"), (crm, "Beta AG")] {
        let journey: Vec<Value> = mql_journey(lead)
            .into_iter()
            .map(|mut e| {
                e["userId"] = json!(lead);
                e["messageId"] = json!(format!("{lead}-{}", e["messageId"].as_str().unwrap()));
                if e["traits"]["company"].is_object() {
                    e["traits"]["company"]["name"] = json!(company);
                }
                e
            })
            .collect();
        let (status, body) = app.post("/v1/batch", &json!({ "batch": journey })).await;
        assert_eq!(status, 200, "{body}");
    }
    for other in ["oa-erase@example.com", "oa-links@example.com"] {
        let (status, body) = app
            .post(
                "/v1/identify",
                &json!({"userId": other, "traits": {"email": other, "first_name": "Bo"}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.settle().await;
    let links_lead = app.lead("oa-links@example.com").await["id"]
        .as_i64()
        .unwrap();
    let signer = Signer::new(nurtured::config::raw::DEV_SECRET);
    let t = |p| token(&signer, p, links_lead, "oa-links@example.com", 1);
    let (_, mails) = app.get("/v1/mails").await;
    let mail = &mails["mails"][0];
    let mail_id = mail["id"].as_i64().expect("the journey queues a mail");
    let retry_answer = if mail["status"] == "failed" { 200 } else { 409 };
    let (_, handoffs) = app.get("/v1/handoffs?state=open").await;
    let handoff_of = |lead: &str| {
        let h = handoffs["handoffs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["email"] == lead)
            .unwrap_or_else(|| panic!("a handoff for {lead}: {handoffs}"));
        (h["id"].as_i64().unwrap(), h["lead_id"].as_i64().unwrap())
    };
    let (link_handoff, link_lead) = handoff_of(email);
    let (api_handoff, _) = handoff_of(crm);
    let h = |p| token(&signer, p, link_lead, email, link_handoff);

    let event = json!({"userId": email, "event": "Pricing Viewed", "properties": {"plan": "pro"}});
    let calls = vec![
        call("get", "/v1/openapi.json", "/v1/openapi.json").key(None),
        call("post", "/v1/identify", "/v1/identify")
            .json(&json!({"userId": email, "traits": {"email": email, "company": "ACME"}})),
        call("post", "/v1/track", "/v1/track").json(&event),
        call("post", "/v1/page", "/v1/page").json(&json!({"userId": email, "name": "Pricing"})),
        call("post", "/v1/screen", "/v1/screen").json(&json!({"userId": email, "name": "Home"})),
        call("post", "/v1/alias", "/v1/alias")
            .json(&json!({"userId": email, "previousId": "anon-oa-1"})),
        call("post", "/v1/group", "/v1/group")
            .json(&json!({"userId": email, "groupId": "acme", "traits": {"name": "ACME"}})),
        call("post", "/v1/batch", "/v1/batch").json(&json!({"batch": [
            {"type": "track", "userId": email, "event": "Webinar Attended"},
        ]})),
        call("post", "/v1/import", "/v1/import").json(&json!({"history": true, "batch": [
            {"type": "track", "userId": email, "event": "Whitepaper Downloaded",
             "timestamp": "2026-01-05T10:00:00Z"},
        ]})),
        call("get", "/v1/health", "/v1/health"),
        call("get", "/healthz", "/healthz").key(None),
        call("get", "/readyz", "/readyz").key(None),
        call("get", "/metrics", "/metrics"),
        call("get", "/metrics", "/metrics").key(None).expect(401),
        call("get", "/v1/stats", "/v1/stats"),
        call("get", "/v1/stats/queue", "/v1/stats/queue"),
        call("get", "/v1/leads", "/v1/leads?limit=5"),
        call("get", "/v1/leads/{email}", format!("/v1/leads/{email}")),
        // (A stage move to `sal` would accept the lead's open handoff.)
        call(
            "post",
            "/v1/leads/{email}/stage",
            "/v1/leads/oa-links@example.com/stage",
        )
        .json(&json!({"stage": "lead", "reason": "qualified on the phone"})),
        call(
            "post",
            "/v1/leads/{email}/tags",
            format!("/v1/leads/{email}/tags"),
        )
        .json(&json!({"add": ["fair-2026"], "reason": "met at the fair"})),
        call(
            "get",
            "/v1/leads/{email}/export",
            format!("/v1/leads/{email}/export"),
        ),
        call(
            "delete",
            "/v1/leads/{email}",
            "/v1/leads/oa-erase@example.com",
        )
        .json(&json!({"reason": "request of the person", "by": "dpo"})),
        call("get", "/v1/mails", "/v1/mails?limit=10"),
        call("get", "/v1/handoffs", "/v1/handoffs?state=open"),
        call(
            "get",
            "/v1/handoffs/{id}",
            format!("/v1/handoffs/{api_handoff}"),
        ),
        call(
            "post",
            "/v1/handoffs/{id}/accept",
            format!("/v1/handoffs/{api_handoff}/accept"),
        )
        .json(&json!({"by": "cem"})),
        // Answered already.
        call(
            "post",
            "/v1/handoffs/{id}/reject",
            format!("/v1/handoffs/{api_handoff}/reject"),
        )
        .json(&json!({"reason": "no budget"}))
        .expect(409),
        call("get", "/v1/mails/{id}", format!("/v1/mails/{mail_id}")),
        call(
            "post",
            "/v1/mails/{id}/retry",
            format!("/v1/mails/{mail_id}/retry"),
        )
        .expect(retry_answer),
        call("get", "/v1/reports/funnel", "/v1/reports/funnel?days=7"),
        call("get", "/v1/reports/sla", "/v1/reports/sla?since=2026-01-01"),
        call("get", "/v1/bounces", format!("/v1/bounces?email={email}")),
        call("post", "/v1/bounces", "/v1/bounces")
            .raw(
                "message/rfc822",
                "Subject: hello\r\nFrom: a@example.com\r\n\r\nJust a mail.\r\n",
            )
            .expect(422),
        call(
            "get",
            "/u/{token}",
            format!("/u/{}", t(Purpose::Unsubscribe)),
        )
        .key(None),
        call(
            "get",
            "/p/{token}",
            format!("/p/{}", t(Purpose::Preferences)),
        )
        .key(None),
        call(
            "post",
            "/p/{token}",
            format!("/p/{}", t(Purpose::Preferences)),
        )
        .raw("application/x-www-form-urlencoded", "keep=product")
        .key(None),
        call(
            "get",
            "/confirm/{token}",
            format!("/confirm/{}", t(Purpose::Confirm)),
        )
        .key(None),
        call(
            "post",
            "/confirm/{token}",
            format!("/confirm/{}", t(Purpose::Confirm)),
        )
        .key(None),
        call(
            "post",
            "/u/{token}",
            format!("/u/{}", t(Purpose::Unsubscribe)),
        )
        .raw(
            "application/x-www-form-urlencoded",
            "List-Unsubscribe=One-Click",
        )
        .key(None),
        call("get", "/o/{token}", format!("/o/{}", t(Purpose::Open))).key(None),
        call("get", "/c/{token}", format!("/c/{}", t(Purpose::Click)))
            .key(None)
            .expect(303),
        // The links of a handoff notification: the page, then the rejection.
        call("get", "/h/{token}", format!("/h/{}", h(Purpose::Accept))).key(None),
        call("post", "/h/{token}", format!("/h/{}", h(Purpose::Reject)))
            .raw(
                "application/x-www-form-urlencoded",
                "reason=no+budget+this+year",
            )
            .key(None),
        // Providers without configuration.
        call("post", "/hooks/ses", "/hooks/ses")
            .raw("text/plain", "{}")
            .key(None)
            .expect(404),
        call("post", "/hooks/postmark", "/hooks/postmark")
            .json(&json!({"RecordType": "Bounce"}))
            .key(None)
            .expect(404),
        call("post", "/hooks/mailgun", "/hooks/mailgun")
            .json(&json!({"signature": {}}))
            .key(None)
            .expect(404),
        call("post", "/hooks/sendgrid", "/hooks/sendgrid")
            .json(&json!([]))
            .key(None)
            .expect(404),
    ];
    // (b) Every operation is called, and answers as documented.
    let called: BTreeSet<(String, String)> = calls
        .iter()
        .map(|c| (c.method.to_string(), c.template.to_string()))
        .collect();
    let uncalled: Vec<_> = ops.difference(&called).collect();
    assert!(
        uncalled.is_empty(),
        "operations no call exercises: {uncalled:?}"
    );
    for c in &calls {
        check(&app, &client, &doc, c).await;
    }

    // Refused keys: none, a wrong one, and one without the route's scope.
    for c in calls.iter().filter(|c| c.key.is_some()) {
        let bare = Call {
            key: None,
            expect: 401,
            body: c.body.clone(),
            path: c.path.clone(),
            ..*c
        };
        let body = check(&app, &client, &doc, &bare).await;
        assert_eq!(body["error"], "unauthorized", "{body}");
        let wrong = Call {
            key: Some("not-the-key-0123456789"),
            ..bare
        };
        check(&app, &client, &doc, &wrong).await;
    }
    // The key as HTTP Basic user name (the `basic` scheme), as Segment's SDKs send it.
    let res = client
        .get(format!("{}/v1/stats/queue", app.base))
        .basic_auth(TOKEN, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let forbidden = call(
        "post",
        "/v1/leads/{email}/tags",
        format!("/v1/leads/{email}/tags"),
    )
    .json(&json!({"add": ["x"], "reason": "r"}))
    .key(Some(READER))
    .expect(403);
    let body = check(&app, &client, &doc, &forbidden).await;
    assert_eq!(body["error"], "forbidden", "{body}");

    // Malformed bodies and parameters: 400 with the problems, as documented.
    let malformed = [
        call("post", "/v1/identify", "/v1/identify").raw("application/json", "{\"userId\": "),
        call("post", "/v1/track", "/v1/track").json(&json!({"userId": email})),
        call("post", "/v1/batch", "/v1/batch").json(&json!({"batch": [{"type": "nope"}]})),
        call(
            "post",
            "/v1/leads/{email}/stage",
            format!("/v1/leads/{email}/stage"),
        )
        .json(&json!({"stag": "sal"})),
        call(
            "post",
            "/v1/leads/{email}/stage",
            format!("/v1/leads/{email}/stage"),
        )
        .json(&json!({"stage": "no-such-stage", "reason": "x"})),
        call("get", "/v1/leads/{email}", "/v1/leads/not-an-address"),
        call("get", "/v1/leads", "/v1/leads?min_fit=lots"),
        call("get", "/v1/reports/funnel", "/v1/reports/funnel?days=0"),
        call("get", "/v1/handoffs", "/v1/handoffs?state=sleeping"),
    ];
    for c in malformed {
        let body = check(&app, &client, &doc, &c.expect(400)).await;
        assert!(body["message"].is_string(), "{body}");
    }
    // Parameters of the wrong type, refused by the extractors with a line of text.
    let mistyped = [
        call("get", "/v1/mails", "/v1/mails?limit=lots"),
        call("get", "/v1/mails/{id}", "/v1/mails/first"),
        call("post", "/v1/mails/{id}/retry", "/v1/mails/first/retry"),
        call("get", "/v1/handoffs", "/v1/handoffs?limit=lots"),
        call("get", "/v1/handoffs/{id}", "/v1/handoffs/first"),
        call(
            "post",
            "/v1/handoffs/{id}/accept",
            "/v1/handoffs/first/accept",
        ),
        call(
            "post",
            "/v1/handoffs/{id}/reject",
            "/v1/handoffs/first/reject",
        ),
        call("get", "/v1/bounces", "/v1/bounces?limit=lots"),
        call(
            "delete",
            "/v1/leads/{email}",
            format!("/v1/leads/{email}?why=x"),
        ),
    ];
    for c in mistyped {
        check(&app, &client, &doc, &c.expect(400)).await;
    }
    let missing = [
        call("get", "/v1/leads/{email}", "/v1/leads/nobody@example.com"),
        call("get", "/v1/handoffs/{id}", "/v1/handoffs/999999"),
        call("post", "/v1/mails/{id}/retry", "/v1/mails/999999/retry"),
        call("get", "/h/{token}", format!("/h/{}", t(Purpose::Accept))).key(None),
    ];
    for c in missing {
        check(&app, &client, &doc, &c.expect(404)).await;
    }
    // The lead's page after all this: its mails and both handoffs as documented.
    let c = call("get", "/v1/leads/{email}", format!("/v1/leads/{email}"));
    let lead = check(&app, &client, &doc, &c).await;
    assert_eq!(lead["handoffs"][0]["state"], "rejected", "{lead}");
}
