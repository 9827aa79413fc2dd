//! Configuration in two steps: the file as written ([`raw::RawConfig`], strict about
//! keys) plus `NURTURED_*` overrides, then a checked [`Config`] with parsed addresses,
//! durations, stages and schedules. A mistake stops start-up with the file (or the
//! variable), the key and what is allowed.

pub mod backtest;
pub mod bounces;
pub mod env;
pub mod http;
pub mod mail;
pub mod raw;
pub mod redact;
pub mod retention;
pub mod rules;
pub mod sales;
pub mod topics;
pub mod users;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono_tz::Tz;
use serde::Deserialize;

use crate::domain::{Funnel, Side, StageDef};
use crate::schedule::crontab;
pub use mail::{MailConfig, OnQuarantine, Reentry, Stream};
use raw::{RawConfig, RawSchedule};
pub use sales::SalesConfig;

/// The file read when `--config` is not given.
pub const DEFAULT_FILE: &str = "nurtured.toml";

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` when running on the embedded defaults.
    pub file: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `sqlite://` URL of the database.
    pub database_url: String,
    /// Connections a process keeps to PostgreSQL at most (`database.max_connections`).
    pub database_connections: u32,
    pub http_addr: SocketAddr,
    pub api_token: String,
    pub rules_dir: PathBuf,
    /// The rules folder as written in the config (`rules`): how rule files are named in
    /// messages and in the lead history.
    pub rules_shown: String,
    pub time_zone: Tz,
    pub log: String,
    /// How log lines are written (`log_format`).
    pub log_format: LogFormat,
    pub max_request_bytes: usize,
    pub funnel: Funnel,
    pub thresholds: BTreeMap<String, f64>,
    pub processing: Processing,
    pub cluster: Cluster,
    pub limits: Limits,
    pub schedules: Vec<Schedule>,
    pub mail: MailConfig,
    pub streams: Vec<Stream>,
    pub sales: SalesConfig,
    /// Bounces, complaints and the ESP webhooks (`[bounces]`).
    pub bounces: bounces::BouncesConfig,
    /// API keys and scopes, CORS, the link rate limit (`[http]`, `[[api_keys]]`).
    pub http: http::HttpConfig,
    pub topics: topics::Topics,
    /// `[retention]`: raw events, mail bodies, anonymous profiles.
    pub retention: retention::Retention,
    /// `[rules] shadow`: rule files (names in the rules folder) that run in shadow.
    pub rules_shadow: Vec<String>,
    /// `[backtest]`: outcome stages and the MQL stage of `nurtured backtest`.
    pub backtest: backtest::Backtest,
    /// `[metrics] addr`: a listener of its own for `/metrics`, without a key.
    pub metrics_addr: Option<SocketAddr>,
    /// `[ui]` and `[[users]]`: the console.
    pub ui: users::UiConfig,
    /// `[health] max_backlog`: `/readyz` fails while more events wait.
    pub max_backlog: u64,
}

/// `log_format`: how each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO nurtured::daemon: message key=value`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields.message`, ...
    Json,
}

#[derive(Debug, Clone)]
pub struct Processing {
    pub batch_size: usize,
    /// What the caches may take in all (leads, histories, SQLite pages), in bytes.
    pub memory: Memory,
    pub poll_interval: Duration,
    pub recent_activity: usize,
}

/// Several daemons on one PostgreSQL database (see `crate::cluster`).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// This daemon's name among the others; empty: `pid@host`.
    pub name: String,
    /// Leads are split into this many shards (lead id modulo shards).
    pub shards: u32,
    /// A daemon that stopped renewing its shards for this long loses them.
    pub lease_timeout: Duration,
}

/// The memory budget of `processing.memory` and how it is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory(pub u64);

impl Memory {
    /// The smallest budget accepted.
    pub const MIN: u64 = 32 << 20;

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Leads and their event histories (the lead cache): half.
    pub fn lead_cache(self) -> usize {
        (self.0 / 2) as usize
    }

