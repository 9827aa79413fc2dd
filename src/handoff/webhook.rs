//! Webhook calls for handoff steps: the body is made when the step is written (in its
//! transaction), and a sender POSTs queued calls with retries, like mail.
//!
//! JSON calls carry `X-Nurtured-Event`, `X-Nurtured-Delivery` (the call's id, the same
//! on every try), `X-Nurtured-Timestamp` (Unix seconds) and `X-Nurtured-Signature:
//! sha256=<hex>`, the HMAC-SHA256 with the team's webhook secret of
//! `"<timestamp>.<body>"`. A receiver recomputes it and refuses old timestamps.
//! Slack calls carry a message (`text` and `blocks`) for an incoming webhook.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::desk::{Desk, DeskError};
use crate::clock::to_ms;
use crate::config::Config;
use crate::config::sales::WebhookFormat;
use crate::domain::text::one_line;
use crate::mail::deliver::backoff;
use crate::store::{WebhookDone, WebhookRow};

/// Longest wait for a receiver.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Calls claimed per pass.
const PAGE: i64 = 50;

/// The body of a call for `event` with the notification `data` (`handoff`, `brief`).
/// The owner's accept / reject links stay out: they act in the owner's name, and a
/// receiver (a channel, a CRM log) is read by others. A CRM answers through the API.
pub fn body(format: WebhookFormat, event: &str, data: &Value, at: DateTime<Utc>) -> String {
    let mut handoff = data["handoff"].clone();
    if let Some(h) = handoff.as_object_mut() {
        h.remove("accept_url");
        h.remove("reject_url");
    }
    match format {
        WebhookFormat::Json => json!({
            "event": event,
            "at": at.to_rfc3339(),
            "handoff": handoff,
            "lead": data["brief"],
        })
        .to_string(),
        WebhookFormat::Slack => slack(event, &handoff, &data["brief"]).to_string(),
    }
}

