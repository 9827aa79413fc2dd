//! API token check: `Authorization: Bearer TOKEN`, or HTTP Basic with the token as user
//! name (how Segment sends its write key).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// The token in the request, if any.
fn presented(req: &Request) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Some(rest.trim().to_string()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            Some(
                text.split_once(':')
                    .map_or(text.clone(), |(u, _)| u.to_string()),
            )
        }
        _ => None,
    }
}

/// Compares through a hash so the time taken does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

pub async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match presented(&req) {
        Some(token) if same(&token, &state.config.api_token) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::unauthorized("the API token is wrong")),
        None => Err(ApiError::unauthorized(
            "missing API token: send `Authorization: Bearer TOKEN`, or HTTP Basic with the token as user name",
        )),
    }
}
