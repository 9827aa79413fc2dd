//! What sales gets about a lead: the essentials for the first call, in one JSON value
//! that the `handoff/*` mail templates see as `data` and webhooks carry as `lead`.
//!
//! Contact, role, the fit / interest quadrant, why the lead was handed over, the
//! content it used, its top topics and most important downloads, a short company
//! portrait, and duplicates at the same company. Web tracking (pages, opens, clicks)
//! is added only when the lead allowed tracking.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::clock::from_ms;
use crate::domain::Lead;
use crate::domain::change::number;
use crate::store::{EventRow, HistoryRow, LedgerRow};

/// Conversions: what a lead did on purpose (forms, downloads, webinars).
const CONVERSIONS: &[&str] = &[
    "Content Downloaded",
    "Webinar Registered",
    "Webinar Attended",
    "Form Submitted",
    "Demo Requested",
    "Offer Requested",
];
/// Events that exist only because of tracking.
pub const TRACKED: &[&str] = &["Email Opened", "Email Clicked", "Page Viewed"];

/// Everything the brief is made from.
pub struct Facts<'a> {
    pub lead: &'a Lead,
    /// The lead's recent events, newest first.
    pub events: &'a [EventRow],
    /// Recent score changes, newest first.
    pub ledger: &'a [LedgerRow],
    pub history: &'a [HistoryRow],
    /// Events behind the ledger's score changes that exist only through tracking
    /// (page views, opens, clicks): their reasons are shown only with consent.
    pub tracked_seqs: &'a std::collections::HashSet<i64>,
    /// Other leads of the same company with sales.
    pub duplicates: &'a [Value],
    /// `mql_fit` and `mql_interest`, when configured.
    pub fit_threshold: Option<f64>,
    pub interest_threshold: Option<f64>,
}

