//! The checked `[http]` table and `[[api_keys]]`: which keys the API accepts with which
//! scopes, which web origins may call the intake routes from a browser, and how fast
//! one client address may open the public link routes.
//!
//! Keys are kept only as SHA-256 digests once checked, so a key never reaches a log or
//! an error message through the configuration.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mail::Checker;

/// `[http]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Web origins (`https://www.example.com`) whose scripts may call the intake
    /// routes; `["*"]` for any.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Requests per client address to the link routes: `N/s`, `N/min` or `N/h`.
    #[serde(default = "default_link_rate")]
    pub link_rate: String,
    /// Requests one address may make at once before the rate applies.
    #[serde(default = "default_link_burst")]
    pub link_burst: i64,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        toml::from_str("").expect("every http key has a default")
    }
}

fn default_link_rate() -> String {
    "60/min".into()
}

fn default_link_burst() -> i64 {
    20
}

/// One `[[api_keys]]` entry as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: String,
    /// The key itself; or give `key_hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `sha256:HEX` of the key (`nurtured key new` prints one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_hash: String,
    pub scopes: Vec<String>,
}

/// What a key may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Send events: identify, track, page, batch, import.
    Ingest,
    /// Read leads, mails, handoffs, counters, reports, health.
    Read,
    /// Change: move stages, answer handoffs.
    Write,
    /// Everything, and name another user in `by`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked API key: its name, the SHA-256 digest of the key, its scopes.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub digest: [u8; 32],
    pub scopes: Vec<Scope>,
}

impl ApiKey {
    /// True when the key has `scope`, or `admin`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// Never shows the digest: a weak key could be guessed back from it.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 digest of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The `key_hash` spelling of a key's digest: `sha256:HEX`.
pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(digest(key)))
}

/// The name the `api_token` key has in `by` (`api:api_token`).
pub const TOKEN_NAME: &str = "api_token";

/// How many requests a client address may make to the link routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRate {
    /// One request comes back every `period`.
    pub period: Duration,
    pub burst: NonZeroU32,
}

/// The checked `[http]` table and the API keys.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Every key the API accepts: `api_token` (admin) first, then `[[api_keys]]`.
    pub keys: Vec<ApiKey>,
    /// Origins allowed to call the intake routes from a browser; `*` for any.
    pub cors_origins: Vec<String>,
    pub link_rate: LinkRate,
    pub trusted_proxies: Vec<IpAddr>,
}

impl HttpConfig {
    /// The key whose digest matches `presented`, compared in constant time with every key.
    pub fn key(&self, presented: &str) -> Option<&ApiKey> {
        use subtle::ConstantTimeEq;
        let d = digest(presented);
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&d)) && found.is_none() {
                found = Some(k);
            }
        }
        found
    }
}

/// Parses `N/s`, `N/min` or `N/h` into the time one request takes to come back.
fn rate(text: &str) -> Option<Duration> {
    let (n, per) = text.trim().split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let per = match per.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return None,
    };
    Some(Duration::from_secs(per) / n).filter(|d| !d.is_zero())
}

