//! Reads one raw message into reports: a delivery status notification (RFC 3464,
//! `multipart/report; report-type=delivery-status`), a feedback report (ARF, RFC
//! 5965, `report-type=feedback-report`), a bounce in plain text sent to a VERP
//! address, or a mail to the `mailto:` unsubscribe address. The MIME structure and
//! the report's header-like field blocks are parsed by `mail-parser`.

use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use super::report::{Kind, Report, failure_kind, status_code};
use super::verp::Purpose;

/// Why a message gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not an e-mail message: no header found")]
    NotMail,
    #[error(
        "not a delivery report (multipart/report; report-type=delivery-status), a feedback \
         report (report-type=feedback-report), a bounce to a VERP address nor a mail to the \
         unsubscribe address; nothing was changed"
    )]
    Unknown,
}

/// Headers that name where a message was delivered: a report sent to a VERP address
/// carries it in one of them.
const DELIVERED_TO: &[&str] = &[
    "To",
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Original-Recipient",
];

/// The reports in `raw`. `envelope` are the addresses the message was delivered to
/// (the SMTP envelope's recipients, when the caller knows them); `secret` verifies
/// VERP tokens. An empty list: a report that asks for nothing (a delay warning, a
/// successful delivery, a "not spam" feedback).
pub fn parse(raw: &[u8], secret: &str, envelope: &[String]) -> Result<Vec<Report>, ParseError> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or(ParseError::NotMail)?;
    let mut delivered: Vec<String> = envelope.to_vec();
    for name in DELIVERED_TO {
        for value in message.header_values(*name) {
            delivered.extend(addresses_in(value));
        }
    }
    let report_type = message
        .content_type()
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
        .filter(|ct| {
            ct.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    let original = original_headers(&message);
    let mut reports = match report_type.as_deref() {
        Some("delivery-status") => delivery_status(&message),
        Some("feedback-report") => feedback(&message, original.as_ref(), &mut delivered),
        _ => {
            let mut r = Report::new(Kind::Unsubscribe, "mailto");
            r.verp_from(
                secret,
                Purpose::Unsubscribe,
                delivered.iter().map(String::as_str),
            );
            // An automatic answer (RFC 3834: an out-of-office note) asks for nothing.
            let automatic = message
                .header_raw("Auto-Submitted")
                .is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"));
            if r.outbox.is_some() && !automatic {
                r.recipient = message
                    .from()
                    .and_then(|f| f.first())
                    .and_then(|a| a.address())
                    .map(str::to_string);
                r.diagnostic = message.subject().map(str::to_string);
                r.id = message.message_id().map(str::to_string);
                return Ok(vec![r]);
            }
            plain_bounce(&message).ok_or(ParseError::Unknown)?
        }
    };
    // The original mail's envelope sender is the VERP address too.
    if let Some(o) = &original {
        delivered.extend(o.return_path.iter().cloned());
    }
    let own_id = message.message_id().map(str::to_string);
    for r in &mut reports {
        r.id.clone_from(&own_id);
        r.verp_from(
            secret,
            Purpose::Bounce,
            delivered.iter().map(String::as_str),
        );
        if r.message_id.is_none() {
            r.message_id = original.as_ref().and_then(|o| o.message_id.clone());
        }
        if r.recipient.is_none() {
            r.recipient = original.as_ref().and_then(|o| o.to.clone());
        }
    }
    // A plain-text bounce counts only when it came to a verified VERP address.
    if reports
        .iter()
        .any(|r| r.source == "bounce" && r.outbox.is_none())
    {
        return Err(ParseError::Unknown);
    }
    Ok(reports)
}

/// What the report says about the mail it is about (the attached message or its
/// headers).
struct Original {
    message_id: Option<String>,
    to: Option<String>,
    return_path: Option<String>,
}

fn original_headers(message: &Message) -> Option<Original> {
    for part in &message.parts {
        let from_message = |m: &Message| Original {
            message_id: m.message_id().map(str::to_string),
            to: m
                .to()
                .and_then(|t| t.first())
                .and_then(|a| a.address())
                .map(str::to_string),
            return_path: m.return_address().map(str::to_string),
        };
        match &part.body {
            PartType::Message(m) => return Some(from_message(m)),
            PartType::Text(text)
                if part.content_type().is_some_and(|ct| {
                    ct.subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
                }) =>
            {
                let headers = format!("{}\r\n\r\n", text.trim_end());
                if let Some(m) = MessageParser::default().parse_headers(headers.as_bytes()) {
                    return Some(from_message(&m));
                }
            }
            _ => {}
        }
    }
    None
}

/// The part of type `message/<subtype>` (or one of the given subtypes), as bytes.
fn part_body<'a>(message: &'a Message, subtypes: &[&str]) -> Option<&'a [u8]> {
    message.parts.iter().find_map(|part| {
        let ct = part.content_type()?;
        let matches = ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|t| s.eq_ignore_ascii_case(t)));
        if !matches {
            return None;
        }
        match &part.body {
            PartType::Text(t) => Some(t.as_bytes()),
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(&b[..]),
            _ => None,
        }
    })
}

