//! A rendered mail as an RFC 5322 message: multipart text + HTML, a Message-ID derived
//! from the outbox id and keyed with `mail.secret` (so a mail sent twice carries the
//! same id, and nobody can guess another mail's id), the List-Unsubscribe
//! headers for marketing mail (RFC 8058 one-click), and a DKIM signature when a key is
//! configured.
//!
//! Every value that comes from a lead or a template (the recipient's display name, the
//! subject, header values) is put on one line first ([`one_line`]: line breaks and tabs
//! become a space, other control characters are removed), so nothing a lead sent can
//! add a header or break the message, whenever it was stored.

use std::collections::BTreeMap;

use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::config::mail::Dkim;
use crate::domain::text::{cut, one_line};

/// The longest display name of the recipient, in characters; longer ones are cut.
const MAX_NAME: usize = 200;

/// What goes into one message.
pub struct Parts<'a> {
    pub outbox_id: i64,
    pub created_at: i64,
    /// `mail.secret`: keys the Message-ID's tag (see [`crate::bounces::verp::message_tag`]).
    pub secret: &'a str,
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: &'a str,
    pub to_name: &'a str,
    pub subject: &'a str,
    pub text: String,
    pub html: String,
    /// `List-Unsubscribe` targets (URL, and mailto when configured); empty for mail
    /// that is not marketing.
    pub unsubscribe: Vec<String>,
    /// The envelope sender (a VERP address); `None`: the From address.
    pub return_path: Option<String>,
}

/// A message ready for the transport.
pub struct Built {
    pub message: Message,
    pub message_id: String,
    /// The headers nurtured set, for the audit record.
    pub headers: BTreeMap<String, String>,
}

/// Why a message could not be built (a bad address in the lead or the config).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("`{0}` is not a usable recipient address")]
    Recipient(String),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
}

/// A DKIM signer made once from the configured key.
pub struct DkimSigner(DkimConfig);

impl DkimSigner {
    /// Reads the key: RSA as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), or Ed25519 as the
    /// base64 of the raw 32-byte seed.
    pub fn new(d: &Dkim) -> Result<Self, String> {
        let pem = d.key_pem.trim();
        let algorithm = if pem.starts_with("-----BEGIN RSA PRIVATE KEY") {
            DkimSigningAlgorithm::Rsa
        } else if pem.starts_with("-----BEGIN") {
            return Err(format!(
                "{}: RSA keys must be PKCS#1 PEM (BEGIN RSA PRIVATE KEY); convert with \
                 `openssl rsa -in KEY -traditional -out KEY.pem`",
                d.key_file.display()
            ));
        } else {
            DkimSigningAlgorithm::Ed25519
        };
        let key = DkimSigningKey::new(pem, algorithm)
            .map_err(|e| format!("{}: not a usable DKIM key: {e}", d.key_file.display()))?;
        let headers = [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "Reply-To",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "MIME-Version",
        ]
        .iter()
        .map(|h| HeaderName::new_from_ascii_str(h))
        .collect();
        // Relaxed header canonicalization: lettre folds the signature header differently
        // before and after signing, which simple canonicalization does not survive.
        Ok(Self(DkimConfig::new(
            d.selector.clone(),
            d.domain.clone(),
            key,
            headers,
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        )))
    }
}

