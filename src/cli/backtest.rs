//! `nurtured backtest`: the stored history replayed through the live rules and a
//! candidate folder; a report on stdout (text or `--json`), `--html`, `--per-lead`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::backtest::{self, BacktestError, Options};
use crate::config::Config;

/// The options of `nurtured backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// The candidate rules folder [default: the live rules]
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Count only what happened from this date or time on (RFC 3339, e.g. 2026-11-01)
    #[arg(long, value_name = "DATE", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Stop the replay at this date or time (a date means its end)
    #[arg(long, value_name = "DATE", value_parser = parse_until)]
    pub until: Option<DateTime<Utc>>,
    /// A stage that counts as converted (repeat for several) [default: backtest.outcomes]
    #[arg(long = "outcome", value_name = "STAGE")]
    pub outcomes: Vec<String>,
    /// Outcomes from a CSV with the columns email and converted (1/0)
    #[arg(long, value_name = "FILE.csv")]
    pub labels: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Write the report as one HTML page
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write one JSON line per lead: both end states and outcomes
    #[arg(long, value_name = "FILE.jsonl")]
    pub per_lead: Option<PathBuf>,
}

fn parse_date_or_time(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) => {
            let t = if end_of_day {
                d.and_hms_milli_opt(23, 59, 59, 999)
            } else {
                d.and_hms_opt(0, 0, 0)
            };
            Ok(t.expect("valid time of day").and_utc())
        }
        Err(_) => Err(format!(
            "`{text}` is not a date or time: write e.g. 2026-11-01 or 2026-11-01T08:00:00Z"
        )),
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_date_or_time(text, false)
}

fn parse_until(text: &str) -> Result<DateTime<Utc>, String> {
    parse_date_or_time(text, true)
}

pub async fn backtest(config: Config, args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let progress = std::io::stderr().is_terminal();
    let options = Options {
        rules: args.rules,
        since: args.since,
        until: args.until,
        outcomes: args.outcomes,
        labels: args.labels,
        progress,
    };
    let done = match backtest::run(Arc::new(config), &options).await {
        Ok(d) => d,
        Err(BacktestError::Rules(errors)) => {
            eprintln!("error: the rules do not compile; fix these, then run the backtest again:");
            for e in errors {
                eprintln!("{e}");
            }
            return Ok(super::exit::Exit::Usage.into());
        }
        Err(e @ (BacktestError::Usage(_) | BacktestError::Labels(_))) => {
            eprintln!("error: {e}");
            return Ok(super::exit::Exit::Usage.into());
        }
        Err(e) => return Err(e.into()),
    };
    let json = serde_json::to_value(&done.report)?;
    if let Some(path) = &args.html {
        std::fs::write(path, backtest::html::render(&json))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.per_lead {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for line in &done.per_lead {
            serde_json::to_writer(&mut out, line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", done.report.text());
    }
    Ok(ExitCode::SUCCESS)
}
