//! `GET /ui/leads/{email}`: one lead as `GET /v1/leads/{email}` reports it: profile and
//! consent, its field of the fit x interest matrix (against the `mql_fit` and
//! `mql_interest` thresholds), one timeline of events, score changes, tags, stage moves,
//! mails and handoffs (each with its source: `rules/FILE.rhai:LINE`, `api:KEY`,
//! `ui:NAME`), the tags with who set them, the mails with a preview as sent, and the
//! handoffs. A sales user opens only leads with a handoff they own.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::ConsoleState;
use super::leads::lead_href;
use super::page::{self, Viewer};
use super::texts::Lang;
use super::when;
use crate::domain::change::number;
use crate::domain::{Consent, Email};
use crate::handoff::brief::quadrant;
use crate::report::LeadReport;
use crate::store::{HandoffFilter, StoreError};

/// Whether `viewer` may see the lead `lead_id`: marketing and admin every lead, sales
/// those with a handoff they own.
pub async fn may_see(
    state: &ConsoleState,
    viewer: &Viewer,
    lead_id: i64,
) -> Result<bool, StoreError> {
    if viewer.sees_all() {
        return Ok(true);
    }
    let Some(owner) = &viewer.user.owner else {
        return Ok(false);
    };
    let theirs = state
        .app
        .processor
        .store
        .handoffs(&HandoffFilter {
            state: None,
            lead_id: Some(lead_id),
            owner: Some(owner.clone()),
            limit: 1,
        })
        .await?;
    Ok(!theirs.is_empty())
}

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(raw): Path<String>,
) -> Response {
    let lang = viewer.lang;
    let Ok(email) = Email::parse(&raw) else {
        return page::not_found(&viewer, &format!("{} {raw}", lang.t("lead_not_found")));
    };
    let store = &state.app.processor.store;
    let lead = match store.lead_by_email(&email).await {
        Ok(l) => l,
        Err(e) => return page::internal(&viewer, e),
    };
    // A sales user learns nothing about leads that are not theirs, not even whether
    // they exist.
    let allowed = match &lead {
        Some(l) => match may_see(&state, &viewer, l.id).await {
            Ok(a) => a,
            Err(e) => return page::internal(&viewer, e),
        },
        None => viewer.sees_all(),
    };
    if !allowed {
        return page::forbidden(&viewer, lang.t("lead_forbidden"));
    }
    let recent = state.app.config.processing.recent_activity;
    let report = match LeadReport::load(store, &email, recent).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return page::not_found(&viewer, &format!("{} {email}", lang.t("lead_not_found")));
        }
        Err(e) => return page::internal(&viewer, e),
    };
    let mut subjects = Vec::with_capacity(report.mails.len());
    for m in &report.mails {
        match store.mail(m.id).await {
            Ok(found) => subjects.push(found.and_then(|(_, c)| c).map(|c| c.subject)),
            Err(e) => return page::internal(&viewer, e),
        }
    }
    let data = view(&state, &report, &subjects, lang);
    page::page("lead.html", &viewer, "leads", data)
}

/// Consent as the page shows it.
fn consent(c: &Consent, lang: Lang, tz: chrono_tz::Tz) -> Value {
    let state = match (c.at, c.granted) {
        (None, _) => "lead_consent_not_asked",
        (Some(_), true) => "lead_consent_yes",
        (Some(_), false) => "lead_consent_withdrawn",
    };
    json!({
        "granted": c.granted,
        "state": lang.t(state),
        "at": c.at.map(|t| when::at(t.timestamp_millis(), tz)),
        "source": c.source,
    })
}

/// One line of the timeline.
struct Entry {
    at: i64,
    kind: &'static str,
    text: String,
    source: Option<String>,
    bad: bool,
}

