//! The checked `[sales]` table: owners, teams with their reaction time, calendar,
//! escalation ladder and webhook, the stages that hand over, and where accepted and
//! rejected leads go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use lettre::message::Mailbox;

use super::mail::{Checker, working_time};
use super::raw::{RawSales, RawTeam};
use crate::domain::Funnel;
use crate::sla::{Calendar, Hours};

#[derive(Debug, Clone)]
pub struct SalesConfig {
    /// The stage of an accepted lead.
    pub accept_stage: String,
    /// The stage of a rejected (or returned) lead.
    pub reject_stage: String,
    /// How long accept / reject links work.
    pub link_valid: Duration,
    /// Stage -> team that gets leads entering it.
    pub on_stage: BTreeMap<String, String>,
    pub owners: Vec<Owner>,
    pub teams: Vec<Team>,
}

impl SalesConfig {
    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.name == name)
    }

    pub fn owner(&self, id: &str) -> Option<&Owner> {
        self.owners.iter().find(|o| o.id == id)
    }

    pub fn team_names(&self) -> Vec<String> {
        self.teams.iter().map(|t| t.name.clone()).collect()
    }
}

/// A salesperson.
#[derive(Debug, Clone)]
pub struct Owner {
    pub id: String,
    pub name: String,
    pub email: Mailbox,
}

/// A team that gets handoffs.
#[derive(Debug, Clone)]
pub struct Team {
    pub name: String,
    /// Owner ids, in the order of the round-robin.
    pub owners: Vec<String>,
    pub assign: Assign,
    /// Who hears of an escalation (the team lead).
    pub escalate_to: Option<Mailbox>,
    /// Time to accept or reject, in business time.
    pub reaction: Duration,
    /// Each owner's calendar (the team's, with the owner's own working time).
    pub calendars: BTreeMap<String, Calendar>,
    /// Each owner's time zone (deadlines are shown in it).
    pub time_zones: BTreeMap<String, Tz>,
    pub ladder: Vec<Escalation>,
    pub webhook: Option<Webhook>,
}

impl Team {
    pub fn time_zone(&self, owner: &str) -> Tz {
        self.time_zones.get(owner).copied().unwrap_or(Tz::UTC)
    }

    /// The calendar in which `owner`'s deadlines are counted.
    pub fn calendar(&self, owner: &str) -> &Calendar {
        self.calendars
            .get(owner)
            .or_else(|| self.calendars.values().next())
            .unwrap_or(&Calendar::Always)
    }
}

/// How a team's owner is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assign {
    /// In turn.
    RoundRobin,
    /// `function(lead)` of a rule file returns the owner id ("" for the next in turn).
    Rule { file: String, function: String },
}

/// One step of an escalation ladder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escalation {
    pub at: At,
    pub action: Step,
}

/// When a step fires, counted from the assignment in the owner's calendar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// A share of the reaction time (1.0 = the deadline).
    Share(f64),
    After(Duration),
}

impl At {
    /// Business time from the assignment.
    pub fn offset(self, reaction: Duration) -> Duration {
        match self {
            At::Share(s) => reaction.mul_f64(s),
            At::After(d) => d,
        }
    }
}

/// What an escalation step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Remind the owner.
    Remind,
    /// Tell the escalation contact.
    Escalate,
    /// Give the handoff to the next owner of the team.
    Reassign,
    /// Give the lead back to marketing.
    Return,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Remind => "remind",
            Step::Escalate => "escalate",
            Step::Reassign => "reassign",
            Step::Return => "return",
        }
    }
}

/// Where a team's handoff steps are POSTed.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// nurtured's JSON, HMAC-signed.
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
}

