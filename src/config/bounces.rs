//! The checked `[bounces]` table: how soft bounces add up to a suppression, and the
//! secrets of the ESP webhooks (`[bounces.ses]`, `[bounces.postmark]`,
//! `[bounces.mailgun]`, `[bounces.sendgrid]`); plus `mail.bounce_address`, the base of
//! the VERP envelope sender.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::mail::Checker;

/// `[bounces]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBounces {
    /// Soft bounces of one address within `soft_period` that suppress it.
    #[serde(default = "soft_limit")]
    pub soft_limit: i64,
    #[serde(default = "soft_period")]
    pub soft_period: String,
    #[serde(default)]
    pub ses: RawSes,
    #[serde(default)]
    pub postmark: RawPostmark,
    #[serde(default)]
    pub mailgun: RawMailgun,
    #[serde(default)]
    pub sendgrid: RawSendgrid,
}

fn soft_limit() -> i64 {
    3
}

fn soft_period() -> String {
    "30d".into()
}

impl Default for RawBounces {
    fn default() -> Self {
        toml::from_str("").expect("every bounces key has a default")
    }
}

/// `[bounces.ses]`: Amazon SES notifications through an SNS topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSes {
    #[serde(default)]
    pub enabled: bool,
    /// Topic ARNs whose messages are taken (required when SES is enabled).
    #[serde(default)]
    pub topic_arns: Vec<String>,
    /// Another URL prefix signing certificates may come from, besides
    /// `https://sns.<region>.amazonaws.com/` (for a test or a private endpoint).
    #[serde(default)]
    pub cert_url_prefix: String,
}

/// `[bounces.postmark]`: Postmark does not sign its webhooks; they carry HTTP Basic
/// credentials set in the webhook's URL.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostmark {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
}

/// `[bounces.mailgun]`: the HTTP webhook signing key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMailgun {
    #[serde(default)]
    pub signing_key: String,
}

/// `[bounces.sendgrid]`: the signed event webhook's verification key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSendgrid {
    /// The base64 public key SendGrid shows for the signed event webhook.
    #[serde(default)]
    pub public_key: String,
}

/// The checked `[bounces]`.
#[derive(Debug, Clone)]
pub struct BouncesConfig {
    pub soft_limit: u32,
    pub soft_period: Duration,
    pub ses: Option<Ses>,
    pub postmark: Option<Postmark>,
    pub mailgun: Option<Mailgun>,
    pub sendgrid: Option<Sendgrid>,
}