    /// SQLite's page caches: an eighth of the budget for the connection that writes
    /// (it touches the indexes of every table written) and 2 MiB for each of the
    /// [`crate::store::READERS`] reading connections: in WAL mode a reader starts
    /// every read after a commit with an empty cache, so a bigger one holds nothing
    /// for long.
    pub fn page_cache(self) -> crate::store::PageCache {
        let kib = self.0 / 1024;
        crate::store::PageCache {
            writer_kib: (kib / 8).max(1024),
            reader_kib: 2048,
        }
    }
}

/// Sandbox limits for one rule call.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_depth: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron_line: String,
    pub cron: cron::Schedule,
    pub job: Job,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Interest fades: halves every `half_life`.
    Decay { half_life: Duration },
    /// Calls `function(lead)` in a rule file for every lead in `stages` carrying all `tags`.
    Rule {
        file: String,
        function: String,
        stages: Vec<String>,
        tags: Vec<String>,
    },
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error(transparent)]
    Env(#[from] env::EnvError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One wrong value: where it was set, the key, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: `{key}`: {message}")]
pub struct Problem {
    pub origin: String,
    pub key: String,
    pub message: String,
}

impl Config {
    /// Loads `path`, or `nurtured.toml` in the working folder, or the embedded defaults
    /// when neither exists; then applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (file, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                (Some(p.to_path_buf()), text)
            }
            None if Path::new(DEFAULT_FILE).exists() => {
                let p = PathBuf::from(DEFAULT_FILE);
                let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                (Some(p), text)
            }
            None => (None, String::new()),
        };
        let shown = file
            .as_ref()
            .map_or("embedded defaults".to_string(), |p| p.display().to_string());
        // First pass on the file alone, so errors carry its line and column.
        toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Syntax {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
        let defaults = toml::Table::try_from(RawConfig::default()).expect("defaults serialise");
        let overrides = env::apply(&mut table, &defaults, vars)?;
        let raw = RawConfig::deserialize(table).map_err(|e| ConfigError::Syntax {
            path: format!(
                "{shown} with {}",
                overrides
                    .iter()
                    .map(|o| o.var.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            message: e.to_string(),
        })?;
        let base = file
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let origin = |key: &str| {
            overrides
                .iter()
                .find(|o| o.key == key)
                .map(|o| format!("environment variable {}", o.var))
                .unwrap_or_else(|| shown.clone())
        };
        validate(raw, file, &base, &origin)
    }

    /// True while the shipped development token is in use.
    pub fn uses_dev_token(&self) -> bool {
        self.api_token == raw::DEV_TOKEN
    }

    /// True while the shipped development secret signs mail links.
    pub fn uses_dev_secret(&self) -> bool {
        self.mail.secret == raw::DEV_SECRET
    }

    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.name == name)
    }
}

