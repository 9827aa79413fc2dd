//! Mailgun's webhooks (`/hooks/mailgun`): `failed` (permanent or temporary),
//! `complained` and `unsubscribed` events, each signed with HMAC-SHA256 of timestamp
//! and token under the HTTP webhook signing key of `[bounces.mailgun]`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::report::{Kind, Report, failure_kind, status_code};
use super::verp::Purpose;

/// How far a signature's timestamp may be from now, in seconds (replays of old
/// calls are refused).
const MAX_SKEW: i64 = 15 * 60;

#[derive(Debug, Deserialize)]
struct Body {
    signature: Signature,
    #[serde(rename = "event-data")]
    event: EventData,
}

#[derive(Debug, Deserialize)]
struct Signature {
    timestamp: String,
    token: String,
    signature: String,
}

#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(default)]
    id: Option<String>,
    event: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    recipient: Option<String>,
    #[serde(default, rename = "delivery-status")]
    delivery_status: Option<DeliveryStatus>,
    #[serde(default)]
    message: Option<MessageInfo>,
    #[serde(default)]
    envelope: Option<Envelope>,
}

#[derive(Debug, Deserialize)]
struct DeliveryStatus {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageInfo {
    #[serde(default)]
    headers: Option<std::collections::HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    sender: Option<String>,
}

/// Why a Mailgun call was refused.
#[derive(Debug, thiserror::Error)]
pub enum MailgunError {
    #[error("not a Mailgun webhook body: {0}")]
    Shape(String),
    #[error("the signature does not verify with bounces.mailgun.signing_key")]
    Signature,
    #[error("the signature's timestamp is more than 15 minutes from now")]
    Stale,
}

/// Checks the signature and reads the event.
pub fn reports(
    body: &[u8],
    key: &str,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Report>, MailgunError> {
    let b: Body = serde_json::from_slice(body).map_err(|e| MailgunError::Shape(e.to_string()))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b.signature.timestamp.as_bytes());
    mac.update(b.signature.token.as_bytes());
    let given = hex::decode(b.signature.signature.trim()).map_err(|_| MailgunError::Signature)?;
    mac.verify_slice(&given)
        .map_err(|_| MailgunError::Signature)?;
    let at: i64 = b
        .signature
        .timestamp
        .parse()
        .map_err(|_| MailgunError::Signature)?;
    if (now.timestamp() - at).abs() > MAX_SKEW {
        return Err(MailgunError::Stale);
    }
    let e = b.event;
    let status_text = e
        .delivery_status
        .as_ref()
        .map(|d| {
            [d.message.as_deref(), d.description.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .filter(|s| !s.is_empty());
    let status = status_text.as_deref().and_then(status_code);
    let kind = match e.event.as_str() {
        "failed" if e.severity.as_deref() == Some("permanent") => {
            match failure_kind(status.as_deref()) {
                // Mailgun says permanent for a bad mailbox and for policy refusals alike.
                Kind::Hard => Kind::Hard,
                _ if status.is_none() => Kind::Hard,
                _ => Kind::Soft,
            }
        }
        "failed" => Kind::Soft,
        "complained" => Kind::Complaint,
        "unsubscribed" => Kind::Unsubscribe,
        _ => return Ok(Vec::new()),
    };
    let mut r = Report::new(kind, "mailgun");
    r.recipient = e.recipient;
    r.id = e.id;
    r.status = status.or_else(|| e.severity.clone());
    r.diagnostic = status_text;
    r.message_id = e.message.and_then(|m| m.headers).and_then(|h| {
        h.get("message-id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    });
    r.verp_from(
        secret,
        Purpose::Bounce,
        e.envelope.and_then(|v| v.sender).as_deref(),
    );
    Ok(vec![r])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &str, timestamp: i64, event: &serde_json::Value) -> Vec<u8> {
        let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}{token}").as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        serde_json::json!({"signature": {"timestamp": timestamp.to_string(), "token": token,
            "signature": signature}, "event-data": event})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn signed_events_are_read_and_others_refused() {
        let now = chrono::Utc::now();
        let key = "key-0123456789abcdef";
        let failed = serde_json::json!({"event": "failed", "severity": "permanent",
            "reason": "bounce", "recipient": "alice@example.com",
            "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist",
                "description": ""},
            "message": {"headers": {"message-id": "<mail-3.1@example.com>"}}});
        let r = reports(&signed(key, now.timestamp(), &failed), key, "s", now).unwrap();
        assert_eq!(r[0].kind, Kind::Hard);
        assert_eq!(r[0].message_id.as_deref(), Some("<mail-3.1@example.com>"));
        assert!(matches!(
            reports(
                &signed("another-key", now.timestamp(), &failed),
                key,
                "s",
                now
            ),
            Err(MailgunError::Signature)
        ));
        assert!(matches!(
            reports(&signed(key, now.timestamp() - 3600, &failed), key, "s", now),
            Err(MailgunError::Stale)
        ));
        let complained =
            serde_json::json!({"event": "complained", "recipient": "alice@example.com"});
        let r = reports(&signed(key, now.timestamp(), &complained), key, "s", now).unwrap();
        assert_eq!(r[0].kind, Kind::Complaint);
    }
}
