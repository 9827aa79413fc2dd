//! `nurtured bench`: what the daemon costs, measured from outside. Each run starts the
//! daemon as a child process (`nurtured run` on a fresh SQLite file, [`daemon`]) and
//! drives it over HTTP from this process, so the memory reported is the daemon's own.
//!
//! Modes, one file each: the event run ([`load`], the default), a burst of leads
//! turning MQL at once ([`burst`], `--burst`), single-event intake driven by wrk
//! ([`single`], `--single`), and mail ([`mail`], `--mails`). [`client`] talks to the
//! API, [`report`] prints the machine, the figures and the medians of `--runs`.
//!
//! The event run can also start several daemons on one PostgreSQL database
//! (`--daemons N`, [`fleet`]), and compare setups in one invocation: each of
//! `--daemons 1,2,3` and, with `--sqlite-too`, one daemon on SQLite, run by turns
//! (1, 2, 3, 1, 2, 3, ...) so that the machine's noise hits all alike.

mod burst;
mod client;
mod daemon;
mod fleet;
mod load;
mod mail;
mod report;
mod single;

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::Config;
use crate::smtp_sink::SmtpSink;
use report::Figures;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Events to send in all (identify calls for each lead included)
    #[arg(long, default_value_t = 200_000)]
    pub events: usize,
    /// Distinct leads [default: 10000; 2000 with --single]
    #[arg(long)]
    pub leads: Option<usize>,
    /// Events per /v1/batch request
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent HTTP connections [default: 4; 50 with --single]
    #[arg(long)]
    pub connections: Option<usize>,
    /// Repeat the run this many times (a fresh daemon and database each) and print the
    /// medians
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Measure a burst instead: this many leads turning MQL at once, until every
    /// sales owner's notification is at the SMTP server
    #[arg(long, default_value_t = 0)]
    pub burst: usize,
    /// Measure single-event intake instead: wrk posts one event per request from
    /// --connections connections for --seconds
    #[arg(long)]
    pub single: bool,
    /// Measure mail instead: this many trigger mails as fast as they go, then the
    /// event-to-SMTP latency at --rate events/s for --seconds
    #[arg(long, default_value_t = 0)]
    pub mails: usize,
    /// Events per second in the mail latency run (each one triggers a mail)
    #[arg(long, default_value_t = 1000)]
    pub rate: usize,
    /// Length of the mail latency run and of the --single run
    #[arg(long, default_value_t = 10)]
    pub seconds: usize,
    /// Keep each run's folder (configuration, database, daemon log, mail) and print
    /// where it is
    #[arg(long)]
    pub keep: bool,
    /// Run each daemon on a fresh database of its own on this PostgreSQL server
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE, a user allowed to create
    /// databases) instead of a fresh SQLite file
    #[arg(long, value_name = "SERVER_URL")]
    pub postgres: Option<String>,
    /// Daemons in the event run: more than one needs --postgres and starts them as a
    /// cluster on one fresh database per run, the requests going round-robin to them.
    /// A list (1,2,3) runs each count --runs times by turns and compares the medians
    #[arg(
        long,
        value_name = "N[,N...]",
        value_delimiter = ',',
        default_value = "1"
    )]
    pub daemons: Vec<usize>,
    /// With --postgres: also run the event run with one daemon on a fresh SQLite file,
    /// by turns with the --daemons counts, and compare
    #[arg(long)]
    pub sqlite_too: bool,
}

/// What one event run starts: one daemon on a fresh SQLite file, or N daemons on one
/// fresh PostgreSQL database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setup {
    Sqlite,
    Postgres(usize),
}

impl Setup {
    /// The setup as a column of the comparison names it.
    fn label(self) -> String {
        match self {
            Setup::Sqlite => "SQLite".into(),
            Setup::Postgres(1) => "PG 1 daemon".into(),
            Setup::Postgres(n) => format!("PG {n} daemons"),
        }
    }
}