pub(super) fn http(raw: &RawHttp, api_token: &str, keys: &[RawApiKey], c: &Checker) -> HttpConfig {
    let bad = c.bad;
    let mut all = vec![ApiKey {
        name: TOKEN_NAME.into(),
        digest: digest(api_token),
        scopes: vec![Scope::Admin],
    }];
    for (i, k) in keys.iter().enumerate() {
        let key = format!("api_keys[{i}]");
        let name_ok = !k.name.is_empty()
            && k.name.len() <= 64
            && k.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            bad(
                &format!("{key}.name"),
                format!(
                    "`{}` is not a key name: use 1 to 64 letters, digits, `-`, `_` or `.` \
                     (it is recorded as `api:NAME`)",
                    k.name
                ),
            );
        } else if k.name == TOKEN_NAME || keys[..i].iter().any(|o| o.name == k.name) {
            bad(
                &format!("{key}.name"),
                format!(
                    "`{}` is used twice (`{TOKEN_NAME}` is the name of the api_token)",
                    k.name
                ),
            );
        }
        let digest = match (k.key.is_empty(), k.key_hash.is_empty()) {
            (false, true) => {
                if k.key.trim().len() < 16 {
                    bad(
                        &format!("{key}.key"),
                        "must be at least 16 characters; `nurtured key new NAME` makes one".into(),
                    );
                }
                Some(digest(&k.key))
            }
            (true, false) => {
                let parsed = k
                    .key_hash
                    .strip_prefix("sha256:")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                if parsed.is_none() {
                    bad(
                        &format!("{key}.key_hash"),
                        "is not `sha256:` and 64 hex digits; `nurtured key new NAME` prints one, \
                         or `printf %s KEY | sha256sum`"
                            .into(),
                    );
                }
                parsed
            }
            _ => {
                bad(
                    &key,
                    "give either `key` or `key_hash` (`sha256:HEX`), not both or neither".into(),
                );
                None
            }
        };
        let mut scopes = Vec::new();
        for (j, s) in k.scopes.iter().enumerate() {
            match Scope::parse(s) {
                Some(s) if scopes.contains(&s) => bad(
                    &format!("{key}.scopes[{j}]"),
                    format!("`{s}` is given twice"),
                ),
                Some(s) => scopes.push(s),
                None => bad(
                    &format!("{key}.scopes[{j}]"),
                    format!("`{s}` is not a scope: use ingest, read, write or admin"),
                ),
            }
        }
        if k.scopes.is_empty() {
            bad(
                &format!("{key}.scopes"),
                "is empty: give at least one of ingest, read, write, admin".into(),
            );
        }
        if let Some(digest) = digest {
            if all.iter().any(|o| o.digest == digest) {
                bad(
                    &key,
                    "has the same key as another entry or the api_token: give each its own".into(),
                );
            }
            all.push(ApiKey {
                name: k.name.clone(),
                digest,
                scopes,
            });
        }
    }

    for (i, origin) in raw.cors_origins.iter().enumerate() {
        let ok = origin == "*"
            || url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
            });
        if !ok {
            bad(
                &format!("http.cors_origins[{i}]"),
                format!(
                    "`{origin}` is not an origin: write the scheme and host (and port) only, \
                     e.g. \"https://www.example.com\", or \"*\" for any"
                ),
            );
        }
    }
    let period = rate(&raw.link_rate).unwrap_or_else(|| {
        bad(
            "http.link_rate",
            format!(
                "`{}` is not a rate: write requests per time, e.g. \"60/min\", \"5/s\", \"600/h\"",
                raw.link_rate
            ),
        );
        Duration::from_secs(1)
    });
    let burst = u32::try_from(raw.link_burst)
        .ok()
        .and_then(NonZeroU32::new)
        .unwrap_or_else(|| {
            bad(
                "http.link_burst",
                format!("must be a whole number above 0, not {}", raw.link_burst),
            );
            NonZeroU32::MIN
        });
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match p.trim().parse::<IpAddr>() {
            Ok(ip) => trusted_proxies.push(ip),
            Err(_) => bad(
                &format!("http.trusted_proxies[{i}]"),
                format!("`{p}` is not an IP address: write e.g. \"127.0.0.1\" or \"::1\""),
            ),
        }
    }
    HttpConfig {
        keys: all,
        cors_origins: raw.cors_origins.clone(),
        link_rate: LinkRate { period, burst },
        trusted_proxies,
    }
}

