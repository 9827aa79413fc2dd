//! The OpenAPI 3.1 document of the HTTP API, served at `GET /v1/openapi.json` (public,
//! like `/healthz`: it says what the routes take, never what is stored). It is built
//! by `utoipa` from the `#[utoipa::path]` attributes on the handlers and the
//! `ToSchema` types they take and answer; the shapes of answers that handlers build as
//! JSON values are the types of this module.

use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{bounces, handoffs, hooks, ingest, leads, links, mails, preferences, privacy};
use super::{metrics, reports, stats};
use crate::ingest::InputError;
use crate::store::{HandoffRow, MailContent, OutboxRow};

/// The document: every route of [`super::router`], checked against the live daemon by
/// the integration test `openapi`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "nurtured",
        description = "The HTTP API of the nurtured lead-management daemon: Segment-compatible \
                       intake, leads, mails, handoffs to sales, reports, bounce reports, the links \
                       in mails and the mail providers' webhooks. Routes under `/v1` (except this \
                       document) need an API key with the scope named in their security \
                       requirement (`ingest`, `read`, `write` or `admin`; an `admin` key may call \
                       every route)."
    ),
    paths(
        document,
        ingest::identify,
        ingest::track,
        ingest::page,
        ingest::screen,
        ingest::alias,
        ingest::group,
        ingest::batch,
        ingest::import,
        stats::health,
        stats::healthz,
        metrics::readyz,
        metrics::metrics,
        stats::stats,
        stats::queue,
        leads::list,
        leads::show,
        leads::set_stage,
        leads::set_tags,
        privacy::export,
        privacy::erase,
        mails::list,
        mails::show,
        mails::retry,
        handoffs::list,
        handoffs::show,
        handoffs::accept,
        handoffs::reject,
        handoffs::link_page,
        handoffs::link_answer,
        reports::funnel,
        reports::sla,
        bounces::list,
        bounces::ingest,
        preferences::unsubscribe_page,
        preferences::unsubscribe,
        preferences::page,
        preferences::save,
        links::confirm_page,
        links::confirm,
        links::open,
        links::click,
        hooks::ses,
        hooks::postmark,
        hooks::mailgun,
        hooks::sendgrid,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Keys),
    tags(
        (name = "intake", description = "Segment-compatible events (scope `ingest`)"),
        (name = "leads", description = "Leads, their stage and tags, export and erasure"),
        (name = "mails", description = "The outbox and bounce reports"),
        (name = "handoffs", description = "Handoffs to sales"),
        (name = "reports", description = "Counters and reports"),
        (name = "links", description = "The signed links in mails (no API key)"),
        (name = "hooks", description = "Mail providers' bounce webhooks (no API key)"),
        (name = "meta", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document_json() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// `GET /v1/openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)),
)]
pub async fn document() -> Json<Value> {
    Json(document_json())
}

/// The two ways to present an API key: `Authorization: Bearer KEY`, or HTTP Basic with
/// the key as user name and an empty password (how Segment's SDKs send a write key).
struct Keys;

impl Modify for Keys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key of `[[http.keys]]` (or `api_token`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The API key as user name and an empty password (Segment's SDKs)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers every `/v1` route may give besides its own: a refused key, a failure.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes answers; the handlers answer with `ApiError`.
pub enum KeyErrors {
    /// No API key, an unreadable `Authorization` header, or a wrong key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key lacks the route's scope.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The request could not be completed; nothing was stored; it is safe to retry.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// Every error answer of the JSON API: a stable code and a message; input errors list
/// their problems with JSON paths (and batch indexes).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code such as `unauthorized`, `invalid_input`, `not_found`.
    pub error: String,
    /// The same code, under the name Segment's SDKs read.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<InputError>>,
}

/// One Segment call (`identify`, `track`, `page`, `screen`, `alias`, `group`). A lead
/// is named by `userId` (an e-mail address) or by `traits.email`; other fields of
/// Segment's specification are accepted too.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"userId": "anna@example.com", "traits": {"email": "anna@example.com", "first_name": "Anna"}, "messageId": "m-1"}))]
#[serde(rename_all = "camelCase")]
pub struct SegmentEvent {
    /// Given in a batch: `identify`, `track`, `page`, `screen`, `alias` or `group`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `track`: the event's name.
    pub event: Option<String>,
    /// `page` and `screen`: the page's name.
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub traits: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// When it happened (RFC 3339); now when absent.
    pub timestamp: Option<String>,
    /// Repeats of an id already stored are skipped as duplicates.
    pub message_id: Option<String>,
    /// `alias`: the earlier id.
    pub previous_id: Option<String>,
    /// `group`: the account.
    pub group_id: Option<String>,
}

/// Several calls at once, checked all before any is stored.
#[derive(Serialize, ToSchema)]
pub struct Batch {
    pub batch: Vec<SegmentEvent>,
    /// Past events: processed without mail, streams or handoffs.
    pub history: Option<bool>,
}

/// The events were stored (after their transaction committed).
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub success: bool,
    pub accepted: u64,
    /// Skipped: their `messageId` was stored before.
    pub duplicates: u64,
    pub leads_created: u64,
}

/// The answer of a stage move.
#[derive(Serialize, ToSchema)]
pub struct StageSet {
    pub email: String,
    pub stage: String,
    /// False when the lead was in the stage already.
    pub changed: bool,
}

/// The answer of a tag change.
#[derive(Serialize, ToSchema)]
pub struct TagsSet {
    pub email: String,
    pub tags: Vec<String>,
    pub changed: bool,
}

/// `GET /v1/mails`: newest first.
#[derive(Serialize, ToSchema)]
pub struct MailList {
    pub mails: Vec<OutboxRow>,
}

/// `GET /v1/mails/{id}`: the outbox row, the mail as sent (once sent) and what
/// happened to it.
#[derive(Serialize, ToSchema)]
pub struct MailDetail {
    pub mail: OutboxRow,
    pub content: Option<MailContent>,
    /// `at`, `what`, `actor`, `note` per entry, oldest first.
    pub history: Vec<Object>,
}

/// Stands for any JSON object in the schemas.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Object(Value);

/// A failed mail queued again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub id: i64,
    /// `queued`.
    pub status: String,
}

