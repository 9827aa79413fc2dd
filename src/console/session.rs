//! Console sessions as signed cookies, and the CSRF token that goes with each.
//!
//! A session cookie is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`,
//! the payload naming the user, when the session ends, a random nonce and a short hash
//! of the user's password hash. Any daemon of a cluster with the same `mail.secret`
//! accepts it; a changed password, a removed user, a changed secret or the end of the
//! session makes it invalid. Signing out revokes the nonce in this process (and the
//! browser drops the cookie). The CSRF token is an HMAC of the nonce, so it cannot be
//! made without the secret and changes with every sign-in.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::users::{UiConfig, User};

/// The cookie's name.
pub const COOKIE: &str = "nurtured_session";

/// Revoked nonces kept at most; older ones are dropped first (their sessions end anyway).
const MAX_REVOKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Payload {
    /// The user's name.
    u: String,
    /// Until when (Unix ms).
    x: i64,
    /// Random, names this sign-in.
    n: String,
    /// Short hash of the password hash: a new password ends old sessions.
    h: String,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub expires_ms: i64,
    pub nonce: String,
    /// The token forms must carry.
    pub csrf: String,
}

/// Makes and checks session cookies.
pub struct Sessions {
    key: [u8; 32],
    revoked: Mutex<HashMap<String, i64>>,
}

fn fingerprint(user: &User) -> String {
    let d = Sha256::digest(user.password_hash.as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..9])
}

impl Sessions {
    /// Keys derived from `secret` (the link secret), apart from the links' own keys.
    pub fn new(secret: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"nurtured console session\0");
        h.update(secret.as_bytes());
        Self {
            key: h.finalize().into(),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any size");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }

    fn csrf(&self, nonce: &str) -> String {
        URL_SAFE_NO_PAD.encode(&self.mac(&[b"csrf\0", nonce.as_bytes()])[..18])
    }

    /// A new session for `user` until `expires_ms`: the cookie value and the session.
    pub fn start(&self, user: &User, expires_ms: i64) -> (String, Session) {
        let mut nonce = [0u8; 18];
        getrandom::fill(&mut nonce).expect("the system has a random source");
        let payload = Payload {
            u: user.name.clone(),
            x: expires_ms,
            n: URL_SAFE_NO_PAD.encode(nonce),
            h: fingerprint(user),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("plain fields"));
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&[body.as_bytes()]));
        let session = Session {
            user: payload.u,
            expires_ms,
            csrf: self.csrf(&payload.n),
            nonce: payload.n,
        };
        (format!("{body}.{tag}"), session)
    }

    /// The session of cookie `value`, if it is signed, current, not revoked and its user
    /// still exists with the same password.
    pub fn check(&self, value: &str, ui: &UiConfig, now_ms: i64) -> Option<(Session, User)> {
        let (body, tag) = value.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).ok()?;
        m.update(body.as_bytes());
        m.verify_slice(&tag).ok()?;
        let payload: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        if payload.x <= now_ms {
            return None;
        }
        if self
            .revoked
            .lock()
            .expect("revoked nonces")
            .contains_key(&payload.n)
        {
            return None;
        }
        let user = ui.user(&payload.u)?;
        if fingerprint(user) != payload.h {
            return None;
        }
        Some((
            Session {
                user: user.name.clone(),
                expires_ms: payload.x,
                csrf: self.csrf(&payload.n),
                nonce: payload.n,
            },
            user.clone(),
        ))
    }

    /// Ends `session` in this process (sign-out).
    pub fn revoke(&self, session: &Session, now_ms: i64) {
        let mut r = self.revoked.lock().expect("revoked nonces");
        r.retain(|_, until| *until > now_ms);
        if r.len() >= MAX_REVOKED
            && let Some(oldest) = r.iter().min_by_key(|(_, u)| **u).map(|(n, _)| n.clone())
        {
            r.remove(&oldest);
        }
        r.insert(session.nonce.clone(), session.expires_ms);
    }

    /// True when `presented` is the CSRF token of `session` (compared in constant time).
    pub fn csrf_ok(&self, session: &Session, presented: &str) -> bool {
        let a = session.csrf.as_bytes();
        let b = presented.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::users::Role;
    use std::time::Duration;

    fn ui(hash: &str) -> UiConfig {
        UiConfig {
            addr: None,
            session: Duration::from_secs(3600),
            max_failures: 5,
            lockout: Duration::from_secs(900),
            users: vec![User {
                name: "anna".into(),
                email: "anna@example.com".into(),
                role: Role::Sales,
                password_hash: hash.into(),
                owner: None,
                language: None,
            }],
        }
    }

    #[test]
    fn a_cookie_holds_until_it_ends_is_revoked_altered_or_the_password_changes() {
        let s = Sessions::new("a secret of some length");
        let cfg = ui("$argon2id$one");
        let (cookie, session) = s.start(&cfg.users[0], 10_000);
        let (seen, user) = s.check(&cookie, &cfg, 5_000).unwrap();
        assert_eq!(seen, session);
        assert_eq!(user.name, "anna");
        assert!(s.csrf_ok(&seen, &session.csrf));
        assert!(!s.csrf_ok(&seen, "forged"));
        // Ended.
        assert!(s.check(&cookie, &cfg, 10_000).is_none());
        // Another secret, an altered payload, a new password.
        assert!(
            Sessions::new("another secret")
                .check(&cookie, &cfg, 5_000)
                .is_none()
        );
        let mut altered = cookie.clone();
        altered.replace_range(0..1, if cookie.starts_with('e') { "f" } else { "e" });
        assert!(s.check(&altered, &cfg, 5_000).is_none());
        assert!(s.check(&cookie, &ui("$argon2id$two"), 5_000).is_none());
        // Signed out.
        s.revoke(&session, 5_000);
        assert!(s.check(&cookie, &cfg, 5_000).is_none());
        // A second sign-in has its own CSRF token.
        let (_, again) = s.start(&cfg.users[0], 10_000);
        assert_ne!(again.csrf, session.csrf);
    }
}
