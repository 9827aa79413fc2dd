//! What can be done to a lead ([`Action`]), who asked for it ([`Source`]) and the record
//! each applied change leaves ([`StageMove`], [`ScoreChange`]).
//!
//! Rules, the API and scheduled jobs all change leads through [`Action`]s, so every
//! change is checked and explained the same way. Later capabilities (mail, streams,
//! handoff) add variants here; the way rules ask for them stays a method call.

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::mail::{MailRequest, StreamChange};

/// The two scoring axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// Explicit data: company size, industry, role.
    Fit,
    /// Behaviour: downloads, visits, clicks; fades with time.
    Interest,
}

impl Axis {
    pub fn as_str(self) -> &'static str {
        match self {
            Axis::Fit => "fit",
            Axis::Interest => "interest",
        }
    }
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A rule, at the call in its file.
    Rule {
        file: Arc<str>,
        line: usize,
        column: usize,
    },
    /// A user of the HTTP API (a salesperson, a CRM).
    Api { user: String },
    /// The daemon itself: `ingest`, `job:<schedule name>`.
    System(String),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Rule { .. } => "rule",
            Source::Api { .. } => "api",
            Source::System(_) => "system",
        }
    }

    pub fn is_rule(&self) -> bool {
        matches!(self, Source::Rule { .. })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Rule { file, line, .. } => write!(f, "{file}:{line}"),
            Source::Api { user } => write!(f, "api:{user}"),
            Source::System(what) => f.write_str(what),
        }
    }
}

/// A change a rule, the API or a job asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Add (or with a negative number, take away) points on an axis.
    AddScore {
        axis: Axis,
        points: f64,
        reason: String,
    },
    /// Set the fit points one criterion contributes (replaces that criterion's earlier
    /// value, so re-running on every event never counts twice).
    SetFit {
        criterion: String,
        points: f64,
        reason: String,
    },
    SetStage {
        stage: String,
        reason: String,
    },
    Tag(String),
    Untag(String),
    /// Set (or with `None`, remove) a free attribute.
    SetAttr {
        key: String,
        value: Option<Value>,
    },
    /// Queue a mail (a trigger mail, an opt-in confirmation).
    SendMail(MailRequest),
    /// Join a nurture stream.
    Enroll(String),
    /// Leave a nurture stream.
    Unenroll(String),
    /// Hand the lead to a sales team.
    Handoff {
        team: String,
        reason: String,
    },
}

impl fmt::Display for Action {
    /// The short form used in rule fixtures: `add_interest 10`, `set_stage mql`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::AddScore { axis, points, .. } => {
                write!(f, "add_{} {}", axis.as_str(), number(*points))
            }
            Action::SetFit {
                criterion, points, ..
            } => write!(f, "set_fit {criterion} {}", number(*points)),
            Action::SetStage { stage, .. } => write!(f, "set_stage {stage}"),
            Action::Tag(t) => write!(f, "tag {t}"),
            Action::Untag(t) => write!(f, "untag {t}"),
            Action::SetAttr { key, value: None } => write!(f, "remove_attr {key}"),
            Action::SetAttr {
                key,
                value: Some(v),
            } => write!(f, "set_attr {key} {v}"),
            Action::SendMail(m) => write!(f, "send_mail {m}"),
            Action::Enroll(s) => write!(f, "enroll {s}"),
            Action::Unenroll(s) => write!(f, "unenroll {s}"),
            Action::Handoff { team, .. } => write!(f, "handoff {team}"),
        }
    }
}

/// Formats a score without a trailing `.0`, and with at most two decimals.
pub fn number(n: f64) -> String {
    let rounded = (n * 100.0).round() / 100.0;
    if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded}")
    }
}

/// What became of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Nothing to do (already tagged, already in that stage, zero points).
    Unchanged,
    /// Refused by a guard; the text says why.
    Skipped(String),
}

/// One action that changed something (or was refused), with its source; actions that
/// changed nothing are not kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    pub action: Action,
    pub source: Source,
    pub outcome: Outcome,
}

/// A move between stages.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMove {
    /// `None` when the lead was just created.
    pub from: Option<String>,
    pub to: String,
    pub at: DateTime<Utc>,
    pub source: Source,
    pub reason: String,
}

/// A score change, for the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreChange {
    pub axis: Axis,
    pub delta: f64,
    pub at: DateTime<Utc>,
    pub source: Source,
    pub reason: String,
}

/// Everything one unit of work (an event, an API call, a job) did to one lead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub moves: Vec<StageMove>,
    pub scores: Vec<ScoreChange>,
    pub actions: Vec<ActionRecord>,
    /// Mails to queue, with who asked for them.
    pub mails: Vec<(MailRequest, Source)>,
    /// Stream memberships to change.
    pub streams: Vec<StreamChange>,
    /// Handoffs to sales asked for.
    pub handoffs: Vec<HandoffRequest>,
    /// The lead moved on before sales answered its open handoff (to a stage that does
    /// not hand over): the handoff ends.
    pub handoff_settled: Option<SettledHandoff>,
    /// Tags set or taken away, for the tag ledger.
    pub tags: Vec<TagChange>,
}

/// A tag set (`added`) or taken away, for the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct TagChange {
    pub tag: String,
    pub added: bool,
    pub at: DateTime<Utc>,
    pub source: Source,
    /// Why, when the API caller said so; for a rule, the event is linked by its seq.
    pub reason: String,
}

/// How an open handoff ends when the lead moves on without an answer from sales.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledHandoff {
    pub stage: String,
    /// The new stage is worked by sales (the handoff counts as accepted), or not (it
    /// expires).
    pub by_sales: bool,
    pub source: Source,
}

impl Changes {
    /// True when something is to be written besides the lead itself.
    pub fn has_mail(&self) -> bool {
        !self.mails.is_empty() || !self.streams.is_empty()
    }
}

/// A lead to be handed to a sales team (by a rule, or by entering a stage that hands
/// over). The owner and deadline are set when the handoff is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRequest {
    pub team: String,
    pub reason: String,
    pub source: Source,
}

/// An action that cannot be applied: a mistake in the rule or request that asked for it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    #[error("unknown stage `{stage}`; the stages are: {known}")]
    UnknownStage { stage: String, known: String },
    #[error("a reason is required for {what}: say why, it is shown in the lead's history")]
    MissingReason { what: &'static str },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is too long ({len} characters, at most {max})")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("points must be a finite number, not {0}")]
    BadPoints(f64),
}