/// A handoff in a list, with whether it is past its deadline.
#[derive(Serialize, ToSchema)]
pub struct ListedHandoff {
    #[serde(flatten)]
    pub handoff: HandoffRow,
    pub overdue: bool,
}

/// `GET /v1/handoffs`: the newest first.
#[derive(Serialize, ToSchema)]
pub struct HandoffList {
    pub handoffs: Vec<ListedHandoff>,
}

/// `GET /v1/handoffs/{id}`: the handoff with the owners it had, the duplicates it
/// absorbed, its log and its webhook calls.
#[derive(Serialize, ToSchema)]
pub struct HandoffDetail {
    #[serde(flatten)]
    pub handoff: HandoffRow,
    pub owners_had: Vec<String>,
    pub duplicates: Vec<Object>,
    pub log: Vec<Object>,
    pub webhooks: Vec<Object>,
}

/// What was done per bounce, complaint or unsubscribe report.
#[derive(Serialize, ToSchema)]
pub struct BounceReports {
    pub reports: Vec<Object>,
}

/// `GET /v1/bounces`: the bounce log, newest first.
#[derive(Serialize, ToSchema)]
pub struct BounceLog {
    pub bounces: Vec<Object>,
}

/// The lead was erased; `removed` counts the rows per kind.
#[derive(Serialize, ToSchema)]
pub struct Erased {
    pub erased: bool,
    pub lead_id: i64,
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub removed: Value,
}

/// `GET /v1/health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `ok`, and `error` when the database does not answer.
    pub database: Object,
    /// The holder of the processing lease (or the error reading it).
    pub lease: Object,
    /// `events_pending`, `events_failed`, `handoffs_waiting`; null when the database
    /// does not answer.
    pub backlog: Option<Object>,
    /// This daemon's name in a cluster.
    pub cluster: Option<String>,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Healthz {
    /// `ok` or `unavailable`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readyz {
    /// `ready` or `not ready`.
    pub status: String,
    /// The checks that failed: `database`, `lease` (or `shards` in a cluster), `backlog`.
    pub failed: Vec<String>,
    /// Each check: `database` and `lease` (or `shards`) as true or false, `backlog` with
    /// `pending`, `max` and `ok`.
    pub checks: Object,
}

/// The answer of the SES webhook: a subscription confirmed or logged, or the reports.
#[derive(Serialize, ToSchema)]
pub struct SesAnswer {
    /// `confirmed` or `logged` (a subscription confirmation).
    pub subscription: Option<String>,
    /// What was done per report (a notification).
    pub reports: Option<Vec<Object>>,
}

/// The form of the preference and unsubscribe pages.
#[derive(Serialize, ToSchema)]
pub struct PreferenceForm {
    /// A topic to keep, repeated for each kept topic; topics not named are left
    /// (preference page only).
    pub keep: Option<Vec<String>>,
    /// `leave_all` leaves every topic (no marketing mail at all).
    pub action: Option<String>,
}

/// The reason of the handoff link's rejection form.
#[derive(Serialize, ToSchema)]
pub struct RejectForm {
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_both_key_schemes() {
        let doc = document_json();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["basic"]["scheme"], "basic");
        assert!(
            doc["paths"]["/v1/leads/{email}"]["get"].is_object(),
            "{doc}"
        );
    }
}
