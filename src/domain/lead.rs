//! The lead as the rules see it and the store keeps it, and how an [`Action`] changes it.
//!
//! Reasons and mail keys often carry event data (an asset's name, a topic). A reason
//! from a rule or the daemon that is longer than [`MAX_REASON`] characters is cut with
//! an ellipsis and put on one line, and a mail key that long is shortened to a prefix
//! and a hash of the whole key ([`mail_key`]): event data never fails an event. Reasons
//! given through the API are checked instead, so the caller can shorten them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::change::{
    Action, ActionRecord, Axis, ChangeError, Changes, Outcome, ScoreChange, Source, StageMove,
};
use super::email::Email;
use super::funnel::Funnel;
use super::mail::StreamChange;
use super::text::{cut, one_line};
use super::traits::Traits;

/// A consent flag with when and where it was given or withdrawn.
/// The source of the mail consent of a lead whose address was erased before: until
/// the person confirms a double opt-in, consent claimed in traits does not count (see
/// `crate::privacy::erased`).
pub const RENEW_SOURCE: &str =
    "address erased before: marketing mail needs a double opt-in confirmation";

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Consent {
    pub granted: bool,
    pub at: Option<DateTime<Utc>>,
    pub source: Option<String>,
}

/// One person in the funnel.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Lead {
    pub id: i64,
    #[schema(value_type = String)]
    pub email: Email,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    pub employees: Option<i64>,
    pub revenue: Option<f64>,
    pub country: Option<String>,
    pub time_zone: Option<String>,
    pub locale: Option<String>,
    pub consent_email: Consent,
    pub consent_tracking: Consent,
    pub stage: String,
    pub stage_since: DateTime<Utc>,
    pub fit: f64,
    /// Fit points per criterion set with `set_fit`.
    pub fit_parts: BTreeMap<String, f64>,
    pub interest: f64,
    pub tags: BTreeSet<String>,
    pub owner: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The `[[topics]]` the lead left (its mails of those topics are not sent).
    pub topics_left: BTreeSet<String>,
    /// Counted up by every write in a cluster of daemons (see `crate::cluster`); a
    /// write from an older copy is refused.
    #[serde(skip)]
    pub version: i64,
}

const MAX_TAG: usize = 64;
/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 500;
const MAX_KEY: usize = 64;
/// The longest mail key kept as it is, in characters ([`mail_key`]).
pub const MAX_MAIL_KEY: usize = 500;
/// The characters of a long mail key kept before its hash.
const MAIL_KEY_PREFIX: usize = 100;

impl Lead {
    /// A lead just seen for the first time, in the funnel's initial stage.
    pub fn new(id: i64, email: Email, stage: &str, at: DateTime<Utc>) -> Self {
        Self {
            id,
            email,
            external_id: None,
            first_name: None,
            last_name: None,
            phone: None,
            company: None,
            title: None,
            industry: None,
            employees: None,
            revenue: None,
            country: None,
            time_zone: None,
            locale: None,
            consent_email: Consent::default(),
            consent_tracking: Consent::default(),
            stage: stage.to_string(),
            stage_since: at,
            fit: 0.0,
            fit_parts: BTreeMap::new(),
            interest: 0.0,
            tags: BTreeSet::new(),
            owner: None,
            attributes: Map::new(),
            created_at: at,
            updated_at: at,
            topics_left: BTreeSet::new(),
            version: 0,
        }
    }

    /// "First Last", or whichever part is known; empty when neither is.
    pub fn name(&self) -> String {
        let parts: Vec<&str> = [&self.first_name, &self.last_name]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        parts.join(" ")
    }

    /// True when everything but the funnel state (stage, scores, tags, attributes,
    /// owner, timestamps) is the same: what the store needs to know to write less.
    pub fn same_profile(&self, other: &Lead) -> bool {
        self.id == other.id
            && self.email == other.email
            && self.first_name == other.first_name
            && self.last_name == other.last_name
            && self.phone == other.phone
            && self.company == other.company
            && self.title == other.title
            && self.industry == other.industry
            && self.employees == other.employees
            && self.revenue == other.revenue
            && self.country == other.country
            && self.time_zone == other.time_zone
            && self.locale == other.locale
            && self.consent_email == other.consent_email
            && self.consent_tracking == other.consent_tracking
            && self.topics_left == other.topics_left
    }

