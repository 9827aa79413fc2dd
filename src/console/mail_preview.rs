//! `GET /ui/mails/{id}/preview`: a sent mail as it was sent (the stored content of
//! `GET /v1/mails/{id}`), for an `<iframe sandbox>` on the lead page: the HTML part
//! under a policy that loads and runs nothing (`default-src 'none'`, inline styles and
//! `data:` images only), or the text part when the mail has no HTML. A sales user sees
//! only mails to leads with a handoff they own.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::ConsoleState;
use super::lead::may_see;
use super::page::{self, Viewer};

/// What a mail's HTML may do inside the preview: show itself, nothing else.
pub const PREVIEW_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'";

pub async fn preview(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    let lang = viewer.lang;
    let found = match state.app.processor.store.mail(id).await {
        Ok(f) => f,
        Err(e) => return page::internal(&viewer, e),
    };
    let Some((mail, content)) = found else {
        return page::not_found(&viewer, &format!("{} {id}", lang.t("mail_preview_none")));
    };
    match may_see(&state, &viewer, mail.lead_id).await {
        Ok(true) => {}
        Ok(false) => return page::forbidden(&viewer, lang.t("lead_forbidden")),
        Err(e) => return page::internal(&viewer, e),
    }
    let Some(content) = content else {
        return page::not_found(&viewer, lang.t("mail_preview_not_sent"));
    };
    let html = if content.html_body.trim().is_empty() {
        let data = json!({"subject": content.subject, "text": content.text_body});
        match page::render("mail_text.html", Some(&viewer), lang, "", data) {
            Ok(h) => h,
            Err(e) => return page::internal(&viewer, e),
        }
    } else {
        content.html_body
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_SECURITY_POLICY, PREVIEW_POLICY),
            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}
