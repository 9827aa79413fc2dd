//! The configuration file as written: a serde struct that refuses unknown keys, with
//! the defaults the daemon runs on when a key (or the whole file) is missing.
//!
//! The shipped `nurtured.toml` spells out exactly these defaults; a unit test keeps
//! the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The development API token shipped in `nurtured.toml`; the daemon warns while it is used.
pub const DEV_TOKEN: &str = "dev-token-change-me";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "d::data_dir")]
    pub data_dir: String,
    #[serde(default)]
    pub database_url: String,
    #[serde(default = "d::http_addr")]
    pub http_addr: String,
    #[serde(default = "d::api_token")]
    pub api_token: String,
    #[serde(default = "d::rules_dir")]
    pub rules_dir: String,
    #[serde(default = "d::time_zone")]
    pub time_zone: String,
    #[serde(default = "d::log")]
    pub log: String,
    #[serde(default = "d::initial_stage")]
    pub initial_stage: String,
    #[serde(default = "d::max_request_bytes")]
    pub max_request_bytes: u64,
    #[serde(default)]
    pub processing: RawProcessing,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default = "d::thresholds")]
    pub thresholds: BTreeMap<String, f64>,
    #[serde(default = "d::stages")]
    pub stages: Vec<RawStage>,
    #[serde(default = "d::schedules")]
    pub schedules: Vec<RawSchedule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcessing {
    #[serde(default = "d::batch_size")]
    pub batch_size: i64,
    #[serde(default = "d::poll_interval")]
    pub poll_interval: String,
    #[serde(default = "d::history_events")]
    pub history_events: i64,
    #[serde(default = "d::recent_activity")]
    pub recent_activity: i64,
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
            history_events: d::history_events(),
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

    use super::{RawSchedule, RawStage};

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
    pub fn log() -> String {
        "info".into()
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
    pub fn poll_interval() -> String {
        "250ms".into()
    }
    pub fn history_events() -> i64 {
        1_000_000
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
