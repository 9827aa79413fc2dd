//! `GET /ui/`: today at a glance (since midnight in the configured time zone): events,
//! new leads, stage entries (MQLs first), open and overdue handoffs, mails sent, failed
//! and suppressed, and the rule and template errors, each linking to its page. A sales
//! user sees their own open and overdue handoffs.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::ConsoleState;
use super::page::{self, Viewer};
use super::when;
use crate::store::HandoffFilter;

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let app = &state.app;
    let store = &app.processor.store;
    let now = app.processor.clock.now();
    let now_ms = crate::clock::to_ms(now);
    let tz = app.config.time_zone;
    let today = when::start_of_day(now, tz);
    if !viewer.sees_all() {
        let Some(owner) = viewer.user.owner.clone() else {
            return page::page("overview.html", &viewer, "overview", json!({"owner": null}));
        };
        let mine = match store
            .handoffs(&HandoffFilter {
                state: Some("open".into()),
                lead_id: None,
                owner: Some(owner.clone()),
                limit: 10_000,
            })
            .await
        {
            Ok(h) => h,
            Err(e) => return page::internal(&viewer, e),
        };
        let overdue = mine
            .iter()
            .filter(|h| h.due_at.is_some_and(|d| d < now_ms))
            .count();
        return page::page(
            "overview.html",
            &viewer,
            "overview",
            json!({"owner": owner, "mine_open": mine.len(), "mine_overdue": overdue}),
        );
    }
    let since = match store.counts_since(today).await {
        Ok(s) => s,
        Err(e) => return page::internal(&viewer, e),
    };
    let scrape = match store.scrape_counts(now_ms).await {
        Ok(s) => s,
        Err(e) => return page::internal(&viewer, e),
    };
    let mql = &app.config.backtest.mql_stage;
    let mqls = since
        .entries
        .iter()
        .find(|(s, _)| s == mql)
        .map_or(0, |(_, n)| *n);
    let rules = app.rules.status();
    let template_errors = app.templates.errors();
    let failed_events = match store.event_counts().await {
        Ok(c) => c.events_failed,
        Err(e) => return page::internal(&viewer, e),
    };
    page::page(
        "overview.html",
        &viewer,
        "overview",
        json!({
            "today": when::at(today, tz),
            "events": since.events,
            "leads": since.leads,
            "mql_stage": mql,
            "mqls": mqls,
            "entries": since.entries,
            "handoffs_open": scrape.handoffs_open,
            "handoffs_overdue": scrape.handoffs_overdue,
            "mails_sent": since.mails_sent,
            "mails_failed": since.mails_failed,
            "mails_suppressed": since.mails_suppressed,
            "rule_errors": rules.errors,
            "template_errors": template_errors,
            "failed_events": failed_events,
            "backlog": scrape.events_pending,
        }),
    )
}
