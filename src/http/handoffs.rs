//! Handoffs over HTTP. For a CRM (API token): `GET /v1/handoffs?state=open`,
//! `GET /v1/handoffs/{id}` (with its log and webhook calls),
//! `POST /v1/handoffs/{id}/accept` and `POST /v1/handoffs/{id}/reject` (`reason`).
//! For the salesperson, the signed links of the notification: `GET /h/{token}` shows
//! the handoff with a button (and a reason field to reject), `POST /h/{token}` acts.
//! A link that does not verify gets 400; one that expired 410; one for a handoff that
//! was answered or went to another owner 409. Nothing changes in those cases.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller};
use crate::handoff::{Answer, AnswerError};
use crate::ingest::InputError;
use crate::mail::token::{Claim, Purpose};
use crate::store::{HandoffFilter, HandoffRow};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// open (waiting for sales), new, escalated, accepted, rejected, expired.
    state: Option<String>,
    owner: Option<String>,
    limit: Option<i64>,
}

const STATES: &[&str] = &[
    "open",
    "new",
    "escalated",
    "accepted",
    "rejected",
    "expired",
];

#[utoipa::path(
    get,
    path = "/v1/handoffs",
    tag = "handoffs",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(
        ("state" = Option<String>, Query, description = "open, new, escalated, accepted, rejected or expired"),
        ("owner" = Option<String>, Query, description = "Only handoffs of this owner"),
        ("limit" = Option<i64>, Query, description = "At most this many (100; 1000 at most)"),
    ),
    responses(
        (status = 200, description = "Handoffs", body = super::openapi::HandoffList),
        (status = 400, description = "A parameter is not valid; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        super::openapi::KeyErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("state `{s}` is not one of: {}", STATES.join(", ")),
        ));
    }
    let rows = state
        .processor
        .store
        .handoffs(&HandoffFilter {
            state: q.state,
            lead_id: None,
            owner: q.owner,
            limit: q.limit.unwrap_or(100).clamp(1, 1000),
        })
        .await
        .map_err(ApiError::internal)?;
    let now = state.processor.clock.now();
    let list: Vec<Value> = rows
        .iter()
        .map(|h| {
            let mut v = serde_json::to_value(h).unwrap_or_default();
            v["overdue"] =
                json!(h.is_open() && h.due_at.is_some_and(|d| d < crate::clock::to_ms(now)));
            v
        })
        .collect();
    Ok(Json(json!({ "handoffs": list })))
}

#[utoipa::path(
    get,
    path = "/v1/handoffs/{id}",
    tag = "handoffs",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(("id" = i64, Path, description = "The handoff's id")),
    responses(
        (status = 200, description = "The handoff with its log", body = super::openapi::HandoffDetail),
        (status = 400, description = "Not a number; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No such handoff", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    match state.desk.show(id).await.map_err(ApiError::internal)? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError::not_found(format!("no handoff {id}"))),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    #[serde(default)]
    reason: Option<String>,
    /// Who answers (a salesperson, a CRM name); recorded when an admin key names them,
    /// else `api:NAME` of the key.
    #[serde(default)]
    by: Option<String>,
}

fn request(bytes: Result<Bytes, BytesRejection>) -> Result<AnswerRequest, ApiError> {
    let bytes = bytes.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(AnswerRequest {
            reason: None,
            by: None,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::input(vec![InputError {
            index: None,
            path: "$".into(),
            message: format!("{e}; send {{\"reason\": \"no budget this year\", \"by\": \"anna\"}}"),
        }])
    })
}

