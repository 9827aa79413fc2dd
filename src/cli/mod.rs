//! The command line: `run`, `ingest`, `lead show`, `events failed|retry`,
//! `rules check|test`, `stats`, `report funnel|sla`, `store copy`, `bench`, `key new`,
//! `bounces ingest|list`, `lead export|erase`, `retention run`, `lead list`, `import`,
//! `events export`, `completions`, `man`. The exit codes are in [`exit`].

mod backtest;
mod bounces;
mod commands;
pub mod exit;
mod export;
mod import;
mod key;
mod lists;
mod log;
mod mail;
mod ops;
mod privacy;
mod progress;
mod report;
mod store;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

pub use report::{PeriodArgs, ReportCommand};

#[derive(Debug, Parser)]
#[command(
    name = "nurtured",
    version,
    about = "B2B lead management: events in, rules, funnel, explained"
)]
pub struct Args {
    /// Config file [default: ./nurtured.toml, else the embedded defaults]
    #[arg(long, global = true, env = "NURTURED_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: HTTP API, event processing, schedules, rule reload
    Run,
    /// Turn a CSV list of leads (a trade fair's, a CRM's) into identify events
    Import(import::ImportArgs),
    /// Store the events of a JSONL file (one Segment event per line, with "type")
    Ingest {
        file: PathBuf,
        /// Past events: rules, scores and stages, but no mail, streams or handoffs
        #[arg(long)]
        history: bool,
    },
    /// Look at leads
    Lead {
        #[command(subcommand)]
        command: LeadCommand,
    },
    /// Failed events: list them, or queue them again after fixing a rule
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Check and test the rules
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Check the mail templates: render each against a sample lead
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Look at the mail outbox: what was sent, deferred, suppressed or failed
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Print the counters (same as GET /v1/stats) as JSON
    Stats,
    /// Replay the stored history through the live rules and a candidate folder, in
    /// memory: stages, rule lines, mails, outcomes and the differences (sends nothing)
    Backtest(backtest::BacktestArgs),
    /// Reports over a period: the funnel, and the sales handoff's SLA
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The database as a whole: copy it to another one (SQLite to PostgreSQL, say)
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Measure end-to-end throughput over the HTTP API with the configured rules
    Bench(crate::bench::BenchArgs),
    /// Bounces and complaints: read delivery and feedback reports from files
    Bounces {
        #[command(subcommand)]
        command: BouncesCommand,
    },
    /// API keys: make a new one
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Console users: print a `[[users]]` entry with a password hash
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Delete old raw events and mail bodies as `[retention]` says
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Print a shell's completion script: bash, zsh, fish, elvish or powershell
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder
    Man {
        /// Write nurtured.1, nurtured-run.1, ... into DIR instead of printing
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Run the retention job once now (the daemon runs it daily)
    Run,
}

#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Act on the delivery reports, feedback reports and unsubscribe mails in .eml or
    /// mbox files (as POST /v1/bounces does)
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The bounce log, newest first: every report read and what was done
    List {
        /// Only reports about this address
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a fresh random key and its `[[api_keys]]` entry (with the key's hash)
    New {
        /// The key's name, recorded as `api:NAME` in what it changes
        name: String,
        /// What the key may do: ingest, read, write, admin (comma-separated)
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Ask for a password twice (or read two lines from standard input) and print the
    /// `[[users]]` entry with its argon2id hash
    Add {
        /// The sign-in name, recorded as `ui:NAME` with every change made in the console
        name: String,
        /// marketing, sales or admin
        #[arg(long)]
        role: String,
        /// The user's e-mail address (a sales user's names their [[sales.owners]] entry)
        #[arg(long)]
        email: Option<String>,
        /// Sales users: the [[sales.owners]] id, when the e-mail addresses differ
        #[arg(long)]
        owner: Option<String>,
        /// The console's language for this user: de or en (default: the browser's)
        #[arg(long)]
        language: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeadCommand {
    /// Leads that pass the filters (as GET /v1/leads), all of them unless --limit
    List(lists::ListArgs),
    /// A lead's stage, scores, tags, stage history and recent activity
    Show {
        email: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Everything stored about a person, as one JSON document
    Export {
        email: String,
        /// Write to FILE instead of stdout
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Erase a person: remove their data everywhere, keep anonymous counts
    Erase {
        email: String,
        /// Why (recorded with the erasure)
        #[arg(long, default_value = "not given")]
        reason: String,
        /// Who asks (recorded with the erasure)
        #[arg(long, default_value = "cli")]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List failed events with their rule errors
    Failed {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue failed events again (all, or the given sequence numbers)
    Retry { seqs: Vec<i64> },
    /// Write the stored events as Segment JSONL (which `nurtured ingest` reads)
    Export(export::ExportArgs),
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Render every template; print FILE:LINE:COLUMN: message for each problem, and name
    /// templates that streams or rules use but that do not exist
    Check,
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Recent mails, newest first
    List {
        /// Only mails in this state: queued, sending, sent, failed, suppressed
        #[arg(long)]
        status: Option<String>,
        /// Only mails to this lead
        #[arg(long)]
        lead: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One mail: its state, and the mail as sent
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue failed mails again (attempts reset; the mail's history says who retried)
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "failed"])))]
    Retry {
        /// The mails to queue again; each must be failed
        ids: Vec<i64>,
        /// Every failed mail (with --template, those of one template)
        #[arg(long, conflicts_with = "ids")]
        failed: bool,
        /// With --failed: only mails of this template, e.g. trigger/use-case
        #[arg(long, requires = "failed")]
        template: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a whole base (every lead, event, pending event and queued mail, with its ids)
    /// into a new, empty database; stop the daemon on the source first
    Copy {
        /// The base to copy: `sqlite://PATH`, a path, or `postgres://...`
        #[arg(long, value_name = "URL")]
        from: String,
        /// The new, empty database: `sqlite://PATH`, a path, or `postgres://...`
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile every rule file; print FILE:LINE:COLUMN: message for each error
    Check,
    /// Run the rule fixtures in DIR [default: <rules_dir>/tests]
    Test { dir: Option<PathBuf> },
    /// What the shadow rule files ([rules] shadow) would have done: counts per call
    /// site and action, recent examples with the lead, and errors
    Shadow {
        /// Only this file (`55-webinar-fan.rhai` or `rules/55-webinar-fan.rhai`)
        file: Option<String>,
        /// Recent examples shown per file
        #[arg(long, default_value_t = 20)]
        recent: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line; the exit code says how it went.
pub fn main(args: Args) -> ExitCode {
    // Generated from the command line alone: they need no configuration.
    match &args.command {
        Command::Completions { shell } => return ops::completions(*shell),
        Command::Man { out } => return ops::man(out.as_deref()),
        _ => {}
    }
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the configuration cannot be used:\n{e}");
            return exit::Exit::Usage.into();
        }
    };
    // Commands other than `run` log warnings only; fixtures that expect a rule to fail
    // would otherwise fill the screen with the worker's warnings.
    let level = match &args.command {
        Command::Run => None,
        // `store copy` draws progress bars, which warnings (slow statements) would tear.
        Command::Rules { .. } | Command::Templates { .. } | Command::Store { .. } => Some("error"),
        _ => Some("warn"),
    };
    init_tracing(&config.log, config.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Exit::Failed.into();
        }
    };
    let code = match runtime.block_on(commands::dispatch(args.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::of_error(&e).into()
        }
    };
    // Work still running after the daemon's bounded drain (a rule at its time limit, a
    // mail waiting for the server) is dropped: what it had not written stays pending
    // in the database and is done after the next start.
    runtime.shutdown_timeout(SHUTDOWN_LEFTOVERS);
    code
}

/// How long the runtime waits for tasks still running after a command finished.
const SHUTDOWN_LEFTOVERS: std::time::Duration = std::time::Duration::from_millis(300);

/// Logs to stderr, as text or JSON lines. `RUST_LOG` wins over the config's `log` and
/// over `level`.
fn init_tracing(filter: &str, format: LogFormat, level: Option<&str>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .unwrap_or_else(|| level.unwrap_or(filter).to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // When stderr is gone (a closed pipe), logging must not take the daemon down:
        // the subscriber would report the failed write with eprintln!, which panics.
        .log_internal_errors(false);
    let _ = match format {
        // One line per event, whatever a lead's data holds.
        LogFormat::Text => builder.fmt_fields(log::OneLineFields::default()).try_init(),
        // JSON escapes control characters itself: one object per line.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