/// The essentials, as JSON.
pub fn brief(f: &Facts) -> Value {
    let lead = f.lead;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let attr = |k: &str| {
        lead.attributes
            .get(k)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let tracking = lead.consent_tracking.granted;
    let counted: Vec<&EventRow> = f
        .events
        .iter()
        .filter(|e| tracking || (e.kind != "page" && !TRACKED.contains(&e.name.as_str())))
        .collect();
    let props = |e: &EventRow| -> serde_json::Map<String, Value> {
        serde_json::from_str(&e.properties).unwrap_or_default()
    };
    let prop = |p: &serde_json::Map<String, Value>, keys: &[&str]| {
        keys.iter()
            .find_map(|k| p.get(*k).and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    };

    let content: Vec<Value> = counted
        .iter()
        .filter(|e| e.kind == "track" && CONVERSIONS.contains(&e.name.as_str()))
        .take(10)
        .map(|e| {
            let p = props(e);
            json!({
                "event": e.name,
                "title": prop(&p, &["asset", "webinar", "title", "form", "name"]),
                "topic": prop(&p, &["topic"]),
                "at": from_ms(e.occurred_at).to_rfc3339(),
            })
        })
        .collect();

    // Downloads by weight: price lists first, then case studies, whitepapers, the rest;
    // newer before older.
    let mut downloads: Vec<(u8, &EventRow)> = counted
        .iter()
        .filter(|e| e.name == "Content Downloaded")
        .map(|e| {
            let p = props(e);
            let kind = prop(&p, &["type"]).to_lowercase();
            let weight = match kind.as_str() {
                "price_brochure" | "price_list" => 0,
                "case_study" => 1,
                "whitepaper" => 2,
                _ => 3,
            };
            (weight, *e)
        })
        .collect();
    downloads.sort_by_key(|(w, e)| (*w, -e.occurred_at));
    let downloads: Vec<Value> = downloads
        .iter()
        .take(3)
        .map(|(_, e)| {
            let p = props(e);
            json!({
                "title": prop(&p, &["asset", "title", "name"]),
                "type": prop(&p, &["type"]),
                "topic": prop(&p, &["topic"]),
                "at": from_ms(e.occurred_at).to_rfc3339(),
            })
        })
        .collect();

    let mut topics: BTreeMap<String, i64> = BTreeMap::new();
    for e in &counted {
        let t = prop(&props(e), &["topic"]);
        if !t.is_empty() {
            *topics.entry(t).or_default() += 1;
        }
    }
    let mut topics: Vec<(String, i64)> = topics.into_iter().collect();
    topics.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let topics: Vec<Value> = topics
        .into_iter()
        .take(3)
        .map(|(topic, count)| json!({"topic": topic, "count": count}))
        .collect();

    // Why: the move into the current stage and the biggest recent score changes, each
    // with the rule that made it. Without tracking consent, points from tracking are
    // not spelled out.
    let mut why: Vec<Value> = Vec::new();
    if let Some(m) = f.history.iter().rev().find(|h| h.to_stage == lead.stage) {
        why.push(json!({"source": m.source, "reason": m.reason, "points": Value::Null}));
    }
    let tracked_seqs = f.tracked_seqs;
    let mut gains: Vec<&LedgerRow> = f
        .ledger
        .iter()
        .filter(|l| l.delta > 0.0 && l.source_kind == "rule")
        .filter(|l| tracking || !l.event_seq.is_some_and(|s| tracked_seqs.contains(&s)))
        .collect();
    gains.sort_by(|a, b| b.delta.total_cmp(&a.delta).then(b.at.cmp(&a.at)));
    why.extend(gains.into_iter().take(5).map(|l| {
        json!({
            "source": l.source,
            "reason": l.reason,
            "points": format!("+{} {}", number(l.delta), l.axis),
        })
    }));

    let quadrant = quadrant(lead, f.fit_threshold, f.interest_threshold);
    let role = match attr("buying_role") {
        r if r.is_empty() => attr("role"),
        r => r,
    };

    let mut out = json!({
        "contact": {
            "name": lead.name(),
            "email": lead.email.as_str(),
            "phone": text(&lead.phone),
            "company": text(&lead.company),
            "title": text(&lead.title),
            "role": role,
            "country": text(&lead.country),
        },
        "scores": {
            "fit": number(lead.fit),
            "interest": number(lead.interest),
            "quadrant": quadrant,
        },
        "stage": lead.stage,
        "why": why,
        "content": content,
        "downloads": downloads,
        "topics": topics,
        "company": {
            "name": text(&lead.company),
            "industry": text(&lead.industry),
            "employees": lead.employees,
            "revenue": lead.revenue,
            "country": text(&lead.country),
            "website": attr("website"),
            "description": attr("description"),
        },
        "duplicates": f.duplicates,
        "tracking_consent": tracking,
        // Filled below only with the lead's consent.
        "tracking": Value::Null,
    });
    if tracking {
        let pages: Vec<Value> = f
            .events
            .iter()
            .filter(|e| e.kind == "page")
            .take(10)
            .map(|e| {
                let p = props(e);
                json!({
                    "url": prop(&p, &["url"]),
                    "title": prop(&p, &["title", "name"]),
                    "at": from_ms(e.occurred_at).to_rfc3339(),
                })
            })
            .collect();
        let count = |name: &str| f.events.iter().filter(|e| e.name == name).count();
        out["tracking"] = json!({
            "pages": pages,
            "opens": count("Email Opened"),
            "clicks": count("Email Clicked"),
        });
    }
    out
}

/// Puts the other leads of the company with sales into a brief made without them.
pub fn set_duplicates(brief: &mut Value, duplicates: Vec<Value>) {
    brief["duplicates"] = Value::Array(duplicates);
}

/// The four-field quadrant of fit and interest against the MQL thresholds:
/// `high-fit-high-interest` (ready for sales), `high-fit-low-interest` (nurture),
/// `low-fit-high-interest` (advocate), `low-fit-low-interest`.
pub fn quadrant(lead: &Lead, fit: Option<f64>, interest: Option<f64>) -> &'static str {
    let high_fit = lead.fit >= fit.unwrap_or(0.0);
    let high_interest = lead.interest >= interest.unwrap_or(0.0);
    match (high_fit, high_interest) {
        (true, true) => "high-fit-high-interest",
        (true, false) => "high-fit-low-interest",
        (false, true) => "low-fit-high-interest",
        (false, false) => "low-fit-low-interest",
    }
}

/// A deadline as the owner reads it: `Mo 30.03.2026 10:30 CEST`.
pub fn local_time(at: DateTime<Utc>, tz: Tz) -> String {
    const DAYS: [&str; 7] = ["Mo", "Di", "Mi", "Do", "Fr", "Sa", "So"];
    let local = at.with_timezone(&tz);
    use chrono::Datelike;
    format!(
        "{} {}",
        DAYS[local.weekday().num_days_from_monday() as usize],
        local.format("%d.%m.%Y %H:%M %Z")
    )
}

/// A filled-in notification (`data` of the `handoff/*` templates): what `templates
/// check` renders them with, and the reference for their variables.
pub fn sample_notification() -> Value {
    json!({
        "handoff": {
            "id": 12,
            "team": "inbound",
            "reason": "entered mql: fit 45 and interest 60 over the thresholds",
            "source": "stage:mql",
            "state": "open",
            "round": 1,
            "step": "assigned",
            "owner": {"id": "anna", "name": "Anna Berger", "email": "anna.berger@example.com"},
            "escalate_to": "Vertriebsleitung <vertrieb@example.com>",
            "created_at": "2026-03-27T15:30:00+00:00",
            "due_at": "2026-03-30T08:30:00+00:00",
            "due_local": "Mo 30.03.2026 10:30 CEST",
            "time_zone": "Europe/Berlin",
            "reaction": "2h",
            "reassigned_from": "",
            "accept_url": "https://mail.example.com/h/TOKEN",
            "reject_url": "https://mail.example.com/h/TOKEN",
        },
        "brief": {
            "contact": {
                "name": "Jana Schmidt", "email": "jana.schmidt@kunde.example",
                "phone": "+49 30 1234567", "company": "Kunde GmbH", "title": "Leiterin IT",
                "role": "Entscheiderin", "country": "DE",
            },
            "scores": {"fit": "45", "interest": "60", "quadrant": "high-fit-high-interest"},
            "stage": "mql",
            "why": [
                {"source": "rules/40-funnel.rhai:21", "reason": "fit 45 and interest 60 over the thresholds", "points": null},
                {"source": "rules/20-interest.rhai:24", "reason": "viewed the pricing page", "points": "+25 interest"},
            ],
            "content": [{"event": "Content Downloaded", "title": "Whitepaper Sicherheit", "topic": "security", "at": "2026-03-20T10:00:00+00:00"}],
            "downloads": [{"title": "Whitepaper Sicherheit", "type": "whitepaper", "topic": "security", "at": "2026-03-20T10:00:00+00:00"}],
            "topics": [{"topic": "security", "count": 2}],
            "company": {
                "name": "Kunde GmbH", "industry": "Maschinenbau", "employees": 250,
                "revenue": null, "country": "DE", "website": "https://kunde.example",
                "description": "",
            },
            "duplicates": [{"id": 3, "email": "max@kunde.example", "name": "Max Muster", "company": "Kunde GmbH", "stage": "sal", "owner": "ben.okafor@example.com"}],
            "tracking_consent": true,
            "tracking": {"pages": [{"url": "https://www.example.com/pricing", "title": "Preise", "at": "2026-03-26T09:00:00+00:00"}], "opens": 3, "clicks": 1},
        },
    })
}