/// The field blocks of a report body (separated by empty lines), each parsed as a
/// header block.
fn field_blocks(body: &[u8]) -> Vec<Fields> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter_map(|b| {
            let block = format!("{}\r\n\r\n", b.trim_matches('\n').replace('\n', "\r\n"));
            let m = MessageParser::default().parse_headers(block.as_bytes())?;
            Some(Fields(
                m.headers()
                    .iter()
                    .map(|h| {
                        let value = match h.value() {
                            HeaderValue::Text(t) => t.to_string(),
                            HeaderValue::TextList(l) => l.join(", "),
                            _ => raw_value(&m, h.name()),
                        };
                        (h.name().to_ascii_lowercase(), value.trim().to_string())
                    })
                    .collect(),
            ))
        })
        .collect()
}

/// A header's text as written, unfolded.
fn raw_value(m: &Message, name: &str) -> String {
    m.header_raw(name)
        .unwrap_or_default()
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_string()
}

/// The fields of one block.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(n, v)| *n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// `rfc822; anna@x.example` -> `anna@x.example`.
fn typed_address(value: &str) -> String {
    let v = value.split_once(';').map_or(value, |(_, a)| a);
    v.trim().trim_matches(['<', '>']).to_string()
}

/// The addresses in a header's value (each `<...>` or bare word with `@`).
fn addresses_in(value: &HeaderValue) -> Vec<String> {
    match value {
        HeaderValue::Address(a) => a
            .iter()
            .filter_map(|a| a.address())
            .map(str::to_string)
            .collect(),
        HeaderValue::Text(t) => words_with_at(t),
        HeaderValue::TextList(l) => l.iter().flat_map(|t| words_with_at(t)).collect(),
        _ => Vec::new(),
    }
}

fn words_with_at(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .map(|w| w.trim_matches(['<', '>', '"']))
        .filter(|w| w.contains('@'))
        .map(str::to_string)
        .collect()
}

/// RFC 3464: one report per recipient whose delivery failed.
fn delivery_status(message: &Message) -> Vec<Report> {
    let Some(body) = part_body(message, &["delivery-status", "global-delivery-status"]) else {
        return Vec::new();
    };
    let blocks = field_blocks(body);
    blocks
        .iter()
        // The first block is about the message; the others are one per recipient.
        .skip(1)
        .filter(|f| {
            f.get("Action")
                .is_some_and(|a| a.trim().eq_ignore_ascii_case("failed"))
        })
        .map(|f| {
            let diagnostic = f.get("Diagnostic-Code").map(|d| {
                d.split_once(';')
                    .map_or(d, |(_, text)| text)
                    .trim()
                    .to_string()
            });
            let mut status = f.get("Status").and_then(status_code);
            // A generic x.0.0 in Status with a precise code in the server's answer.
            if status.as_deref().is_none_or(|s| s.ends_with(".0.0"))
                && let Some(precise) = diagnostic.as_deref().and_then(status_code)
            {
                status = Some(precise);
            }
            let mut r = Report::new(failure_kind(status.as_deref()), "dsn");
            r.recipient = f
                .get("Final-Recipient")
                .or_else(|| f.get("Original-Recipient"))
                .map(typed_address);
            r.status = status;
            r.diagnostic = diagnostic;
            r
        })
        .collect()
}

/// RFC 5965: a complaint about one mail (no report for `not-spam`).
fn feedback(
    message: &Message,
    original: Option<&Original>,
    delivered: &mut Vec<String>,
) -> Vec<Report> {
    let Some(body) = part_body(message, &["feedback-report"]) else {
        return Vec::new();
    };
    let Some(fields) = field_blocks(body).into_iter().next() else {
        return Vec::new();
    };
    let kind = fields
        .get("Feedback-Type")
        .unwrap_or("abuse")
        .trim()
        .to_ascii_lowercase();
    if kind == "not-spam" {
        return Vec::new();
    }
    let mut r = Report::new(Kind::Complaint, "arf");
    r.status = Some(kind);
    r.recipient = fields
        .get("Original-Rcpt-To")
        .or_else(|| fields.get("Removal-Recipient"))
        .map(typed_address)
        .or_else(|| original.and_then(|o| o.to.clone()));
    r.diagnostic = fields
        .get("User-Agent")
        .map(|a| format!("reported with {a}"));
    // The original envelope sender: the VERP address.
    if let Some(from) = fields.get("Original-Mail-From") {
        delivered.push(typed_address(from));
    }
    vec![r]
}

