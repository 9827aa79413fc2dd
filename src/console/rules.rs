//! `GET /ui/rules` (marketing and admin): the loaded rule files (digest, when loaded,
//! shadow) with their errors at file:line:column, the template errors, the failed
//! events with where they failed and a Retry button (`POST /ui/events/{seq}/retry`,
//! what `nurtured events retry SEQ` does), what the shadow rules would have done, and
//! how to make a backtest report.

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
use crate::clock::to_ms;
use crate::report::shadow::ShadowReport;
use crate::rules::RuleError;
use crate::store::FailedEvent;

/// Failed events listed at most.
const FAILED: usize = 100;
/// Recent shadow examples per file.
const SHADOW_RECENT: usize = 10;

#[derive(Debug, Deserialize)]
pub struct RulesQuery {
    /// The event just queued again: a notice.
    retried: Option<i64>,
}

fn position(e: &RuleError) -> Value {
    json!({
        "at": if e.line == 0 {
            e.file.clone()
        } else {
            format!("{}:{}:{}", e.file, e.line, e.column)
        },
        "message": e.message,
    })
}

/// A failed event with where it failed: the rule files it failed for, or the error
/// of the whole event.
fn failed(f: &FailedEvent, tz: chrono_tz::Tz) -> Value {
    let rules: Vec<RuleError> = f
        .rules
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    let errors: Vec<Value> = if rules.is_empty() {
        f.error
            .as_deref()
            .map(|e| {
                serde_json::from_str::<RuleError>(e)
                    .map(|r| position(&r))
                    .unwrap_or_else(|_| json!({"at": "", "message": e}))
            })
            .into_iter()
            .collect()
    } else {
        rules.iter().map(position).collect()
    };
    json!({
        "seq": f.seq,
        "email": f.email,
        "lead_url": lead_url(&f.email),
        "kind": f.kind,
        "name": f.name,
        "at": when::at(f.occurred_at, tz),
        "attempts": f.attempts,
        "partly": !rules.is_empty(),
        "errors": errors,
    })
}

/// `GET /ui/rules`.
pub async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<RulesQuery>,
) -> Response {
    if !viewer.sees_all() {
        return page::forbidden(&viewer, viewer.lang.t("rules_sales_forbidden"));
    }
    let app = &state.app;
    let store = &app.processor.store;
    let tz = app.config.time_zone;
    let status = app.rules.status();
    let files: Vec<Value> = status
        .files
        .iter()
        .map(|f| {
            let errors = status.errors.iter().filter(|e| e.file == f.file).count();
            json!({
                "file": f.file,
                "digest": f.digest,
                "loaded_at": when::at(to_ms(f.loaded_at), tz),
                "shadow": f.shadow,
                "errors": errors,
                "unloaded": false,
            })
        })
        .collect();
    // Files with errors that never compiled are not loaded: listed too, without digest.
    let mut files = files;
    let mut unloaded: Vec<&str> = status
        .errors
        .iter()
        .map(|e| e.file.as_str())
        .filter(|f| !status.files.iter().any(|l| l.file == *f))
        .collect();
    unloaded.dedup();
    files.extend(unloaded.into_iter().map(|f| {
        json!({"file": f, "digest": "", "loaded_at": "", "shadow": false, "errors": 1, "unloaded": true})
    }));
    let rule_errors: Vec<Value> = status.errors.iter().map(position).collect();
    let template_errors: Vec<Value> = app
        .templates
        .errors()
        .iter()
        .map(|e| json!({"at": e.location, "message": e.message}))
        .collect();
    let failed_events = match store.failed_events(FAILED).await {
        Ok(f) => f,
        Err(e) => return page::internal(&viewer, e),
    };
    let shadow = match ShadowReport::load(store, None, SHADOW_RECENT).await {
        Ok(s) => s,
        Err(e) => return page::internal(&viewer, e),
    };
    let shadow_files: Vec<Value> = shadow
        .files
        .iter()
        .map(|f| {
            json!({
                "file": f.file,
                "actions": f.actions,
                "errors": f.errors,
                "counts": f.counts.iter().map(|c| json!({
                    "source": c.source,
                    "action": c.action,
                    "count": c.count,
                    "last": when::at(c.last_at, tz),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let shadow_errors: Vec<Value> = shadow
        .errors
        .iter()
        .map(|x| {
            json!({
                "file": x.file,
                "email": x.email,
                "lead_url": lead_url(&x.email),
                "source": x.source,
                "message": x.message,
                "at": when::at(x.at, tz),
            })
        })
        .collect();
    let notice = q.retried.map(|seq| {
        viewer
            .lang
            .t("rules_notice_retried")
            .replace("{seq}", &seq.to_string())
    });
    page::page(
        "rules.html",
        &viewer,
        "rules",
        json!({
            "version": status.version,
            "files": files,
            "rule_errors": rule_errors,
            "template_errors": template_errors,
            "failed": failed_events.iter().map(|f| failed(f, tz)).collect::<Vec<_>>(),
            "shadow_files": shadow_files,
            "shadow_errors": shadow_errors,
            "rules_dir": app.config.rules_shown,
            "notice": notice,
        }),
    )
}

/// `POST /ui/events/{seq}/retry`: the failed event back in the queue (the daemon
/// processes it on the rules as they are now), then back to the page.
pub async fn retry(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(seq): Path<i64>,
) -> Response {
    if !viewer.sees_all() {
        return page::forbidden(&viewer, viewer.lang.t("rules_sales_forbidden"));
    }
    let processor = &state.app.processor;
    match processor.store.retry_failed(Some(&[seq])).await {
        Ok(0) => page::error(
            Some(&viewer),
            viewer.lang,
            StatusCode::CONFLICT,
            &viewer
                .lang
                .t("rules_not_failed")
                .replace("{seq}", &seq.to_string()),
        ),
        Ok(_) => {
            processor.wake.notify_one();
            tracing::info!(seq, by = %viewer.by(), "failed event queued again in the console");
            page::see_other(&format!("/ui/rules?retried={seq}#failed"))
        }
        Err(e) => page::internal(&viewer, e),
    }
}