/// Builds (and signs) the message.
pub fn build(parts: Parts, dkim: Option<&DkimSigner>) -> Result<Built, BuildError> {
    let domain = parts.from.email.domain().to_string();
    let tag = crate::bounces::verp::message_tag(parts.secret, parts.outbox_id, parts.created_at);
    let message_id = format!(
        "<mail-{}.{}.{tag}@{domain}>",
        parts.outbox_id, parts.created_at
    );
    let address: lettre::Address = parts
        .to
        .parse()
        .map_err(|_| BuildError::Recipient(parts.to.to_string()))?;
    let name = one_line(parts.to_name);
    let name = (!name.is_empty()).then(|| cut(&name, MAX_NAME).into_owned());
    let mut headers = BTreeMap::new();
    let mut b = Message::builder()
        .from(parts.from.clone())
        .to(Mailbox::new(name, address.clone()))
        .subject(one_line(parts.subject))
        .message_id(Some(message_id.clone()));
    if let Some(r) = parts.reply_to {
        b = b.reply_to(r.clone());
    }
    if let Some(sender) = parts.return_path.as_deref().and_then(|a| a.parse().ok()) {
        let envelope = lettre::address::Envelope::new(Some(sender), vec![address])?;
        headers.insert(
            "Envelope-From".to_string(),
            parts.return_path.clone().unwrap_or_default(),
        );
        b = b.envelope(envelope);
    }
    if !parts.unsubscribe.is_empty() {
        let value = parts
            .unsubscribe
            .iter()
            .map(|u| format!("<{}>", one_line(u)))
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert("List-Unsubscribe".to_string(), value.clone());
        headers.insert(
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        );
        b = b
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                value,
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ));
    }
    let mut message = b.multipart(MultiPart::alternative_plain_html(parts.text, parts.html))?;
    if let Some(DkimSigner(config)) = dkim {
        message.sign(config);
        headers.insert("DKIM-Signature".to_string(), "yes".to_string());
    }
    headers.insert("Message-ID".to_string(), message_id.clone());
    Ok(Built {
        message,
        message_id,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(to_name: &str, subject: &str) -> String {
        let from: Mailbox = "Vertrieb <news@firma.example>".parse().unwrap();
        let b = build(
            Parts {
                outbox_id: 7,
                created_at: 1,
                secret: "s3cret",
                from: &from,
                reply_to: None,
                to: "eve@kunde.example",
                to_name,
                subject,
                text: format!("Hallo {to_name}"),
                html: format!("<p>Hallo {to_name}</p>"),
                unsubscribe: vec!["https://mail.example.com/u/abc\r\nBcc: x@y.example".into()],
                return_path: None,
            },
            None,
        )
        .expect("builds");
        String::from_utf8(b.message.formatted()).unwrap()
    }

    /// The header lines of a formatted message, unfolded.
    fn header_lines(raw: &str) -> Vec<String> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        head.replace("\r\n ", " ")
            .replace("\r\n\t", " ")
            .split("\r\n")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn lead_data_cannot_add_headers_or_break_the_message() {
        let hostile = [
            "Eve\r\nBcc: evil@x.example",
            "Eve\nBcc: evil@x.example",
            "Eve\0Null",
            "\u{1}\u{7f}\u{1b}[31mEve\u{85}",
            "\"Eve\" <evil@x.example>, mallory@x.example",
            "Back\\slash; (comment) =?utf-8?q?x?=",
            "Ünïcödé 😀 \u{202e}reversed",
            "\r\n",
        ];
        for name in hostile {
            let subject = format!("Hallo {name}\r\nX-Injected: yes");
            let raw = built(name, &subject);
            let lines = header_lines(&raw);
            for l in &lines {
                assert!(
                    !l.to_ascii_lowercase().starts_with("bcc:")
                        && !l.to_ascii_lowercase().starts_with("x-injected:"),
                    "{name:?} added a header:\n{raw}"
                );
                assert!(
                    !l.chars().any(|c| c.is_control()),
                    "{name:?}: control character in {l:?}"
                );
            }
            let to: Vec<_> = lines.iter().filter(|l| l.starts_with("To: ")).collect();
            assert_eq!(to.len(), 1, "{raw}");
            assert!(
                to[0].ends_with("<eve@kunde.example>") || to[0] == "To: eve@kunde.example",
                "{}",
                to[0]
            );
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.starts_with("List-Unsubscribe: "))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn the_message_id_carries_a_tag_keyed_with_the_secret() {
        let raw = built("Eve", "Hallo");
        let tag = crate::bounces::verp::message_tag("s3cret", 7, 1);
        assert_eq!(tag.len(), 16);
        assert!(
            raw.contains(&format!("Message-ID: <mail-7.1.{tag}@firma.example>")),
            "{raw}"
        );
        // Another secret, another id, another creation time: another tag.
        assert_ne!(crate::bounces::verp::message_tag("other", 7, 1), tag);
        assert_ne!(crate::bounces::verp::message_tag("s3cret", 8, 1), tag);
        assert_ne!(crate::bounces::verp::message_tag("s3cret", 7, 2), tag);
    }

    #[test]
    fn the_envelope_sender_is_the_return_path_when_given() {
        let from: Mailbox = "Vertrieb <news@firma.example>".parse().unwrap();
        let parts = |return_path: Option<&str>| Parts {
            outbox_id: 7,
            created_at: 1,
            secret: "s3cret",
            from: &from,
            reply_to: None,
            to: "eve@kunde.example",
            to_name: "Eve",
            subject: "Hallo",
            text: "Hallo".into(),
            html: "<p>Hallo</p>".into(),
            unsubscribe: Vec::new(),
            return_path: return_path.map(str::to_string),
        };
        let b = build(parts(Some("bounce+b7-0011223344@firma.example")), None).unwrap();
        let envelope = b.message.envelope();
        assert_eq!(
            envelope.from().map(ToString::to_string).as_deref(),
            Some("bounce+b7-0011223344@firma.example")
        );
        assert_eq!(envelope.to()[0].to_string(), "eve@kunde.example");
        let b = build(parts(None), None).unwrap();
        assert_eq!(
            b.message
                .envelope()
                .from()
                .map(ToString::to_string)
                .as_deref(),
            Some("news@firma.example")
        );
    }

    #[test]
    fn huge_names_and_subjects_build() {
        let name = "N\u{0}ame ".repeat(20_000);
        let raw = built(&name, &"Betreff ".repeat(20_000));
        let to = header_lines(&raw)
            .into_iter()
            .find(|l| l.starts_with("To: "))
            .unwrap();
        assert!(
            to.len() < 1000,
            "the display name is cut: {} bytes",
            to.len()
        );
    }
}
