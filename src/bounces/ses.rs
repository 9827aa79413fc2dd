//! Amazon SES bounce and complaint notifications, delivered by an SNS topic to
//! `/hooks/ses`. Every SNS message is signed: the signature (SignatureVersion 1:
//! SHA1withRSA, 2: SHA256withRSA) is checked against the certificate at
//! `SigningCertURL`, which must be an `https://sns.<region>.amazonaws.com/` URL (or
//! start with `bounces.ses.cert_url_prefix`); certificates are fetched once and kept.
//! A subscription is confirmed by fetching its `SubscribeURL`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};
use serde::Deserialize;

use super::report::{Kind, Report, failure_kind, status_code};
use super::verp::Purpose;
use crate::config::bounces::Ses;

/// An SNS message as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    #[serde(default)]
    pub token: Option<String>,
    pub topic_arn: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub message: String,
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
}

/// Why an SNS message was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error("the body is not an SNS message: {0}")]
    Shape(String),
    #[error("SigningCertURL `{0}` is not an https URL on an sns.<region>.amazonaws.com host")]
    CertUrl(String),
    #[error("cannot fetch the signing certificate: {0}")]
    Fetch(String),
    #[error("the signing certificate cannot be read: {0}")]
    Cert(String),
    #[error("SignatureVersion `{0}` is not supported (1 or 2)")]
    Version(String),
    #[error("the signature does not verify")]
    Signature,
    #[error("topic `{0}` is not in bounces.ses.topic_arns")]
    Topic(String),
}

impl SnsMessage {
    /// The text SNS signs: chosen fields as `name\nvalue\n`, in this order.
    pub fn string_to_sign(&self) -> String {
        let mut out = String::new();
        let mut add = |name: &str, value: &str| {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        add("Message", &self.message);
        add("MessageId", &self.message_id);
        if self.kind == "Notification" {
            if let Some(s) = &self.subject {
                add("Subject", s);
            }
        } else {
            add(
                "SubscribeURL",
                self.subscribe_url.as_deref().unwrap_or_default(),
            );
        }
        add("Timestamp", &self.timestamp);
        if self.kind != "Notification" {
            add("Token", self.token.as_deref().unwrap_or_default());
        }
        add("TopicArn", &self.topic_arn);
        add("Type", &self.kind);
        out
    }
}

/// Whether `url` may serve SNS signing certificates.
pub fn cert_url_allowed(url: &str, config: &Ses) -> bool {
    // A query or fragment would make each request a new URL to fetch.
    if url.contains(['?', '#']) {
        return false;
    }
    if config
        .cert_url_prefix
        .as_deref()
        .is_some_and(|p| url.starts_with(p))
    {
        return true;
    }
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    let host = u.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .unwrap_or_default();
    u.scheme() == "https"
        && u.port().is_none()
        && u.username().is_empty()
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && u.path().ends_with(".pem")
}

/// Certificates fetched so far, by URL (DER).
static CERTS: LazyLock<Mutex<HashMap<String, Vec<u8>>>> = LazyLock::new(Default::default);
/// Certificates kept at most (SNS uses one per region at a time).
const MAX_CERTS: usize = 64;

async fn certificate(url: &str, client: &reqwest::Client) -> Result<Vec<u8>, SnsError> {
    if let Some(der) = CERTS.lock().unwrap_or_else(|e| e.into_inner()).get(url) {
        return Ok(der.clone());
    }
    let resp = client
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| SnsError::Fetch(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(SnsError::Fetch(format!("{url} answered {}", resp.status())));
    }
    // A certificate is a few KiB: a larger answer is not one.
    const MAX_PEM: usize = 64 * 1024;
    if resp.content_length().is_some_and(|n| n > MAX_PEM as u64) {
        return Err(SnsError::Cert(format!(
            "{url} is larger than {MAX_PEM} bytes"
        )));
    }
    let mut pem = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| SnsError::Fetch(e.to_string()))?
    {
        pem.extend_from_slice(&chunk);
        if pem.len() > MAX_PEM {
            return Err(SnsError::Cert(format!(
                "{url} is larger than {MAX_PEM} bytes"
            )));
        }
    }
    let der = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| SnsError::Cert(e.to_string()))?
        .to_vec();
    let mut certs = CERTS.lock().unwrap_or_else(|e| e.into_inner());
    if certs.len() >= MAX_CERTS {
        certs.clear();
    }
    certs.insert(url.to_string(), der.clone());
    Ok(der)
}

