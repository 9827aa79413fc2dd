//! `nurtured bounces ingest FILE...`: reads delivery reports, feedback reports and
//! unsubscribe mails from `.eml` or mbox files and acts on them, as `POST /v1/bounces`
//! does. Every file is read and parsed before anything is changed; complaints and
//! unsubscribes change a lead's consent, which needs the processing lease: while a
//! daemon runs on the database, such files go to its `POST /v1/bounces` instead.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bounces::{self, Report, apply::changes_consent, mailbox, parse};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::daemon::App;

pub async fn ingest(
    config: Config,
    clock: SharedClock,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let mut reports: Vec<(String, Report)> = Vec::new();
    let mut problems = 0;
    for path in files {
        let shown = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                problems += 1;
                continue;
            }
        };
        let messages = mailbox::messages(&bytes);
        for (i, raw) in messages.iter().enumerate() {
            let at = if messages.len() > 1 {
                format!("{shown}: message {}", i + 1)
            } else {
                shown.clone()
            };
            match parse::parse(raw, &config.mail.secret, &[]) {
                Ok(found) => reports.extend(found.into_iter().map(|r| (at.clone(), r))),
                Err(e) => {
                    eprintln!("{at}: {e}");
                    problems += 1;
                }
            }
        }
    }
    if problems > 0 {
        eprintln!(
            "{problems} problem(s); nothing was changed. Fix or leave out those files and run again."
        );
        return Ok(ExitCode::FAILURE);
    }
    let app = App::build(config, clock.clone()).await?;
    let all: Vec<Report> = reports.iter().map(|(_, r)| r.clone()).collect();
    let leased = if changes_consent(&all) {
        match app.processor.take_lease("cli").await? {
            Ok(()) => true,
            Err(held) => {
                eprintln!(
                    "a daemon ({}) works on this database, and these files hold complaints or \
                     unsubscribes, which change leads: post each message to its POST /v1/bounces \
                     (Content-Type: message/rfc822) instead. Nothing was changed.",
                    held.holder
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        false
    };
    let mut result = Ok(());
    for (at, r) in &reports {
        match bounces::apply(&app.processor, &app.config.bounces, r, clock.now()).await {
            Ok(a) => println!(
                "{at}: {} ({}) {} -> {}",
                a.kind,
                a.source,
                a.email.as_deref().unwrap_or("no address"),
                a.action
            ),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if leased {
        app.processor.give_up_lease().await?;
    }
    result?;
    println!("{} report(s) read", reports.len());
    Ok(ExitCode::SUCCESS)
}

/// `nurtured bounces list`: the bounce log, newest first.
pub async fn list(
    config: Config,
    clock: SharedClock,
    email: Option<&str>,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let email = email.map(crate::domain::Email::parse).transpose()?;
    let app = App::build(config, clock).await?;
    let rows = app
        .store()
        .bounce_log(email.as_ref().map(|e| e.as_str()), limit.clamp(1, 10_000))
        .await?;
    if json {
        let list: Vec<_> = rows.iter().map(bounces::log_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no bounce reports");
    }
    for r in &rows {
        let line = format!(
            "{} {} {} ({}, {}) -> {}{}",
            crate::store::rfc3339(r.at),
            r.email,
            r.kind,
            r.source,
            r.status.as_deref().unwrap_or("no status"),
            r.action,
            r.diagnostic
                .as_deref()
                .map(|d| format!("\n    {d}"))
                .unwrap_or_default()
        );
        println!("{}", crate::domain::text::printable(&line));
    }
    Ok(ExitCode::SUCCESS)
}
