//! The sales board: `GET /ui/board` lists the open handoffs per owner (a sales user
//! sees their own) with the business time left to each deadline, the answer buttons
//! for whoever may answer, and the SLA report below; `GET /ui/handoffs/{id}` shows one
//! handoff with its log. `POST /ui/handoffs/{id}/accept` and `.../reject` answer it
//! through the sales desk, recorded as `ui:NAME`: the owner of the handoff and admins
//! may answer, nobody else (403).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ConsoleState;
use super::page::{self, Viewer};
use super::when;
use crate::clock::{from_ms, to_ms};
use crate::handoff::{Answer, AnswerError};
use crate::report::{Period, SlaReport};
use crate::store::{HandoffFilter, HandoffRow};

/// Open handoffs the board shows at most.
const MAX_OPEN: i64 = 1000;
/// Days the SLA report below the board covers.
const REPORT_DAYS: i64 = 30;

/// The link to a lead's console page.
pub fn lead_url(email: &str) -> String {
    format!(
        "/ui/leads/{}",
        form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()
    )
}

/// May `viewer` answer `h`? Its owner and admins may.
fn may_answer(viewer: &Viewer, h: &HandoffRow) -> bool {
    viewer.is_admin() || (viewer.user.owner.is_some() && h.owner == viewer.user.owner)
}

/// May `viewer` see `h`? Marketing and admins see all; sales their own.
fn may_see(viewer: &Viewer, h: &HandoffRow) -> bool {
    viewer.sees_all() || (viewer.user.owner.is_some() && h.owner == viewer.user.owner)
}

/// Where the deadline of `h` stands at `now`: business time left, or business time
/// past it (in the calendar of its owner's team), and the deadline's time zone.
struct Countdown {
    overdue: bool,
    /// Business time left (or overdue by), in ms.
    business_ms: i64,
    tz: Tz,
}

fn countdown(state: &ConsoleState, h: &HandoffRow, due: i64, now: DateTime<Utc>) -> Countdown {
    let sales = &state.app.config.sales;
    let owner = h.owner.as_deref().unwrap_or_default();
    let team = sales.team(&h.team);
    let tz = team
        .and_then(|t| t.time_zones.get(owner).copied())
        .unwrap_or(state.app.config.time_zone);
    let due_at = from_ms(due);
    let overdue = due_at <= now;
    let (from, to) = if overdue {
        (due_at, now)
    } else {
        (now, due_at)
    };
    let business = match team {
        Some(t) => t.calendar(owner).between(from, to),
        // A team no longer configured: the wall-clock time.
        None => to - from,
    };
    Countdown {
        overdue,
        business_ms: business.num_milliseconds(),
        tz,
    }
}

/// A handoff as the board and its page show it.
fn card(state: &ConsoleState, viewer: &Viewer, h: &HandoffRow, now: DateTime<Utc>) -> Value {
    let lang = viewer.lang;
    let tz = state.app.config.time_zone;
    let owner_name = h
        .owner
        .as_deref()
        .and_then(|o| state.app.config.sales.owner(o))
        .map(|o| o.name.clone());
    let (due, left, overdue, due_tz) = match h.due_at {
        Some(d) if h.is_open() => {
            let c = countdown(state, h, d, now);
            let left = if c.overdue {
                lang.t("board_overdue_by")
                    .replace("{span}", &when::span(c.business_ms))
            } else {
                lang.t("board_left")
                    .replace("{span}", &when::span(c.business_ms))
            };
            (when::at(d, c.tz), left, c.overdue, c.tz.name().to_string())
        }
        Some(d) => (when::at(d, tz), String::new(), false, tz.name().to_string()),
        None => (String::new(), String::new(), false, String::new()),
    };
    json!({
        "id": h.id,
        "email": h.email,
        "lead_url": lead_url(&h.email),
        "team": h.team,
        "reason": h.reason,
        "state": h.state,
        "open": h.is_open(),
        "owner": h.owner,
        "owner_name": owner_name,
        "created": when::at(h.created_at, tz),
        "assigned": h.assigned_at.map(|a| when::at(a, tz)),
        "due": due,
        "due_tz": due_tz,
        "left": left,
        "overdue": overdue,
        "breached": h.breached_at.map(|b| when::at(b, tz)),
        "answered": h.answered_at.map(|a| when::at(a, tz)),
        "answered_by": h.answered_by,
        "answer_note": h.answer_note,
        "may_answer": h.is_open() && may_answer(viewer, h),
    })
}

