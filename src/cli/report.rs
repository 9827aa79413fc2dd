//! `nurtured report funnel` and `nurtured report sla`: the reports of
//! `GET /v1/reports/*`, read from the database (no daemon needed).

use std::process::ExitCode;

use clap::Subcommand;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::report::{FunnelReport, Period, SlaReport};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Leads per stage, stage moves, conversion, time in stage and new leads per
    /// channel over a period
    Funnel {
        #[command(flatten)]
        period: PeriodArgs,
        /// Print JSON (as GET /v1/reports/funnel) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Sales handoffs created in a period: states, time to accept, per owner, and the
    /// handoffs waiting now with their deadlines
    Sla {
        #[command(flatten)]
        period: PeriodArgs,
        /// Print JSON (as GET /v1/reports/sla) instead of text
        #[arg(long)]
        json: bool,
    },
}

/// The period of a report: the last N days, or from a day, up to now.
#[derive(Debug, clap::Args)]
pub struct PeriodArgs {
    /// The last N days up to now [default: 30]
    #[arg(long, value_name = "N", conflicts_with = "since")]
    pub days: Option<String>,
    /// From this day (YYYY-MM-DD, midnight in the configured time_zone) up to now
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
}

pub async fn report(
    config: Config,
    clock: SharedClock,
    command: ReportCommand,
) -> anyhow::Result<ExitCode> {
    let (args, json) = match &command {
        ReportCommand::Funnel { period, json } | ReportCommand::Sla { period, json } => {
            (period, *json)
        }
    };
    let period = match Period::parse(
        args.days.as_deref(),
        args.since.as_deref(),
        clock.now(),
        config.time_zone,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(super::exit::Exit::Usage.into());
        }
    };
    let store = Store::open(&config.database_url).await?;
    let out = match command {
        ReportCommand::Funnel { .. } => {
            let r = FunnelReport::load(&store, &config.funnel, period).await?;
            if json {
                serde_json::to_string_pretty(&r)?
            } else {
                r.to_text()
            }
        }
        ReportCommand::Sla { .. } => {
            let r = SlaReport::load(&store, period).await?;
            if json {
                serde_json::to_string_pretty(&r)?
            } else {
                r.to_text()
            }
        }
    };
    store.close().await;
    println!("{}", out.trim_end());
    Ok(ExitCode::SUCCESS)
}
