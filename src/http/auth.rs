//! API keys and scopes: `Authorization: Bearer KEY`, or HTTP Basic with the key as user
//! name and an empty password (how Segment sends its write key). Each group of routes
//! needs one scope ([`scoped`]); the key that passed is the request's [`Caller`].
//!
//! Neither a presented key nor a configured one ever goes into a response or the log.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use base64::Engine as _;

use super::{ApiError, AppState};
use crate::config::http::{ApiKey, Scope};

/// The key a request came with: recorded as `api:NAME` in what it changes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

impl Caller {
    fn of(key: &ApiKey) -> Self {
        Caller {
            name: key.name.clone(),
            admin: key.allows(Scope::Admin),
        }
    }

    /// Someone the request names (its `by` field), if the key may name someone: only
    /// an admin key may.
    fn named(&self, by: Option<&str>) -> Option<String> {
        by.map(str::trim)
            .filter(|b| self.admin && !b.is_empty())
            .map(str::to_string)
    }

    /// The user of a stage move, shown as `api:USER`: the one an admin key names, else
    /// the key's name.
    pub fn user(&self, by: Option<&str>) -> String {
        self.named(by).unwrap_or_else(|| self.name.clone())
    }

    /// Who answered a handoff: the one an admin key names, else `api:NAME`.
    pub fn by(&self, by: Option<&str>) -> String {
        self.named(by)
            .unwrap_or_else(|| format!("api:{}", self.name))
    }
}

/// Why the credentials of a request cannot be read.
enum Presented {
    Key(String),
    Missing,
    BasicWithPassword,
    Unreadable,
}

fn presented(req: &Request) -> Presented {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Presented::Missing;
    };
    let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return Presented::Unreadable;
    };
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Presented::Key(rest.trim().to_string()),
        "basic" => {
            let Some(text) = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
            else {
                return Presented::Unreadable;
            };
            match text.split_once(':') {
                Some((user, "")) => Presented::Key(user.to_string()),
                Some(_) => Presented::BasicWithPassword,
                None => Presented::Key(text),
            }
        }
        _ => Presented::Unreadable,
    }
}

const HOW: &str = "send `Authorization: Bearer KEY`, or HTTP Basic with the key as user name and an empty password";

/// Finds the request's key, refuses it without `scope` (403 naming the scope), and
/// hands the [`Caller`] to the handler.
async fn require(
    State((state, scope)): State<(AppState, Scope)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = match presented(&req) {
        Presented::Key(k) => state
            .config
            .http
            .key(&k)
            .ok_or_else(|| ApiError::unauthorized("the API key is wrong"))?,
        Presented::Missing => {
            return Err(ApiError::unauthorized(&format!("missing API key: {HOW}")));
        }
        Presented::BasicWithPassword => {
            return Err(ApiError::unauthorized(&format!(
                "HTTP Basic with a password is refused: {HOW}"
            )));
        }
        Presented::Unreadable => {
            return Err(ApiError::unauthorized(&format!(
                "the Authorization header cannot be read: {HOW}"
            )));
        }
    };
    if !key.allows(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the API key `{}` lacks the `{scope}` scope that {} {} needs; use a key with \
                 `{scope}` (or `admin`)",
                key.name,
                req.method(),
                req.uri().path()
            ),
        ));
    }
    req.extensions_mut().insert(Caller::of(key));
    Ok(next.run(req).await)
}

/// `router`'s routes need a key with `scope` (or admin). Add a route to a group in
/// `http::router` and it needs that group's scope.
pub fn scoped(router: Router<AppState>, scope: Scope, state: &AppState) -> Router<AppState> {
    if !router.has_routes() {
        return router;
    }
    router.route_layer(middleware::from_fn_with_state(
        (state.clone(), scope),
        require,
    ))
}
