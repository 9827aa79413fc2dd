//! CORS for the intake routes, so a website's script can send events with an ingest
//! key: the origins of `http.cors_origins` may POST with `Authorization` and
//! `Content-Type`; the browser's preflight is answered before the key is checked.
//! Other routes send no CORS headers, so no page elsewhere can read leads.

use std::time::Duration;

use axum::Router;
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use super::AppState;
use crate::config::http::HttpConfig;

/// `router` with CORS for the configured origins; unchanged when there are none.
pub fn intake(router: Router<AppState>, config: &HttpConfig) -> Router<AppState> {
    if config.cors_origins.is_empty() {
        return router;
    }
    let origins = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    router.layer(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::POST])
            .allow_headers([AUTHORIZATION, CONTENT_TYPE, CONTENT_ENCODING])
            .max_age(Duration::from_secs(3600)),
    )
}
