//! `[[users]]` and `[ui]`: who may sign in to the console, with which role, and how the
//! console is served (its own listener, how long a session lasts).
//!
//! Passwords are kept only as argon2id hashes in PHC form (`$argon2id$v=19$...`), as
//! `nurtured user add` prints them; a plain password in the file is refused.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mail::Checker;

/// One `[[users]]` entry as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// The sign-in name; recorded as `ui:NAME` with every change made in the console.
    pub name: String,
    /// Optional; a sales user's address names their `[[sales.owners]]` entry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    /// `marketing`, `sales` or `admin`.
    pub role: String,
    /// argon2id hash in PHC form, as `nurtured user add` prints it.
    pub password_hash: String,
    /// Sales users: the `[[sales.owners]]` id whose handoffs are theirs; by default the
    /// owner with the same e-mail address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// `de` or `en`; by default the browser's language.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub language: String,
}

/// `[ui]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUi {
    /// `IP:PORT` of a listener of its own for the console; empty: only under `/ui/` on
    /// `http_addr`.
    #[serde(default)]
    pub addr: String,
    /// How long a sign-in lasts, e.g. `12h`.
    #[serde(default = "default_session")]
    pub session: String,
    /// Failed sign-ins per client address (and per name) before sign-in pauses.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// How long sign-in pauses after `max_failures`, e.g. `15m`.
    #[serde(default = "default_lockout")]
    pub lockout: String,
}

fn default_session() -> String {
    "12h".into()
}

fn default_max_failures() -> u32 {
    5
}

fn default_lockout() -> String {
    "15m".into()
}

impl Default for RawUi {
    fn default() -> Self {
        toml::from_str("").expect("every ui key has a default")
    }
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything; cannot answer handoffs owned by others.
    Marketing,
    /// Sees the board, their own handoffs and their leads; answers their handoffs.
    Sales,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Marketing, Role::Sales, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Marketing => "marketing",
            Role::Sales => "sales",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked console user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub email: String,
    pub role: Role,
    /// The PHC string of the password's argon2id hash.
    pub password_hash: String,
    /// The sales owner id whose handoffs are this user's (sales users).
    pub owner: Option<String>,
    /// `de` or `en`, when set.
    pub language: Option<String>,
}

/// Never shows the hash.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// The checked `[ui]` table and the users.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub addr: Option<SocketAddr>,
    pub session: Duration,
    pub max_failures: u32,
    pub lockout: Duration,
    pub users: Vec<User>,
}

impl UiConfig {
    /// The user signing in as `name` (names compare without case).
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name.trim()))
    }
}

/// True when `text` is an argon2id hash in PHC form.
pub fn is_argon2id(text: &str) -> bool {
    argon2::password_hash::phc::PasswordHash::new(text)
        .is_ok_and(|h| h.algorithm.as_str() == "argon2id")
}

/// Checks `[ui]` and `[[users]]`; `owners` are the sales owners as (id, e-mail).
pub(super) fn ui(
    raw: &RawUi,
    users: &[RawUser],
    owners: &[(String, String)],
    c: &Checker,
) -> UiConfig {
    let bad = c.bad;
    let addr = match raw.addr.trim() {
        "" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                bad(
                    "ui.addr",
                    format!(
                        "`{text}` is not an address: write IP:PORT, e.g. 127.0.0.1:8081, or \"\" \
                         to serve the console only under /ui/ on http_addr"
                    ),
                );
                None
            }
        },
    };
    let session = (c.duration)("ui.session", &raw.session);
    let lockout = (c.duration)("ui.lockout", &raw.lockout);
    if raw.max_failures == 0 {
        bad(
            "ui.max_failures",
            "must be at least 1, e.g. 5 failed sign-ins before a pause".into(),
        );
    }
    let mut checked: Vec<User> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        let name = u.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        {
            bad(
                &key("name"),
                format!(
                    "`{}` is not a user name: use 1 to 64 letters, digits, '.', '-', '_' or '@'",
                    u.name
                ),
            );
        }
        if checked.iter().any(|o| o.name.eq_ignore_ascii_case(name)) {
            bad(&key("name"), format!("`{name}` is listed twice"));
        }
        let email = u.email.trim().to_ascii_lowercase();
        if !email.is_empty() && email.parse::<lettre::Address>().is_err() {
            bad(
                &key("email"),
                format!("`{}` is not an e-mail address", u.email),
            );
        }
        let role = Role::parse(u.role.trim()).unwrap_or_else(|| {
            bad(
                &key("role"),
                format!(
                    "`{}` is not a role: use \"marketing\", \"sales\" or \"admin\"",
                    u.role
                ),
            );
            Role::Marketing
        });
        if !is_argon2id(u.password_hash.trim()) {
            bad(
                &key("password_hash"),
                "is not an argon2id hash ($argon2id$v=19$...): run `nurtured user add NAME \
                 --role ROLE` and paste the entry it prints"
                    .into(),
            );
        }
        let owner = match u.owner.trim() {
            "" if email.is_empty() => None,
            "" => owners
                .iter()
                .find(|(_, e)| e.eq_ignore_ascii_case(&email))
                .map(|(id, _)| id.clone()),
            id => {
                if !owners.iter().any(|(o, _)| o == id) {
                    bad(
                        &key("owner"),
                        format!(
                            "`{id}` is not the id of a [[sales.owners]] entry; known: {}",
                            owners
                                .iter()
                                .map(|(o, _)| o.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
                Some(id.to_string())
            }
        };
        let language = match u.language.trim() {
            "" => None,
            l @ ("de" | "en") => Some(l.to_string()),
            other => {
                bad(
                    &key("language"),
                    format!("`{other}` is not a console language: use \"de\" or \"en\""),
                );
                None
            }
        };
        checked.push(User {
            name: name.to_string(),
            email,
            role,
            password_hash: u.password_hash.trim().to_string(),
            owner,
            language,
        });
    }
    UiConfig {
        addr,
        session,
        max_failures: raw.max_failures.max(1),
        lockout,
        users: checked,
    }
}

/// Hashes `password` with argon2id (the crate's default parameters) and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// True when `password` matches the PHC `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("korrekt Pferd Batterie").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(is_argon2id(&h));
        assert!(verify_password("korrekt Pferd Batterie", &h));
        assert!(!verify_password("korrekt pferd batterie", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(!is_argon2id("plain-password"));
    }
}
