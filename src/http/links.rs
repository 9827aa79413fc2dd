//! The links in mails, served without the API token (the signed token is the
//! permission): `/confirm/{token}` double opt-in (GET shows a page, POST
//! confirms; the link works for 30 days), `/o/{token}` open pixel and `/c/{token}`
//! click redirect (unsubscribe and preferences: [`super::preferences`]). A token that
//! does not verify gets 400 and changes nothing; a valid token for a lead that no
//! longer has that address gets 404.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::json;

use super::AppState;
use crate::ingest::segment;
use crate::mail::token::{Claim, Purpose};
use crate::process::manual::ConsentKind;

/// A 1x1 transparent GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"de\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
         <h1>{title}</h1>{body}</body></html>"
    );
    (status, Html(html)).into_response()
}

fn invalid() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Ungültiger Link",
        "<p>Dieser Link ist ungültig oder unvollständig. Bitte verwenden Sie den Link aus \
         der E-Mail unverändert.</p>",
    )
}

fn expired() -> Response {
    page(
        StatusCode::GONE,
        "Link abgelaufen",
        "<p>Dieser Bestätigungslink ist abgelaufen. Bitte melden Sie sich erneut an.</p>",
    )
}

fn unknown() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Link nicht mehr gültig",
        "<p>Zu diesem Link gibt es keinen Empfänger mehr.</p>",
    )
}

fn verify(state: &AppState, token: &str, purpose: Purpose) -> Option<Claim> {
    state.signer.verify(token, purpose).ok()
}

/// GET: asks to confirm the newsletter sign-up (mail scanners follow links; they must
/// not sign anyone up).
#[utoipa::path(
    get,
    path = "/confirm/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "The confirmation page with its button", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 410, description = "The link expired", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
    ),
)]
pub async fn confirm_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(claim) = verify(&state, &token, Purpose::Confirm) else {
        return invalid();
    };
    if claim.expired(state.processor.clock.now()) {
        return expired();
    }
    page(
        StatusCode::OK,
        "Anmeldung bestätigen",
        "<p>Bitte bestätigen Sie, dass Sie unseren Newsletter erhalten möchten.</p>\
         <form method=\"post\"><button type=\"submit\">Ja, Anmeldung bestätigen</button></form>",
    )
}

/// POST: confirms the newsletter sign-up (double opt-in).
#[utoipa::path(
    post,
    path = "/confirm/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "Confirmed (double opt-in)", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 404, description = "The lead no longer has the address", body = String, content_type = "text/html"),
        (status = 410, description = "The link expired", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(claim) = verify(&state, &token, Purpose::Confirm) else {
        return invalid();
    };
    if claim.expired(state.processor.clock.now()) {
        return expired();
    }
    let done = Done {
        title: "Anmeldung bestätigt",
        body: "<p>Vielen Dank! Ihre Anmeldung ist bestätigt.</p>",
        failed: "Die Bestätigung",
    };
    record_consent(&state, &claim, true, "double opt-in", done).await
}

/// The page after a consent change: its title and text, and what failed otherwise.
struct Done {
    title: &'static str,
    body: &'static str,
    failed: &'static str,
}

/// Grants or withdraws mail consent for the lead of a link; the source names the link
/// and the mail it came in.
async fn record_consent(
    state: &AppState,
    claim: &Claim,
    granted: bool,
    what: &str,
    done: Done,
) -> Response {
    let source = match claim.mail {
        Some(m) => format!("{what} (mail {m})"),
        None => what.to_string(),
    };
    match state
        .processor
        .set_consent(
            claim.lead,
            &|email: &str| state.signer.is_for(claim, email),
            ConsentKind::Email,
            granted,
            &source,
        )
        .await
    {
        Ok(Some(_)) => page(StatusCode::OK, done.title, done.body),
        Ok(None) => unknown(),
        Err(e) => {
            tracing::error!(error = %e, what, "consent change failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Bitte später erneut versuchen",
                &format!(
                    "<p>{} konnte gerade nicht gespeichert werden.</p>",
                    done.failed
                ),
            )
        }
    }
}

/// The open pixel: always the image; an "Email Opened" event for leads who allowed
/// tracking (the first open of each mail).
#[utoipa::path(
    get,
    path = "/o/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "A 1x1 GIF, whatever the token", body = String, content_type = "image/gif"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
    ),
)]
pub async fn open(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if let Some(claim) = verify(&state, &token, Purpose::Open) {
        let mail = claim.mail.unwrap_or_default();
        engagement(
            &state,
            &claim,
            "Email Opened",
            format!("open:{mail}"),
            json!({}),
        )
        .await;
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response()
}

/// The click redirect: an "Email Clicked" event (the first click per mail and link)
/// for leads who allowed tracking, then on to the link.
#[utoipa::path(
    get,
    path = "/c/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 303, description = "On to the link's address", headers(("location" = String, description = "The link's address"))),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
    ),
)]
pub async fn click(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(claim) = verify(&state, &token, Purpose::Click) else {
        return invalid();
    };
    let Some(url) = claim.url.clone() else {
        return invalid();
    };
    let mail = claim.mail.unwrap_or_default();
    let id = format!("click:{mail}:{}", &hex::encode(sha2_of(&url))[..16]);
    engagement(&state, &claim, "Email Clicked", id, json!({ "url": url })).await;
    Redirect::to(&url).into_response()
}

fn sha2_of(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// Stores an engagement event like any other, so the rules score it.
async fn engagement(
    state: &AppState,
    claim: &Claim,
    name: &str,
    message_id: String,
    mut properties: serde_json::Value,
) {
    if !state.config.mail.tracking {
        return;
    }
    let p = &state.processor;
    let email = match p.store.leads_by_ids(&[claim.lead]).await {
        Ok(leads) => match leads.get(&claim.lead) {
            Some(l)
                if state.signer.is_for(claim, l.email.as_str()) && l.consent_tracking.granted =>
            {
                l.email.as_str().to_string()
            }
            _ => return,
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up the lead of a tracking link");
            return;
        }
    };
    if let Some(m) = claim.mail {
        properties["mail_id"] = json!(m);
    }
    let body = json!({
        "userId": email,
        "event": name,
        "properties": properties,
        "messageId": message_id,
    });
    let at = segment::At {
        index: None,
        prefix: "",
    };
    let now = p.clock.now();
    let item = match segment::parse_item(&body, Some("track"), at, now, &mut |_| String::new()) {
        Ok(item) => item,
        Err(e) => {
            tracing::warn!(?e, "engagement event not stored");
            return;
        }
    };
    // Through the intake writer, like the API's events: stored in its next commit and
    // handed to processing at once.
    if let Err(e) = state.intake.submit(vec![item], false).await {
        tracing::warn!(error = %e, "engagement event not stored");
    }
}
