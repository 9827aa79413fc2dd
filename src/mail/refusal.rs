//! Whose problem a permanent SMTP refusal is: the recipient's (the address is
//! suppressed), the sender's (delivery pauses, [`super::breaker`]), or this one mail's
//! (it fails, nothing else happens). Read from the enhanced status code (RFC 3463,
//! `5.1.1`) in the server's answer, else from the basic code (`535`), and from the
//! step of the dialogue that was refused.
//!
//! | answer | whose | effect |
//! |---|---|---|
//! | 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10, 5.2.1 | recipient | mail fails, address suppressed |
//! | 5.1.7, 5.1.8 | sender | delivery pauses |
//! | 5.7.0, 5.7.4, 5.7.8, 5.7.9, 5.7.11, 5.7.13, 5.7.14, 5.7.20 to 5.7.28 | sender | delivery pauses |
//! | 5.7.5xx, 5.7.6xx (Microsoft 365: sending domain or IP blocked) | sender | delivery pauses |
//! | 5.7.1 with "relay" in the text | sender | delivery pauses |
//! | basic 530, 534, 535, 538 without an enhanced code; a refused login | sender | delivery pauses |
//! | any 5xx answer to MAIL FROM | sender | delivery pauses |
//! | other 5.7.x (5.7.1 without "relay", Microsoft 365's 5.7.1xx group rules) | mail | mail fails |
//! | anything else 5xx (5.1.0, 5.1.4, 5.2.2, 5.3.x, 5.5.x, 5.6.x, no code) | mail | mail fails |
//!
//! 5.7.1 is the ambiguous one: servers send it for "relaying denied" (this server
//! will not take mail from the sender for anyone outside: a problem of the
//! configuration) and for a recipient's own policy (a closed list, a group that takes
//! mail only from members). Only the first pauses delivery; the second fails the one
//! mail, as pausing the whole base for one recipient's rule would hold back every
//! other lead's mail until the next probe.

/// Whose problem a permanent refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    /// The recipient's address does not work: suppress it.
    Recipient,
    /// The server refuses the sender (account, domain, authentication, policy): pause.
    Sender,
    /// This mail was refused; the address and the sender may still be fine.
    Mail,
}

/// The step of the SMTP dialogue the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// MAIL FROM: the server refuses the sender, whatever the code.
    MailFrom,
    /// RCPT TO, DATA or the end of the message.
    Later,
}

/// The enhanced status code in an SMTP answer: the first word that reads
/// `class.subject.detail` (`5.1.1`), as numbers.
pub fn enhanced_code(text: &str) -> Option<(u16, u16, u16)> {
    text.split(|c: char| c.is_whitespace() || c == '-')
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
        .find_map(|w| {
            let mut parts = w.split('.');
            let mut num = || -> Option<u16> {
                let p = parts.next()?;
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                p.parse().ok()
            };
            let code = (num()?, num()?, num()?);
            (parts.next().is_none() && matches!(code.0, 2 | 4 | 5)).then_some(code)
        })
}

/// Whose problem the permanent refusal `text` (with basic code `basic`) at `step` is.
pub fn whose(step: Step, basic: Option<u16>, text: &str) -> Whose {
    if step == Step::MailFrom {
        return Whose::Sender;
    }
    let Some((_, subject, detail)) = enhanced_code(text) else {
        return match basic {
            Some(530 | 534 | 535 | 538) => Whose::Sender,
            _ => Whose::Mail,
        };
    };
    match (subject, detail) {
        (1, 1 | 2 | 3 | 6 | 10) | (2, 1) => Whose::Recipient,
        (1, 7 | 8) => Whose::Sender,
        (7, 0 | 4 | 8 | 9 | 11 | 13 | 14 | 20..=28 | 500..=699) => Whose::Sender,
        (7, 1) if text.to_ascii_lowercase().contains("relay") => Whose::Sender,
        _ => Whose::Mail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_found_in_lettres_text() {
        assert_eq!(
            enhanced_code("permanent error (550): 5.1.8 Access denied, bad outbound sender"),
            Some((5, 1, 8))
        );
        assert_eq!(
            enhanced_code("permanent error (550): 5.7.606 Access denied, banned sending IP"),
            Some((5, 7, 606))
        );
        assert_eq!(
            enhanced_code("550-5.7.1 [1.2.3.4] relaying denied"),
            Some((5, 7, 1))
        );
        assert_eq!(
            enhanced_code("permanent error (550): mailbox unavailable"),
            None
        );
        assert_eq!(enhanced_code("version 1.2.3.4 of nothing"), None);
    }

    /// The classification table of the module doc, line by line.
    #[test]
    fn the_classification_table() {
        let later = |basic: u16, text: &str| whose(Step::Later, Some(basic), text);
        for (text, expected) in [
            ("5.1.1 no such user", Whose::Recipient),
            ("5.1.2 bad destination system", Whose::Recipient),
            ("5.1.3 bad address syntax", Whose::Recipient),
            ("5.1.6 mailbox has moved", Whose::Recipient),
            ("5.1.10 recipient domain has a null MX", Whose::Recipient),
            ("5.2.1 mailbox disabled", Whose::Recipient),
            ("5.1.7 bad sender's mailbox address syntax", Whose::Sender),
            ("5.1.8 Access denied, bad outbound sender", Whose::Sender),
            ("5.7.0 authentication required", Whose::Sender),
            ("5.7.8 authentication credentials invalid", Whose::Sender),
            ("5.7.9 mechanism too weak", Whose::Sender),
            ("5.7.13 user account disabled", Whose::Sender),
            ("5.7.23 SPF validation failed", Whose::Sender),
            ("5.7.25 reverse DNS required", Whose::Sender),
            (
                "5.7.26 unauthenticated mail is prohibited (DMARC)",
                Whose::Sender,
            ),
            (
                "5.7.28 unusual rate of unsolicited mail from your IP",
                Whose::Sender,
            ),
            (
                "5.7.509 Access denied, sending domain does not pass DMARC",
                Whose::Sender,
            ),
            ("5.7.606 Access denied, banned sending IP", Whose::Sender),
            ("5.7.1 Relaying denied", Whose::Sender),
            ("5.7.1 <x@example.com>: Relay access denied", Whose::Sender),
            (
                "5.7.1 recipient only accepts mail from members",
                Whose::Mail,
            ),
            ("5.7.133 sender not authenticated for group", Whose::Mail),
            ("5.1.0 address rejected", Whose::Mail),
            ("5.2.2 mailbox full", Whose::Mail),
            ("5.3.4 message too big", Whose::Mail),
            ("5.6.0 bad content", Whose::Mail),
            ("mailbox unavailable", Whose::Mail),
        ] {
            assert_eq!(
                later(550, &format!("permanent error (550): {text}")),
                expected,
                "{text}"
            );
        }
        assert_eq!(
            later(535, "permanent error (535): authentication failed"),
            Whose::Sender
        );
        assert_eq!(
            later(530, "permanent error (530): must authenticate"),
            Whose::Sender
        );
        assert_eq!(
            later(554, "permanent error (554): transaction failed"),
            Whose::Mail
        );
        // MAIL FROM refused: the sender, whatever the code says.
        assert_eq!(
            whose(Step::MailFrom, Some(550), "5.1.1 sender unknown"),
            Whose::Sender
        );
        assert_eq!(whose(Step::MailFrom, Some(553), "rejected"), Whose::Sender);
    }
}