/// The template's view of the lead.
fn view(
    state: &ConsoleState,
    report: &LeadReport,
    subjects: &[Option<String>],
    lang: Lang,
) -> Value {
    let config = &state.app.config;
    let tz = config.time_zone;
    let l = &report.lead;
    let fit_at = config.thresholds.get("mql_fit").copied();
    let interest_at = config.thresholds.get("mql_interest").copied();
    let field = quadrant(l, fit_at, interest_at);

    // Each list goes in oldest first, so that entries of the same instant keep their
    // order when the timeline is turned newest first.
    let mut entries: Vec<Entry> = Vec::new();
    for a in report.recent_activity.iter().rev() {
        let detail = match a.kind.as_str() {
            "page" => a
                .properties
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let mut text = format!("{} {}", a.kind, a.event.name);
        if !detail.is_empty() {
            text.push_str(&format!(" · {detail}"));
        }
        if a.event.status != "processed" {
            text.push_str(&format!(" [{}]", a.event.status));
        }
        entries.push(Entry {
            at: a.event.occurred_at,
            kind: "event",
            text,
            source: a.error.as_ref().map(ToString::to_string),
            bad: a.error.is_some(),
        });
    }
    for s in report.score_ledger.iter().rev() {
        let sign = if s.delta >= 0.0 { "+" } else { "" };
        entries.push(Entry {
            at: s.at,
            kind: "score",
            text: format!("{sign}{} {} · {}", number(s.delta), s.axis, s.reason),
            source: Some(s.source.clone()),
            bad: false,
        });
    }
    for h in &report.stage_history {
        entries.push(Entry {
            at: h.at,
            kind: "stage",
            text: format!(
                "{} → {} · {}",
                h.from_stage.as_deref().unwrap_or("–"),
                h.to_stage,
                h.reason
            ),
            source: Some(h.source.clone()),
            bad: false,
        });
    }
    for t in &report.tag_sources {
        entries.push(Entry {
            at: t.since,
            kind: "tag",
            text: format!("{} · {}", t.tag, t.reason),
            source: Some(t.source.clone()),
            bad: false,
        });
    }
    for m in report.mails.iter().rev() {
        entries.push(Entry {
            at: m.finished_at.unwrap_or(m.created_at),
            kind: "mail",
            text: format!("{} · {}", m.template, m.status),
            source: Some(m.source.clone()),
            bad: m.status == "failed",
        });
    }
    for h in report.handoffs.iter().rev() {
        entries.push(Entry {
            at: h.created_at,
            kind: "handoff",
            text: format!(
                "{} · {} · {}",
                h.team,
                h.state,
                h.owner.as_deref().unwrap_or("–")
            ),
            source: Some(h.source.clone()),
            bad: false,
        });
    }
    // Newest first; at the same instant, in the order a lead lives it (an event, its
    // points and tags, the stage move, the handoff, the mail), turned round.
    let order = |k: &str| {
        ["event", "score", "tag", "stage", "handoff", "mail"]
            .iter()
            .position(|x| *x == k)
            .unwrap_or(9)
    };
    let mut numbered: Vec<(usize, &Entry)> = entries.iter().enumerate().collect();
    numbered.sort_by(|(i, a), (j, b)| {
        b.at.cmp(&a.at)
            .then(order(b.kind).cmp(&order(a.kind)))
            .then(j.cmp(i))
    });
    let timeline: Vec<Value> = numbered
        .into_iter()
        .map(|(_, e)| {
            json!({
                "when": when::at(e.at, tz),
                "kind": e.kind,
                "label": lang.t(&format!("lead_kind_{}", e.kind)),
                "text": e.text,
                "source": e.source,
                "bad": e.bad,
            })
        })
        .collect();

    let tags: Vec<Value> = report
        .tag_sources
        .iter()
        .map(|t| {
            json!({
                "tag": t.tag,
                "since": when::at(t.since, tz),
                "source": t.source,
                "reason": t.reason,
            })
        })
        .collect();
    let mails: Vec<Value> = report
        .mails
        .iter()
        .zip(subjects)
        .map(|(m, subject)| {
            json!({
                "id": m.id,
                "template": m.template,
                "status": m.status,
                "reason": m.reason,
                "when": when::at(m.finished_at.unwrap_or(m.due_at), tz),
                "subject": subject,
                "preview": subject.as_ref().map(|_| format!("/ui/mails/{}/preview", m.id)),
            })
        })
        .collect();
    let handoffs: Vec<Value> = report
        .handoffs
        .iter()
        .map(|h| {
            json!({
                "id": h.id,
                "state": h.state,
                "open": h.is_open(),
                "owner": h.owner,
                "team": h.team,
                "reason": h.reason,
                "created": when::at(h.created_at, tz),
                "due": h.due_at.map(|d| when::at(d, tz)),
                "overdue": h.is_open() && h.due_at.is_some_and(|d| d < state.now_ms()),
                "answered_by": h.answered_by,
                "answer_note": h.answer_note,
            })
        })
        .collect();
    let threshold = |t: Option<f64>| t.map_or_else(|| "–".into(), number);
    json!({
        "email": l.email.as_str(),
        "href": lead_href(l.email.as_str()),
        "name": report.name,
        "title": l.title,
        "company": l.company,
        "phone": l.phone,
        "industry": l.industry,
        "employees": l.employees,
        "country": l.country,
        "locale": l.locale,
        "owner": l.owner,
        "stage": l.stage,
        "stage_since": when::at(l.stage_since.timestamp_millis(), tz),
        "created": when::at(l.created_at.timestamp_millis(), tz),
        "fit": number(l.fit),
        "interest": number(l.interest),
        "fit_threshold": threshold(fit_at),
        "interest_threshold": threshold(interest_at),
        "field": field,
        "consent_email": consent(&l.consent_email, lang, tz),
        "consent_tracking": consent(&l.consent_tracking, lang, tz),
        "topics_left": l.topics_left,
        "tags": tags,
        "timeline": timeline,
        "mails": mails,
        "handoffs": handoffs,
    })
}
