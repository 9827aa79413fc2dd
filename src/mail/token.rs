//! Signed links: unsubscribe, preferences, opt-in confirmation, open pixel and click
//! redirect, and sales' accept / reject links in handoff notifications.
//!
//! A token is `KID "." base64url(payload) "." base64url(HMAC-SHA256(key, KID "." payload))`.
//! `KID` names the key that signed it (derived from the secret, so `mail.secret` can be
//! rotated: tokens of the `mail.previous_secrets` still verify, new ones are signed
//! with the current secret). The payload names what the link does, for which lead (its
//! number) and mail, and carries a short keyed hash of the address instead of the
//! address: proxy logs that keep the URL do not learn who the lead is, and a link stops
//! working once the lead's address changes. A token that was altered, forged with
//! another secret or made for another purpose does not verify.
//!
//! Tokens of the earlier format (`payload "." tag`, the address readable in the
//! payload) still verify with the current and the previous secrets, so links already
//! sent keep working; new links never use it.

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
    /// The lead's topic preferences (`/p/`).
    Preferences,
}

/// The signed content of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(rename = "p")]
    pub purpose: Purpose,
    /// The lead.
    #[serde(rename = "l")]
    pub lead: i64,
    /// Who the link was made for, as [`Signer::address`] gives it (a keyed hash of the
    /// address): check it with [`Signer::is_for`].
    #[serde(rename = "a")]
    pub to: String,
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
    /// Unsubscribe links: the topic of the mail (one-click leaves this topic only).
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The key that signed the token (set by [`Signer::verify`]).
    #[serde(skip)]
    pub key: usize,
}

impl Claim {
    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires.is_some_and(|x| x < now.timestamp())
    }
}

/// The payload of the earlier format: the address in plain text.
#[derive(Deserialize)]
struct LegacyClaim {
    #[serde(rename = "p")]
    purpose: Purpose,
    #[serde(rename = "l")]
    lead: i64,
    #[serde(rename = "e")]
    email: String,
    #[serde(rename = "m", default)]
    mail: Option<i64>,
    #[serde(rename = "u", default)]
    url: Option<String>,
    #[serde(rename = "x", default)]
    expires: Option<i64>,
    #[serde(rename = "r", default)]
    round: Option<i64>,
}

/// One signing key and its id.
#[derive(Clone)]
struct Key {
    id: String,
    secret: Vec<u8>,
}

impl Key {
    fn new(secret: &str) -> Self {
        let secret = secret.as_bytes().to_vec();
        let id =
            URL_SAFE_NO_PAD.encode(&mac(&secret, b"nurtured key id").finalize().into_bytes()[..6]);
        Self { id, secret }
    }
}

fn mac(key: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(payload);
    mac
}

/// Signs tokens with the current secret and checks them with the current and the
/// previous ones.
#[derive(Clone)]
pub struct Signer {
    /// The current key first.
    keys: Vec<Key>,
}

/// A token that is not ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this link is not valid (it was changed or not made by us)")]
pub struct BadToken;

impl Signer {
    /// A signer with one secret.
    pub fn new(secret: &str) -> Self {
        Self::rotated(secret, &[])
    }

    /// Signs with `current`; tokens of `previous` secrets still verify.
    pub fn rotated(current: &str, previous: &[String]) -> Self {
        let mut keys = vec![Key::new(current)];
        keys.extend(previous.iter().map(|s| Key::new(s)));
        Self { keys }
    }

    /// The signer of `mail.secret` and `mail.previous_secrets`.
    pub fn from_config(mail: &crate::config::MailConfig) -> Self {
        Self::rotated(&mail.secret, &mail.previous_secrets)
    }

    /// Who a new link is for: a short keyed hash of the lower-cased address (with the
    /// current key).
    pub fn address(&self, email: &str) -> String {
        address_tag(&self.keys[0], email)
    }

    /// True when `claim` was made for `email`.
    pub fn is_for(&self, claim: &Claim, email: &str) -> bool {
        self.keys
            .get(claim.key)
            .is_some_and(|k| address_tag(k, email) == claim.to)
    }

    pub fn sign(&self, claim: &Claim) -> String {
        let key = &self.keys[0];
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claim).expect("claims serialise"));
        let signed = format!("{}.{payload}", key.id);
        let tag = mac(&key.secret, signed.as_bytes()).finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The claim of a token made by [`Signer::sign`] for `purpose` (with any configured
    /// secret), or of a token of the earlier format.
    pub fn verify(&self, token: &str, purpose: Purpose) -> Result<Claim, BadToken> {
        let mut parts = token.split('.');
        let claim = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(kid), Some(payload), Some(tag), None) => {
                self.verify_current(kid, payload, tag)?
            }
            (Some(payload), Some(tag), None, None) => self.verify_legacy(payload, tag)?,
            _ => return Err(BadToken),
        };
        if claim.purpose != purpose {
            return Err(BadToken);
        }
        Ok(claim)
    }

    fn verify_current(&self, kid: &str, payload: &str, tag: &str) -> Result<Claim, BadToken> {
        let index = self.keys.iter().position(|k| k.id == kid).ok_or(BadToken)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| BadToken)?;
        let signed = &format!("{kid}.{payload}");
        mac(&self.keys[index].secret, signed.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| BadToken)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| BadToken)?;
        let mut claim: Claim = serde_json::from_slice(&payload).map_err(|_| BadToken)?;
        claim.key = index;
        Ok(claim)
    }

    fn verify_legacy(&self, payload: &str, tag: &str) -> Result<Claim, BadToken> {
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| BadToken)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| BadToken)?;
        let index = self
            .keys
            .iter()
            .position(|k| mac(&k.secret, &payload).verify_slice(&tag).is_ok())
            .ok_or(BadToken)?;
        let old: LegacyClaim = serde_json::from_slice(&payload).map_err(|_| BadToken)?;
        Ok(Claim {
            purpose: old.purpose,
            lead: old.lead,
            to: address_tag(&self.keys[index], &old.email),
            mail: old.mail,
            url: old.url,
            expires: old.expires,
            round: old.round,
            topic: None,
            key: index,
        })
    }
}