pub(super) fn sales(
    raw: &RawSales,
    funnel: Option<&Funnel>,
    default_tz: Tz,
    c: &Checker,
) -> SalesConfig {
    let bad = c.bad;
    let stage = |key: &str, s: &String| {
        if let Some(f) = funnel
            && f.stage(s).is_none()
        {
            bad(
                key,
                format!("unknown stage `{s}`; the stages are: {}", f.names_joined()),
            );
        }
    };
    stage("sales.accept_stage", &raw.accept_stage);
    stage("sales.reject_stage", &raw.reject_stage);
    let link_valid = (c.duration)("sales.link_valid", &raw.link_valid);

    let mut owners = Vec::new();
    for (i, o) in raw.owners.iter().enumerate() {
        let key = format!("sales.owners[{i}]");
        if o.id.trim().is_empty() {
            bad(&format!("{key}.id"), "must not be empty".into());
        }
        if raw.owners[..i].iter().any(|p| p.id == o.id) {
            bad(&format!("{key}.id"), format!("`{}` is used twice", o.id));
        }
        let email = match o.email.parse::<lettre::Address>() {
            Ok(a) => Mailbox::new(Some(o.name.clone()), a),
            Err(e) => {
                bad(
                    &format!("{key}.email"),
                    format!("`{}` is not an e-mail address ({e})", o.email),
                );
                continue;
            }
        };
        owners.push(Owner {
            id: o.id.clone(),
            name: o.name.clone(),
            email,
        });
    }

    let teams: Vec<Team> = raw
        .teams
        .iter()
        .enumerate()
        .map(|(i, t)| team(raw, t, i, default_tz, c))
        .collect();
    for (stage_name, team_name) in &raw.on_stage {
        let key = format!("sales.on_stage.{stage_name}");
        stage(&key, stage_name);
        if !raw.teams.iter().any(|t| &t.name == team_name) {
            bad(
                &key,
                format!(
                    "no team `{team_name}`; the teams are: {}",
                    names(raw.teams.iter().map(|t| t.name.as_str()))
                ),
            );
        }
    }
    SalesConfig {
        accept_stage: raw.accept_stage.clone(),
        reject_stage: raw.reject_stage.clone(),
        link_valid,
        on_stage: raw.on_stage.clone(),
        owners,
        teams,
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn team(raw: &RawSales, t: &RawTeam, i: usize, default_tz: Tz, c: &Checker) -> Team {
    let bad = c.bad;
    let key = format!("sales.teams[{i}]");
    if t.name.trim().is_empty() {
        bad(&format!("{key}.name"), "must not be empty".into());
    }
    if raw.teams[..i].iter().any(|o| o.name == t.name) {
        bad(
            &format!("{key}.name"),
            format!("`{}` is used twice", t.name),
        );
    }
    if t.owners.is_empty() {
        bad(
            &format!("{key}.owners"),
            "name at least one owner id from [[sales.owners]]".into(),
        );
    }
    for (j, id) in t.owners.iter().enumerate() {
        if !raw.owners.iter().any(|o| &o.id == id) {
            bad(
                &format!("{key}.owners[{j}]"),
                format!(
                    "no owner `{id}`; the owners are: {}",
                    names(raw.owners.iter().map(|o| o.id.as_str()))
                ),
            );
        }
    }
    let assign = match t.assign.as_str() {
        "round-robin" => Assign::RoundRobin,
        other => match other.split_once(':') {
            Some((file, function))
                if file.ends_with(".rhai") && !function.is_empty() && !file.contains('/') =>
            {
                Assign::Rule {
                    file: file.to_string(),
                    function: function.to_string(),
                }
            }
            _ => {
                bad(
                    &format!("{key}.assign"),
                    format!(
                        "`{other}` is not an assignment: use \"round-robin\" or \
                         \"FILE.rhai:FUNCTION\" (a function of a rule file that returns an owner id)"
                    ),
                );
                Assign::RoundRobin
            }
        },
    };
    let escalate_to = match t.escalate_to.trim() {
        "" => None,
        text => match text.parse::<Mailbox>() {
            Ok(m) => Some(m),
            Err(e) => {
                bad(
                    &format!("{key}.escalate_to"),
                    format!("`{text}` is not an address ({e}): write \"Name <user@example.com>\""),
                );
                None
            }
        },
    };
    let reaction = (c.duration)(&format!("{key}.reaction"), &t.reaction);
    let tz = zone(&t.time_zone, &format!("{key}.time_zone"), bad).unwrap_or(default_tz);
    let mut holidays = BTreeSet::new();
    for (j, h) in t.holidays.iter().enumerate() {
        match NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d") {
            Ok(d) => {
                holidays.insert(d);
            }
            Err(_) => bad(
                &format!("{key}.holidays[{j}]"),
                format!("`{h}` is not a date: write YYYY-MM-DD, e.g. 2026-12-25"),
            ),
        }
    }
    let always = match t.calendar.as_str() {
        "business" => false,
        "always" => true,
        other => {
            bad(
                &format!("{key}.calendar"),
                format!("`{other}` is not a calendar: use \"business\" or \"always\""),
            );
            false
        }
    };
    let team_time = working_time(&t.days, &t.hours, &key, bad);
    let mut calendars = BTreeMap::new();
    let mut time_zones = BTreeMap::new();
    for id in &t.owners {
        let Some((j, o)) = raw.owners.iter().enumerate().find(|(_, o)| &o.id == id) else {
            continue;
        };
        let okey = format!("sales.owners[{j}]");
        let tz = if o.time_zone.is_empty() {
            tz
        } else {
            zone(&o.time_zone, &format!("{okey}.time_zone"), bad).unwrap_or(tz)
        };
        time_zones.insert(id.clone(), tz);
        let calendar = if always {
            Calendar::Always
        } else {
            let own = (!o.days.is_empty() || !o.hours.is_empty()).then(|| {
                let days = if o.days.is_empty() { &t.days } else { &o.days };
                let hours = if o.hours.is_empty() {
                    &t.hours
                } else {
                    &o.hours
                };
                working_time(days, hours, &okey, bad)
            });
            match own.unwrap_or_else(|| team_time.clone()) {
                Some((days, from, until)) => Calendar::Business(Hours {
                    time_zone: tz,
                    days,
                    from,
                    until,
                    holidays: holidays.clone(),
                }),
                None => Calendar::Always,
            }
        };
        calendars.insert(id.clone(), calendar);
    }
    let mut ladder = Vec::new();
    for (j, e) in t.escalation.iter().enumerate() {
        let ekey = format!("{key}.escalation[{j}]");
        let at = match e.at.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 10_000.0 => Some(At::Share(p / 100.0)),
                _ => None,
            },
            None => humantime::parse_duration(e.at.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .map(At::After),
        };
        let action = match e.action.as_str() {
            "remind" => Some(Step::Remind),
            "escalate" => Some(Step::Escalate),
            "reassign" => Some(Step::Reassign),
            "return" => Some(Step::Return),
            other => {
                bad(
                    &format!("{ekey}.do"),
                    format!("`{other}` is not a step: use remind, escalate, reassign or return"),
                );
                None
            }
        };
        if at.is_none() {
            bad(
                &format!("{ekey}.at"),
                format!(
                    "`{}` is not a point in time: write a share of the reaction time \
                     (\"50%\") or a duration (\"45m\")",
                    e.at
                ),
            );
        }
        if action == Some(Step::Escalate) && escalate_to.is_none() {
            bad(
                &format!("{ekey}.do"),
                "escalate needs the team's escalate_to address".into(),
            );
        }
        if let (Some(at), Some(action)) = (at, action) {
            ladder.push(Escalation { at, action });
        }
    }
    ladder.sort_by_key(|e| e.at.offset(reaction));
    let webhook = if t.webhook.url.trim().is_empty() {
        None
    } else {
        let url = t.webhook.url.trim().to_string();
        if url::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .is_none()
        {
            bad(
                &format!("{key}.webhook.url"),
                format!("`{url}` is not an http(s) URL"),
            );
        }
        let format = match t.webhook.format.as_str() {
            "json" => WebhookFormat::Json,
            "slack" => WebhookFormat::Slack,
            other => {
                bad(
                    &format!("{key}.webhook.format"),
                    format!("`{other}` is not a format: use \"json\" or \"slack\""),
                );
                WebhookFormat::Json
            }
        };
        if format == WebhookFormat::Json && t.webhook.secret.len() < 16 {
            bad(
                &format!("{key}.webhook.secret"),
                "must be at least 16 characters: the receiver checks the signature with it".into(),
            );
        }
        Some(Webhook {
            url,
            secret: t.webhook.secret.clone(),
            format,
        })
    };
    Team {
        name: t.name.clone(),
        owners: t.owners.clone(),
        assign,
        escalate_to,
        reaction,
        calendars,
        time_zones,
        ladder,
        webhook,
    }
}

fn zone(text: &str, key: &str, bad: &dyn Fn(&str, String)) -> Option<Tz> {
    match text.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            bad(
                key,
                format!("`{text}` is not an IANA time zone name such as Europe/Berlin"),
            );
            None
        }
    }
}
