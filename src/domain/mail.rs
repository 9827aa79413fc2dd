//! Mail a change asks for: a single mail ([`MailRequest`]) or a change of a lead's
//! nurture streams ([`StreamChange`]). They are written to the outbox in the same
//! transaction as the change that caused them; whether the lead may receive the mail
//! is decided at send time.

use std::fmt;

use serde_json::{Map, Value};

/// Marketing mail needs consent and respects quarantine and the frequency cap;
/// transactional mail (an opt-in confirmation, a requested download) does not.
/// Internal mail goes to the company's own people (a handoff notification to sales),
/// not to the lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailClass {
    Marketing,
    Transactional,
    Internal,
}

impl MailClass {
    pub fn as_str(self) -> &'static str {
        match self {
            MailClass::Marketing => "marketing",
            MailClass::Transactional => "transactional",
            MailClass::Internal => "internal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "marketing" => Some(MailClass::Marketing),
            "transactional" => Some(MailClass::Transactional),
            "internal" => Some(MailClass::Internal),
            _ => None,
        }
    }
}

/// How often the same mail may go to the same lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Once per lead, template and key, ever.
    Once,
    /// At most once per this many milliseconds.
    Every(i64),
    /// Every time it is asked for.
    Always,
}

/// One mail asked for by a rule or the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct MailRequest {
    /// Template name, e.g. `trigger/use-case` (files under `templates/<locale>/`).
    pub template: String,
    pub class: MailClass,
    /// What makes two requests "the same mail" besides the template (e.g. the topic).
    pub key: String,
    pub repeat: Repeat,
    /// Values handed to the template as `data`.
    pub data: Map<String, Value>,
    /// A double opt-in confirmation (carries the confirmation link).
    pub opt_in: bool,
}

impl fmt::Display for MailRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.template)?;
        if !self.key.is_empty() {
            write!(f, " {}", self.key)?;
        }
        Ok(())
    }
}

/// A change of a lead's membership of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChange {
    /// Join the stream (or resume it when paused); the re-entry policy decides whether
    /// a lead that left it may join again.
    Enroll { stream: String },
    /// Pause while the lead is in quarantine.
    Pause { stream: String },
    /// Leave the stream (`None`: every stream).
    Exit {
        stream: Option<String>,
        reason: String,
    },
}