#[utoipa::path(
    post,
    path = "/v1/handoffs/{id}/accept",
    tag = "handoffs",
    security(("bearer" = ["write"]), ("basic" = ["write"])),
    params(("id" = i64, Path, description = "The handoff's id")),
    request_body(content = Option<AnswerRequest>, description = "Who answers"),
    responses(
        (status = 200, description = "Accepted", body = crate::store::HandoffRow),
        (status = 400, description = "The body is not valid; nothing was stored; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No such handoff", body = super::openapi::ErrorBody),
        (status = 409, description = "The handoff is closed or cannot be answered", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn accept(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req = request(bytes)?;
    answer_api(&state, id, Answer::Accept, caller.by(req.by.as_deref())).await
}

#[utoipa::path(
    post,
    path = "/v1/handoffs/{id}/reject",
    tag = "handoffs",
    security(("bearer" = ["write"]), ("basic" = ["write"])),
    params(("id" = i64, Path, description = "The handoff's id")),
    request_body(content = Option<AnswerRequest>, description = "The reason (required) and who answers"),
    responses(
        (status = 200, description = "Rejected", body = crate::store::HandoffRow),
        (status = 400, description = "The body is not valid; nothing was stored; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No such handoff", body = super::openapi::ErrorBody),
        (status = 409, description = "The handoff is closed or cannot be answered", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn reject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req = request(bytes)?;
    let reason = req.reason.unwrap_or_default();
    answer_api(
        &state,
        id,
        Answer::Reject { reason },
        caller.by(req.by.as_deref()),
    )
    .await
}

async fn answer_api(
    state: &AppState,
    id: i64,
    answer: Answer,
    by: String,
) -> Result<Json<Value>, ApiError> {
    match state.desk.answer(id, None, answer, &by).await {
        Ok(h) => Ok(Json(serde_json::to_value(h).unwrap_or_default())),
        Err(AnswerError::NotFound(_)) => Err(ApiError::not_found(format!("no handoff {id}"))),
        Err(e @ (AnswerError::Closed(_) | AnswerError::Reassigned | AnswerError::NotAssigned)) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                e.to_string(),
            ))
        }
        Err(e @ (AnswerError::MissingReason | AnswerError::ReasonTooLong(_))) => {
            Err(ApiError::input(vec![InputError {
                index: None,
                path: "reason".into(),
                message: e.to_string(),
            }]))
        }
        Err(e @ (AnswerError::Change(_) | AnswerError::NoLead)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
        )),
        Err(AnswerError::Store(e)) => Err(ApiError::internal(e)),
    }
}

