//! The configuration file as written: a serde struct that refuses unknown keys, with
//! the defaults the daemon runs on when a key (or the whole file) is missing.
//!
//! The shipped `nurtured.toml` spells out exactly these defaults; a unit test keeps
//! the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The development API token shipped in `nurtured.toml`; the daemon warns while it is used.
pub const DEV_TOKEN: &str = "dev-token-change-me";
/// The development secret for signed mail links; the daemon warns while it is used.
pub const DEV_SECRET: &str = "dev-secret-change-me-to-a-long-random-string";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "d::data_dir")]
    pub data_dir: String,
    #[serde(default)]
    pub database_url: String,
    /// `[database] url`: the same as `database_url`, for those who write it so
    /// (`NURTURED_DATABASE__URL`).
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default = "d::http_addr")]
    pub http_addr: String,
    #[serde(default = "d::api_token")]
    pub api_token: String,
    #[serde(default = "d::rules_dir")]
    pub rules_dir: String,
    #[serde(default = "d::time_zone")]
    pub time_zone: String,
    /// A log filter (`log = "info"`), or a table: `[log] level = "info"`,
    /// `format = "json"`.
    #[serde(default = "d::log")]
    pub log: RawLog,
    /// `text` (one line per event) or `json` (one JSON object per line).
    #[serde(default = "d::log_format")]
    pub log_format: String,
    #[serde(default = "d::initial_stage")]
    pub initial_stage: String,
    #[serde(default = "d::max_request_bytes")]
    pub max_request_bytes: u64,
    #[serde(default)]
    pub processing: RawProcessing,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default = "d::thresholds")]
    pub thresholds: BTreeMap<String, f64>,
    #[serde(default = "d::stages")]
    pub stages: Vec<RawStage>,
    #[serde(default = "d::schedules")]
    pub schedules: Vec<RawSchedule>,
    #[serde(default)]
    pub mail: RawMail,
    #[serde(default = "d::streams")]
    pub streams: Vec<RawStream>,
    #[serde(default)]
    pub sales: RawSales,
    #[serde(default)]
    pub bounces: super::bounces::RawBounces,
    /// `[http]`: CORS for the intake routes, the link rate limit, trusted proxies.
    #[serde(default)]
    pub http: super::http::RawHttp,
    /// `[[api_keys]]`: keys with scopes, next to the admin `api_token`.
    #[serde(default)]
    pub api_keys: Vec<super::http::RawApiKey>,
    #[serde(default = "super::topics::default_raw")]
    pub topics: Vec<super::topics::RawTopic>,
    #[serde(default)]
    pub retention: super::retention::RawRetention,
    /// `[rules]`: rule files that run in shadow.
    #[serde(default)]
    pub rules: RawRules,
    #[serde(default)]
    pub backtest: super::backtest::RawBacktest,
    /// `[metrics]`: a listener of its own for `/metrics`.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[health]`: what `/readyz` checks.
    #[serde(default)]
    pub health: RawHealth,
    /// `[ui]`: the console's listener, sessions and sign-in limits.
    #[serde(default)]
    pub ui: super::users::RawUi,
    /// `[[users]]`: who may sign in to the console.
    #[serde(default)]
    pub users: Vec<super::users::RawUser>,
}

/// `log` as written: a filter string, or a `[log]` table with `level` and `format`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawLog {
    Filter(String),
    Table(RawLogTable),
}

/// `[log]`: the filter and the line format, for those who write them as a table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogTable {
    /// Like `log = "..."`: `error`, `warn`, `info`, `debug`, `trace` or a filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Like `log_format`: `text` or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl RawLog {
    /// The filter: the string, or the table's `level` (default `info`).
    pub fn filter(&self) -> &str {
        match self {
            RawLog::Filter(f) => f,
            RawLog::Table(t) => t.level.as_deref().unwrap_or("info"),
        }
    }

    /// The table's `format`, when given.
    pub fn format(&self) -> Option<&str> {
        match self {
            RawLog::Filter(_) => None,
            RawLog::Table(t) => t.format.as_deref(),
        }
    }
}

/// A string or a table, with the table's own errors (an unknown key is named).
impl<'de> Deserialize<'de> for RawLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawLog;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a log filter such as \"info\", or a table with `level` and `format`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawLog, E> {
                Ok(RawLog::Filter(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawLog, A::Error> {
                RawLogTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawLog::Table)
            }
        }
        d.deserialize_any(Either)
    }
}

/// `[metrics]`: `/metrics` is on the API listener (with a key); `addr` adds a listener
/// that serves only `/metrics`, without a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:PORT`, e.g. `127.0.0.1:9464`; empty: no listener of its own.
    #[serde(default)]
    pub addr: String,
}

