//! `nurtured bench`: what the daemon costs, measured from outside. Each run starts the
//! daemon as a child process (`nurtured run` on a fresh SQLite file, [`daemon`]) and
//! drives it over HTTP from this process, so the memory reported is the daemon's own.
//!
//! Modes, one file each: the event run ([`load`], the default), a burst of leads
//! turning MQL at once ([`burst`], `--burst`), single-event intake driven by wrk
//! ([`single`], `--single`), and mail ([`mail`], `--mails`). [`client`] talks to the
//! API, [`report`] prints the machine, the figures and the medians of `--runs`.

mod burst;
mod client;
mod daemon;
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
        "nurtured bench: {what}; {} run(s), the daemon in a child process",
        args.runs
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
                "a fresh PostgreSQL database per run on {}",
                server.split('@').next_back().unwrap_or_default()
            ),
            None => "a fresh SQLite file per run".into(),
        }
    );

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
    let mut runs: Vec<Figures> = Vec::new();
    for i in 1..=args.runs {
        println!();
        println!("run {i} of {}", args.runs);
        let figures = match &mode {
            Mode::Load(bodies) => {
                load::run(&config, &args, leads, connections, bodies.clone()).await?
            }
            Mode::Burst(sink) => burst::run(&config, &args, connections, sink).await?,
            Mode::Single => single::run(&config, &args, leads, connections).await?,
            Mode::Mails(sink) => mail::run(&config, &args, sink).await?,
        };
        runs.push(figures);
    }
    report::print_summary(&runs);
    Ok(ExitCode::SUCCESS)
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
