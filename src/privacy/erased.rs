//! Erased addresses: a keyed hash (HMAC-SHA256 over the lower-cased address, keyed
//! with `mail.secret`) is all that is kept of an erased person. When the same address
//! comes back (a re-import, a new sign-up), marketing mail needs *new* consent: mail
//! consent given after the erasure through the double opt-in confirmation link. Consent
//! claimed in traits or by an import does not count. Three places see to it:
//!
//! - intake: a lead created for an erased address starts with its mail consent
//!   withdrawn with the source [`RENEW_SOURCE`], which traits cannot replace (see
//!   `Lead::apply_traits`), so rules plan no marketing mail and `lead.send_opt_in()`
//!   sends the confirmation;
//! - sending: every marketing mail is checked right before it goes (see
//!   [`crate::mail::deliver`]), whatever made the lead;
//! - a mail held back there withdraws claimed consent on the lead the same way.
//!
//! The hash recorded is made with `mail.secret`; the check also tries each of
//! `mail.previous_secrets`, so an address erased before a rotation stays recognised
//! while its old secret is listed there.

use std::collections::{HashMap, HashSet};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::clock::to_ms;
use crate::domain::Lead;
use crate::store::{Store, StoreError};

/// What the double opt-in confirmation link records as the consent's source.
pub const NEW_CONSENT_SOURCE: &str = "double opt-in";

/// The source of the (withdrawn) mail consent of a lead whose address was erased
/// before: set when the lead is created, and when marketing mail to it is held back;
/// consent claimed in traits does not replace it.
pub use crate::domain::lead::RENEW_SOURCE;

/// The key that hashes erased addresses.
#[derive(Clone)]
pub struct AddressKey {
    /// The current secret first, then earlier ones (only checked against).
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressKey(..)")
    }
}

impl AddressKey {
    pub fn new(secret: &str) -> Self {
        Self {
            keys: vec![secret.as_bytes().to_vec()],
        }
    }

    /// The key of `mail.secret`, checking against `mail.previous_secrets` too.
    pub fn for_mail(mail: &crate::config::MailConfig) -> Self {
        Self::with_previous(&mail.secret, &mail.previous_secrets)
    }

    /// The key of `secret`, checking against the `previous` ones too.
    pub fn with_previous(secret: &str, previous: &[String]) -> Self {
        Self {
            keys: std::iter::once(secret)
                .chain(previous.iter().map(String::as_str))
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        }
    }

    /// The hex HMAC-SHA256 of the trimmed, lower-cased address with the current secret:
    /// what an erasure records.
    pub fn hash(&self, email: &str) -> String {
        Self::hash_with(&self.keys[0], email)
    }

    /// The hashes of `email` under the current and the earlier secrets.
    pub fn hashes(&self, email: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| Self::hash_with(k, email))
            .collect()
    }

    fn hash_with(key: &[u8], email: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(email.trim().to_lowercase().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Whether a lead whose address was erased at `erased_at` (ms) gave new consent since.
pub fn has_new_consent(lead: &Lead, erased_at: i64) -> bool {
    let c = &lead.consent_email;
    c.granted
        && c.at.is_some_and(|at| to_ms(at) > erased_at)
        && c.source
            .as_deref()
            .is_some_and(|s| s.starts_with(NEW_CONSENT_SOURCE))
}

/// Of `leads`, those whose address was erased before and who have not given new
/// consent since: they get no marketing mail.
pub async fn without_new_consent<'a>(
    store: &Store,
    key: &AddressKey,
    leads: impl IntoIterator<Item = &'a Lead>,
) -> Result<HashSet<i64>, StoreError> {
    let by_hash: HashMap<String, &Lead> = leads
        .into_iter()
        .flat_map(|l| {
            key.hashes(l.email.as_str())
                .into_iter()
                .map(move |h| (h, l))
        })
        .collect();
    let hashes: Vec<String> = by_hash.keys().cloned().collect();
    let erased = store.erased_at_of(&hashes).await?;
    Ok(erased
        .iter()
        .filter_map(|(h, at)| by_hash.get(h).filter(|l| !has_new_consent(l, *at)))
        .map(|l| l.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_ms;
    use crate::domain::{Consent, Email};

    #[test]
    fn the_hash_is_keyed_and_ignores_case() {
        let a = AddressKey::new("one");
        assert_eq!(a.hash("Anna@Example.com "), a.hash("anna@example.com"));
        assert_ne!(
            a.hash("anna@example.com"),
            AddressKey::new("two").hash("anna@example.com")
        );
        assert_eq!(a.hash("x").len(), 64);
    }

    #[test]
    fn an_address_hashed_before_a_rotation_is_still_found() {
        let before = AddressKey::new("old").hash("anna@example.com");
        let key = AddressKey::with_previous("new", &["old".to_string()]);
        assert_ne!(key.hash("anna@example.com"), before);
        assert!(key.hashes("Anna@example.com").contains(&before));
    }

    #[test]
    fn only_a_double_opt_in_after_the_erasure_is_new_consent() {
        let mut lead = Lead::new(
            1,
            Email::parse("a@example.com").unwrap(),
            "lead",
            from_ms(0),
        );
        let consent = |at: i64, source: &str| Consent {
            granted: true,
            at: Some(from_ms(at)),
            source: Some(source.into()),
        };
        lead.consent_email = consent(2_000, "identify");
        assert!(!has_new_consent(&lead, 1_000), "traits are not new consent");
        lead.consent_email = consent(500, "double opt-in (mail 3)");
        assert!(!has_new_consent(&lead, 1_000), "given before the erasure");
        lead.consent_email = consent(2_000, "double opt-in (mail 3)");
        assert!(has_new_consent(&lead, 1_000));
        lead.consent_email.granted = false;
        assert!(!has_new_consent(&lead, 1_000));
    }
}