    /// Takes identify traits into the lead. Consent changes are recorded with the time
    /// of the event and the trait `consent_source` (or `fallback_source`).
    pub fn apply_traits(&mut self, t: &Traits, at: DateTime<Utc>, fallback_source: &str) {
        t.first_name.apply(&mut self.first_name);
        t.last_name.apply(&mut self.last_name);
        t.phone.apply(&mut self.phone);
        t.company.apply(&mut self.company);
        t.title.apply(&mut self.title);
        t.industry.apply(&mut self.industry);
        t.employees.apply(&mut self.employees);
        t.revenue.apply(&mut self.revenue);
        t.country.apply(&mut self.country);
        t.time_zone.apply(&mut self.time_zone);
        t.locale.apply(&mut self.locale);
        t.owner.apply(&mut self.owner);
        let source = t.consent_source.as_deref().unwrap_or(fallback_source);
        for (given, consent) in [
            (t.consent_email, &mut self.consent_email),
            (t.consent_tracking, &mut self.consent_tracking),
        ] {
            if let Some(granted) = given
                && (consent.granted != granted || consent.at.is_none())
                // An erased address's consent is renewed by a double opt-in only.
                && !(granted && consent.source.as_deref() == Some(RENEW_SOURCE))
            {
                *consent = Consent {
                    granted,
                    at: Some(at),
                    source: Some(source.to_string()),
                };
            }
        }
        for (key, value) in &t.attributes {
            match value {
                Some(v) => self.attributes.insert(key.clone(), v.clone()),
                None => self.attributes.remove(key),
            };
        }
        self.updated_at = at;
    }