/// The setups the command line asks for, in the order they take turns.
fn setups(args: &BenchArgs, kind: Kind, shards: u32) -> anyhow::Result<Vec<Setup>> {
    let counts = &args.daemons;
    let one = counts.as_slice() == [1];
    if kind != Kind::Load {
        anyhow::ensure!(
            one && !args.sqlite_too,
            "--daemons and --sqlite-too are for the event run (the default); --burst, --single and --mails start one daemon"
        );
    }
    anyhow::ensure!(
        !counts.is_empty() && counts.iter().all(|n| *n >= 1),
        "--daemons must be at least 1"
    );
    let mut seen = counts.clone();
    seen.sort_unstable();
    seen.dedup();
    anyhow::ensure!(seen.len() == counts.len(), "--daemons lists a count twice");
    if args.postgres.is_none() {
        anyhow::ensure!(
            one,
            "--daemons with more than one daemon needs --postgres SERVER_URL: several daemons share one PostgreSQL database (on SQLite one daemon runs at a time)"
        );
        anyhow::ensure!(
            !args.sqlite_too,
            "--sqlite-too compares SQLite with --postgres: give --postgres SERVER_URL (without it every run is on SQLite)"
        );
        return Ok(vec![Setup::Sqlite]);
    }
    let most = seen.last().copied().unwrap_or(1);
    anyhow::ensure!(
        most <= shards as usize,
        "--daemons {most} is more than the {shards} shards of cluster.shards: each daemon needs one"
    );
    let sqlite = args.sqlite_too.then_some(Setup::Sqlite);
    Ok(sqlite
        .into_iter()
        .chain(counts.iter().map(|n| Setup::Postgres(*n)))
        .collect())
}

/// The header line that says how many daemons run.
fn daemons_line(setups: &[Setup]) -> String {
    let counts: Vec<String> = setups
        .iter()
        .filter_map(|s| match s {
            Setup::Sqlite => None,
            Setup::Postgres(n) => Some(n.to_string()),
        })
        .collect();
    let shared = "cluster members on one PostgreSQL database, the requests round-robin";
    match setups {
        [Setup::Sqlite] | [Setup::Postgres(1)] => "daemons: 1".into(),
        [Setup::Postgres(n)] => format!("daemons: {n} ({shared})"),
        _ if setups.contains(&Setup::Sqlite) => format!(
            "daemons: 1 on SQLite and {} on PostgreSQL, by turns ({shared})",
            counts.join(", ")
        ),
        _ => format!("daemons: {}, by turns ({shared})", counts.join(", ")),
    }
}

/// The measurement a command line asks for.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Load,
    Burst,
    Single,
    Mails,
}

/// A measurement with what it needs ready: the event run's request bodies, the SMTP
/// server of the burst and of the mail run.
enum Mode {
    Load(Arc<Vec<bytes::Bytes>>),
    Burst(SmtpSink),
    Single,
    Mails(SmtpSink),
}

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let keep = args.keep;
    let result = measure(config, args).await;
    // The runs' folders go only now (see [`daemon::clean_up`]), whatever happened.
    for folder in daemon::clean_up(keep) {
        println!("kept: {}", folder.display());
    }
    result
}

async fn measure(config: Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let kinds = [args.burst > 0, args.single, args.mails > 0];
    anyhow::ensure!(
        kinds.iter().filter(|m| **m).count() <= 1,
        "--burst, --single and --mails are separate measurements: give one at a time"
    );
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let kind = match kinds {
        [true, _, _] => Kind::Burst,
        [_, true, _] => Kind::Single,
        [_, _, true] => Kind::Mails,
        _ => Kind::Load,
    };
    let single = kind == Kind::Single;
    let leads = args.leads.unwrap_or(if single { 2_000 } else { 10_000 });
    let connections = args.connections.unwrap_or(if single { 50 } else { 4 });
    anyhow::ensure!(leads > 0, "--leads must be at least 1");
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let setups = setups(&args, kind, config.cluster.shards)?;
    let what = match kind {
        Kind::Load => format!("{} events for {leads} leads", args.events),
        Kind::Burst => format!("a burst of {} leads turning MQL", args.burst),
        Kind::Single => format!(
            "single-event intake, {connections} connections for {} s",
            args.seconds
        ),
        Kind::Mails => format!("{} mails", args.mails),
    };
    println!(
        "nurtured bench: {what}; {} run(s){}",
        args.runs,
        match setups.as_slice() {
            [Setup::Sqlite] | [Setup::Postgres(1)] => ", the daemon in a child process",
            [_] => ", the daemons in child processes",
            _ => " of each setup, by turns, the daemons in child processes",
        }
    );
    println!("machine: {}", report::machine());
    println!(
        "configuration: {}, rules from {}",
        config
            .file
            .as_ref()
            .map_or("embedded defaults".into(), |f| f.display().to_string()),
        config.rules_dir.display()
    );
    println!(
        "store: {}",
        match &args.postgres {
            Some(server) => format!(
                "a fresh PostgreSQL database per run on {}{}",
                server.split('@').next_back().unwrap_or_default(),
                if args.sqlite_too {
                    "; a fresh SQLite file per SQLite run"
                } else {
                    ""
                }
            ),
            None => "a fresh SQLite file per run".into(),
        }
    );
    println!("{}", daemons_line(&setups));

    // The SMTP server the daemon sends to, in this process.
    let sink = || SmtpSink::start_on(std::net::TcpListener::bind("127.0.0.1:0")?, false);
    let mode = match kind {
        Kind::Load => {
            anyhow::ensure!(args.events >= leads, "--events must be at least --leads");
            // Made before any clock starts, and kept in this process: not the daemon's
            // memory.
            Mode::Load(Arc::new(load::bodies(&args, leads)))
        }
        Kind::Burst => Mode::Burst(sink()?),
        Kind::Single => Mode::Single,
        Kind::Mails => Mode::Mails(sink()?),
    };
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); setups.len()];
    for i in 1..=args.runs {
        for (s, setup) in setups.iter().enumerate() {
            println!();
            match setups.len() {
                1 => println!("run {i} of {}", args.runs),
                _ => println!("run {i} of {}: {}", args.runs, setup.label()),
            }
            let figures = match &mode {
                Mode::Load(bodies) => {
                    load::run(&config, &args, *setup, leads, connections, bodies.clone()).await?
                }
                Mode::Burst(sink) => burst::run(&config, &args, connections, sink).await?,
                Mode::Single => single::run(&config, &args, leads, connections).await?,
                Mode::Mails(sink) => mail::run(&config, &args, sink).await?,
            };
            runs[s].push(figures);
        }
    }
    summarize(&setups, runs);
    Ok(ExitCode::SUCCESS)
}