/// RSA PKCS#1 v1.5 with SHA-1, which SignatureVersion 1 uses (not offered by webpki).
#[derive(Debug)]
struct RsaSha1;

impl SignatureVerificationAlgorithm for RsaSha1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            public_key,
        )
        .verify(message, signature)
        .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_PKCS1_SHA256
    }
}

/// Checks the message's signature with the certificate (DER).
pub fn verify_with(message: &SnsMessage, cert_der: &[u8]) -> Result<(), SnsError> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(message.signature.trim())
        .map_err(|_| SnsError::Signature)?;
    let der = CertificateDer::from(cert_der);
    let cert =
        webpki::EndEntityCert::try_from(&der).map_err(|e| SnsError::Cert(format!("{e:?}")))?;
    let text = message.string_to_sign();
    let alg: &dyn SignatureVerificationAlgorithm = match message.signature_version.as_str() {
        "1" => &RsaSha1,
        "2" => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        other => return Err(SnsError::Version(other.to_string())),
    };
    cert.verify_signature(alg, text.as_bytes(), &signature)
        .map_err(|_| SnsError::Signature)
}

/// Parses and verifies a posted SNS message.
pub async fn verify(
    body: &[u8],
    config: &Ses,
    client: &reqwest::Client,
) -> Result<SnsMessage, SnsError> {
    let message: SnsMessage =
        serde_json::from_slice(body).map_err(|e| SnsError::Shape(e.to_string()))?;
    if !cert_url_allowed(&message.signing_cert_url, config) {
        return Err(SnsError::CertUrl(message.signing_cert_url.clone()));
    }
    if !matches!(message.signature_version.as_str(), "1" | "2") {
        return Err(SnsError::Version(message.signature_version.clone()));
    }
    let der = certificate(&message.signing_cert_url, client).await?;
    verify_with(&message, &der)?;
    if !config.topic_arns.is_empty() && !config.topic_arns.contains(&message.topic_arn) {
        return Err(SnsError::Topic(message.topic_arn.clone()));
    }
    Ok(message)
}

