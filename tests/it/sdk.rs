//! The real tracking SDKs against a daemon on loopback: Segment's
//! (segment-analytics-python 2.4.0) and RudderStack's (rudder-sdk-python 2.1.9, which
//! gzips its batches) send identify, track, page, screen, anonymous events, alias and
//! group (`tests/sdk/send.py`); the lead shows them. The SDKs live in a virtual
//! environment: `NURTURED_TEST_PYTHON` names its python (`scripts/test` sets it), else
//! `scripts/pyenv` creates `target/pyenv` from PyPI. Without Python or PyPI the test
//! fails and says why; it is never skipped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TOKEN, TestApp, spawn_app};

const PYTHON_ENV: &str = "NURTURED_TEST_PYTHON";

/// The python of the environment with both SDKs, created once per test run.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
                return PathBuf::from(p);
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pyenv");
            let out = std::process::Command::new(&script)
                .output()
                .unwrap_or_else(|e| panic!("{} cannot run: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed (it installs the SDKs from PyPI; set {PYTHON_ENV} to a python \
                 that has them instead):\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Runs `tests/sdk/send.py` with one SDK against the app.
async fn send(app: &TestApp, sdk: &str, tag: &str, extra: &[&str]) -> String {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/send.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([sdk, &app.base, TOKEN, tag])
        .args(extra)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} cannot run: {e}", python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{sdk}: {text}");
    text
}

fn reasons(lead: &Value) -> Vec<String> {
    lead["score_ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect()
}

async fn check_lead(app: &TestApp, tag: &str) {
    let email = format!("{tag}@sdk.example");
    let lead = app.lead(&email).await;
    assert_eq!(lead["external_id"], format!("{tag}-crm"), "{lead:#}");
    assert_eq!(lead["title"], "Head of Marketing", "{lead:#}");
    // Company traits from the group call of the visitor.
    assert_eq!(lead["company"], format!("{tag} GmbH"), "{lead:#}");
    assert_eq!(lead["industry"], "Maschinenbau", "{lead:#}");
    assert_eq!(lead["employees"], 180, "{lead:#}");
    assert_eq!(lead["attributes"]["company_plan"], "enterprise", "{lead:#}");
    // Every call arrived: the anonymous history (pricing, price list), identify, track,
    // page, screen and the aliased device's landing page.
    let mut names: Vec<String> = lead["recent_activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["name"].as_str().unwrap(),
                a["properties"]["name"].as_str().unwrap_or("")
            )
            .trim()
            .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Content Downloaded",
            "Group",
            "Identify",
            "Page Viewed Case study",
            "Page Viewed Dashboard",
            "Page Viewed Landing page",
            "Page Viewed Pricing",
            "Webinar Attended",
        ],
        "{lead:#}"
    );
    let reasons = reasons(&lead);
    for want in [
        "viewed the pricing page",
        "downloaded the price brochure",
        "attended a webinar",
        "read a case study",
        "visited a landing page",
    ] {
        assert_eq!(
            reasons.iter().filter(|r| *r == want).count(),
            1,
            "{want}: {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_rudderstack_sdks_deliver_a_whole_journey() {
    let app = spawn_app().await;
    let out = send(&app, "segment", "seg", &[]).await;
    assert!(out.contains("sent"), "{out}");
    let out = send(&app, "rudderstack", "rudder", &[]).await;
    assert!(out.contains("sent"), "{out}");
    app.settle().await;
    check_lead(&app, "seg").await;
    check_lead(&app, "rudder").await;

    // A refused batch: each SDK reports the status, code and message of the answer.
    for sdk in ["segment", "rudderstack"] {
        let out = send(&app, sdk, sdk, &["bad"]).await;
        assert!(
            out.contains("status=400 code=invalid_input message=")
                && out.contains("no lead is known with userId"),
            "{sdk}: {out}"
        );
    }
    let (status, _) = app.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
}
