//! The console's static files, embedded in the binary: its style sheet and scripts,
//! htmx and uPlot (pinned copies from the npm registry, see
//! `console/assets/LICENSES.md`, served at `/ui/assets/LICENSES.md`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/assets/console.js"),
    ),
    (
        "funnel.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/assets/funnel.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/assets/htmx.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/assets/uPlot.min.css"),
    ),
    (
        "LICENSES.md",
        "text/plain; charset=utf-8",
        include_bytes!("../../console/assets/LICENSES.md"),
    ),
];

/// `GET /ui/assets/{name}`.
pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}
