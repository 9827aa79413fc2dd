//! SendGrid's event webhook (`/hooks/sendgrid`): `bounce` (type `bounce` or
//! `blocked`), `dropped` for a bounced address, `spamreport` and `unsubscribe`
//! events. Calls are signed (ECDSA P-256 over the timestamp header and the body); the
//! verification key is `bounces.sendgrid.public_key`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::report::{Kind, Report, failure_kind, status_code};

/// The headers SendGrid signs with.
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// How far a signature's timestamp may be from now, in seconds.
const MAX_SKEW: i64 = 15 * 60;

#[derive(Debug, Deserialize)]
struct Event {
    email: String,
    event: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "smtp-id")]
    smtp_id: Option<String>,
    #[serde(default)]
    sg_event_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendgridError {
    #[error("the signature or timestamp header is missing")]
    Unsigned,
    #[error("the signature does not verify with bounces.sendgrid.public_key")]
    Signature,
    #[error("the signature's timestamp is more than 15 minutes from now")]
    Stale,
    #[error("not a SendGrid event webhook body (a JSON array of events): {0}")]
    Shape(String),
}

/// Checks the signature (`signature`, `timestamp`: the two headers) and reads the
/// events.
pub fn reports(
    body: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    public_key: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Report>, SendgridError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(SendgridError::Unsigned);
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| SendgridError::Signature)?;
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&signed, &sig)
        .map_err(|_| SendgridError::Signature)?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SendgridError::Signature)?;
    if (now.timestamp() - at).abs() > MAX_SKEW {
        return Err(SendgridError::Stale);
    }
    let events: Vec<Event> =
        serde_json::from_slice(body).map_err(|e| SendgridError::Shape(e.to_string()))?;
    Ok(events
        .into_iter()
        .filter_map(|e| {
            let status = e
                .status
                .as_deref()
                .and_then(status_code)
                .or_else(|| e.reason.as_deref().and_then(status_code));
            let kind = match (e.event.as_str(), e.kind.as_deref()) {
                ("bounce", Some("blocked")) => Kind::Soft,
                ("bounce", _) => match failure_kind(status.as_deref()) {
                    Kind::Hard => Kind::Hard,
                    _ if status.is_none() => Kind::Hard,
                    _ => Kind::Soft,
                },
                ("spamreport", _) => Kind::Complaint,
                ("unsubscribe" | "group_unsubscribe", _) => Kind::Unsubscribe,
                _ => return None,
            };
            let mut r = Report::new(kind, "sendgrid");
            r.recipient = Some(e.email);
            r.status = status.or(e.kind);
            r.diagnostic = e.reason;
            r.message_id = e.smtp_id;
            r.id = e.sg_event_id;
            Some(r)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    #[test]
    fn signed_events_are_read_and_altered_ones_refused() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let now = chrono::Utc::now();
        let ts = now.timestamp().to_string();
        let body = br#"[{"email":"x@kunde.example","timestamp":1,"event":"bounce","type":"bounce",
            "status":"5.1.1","reason":"550 5.1.1 unknown user","smtp-id":"<mail-1.1@example.com>"},
            {"email":"y@kunde.example","timestamp":1,"event":"spamreport"},
            {"email":"z@kunde.example","timestamp":1,"event":"delivered"}]"#;
        let mut signed = ts.as_bytes().to_vec();
        signed.extend_from_slice(body);
        let sig = base64::engine::general_purpose::STANDARD
            .encode(key.sign(&rng, &signed).unwrap().as_ref());
        let public = key.public_key().as_ref();
        let r = reports(body, Some(&sig), Some(&ts), public, now).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, Kind::Hard);
        assert_eq!(r[1].kind, Kind::Complaint);
        let mut altered = body.to_vec();
        altered[12] = b'q';
        assert!(matches!(
            reports(&altered, Some(&sig), Some(&ts), public, now),
            Err(SendgridError::Signature)
        ));
        assert!(matches!(
            reports(body, None, Some(&ts), public, now),
            Err(SendgridError::Unsigned)
        ));
    }
}
