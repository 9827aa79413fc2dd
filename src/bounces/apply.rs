//! What a report does: it is mapped to its mail (the VERP address, else the original
//! Message-ID, else the recipient's address), logged, and acted on. A hard bounce
//! suppresses the address; soft bounces are counted and suppress it at
//! `bounces.soft_limit` within `bounces.soft_period`; a complaint or a mail to the
//! unsubscribe address withdraws marketing consent, through the lead's lock like any
//! other consent change, so a running daemon's caches stay right.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::report::{Kind, Report};
use crate::clock::to_ms;
use crate::config::bounces::BouncesConfig;
use crate::domain::Email;
use crate::process::Processor;
use crate::process::manual::{ConsentKind, ManualError};
use crate::store::{BouncedMail, NewBounce, SoftLimit, StoreError};

/// What was done with one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub kind: &'static str,
    pub source: &'static str,
    /// The address acted on; `None` when the report matched no mail and named no
    /// usable address.
    pub email: Option<String>,
    pub lead_id: Option<i64>,
    pub outbox_id: Option<i64>,
    pub status: Option<String>,
    /// `suppressed`, `counted`, `unsubscribed`, `duplicate` (logged before), or
    /// `none` (no lead to unsubscribe, or nothing to match).
    pub action: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot record the consent change: {0}")]
    Consent(#[from] ManualError),
}

/// Maps the report to its mail and acts on it; counts it in `nurtured_bounces_total`.
pub async fn apply(
    processor: &Processor,
    config: &BouncesConfig,
    report: &Report,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    let applied = apply_report(processor, config, report, now).await;
    // A report already logged (a retried pipe, a webhook sent twice) counts once.
    if applied.as_ref().is_ok_and(|a| a.action != "duplicate") {
        processor.metrics.bounce(report.kind.as_str());
    }
    applied
}

async fn apply_report(
    processor: &Processor,
    config: &BouncesConfig,
    report: &Report,
    now: DateTime<Utc>,
) -> Result<Applied, ApplyError> {
    let store = &processor.store;
    let mut mail: Option<BouncedMail> = None;
    if let Some(id) = report.outbox {
        mail = store.bounced_mail(id).await?;
    }
    if mail.is_none()
        && let Some(mid) = &report.message_id
    {
        mail = store.bounced_mail_by_message_id(mid).await?;
    }
    // A mail to a colleague (a handoff notification) is not the lead's: its bounce is
    // logged, and neither suppresses the colleague nor touches the lead.
    let internal = mail.as_ref().is_some_and(|m| m.class == "internal");
    // The mail's own address wins over what the report says.
    let email = match &mail {
        Some(m) => Email::parse(&m.email).ok(),
        None => report
            .recipient
            .as_deref()
            .and_then(|r| Email::parse(r).ok()),
    };
    let mut applied = Applied {
        kind: report.kind.as_str(),
        source: report.source,
        email: email.as_ref().map(|e| e.as_str().to_string()),
        lead_id: mail.as_ref().filter(|_| !internal).map(|m| m.lead_id),
        outbox_id: mail.as_ref().map(|m| m.outbox_id),
        status: report.status.clone(),
        action: "none",
    };
    // Reports that arrive as mail (to the public bounce or unsubscribe address) are
    // believed only for a mail of ours, found by its VERP token or Message-ID: a report
    // naming just an address could be written by anyone. The providers' webhooks are
    // authenticated, so their word on an address counts.
    if mail.is_none() && matches!(report.source, "dsn" | "arf" | "mailto" | "bounce") {
        tracing::warn!(
            kind = applied.kind,
            source = applied.source,
            "a report by mail matches no mail sent; ignored"
        );
        applied.email = None;
        return Ok(applied);
    }
    let Some(email) = email else {
        tracing::warn!(
            kind = applied.kind,
            source = applied.source,
            "a report names no mail and no usable address; ignored"
        );
        return Ok(applied);
    };
    if applied.lead_id.is_none() && !internal {
        applied.lead_id = store.lead_id_by_email(&email).await?;
    }
    if internal {
        tracing::warn!(
            mail = applied.outbox_id,
            kind = applied.kind,
            status = applied.status.as_deref().unwrap_or(""),
            "a mail to a colleague came back; check the address in [sales]"
        );
    }
    let mut action = "none";
    // A report seen before (a replayed webhook, the same mail piped twice) changes
    // nothing: a lead who opted in again since keeps the new consent.
    let replayed = match &report.id {
        Some(id) => {
            store
                .bounce_logged(report.source, id, email.as_str())
                .await?
        }
        None => false,
    };
    if replayed {
        applied.action = "duplicate";
        return Ok(applied);
    }
    if matches!(report.kind, Kind::Complaint | Kind::Unsubscribe)
        && let Some(lead) = applied.lead_id
    {
        let source = match report.kind {
            Kind::Complaint => format!("complaint:{}", report.source),
            _ => format!("unsubscribe:{}", report.source),
        };
        let is_for = |address: &str| address == email.as_str();
        let changed = processor
            .set_consent(lead, &is_for, ConsentKind::Email, false, &source)
            .await?;
        if changed.is_some() {
            action = "unsubscribed";
        }
    }
    let at = to_ms(now);
    let since = at - i64::try_from(config.soft_period.as_millis()).unwrap_or(i64::MAX / 2);
    let mut tx = store.begin_write().await?;
    let action = tx
        .log_bounce(
            &NewBounce {
                at,
                email: email.as_str(),
                lead_id: applied.lead_id,
                outbox_id: applied.outbox_id,
                kind: report.kind.as_str(),
                status: report.status.as_deref(),
                diagnostic: report.diagnostic.as_deref(),
                source: report.source,
                report_id: report.id.as_deref(),
                may_suppress: !internal,
            },
            SoftLimit {
                limit: i64::from(config.soft_limit),
                since,
            },
            action,
        )
        .await?;
    tx.commit().await?;
    applied.action = action;
    tracing::info!(
        lead = applied.lead_id,
        mail = applied.outbox_id,
        kind = applied.kind,
        source = applied.source,
        status = applied.status.as_deref().unwrap_or(""),
        action,
        "bounce report"
    );
    Ok(applied)
}

/// Whether any of `reports` changes consent (and so needs the lead's lock).
pub fn changes_consent(reports: &[Report]) -> bool {
    reports
        .iter()
        .any(|r| matches!(r.kind, Kind::Complaint | Kind::Unsubscribe))
}
