//! `nurtured lead export EMAIL [--out FILE]`, `nurtured lead erase EMAIL [--reason
//! TEXT] [--by NAME]` and `nurtured retention run`. Erasing and the retention run
//! change leads: they need the processing lease, so while a daemon works on the base
//! they point to its API (`DELETE /v1/leads/{email}`) instead.

use std::path::Path;
use std::process::ExitCode;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::daemon::App;
use crate::domain::Email;
use crate::privacy::{AddressKey, Export};

pub async fn export(
    config: Config,
    clock: SharedClock,
    raw: &str,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let email = Email::parse(raw)?;
    let app = App::build(config, clock.clone()).await?;
    let Some(doc) = Export::load(app.store(), &email, clock.now()).await? else {
        eprintln!("no lead with e-mail {email}");
        return Ok(ExitCode::FAILURE);
    };
    let text = serde_json::to_string_pretty(&doc)?;
    match out {
        Some(path) => {
            std::fs::write(path, text + "\n").map_err(|e| {
                anyhow::anyhow!("cannot write the export to {}: {e}", path.display())
            })?;
            eprintln!("export of {email} written to {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn erase(
    config: Config,
    clock: SharedClock,
    raw: &str,
    reason: &str,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let email = Email::parse(raw)?;
    let key = AddressKey::new(&config.mail.secret);
    let app = App::build(config, clock).await?;
    if let Err(held) = app.processor.take_lease("cli").await? {
        eprintln!(
            "a daemon ({}) works on this database: erase through its API instead, \
             `curl -X DELETE -H \"Authorization: Bearer TOKEN\" \
             \"http://HOST/v1/leads/{email}?reason=...\"`; nothing was erased",
            held.holder
        );
        return Ok(ExitCode::FAILURE);
    }
    let done = app.processor.erase(&email, &key, by, reason).await;
    app.processor.give_up_lease().await?;
    match done {
        Ok(d) => {
            let total: u64 = d.removed.values().sum();
            println!("erased {email}: {total} row(s) removed or cleared");
            for (table, n) in &d.removed {
                if *n > 0 {
                    println!("  {table}: {n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ crate::process::erase::EraseError::NotFound(_)) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn retention_run(config: Config, clock: SharedClock) -> anyhow::Result<ExitCode> {
    let retention = config.retention;
    if !retention.is_on() {
        eprintln!(
            "raw events and mail bodies are kept: set retention.events and/or \
             retention.mail_content (e.g. \"180d\") to delete old ones"
        );
    }
    let app = App::build(config, clock.clone()).await?;
    if let Err(held) = app.processor.take_lease("cli").await? {
        eprintln!(
            "a daemon ({}) works on this database and runs the retention job daily; nothing \
             was deleted",
            held.holder
        );
        return Ok(ExitCode::FAILURE);
    }
    let done = crate::privacy::retention::run_once(&app.processor, &retention, clock.now()).await;
    app.processor.give_up_lease().await?;
    let d = done?;
    println!(
        "deleted {} raw event(s), {} stored mail bod(ies) and {} anonymous visitor(s)",
        d.events, d.mail_bodies, d.visitors
    );
    Ok(ExitCode::SUCCESS)
}
