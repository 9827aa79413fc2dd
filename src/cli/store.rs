//! `nurtured store copy`: moves a whole base to another database, with a progress bar
//! per table on a terminal (plain lines otherwise), and prints the rows of every table
//! on both sides; any difference fails the command.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::StoreCommand;
use crate::store::copy::{self, CopyReport, Progress};

pub async fn store(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Copy { from, to } => copy_base(&from, &to).await,
    }
}

async fn copy_base(from: &str, to: &str) -> anyhow::Result<ExitCode> {
    println!("copying {} to {}", copy::shown(from), copy::shown(to));
    let mut progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(Bars(None))
    } else {
        Box::new(Lines::default())
    };
    let report = match copy::copy(from, to, progress.as_mut()).await {
        Ok(report) => report,
        Err(e) => {
            // The message names the cause already; the chain below it would repeat it.
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("{}", summary(&report));
    let differ = report.differences();
    if differ.is_empty() {
        println!(
            "copied {} rows in {} tables in {}: every table has as many rows in the target as \
             in the source",
            grouped(report.rows()),
            report.tables.len(),
            seconds(report.took)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listed: Vec<String> = differ
        .iter()
        .map(|t| {
            format!(
                "{} ({} in the source, {} in the target)",
                t.table,
                grouped(t.source),
                grouped(t.target)
            )
        })
        .collect();
    eprintln!(
        "error: the row counts differ for {}. Something wrote to the source during the copy, \
         or the copy is incomplete: do not use the target; stop everything that writes to the \
         source and copy again into a new, empty database.",
        listed.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

/// The rows of every table on both sides, and how long each took.
fn summary(report: &CopyReport) -> String {
    let mut out = format!(
        "{:<16} {:>12} {:>12} {:>9}\n",
        "table", "source", "target", "time"
    );
    for t in &report.tables {
        out.push_str(&format!(
            "{:<16} {:>12} {:>12} {:>9}{}\n",
            t.table,
            grouped(t.source),
            grouped(t.target),
            seconds(t.took),
            if t.source == t.target {
                ""
            } else {
                "  <- differs"
            }
        ));
    }
    out
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A progress bar per table, left on the screen when the table is done.
struct Bars(Option<ProgressBar>);

/// The bar while a table is copied, and once it is done.
const RUNNING: &str =
    "{prefix:<16} [{bar:30}] {human_pos:>11}/{human_len:<11} {elapsed:>4}, eta {eta}";
const DONE: &str = "{prefix:<16} [{bar:30}] {human_pos:>11}/{human_len:<11} {msg}";

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn start(&mut self, table: &'static str, rows: u64) {
        let bar = ProgressBar::new(rows)
            .with_style(bar_style(RUNNING))
            .with_prefix(table);
        self.0 = Some(bar);
    }

    fn advance(&mut self, _table: &'static str, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    fn finish(&mut self, _table: &'static str, rows: u64, took: Duration) {
        if let Some(bar) = self.0.take() {
            bar.set_style(bar_style(DONE));
            bar.set_length(rows.max(bar.length().unwrap_or(0)));
            bar.set_position(rows);
            bar.finish_with_message(format!("in {}", seconds(took)));
        }
    }
}

/// Plain lines (for logs): each table's start and end, and its progress every few
/// seconds.
struct Lines {
    rows: u64,
    shown: Instant,
}

impl Default for Lines {
    fn default() -> Self {
        Self {
            rows: 0,
            shown: Instant::now(),
        }
    }
}

/// How often [`Lines`] tells how far a table is.
const EVERY: Duration = Duration::from_secs(5);

impl Progress for Lines {
    fn start(&mut self, table: &'static str, rows: u64) {
        self.rows = rows;
        self.shown = Instant::now();
        eprintln!("{table}: {} rows to copy", grouped(rows));
    }

    fn advance(&mut self, table: &'static str, done: u64) {
        if self.shown.elapsed() >= EVERY {
            self.shown = Instant::now();
            eprintln!("{table}: {} of {} rows", grouped(done), grouped(self.rows));
        }
    }

    fn finish(&mut self, table: &'static str, rows: u64, took: Duration) {
        eprintln!(
            "{table}: {} rows copied in {}",
            grouped(rows),
            seconds(took)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