#[derive(Debug, Deserialize)]
pub struct BoardQuery {
    /// The handoff just answered, and how (`accepted` / `rejected`): a notice.
    answered: Option<i64>,
    done: Option<String>,
}

/// The notice after an answer, in the viewer's words.
fn answered_notice(viewer: &Viewer, q: &BoardQuery) -> Option<String> {
    let id = q.answered?;
    let key = match q.done.as_deref() {
        Some("accepted") => "board_notice_accepted",
        Some("rejected") => "board_notice_rejected",
        _ => return None,
    };
    Some(viewer.lang.t(key).replace("{id}", &id.to_string()))
}

/// The SLA report of the last [`REPORT_DAYS`] days as the page shows it; a sales user
/// gets only their own figures per owner.
async fn sla(state: &ConsoleState, viewer: &Viewer, now: DateTime<Utc>) -> Result<Value, Response> {
    let store = &state.app.processor.store;
    let tz = state.app.config.time_zone;
    let report = SlaReport::load(store, Period::last_days(REPORT_DAYS, now))
        .await
        .map_err(|e| page::internal(viewer, e))?;
    let spread = |s: &crate::report::measure::Spread| {
        json!({
            "count": s.count,
            "median": s.median_ms.map(when::span),
            "p90": s.p90_ms.map(when::span),
        })
    };
    let owners: Vec<Value> = report
        .owners
        .iter()
        .filter(|o| viewer.sees_all() || viewer.user.owner.as_deref() == Some(o.owner.as_str()))
        .map(|o| {
            json!({
                "owner": o.owner,
                "name": state.app.config.sales.owner(&o.owner).map(|x| x.name.clone()),
                "assigned": o.assigned,
                "accepted": o.accepted,
                "rejected": o.rejected,
                "expired": o.expired,
                "breaches": o.breaches,
                "time_to_accept": spread(&o.time_to_accept),
            })
        })
        .collect();
    let period = viewer
        .lang
        .t("board_sla_period")
        .replace("{days}", &REPORT_DAYS.to_string())
        .replace("{since}", &when::at(to_ms(report.period.since), tz))
        .replace("{until}", &when::at(to_ms(report.period.until), tz));
    Ok(json!({
        "period": period,
        "handoffs": report.handoffs,
        "by_state": report.by_state,
        "breached": report.breached,
        "breached_pct": report.breached_pct.map(|p| format!("{p:.1}")),
        "time_to_accept": spread(&report.time_to_accept),
        "business_time_to_accept": spread(&report.business_time_to_accept),
        "owners": owners,
    }))
}

/// `GET /ui/board`.
pub async fn board(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<BoardQuery>,
) -> Response {
    let now = state.app.processor.clock.now();
    let owner = if viewer.sees_all() {
        None
    } else {
        match viewer.user.owner.clone() {
            Some(o) => Some(o),
            None => {
                return page::page(
                    "board.html",
                    &viewer,
                    "board",
                    json!({"no_owner": true, "groups": [], "sla": null}),
                );
            }
        }
    };
    let open = match state
        .app
        .processor
        .store
        .handoffs(&HandoffFilter {
            state: Some("open".into()),
            lead_id: None,
            owner,
            limit: MAX_OPEN,
        })
        .await
    {
        Ok(h) => h,
        Err(e) => return page::internal(&viewer, e),
    };
    // Per owner (by name), each owner's earliest deadline first.
    let mut groups: BTreeMap<String, Vec<&HandoffRow>> = BTreeMap::new();
    for h in &open {
        groups
            .entry(h.owner.clone().unwrap_or_default())
            .or_default()
            .push(h);
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(owner, mut list)| {
            list.sort_by_key(|h| (h.due_at.unwrap_or(i64::MAX), h.id));
            let cards: Vec<Value> = list
                .into_iter()
                .map(|h| card(&state, &viewer, h, now))
                .collect();
            let overdue = cards.iter().filter(|c| c["overdue"] == true).count();
            json!({
                "owner": owner,
                "name": state.app.config.sales.owner(&owner).map(|o| o.name.clone()),
                "count": cards.len(),
                "overdue": overdue,
                "handoffs": cards,
            })
        })
        .collect();
    let sla = match sla(&state, &viewer, now).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    page::page(
        "board.html",
        &viewer,
        "board",
        json!({
            "no_owner": false,
            "total": open.len(),
            "groups": groups,
            "notice": answered_notice(&viewer, &q),
            "sla": sla,
        }),
    )
}

