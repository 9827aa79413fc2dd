//! `nurtured import FILE.csv --map 'E-Mail=email,...' [--consent-source TEXT]
//! [--history]`: checks the whole file ([`crate::ingest::csv_import`]), lists the
//! refused rows with their CSV line and reason, and stores the good rows' identify
//! events in one transaction, then processes them unless a daemon does.
//!
//! Exit status: 0 when every row was taken; 3 when some rows were refused and the
//! others taken; 1 when the file or the map cannot be used (nothing stored).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::daemon::App;
use crate::ingest::csv_import::{self, Mapping, Options};
use crate::ingest::{self, AcceptError};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The CSV file (UTF-8, a header line; `,` or `;` between cells)
    pub file: PathBuf,
    /// Which column fills which lead field: 'E-Mail=email,Firma=company,Messe=attributes.fair'
    /// (fields: email, user_id, first_name, last_name, name, phone, company, title,
    /// industry, employees, revenue, country, time_zone, locale, owner)
    #[arg(long, value_name = "COLUMN=FIELD,...")]
    pub map: String,
    /// Grant e-mail consent, recorded with this source (e.g. "Messe Hannover 2026,
    /// Standgespräch"); without it, consent is left as it is
    #[arg(long, value_name = "TEXT")]
    pub consent_source: Option<String>,
    /// Past data: no trigger mail, stream or handoff comes of the import
    #[arg(long)]
    pub history: bool,
}

pub async fn import(
    config: Config,
    clock: SharedClock,
    args: ImportArgs,
) -> anyhow::Result<ExitCode> {
    let shown = args.file.display().to_string();
    let checked = Mapping::parse(&args.map).and_then(|mapping| {
        let options = Options {
            consent_source: args.consent_source.clone(),
        };
        csv_import::check(&args.file, &mapping, &options, clock.now())
    });
    let mut checked = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("nothing was imported. Fix it and run again.");
            return Ok(ExitCode::FAILURE);
        }
    };
    for refused in &checked.refused {
        eprintln!("{shown}:{}: refused: {}", refused.line, refused.reason);
    }
    for item in &mut checked.items {
        item.event.history = args.history;
    }
    let taken = checked.items.len();
    let app = App::build(config, clock.clone()).await?;
    let done = if checked.items.is_empty() {
        ingest::Accepted::default()
    } else {
        let lines = checked.lines.clone();
        let paths = move |i: usize| (None, format!("line {}", lines[i]));
        match ingest::accept(
            app.store(),
            checked.items,
            &paths,
            &app.processor.new_leads(),
            clock.now(),
        )
        .await
        {
            Ok(done) => done,
            Err(AcceptError::Input(errors)) => {
                for e in &errors {
                    eprintln!("{shown}: {}: {}", e.path, e.message);
                }
                eprintln!("nothing was imported. Fix those rows and run again.");
                return Ok(ExitCode::FAILURE);
            }
            Err(AcceptError::Store(e)) => return Err(e.into()),
            Err(AcceptError::Failed(e)) => anyhow::bail!(e),
        }
    };
    println!(
        "taken {taken} row(s): {} new event(s) ({} new lead(s)), {} imported before; \
         refused {} row(s)",
        done.accepted,
        done.leads_created,
        done.duplicates,
        checked.refused.len()
    );
    super::commands::process_if_free(&app).await?;
    Ok(if checked.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        super::exit::Exit::Partial.into()
    })
}
