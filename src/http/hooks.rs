//! The ESPs' webhooks, public (providers cannot send the API token) and each checked
//! its own way: `/hooks/ses` (SNS signature), `/hooks/postmark` (HTTP Basic
//! credentials), `/hooks/mailgun` (HMAC signature), `/hooks/sendgrid` (ECDSA
//! signature). A provider without configuration answers 404.

use std::sync::LazyLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};

use super::bounces::act;
use super::{ApiError, AppState};
use crate::bounces::{mailgun, postmark, sendgrid, ses};

/// Fetches SNS signing certificates and confirms subscriptions.
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
});

fn off(provider: &str) -> ApiError {
    ApiError::not_found(format!(
        "the {provider} webhook is not configured (see [bounces.{provider}])"
    ))
}

fn refused(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message.to_string())
}

fn bad(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_input",
        message.to_string(),
    )
}

#[utoipa::path(
    post,
    path = "/hooks/ses",
    tag = "hooks",
    request_body(content = Object, content_type = "text/plain", description = "An SNS message (JSON)"),
    responses(
        (status = 200, description = "Reports done, or the subscription confirmed", body = super::openapi::SesAnswer),
        (status = 400, description = "Not the provider's format", body = super::openapi::ErrorBody),
        (status = 403, description = "The signature does not verify", body = super::openapi::ErrorBody),
        (status = 404, description = "The provider is not configured", body = super::openapi::ErrorBody),
        (status = 500, description = "The request could not be completed", body = super::openapi::ErrorBody),
        (status = 503, description = "The signing certificate cannot be fetched", body = super::openapi::ErrorBody),
    ),
)]
pub async fn ses(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let Some(config) = &state.config.bounces.ses else {
        return Err(off("ses"));
    };
    let message = match ses::verify(&body, config, &CLIENT).await {
        Ok(m) => m,
        Err(e @ ses::SnsError::Shape(_)) => return Err(bad(e)),
        Err(e @ ses::SnsError::Fetch(_)) => {
            tracing::warn!(error = %e, "SNS message not checked");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "SNS message refused");
            return Err(refused(e));
        }
    };
    match message.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = message.subscribe_url.clone().unwrap_or_default();
            tracing::info!(topic = %message.topic_arn, url = %url, "SNS subscription to confirm");
            let confirmed = match url::Url::parse(&url) {
                Ok(u)
                    if u.scheme() == "https"
                        && u.host_str().is_some_and(|h| {
                            h.starts_with("sns.")
                                && (h.ends_with(".amazonaws.com")
                                    || h.ends_with(".amazonaws.com.cn"))
                        }) =>
                {
                    CLIENT
                        .get(u)
                        .timeout(std::time::Duration::from_secs(10))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
                _ => false,
            };
            if !confirmed {
                tracing::warn!(url = %url, "SNS subscription not confirmed: open the SubscribeURL by hand");
            }
            Ok(Json(
                json!({ "subscription": if confirmed { "confirmed" } else { "logged" } }),
            ))
        }
        "Notification" => {
            let mut reports =
                ses::reports(&message.message, &state.config.mail.secret).map_err(bad)?;
            for r in &mut reports {
                r.id = Some(message.message_id.clone());
            }
            act(&state, &reports).await
        }
        _ => Ok(Json(json!({ "reports": [] }))),
    }
}

#[utoipa::path(
    post,
    path = "/hooks/postmark",
    tag = "hooks",
    request_body(content = Object, description = "A Postmark bounce or spam-complaint webhook"),
    responses(
        (status = 200, description = "What was done per report", body = super::openapi::BounceReports),
        (status = 401, description = "Not the credentials of `[bounces.postmark]`", body = super::openapi::ErrorBody),
        (status = 400, description = "Not the provider's format", body = super::openapi::ErrorBody),
        (status = 404, description = "The provider is not configured", body = super::openapi::ErrorBody),
        (status = 500, description = "The request could not be completed", body = super::openapi::ErrorBody),
    ),
)]
pub async fn postmark(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(config) = &state.config.bounces.postmark else {
        return Err(off("postmark"));
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", config.user, config.password))
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let same = given.len() == expected.len()
        && given
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(ApiError::unauthorized(
            "the webhook's credentials are not those of [bounces.postmark]",
        ));
    }
    let reports = postmark::reports(&body).map_err(bad)?;
    act(&state, &reports).await
}

#[utoipa::path(
    post,
    path = "/hooks/mailgun",
    tag = "hooks",
    request_body(content = Object, description = "A Mailgun event webhook"),
    responses(
        (status = 200, description = "What was done per report", body = super::openapi::BounceReports),
        (status = 400, description = "Not the provider's format", body = super::openapi::ErrorBody),
        (status = 403, description = "The signature does not verify", body = super::openapi::ErrorBody),
        (status = 404, description = "The provider is not configured", body = super::openapi::ErrorBody),
        (status = 500, description = "The request could not be completed", body = super::openapi::ErrorBody),
    ),
)]
pub async fn mailgun(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let Some(config) = &state.config.bounces.mailgun else {
        return Err(off("mailgun"));
    };
    let reports = mailgun::reports(
        &body,
        &config.signing_key,
        &state.config.mail.secret,
        state.processor.clock.now(),
    )
    .map_err(|e| match e {
        mailgun::MailgunError::Shape(_) => bad(e),
        _ => refused(e),
    })?;
    act(&state, &reports).await
}

#[utoipa::path(
    post,
    path = "/hooks/sendgrid",
    tag = "hooks",
    request_body(content = Vec<Object>, description = "SendGrid events"),
    responses(
        (status = 200, description = "What was done per report", body = super::openapi::BounceReports),
        (status = 400, description = "Not the provider's format", body = super::openapi::ErrorBody),
        (status = 403, description = "The signature does not verify", body = super::openapi::ErrorBody),
        (status = 404, description = "The provider is not configured", body = super::openapi::ErrorBody),
        (status = 500, description = "The request could not be completed", body = super::openapi::ErrorBody),
    ),
)]
pub async fn sendgrid(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(config) = &state.config.bounces.sendgrid else {
        return Err(off("sendgrid"));
    };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let reports = sendgrid::reports(
        &body,
        h(sendgrid::SIGNATURE_HEADER),
        h(sendgrid::TIMESTAMP_HEADER),
        &config.public_key,
        state.processor.clock.now(),
    )
    .map_err(|e| match e {
        sendgrid::SendgridError::Shape(_) => bad(e),
        _ => refused(e),
    })?;
    act(&state, &reports).await
}