/// A bounce without a delivery report (some servers send plain text): acted on only
/// when it came to a VERP address, with the status code found in its text.
fn plain_bounce(message: &Message) -> Option<Vec<Report>> {
    let text = message.body_text(0)?;
    let status = status_code(&text)?;
    if !status.starts_with('5') {
        return None;
    }
    let mut r = Report::new(failure_kind(Some(&status)), "bounce");
    r.diagnostic = text
        .lines()
        .find(|l| l.contains(&status))
        .map(|l| l.trim().to_string());
    r.status = Some(status);
    Some(vec![r])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounces::verp;

    const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

    /// A fixture with its placeholders filled for mail 41 to `anna@kunde.example`.
    fn fixture(text: &str, verp_address: &str) -> Vec<u8> {
        text.replace("{{VERP}}", verp_address)
            .replace("{{RCPT}}", "anna@kunde.example")
            .replace("{{MESSAGE_ID}}", "<mail-41.1765000000000@example.com>")
            .into_bytes()
    }

    fn verp_of(id: i64) -> String {
        let base: lettre::Address = "bounce@example.com".parse().unwrap();
        verp::address(&base, SECRET, Purpose::Bounce, id)
    }

    #[test]
    fn a_postfix_dsn_is_a_hard_bounce_of_its_mail() {
        let raw = fixture(
            include_str!("../../tests/fixtures/bounces/dsn-postfix.eml"),
            &verp_of(41),
        );
        let r = parse(&raw, SECRET, &[]).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].kind, Kind::Hard);
        assert_eq!(r[0].source, "dsn");
        assert_eq!(r[0].outbox, Some(41));
        assert_eq!(r[0].recipient.as_deref(), Some("anna@kunde.example"));
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        assert!(
            r[0].diagnostic.as_deref().unwrap().contains("User unknown"),
            "{r:?}"
        );
        assert_eq!(
            r[0].message_id.as_deref(),
            Some("mail-41.1765000000000@example.com")
        );
    }

    #[test]
    fn a_forged_verp_address_maps_to_nothing_but_the_message_id_remains() {
        let forged = verp_of(41).replacen("+b15-", "+b16-", 1);
        let raw = fixture(
            include_str!("../../tests/fixtures/bounces/dsn-postfix.eml"),
            &forged,
        );
        let r = parse(&raw, SECRET, &[]).unwrap();
        assert_eq!(r[0].outbox, None);
    }

    #[test]
    fn an_arf_report_is_a_complaint() {
        let raw = fixture(
            include_str!("../../tests/fixtures/bounces/arf.eml"),
            &verp_of(41),
        );
        let r = parse(&raw, SECRET, &[]).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].kind, Kind::Complaint);
        assert_eq!(r[0].source, "arf");
        assert_eq!(r[0].outbox, Some(41));
        assert_eq!(r[0].recipient.as_deref(), Some("anna@kunde.example"));
        assert_eq!(r[0].status.as_deref(), Some("abuse"));
        assert_eq!(
            r[0].message_id.as_deref(),
            Some("mail-41.1765000000000@example.com")
        );
    }

    #[test]
    fn a_plain_text_bounce_counts_only_at_a_verp_address() {
        let body = "Subject: failure notice\r\n\r\nHi. This is the qmail-send program.\r\n\
                    <anna@kunde.example>:\r\n550 5.1.1 sorry, no mailbox here by that name.\r\n";
        let to_verp = format!("To: {}\r\n{body}", verp_of(41));
        let r = parse(to_verp.as_bytes(), SECRET, &[]).unwrap();
        assert_eq!((r[0].kind, r[0].outbox), (Kind::Hard, Some(41)));
        let elsewhere = format!("To: bounce@example.com\r\n{body}");
        assert!(matches!(
            parse(elsewhere.as_bytes(), SECRET, &[]),
            Err(ParseError::Unknown)
        ));
    }

    #[test]
    fn a_mail_to_the_unsubscribe_address_unsubscribes_and_others_are_refused() {
        let base: lettre::Address = "unsubscribe@example.com".parse().unwrap();
        let to = verp::address(&base, SECRET, Purpose::Unsubscribe, 7);
        let raw = format!(
            "From: Anna <anna@kunde.example>\r\nTo: <{to}>\r\nSubject: unsubscribe\r\n\r\n\r\n"
        );
        let r = parse(raw.as_bytes(), SECRET, &[]).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].kind, Kind::Unsubscribe);
        assert_eq!(r[0].outbox, Some(7));
        let automatic = format!(
            "From: Anna <anna@kunde.example>\r\nTo: <{to}>\r\nAuto-Submitted: auto-replied\r\n\
             Subject: Abwesenheitsnotiz\r\n\r\nIch bin nicht im Haus.\r\n"
        );
        assert!(matches!(
            parse(automatic.as_bytes(), SECRET, &[]),
            Err(ParseError::Unknown)
        ));
        let plain =
            "From: a@b.example\r\nTo: unsubscribe@example.com\r\nSubject: hi\r\n\r\nhello\r\n";
        assert!(matches!(
            parse(plain.as_bytes(), SECRET, &[]),
            Err(ParseError::Unknown)
        ));
        assert!(matches!(parse(b"", SECRET, &[]), Err(ParseError::NotMail)));
    }
}