/// The medians of each setup's runs, then, for several setups, their medians side by
/// side.
fn summarize(setups: &[Setup], runs: Vec<Vec<Figures>>) {
    if let [runs] = runs.as_slice() {
        report::print_summary(runs);
        return;
    }
    let named: Vec<(String, Vec<Figures>)> = setups.iter().map(|s| s.label()).zip(runs).collect();
    for (name, runs) in &named {
        report::print_runs(
            &format!("{name}: all {} runs and their medians", runs.len()),
            runs,
        );
    }
    report::print_comparison(&named);
}

/// A small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TITLES: [&str; 6] = [
    "Head of Marketing",
    "Marketing Manager",
    "CEO",
    "Werkstudent",
    "IT-Leiter",
    "Sales Director",
];
const TOPICS: [&str; 5] = ["crm", "automation", "scoring", "analytics", "email"];

/// The i-th generated event.
fn event(i: usize, leads: usize, rng: &mut Rng) -> Value {
    let lead = i % leads;
    let email = format!("lead{lead}@bench{}.example.com", lead % 97);
    let ts = chrono::Utc::now().to_rfc3339();
    if i < leads {
        return json!({
            "type": "identify", "userId": email, "messageId": format!("bench-{i}"), "timestamp": ts,
            "traits": {
                "email": email, "firstName": "Lea", "lastName": format!("Nummer{lead}"),
                "phone": if lead.is_multiple_of(3) { Value::Null } else { json!("+49 30 123456") },
                "company": format!("Firma {}", lead % 500), "employees": (lead % 7) * 90 + 5,
                "title": TITLES[lead % TITLES.len()], "industry": "Software",
                "consent_email": true
            }
        });
    }
    let base = json!({"userId": email, "messageId": format!("bench-{i}"), "timestamp": ts});
    let mut v = base;
    match rng.below(10) {
        0..=2 => {
            v["type"] = json!("track");
            v["event"] = json!("Content Downloaded");
            v["properties"] = json!({"asset": "Whitepaper", "topic": TOPICS[rng.below(TOPICS.len())], "type": "whitepaper"});
        }
        3 => {
            v["type"] = json!("track");
            v["event"] = json!(if rng.below(2) == 0 {
                "Webinar Registered"
            } else {
                "Webinar Attended"
            });
            v["properties"] = json!({"webinar": "Lead Scoring 101"});
        }
        4 => {
            v["type"] = json!("track");
            v["event"] = json!("Email Clicked");
            v["properties"] = json!({"campaign": "newsletter"});
        }
        _ => {
            let (name, url) = [
                ("Blog", "https://example.com/blog/lead-nurturing"),
                ("Pricing", "https://example.com/pricing"),
                ("Case Study", "https://example.com/case-studies/acme"),
                ("Landing", "https://example.com/lp/webinar"),
            ][rng.below(4)];
            v["type"] = json!("page");
            v["name"] = json!(name);
            v["properties"] = json!({"url": url});
        }
    }
    v
}