/// 12 bytes of HMAC(key, "address:" + lower-cased address), base64url.
fn address_tag(key: &Key, email: &str) -> String {
    let text = format!("address:{}", email.trim().to_lowercase());
    URL_SAFE_NO_PAD.encode(&mac(&key.secret, text.as_bytes()).finalize().into_bytes()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a secret that is long enough for tests";

    fn claim(s: &Signer) -> Claim {
        Claim {
            purpose: Purpose::Unsubscribe,
            lead: 7,
            to: s.address("anna@example.com"),
            mail: Some(3),
            url: None,
            expires: None,
            round: None,
            topic: Some("news".into()),
            key: 0,
        }
    }

    #[test]
    fn a_signed_token_verifies_for_its_purpose_only() {
        let s = Signer::new(SECRET);
        let t = s.sign(&claim(&s));
        assert_eq!(s.verify(&t, Purpose::Unsubscribe), Ok(claim(&s)));
        assert_eq!(s.verify(&t, Purpose::Confirm), Err(BadToken));
    }

    #[test]
    fn the_token_carries_no_address_and_checks_it() {
        let s = Signer::new(SECRET);
        let t = s.sign(&claim(&s));
        let decoded: String = t
            .split('.')
            .filter_map(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        assert!(
            !decoded.contains("anna") && !t.contains("anna"),
            "{decoded}"
        );
        let c = s.verify(&t, Purpose::Unsubscribe).unwrap();
        assert!(s.is_for(&c, "Anna@Example.com"));
        assert!(!s.is_for(&c, "bert@example.com"));
    }

    #[test]
    fn tokens_of_a_previous_secret_verify_after_a_rotation() {
        let old = Signer::new("the old secret, long enough to sign links");
        let t = old.sign(&claim(&old));
        let rotated = Signer::rotated(
            SECRET,
            &["the old secret, long enough to sign links".into()],
        );
        let c = rotated.verify(&t, Purpose::Unsubscribe).unwrap();
        assert_eq!(c.key, 1);
        assert!(rotated.is_for(&c, "anna@example.com"));
        // New tokens are signed with the current secret: the old signer refuses them.
        let new = rotated.sign(&claim(&rotated));
        assert_eq!(old.verify(&new, Purpose::Unsubscribe), Err(BadToken));
        // Without the old secret, the old token is refused.
        assert_eq!(
            Signer::new(SECRET).verify(&t, Purpose::Unsubscribe),
            Err(BadToken)
        );
    }

    #[test]
    fn tokens_of_the_earlier_format_still_verify() {
        let payload = br#"{"p":"unsubscribe","l":7,"e":"anna@example.com","m":3}"#;
        let tag = mac(SECRET.as_bytes(), payload).finalize().into_bytes();
        let t = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        );
        let s = Signer::rotated("a new secret that is also long enough", &[SECRET.into()]);
        let c = s.verify(&t, Purpose::Unsubscribe).unwrap();
        assert_eq!((c.lead, c.mail, c.topic.as_deref()), (7, Some(3), None));
        assert!(s.is_for(&c, "anna@example.com"));
        assert_eq!(
            Signer::new("a new secret that is also long enough").verify(&t, Purpose::Unsubscribe),
            Err(BadToken)
        );
    }

    #[test]
    fn altered_and_forged_tokens_are_refused() {
        let s = Signer::new(SECRET);
        let t = s.sign(&claim(&s));
        // Another lead in the payload, the old signature.
        let mut other = claim(&s);
        other.lead = 8;
        let forged = s.sign(&other);
        let p: Vec<&str> = forged.split('.').collect();
        let q: Vec<&str> = t.split('.').collect();
        assert_eq!(
            s.verify(&format!("{}.{}.{}", p[0], p[1], q[2]), Purpose::Unsubscribe),
            Err(BadToken)
        );
        // Signed with another secret, and with its key id swapped for ours.
        let mallory = Signer::new("someone else's secret, also long enough");
        let m = mallory.sign(&other);
        assert_eq!(s.verify(&m, Purpose::Unsubscribe), Err(BadToken));
        let m: Vec<&str> = m.split('.').collect();
        assert_eq!(
            s.verify(&format!("{}.{}.{}", q[0], m[1], m[2]), Purpose::Unsubscribe),
            Err(BadToken)
        );
        assert_eq!(s.verify("garbage", Purpose::Unsubscribe), Err(BadToken));
        assert_eq!(s.verify("a.b", Purpose::Unsubscribe), Err(BadToken));
        assert_eq!(s.verify("a.b.c", Purpose::Unsubscribe), Err(BadToken));
    }
}
