//! `GET /ui/mail` (marketing and admin): the outbox counted per state and listed by
//! state (`?state=queued|sending|sent|failed|suppressed`, newest first), the failed
//! mails with their reason and a Retry button (`POST /ui/mails/{id}/retry`, as
//! `POST /v1/mails/{id}/retry` does, recorded as `ui:NAME`), the suppression list with
//! the latest bounce reports, and each nurture stream's members per step.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ConsoleState;
use super::board::lead_url;
use super::page::{self, Viewer};
use super::when;
use crate::store::{MailFilter, OutboxRow, RetrySelection};

/// The states of an outbox row, in the order a mail goes through them.
pub const STATES: [&str; 5] = ["queued", "sending", "sent", "failed", "suppressed"];
/// Mails listed at most.
const LIST: i64 = 100;
/// Failed mails, suppressed addresses and bounce reports shown at most.
const FAILED: i64 = 50;
const SUPPRESSED: i64 = 50;
const BOUNCES: i64 = 20;

#[derive(Debug, Deserialize)]
pub struct MailQuery {
    state: Option<String>,
    /// The mail just queued again: a notice.
    retried: Option<i64>,
}

fn row(m: &OutboxRow, tz: chrono_tz::Tz) -> Value {
    json!({
        "id": m.id,
        "email": m.email,
        "lead_url": lead_url(&m.email),
        "template": m.template,
        "class": m.class,
        "status": m.status,
        "reason": m.reason,
        "attempts": m.attempts,
        "created": when::at(m.created_at, tz),
        "finished": m.finished_at.map(|f| when::at(f, tz)),
    })
}

/// `GET /ui/mail`.
pub async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<MailQuery>,
) -> Response {
    if !viewer.sees_all() {
        return page::forbidden(&viewer, viewer.lang.t("mail_sales_forbidden"));
    }
    let filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) if STATES.contains(&s) => Some(s.to_string()),
        Some(s) => {
            return page::error(
                Some(&viewer),
                viewer.lang,
                StatusCode::BAD_REQUEST,
                &viewer
                    .lang
                    .t("mail_bad_state")
                    .replace("{state}", s)
                    .replace("{states}", &STATES.join(", ")),
            );
        }
    };
    let store = &state.app.processor.store;
    let tz = state.app.config.time_zone;
    let counted = match store.mail_status_counts().await {
        Ok(c) => c,
        Err(e) => return page::internal(&viewer, e),
    };
    let count = |s: &str| counted.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    let counts: Vec<Value> = STATES
        .iter()
        .map(|s| json!({"state": s, "count": count(s)}))
        .collect();
    let total: i64 = counted.iter().map(|(_, n)| n).sum();
    let list = match store
        .list_mails(&MailFilter {
            status: filter.clone(),
            lead_id: None,
            limit: LIST,
        })
        .await
    {
        Ok(l) => l,
        Err(e) => return page::internal(&viewer, e),
    };
    let failed = match store
        .list_mails(&MailFilter {
            status: Some("failed".into()),
            lead_id: None,
            limit: FAILED,
        })
        .await
    {
        Ok(l) => l,
        Err(e) => return page::internal(&viewer, e),
    };
    let summary = match store.mail_counts().await {
        Ok(c) => c,
        Err(e) => return page::internal(&viewer, e),
    };
    let suppressions = match store.suppressions(SUPPRESSED).await {
        Ok(s) => s,
        Err(e) => return page::internal(&viewer, e),
    };
    let bounces = match store.bounce_log(None, BOUNCES).await {
        Ok(b) => b,
        Err(e) => return page::internal(&viewer, e),
    };
    let members = match store.stream_steps().await {
        Ok(m) => m,
        Err(e) => return page::internal(&viewer, e),
    };
    // (stream, step) -> (active, paused)
    let mut at: BTreeMap<(&str, i64), (i64, i64)> = BTreeMap::new();
    for m in &members {
        let e = at.entry((m.stream.as_str(), m.step)).or_default();
        if m.status == "paused" {
            e.1 += m.members;
        } else {
            e.0 += m.members;
        }
    }
    let streams: Vec<Value> = state
        .app
        .config
        .streams
        .iter()
        .map(|s| {
            let steps: Vec<Value> = s
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let (active, paused) = at
                        .get(&(s.name.as_str(), i as i64))
                        .copied()
                        .unwrap_or_default();
                    json!({
                        "number": i + 1,
                        "template": step.template,
                        "after": when::span(step.after.as_millis() as i64),
                        "active": active,
                        "paused": paused,
                    })
                })
                .collect();
            let members: i64 = members
                .iter()
                .filter(|m| m.stream == s.name)
                .map(|m| m.members)
                .sum();
            json!({
                "name": s.name,
                "stages": s.stages,
                "members": members,
                "steps": steps,
            })
        })
        .collect();
    let notice = q.retried.map(|id| {
        viewer
            .lang
            .t("mail_notice_retried")
            .replace("{id}", &id.to_string())
    });
    page::page(
        "mail.html",
        &viewer,
        "mail",
        json!({
            "state": filter,
            "counts": counts,
            "total": total,
            "list": list.iter().map(|m| row(m, tz)).collect::<Vec<_>>(),
            "failed": failed.iter().map(|m| row(m, tz)).collect::<Vec<_>>(),
            "failed_total": count("failed"),
            "notice": notice,
            "addresses_suppressed": summary.addresses_suppressed,
            "suppressed_by_reason": summary.suppressed_by_reason,
            "suppressions": suppressions.iter().map(|s| json!({
                "email": s.email,
                "lead_url": lead_url(&s.email),
                "reason": s.reason,
                "detail": s.detail,
                "at": when::at(s.created_at, tz),
            })).collect::<Vec<_>>(),
            "bounces": bounces.iter().map(|b| json!({
                "at": when::at(b.at, tz),
                "email": b.email,
                "kind": b.kind,
                "status": b.status,
                "diagnostic": b.diagnostic,
                "action": b.action,
            })).collect::<Vec<_>>(),
            "streams": streams,
        }),
    )
}

/// `POST /ui/mails/{id}/retry`: the failed mail queued again, then back to the page.
pub async fn retry(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    if !viewer.sees_all() {
        return page::forbidden(&viewer, viewer.lang.t("mail_sales_forbidden"));
    }
    let now = state.now_ms();
    let report = match state
        .app
        .processor
        .store
        .retry_mails(RetrySelection::Ids(&[id]), &viewer.by(), now)
        .await
    {
        Ok(r) => r,
        Err(e) => return page::internal(&viewer, e),
    };
    if let Some(r) = report.refused.first() {
        let status = if r.reason.starts_with("there is no mail") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::CONFLICT
        };
        return page::error(Some(&viewer), viewer.lang, status, &r.reason);
    }
    state.app.processor.wake_mailer();
    tracing::info!(mail = id, by = %viewer.by(), "failed mail queued again in the console");
    page::see_other(&format!("/ui/mail?retried={id}"))
}
