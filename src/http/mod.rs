//! The HTTP API: Segment-compatible intake (`/v1/identify`, `/v1/track`, `/v1/page`,
//! `/v1/batch`), leads (`/v1/leads/{email}`), mails (`/v1/mails`), handoffs to sales
//! (`/v1/handoffs`), counters (`/v1/stats`), reports (`/v1/reports/funnel`,
//! `/v1/reports/sla`), bounce reports (`/v1/bounces`) and `/healthz`. Everything under `/v1` needs the API token; the
//! links in mails (`/u/`, `/confirm/`, `/o/`, `/c/`, `/h/`) carry their own signed token;
//! the ESPs' webhooks (`/hooks/...`) are checked by each provider's signature.

mod auth;
mod bounces;
mod error;
mod handoffs;
mod hooks;
mod ingest;
mod leads;
mod links;
mod mails;
mod reports;
mod stats;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Router, middleware};

use crate::config::Config;
use crate::handoff::Desk;
use crate::mail::{Signer, Templates};
use crate::process::Processor;
use crate::rules::Rules;

pub use error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
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

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_request_bytes;
    let v1 = Router::new()
        .route("/identify", post(ingest::identify))
        .route("/track", post(ingest::track))
        .route("/page", post(ingest::page))
        .route("/batch", post(ingest::batch))
        .route("/import", post(ingest::batch))
        .route("/leads/{email}", get(leads::show))
        .route("/leads/{email}/stage", post(leads::set_stage))
        .route("/stats", get(stats::stats))
        .route("/stats/queue", get(stats::queue))
        .route("/mails", get(mails::list))
        .route("/mails/{id}", get(mails::show))
        .route("/handoffs", get(handoffs::list))
        .route("/handoffs/{id}", get(handoffs::show))
        .route("/handoffs/{id}/accept", post(handoffs::accept))
        .route("/handoffs/{id}/reject", post(handoffs::reject))
        .route("/reports/funnel", get(reports::funnel))
        .route("/reports/sla", get(reports::sla))
        .route("/bounces", post(bounces::ingest).get(bounces::list))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(stats::healthz))
        .route(
            "/u/{token}",
            get(links::unsubscribe_page).post(links::unsubscribe),
        )
        .route(
            "/confirm/{token}",
            get(links::confirm_page).post(links::confirm),
        )
        .route("/o/{token}", get(links::open))
        .route("/c/{token}", get(links::click))
        .route(
            "/h/{token}",
            get(handoffs::link_page).post(handoffs::link_answer),
        )
        .route("/hooks/ses", post(hooks::ses))
        .route("/hooks/postmark", post(hooks::postmark))
        .route("/hooks/mailgun", post(hooks::mailgun))
        .route("/hooks/sendgrid", post(hooks::sendgrid))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
