//! Compressed request bodies: a body sent with `Content-Encoding: gzip` (RudderStack's
//! SDKs send their batches so) is inflated before the handlers read it. The size limit
//! (`max_request_bytes`) applies to the inflated body, and inflating stops one byte
//! past it: a small body that would inflate to gigabytes (a zip bomb) is refused with
//! 413 after at most the limit was inflated.

use std::io::Read;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use flate2::read::MultiGzDecoder;

use super::{ApiError, AppState};

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_body",
        format!(
            "the body is larger than {limit} bytes once inflated (max_request_bytes); \
             send smaller batches"
        ),
    )
}

/// Inflates gzip bodies in place; other encodings than gzip and identity get 415.
pub async fn inflate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let encoding = match req.headers().get(CONTENT_ENCODING) {
        None => return Ok(next.run(req).await),
        Some(v) => v.to_str().unwrap_or_default().trim().to_ascii_lowercase(),
    };
    match encoding.as_str() {
        "" | "identity" => return Ok(next.run(req).await),
        "gzip" | "x-gzip" => {}
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_body",
                format!(
                    "Content-Encoding `{other}` is not supported; send the body as is or \
                     gzip-compressed"
                ),
            ));
        }
    }
    let limit = state.config.max_request_bytes;
    let (mut parts, body) = req.into_parts();
    let compressed = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    let inflated = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        MultiGzDecoder::new(&compressed[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map(|_| out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "the body is marked Content-Encoding: gzip but cannot be inflated ({e}); \
                 nothing was stored"
            ),
        )
    })?;
    if inflated.len() > limit {
        return Err(too_large(limit));
    }
    parts.headers.remove(CONTENT_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(inflated.len()));
    Ok(next
        .run(Request::from_parts(parts, Body::from(inflated)))
        .await)
}
