//! `nurtured lead list`: the leads that pass the filters of `GET /v1/leads`, as text,
//! JSON or CSV, read straight from the database page by page (no daemon and no
//! compiled rules needed: it works while a rule file is broken).

use std::io::Write;
use std::process::ExitCode;

use crate::config::Config;
use crate::domain::text::printable;
use crate::report::lead_list::{self, LeadPage, ListQuery, ListedLead};
use crate::store::Store;

/// The filters and output of `lead list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only leads in this stage
    #[arg(long, value_name = "S")]
    pub stage: Option<String>,
    /// Only leads with this tag
    #[arg(long, value_name = "T")]
    pub tag: Option<String>,
    /// Only leads with at least this fit score
    #[arg(long, value_name = "N")]
    pub min_fit: Option<String>,
    /// Only leads with at least this interest score
    #[arg(long, value_name = "N")]
    pub min_interest: Option<String>,
    /// Only leads of this owner
    #[arg(long, value_name = "O")]
    pub owner: Option<String>,
    /// Only leads whose e-mail address, name or company contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub q: Option<String>,
    /// At most N leads [default: all that match]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print a JSON array
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV with a header
    #[arg(long)]
    pub csv: bool,
}

/// Leads read per query.
const PAGE: usize = lead_list::MAX_LIMIT;

enum Output {
    Text,
    Json { first: bool },
    Csv(Box<csv::Writer<std::io::StdoutLock<'static>>>),
}

pub async fn lead_list(config: Config, args: ListArgs) -> anyhow::Result<ExitCode> {
    let pairs = [
        ("stage", args.stage.as_deref()),
        ("tag", args.tag.as_deref()),
        ("min_fit", args.min_fit.as_deref()),
        ("min_interest", args.min_interest.as_deref()),
        ("owner", args.owner.as_deref()),
        ("q", args.q.as_deref()),
    ];
    let query = match ListQuery::parse(
        pairs
            .iter()
            .filter_map(|(name, value)| value.map(|v| (*name, v))),
        &config.funnel,
        None,
    ) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: --{}: {}", e.param.replace('_', "-"), e.message);
            return Ok(super::exit::Exit::Usage.into());
        }
    };
    if args.limit == Some(0) {
        eprintln!("error: --limit: give a number of 1 or more, or leave it out for all");
        return Ok(super::exit::Exit::Usage.into());
    }
    let store = Store::open(&config.database_url).await?;
    let mut out = if args.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        lead_list::write_csv_header(&mut w)?;
        Output::Csv(Box::new(w))
    } else if args.json {
        print!("[");
        Output::Json { first: true }
    } else {
        Output::Text
    };
    let mut left = args.limit;
    let mut after = query.after;
    let mut shown = 0usize;
    loop {
        let want = left.map_or(PAGE, |n| n.min(PAGE));
        let page = LeadPage::load(&store, &query.filter, after, want).await?;
        shown += page.leads.len();
        write_page(&mut out, &page.leads)?;
        if let Some(n) = left.as_mut() {
            *n -= page.leads.len();
        }
        match page.next_cursor {
            Some(next) if left != Some(0) => after = next.parse()?,
            _ => break,
        }
    }
    match out {
        Output::Csv(mut w) => w.flush()?,
        Output::Json { .. } => println!("]"),
        Output::Text if shown == 0 => eprintln!("no lead matches"),
        Output::Text => eprintln!("{shown} lead(s)"),
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

fn write_page(out: &mut Output, leads: &[ListedLead]) -> anyhow::Result<()> {
    match out {
        Output::Csv(w) => lead_list::write_csv_rows(w, leads)?,
        Output::Json { first } => {
            let mut stdout = std::io::stdout().lock();
            for lead in leads {
                let sep = if *first { "\n  " } else { ",\n  " };
                *first = false;
                write!(stdout, "{sep}{}", serde_json::to_string(lead)?)?;
            }
        }
        Output::Text => {
            let mut stdout = std::io::stdout().lock();
            for l in leads {
                let name = [l.first_name.as_deref(), l.last_name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                let line = format!(
                    "{:<36} {:<12} fit {:>5} interest {:>5}  {}{}{}{}",
                    l.email,
                    l.stage,
                    l.fit,
                    l.interest,
                    name,
                    l.company
                        .as_deref()
                        .map_or(String::new(), |c| format!(" ({c})")),
                    if l.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", l.tags.join(", "))
                    },
                    l.owner
                        .as_deref()
                        .map_or(String::new(), |o| format!(" owner {o}")),
                );
                writeln!(stdout, "{}", printable(&line))?;
            }
        }
    }
    Ok(())
}
