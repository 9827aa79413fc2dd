//! Signed links: unsubscribe, opt-in confirmation, open pixel and click redirect, and
//! sales' accept / reject links in handoff notifications.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`; the
//! payload names what the link does, for which lead (and mail). A token that was
//! altered, forged with another secret or made for another purpose does not verify.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Unsubscribe,
    Confirm,
    Open,
    Click,
    /// Sales accepts a handoff.
    Accept,
    /// Sales rejects a handoff.
    Reject,
}

/// The signed content of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(rename = "p")]
    pub purpose: Purpose,
    /// The lead.
    #[serde(rename = "l")]
    pub lead: i64,
    /// The lead's address when the link was made: a link stops working for an address
    /// the lead no longer has.
    #[serde(rename = "e")]
    pub email: String,
    /// The mail the link is in.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<i64>,
    /// Click links: where to go.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Until when the link works (Unix seconds); confirmation links expire.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Handoff links: the assignment round the link was made for (a link of an owner
    /// who no longer has the handoff does not work).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
}

impl Claim {
    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires.is_some_and(|x| x < now.timestamp())
    }
}

/// Signs and checks tokens with the configured secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// A token that is not ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this link is not valid (it was changed or not made by us)")]
pub struct BadToken;

impl Signer {
    pub fn new(secret: &str) -> Self {
        Self {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(payload);
        mac
    }

    pub fn sign(&self, claim: &Claim) -> String {
        let payload = serde_json::to_vec(claim).expect("claims serialise");
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The claim of a token made by [`Signer::sign`] for `purpose`.
    pub fn verify(&self, token: &str, purpose: Purpose) -> Result<Claim, BadToken> {
        let (payload, tag) = token.split_once('.').ok_or(BadToken)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| BadToken)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| BadToken)?;
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| BadToken)?;
        let claim: Claim = serde_json::from_slice(&payload).map_err(|_| BadToken)?;
        if claim.purpose != purpose {
            return Err(BadToken);
        }
        Ok(claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            purpose: Purpose::Unsubscribe,
            lead: 7,
            email: "anna@example.com".into(),
            mail: Some(3),
            url: None,
            expires: None,
            round: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_for_its_purpose_only() {
        let s = Signer::new("a secret that is long enough for tests");
        let t = s.sign(&claim());
        assert_eq!(s.verify(&t, Purpose::Unsubscribe), Ok(claim()));
        assert_eq!(s.verify(&t, Purpose::Confirm), Err(BadToken));
    }

    #[test]
    fn altered_and_forged_tokens_are_refused() {
        let s = Signer::new("a secret that is long enough for tests");
        let t = s.sign(&claim());
        // Another lead in the payload, the old signature.
        let mut other = claim();
        other.lead = 8;
        let forged_payload = s.sign(&other);
        let (p, _) = forged_payload.split_once('.').unwrap();
        let (_, tag) = t.split_once('.').unwrap();
        assert_eq!(
            s.verify(&format!("{p}.{tag}"), Purpose::Unsubscribe),
            Err(BadToken)
        );
        // Signed with another secret.
        let mallory = Signer::new("someone else's secret, also long enough");
        assert_eq!(
            s.verify(&mallory.sign(&other), Purpose::Unsubscribe),
            Err(BadToken)
        );
        assert_eq!(s.verify("garbage", Purpose::Unsubscribe), Err(BadToken));
        assert_eq!(s.verify("a.b", Purpose::Unsubscribe), Err(BadToken));
    }
}