fn validate(
    mut raw: RawConfig,
    file: Option<PathBuf>,
    base: &Path,
    origin: &dyn Fn(&str) -> String,
) -> Result<Config, ConfigError> {
    let problems = std::cell::RefCell::new(Vec::new());
    let bad = |key: &str, message: String| {
        problems.borrow_mut().push(Problem {
            origin: origin(key.split('[').next().unwrap_or(key)),
            key: key.to_string(),
            message,
        })
    };
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let data_dir = resolve(&raw.data_dir);
    // `[database] url` is another spelling of `database_url`.
    let mut url_key = "database_url";
    if !raw.database.url.is_empty() {
        if !raw.database_url.is_empty() && raw.database_url != raw.database.url {
            bad(
                "database.url",
                "database_url names another database: set only one of the two".into(),
            );
        }
        raw.database_url = raw.database.url.clone();
        url_key = "database.url";
    }
    let database_url = if raw.database_url.is_empty() {
        format!("sqlite://{}", data_dir.join("nurtured.db").display())
    } else if let Some(path) = raw.database_url.strip_prefix("sqlite://") {
        format!("sqlite://{}", resolve(path).display())
    } else if crate::store::is_postgres_url(&raw.database_url) {
        raw.database_url.clone()
    } else {
        bad(
            url_key,
            format!(
                "`{}` is not supported: use sqlite://PATH, postgres://USER:PASSWORD@HOST/DATABASE, or leave it empty for {}/nurtured.db",
                redact::url(&raw.database_url),
                raw.data_dir
            ),
        );
        String::new()
    };
    let http_addr = raw.http_addr.parse().unwrap_or_else(|_| {
        bad(
            "http_addr",
            format!(
                "`{}` is not an address: write IP:PORT, e.g. 127.0.0.1:8080",
                raw.http_addr
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    if raw.api_token.trim().len() < 8 {
        bad(
            "api_token",
            "must be at least 8 characters; pick a long random string".into(),
        );
    }
    let time_zone = raw.time_zone.parse::<Tz>().unwrap_or_else(|_| {
        bad(
            "time_zone",
            format!(
                "`{}` is not an IANA time zone name such as Europe/Berlin",
                raw.time_zone
            ),
        );
        Tz::UTC
    });
    let log_key = match raw.log {
        raw::RawLog::Filter(_) => "log",
        raw::RawLog::Table(_) => "log.level",
    };
    if tracing_subscriber::EnvFilter::try_new(raw.log.filter()).is_err() {
        bad(
            log_key,
            format!(
                "`{}` is not a log filter: use error, warn, info, debug or trace",
                raw.log.filter()
            ),
        );
    }
    // `[log] format` wins over `log_format`, unless `log_format` says otherwise than its
    // default: then the two disagree.
    let (format_key, format_text) = match raw.log.format() {
        Some(f) => {
            if raw.log_format != "text" && raw.log_format != f {
                bad(
                    "log.format",
                    format!(
                        "says `{f}` while `log_format` says `{}`: keep only one of them",
                        raw.log_format
                    ),
                );
            }
            ("log.format", f)
        }
        None => ("log_format", raw.log_format.as_str()),
    };
    let log_format = match format_text {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            bad(
                format_key,
                format!("`{other}` is not a log format: use \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let metrics_addr = match raw.metrics.addr.trim() {
        "" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                bad(
                    "metrics.addr",
                    format!(
                        "`{text}` is not an address: write IP:PORT, e.g. 127.0.0.1:9464, or \"\" \
                         for no listener of its own"
                    ),
                );
                None
            }
        },
    };
    if raw.health.max_backlog == 0 {
        bad(
            "health.max_backlog",
            "must be at least 1: the number of waiting events above which /readyz fails".into(),
        );
    }

    let mut stages = Vec::new();
    for (i, s) in raw.stages.iter().enumerate() {
        let side = match s.side.as_str() {
            "marketing" => Side::Marketing,
            "sales" => Side::Sales,
            other => {
                bad(
                    &format!("stages[{i}].side"),
                    format!("`{other}` is not a side: use \"marketing\" or \"sales\""),
                );
                Side::Marketing
            }
        };
        stages.push(StageDef {
            name: s.name.clone(),
            side,
            closed: s.closed,
        });
    }
    let funnel = match Funnel::new(stages, &raw.initial_stage) {
        Ok(f) => Some(f),
        Err(e) => {
            bad("stages", e.to_string());
            None
        }
    };

    let positive = |key: &str, v: i64| -> u64 {
        if v <= 0 {
            bad(key, format!("must be a whole number above 0, not {v}"));
            1
        } else {
            v as u64
        }
    };
    let batch_size = positive("processing.batch_size", raw.processing.batch_size) as usize;
    if batch_size > 10_000 {
        bad(
            "processing.batch_size",
            format!("{batch_size} is too large: at most 10000 events per batch"),
        );
    }
    if raw.processing.history_events.is_some() {
        bad(
            "processing.history_events",
            "is no longer used: processing.memory (e.g. \"256 MiB\") bounds every cache \
             together, histories included; remove the key"
                .to_string(),
        );
    }
    let memory = match raw.processing.memory.trim().parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() >= Memory::MIN => Memory(size.as_u64()),
        Ok(size) => {
            bad(
                "processing.memory",
                format!("{size} is too little: at least 32 MiB"),
            );
            Memory(Memory::MIN)
        }
        Err(_) => {
            bad(
                "processing.memory",
                format!(
                    "`{}` is not a size: write it like \"256 MiB\", \"1 GiB\" or \"512MB\"",
                    raw.processing.memory
                ),
            );
            Memory(Memory::MIN)
        }
    };
    let recent_activity =
        positive("processing.recent_activity", raw.processing.recent_activity) as usize;
    let max_operations = positive("limits.max_operations", raw.limits.max_operations);
    let max_call_depth = positive("limits.max_call_depth", raw.limits.max_call_depth) as usize;
    let max_expr_depth = positive("limits.max_expr_depth", raw.limits.max_expr_depth) as usize;
    let max_string_size = positive("limits.max_string_size", raw.limits.max_string_size) as usize;
    let max_array_size = positive("limits.max_array_size", raw.limits.max_array_size) as usize;
    let max_map_size = positive("limits.max_map_size", raw.limits.max_map_size) as usize;
    let duration = |key: &str, text: &str| {
        humantime::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| {
                bad(
                    key,
                    format!("`{text}` is not a duration: write e.g. 250ms, 30s, 15m, 4h, 30d"),
                );
                Duration::from_secs(1)
            })
    };
    let poll_interval = duration("processing.poll_interval", &raw.processing.poll_interval);
    let timeout = duration("limits.timeout", &raw.limits.timeout);
    let database_connections = raw.database.max_connections;
    if !(2..=1000).contains(&database_connections) {
        bad(
            "database.max_connections",
            format!(
                "{database_connections} is out of range: from 2 (one to write, one to read) \
                 to 1000; the default 8 suits most bases (docs/operations.md#connections)"
            ),
        );
    }
    let lease_timeout = duration("cluster.lease_timeout", &raw.cluster.lease_timeout);
    if lease_timeout < Duration::from_secs(1) {
        bad(
            "cluster.lease_timeout",
            "must be at least 1s: heartbeats go every quarter of it".into(),
        );
    }
    let shards = positive("cluster.shards", raw.cluster.shards);
    if shards > 4096 {
        bad(
            "cluster.shards",
            format!("{shards} is too many: at most 4096 (the default 32 serves 32 daemons)"),
        );
    }
    if raw.cluster.name.chars().any(|c| c.is_control()) || raw.cluster.name.len() > 200 {
        bad(
            "cluster.name",
            "must be a short name without control characters (e.g. the host name)".into(),
        );
    }

    for (name, value) in &raw.thresholds {
        if !value.is_finite() {
            bad(&format!("thresholds.{name}"), "must be a number".into());
        }
    }

    let mut schedules = Vec::new();
    for (i, s) in raw.schedules.iter().enumerate() {
        let key = format!("schedules[{i}]");
        if raw.schedules[..i].iter().any(|o| o.name == s.name) {
            bad(
                &format!("{key}.name"),
                format!("`{}` is used twice", s.name),
            );
        }
        let cron = match crontab::parse(&s.cron) {
            Ok(c) => Some(c),
            Err(e) => {
                bad(&format!("{key}.cron"), e.to_string());
                None
            }
        };
        let job = schedule_job(s, funnel.as_ref(), &key, &bad, &duration);
        if let (Some(cron), Some(job)) = (cron, job) {
            schedules.push(Schedule {
                name: s.name.clone(),
                cron_line: s.cron.clone(),
                cron,
                job,
            });
        }
    }

    let checker = mail::Checker {
        bad: &bad,
        duration: &duration,
        resolve: &resolve,
    };
    let mail = mail::mail(&raw.mail, &data_dir, funnel.as_ref(), &checker);
    let mut streams = mail::streams(&raw.streams, funnel.as_ref(), &checker);
    let topics = topics::topics(&raw.topics, &mut streams, &checker);
    let sales = sales::sales(&raw.sales, funnel.as_ref(), time_zone, &checker);
    let bounces = bounces::bounces(&raw.bounces, &checker);
    let http = http::http(&raw.http, &raw.api_token, &raw.api_keys, &checker);
    let retention = retention::retention(&raw.retention, &bad);
    let rules_shadow = rules::shadow(&raw.rules, &bad);
    let backtest = backtest::backtest(&raw.backtest, funnel.as_ref(), &bad);
    let owners: Vec<(String, String)> = sales
        .owners
        .iter()
        .map(|o| (o.id.clone(), o.email.email.to_string()))
        .collect();
    let ui = users::ui(&raw.ui, &raw.users, &owners, &checker);

    let max_request_bytes = raw.max_request_bytes.max(1024) as usize;
    let problems = problems.into_inner();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Config {
        file,
        data_dir,
        database_url,
        database_connections: database_connections.clamp(2, 1000) as u32,
        http_addr,
        api_token: raw.api_token,
        rules_dir: resolve(&raw.rules_dir),
        rules_shown: raw.rules_dir.clone(),
        time_zone,
        log: raw.log.filter().to_string(),
        log_format,
        max_request_bytes,
        funnel: funnel.expect("checked above"),
        thresholds: raw.thresholds,
        processing: Processing {
            batch_size,
            memory,
            poll_interval,
            recent_activity,
        },
        cluster: Cluster {
            name: raw.cluster.name.trim().to_string(),
            shards: shards as u32,
            lease_timeout,
        },
        limits: Limits {
            max_operations,
            max_call_depth,
            max_expr_depth,
            max_string_size,
            max_array_size,
            max_map_size,
            timeout,
        },
        schedules,
        mail: mail.expect("checked above"),
        streams,
        sales,
        bounces,
        http,
        topics,
        retention,
        rules_shadow,
        backtest,
        metrics_addr,
        ui,
        max_backlog: raw.health.max_backlog,
    })
}

/// Reports every name in `stages` that is not a stage of `funnel`, as `key[i]`.
pub(crate) fn check_stages(
    funnel: Option<&Funnel>,
    stages: &[String],
    key: &str,
    bad: &dyn Fn(&str, String),
) {
    let Some(f) = funnel else { return };
    for (i, stage) in stages.iter().enumerate() {
        if f.stage(stage).is_none() {
            bad(
                &format!("{key}[{i}]"),
                format!(
                    "unknown stage `{stage}`; the stages are: {}",
                    f.names_joined()
                ),
            );
        }
    }
}

fn schedule_job(
    s: &RawSchedule,
    funnel: Option<&Funnel>,
    key: &str,
    bad: &dyn Fn(&str, String),
    duration: &dyn Fn(&str, &str) -> Duration,
) -> Option<Job> {
    match (&s.job, &s.rule, &s.function) {
        (Some(job), None, None) if job == "decay" => {
            let Some(half_life) = &s.half_life else {
                bad(
                    &format!("{key}.half_life"),
                    "the decay job needs half_life, e.g. \"30d\"".into(),
                );
                return None;
            };
            Some(Job::Decay {
                half_life: duration(&format!("{key}.half_life"), half_life),
            })
        }
        (Some(job), None, None) => {
            bad(
                &format!("{key}.job"),
                format!("`{job}` is not a built-in job; the built-in job is \"decay\""),
            );
            None
        }
        (None, Some(file), Some(function)) => {
            check_stages(funnel, &s.stages, &format!("{key}.stages"), bad);
            Some(Job::Rule {
                file: file.clone(),
                function: function.clone(),
                stages: s.stages.clone(),
                tags: s.tags.clone(),
            })
        }
        _ => {
            bad(
                key,
                "give either job = \"decay\" (with half_life) or rule = \"FILE.rhai\" with \
                 function = \"NAME\""
                    .into(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(
            Some(&path),
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_load_and_paths_are_relative_to_the_file() {
        let c = load("", &[]).unwrap();
        assert!(c.uses_dev_token());
        assert_eq!(c.funnel.initial(), "subscriber");
        assert_eq!(c.schedules.len(), 2);
        assert!(
            c.database_url.ends_with("/data/nurtured.db"),
            "{}",
            c.database_url
        );
        assert!(c.rules_dir.is_absolute() || c.rules_dir.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn the_database_url_can_be_given_as_a_table_key_but_not_twice_apart() {
        let url = "postgres://n:secret@db.internal/nurtured";
        let c = load("", &[("NURTURED_DATABASE__URL", url)]).unwrap();
        assert_eq!(c.database_url, url);
        let c = load(&format!("[database]\nurl = \"{url}\"\n"), &[]).unwrap();
        assert_eq!(c.database_url, url);
        let err = load(
            &format!("database_url = \"sqlite://x.db\"\n[database]\nurl = \"{url}\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`database.url`"), "{err}");
        assert!(err.contains("only one"), "{err}");
    }

    #[test]
    fn log_format_metrics_addr_and_max_backlog_are_checked() {
        let c = load("log = \"debug\"\n", &[]).unwrap();
        assert_eq!((c.log.as_str(), c.log_format), ("debug", LogFormat::Text));
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.max_backlog, 100_000);
        let c = load(
            "log_format = \"json\"\n[metrics]\naddr = \"127.0.0.1:9464\"\n[health]\nmax_backlog = 5\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.metrics_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert_eq!(c.max_backlog, 5);
        let c = load("", &[("NURTURED_LOG_FORMAT", "json")]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        // The table spelling: `log.format = "json"`, `[log] level = ...`.
        let c = load("log.format = \"json\"\n", &[]).unwrap();
        assert_eq!((c.log.as_str(), c.log_format), ("info", LogFormat::Json));
        let c = load("[log]\nlevel = \"debug\"\nformat = \"text\"\n", &[]).unwrap();
        assert_eq!((c.log.as_str(), c.log_format), ("debug", LogFormat::Text));
        let err = load("[log]\nformt = \"json\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("formt") && err.contains("format"), "{err}");
        let err = load("log_format = \"json\"\nlog.format = \"text\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep only one"), "{err}");
        let err = load("log.format = \"xml\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("`log.format`"), "{err}");
        let err = load(
            "log_format = \"yaml\"\n[metrics]\naddr = \"9464\"\n[health]\nmax_backlog = 0\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`log_format`") && err.contains("\"json\""),
            "{err}"
        );
        assert!(
            err.contains("`metrics.addr`") && err.contains("IP:PORT"),
            "{err}"
        );
        assert!(err.contains("`health.max_backlog`"), "{err}");
    }

    #[test]
    fn the_pool_size_is_checked() {
        assert_eq!(load("", &[]).unwrap().database_connections, 8);
        let c = load("[database]\nmax_connections = 20\n", &[]).unwrap();
        assert_eq!(c.database_connections, 20);
        let err = load("[database]\nmax_connections = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`database.max_connections`"), "{err}");
    }

    #[test]
    fn env_overrides_win() {
        let c = load(
            "api_token = \"file-token-123\"",
            &[("NURTURED_API_TOKEN", "env-token-456")],
        )
        .unwrap();
        assert_eq!(c.api_token, "env-token-456");
    }

    #[test]
    fn wrong_values_name_file_key_and_what_is_allowed() {
        let err = load(
            "time_zone = \"Berlin\"\n[[stages]]\nname = \"lead\"\nside = \"crm\"\n",
            &[("NURTURED_HTTP_ADDR", "nowhere")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("n.toml: `time_zone`"), "{err}");
        assert!(err.contains("IANA"), "{err}");
        assert!(err.contains("`stages[0].side`"), "{err}");
        assert!(
            err.contains("environment variable NURTURED_HTTP_ADDR: `http_addr`"),
            "{err}"
        );
    }

    #[test]
    fn bad_schedules_are_explained() {
        let err = load(
            "[[schedules]]\nname = \"x\"\ncron = \"every day\"\njob = \"decay\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("schedules[0].cron"), "{err}");
        assert!(err.contains("schedules[0].half_life"), "{err}");
    }

    #[test]
    fn sales_mistakes_are_explained() {
        let err = load(
            "[sales]\naccept_stage = \"sall\"\non_stage = { mql = \"outbound\" }\n\
             [[sales.owners]]\nid = \"anna\"\nname = \"Anna\"\nemail = \"not-an-address\"\n\
             time_zone = \"Berlin\"\n\
             [[sales.teams]]\nname = \"inbound\"\nowners = [\"anna\", \"carl\"]\n\
             assign = \"by-territory\"\nreaction = \"soon\"\ncalendar = \"office\"\n\
             holidays = [\"25.12.2026\"]\n\
             escalation = [{ at = \"half\", do = \"notify\" }, { at = \"100%\", do = \"escalate\" }]\n\
             webhook = { url = \"ftp://x\", secret = \"short\", format = \"xml\" }\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "`sales.accept_stage`: unknown stage `sall`",
            "`sales.on_stage.mql`: no team `outbound`; the teams are: inbound",
            "`sales.owners[0].email`: `not-an-address` is not an e-mail address",
            "`sales.teams[0].owners[1]`: no owner `carl`; the owners are: anna",
            "`sales.teams[0].assign`: `by-territory` is not an assignment",
            "`sales.teams[0].reaction`: `soon` is not a duration",
            "`sales.teams[0].calendar`: `office` is not a calendar",
            "`sales.teams[0].holidays[0]`: `25.12.2026` is not a date",
            "`sales.teams[0].escalation[0].at`: `half` is not a point in time",
            "`sales.teams[0].escalation[0].do`: `notify` is not a step",
            "`sales.teams[0].escalation[1].do`: escalate needs the team's escalate_to address",
            "`sales.teams[0].webhook.url`: `ftp://x` is not an http(s) URL",
            "`sales.teams[0].webhook.format`: `xml` is not a format",
        ] {
            assert!(err.contains(needle), "{needle} in:\n{err}");
        }
    }

    #[test]
    fn mail_and_stream_mistakes_are_explained() {
        let err = load(
            "[mail]\nurl = \"imap://x\"\nsecret = \"short\"\nquarantine = [\"sqll\"]\n\
             [mail.send_window]\ndays = \"mon-fry\"\nhours = \"17:00-09:00\"\n\
             [[streams]]\nname = \"s\"\nstages = [\"leed\"]\nreentry = \"sometimes\"\n\
             steps = [{ after = \"soon\", template = \"t\" }]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "`mail.url`: `imap://x` is not a mail URL",
            "`mail.secret`: must be at least 32 characters",
            "`mail.quarantine[0]`: unknown stage `sqll`",
            "`mail.send_window.days`",
            "`mail.send_window.hours`",
            "`streams[0].stages[0]`: unknown stage `leed`",
            "`streams[0].reentry`",
            "`streams[0].steps[0].after`",
        ] {
            assert!(err.contains(needle), "{needle} in:\n{err}");
        }
        let err = load("[mail]\nfrom = \"x\"\nurl = \"smtp://h\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mail.from`"), "{err}");
        let err = load("[mail]\ntransport = \"smtp\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `transport`"), "{err}");
    }

    #[test]
    fn a_wrong_value_from_the_environment_names_the_variable() {
        let err = load("", &[("NURTURED_MAIL__SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable NURTURED_MAIL__SECRET: `mail.secret`"),
            "{err}"
        );
    }
}