/// The handoff `id` if `viewer` may see it, else the 404 or 403 page.
async fn visible(state: &ConsoleState, viewer: &Viewer, id: i64) -> Result<HandoffRow, Response> {
    let h = match state.app.processor.store.handoff(id).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(page::not_found(
                viewer,
                &viewer
                    .lang
                    .t("board_no_handoff")
                    .replace("{id}", &id.to_string()),
            ));
        }
        Err(e) => return Err(page::internal(viewer, e)),
    };
    if !may_see(viewer, &h) {
        return Err(page::forbidden(viewer, viewer.lang.t("board_not_yours")));
    }
    Ok(h)
}

/// `GET /ui/handoffs/{id}`.
pub async fn handoff(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    let h = match visible(&state, &viewer, id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let log = match state.app.processor.store.handoff_log(id).await {
        Ok(l) => l,
        Err(e) => return page::internal(&viewer, e),
    };
    let tz = state.app.config.time_zone;
    let log: Vec<Value> = log
        .iter()
        .map(|l| {
            json!({
                "at": when::at(l.at, tz),
                "what": l.what,
                "owner": l.owner,
                "detail": l.detail,
            })
        })
        .collect();
    let now = state.app.processor.clock.now();
    page::page(
        "handoff.html",
        &viewer,
        "board",
        json!({
            "h": card(&state, &viewer, &h, now),
            "owners_had": h.owners_had(),
            "log": log,
        }),
    )
}

/// The answer form: the reason of a rejection, and where to go back to.
#[derive(Debug, Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    reason: String,
    /// `handoff` goes back to the handoff's page; anything else to the board.
    #[serde(default)]
    back: String,
}

/// `POST /ui/handoffs/{id}/accept`.
pub async fn accept(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    form: Result<Form<AnswerForm>, FormRejection>,
) -> Response {
    answer(&state, &viewer, id, form, |_| Answer::Accept).await
}

/// `POST /ui/handoffs/{id}/reject` (with `reason`).
pub async fn reject(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    form: Result<Form<AnswerForm>, FormRejection>,
) -> Response {
    answer(&state, &viewer, id, form, |f| Answer::Reject {
        reason: f.reason.clone(),
    })
    .await
}

async fn answer(
    state: &ConsoleState,
    viewer: &Viewer,
    id: i64,
    form: Result<Form<AnswerForm>, FormRejection>,
    what: impl FnOnce(&AnswerForm) -> Answer,
) -> Response {
    let Ok(Form(form)) = form else {
        return page::error(
            Some(viewer),
            viewer.lang,
            StatusCode::BAD_REQUEST,
            viewer.lang.t("board_bad_form"),
        );
    };
    let h = match visible(state, viewer, id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    if !may_answer(viewer, &h) {
        return page::forbidden(viewer, viewer.lang.t("board_not_yours_to_answer"));
    }
    let answer = what(&form);
    match state.app.desk.answer(id, None, answer, &viewer.by()).await {
        Ok(done) => {
            tracing::info!(handoff = id, state = %done.state, by = %viewer.by(), "handoff answered in the console");
            let to = if form.back == "handoff" {
                format!("/ui/handoffs/{id}")
            } else {
                format!("/ui/board?answered={id}&done={}", done.state)
            };
            page::see_other(&to)
        }
        Err(AnswerError::NotFound(_)) => page::not_found(
            viewer,
            &viewer
                .lang
                .t("board_no_handoff")
                .replace("{id}", &id.to_string()),
        ),
        Err(e @ (AnswerError::MissingReason | AnswerError::ReasonTooLong(_))) => page::error(
            Some(viewer),
            viewer.lang,
            StatusCode::BAD_REQUEST,
            &format!("{e}. {}", viewer.lang.t("board_go_back")),
        ),
        Err(AnswerError::Store(e)) => page::internal(viewer, e),
        Err(e) => page::error(
            Some(viewer),
            viewer.lang,
            StatusCode::CONFLICT,
            &e.to_string(),
        ),
    }
}
