//! The gate in front of every console page but sign-in and the static files: a request
//! needs a valid session cookie (else the browser goes to `/ui/login`), and a `POST`
//! needs the session's CSRF token, in the form field `csrf` or the `X-CSRF-Token`
//! header (htmx sends it). The signed-in [`Viewer`] is handed to the page.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ConsoleState;
use super::page::{self, Viewer};
use super::session::COOKIE;
use super::signin::cookie;
use super::texts::Lang;

/// Form bodies the console reads at most.
const MAX_FORM_BYTES: usize = 1 << 20;

pub async fn require(State(state): State<ConsoleState>, req: Request, next: Next) -> Response {
    let now = state.now_ms();
    let headers = req.headers();
    let found = cookie(headers, COOKIE)
        .and_then(|v| state.shared.sessions.check(v, &state.app.config.ui, now));
    let Some((session, user)) = found else {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/ui/");
        let to = if req.method() == Method::GET {
            format!(
                "/ui/login?next={}",
                form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
            )
        } else {
            "/ui/login".to_string()
        };
        let mut res = page::see_other(&to);
        // htmx follows redirects inside the page; this makes it load the sign-in page.
        if headers.contains_key("hx-request")
            && let Ok(v) = HeaderValue::from_str(&to)
        {
            res.headers_mut().insert("hx-redirect", v);
        }
        return res;
    };
    let lang = Lang::pick(user.language.as_deref(), headers);
    let viewer = Viewer {
        user,
        session,
        lang,
    };
    let (mut parts, body) = req.into_parts();
    let req = if parts.method == Method::POST {
        let bytes = match to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return page::error(
                    Some(&viewer),
                    lang,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    lang.t("form_too_large"),
                );
            }
        };
        let presented = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                form_urlencoded::parse(&bytes)
                    .find(|(k, _)| k == "csrf")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_default();
        if !state.shared.sessions.csrf_ok(&viewer.session, &presented) {
            tracing::warn!(user = %viewer.user.name, path = %parts.uri.path(), "console form refused: missing or wrong CSRF token");
            return page::error(
                Some(&viewer),
                lang,
                StatusCode::FORBIDDEN,
                lang.t("csrf_refused"),
            );
        }
        parts.extensions.insert(viewer);
        Request::from_parts(parts, Body::from(bytes))
    } else {
        parts.extensions.insert(viewer);
        Request::from_parts(parts, body)
    };
    let mut res = next.run(req).await;
    if !res.headers().contains_key(header::CACHE_CONTROL) {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res.into_response()
}
