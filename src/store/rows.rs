//! Row types as SQLite returns them, and their conversion into domain values.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::FromRow;

use super::StoreError;
use crate::clock::from_ms;
use crate::domain::{Consent, Email, Lead};

/// Columns of `leads`, in the order [`LEAD_COLUMNS`] lists them.
#[derive(Debug, FromRow)]
pub(super) struct LeadRow {
    pub id: i64,
    pub email: String,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub employees: Option<i64>,
    pub revenue: Option<f64>,
    pub country: Option<String>,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub consent_email: bool,
    pub consent_email_at: Option<i64>,
    pub consent_email_source: Option<String>,
    pub consent_tracking: bool,
    pub consent_tracking_at: Option<i64>,
    pub consent_tracking_source: Option<String>,
    pub stage: String,
    pub stage_since: i64,
    pub fit: f64,
    pub fit_parts: String,
    pub interest: f64,
    pub tags: String,
    pub owner: Option<String>,
    pub attributes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub topics_left: String,
}

/// Every column of `leads`, for SELECT and the batch upsert.
pub(super) const LEAD_COLUMNS: &str = "id, email, external_id, first_name, last_name, phone, \
    company, title, industry, employees, revenue, country, time_zone, locale, consent_email, \
    consent_email_at, consent_email_source, consent_tracking, consent_tracking_at, \
    consent_tracking_source, stage, stage_since, fit, fit_parts, interest, tags, owner, \
    attributes, created_at, updated_at, version, topics_left";

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

impl TryFrom<LeadRow> for Lead {
    type Error = StoreError;

    fn try_from(r: LeadRow) -> Result<Self, StoreError> {
        let consent = |granted, at: Option<i64>, source| Consent {
            granted,
            at: at.map(from_ms),
            source,
        };
        Ok(Lead {
            id: r.id,
            email: Email::parse(&r.email).map_err(|e| corrupt("lead e-mail", e))?,
            external_id: r.external_id,
            first_name: r.first_name,
            last_name: r.last_name,
            phone: r.phone,
            company: r.company,
            title: r.title,
            industry: r.industry,
            employees: r.employees,
            revenue: r.revenue,
            country: r.country,
            time_zone: r.time_zone,
            locale: r.locale,
            consent_email: consent(r.consent_email, r.consent_email_at, r.consent_email_source),
            consent_tracking: consent(
                r.consent_tracking,
                r.consent_tracking_at,
                r.consent_tracking_source,
            ),
            stage: r.stage,
            stage_since: from_ms(r.stage_since),
            fit: r.fit,
            fit_parts: serde_json::from_str::<BTreeMap<String, f64>>(&r.fit_parts)
                .map_err(|e| corrupt("lead fit_parts", e))?,
            interest: r.interest,
            tags: serde_json::from_str::<BTreeSet<String>>(&r.tags)
                .map_err(|e| corrupt("lead tags", e))?,
            owner: r.owner,
            attributes: serde_json::from_str::<Map<String, Value>>(&r.attributes)
                .map_err(|e| corrupt("lead attributes", e))?,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
            topics_left: serde_json::from_str::<BTreeSet<String>>(&r.topics_left)
                .map_err(|e| corrupt("lead topics_left", e))?,
            version: r.version,
        })
    }
}

/// Who set one of a lead's tags, when and why (the newest time it was set).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct TagSource {
    pub tag: String,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub since: i64,
    pub source_kind: String,
    /// `rules/40-funnel.rhai:23`, `api:crm`, `ingest`, ...
    pub source: String,
    /// The API caller's reason, or for a rule the event that ran it.
    pub reason: String,
    #[serde(rename = "event")]
    pub event_seq: Option<i64>,
}

/// One stage move as stored.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct HistoryRow {
    #[serde(rename = "from")]
    pub from_stage: Option<String>,
    #[serde(rename = "to")]
    pub to_stage: String,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub at: i64,
    #[serde(rename = "source_kind")]
    pub source_kind: String,
    pub source: String,
    pub reason: String,
    #[serde(rename = "event")]
    pub event_seq: Option<i64>,
}

/// One score change as stored.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LedgerRow {
    pub axis: String,
    pub delta: f64,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub at: i64,
    pub source_kind: String,
    pub source: String,
    pub reason: String,
    #[serde(rename = "event")]
    pub event_seq: Option<i64>,
}

/// Serialises Unix milliseconds as an RFC 3339 UTC instant.
pub(crate) fn ms_as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

pub fn rfc3339(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