/// `[health]`: the readiness check (`/readyz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Not ready while more events than this wait to be processed.
    #[serde(default = "d::max_backlog")]
    pub max_backlog: u64,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            max_backlog: d::max_backlog(),
        }
    }
}

/// `[rules]`: how the files of `rules_dir` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// File names in the rules folder (`55-webinar-fan.rhai`) that run in shadow: they
    /// see every event after the live files, and what they ask for is recorded, not
    /// applied. Re-read from the file while the daemon runs.
    #[serde(default)]
    pub shadow: Vec<String>,
}

/// The sales handoff: who gets ready leads, how fast they must react, what happens
/// when nobody does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSales {
    #[serde(default = "d::accept_stage")]
    pub accept_stage: String,
    #[serde(default = "d::reject_stage")]
    pub reject_stage: String,
    #[serde(default = "d::link_valid")]
    pub link_valid: String,
    /// Stage -> team: entering the stage hands the lead to the team.
    #[serde(default = "d::on_stage")]
    pub on_stage: BTreeMap<String, String>,
    #[serde(default = "d::owners")]
    pub owners: Vec<RawOwner>,
    #[serde(default = "d::teams")]
    pub teams: Vec<RawTeam>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOwner {
    pub id: String,
    pub name: String,
    pub email: String,
    /// Own working time; empty: the team's.
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub days: String,
    #[serde(default)]
    pub hours: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    pub name: String,
    pub owners: Vec<String>,
    #[serde(default = "d::assign")]
    pub assign: String,
    #[serde(default)]
    pub escalate_to: String,
    #[serde(default = "d::reaction")]
    pub reaction: String,
    #[serde(default = "d::calendar")]
    pub calendar: String,
    #[serde(default = "d::time_zone")]
    pub time_zone: String,
    #[serde(default = "d::window_days")]
    pub days: String,
    #[serde(default = "d::window_hours")]
    pub hours: String,
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default)]
    pub escalation: Vec<RawEscalation>,
    #[serde(default)]
    pub webhook: RawWebhook,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub at: String,
    #[serde(rename = "do")]
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default = "d::webhook_format")]
    pub format: String,
}

impl Default for RawSales {
    fn default() -> Self {
        toml::from_str("").expect("every sales key has a default")
    }
}

