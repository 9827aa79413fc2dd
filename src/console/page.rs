//! Rendering a console page: the embedded Tera templates (`console/templates/`, `.html`
//! so every value is escaped), the signed-in viewer, and what every page gets: the
//! words of the viewer's language (`t`), the viewer (`me`), the CSRF token (`csrf`) and
//! the page's place in the navigation (`nav`).

use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::session::Session;
use super::texts::Lang;
use crate::config::users::{Role, User};

/// The templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../console/templates/base.html"),
    ),
    (
        "login.html",
        include_str!("../../console/templates/login.html"),
    ),
    (
        "error.html",
        include_str!("../../console/templates/error.html"),
    ),
    (
        "overview.html",
        include_str!("../../console/templates/overview.html"),
    ),
    (
        "board.html",
        include_str!("../../console/templates/board.html"),
    ),
    (
        "handoff.html",
        include_str!("../../console/templates/handoff.html"),
    ),
    (
        "handoff_answer.html",
        include_str!("../../console/templates/handoff_answer.html"),
    ),
    (
        "mail.html",
        include_str!("../../console/templates/mail.html"),
    ),
    (
        "rules.html",
        include_str!("../../console/templates/rules.html"),
    ),
    (
        "funnel.html",
        include_str!("../../console/templates/funnel.html"),
    ),
    (
        "leads.html",
        include_str!("../../console/templates/leads.html"),
    ),
    (
        "lead.html",
        include_str!("../../console/templates/lead.html"),
    ),
    (
        "mail_text.html",
        include_str!("../../console/templates/mail_text.html"),
    ),
];

static TERA: LazyLock<tera::Tera> = LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    tera.autoescape_on([".html"]);
    tera.add_raw_templates(TEMPLATES.iter().copied())
        .unwrap_or_else(|e| panic!("a console template does not compile: {e:?}"));
    tera
});

/// Who is looking: the signed-in user, the session and the language.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    pub session: Session,
    pub lang: Lang,
}

impl Viewer {
    /// How changes made in the console are recorded: `ui:NAME`.
    pub fn by(&self) -> String {
        format!("ui:{}", self.user.name)
    }

    /// Marketing and admin see every lead, mail and rule; sales the board and their own.
    pub fn sees_all(&self) -> bool {
        self.user.role != Role::Sales
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
}

/// Renders `template` for `viewer` (None on the sign-in page) with `data` (an object)
/// and the common values.
pub fn render(
    template: &str,
    viewer: Option<&Viewer>,
    lang: Lang,
    nav: &str,
    data: Value,
) -> Result<String, tera::Error> {
    let mut ctx: Map<String, Value> = match data {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    ctx.insert("t".into(), json!(lang.texts()));
    ctx.insert("lang".into(), json!(lang.code()));
    ctx.insert("nav".into(), json!(nav));
    if let Some(v) = viewer {
        ctx.insert(
            "me".into(),
            json!({
                "name": v.user.name,
                "email": v.user.email,
                "role": v.user.role.as_str(),
                "sees_all": v.sees_all(),
                "admin": v.is_admin(),
            }),
        );
        ctx.insert("csrf".into(), json!(v.session.csrf));
    }
    let ctx = tera::Context::from_serialize(&Value::Object(ctx))?;
    TERA.render(template, &ctx)
}

/// A rendered page, or the error page when rendering fails.
pub fn page(template: &str, viewer: &Viewer, nav: &str, data: impl Serialize) -> Response {
    let data = serde_json::to_value(data).unwrap_or(Value::Null);
    match render(template, Some(viewer), viewer.lang, nav, data) {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => {
            tracing::error!(template, error = ?e, "console page does not render");
            error(
                Some(viewer),
                viewer.lang,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the page {template} could not be shown: {e}"),
            )
        }
    }
}

/// An HTML response that is never cached and never framed by another site.
pub fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "same-origin"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ],
        Html(html),
    )
        .into_response()
}

/// The error page with `status` and `message`.
pub fn error(viewer: Option<&Viewer>, lang: Lang, status: StatusCode, message: &str) -> Response {
    let data = json!({
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or("error"),
        "message": message,
    });
    match render("error.html", viewer, lang, "", data) {
        Ok(html) => html_response(status, html),
        Err(e) => {
            tracing::error!(error = ?e, "console error page does not render");
            (status, message.to_string()).into_response()
        }
    }
}

/// 403 with the page's reason.
pub fn forbidden(viewer: &Viewer, message: &str) -> Response {
    error(Some(viewer), viewer.lang, StatusCode::FORBIDDEN, message)
}

/// 404 with what was not found.
pub fn not_found(viewer: &Viewer, message: &str) -> Response {
    error(Some(viewer), viewer.lang, StatusCode::NOT_FOUND, message)
}

/// 500 for a store error, logged.
pub fn internal(viewer: &Viewer, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console page failed");
    error(
        Some(viewer),
        viewer.lang,
        StatusCode::INTERNAL_SERVER_ERROR,
        &e.to_string(),
    )
}

/// A redirect after a form was handled (303, so the browser GETs the target).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}
