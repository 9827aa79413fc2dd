//! Signing in and out: `GET /ui/login` shows the form, `POST /ui/login` checks the
//! name and password against `[[users]]` (argon2id, off the async threads), throttled
//! per client address and per name (see [`super::gate`]); `POST /ui/logout` ends the
//! session.
//!
//! The sign-in form carries a token of its own that must match a cookie set with the
//! form (a double submit), so another site cannot sign a browser in to an account of
//! its choosing.

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;

use super::ConsoleState;
use super::page::{self, Viewer};
use super::session::COOKIE;
use super::texts::Lang;
use crate::config::users::{hash_password, verify_password};

/// The sign-in form's own cookie.
const LOGIN_COOKIE: &str = "nurtured_login";

/// A hash to check unknown names against, so they take as long as known ones.
static DECOY: LazyLock<String> =
    LazyLock::new(|| hash_password("no user has this password").unwrap_or_default());

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    token: String,
}

/// Only pages of the console are places to go after signing in.
fn target(next: &str) -> &str {
    if next.starts_with("/ui/") && !next.contains("//") && !next.contains('\\') {
        next
    } else {
        "/ui/"
    }
}

/// Reads cookie `name` from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// True when the browser reached the console over HTTPS (directly by the public URL,
/// or through a proxy saying so): cookies are then `Secure`.
pub fn over_https(state: &ConsoleState, headers: &HeaderMap) -> bool {
    state.app.config.mail.public_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for the console's path.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("cookie values are base64url")
}

fn form(
    state: &ConsoleState,
    headers: &HeaderMap,
    status: StatusCode,
    name: &str,
    next: &str,
    message: Option<&str>,
) -> Response {
    let lang = Lang::pick(None, headers);
    let mut token = [0u8; 18];
    getrandom::fill(&mut token).expect("the system has a random source");
    let token = URL_SAFE_NO_PAD.encode(token);
    let data = json!({
        "name": name,
        "next": target(next),
        "token": token,
        "message": message,
        "no_users": state.app.config.ui.users.is_empty(),
    });
    match page::render("login.html", None, lang, "login", data) {
        Ok(html) => {
            let mut res = page::html_response(status, html);
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, &token, 3600, over_https(state, headers)),
            );
            res
        }
        Err(e) => page::error(
            None,
            lang,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

/// `GET /ui/login`.
pub async fn show(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    let now = state.now_ms();
    if let Some(value) = cookie(&headers, COOKIE)
        && state
            .shared
            .sessions
            .check(value, &state.app.config.ui, now)
            .is_some()
    {
        return page::see_other(target(&q.next));
    }
    form(&state, &headers, StatusCode::OK, "", &q.next, None)
}

/// `POST /ui/login`.
pub async fn submit(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    let lang = Lang::pick(None, &headers);
    let now = state.now_ms();
    let client = crate::http::client_address(
        Some(peer.ip()),
        &headers,
        &state.app.config.http.trusted_proxies,
    );
    let name = f.name.trim().to_string();
    let keys = vec![
        format!("ip:{client}"),
        format!("name:{}", name.to_lowercase()),
    ];
    let gate = &state.shared.gate;
    if let Some(until) = gate.locked(&keys, now) {
        let minutes = ((until - now) as f64 / 60_000.0).ceil().max(1.0);
        tracing::warn!(user = %name, client = %client, "console sign-in refused: too many failures");
        let message = lang
            .t("login_locked")
            .replace("{minutes}", &format!("{minutes:.0}"));
        return form(
            &state,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            &name,
            &f.next,
            Some(&message),
        );
    }
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if f.token.is_empty() || expected != f.token {
        return form(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            &name,
            &f.next,
            Some(lang.t("login_stale")),
        );
    }
    let user = state.app.config.ui.user(&name).cloned();
    let hash = user
        .as_ref()
        .map_or_else(|| DECOY.clone(), |u| u.password_hash.clone());
    let password = f.password;
    let good = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| good) else {
        gate.failed(&keys, now);
        tracing::warn!(user = %name, client = %client, "console sign-in failed");
        return form(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            &name,
            &f.next,
            Some(lang.t("login_wrong")),
        );
    };
    gate.passed(&keys);
    let life = state.app.config.ui.session;
    let (value, _) = state
        .shared
        .sessions
        .start(&user, now + life.as_millis() as i64);
    tracing::info!(user = %user.name, role = %user.role, client = %client, "console sign-in");
    let mut res = page::see_other(target(&f.next));
    let secure = over_https(&state, &headers);
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(COOKIE, &value, life.as_secs() as i64, secure),
    );
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
    res
}

/// `POST /ui/logout`.
pub async fn logout(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    state
        .shared
        .sessions
        .revoke(&viewer.session, state.now_ms());
    tracing::info!(user = %viewer.user.name, "console sign-out");
    let mut res = page::see_other("/ui/login");
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", 0, over_https(&state, &headers)),
    );
    res.into_response()
}
