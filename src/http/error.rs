//! API errors: a status, a stable code, a message, and for input errors the list of
//! problems with their JSON paths and batch indexes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ingest::InputError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<InputError>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    /// The same code under the name Segment's and RudderStack's SDKs read (they log
    /// `code` and `message` of a refused batch).
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [InputError],
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Bad input: nothing of the request was stored.
    pub fn input(details: Vec<InputError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{one}; nothing was stored"),
            many => format!(
                "{} problems in the request (see details); nothing was stored",
                many.len()
            ),
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_input",
            message,
            details,
        }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be completed; nothing was stored; it is safe to retry",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            code: self.code,
            message: &self.message,
            details: &self.details,
        };
        (self.status, Json(body)).into_response()
    }
}
