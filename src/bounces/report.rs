//! What a bounce, complaint or unsubscribe says, whatever it came from (a delivery
//! status notification, a feedback report, an ESP's webhook), and how a status code is
//! read: only codes that name the recipient's mailbox as the problem make a hard
//! bounce.

use super::verp;

/// What happened to a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The address does not work: suppressed at once.
    Hard,
    /// A failure that may pass (mailbox full, a refusal for the message's content or
    /// the sender): counted; enough of them within a period suppress the address.
    Soft,
    /// The recipient marked the mail as spam: marketing consent is withdrawn.
    Complaint,
    /// The recipient wrote to the `mailto:` unsubscribe address.
    Unsubscribe,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Soft => "soft",
            Kind::Complaint => "complaint",
            Kind::Unsubscribe => "unsubscribe",
        }
    }
}

/// One report about one recipient of one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: Kind,
    /// Where it came from: `dsn`, `arf`, `mailto`, `ses`, `postmark`, `mailgun`,
    /// `sendgrid`.
    pub source: &'static str,
    /// The address the mail went to, as the report names it.
    pub recipient: Option<String>,
    /// The enhanced status code (`5.1.1`) or the ESP's classification.
    pub status: Option<String>,
    /// The receiving server's answer.
    pub diagnostic: Option<String>,
    /// The mail's outbox id, from a verified VERP address.
    pub outbox: Option<i64>,
    /// The original mail's Message-ID (with or without angle brackets).
    pub message_id: Option<String>,
    /// The report's own id (its Message-ID, the webhook event's id): a report read
    /// again is not counted again.
    pub id: Option<String>,
}

impl Report {
    pub fn new(kind: Kind, source: &'static str) -> Self {
        Self {
            kind,
            source,
            recipient: None,
            status: None,
            diagnostic: None,
            outbox: None,
            message_id: None,
            id: None,
        }
    }

    /// Takes the outbox id from the first of `addresses` that is a verified VERP
    /// address of `purpose`.
    pub fn verp_from<'a>(
        &mut self,
        secret: &str,
        purpose: verp::Purpose,
        addresses: impl IntoIterator<Item = &'a str>,
    ) {
        if self.outbox.is_some() {
            return;
        }
        self.outbox = addresses
            .into_iter()
            .filter_map(|a| verp::read(secret, a))
            .find(|(p, _)| *p == purpose)
            .map(|(_, id)| id);
    }
}

/// The enhanced status code in a text (`550 5.1.1 <x>: no such user`), if any.
pub fn status_code(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '[' | ']' | '-'))
        .map(|w| w.trim_end_matches([':', '.']))
        .find(|w| {
            let mut parts = w.split('.');
            matches!(parts.next(), Some("2" | "4" | "5"))
                && (0..2).all(|_| {
                    parts.next().is_some_and(|n| {
                        !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                && parts.next().is_none()
        })
        .map(str::to_string)
}

/// Hard or soft, for a failed delivery with this status code.
pub fn failure_kind(status: Option<&str>) -> Kind {
    match status {
        // The same codes as a refusal during the SMTP dialogue: only those that name
        // the recipient's mailbox (see `crate::mail::refusal`).
        Some(s)
            if s.starts_with("5.")
                && crate::mail::refusal::whose(crate::mail::refusal::Step::Later, None, s)
                    == crate::mail::refusal::Whose::Recipient =>
        {
            Kind::Hard
        }
        _ => Kind::Soft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_and_only_mailbox_problems_are_hard() {
        assert_eq!(
            status_code("smtp; 550 5.1.1 <anna@x.example>: Recipient address rejected").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            status_code("552-5.2.2 The email account is over quota").as_deref(),
            Some("5.2.2")
        );
        assert_eq!(
            status_code("452 4.2.2 over quota.").as_deref(),
            Some("4.2.2")
        );
        assert_eq!(status_code("no code here 1.2"), None);
        assert_eq!(failure_kind(Some("5.1.1")), Kind::Hard);
        assert_eq!(failure_kind(Some("5.1.10")), Kind::Hard);
        assert_eq!(failure_kind(Some("5.1.8")), Kind::Soft);
        assert_eq!(failure_kind(Some("5.7.1")), Kind::Soft);
        assert_eq!(failure_kind(Some("5.2.2")), Kind::Soft);
        assert_eq!(failure_kind(None), Kind::Soft);
    }
}