impl Default for RawWebhook {
    fn default() -> Self {
        toml::from_str("").expect("every webhook key has a default")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    #[serde(default)]
    pub url: String,
    #[serde(default = "d::from")]
    pub from: String,
    #[serde(default)]
    pub reply_to: String,
    #[serde(default = "d::public_url")]
    pub public_url: String,
    #[serde(default = "d::secret")]
    pub secret: String,
    #[serde(default = "d::templates_dir")]
    pub templates_dir: String,
    #[serde(default = "d::default_locale")]
    pub default_locale: String,
    #[serde(default = "d::quarantine")]
    pub quarantine: Vec<String>,
    #[serde(default)]
    pub unsubscribe_mailto: String,
    #[serde(default = "d::tracking")]
    pub tracking: bool,
    #[serde(default = "d::connections")]
    pub connections: i64,
    #[serde(default = "d::smtp_timeout")]
    pub timeout: String,
    #[serde(default = "d::retry_base")]
    pub retry_base: String,
    #[serde(default = "d::retry_max_age")]
    pub retry_max_age: String,
    #[serde(default)]
    pub sender: RawSender,
    #[serde(default)]
    pub frequency_cap: RawCap,
    #[serde(default)]
    pub send_window: RawWindow,
    #[serde(default)]
    pub dkim: RawDkim,
    /// Lets SMTP delivery run with an `http://` public URL (a test setup).
    #[serde(default)]
    pub allow_insecure_links: bool,
    /// Trigger mails for events older than this (when processed) are not sent.
    #[serde(default = "d::max_event_age")]
    pub max_event_age: String,
    #[serde(default)]
    pub pause: RawPause,
    /// The envelope sender (Return-Path) of mails, made `bounce+TOKEN@domain`; empty:
    /// `bounce@` the From domain; `none`: the From address, without VERP.
    #[serde(default)]
    pub bounce_address: String,
    /// Secrets that signed links before `secret`: their links still verify.
    #[serde(default)]
    pub previous_secrets: Vec<String>,
}

/// Who sends: shown in every layout's footer (the imprint a German B2B mail needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSender {
    #[serde(default = "d::sender_company")]
    pub company: String,
    #[serde(default = "d::sender_address")]
    pub address: String,
    #[serde(default = "d::sender_website")]
    pub website: String,
    #[serde(default = "d::sender_imprint")]
    pub imprint_url: String,
    #[serde(default = "d::sender_privacy")]
    pub privacy_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCap {
    #[serde(default = "d::cap_max")]
    pub max: i64,
    #[serde(default = "d::cap_per")]
    pub per: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    #[serde(default = "d::window_days")]
    pub days: String,
    #[serde(default = "d::window_hours")]
    pub hours: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkim {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub selector: String,
    #[serde(default)]
    pub key_file: String,
}

/// `[mail.pause]`: how delivery pauses while the SMTP server refuses the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPause {
    /// The first pause; each refused probe doubles it.
    #[serde(default = "d::pause_first")]
    pub first: String,
    /// The longest pause between two probes.
    #[serde(default = "d::pause_max")]
    pub max: String,
}

impl Default for RawPause {
    fn default() -> Self {
        toml::from_str("").expect("every pause key has a default")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: String,
    pub stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<String>,
    #[serde(default = "d::reentry")]
    pub reentry: String,
    #[serde(default = "d::on_quarantine")]
    pub on_quarantine: String,
    pub steps: Vec<RawStep>,
    /// The topic of the stream's mails; empty: the default topic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub after: String,
    pub template: String,
}

impl Default for RawMail {
    fn default() -> Self {
        toml::from_str("").expect("every mail key has a default")
    }
}

impl Default for RawSender {
    fn default() -> Self {
        toml::from_str("").expect("every sender key has a default")
    }
}

impl Default for RawCap {
    fn default() -> Self {
        toml::from_str("").expect("every cap key has a default")
    }
}

impl Default for RawWindow {
    fn default() -> Self {
        toml::from_str("").expect("every window key has a default")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcessing {
    #[serde(default = "d::batch_size")]
    pub batch_size: i64,
    #[serde(default = "d::poll_interval")]
    pub poll_interval: String,
    #[serde(default = "d::memory")]
    pub memory: String,
    /// Replaced by `memory`; kept to say so when an older file still has it.
    #[serde(default, skip_serializing)]
    pub history_events: Option<i64>,
    #[serde(default = "d::recent_activity")]
    pub recent_activity: i64,
}

/// `[database]`: the database URL as a table key, and the connections to PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    #[serde(default)]
    pub url: String,
    #[serde(default = "d::max_connections")]
    pub max_connections: i64,
}

impl Default for RawDatabase {
    fn default() -> Self {
        toml::from_str("").expect("every database key has a default")
    }
}

/// Several daemons on one PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default)]
    pub name: String,
    #[serde(default = "d::shards")]
    pub shards: i64,
    #[serde(default = "d::lease_timeout")]
    pub lease_timeout: String,
}

impl Default for RawCluster {
    fn default() -> Self {
        toml::from_str("").expect("every cluster key has a default")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "d::max_operations")]
    pub max_operations: i64,
    #[serde(default = "d::max_call_depth")]
    pub max_call_depth: i64,
    #[serde(default = "d::max_expr_depth")]
    pub max_expr_depth: i64,
    #[serde(default = "d::max_string_size")]
    pub max_string_size: i64,
    #[serde(default = "d::max_array_size")]
    pub max_array_size: i64,
    #[serde(default = "d::max_map_size")]
    pub max_map_size: i64,
    #[serde(default = "d::timeout")]
    pub timeout: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub name: String,
    pub side: String,
    #[serde(default)]
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub name: String,
    pub cron: String,
    /// Built-in job: `decay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<String>,
    /// Rule job: file in the rules folder and the function to call per lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Default for RawProcessing {
    fn default() -> Self {
        Self {
            batch_size: d::batch_size(),
            poll_interval: d::poll_interval(),
            memory: d::memory(),
            history_events: None,
            recent_activity: d::recent_activity(),
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_operations: d::max_operations(),
            max_call_depth: d::max_call_depth(),
            max_expr_depth: d::max_expr_depth(),
            max_string_size: d::max_string_size(),
            max_array_size: d::max_array_size(),
            max_map_size: d::max_map_size(),
            timeout: d::timeout(),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

/// The defaults, one function per key (serde needs functions).
mod d {
    use std::collections::BTreeMap;

    use super::{
        RawEscalation, RawOwner, RawSchedule, RawStage, RawStep, RawStream, RawTeam, RawWebhook,
    };

    pub fn from() -> String {
        "Beispiel GmbH <marketing@example.com>".into()
    }
    pub fn public_url() -> String {
        "http://127.0.0.1:8080".into()
    }
    pub fn secret() -> String {
        super::DEV_SECRET.into()
    }
    pub fn templates_dir() -> String {
        "templates".into()
    }
    pub fn default_locale() -> String {
        "de".into()
    }
    pub fn quarantine() -> Vec<String> {
        vec!["sql".into(), "opportunity".into()]
    }
    pub fn tracking() -> bool {
        true
    }
    pub fn connections() -> i64 {
        8
    }
    pub fn smtp_timeout() -> String {
        "30s".into()
    }
    pub fn retry_base() -> String {
        "30s".into()
    }
    pub fn retry_max_age() -> String {
        "2d".into()
    }
    pub fn max_event_age() -> String {
        "1d".into()
    }
    pub fn pause_first() -> String {
        "30s".into()
    }
    pub fn pause_max() -> String {
        "15m".into()
    }
    pub fn sender_company() -> String {
        "Beispiel GmbH".into()
    }
    pub fn sender_address() -> String {
        "Musterstraße 1, 10115 Berlin".into()
    }
    pub fn sender_website() -> String {
        "https://www.example.com".into()
    }
    pub fn sender_imprint() -> String {
        "https://www.example.com/impressum".into()
    }
    pub fn sender_privacy() -> String {
        "https://www.example.com/datenschutz".into()
    }
    pub fn cap_max() -> i64 {
        3
    }
    pub fn cap_per() -> String {
        "7d".into()
    }
    pub fn window_days() -> String {
        "mon-fri".into()
    }
    pub fn window_hours() -> String {
        "09:00-17:00".into()
    }
    pub fn reentry() -> String {
        "never".into()
    }
    pub fn on_quarantine() -> String {
        "pause".into()
    }
    pub fn streams() -> Vec<RawStream> {
        let steps = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(after, template)| RawStep {
                    after: after.to_string(),
                    template: template.to_string(),
                })
                .collect()
        };
        vec![
            RawStream {
                name: "new-leads".into(),
                stages: vec!["subscriber".into(), "lead".into()],
                tags: vec![],
                goals: vec!["Demo Requested".into(), "Offer Requested".into()],
                reentry: "90d".into(),
                on_quarantine: "exit".into(),
                steps: steps(&[
                    ("1h", "stream/lead-welcome"),
                    ("3d", "stream/lead-guide"),
                    ("7d", "stream/lead-checklist"),
                    ("14d", "stream/lead-webinar"),
                ]),
                topic: String::new(),
            },
            RawStream {
                name: "recycled".into(),
                stages: vec!["recycled".into()],
                tags: vec![],
                goals: vec!["Demo Requested".into(), "Offer Requested".into()],
                reentry: "30d".into(),
                on_quarantine: "exit".into(),
                steps: steps(&[
                    ("7d", "stream/recycled-update"),
                    ("30d", "stream/recycled-planning"),
                ]),
                topic: String::new(),
            },
            RawStream {
                name: "mql".into(),
                stages: vec!["mql".into(), "sal".into()],
                tags: vec![],
                goals: vec!["Offer Requested".into()],
                reentry: "never".into(),
                on_quarantine: "pause".into(),
                steps: steps(&[
                    ("1d", "stream/mql-solution"),
                    ("5d", "stream/mql-case-study"),
                    ("10d", "stream/mql-roi"),
                ]),
                topic: String::new(),
            },
            RawStream {
                name: "customers".into(),
                stages: vec!["customer".into()],
                tags: vec![],
                goals: vec![],
                reentry: "never".into(),
                on_quarantine: "pause".into(),
                steps: steps(&[
                    ("7d", "stream/customer-onboarding"),
                    ("30d", "stream/customer-best-practice"),
                ]),
                topic: "product".into(),
            },
        ]
    }

    pub fn accept_stage() -> String {
        "sal".into()
    }
    pub fn reject_stage() -> String {
        "recycled".into()
    }
    pub fn link_valid() -> String {
        "14d".into()
    }
    pub fn on_stage() -> BTreeMap<String, String> {
        [("mql".to_string(), "inbound".to_string())].into()
    }
    pub fn owners() -> Vec<RawOwner> {
        [
            ("anna", "Anna Berger", "anna.berger@example.com"),
            ("ben", "Ben Okafor", "ben.okafor@example.com"),
        ]
        .into_iter()
        .map(|(id, name, email)| RawOwner {
            id: id.into(),
            name: name.into(),
            email: email.into(),
            time_zone: String::new(),
            days: String::new(),
            hours: String::new(),
        })
        .collect()
    }
    pub fn teams() -> Vec<RawTeam> {
        vec![RawTeam {
            name: "inbound".into(),
            owners: vec!["anna".into(), "ben".into()],
            assign: assign(),
            escalate_to: "Vertriebsleitung <vertrieb@example.com>".into(),
            reaction: reaction(),
            calendar: calendar(),
            time_zone: time_zone(),
            days: window_days(),
            hours: window_hours(),
            holidays: [
                "2026-12-25",
                "2026-12-26",
                "2027-01-01",
                "2027-03-26",
                "2027-03-29",
                "2027-05-01",
                "2027-05-06",
                "2027-05-17",
                "2027-10-03",
                "2027-12-25",
                "2027-12-26",
            ]
            .map(String::from)
            .to_vec(),
            escalation: [
                ("50%", "remind"),
                ("100%", "escalate"),
                ("150%", "reassign"),
            ]
            .into_iter()
            .map(|(at, action)| RawEscalation {
                at: at.into(),
                action: action.into(),
            })
            .collect(),
            webhook: RawWebhook::default(),
        }]
    }
    pub fn assign() -> String {
        "round-robin".into()
    }
    pub fn reaction() -> String {
        "2h".into()
    }
    pub fn calendar() -> String {
        "business".into()
    }
    pub fn webhook_format() -> String {
        "json".into()
    }
    pub fn data_dir() -> String {
        "data".into()
    }
    pub fn http_addr() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn api_token() -> String {
        super::DEV_TOKEN.into()
    }
    pub fn rules_dir() -> String {
        "rules".into()
    }
    pub fn time_zone() -> String {
        "Europe/Berlin".into()
    }
    pub fn log() -> super::RawLog {
        super::RawLog::Filter("info".into())
    }
    pub fn log_format() -> String {
        "text".into()
    }
    pub fn max_backlog() -> u64 {
        100_000
    }
    pub fn initial_stage() -> String {
        "subscriber".into()
    }
    pub fn max_request_bytes() -> u64 {
        8 * 1024 * 1024
    }
    pub fn batch_size() -> i64 {
        2000
    }
    pub fn max_connections() -> i64 {
        8
    }
    pub fn shards() -> i64 {
        32
    }
    pub fn lease_timeout() -> String {
        "10s".into()
    }
    pub fn poll_interval() -> String {
        "250ms".into()
    }
    pub fn memory() -> String {
        "256 MiB".into()
    }
    pub fn recent_activity() -> i64 {
        20
    }
    pub fn max_operations() -> i64 {
        200_000
    }
    pub fn max_call_depth() -> i64 {
        32
    }
    pub fn max_expr_depth() -> i64 {
        64
    }
    pub fn max_string_size() -> i64 {
        65_536
    }
    pub fn max_array_size() -> i64 {
        10_000
    }
    pub fn max_map_size() -> i64 {
        10_000
    }
    pub fn timeout() -> String {
        "200ms".into()
    }
    pub fn thresholds() -> BTreeMap<String, f64> {
        [("mql_fit", 30.0), ("mql_interest", 50.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
    pub fn stages() -> Vec<RawStage> {
        [
            ("subscriber", "marketing", false),
            ("lead", "marketing", false),
            ("mql", "marketing", false),
            ("sal", "sales", false),
            ("sql", "sales", false),
            ("opportunity", "sales", false),
            ("customer", "sales", true),
            ("closed_lost", "sales", true),
            ("disqualified", "marketing", true),
            ("recycled", "marketing", false),
        ]
        .into_iter()
        .map(|(name, side, closed)| RawStage {
            name: name.into(),
            side: side.into(),
            closed,
        })
        .collect()
    }
    pub fn schedules() -> Vec<RawSchedule> {
        vec![
            RawSchedule {
                name: "interest-decay".into(),
                cron: "0 3 * * *".into(),
                job: Some("decay".into()),
                half_life: Some("30d".into()),
                rule: None,
                function: None,
                stages: vec![],
                tags: vec![],
            },
            RawSchedule {
                name: "inactive-leads".into(),
                cron: "0 6 * * 1".into(),
                job: None,
                half_life: None,
                rule: Some("90-housekeeping.rhai".into()),
                function: Some("weekly_review".into()),
                stages: vec!["subscriber".into(), "lead".into(), "recycled".into()],
                tags: vec![],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_spells_out_the_defaults() {
        let shipped: RawConfig =
            toml::from_str(include_str!("../../nurtured.toml")).expect("nurtured.toml parses");
        assert_eq!(shipped, RawConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_position() {
        let err = toml::from_str::<RawConfig>("http_adr = \"x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `http_adr`"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert!(text.contains("http_addr"), "{text}");
    }
}