/// A Slack message: what happened and the essentials. Text from leads is escaped, so
/// a name cannot become a link or a mention, and put on one line, so it cannot add a
/// line that looks like another field.
fn slack(event: &str, h: &Value, b: &Value) -> Value {
    let s = |v: &Value| {
        let text = match v {
            Value::String(t) => t.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        one_line(&text)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let owner = s(&h["owner"]["name"]);
    let headline = match event {
        "handoff.assigned" => format!("Neuer Lead für {owner}"),
        "handoff.reassigned" => format!("Lead neu zugewiesen an {owner}"),
        "handoff.reminded" => format!("Erinnerung an {owner}: Lead wartet"),
        "handoff.breached" => format!("Frist verpasst ({owner})"),
        "handoff.escalated" => format!("Eskalation: {owner} hat nicht reagiert"),
        "handoff.accepted" => format!("{owner} hat den Lead angenommen"),
        "handoff.rejected" => format!("{owner} hat den Lead abgelehnt"),
        "handoff.expired" => "Lead zurück ans Marketing: keine Reaktion".to_string(),
        other => other.to_string(),
    };
    let c = &b["contact"];
    let who = format!(
        "{} ({}, {}) · {} · {}",
        s(&c["name"]),
        s(&c["title"]),
        s(&c["company"]),
        s(&c["phone"]),
        s(&c["email"])
    );
    let due = s(&h["due_local"]);
    let text = format!(
        "*{headline}*\n{who}\nGrund: {}\nFit {} · Interesse {} · fällig {due} · Übergabe {}",
        s(&h["reason"]),
        s(&b["scores"]["fit"]),
        s(&b["scores"]["interest"]),
        s(&h["id"]),
    );
    json!({
        "text": format!("{headline}: {}", s(&c["name"])),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// `sha256=<hex>` of `"<timestamp>.<body>"` keyed with `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts queued webhook calls.
pub struct WebhookSender {
    desk: Arc<Desk>,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

impl WebhookSender {
    pub fn new(desk: Arc<Desk>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("nurtured/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Self {
            wake: desk.webhook_wake.clone(),
            desk,
            client,
        }
    }

    /// Runs passes until `shutdown`, woken when calls are queued, else once a second.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = self.run_due().await {
                tracing::error!(error = %e, "webhook pass failed; trying again");
            }
            let idle = match self.desk.store().next_webhook_due().await {
                Ok(Some(due)) => Duration::from_millis(
                    (due - to_ms(self.desk.clock.now())).clamp(10, 1000) as u64,
                ),
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// Sends the calls due now; returns how many were tried.
    pub async fn run_due(&self) -> Result<usize, DeskError> {
        let Ok(lease) = self.desk.processor.held_lease() else {
            return Ok(0);
        };
        let now = self.desk.clock.now();
        let mut tx = self.desk.store().begin_write().await?;
        tx.hold_lease(&lease).await?;
        let claimed = tx.claim_webhooks(lease.holder(), to_ms(now), PAGE).await?;
        tx.commit().await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let n = claimed.len();
        // Calls go out at once, each bounded by the timeout.
        let mut calls = tokio::task::JoinSet::new();
        for (i, row) in claimed.into_iter().enumerate() {
            let (client, config) = (self.client.clone(), self.desk.config.clone());
            calls.spawn(async move { (i, send(&client, &config, row, now).await) });
        }
        let mut done: Vec<(usize, WebhookDone)> = calls.join_all().await;
        done.sort_by_key(|(i, _)| *i);
        let done: Vec<WebhookDone> = done.into_iter().map(|(_, d)| d).collect();
        let mut tx = self.desk.begin().await?;
        tx.finish_webhooks(&done, to_ms(self.desk.clock.now()))
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// POSTs one call; says whether to try again.
async fn send(
    client: &reqwest::Client,
    config: &Config,
    row: WebhookRow,
    now: DateTime<Utc>,
) -> WebhookDone {
    let Some(hook) = config
        .sales
        .team(&row.team)
        .and_then(|t| t.webhook.as_ref())
    else {
        return WebhookDone::Failed {
            id: row.id,
            reason: format!("team `{}` has no webhook any more", row.team),
        };
    };
    let ts = now.timestamp();
    let mut req = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-nurtured-event", &row.event)
        .header("x-nurtured-delivery", row.id.to_string())
        .header("x-nurtured-timestamp", ts.to_string());
    if !hook.secret.is_empty() {
        req = req.header(
            "x-nurtured-signature",
            signature(&hook.secret, ts, &row.body),
        );
    }
    let result = req.body(row.body.clone()).send().await;
    let (retry, reason) = match result {
        Ok(r) if r.status().is_success() => return WebhookDone::Sent { id: row.id },
        Ok(r) => {
            let status = r.status();
            let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
            (retry, format!("the receiver answered {status}"))
        }
        Err(e) => (true, format!("cannot reach the receiver: {e}")),
    };
    let first = row.first_try_at.unwrap_or(to_ms(now));
    let age = to_ms(now) - first;
    if !retry || age >= config.mail.retry_max_age.as_millis() as i64 {
        tracing::error!(webhook = row.id, event = %row.event, %reason, tries = row.attempts, "webhook call failed for good");
        return WebhookDone::Failed {
            id: row.id,
            reason: format!("{reason} (try {})", row.attempts),
        };
    }
    let wait = backoff(config.mail.retry_base, row.attempts, row.id);
    tracing::warn!(webhook = row.id, event = %row.event, %reason, retry_in = ?wait, "webhook call failed; trying again");
    WebhookDone::Later {
        id: row.id,
        until: to_ms(now) + wait.as_millis() as i64,
        reason: format!("{reason} (try {})", row.attempts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        let mut d = crate::handoff::brief::sample_notification();
        d["brief"]["contact"]["name"] = json!("<https://evil.example|Annehmen> & Co");
        d["handoff"]["reason"] = json!("MQL\nFit 99 · Interesse 99 · fällig sofort\u{0}");
        d
    }

    #[test]
    fn bodies_leave_out_the_owner_links_and_slack_text_is_escaped() {
        let at = chrono::DateTime::from_timestamp(1_774_000_000, 0).unwrap();
        let json_body = body(WebhookFormat::Json, "handoff.assigned", &data(), at);
        let v: Value = serde_json::from_str(&json_body).unwrap();
        assert_eq!(v["event"], "handoff.assigned");
        assert_eq!(v["handoff"]["id"], 12);
        assert!(v["handoff"].get("accept_url").is_none());
        assert!(!json_body.contains("/h/TOKEN"));
        let slack_body = body(WebhookFormat::Slack, "handoff.assigned", &data(), at);
        let v: Value = serde_json::from_str(&slack_body).unwrap();
        let text = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            text.contains("&lt;https://evil.example|Annehmen&gt; &amp; Co"),
            "{text}"
        );
        assert!(text.starts_with("*Neuer Lead für Anna Berger*"), "{text}");
        // Four lines, whatever the lead's data: a reason cannot add one.
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.contains("Grund: MQL Fit 99 · Interesse 99 · fällig sofort\n"),
            "{text}"
        );
        let json: Value = serde_json::from_str(&json_body).unwrap();
        assert_eq!(
            json["lead"]["contact"]["name"],
            data()["brief"]["contact"]["name"]
        );
        assert!(!slack_body.contains("/h/TOKEN"));
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_and_body() {
        // HMAC-SHA256("key", "1.{}"), computed independently with openssl.
        assert_eq!(
            signature("key", 1, "{}"),
            "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