/// A new random key (32 bytes, hex) and the `[[api_keys]]` entry that holds its hash.
pub fn new_key(name: &str, scopes: &[Scope]) -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!("nk_{}", hex::encode(bytes));
    let entry = format!(
        "[[api_keys]]\nname = {}\nkey_hash = \"{}\"\nscopes = [{}]\n",
        toml::Value::String(name.to_string()),
        key_hash(&key),
        scopes
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((key, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_parsed() {
        assert_eq!(rate("60/min"), Some(Duration::from_secs(1)));
        assert_eq!(rate("5/s"), Some(Duration::from_millis(200)));
        assert_eq!(rate("3600/h"), Some(Duration::from_secs(1)));
        assert_eq!(rate("0/s"), None);
        assert_eq!(rate("often"), None);
        assert_eq!(rate("5/day"), None);
    }

    #[test]
    fn a_new_key_matches_its_printed_hash() {
        let (key, entry) = new_key("website", &[Scope::Ingest]).unwrap();
        assert!(key.starts_with("nk_") && key.len() == 67, "{key}");
        let raw: toml::Table = entry.parse().unwrap();
        let k: RawApiKey = raw["api_keys"].as_array().unwrap()[0]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(k.key_hash, key_hash(&key));
        assert_eq!(k.scopes, vec!["ingest"]);
        assert_ne!(new_key("x", &[Scope::Read]).unwrap().0, key);
    }

    fn load(text: &str) -> Result<super::super::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        super::super::Config::load_with_env(Some(&path), Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_checked_with_their_key_path_and_never_shown() {
        let err = load(
            "[[api_keys]]\nname = \"web\"\nkey = \"secret-web-key-0001\"\nscopes = [\"ingest\", \"delete\"]\n\
             [[api_keys]]\nname = \"web\"\nkey_hash = \"md5:abc\"\nscopes = []\n\
             [[api_keys]]\nname = \"a b\"\nkey = \"short-secret\"\nscopes = [\"read\"]\n\
             [[api_keys]]\nname = \"both\"\nkey = \"secret-web-key-0001\"\nkey_hash = \"sha256:00\"\nscopes = [\"read\"]\n\
             [http]\ncors_origins = [\"https://www.example.com/\"]\nlink_rate = \"often\"\nlink_burst = 0\n\
             trusted_proxies = [\"proxy.local\"]\n",
        )
        .unwrap_err();
        for needle in [
            "`api_keys[0].scopes[1]`: `delete` is not a scope",
            "`api_keys[1].name`: `web` is used twice",
            "`api_keys[1].key_hash`: is not `sha256:`",
            "`api_keys[1].scopes`: is empty",
            "`api_keys[2].name`: `a b` is not a key name",
            "`api_keys[2].key`: must be at least 16 characters",
            "`api_keys[3]`: give either `key` or `key_hash`",
            "`http.cors_origins[0]`",
            "`http.link_rate`: `often` is not a rate",
            "`http.link_burst`",
            "`http.trusted_proxies[0]`",
        ] {
            assert!(err.contains(needle), "{needle} in:\n{err}");
        }
        assert!(!err.contains("secret-web-key"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
    }

    #[test]
    fn a_key_is_found_by_its_value_or_its_hash() {
        let c = load(&format!(
            "api_token = \"admin-token-123\"\n\
             [[api_keys]]\nname = \"web\"\nkey = \"web-key-0123456789\"\nscopes = [\"ingest\"]\n\
             [[api_keys]]\nname = \"crm\"\nkey_hash = \"{}\"\nscopes = [\"read\", \"write\"]\n",
            key_hash("crm-key-0123456789")
        ))
        .unwrap();
        let h = &c.http;
        assert_eq!(h.key("admin-token-123").unwrap().name, TOKEN_NAME);
        assert!(h.key("admin-token-123").unwrap().allows(Scope::Write));
        let web = h.key("web-key-0123456789").unwrap();
        assert!(web.allows(Scope::Ingest) && !web.allows(Scope::Read));
        let crm = h.key("crm-key-0123456789").unwrap();
        assert_eq!(crm.name, "crm");
        assert!(crm.allows(Scope::Write) && !crm.allows(Scope::Admin));
        assert!(h.key("web-key-012345678").is_none());
        assert!(!format!("{c:?}").contains("web-key"));
    }
}
