//! `nurtured events export [--since DATE] [--until DATE] [--lead EMAIL] [--out FILE]`:
//! the stored history as Segment JSONL (see [`crate::ingest::export`]), read straight
//! from the database (no daemon and no compiled rules needed).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use crate::clock::{SharedClock, local_instant, to_ms};
use crate::config::Config;
use crate::domain::Email;
use crate::ingest::export::write_jsonl;
use crate::store::{EventRange, Store};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Events that happened from this day (YYYY-MM-DD, midnight in the configured
    /// time_zone) or instant (RFC 3339) on
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Events that happened before this day (YYYY-MM-DD: its midnight) or instant
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Only the events of this lead
    #[arg(long, value_name = "EMAIL")]
    pub lead: Option<String>,
    /// Write to FILE instead of stdout (written under a temporary name, then renamed)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// A day (midnight in `tz`) or an RFC 3339 instant.
fn instant(flag: &str, raw: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|day| local_instant(tz, day, NaiveTime::MIN))
        .ok_or_else(|| {
            format!(
                "{flag}: `{raw}` is not a day such as 2026-03-01 or an instant such as \
                 2026-03-01T09:30:00Z"
            )
        })
}

pub async fn export(
    config: Config,
    _clock: SharedClock,
    args: ExportArgs,
) -> anyhow::Result<ExitCode> {
    let tz = config.time_zone;
    let parse =
        |flag: &str, v: &Option<String>| v.as_deref().map(|raw| instant(flag, raw, tz)).transpose();
    let (since, until) = match (parse("--since", &args.since), parse("--until", &args.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return Ok(super::exit::Exit::Usage.into());
        }
    };
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        eprintln!("error: --until must come after --since");
        return Ok(super::exit::Exit::Usage.into());
    }
    let store = Store::open(&config.database_url).await?;
    let lead_id = match &args.lead {
        None => None,
        Some(raw) => {
            let email = Email::parse(raw)?;
            match store.lead_id_by_email(&email).await? {
                Some(id) => Some(id),
                None => {
                    eprintln!("no lead with e-mail {email}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    };
    let range = EventRange {
        since_ms: since.map(to_ms),
        until_ms: until.map(to_ms),
        lead_id,
    };
    let written = match &args.out {
        None => {
            // Not over the events themselves when they go to the terminal.
            let bar = if std::io::stdout().is_terminal() {
                indicatif::ProgressBar::hidden()
            } else {
                super::progress::bytes("exporting")
            };
            let mut out = std::io::BufWriter::new(bar.wrap_write(std::io::stdout().lock()));
            write_jsonl(&store, range, &mut out).await?
        }
        Some(path) => {
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let mut file = tempfile::NamedTempFile::new_in(&folder)?;
            let n = {
                let bar = super::progress::bytes("exporting");
                let mut out = std::io::BufWriter::new(bar.wrap_write(file.as_file_mut()));
                let n = write_jsonl(&store, range, &mut out).await?;
                out.flush()?;
                n
            };
            file.persist(path)?;
            eprintln!("wrote {n} event(s) to {}", path.display());
            n
        }
    };
    if args.out.is_none() {
        eprintln!("{written} event(s)");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