#[derive(Debug, Clone)]
pub struct Ses {
    pub topic_arns: Vec<String>,
    pub cert_url_prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Postmark {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct Mailgun {
    pub signing_key: String,
}

#[derive(Debug, Clone)]
pub struct Sendgrid {
    /// The uncompressed P-256 point of the verification key.
    pub public_key: Vec<u8>,
}

/// The DER prefix of a P-256 public key (SubjectPublicKeyInfo with id-ecPublicKey and
/// prime256v1) before its 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

pub(super) fn bounces(raw: &RawBounces, c: &Checker) -> BouncesConfig {
    let bad = c.bad;
    let soft_limit = if (1..=100).contains(&raw.soft_limit) {
        raw.soft_limit as u32
    } else {
        bad(
            "bounces.soft_limit",
            format!("must be between 1 and 100, not {}", raw.soft_limit),
        );
        3
    };
    let ses = raw.ses.enabled.then(|| {
        let prefix = raw.ses.cert_url_prefix.trim();
        // A prefix must end with `/` (else `https://certs.example.com` would also match
        // `https://certs.example.com.evil.net/`), and plain http only on loopback.
        let loopback = url::Url::parse(prefix).is_ok_and(|u| {
            u.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
        });
        if !(prefix.is_empty()
            || (prefix.ends_with('/')
                && (prefix.starts_with("https://") || (prefix.starts_with("http://") && loopback))))
        {
            bad(
                "bounces.ses.cert_url_prefix",
                format!(
                    "`{prefix}` must be an https:// URL prefix ending with `/` (http:// only on \
                     loopback, for tests)"
                ),
            );
        }
        // Amazon signs the messages of every account's topics with the same key: only
        // the topics named here may report bounces.
        if raw.ses.topic_arns.is_empty() {
            bad(
                "bounces.ses.topic_arns",
                "name the SNS topic(s) of your SES feedback, e.g. \
                 [\"arn:aws:sns:eu-central-1:123456789012:ses-feedback\"]: any AWS account can \
                 send validly signed messages from a topic of its own"
                    .into(),
            );
        }
        Ses {
            topic_arns: raw.ses.topic_arns.clone(),
            cert_url_prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
        }
    });
    let postmark = match (raw.postmark.user.as_str(), raw.postmark.password.as_str()) {
        ("", "") => None,
        (user, password) if !user.is_empty() && password.len() >= 16 => Some(Postmark {
            user: user.to_string(),
            password: password.to_string(),
        }),
        _ => {
            bad(
                "bounces.postmark",
                "give user and a password of at least 16 characters (or neither, to leave \
                 /hooks/postmark off)"
                    .into(),
            );
            None
        }
    };
    let mailgun = match raw.mailgun.signing_key.trim() {
        "" => None,
        k => Some(Mailgun {
            signing_key: k.to_string(),
        }),
    };
    let sendgrid = match raw.sendgrid.public_key.trim() {
        "" => None,
        k => {
            let der = base64::engine::general_purpose::STANDARD
                .decode(k)
                .ok()
                .filter(|d| d.len() == 91 && d.starts_with(&P256_SPKI_PREFIX));
            match der {
                Some(d) => Some(Sendgrid {
                    public_key: d[P256_SPKI_PREFIX.len()..].to_vec(),
                }),
                None => {
                    bad(
                        "bounces.sendgrid.public_key",
                        "is not a base64 P-256 public key: copy the verification key SendGrid \
                         shows under Mail Settings > Event Webhook > Signed Event Webhook"
                            .into(),
                    );
                    None
                }
            }
        }
    };
    BouncesConfig {
        soft_limit,
        soft_period: (c.duration)("bounces.soft_period", &raw.soft_period),
        ses,
        postmark,
        mailgun,
        sendgrid,
    }
}

/// `mail.bounce_address`: empty gives `bounce@` the From domain, `none` turns VERP off.
pub(super) fn bounce_address(
    raw: &str,
    from: Option<&lettre::Address>,
    bad: &dyn Fn(&str, String),
) -> Option<lettre::Address> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("none") {
        return None;
    }
    if raw.is_empty() {
        return from.and_then(|f| format!("bounce@{}", f.domain()).parse().ok());
    }
    match raw.parse::<lettre::Address>() {
        Ok(a) if !a.user().contains('+') => Some(a),
        _ => {
            bad(
                "mail.bounce_address",
                format!(
                    "`{raw}` is not a plain address (like bounce@example.com, without `+`): \
                     mails go out with bounce+TOKEN@ its domain as envelope sender"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nurtured.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(
            Some(&path),
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.bounces.soft_limit, 3);
        assert_eq!(c.bounces.soft_period.as_secs(), 30 * 86_400);
        assert!(c.bounces.ses.is_none() && c.bounces.postmark.is_none());
        assert_eq!(
            c.mail.bounce_address.unwrap().to_string(),
            "bounce@example.com"
        );
        let c = load("[mail]\nbounce_address = \"none\"\n", &[]).unwrap();
        assert!(c.mail.bounce_address.is_none());
        let err = load(
            "[mail]\nbounce_address = \"b+x@example.com\"\n[bounces]\nsoft_limit = 0\n\
             soft_period = \"a while\"\n[bounces.postmark]\nuser = \"pm\"\npassword = \"short\"\n\
             [bounces.sendgrid]\npublic_key = \"bm90IGEga2V5\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "`mail.bounce_address`: `b+x@example.com` is not a plain address",
            "`bounces.soft_limit`: must be between 1 and 100, not 0",
            "`bounces.soft_period`",
            "`bounces.postmark`: give user and a password of at least 16 characters",
            "`bounces.sendgrid.public_key`: is not a base64 P-256 public key",
        ] {
            assert!(err.contains(needle), "{needle} in:\n{err}");
        }
        assert!(!err.contains("short\""), "no secret in errors: {err}");
        // Secrets can come from the environment.
        let c = load(
            "",
            &[("NURTURED_BOUNCES__MAILGUN__SIGNING_KEY", "key-0123456789")],
        )
        .unwrap();
        assert_eq!(c.bounces.mailgun.unwrap().signing_key, "key-0123456789");
    }
}
