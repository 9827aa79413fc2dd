//! Who set each tag, when and why: a rule's file:line, an API key's name.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, text};
use crate::mail::download;

fn source_of<'a>(lead: &'a Value, tag: &str) -> &'a Value {
    lead["tag_sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == tag)
        .unwrap_or_else(|| panic!("no source for {tag}: {lead}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_show_and_the_api_say_who_set_each_tag() {
    let app = spawn_app().await;
    let email = "tags@kunde.example";
    app.post(
        "/v1/identify",
        &json!({"type": "identify", "userId": email, "messageId": "tag-0",
                "traits": {"email": email}}),
    )
    .await;
    app.post("/v1/track", &download(email, "cloud", "Cloud-Kosten"))
        .await;
    app.settle().await;
    // The matrix rule tags the lead `low-priority`.
    let funnel = std::fs::read_to_string(app.rules_dir().join("40-funnel.rhai")).unwrap();
    let line = funnel
        .lines()
        .position(|l| l.trim() == "lead.tag(t);")
        .unwrap()
        + 1;
    let lead = app.lead(email).await;
    assert_eq!(lead["tags"], json!(["low-priority"]), "{lead}");
    let rule = source_of(&lead, "low-priority");
    assert_eq!(rule["source"], format!("rules/40-funnel.rhai:{line}"));
    assert_eq!(rule["source_kind"], "rule");
    assert!(rule["since"].as_str().unwrap().starts_with("20"), "{rule}");
    assert!(
        rule["reason"]
            .as_str()
            .unwrap()
            .contains("Content Downloaded"),
        "{rule}"
    );

    // A tag set over the API names the key and keeps the reason.
    let (status, body) = app
        .post(
            &format!("/v1/leads/{email}/tags"),
            &json!({"add": ["fair-2026"], "reason": "met at the trade fair"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true, "{body}");
    let lead = app.lead(email).await;
    let api = source_of(&lead, "fair-2026");
    assert_eq!(api["source"], "api:api_token", "{api}");
    assert_eq!(api["reason"], "met at the trade fair", "{api}");
    // The same again changes nothing.
    let (_, body) = app
        .post(
            &format!("/v1/leads/{email}/tags"),
            &json!({"add": ["fair-2026"], "reason": "again"}),
        )
        .await;
    assert_eq!(body["changed"], false, "{body}");

    // `lead show --json` and the text page say the same.
    let out = app.cli(&["lead", "show", email, "--json"]);
    let shown: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(
        source_of(&shown, "low-priority")["source"],
        format!("rules/40-funnel.rhai:{line}")
    );
    assert_eq!(source_of(&shown, "fair-2026")["source"], "api:api_token");
    let out = app.cli(&["lead", "show", email]);
    let page = text(&out);
    assert!(page.contains("tag sources"), "{page}");
    assert!(
        page.contains("met at the trade fair  (api:api_token)"),
        "{page}"
    );

    // Taken away and set again by the API: the newest source counts.
    let (_, body) = app
        .post(
            &format!("/v1/leads/{email}/tags"),
            &json!({"remove": ["low-priority"], "reason": "checked by hand"}),
        )
        .await;
    assert_eq!(body["tags"], json!(["fair-2026"]), "{body}");
    let lead = app.lead(email).await;
    assert_eq!(lead["tag_sources"].as_array().unwrap().len(), 1, "{lead}");
    app.stop().await;
}