/// The SES notification inside an SNS `Notification`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    #[serde(default)]
    notification_type: Option<String>,
    /// Event publishing (configuration sets) names it so.
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    bounce: Option<Bounce>,
    #[serde(default)]
    complaint: Option<Complaint>,
    #[serde(default)]
    mail: Option<Mail>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: String,
    #[serde(default)]
    bounce_sub_type: Option<String>,
    #[serde(default)]
    bounced_recipients: Vec<Recipient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    diagnostic_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<Recipient>,
    #[serde(default)]
    complaint_feedback_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    /// The envelope sender: the VERP address.
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    common_headers: Option<CommonHeaders>,
    #[serde(default)]
    headers: Vec<Header>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonHeaders {
    #[serde(default)]
    message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Header {
    name: String,
    value: String,
}

/// The reports in an SES notification (the `Message` of an SNS `Notification`).
/// Deliveries and other event types give none.
pub fn reports(message: &str, secret: &str) -> Result<Vec<Report>, SnsError> {
    let n: Notification = serde_json::from_str(message)
        .map_err(|e| SnsError::Shape(format!("the Message is not an SES notification: {e}")))?;
    let kind = n
        .notification_type
        .or(n.event_type)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut out = Vec::new();
    match kind.as_str() {
        "bounce" => {
            let Some(b) = n.bounce else {
                return Ok(out);
            };
            let permanent = b.bounce_type.eq_ignore_ascii_case("Permanent");
            for r in b.bounced_recipients {
                let status = r
                    .status
                    .as_deref()
                    .and_then(status_code)
                    .or_else(|| r.diagnostic_code.as_deref().and_then(status_code));
                let kind = if permanent {
                    Kind::Hard
                } else {
                    match failure_kind(status.as_deref()) {
                        Kind::Hard => Kind::Hard,
                        _ => Kind::Soft,
                    }
                };
                let mut report = Report::new(kind, "ses");
                report.recipient = Some(r.email_address);
                report.status = status.or_else(|| {
                    Some(format!(
                        "{}/{}",
                        b.bounce_type,
                        b.bounce_sub_type.as_deref().unwrap_or("-")
                    ))
                });
                report.diagnostic = r.diagnostic_code;
                out.push(report);
            }
        }
        "complaint" => {
            let Some(c) = n.complaint else {
                return Ok(out);
            };
            if c.complaint_feedback_type.as_deref() == Some("not-spam") {
                return Ok(out);
            }
            for r in c.complained_recipients {
                let mut report = Report::new(Kind::Complaint, "ses");
                report.recipient = Some(r.email_address);
                report.status = c.complaint_feedback_type.clone();
                out.push(report);
            }
        }
        _ => {}
    }
    if let Some(mail) = n.mail {
        let message_id = mail.common_headers.and_then(|h| h.message_id).or_else(|| {
            mail.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("Message-ID"))
                .map(|h| h.value.clone())
        });
        for r in &mut out {
            r.verp_from(secret, Purpose::Bounce, mail.source.as_deref());
            r.message_id.clone_from(&message_id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ses(prefix: Option<&str>) -> Ses {
        Ses {
            topic_arns: Vec::new(),
            cert_url_prefix: prefix.map(str::to_string),
        }
    }

    fn cert() -> Vec<u8> {
        CertificateDer::from_pem_slice(include_bytes!("../../tests/fixtures/bounces/sns-cert.pem"))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn signature_version_1_verifies_and_an_altered_message_does_not() {
        let m: SnsMessage =
            serde_json::from_str(include_str!("../../tests/fixtures/bounces/sns-v1.json")).unwrap();
        verify_with(&m, &cert()).expect("the SHA1withRSA signature verifies");
        let mut altered = m.clone();
        altered.message = altered.message.replace("anna@", "bert@");
        assert!(matches!(
            verify_with(&altered, &cert()),
            Err(SnsError::Signature)
        ));
        let r = reports(&m.message, "s").unwrap();
        assert_eq!(r[0].kind, Kind::Complaint);
        assert_eq!(r[0].recipient.as_deref(), Some("anna@kunde.example"));
    }

    #[test]
    fn signature_version_2_verifies_and_version_1_text_does_not_pass_as_2() {
        let key = ring::signature::RsaKeyPair::from_pkcs8(include_bytes!(
            "../../tests/fixtures/bounces/sns-key.pk8"
        ))
        .unwrap();
        let mut m: SnsMessage =
            serde_json::from_str(include_str!("../../tests/fixtures/bounces/sns-v1.json")).unwrap();
        m.signature_version = "2".into();
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            m.string_to_sign().as_bytes(),
            &mut sig,
        )
        .unwrap();
        let v1 = m.signature.clone();
        m.signature = base64::engine::general_purpose::STANDARD.encode(&sig);
        verify_with(&m, &cert()).expect("the SHA256withRSA signature verifies");
        m.signature = v1;
        assert!(matches!(verify_with(&m, &cert()), Err(SnsError::Signature)));
        m.signature_version = "3".into();
        assert!(matches!(
            verify_with(&m, &cert()),
            Err(SnsError::Version(_))
        ));
    }

    #[test]
    fn only_sns_hosts_serve_certificates() {
        let c = ses(None);
        for ok in [
            "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert!(cert_url_allowed(ok, &c), "{ok}");
        }
        for bad in [
            "http://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-central-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.eu-central-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.eu-central-1.amazonaws.com:8443/x.pem",
            "https://user@sns.eu-central-1.amazonaws.com/x.pem",
            "https://sns.eu-central-1.amazonaws.com/x.txt",
            "http://127.0.0.1:9/cert.pem",
        ] {
            assert!(!cert_url_allowed(bad, &c), "{bad}");
        }
        assert!(cert_url_allowed(
            "http://127.0.0.1:9/cert.pem",
            &ses(Some("http://127.0.0.1:9/"))
        ));
    }

    #[test]
    fn a_permanent_bounce_is_hard_and_maps_by_verp_and_message_id() {
        let secret = "test-secret-0123456789-0123456789-abcdef";
        let base: lettre::Address = "bounce@example.com".parse().unwrap();
        let verp = super::super::verp::address(&base, secret, Purpose::Bounce, 9);
        let message = serde_json::json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "anna@kunde.example", "action": "failed",
                    "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": "2026-12-07T10:00:00.000Z", "feedbackId": "f-1"},
            "mail": {"timestamp": "2026-12-07T09:59:59.000Z", "source": verp,
                "messageId": "0100018c-ses", "destination": ["anna@kunde.example"],
                "commonHeaders": {"messageId": "<mail-9.1@example.com>"}}
        })
        .to_string();
        let r = reports(&message, secret).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, Kind::Hard);
        assert_eq!(r[0].outbox, Some(9));
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(r[0].message_id.as_deref(), Some("<mail-9.1@example.com>"));
    }
}
