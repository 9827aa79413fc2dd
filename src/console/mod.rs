//! The console: web pages for marketing ops and sales under `/ui/`, served by the
//! daemon (on `http_addr`, and on `ui.addr` when set), rendered on the server with Tera
//! and a little htmx; every asset is embedded in the binary.
//!
//! Users sign in with a name and password from `[[users]]` (see `signin`); each page
//! checks the session and every form its CSRF token (see `guard`); what a user may see
//! and change follows their role (see `page::Viewer`). Changes made here are recorded
//! as `ui:NAME`.

mod assets;
mod board;
mod funnel;
mod gate;
mod guard;
mod lead;
mod leads;
mod mail;
mod mail_preview;
mod overview;
mod page;
mod rules;
mod session;
mod signin;
mod texts;
mod when;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::http::AppState;

pub use texts::Lang;

/// What the console's pages share besides the API's state.
pub struct Shared {
    pub sessions: session::Sessions,
    pub gate: gate::Gate,
}

/// The state of the console's handlers.
#[derive(Clone)]
pub struct ConsoleState {
    pub app: AppState,
    pub shared: Arc<Shared>,
}

impl ConsoleState {
    pub fn new(app: AppState) -> Self {
        let ui = &app.config.ui;
        let shared = Shared {
            sessions: session::Sessions::new(&app.config.mail.secret),
            gate: gate::Gate::new(ui.max_failures, ui.lockout.as_millis() as i64),
        };
        Self {
            app,
            shared: Arc::new(shared),
        }
    }

    /// Now on the daemon's clock, in Unix ms.
    pub fn now_ms(&self) -> i64 {
        crate::clock::to_ms(self.app.processor.clock.now())
    }
}

/// The console's routes, `/ui` and below.
pub fn router(state: ConsoleState) -> Router {
    let pages = Router::new()
        .route("/ui/", get(overview::page))
        .route("/ui/funnel", get(funnel::page))
        .route("/ui/leads", get(leads::list))
        .route("/ui/leads.csv", get(leads::csv))
        .route("/ui/leads/{email}", get(lead::page))
        .route("/ui/mails/{id}/preview", get(mail_preview::preview))
        .route("/ui/logout", post(signin::logout))
        .route("/ui/board", get(board::board))
        .route("/ui/handoffs/{id}", get(board::handoff))
        .route("/ui/handoffs/{id}/accept", post(board::accept))
        .route("/ui/handoffs/{id}/reject", post(board::reject))
        .route("/ui/mail", get(mail::page))
        .route("/ui/mails/{id}/retry", post(mail::retry))
        .route("/ui/rules", get(rules::page))
        .route("/ui/events/{seq}/retry", post(rules::retry))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require,
        ));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(signin::show).post(signin::submit))
        .route("/ui/assets/{name}", get(assets::file))
        .merge(pages)
        .with_state(state)
}

/// The `ui.addr` listener: the console alone, `/` leading to it.
pub fn own_router(state: ConsoleState) -> Router {
    router(state).route("/", get(|| async { Redirect::to("/ui/") }))
}
