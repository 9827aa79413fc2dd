//! The HTTP API: Segment-compatible intake (`/v1/identify`, `/v1/track`, `/v1/page`,
//! `/v1/batch`, `/v1/screen`, `/v1/alias`, `/v1/group`), leads (`/v1/leads/{email}`, its
//! export and erasure), mails (`/v1/mails`), handoffs to sales (`/v1/handoffs`),
//! counters (`/v1/stats`), reports (`/v1/reports/funnel`,
//! `/v1/reports/sla`), bounce reports (`/v1/bounces`), `/v1/health`, `/healthz`
//! (liveness), `/readyz` (readiness), `/metrics` (Prometheus), and the OpenAPI document
//! of all of them (`/v1/openapi.json`, see `openapi`).
//! Everything else under `/v1` needs an API key with the route's scope (see `auth`); the links
//! in mails (`/u/`, `/p/`, `/confirm/`, `/o/`, `/c/`, `/h/`) carry their own signed token
//! and are rate-limited per client; the providers' bounce webhooks (`/hooks/...`) are
//! checked by their signatures or secrets.

mod auth;
mod bounces;
mod cors;
mod error;
mod gzip;
mod handoffs;
mod hooks;
mod ingest;
mod leads;
mod links;
mod mails;
mod metrics;
mod openapi;
mod preferences;
mod privacy;
mod ratelimit;
mod reports;
mod stats;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

use crate::config::Config;
use crate::config::http::Scope;
use crate::handoff::Desk;
use crate::mail::{Signer, Templates};
use crate::process::Processor;
use crate::rules::Rules;

pub use auth::Caller;
pub use error::ApiError;
pub(crate) use ratelimit::client as client_address;

/// What handlers share: one pointer, so that the state axum hands each handler and
/// middleware of every request costs one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    pub config: Arc<Config>,
    pub processor: Arc<Processor>,
    pub rules: Arc<Rules>,
    /// Events skipped as duplicates since start.
    pub duplicates: Arc<AtomicU64>,
    /// Checks the tokens of links in mails.
    pub signer: Arc<Signer>,
    pub templates: Arc<Templates>,
    pub desk: Arc<Desk>,
    /// Stores checked events, several requests per transaction.
    pub intake: crate::ingest::group::Intake,
}

/// The whole API. Each group of `/v1` routes needs one scope of API key: add a route to
/// the group whose scope it needs. The link routes are rate-limited per client address.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_request_bytes;
    let http = &state.config.http;
    // Intake: ingest keys, callable from the websites of `http.cors_origins`.
    let intake = Router::new()
        .route("/identify", post(ingest::identify))
        .route("/track", post(ingest::track))
        .route("/page", post(ingest::page))
        .route("/screen", post(ingest::screen))
        .route("/alias", post(ingest::alias))
        .route("/group", post(ingest::group))
        .route("/batch", post(ingest::batch))
        .route("/import", post(ingest::import));
    let read = Router::new()
        .route("/health", get(stats::health))
        .route("/leads", get(leads::list))
        .route("/leads/{email}", get(leads::show))
        .route("/stats", get(stats::stats))
        .route("/stats/queue", get(stats::queue))
        .route("/mails", get(mails::list))
        .route("/mails/{id}", get(mails::show))
        .route("/handoffs", get(handoffs::list))
        .route("/handoffs/{id}", get(handoffs::show))
        .route("/reports/funnel", get(reports::funnel))
        .route("/reports/sla", get(reports::sla))
        .route("/bounces", get(bounces::list));
    let write = Router::new()
        .route("/bounces", post(bounces::ingest))
        .route("/leads/{email}/stage", post(leads::set_stage))
        .route("/leads/{email}/tags", post(leads::set_tags))
        .route("/mails/{id}/retry", post(mails::retry))
        .route("/handoffs/{id}/accept", post(handoffs::accept))
        .route("/handoffs/{id}/reject", post(handoffs::reject));
    // Admin keys only (lead export and erase).
    let admin = Router::new()
        .route("/leads/{email}/export", get(privacy::export))
        .route("/leads/{email}", axum::routing::delete(privacy::erase));
    // gzip bodies are inflated after the key was checked, so only clients with a key
    // make the daemon inflate anything.
    let inflated = |routes: Router<AppState>| {
        if !routes.has_routes() {
            return routes;
        }
        routes.route_layer(middleware::from_fn_with_state(state.clone(), gzip::inflate))
    };
    let v1 = Router::new()
        // The OpenAPI document, public like `/healthz`.
        .route("/openapi.json", get(openapi::document))
        .merge(cors::intake(
            auth::scoped(inflated(intake), Scope::Ingest, &state),
            http,
        ))
        .merge(auth::scoped(inflated(read), Scope::Read, &state))
        .merge(auth::scoped(inflated(write), Scope::Write, &state))
        .merge(auth::scoped(inflated(admin), Scope::Admin, &state));
    // The links in mails, with their own signed tokens.
    let links = Router::new()
        .route(
            "/u/{token}",
            get(preferences::unsubscribe_page).post(preferences::unsubscribe),
        )
        .route("/p/{token}", get(preferences::page).post(preferences::save))
        .route(
            "/confirm/{token}",
            get(links::confirm_page).post(links::confirm),
        )
        .route("/o/{token}", get(links::open))
        .route("/c/{token}", get(links::click))
        .route(
            "/h/{token}",
            get(handoffs::link_page).post(handoffs::link_answer),
        );
    // The bounce and complaint webhooks of mail providers, checked by their own
    // signatures or secrets (providers call from many addresses: not rate-limited).
    let hooks = Router::new()
        .route("/hooks/ses", post(hooks::ses))
        .route("/hooks/postmark", post(hooks::postmark))
        .route("/hooks/mailgun", post(hooks::mailgun))
        .route("/hooks/sendgrid", post(hooks::sendgrid));
    // Prometheus metrics: a key with the read scope (a listener of its own without a
    // key: `metrics_router`).
    let scraped = auth::scoped(
        Router::new().route("/metrics", get(metrics::metrics)),
        Scope::Read,
        &state,
    );
    Router::new()
        .nest("/v1", v1)
        .merge(scraped)
        .route("/healthz", get(stats::healthz))
        .route("/readyz", get(metrics::readyz))
        .merge(ratelimit::limited(links, http))
        .merge(hooks)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The `[metrics] addr` listener: `/metrics` alone, without a key (bind it to an
/// address only the local Prometheus reaches).
pub fn metrics_router(processor: Arc<Processor>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || async move { metrics::render(&processor).await }),
    )
}