/// Escapes text for HTML, in text and in attribute values of either quote.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"de\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
         <h1>{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

/// A link's claim and its handoff, or the page that says why not.
async fn open_link(state: &AppState, token: &str) -> Result<(Claim, HandoffRow), Response> {
    let claim = state
        .signer
        .verify(token, Purpose::Accept)
        .or_else(|_| state.signer.verify(token, Purpose::Reject))
        .map_err(|_| {
            page(
                StatusCode::BAD_REQUEST,
                "Ungültiger Link",
                "<p>Dieser Link ist ungültig oder unvollständig. Bitte verwenden Sie den Link \
                 aus der Benachrichtigung unverändert.</p>",
            )
        })?;
    if claim.expired(state.processor.clock.now()) {
        return Err(page(
            StatusCode::GONE,
            "Link abgelaufen",
            "<p>Dieser Link ist abgelaufen. Die Übergabe ist in der Liste offener Übergaben \
             zu finden.</p>",
        ));
    }
    let id = claim.mail.unwrap_or_default();
    let h = match state.processor.store.handoff(id).await {
        Ok(Some(h)) if h.lead_id == claim.lead => h,
        Ok(_) => {
            return Err(page(
                StatusCode::NOT_FOUND,
                "Übergabe nicht gefunden",
                "<p>Zu diesem Link gibt es keine Übergabe mehr.</p>",
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a handoff");
            return Err(page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Gerade nicht möglich",
                "<p>Bitte versuchen Sie es in einer Minute noch einmal.</p>",
            ));
        }
    };
    if let Some(refused) = refusal(&h, claim.round) {
        return Err(refused);
    }
    Ok((claim, h))
}

fn refusal(h: &HandoffRow, round: Option<i64>) -> Option<Response> {
    if !h.is_open() {
        let what = match h.state.as_str() {
            "accepted" => "angenommen",
            "rejected" => "abgelehnt",
            "expired" => "ans Marketing zurückgegeben",
            _ => "abgeschlossen",
        };
        return Some(page(
            StatusCode::CONFLICT,
            "Schon erledigt",
            &format!("<p>Diese Übergabe wurde bereits {what}. Es wurde nichts geändert.</p>"),
        ));
    }
    if round != Some(h.round) {
        return Some(page(
            StatusCode::CONFLICT,
            "Neu zugewiesen",
            "<p>Diese Übergabe wurde inzwischen jemand anderem zugewiesen. Es wurde nichts \
             geändert.</p>",
        ));
    }
    None
}

/// GET: shows the handoff and asks (mail scanners follow links; they must not answer).
#[utoipa::path(
    get,
    path = "/h/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "The handoff with a button", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 404, description = "No such handoff", body = String, content_type = "text/html"),
        (status = 409, description = "Answered already, or reassigned", body = String, content_type = "text/html"),
        (status = 410, description = "The link expired", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn link_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (claim, h) = match open_link(&state, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let due = h
        .due_at
        .map(|d| crate::clock::from_ms(d).to_rfc3339())
        .unwrap_or_default();
    let summary = format!(
        "<p><strong>{}</strong><br>Grund: {}<br>Fällig: {}</p>",
        esc(&h.email),
        esc(&h.reason),
        esc(&due)
    );
    if claim.purpose == Purpose::Accept {
        page(
            StatusCode::OK,
            "Lead annehmen",
            &format!(
                "{summary}<form method=\"post\"><button type=\"submit\">Annehmen</button></form>"
            ),
        )
    } else {
        page(
            StatusCode::OK,
            "Lead ablehnen",
            &format!(
                "{summary}<form method=\"post\"><p><label for=\"reason\">Warum? (Das Marketing \
                 sieht die Begründung)</label><br><textarea id=\"reason\" name=\"reason\" \
                 rows=\"4\" cols=\"40\" required></textarea></p>\
                 <button type=\"submit\">Ablehnen</button></form>"
            ),
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    reason: String,
}

/// POST: accepts, or rejects with the form's reason.
#[utoipa::path(
    post,
    path = "/h/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    request_body(content = super::openapi::RejectForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Accepted or rejected", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify, or the reason is missing", body = String, content_type = "text/html"),
        (status = 404, description = "No such handoff", body = String, content_type = "text/html"),
        (status = 409, description = "Answered already, or reassigned", body = String, content_type = "text/html"),
        (status = 410, description = "The link expired", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn link_answer(
    State(state): State<AppState>,
    Path(token): Path<String>,
    form: Result<axum::Form<LinkForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (claim, h) = match open_link(&state, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let by = state
        .config
        .sales
        .owners
        .iter()
        .find(|o| state.signer.is_for(&claim, o.email.email.as_ref()))
        .map_or_else(|| "sales link".to_string(), |o| o.id.clone());
    let answer = match claim.purpose {
        Purpose::Accept => Answer::Accept,
        _ => Answer::Reject {
            reason: form.map(|f| f.0.reason).unwrap_or_default(),
        },
    };
    match state.desk.answer(h.id, claim.round, answer, &by).await {
        Ok(done) if done.state == "accepted" => page(
            StatusCode::OK,
            "Angenommen",
            &format!(
                "<p>Der Lead {} gehört jetzt Ihnen. Viel Erfolg beim Gespräch!</p>",
                esc(&done.email)
            ),
        ),
        Ok(_) => page(
            StatusCode::OK,
            "Abgelehnt",
            "<p>Der Lead geht mit Ihrer Begründung zurück ans Marketing.</p>",
        ),
        Err(AnswerError::MissingReason) => page(
            StatusCode::BAD_REQUEST,
            "Begründung fehlt",
            "<p>Bitte geben Sie einen Grund für die Ablehnung an. Gehen Sie zurück und \
             versuchen Sie es noch einmal.</p>",
        ),
        Err(AnswerError::ReasonTooLong(len)) => page(
            StatusCode::BAD_REQUEST,
            "Begründung zu lang",
            &format!(
                "<p>Die Begründung hat {len} Zeichen, höchstens {} sind möglich. Gehen Sie \
                 zurück und kürzen Sie sie.</p>",
                crate::handoff::answer::MAX_REASON
            ),
        ),
        Err(e @ AnswerError::Change(_)) => page(
            StatusCode::BAD_REQUEST,
            "Nicht möglich",
            &format!("<p>{}. Es wurde nichts geändert.</p>", esc(&e.to_string())),
        ),
        Err(AnswerError::Closed(_) | AnswerError::Reassigned) => {
            let fresh = state.processor.store.handoff(h.id).await.ok().flatten();
            fresh
                .and_then(|f| refusal(&f, claim.round))
                .unwrap_or_else(|| {
                    page(
                        StatusCode::CONFLICT,
                        "Schon erledigt",
                        "<p>Es wurde nichts geändert.</p>",
                    )
                })
        }
        Err(e) => {
            tracing::error!(handoff = h.id, error = %e, "cannot record a handoff answer");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Gerade nicht möglich",
                "<p>Es wurde nichts geändert. Bitte versuchen Sie es in einer Minute noch \
                 einmal.</p>",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn html_from_lead_data_is_shown_as_text() {
        assert_eq!(
            esc(r#"<script>alert('x')</script> & "Co" <a href='#'>"#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot; \
             &lt;a href=&#39;#&#39;&gt;"
        );
        assert_eq!(esc("Müller GmbH"), "Müller GmbH");
    }
}