    /// Checks and applies one action, recording what changed in `changes`.
    ///
    /// Rules may not move a lead out of a closed stage; such a move is kept as
    /// [`Outcome::Skipped`] rather than failing the event.
    pub fn apply(
        &mut self,
        action: Action,
        source: &Source,
        at: DateTime<Utc>,
        funnel: &Funnel,
        changes: &mut Changes,
    ) -> Result<Outcome, ChangeError> {
        let action = fit_to_size(action, source);
        let outcome = match &action {
            Action::AddScore {
                axis,
                points,
                reason,
            } => {
                check_points(*points)?;
                check_reason(reason, "score points")?;
                if *points == 0.0 {
                    Outcome::Unchanged
                } else {
                    *self.axis_mut(*axis) += points;
                    changes.scores.push(ScoreChange {
                        axis: *axis,
                        delta: *points,
                        at,
                        source: source.clone(),
                        reason: reason.clone(),
                    });
                    Outcome::Applied
                }
            }
            Action::SetFit {
                criterion,
                points,
                reason,
            } => {
                check_points(*points)?;
                check_text(criterion, "the fit criterion", MAX_KEY)?;
                let before = self.fit_parts.get(criterion).copied().unwrap_or(0.0);
                let delta = points - before;
                if delta == 0.0 {
                    Outcome::Unchanged
                } else {
                    check_reason(reason, "fit points")?;
                    if *points == 0.0 {
                        self.fit_parts.remove(criterion);
                    } else {
                        self.fit_parts.insert(criterion.clone(), *points);
                    }
                    self.fit += delta;
                    changes.scores.push(ScoreChange {
                        axis: Axis::Fit,
                        delta,
                        at,
                        source: source.clone(),
                        reason: format!("{criterion}: {reason}"),
                    });
                    Outcome::Applied
                }
            }
            Action::SetStage { stage, reason } => {
                if funnel.stage(stage).is_none() {
                    return Err(ChangeError::UnknownStage {
                        stage: stage.clone(),
                        known: funnel.names_joined(),
                    });
                }
                check_reason(reason, "a stage change")?;
                if *stage == self.stage {
                    Outcome::Unchanged
                } else if source.is_rule() && funnel.is_closed(&self.stage) {
                    Outcome::Skipped(format!(
                        "`{}` is a closed stage: rules do not move leads out of it, sales or the API can",
                        self.stage
                    ))
                } else {
                    changes.moves.push(StageMove {
                        from: Some(self.stage.clone()),
                        to: stage.clone(),
                        at,
                        source: source.clone(),
                        reason: reason.clone(),
                    });
                    self.stage = stage.clone();
                    self.stage_since = at;
                    Outcome::Applied
                }
            }
            Action::Tag(tag) => {
                check_text(tag, "a tag", MAX_TAG)?;
                if self.tags.insert(tag.clone()) {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Action::Untag(tag) => {
                if self.tags.remove(tag) {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Action::SetAttr { key, value } => {
                check_text(key, "an attribute name", MAX_KEY)?;
                let old = match value {
                    Some(v) => self.attributes.insert(key.clone(), v.clone()),
                    None => self.attributes.remove(key),
                };
                if old.as_ref() == value.as_ref() {
                    Outcome::Unchanged
                } else {
                    Outcome::Applied
                }
            }
            Action::SendMail(m) => {
                check_text(&m.template, "the template name", MAX_KEY * 2)?;
                changes.mails.push((m.clone(), source.clone()));
                Outcome::Applied
            }
            Action::Enroll(stream) => {
                check_text(stream, "the stream name", MAX_KEY)?;
                changes.streams.push(StreamChange::Enroll {
                    stream: stream.clone(),
                });
                Outcome::Applied
            }
            Action::Handoff { team, reason } => {
                check_text(team, "the team name", MAX_KEY)?;
                if reason.trim().is_empty() {
                    return Err(ChangeError::MissingReason { what: "a handoff" });
                }
                check_text(reason, "the reason", MAX_REASON)?;
                changes.handoffs.push(crate::domain::HandoffRequest {
                    team: team.clone(),
                    reason: reason.clone(),
                    source: source.clone(),
                });
                Outcome::Applied
            }
            Action::Unenroll(stream) => {
                check_text(stream, "the stream name", MAX_KEY)?;
                changes.streams.push(StreamChange::Exit {
                    stream: Some(stream.clone()),
                    reason: format!("unenrolled by {source}"),
                });
                Outcome::Applied
            }
        };
        let lead_changed = !matches!(
            action,
            Action::SendMail(_) | Action::Enroll(_) | Action::Unenroll(_) | Action::Handoff { .. }
        );
        if outcome != Outcome::Unchanged {
            if outcome == Outcome::Applied && lead_changed {
                self.updated_at = at;
            }
            if outcome == Outcome::Applied
                && let Action::Tag(tag) | Action::Untag(tag) = &action
            {
                changes.tags.push(crate::domain::change::TagChange {
                    tag: tag.clone(),
                    added: matches!(action, Action::Tag(_)),
                    at,
                    source: source.clone(),
                    reason: String::new(),
                });
            }
            changes.actions.push(ActionRecord {
                action,
                source: source.clone(),
                outcome: outcome.clone(),
            });
        }
        Ok(outcome)
    }

    fn axis_mut(&mut self, axis: Axis) -> &mut f64 {
        match axis {
            Axis::Fit => &mut self.fit,
            Axis::Interest => &mut self.interest,
        }
    }
}

/// The action with its reason cut to [`MAX_REASON`] characters on one line (unless an
/// API user gave it: they get an error and can shorten it) and its mail key shortened
/// by [`mail_key`].
fn fit_to_size(mut action: Action, source: &Source) -> Action {
    let from_api = matches!(source, Source::Api { .. });
    match &mut action {
        Action::AddScore { reason, .. }
        | Action::SetFit { reason, .. }
        | Action::SetStage { reason, .. }
        | Action::Handoff { reason, .. }
            if !from_api =>
        {
            let line = one_line(reason);
            let fitted = cut(&line, MAX_REASON);
            if *reason != *fitted {
                *reason = fitted.into_owned();
            }
        }
        Action::SendMail(m) => {
            if let std::borrow::Cow::Owned(k) = mail_key(&m.key) {
                m.key = k;
            }
        }
        _ => {}
    }
    action
}

/// A trigger mail's key as it is kept: as given when it has at most [`MAX_MAIL_KEY`]
/// characters; otherwise its first 100 characters, `…#` and the SHA-256 of the whole
/// key in hex, so two long keys stay apart when their beginnings are the same.
pub fn mail_key(key: &str) -> std::borrow::Cow<'_, str> {
    use sha2::{Digest, Sha256};
    if key.chars().nth(MAX_MAIL_KEY).is_none() {
        return std::borrow::Cow::Borrowed(key);
    }
    let end = key
        .char_indices()
        .nth(MAIL_KEY_PREFIX)
        .map_or(key.len(), |(i, _)| i);
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    std::borrow::Cow::Owned(format!("{}…#{hash}", &key[..end]))
}

fn check_points(points: f64) -> Result<(), ChangeError> {
    if points.is_finite() {
        Ok(())
    } else {
        Err(ChangeError::BadPoints(points))
    }
}

fn check_reason(reason: &str, what: &'static str) -> Result<(), ChangeError> {
    if reason.trim().is_empty() {
        return Err(ChangeError::MissingReason { what });
    }
    check_text(reason, "the reason", MAX_REASON)
}

fn check_text(text: &str, what: &'static str, max: usize) -> Result<(), ChangeError> {
    let len = text.chars().count();
    if text.trim().is_empty() {
        Err(ChangeError::Empty { what })
    } else if len > max {
        Err(ChangeError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::funnel::{Side, StageDef};

    fn funnel() -> Funnel {
        let def = |n: &str, closed| StageDef {
            name: n.into(),
            side: Side::Marketing,
            closed,
        };
        Funnel::new(
            vec![def("lead", false), def("mql", false), def("customer", true)],
            "lead",
        )
        .unwrap()
    }

    fn rule() -> Source {
        Source::Rule {
            file: "rules/x.rhai".into(),
            line: 3,
            column: 5,
        }
    }

    fn lead() -> Lead {
        Lead::new(
            1,
            Email::parse("a@example.com").unwrap(),
            "lead",
            Utc::now(),
        )
    }

    #[test]
    fn set_fit_replaces_a_criterion() {
        let (mut l, f, mut c) = (lead(), funnel(), Changes::default());
        let set = |p| Action::SetFit {
            criterion: "phone".into(),
            points: p,
            reason: "phone known".into(),
        };
        l.apply(set(15.0), &rule(), Utc::now(), &f, &mut c).unwrap();
        assert_eq!(
            l.apply(set(15.0), &rule(), Utc::now(), &f, &mut c).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(l.fit, 15.0);
        l.apply(set(0.0), &rule(), Utc::now(), &f, &mut c).unwrap();
        assert_eq!(l.fit, 0.0);
        assert_eq!(c.scores.len(), 2);
    }

    #[test]
    fn stage_moves_are_checked() {
        let (mut l, f, mut c) = (lead(), funnel(), Changes::default());
        let to = |s: &str| Action::SetStage {
            stage: s.into(),
            reason: "because".into(),
        };
        assert!(matches!(
            l.apply(to("sql"), &rule(), Utc::now(), &f, &mut c),
            Err(ChangeError::UnknownStage { .. })
        ));
        l.apply(to("customer"), &rule(), Utc::now(), &f, &mut c)
            .unwrap();
        let out = l.apply(to("mql"), &rule(), Utc::now(), &f, &mut c).unwrap();
        assert!(matches!(out, Outcome::Skipped(_)));
        assert_eq!(l.stage, "customer");
        let api = Source::Api { user: "crm".into() };
        l.apply(to("mql"), &api, Utc::now(), &f, &mut c).unwrap();
        assert_eq!(l.stage, "mql");
        assert_eq!(c.moves.len(), 2);
    }

    #[test]
    fn long_reasons_from_rules_are_cut_and_from_the_api_refused() {
        let (mut l, f, mut c) = (lead(), funnel(), Changes::default());
        let asset = "A".repeat(600);
        let add = |reason: String| Action::AddScore {
            axis: Axis::Interest,
            points: 5.0,
            reason,
        };
        l.apply(
            add(format!("downloaded {asset}")),
            &rule(),
            Utc::now(),
            &f,
            &mut c,
        )
        .unwrap();
        let kept = &c.scores[0].reason;
        assert_eq!(kept.chars().count(), MAX_REASON);
        assert!(kept.starts_with("downloaded AAA"), "{kept}");
        assert!(kept.ends_with('…'), "{kept}");
        // The record of the action holds the cut reason too.
        assert!(matches!(
            &c.actions[0].action,
            Action::AddScore { reason, .. } if reason == kept
        ));
        // A reason on several lines is put on one.
        l.apply(
            add("downloaded\r\nX\0".into()),
            &rule(),
            Utc::now(),
            &f,
            &mut c,
        )
        .unwrap();
        assert_eq!(c.scores[1].reason, "downloaded X");
        // Stage moves and handoffs alike.
        let to = Action::SetStage {
            stage: "mql".into(),
            reason: "x".repeat(10_000),
        };
        l.apply(to, &rule(), Utc::now(), &f, &mut c).unwrap();
        assert_eq!(c.moves[0].reason.chars().count(), MAX_REASON);
        let handoff = Action::Handoff {
            team: "sales".into(),
            reason: "y".repeat(501),
        };
        l.apply(handoff, &rule(), Utc::now(), &f, &mut c).unwrap();
        assert_eq!(c.handoffs[0].reason.chars().count(), MAX_REASON);
        // The API gets an error it can act on.
        let api = Source::Api { user: "crm".into() };
        let err = l
            .apply(add("z".repeat(501)), &api, Utc::now(), &f, &mut c)
            .unwrap_err();
        assert!(
            matches!(err, ChangeError::TooLong { len: 501, .. }),
            "{err}"
        );
    }

    #[test]
    fn long_mail_keys_become_a_prefix_and_a_hash() {
        let short = "security";
        assert!(matches!(
            mail_key(short),
            std::borrow::Cow::Borrowed("security")
        ));
        let exact = "k".repeat(MAX_MAIL_KEY);
        assert_eq!(mail_key(&exact), exact);
        let a = format!("{}a", "t".repeat(600));
        let b = format!("{}b", "t".repeat(600));
        let (ka, kb) = (mail_key(&a), mail_key(&b));
        assert_ne!(ka, kb, "the hash keeps keys with the same start apart");
        assert_eq!(ka, mail_key(&a), "the same key gives the same result");
        assert!(ka.starts_with(&"t".repeat(100)), "{ka}");
        assert_eq!(ka.chars().count(), 100 + 2 + 64);
        let (mut l, f, mut c) = (lead(), funnel(), Changes::default());
        let send = Action::SendMail(crate::domain::MailRequest {
            template: "trigger/use-case".into(),
            class: crate::domain::MailClass::Marketing,
            key: a.clone(),
            repeat: crate::domain::Repeat::Once,
            data: Map::new(),
            opt_in: false,
        });
        l.apply(send, &rule(), Utc::now(), &f, &mut c).unwrap();
        assert_eq!(c.mails[0].0.key, ka);
    }

    #[test]
    fn reasons_are_required() {
        let (mut l, f, mut c) = (lead(), funnel(), Changes::default());
        let err = l
            .apply(
                Action::AddScore {
                    axis: Axis::Interest,
                    points: 5.0,
                    reason: " ".into(),
                },
                &rule(),
                Utc::now(),
                &f,
                &mut c,
            )
            .unwrap_err();
        assert!(matches!(err, ChangeError::MissingReason { .. }));
    }
}
