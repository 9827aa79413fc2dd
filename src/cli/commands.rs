//! What each command does.

use std::process::ExitCode;
use std::sync::Arc;

use super::{Command, EventsCommand, LeadCommand, RulesCommand, TemplatesCommand};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Job};
use crate::daemon::{self, App};
use crate::domain::Email;
use crate::domain::text::printable;
use crate::ingest::{self, AcceptError, file};
use crate::report::{LeadReport, Stats};
use crate::rules::{RuleError, Rules, Sandbox, fixture, ruleset};

pub async fn dispatch(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let clock: SharedClock = Arc::new(SystemClock);
    match command {
        Command::Run => run(config, clock).await,
        Command::Backtest(args) => super::backtest::backtest(config, args).await,
        Command::Ingest { file, history } => ingest_file(config, clock, &file, history).await,
        Command::Lead {
            command: LeadCommand::List(args),
        } => super::lists::lead_list(config, args).await,
        Command::Import(args) => super::import::import(config, clock, args).await,
        Command::Events {
            command: EventsCommand::Export(args),
        } => super::export::export(config, clock, args).await,
        Command::Lead {
            command: LeadCommand::Show { email, json },
        } => lead_show(config, clock, &email, json).await,
        Command::Lead {
            command: LeadCommand::Export { email, out },
        } => super::privacy::export(config, clock, &email, out.as_deref()).await,
        Command::Lead {
            command: LeadCommand::Erase { email, reason, by },
        } => super::privacy::erase(config, clock, &email, &reason, &by).await,
        Command::Retention { .. } => super::privacy::retention_run(config, clock).await,
        Command::Events { command } => events(config, clock, command).await,
        Command::Rules {
            command: RulesCommand::Check,
        } => Ok(rules_check(&config)),
        Command::Rules {
            command: RulesCommand::Test { dir },
        } => {
            let dir = dir.unwrap_or_else(|| config.rules_dir.join("tests"));
            Ok(fixture::run_dir(&config, &dir).await)
        }
        Command::Rules {
            command: RulesCommand::Shadow { file, recent, json },
        } => {
            let store = crate::store::Store::open_existing(&config.database_url).await?;
            let report =
                crate::report::shadow::ShadowReport::load(&store, file.as_deref(), recent).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", printable(&report.text()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates {
            command: TemplatesCommand::Check,
        } => Ok(super::mail::templates_check(&config)),
        Command::Mail { command } => super::mail::mail(config, clock, command).await,
        Command::Stats => {
            let app = read_only(config, clock).await?;
            let mut stats = Stats::load(
                app.store(),
                0,
                Some(app.rules.status()),
                app.templates.errors(),
            )
            .await?;
            if app.store().dialect() == crate::store::Dialect::Postgres {
                let c = &app.config.cluster;
                stats.cluster =
                    Some(crate::cluster::view(app.store(), c.shards, c.lease_timeout, None).await?);
            }
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { command } => super::report::report(config, clock, command).await,
        Command::Store { command } => super::store::store(command).await,
        Command::Bench(args) => crate::bench::run(config, args).await,
        Command::Bounces {
            command: super::BouncesCommand::Ingest { files },
        } => super::bounces::ingest(config, clock, &files).await,
        Command::Key {
            command: super::KeyCommand::New { name, scopes },
        } => super::key::new(&name, &scopes),
        Command::User {
            command:
                super::UserCommand::Add {
                    name,
                    role,
                    email,
                    owner,
                    language,
                },
        } => super::user::add(&super::user::NewUser {
            name: &name,
            role: &role,
            email: email.as_deref(),
            owner: owner.as_deref(),
            language: language.as_deref(),
        }),
        Command::Bounces {
            command: super::BouncesCommand::List { email, limit, json },
        } => super::bounces::list(config, clock, email.as_deref(), limit, json).await,
        Command::Completions { shell } => Ok(super::ops::completions(shell)),
        Command::Man { out } => Ok(super::ops::man(out.as_deref())),
    }
}

async fn run(config: Config, clock: SharedClock) -> anyhow::Result<ExitCode> {
    if config.uses_dev_secret()
        && matches!(
            config.mail.transport,
            crate::config::mail::TransportConfig::Smtp(_)
        )
    {
        // The shipped secret is public: anyone could make unsubscribe and confirmation
        // links for any lead. Real mail needs a secret of its own.
        return Err(super::exit::SetupError(
            "mail.secret is the shipped development secret, and mail.url sends real mail: \
             set mail.secret (or NURTURED_MAIL__SECRET) to a long random string, e.g. from \
             `openssl rand -hex 32`"
                .into(),
        )
        .into());
    }
    if config.uses_dev_secret() {
        tracing::warn!(
            "mail links are signed with the shipped development secret; set mail.secret (or \
             NURTURED_MAIL__SECRET) to a long random string before sending real mail (the \
             daemon refuses to send through SMTP with it)"
        );
    }
    if config.uses_dev_token() {
        tracing::warn!(
            "the API token is the shipped development token; set api_token in nurtured.toml \
             or NURTURED_API_TOKEN before anyone else can reach this daemon"
        );
    }
    if let Some(file) = &config.file {
        tracing::info!(config = %file.display(), "configuration loaded");
    } else {
        tracing::info!("no nurtured.toml here: running on the embedded defaults");
    }
    let app = App::build(config, clock).await?;
    let running = daemon::start_on_config_addr(app).await?;
    tracing::info!(addr = %running.addr, "listening; stop with Ctrl-C or SIGTERM");
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Builds the app for a command that only reads (or only queues work for the daemon):
/// a rule file that does not compile is a warning on stderr, not a stop.
pub(super) async fn read_only(config: Config, clock: SharedClock) -> anyhow::Result<App> {
    let app = App::build(config, clock).await?;
    let left_out = app.rules.left_out();
    if !left_out.is_empty() {
        eprintln!(
            "warning: {} rule file(s) do not compile (`nurtured rules check` lists all); \
             events wait until they do:",
            left_out.len()
        );
        for e in left_out {
            eprintln!("  {e}");
        }
    }
    Ok(app)
}

/// Processes the queue here unless a daemon holds the processing lease. With a rule
/// file that does not compile, nothing is processed: the events wait in the queue.
pub(super) async fn process_if_free(app: &App) -> anyhow::Result<()> {
    if !app.rules.left_out().is_empty() {
        println!(
            "not processed here while a rule file does not compile; fix it (`nurtured rules \
             check`), then the daemon processes them (or run `nurtured events retry` again)"
        );
        return Ok(());
    }
    match app.processor.take_lease("cli").await? {
        Ok(()) => {
            let pending = app.store().event_counts().await?.events_pending;
            let bar = super::progress::bar(pending.max(0) as u64, "processing");
            // Each batch written extends the lease, so a long run keeps it.
            let result = app.processor.drain_with(|n| bar.inc(n as u64)).await;
            bar.finish_and_clear();
            app.processor.give_up_lease().await?;
            let n = result?;
            let counts = app.store().event_counts().await?;
            println!(
                "processed {n} event(s); {} failed in total (see `nurtured events failed`)",
                counts.events_failed
            );
        }
        Err(held) => println!("the running daemon ({}) processes them", held.holder),
    }
    Ok(())
}

async fn ingest_file(
    config: Config,
    clock: SharedClock,
    path: &std::path::Path,
    history: bool,
) -> anyhow::Result<ExitCode> {
    let checked = match file::check(path, clock.now()) {
        Ok(mut c) => {
            for item in &mut c.items {
                item.event.history = history;
            }
            c
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "{} problem(s); nothing was stored. Fix the lines and run again.",
                errors.len()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let app = App::build(config, clock.clone()).await?;
    // Events stored now would be processed without the broken file's part.
    app.rules_complete()?;
    let shown = path.display().to_string();
    let (mut accepted, mut duplicates) = (0, 0);
    let mut items = checked.items.into_iter();
    let bar = super::progress::bar(checked.lines.len() as u64, "storing");
    for lines in checked.lines.chunks(file::CHUNK) {
        let chunk: Vec<_> = items.by_ref().take(lines.len()).collect();
        let paths = |i: usize| (None, format!("line {}", lines[i]));
        match ingest::accept(
            app.store(),
            chunk,
            &paths,
            &app.processor.new_leads(),
            clock.now(),
        )
        .await
        {
            Ok(done) => {
                accepted += done.accepted;
                duplicates += done.duplicates;
                bar.inc(lines.len() as u64);
            }
            Err(AcceptError::Input(errors)) => {
                bar.finish_and_clear();
                for e in &errors {
                    let line = e.path.split('.').next().unwrap_or_default();
                    let field = e.path.split_once('.').map_or("", |(_, f)| f);
                    eprintln!(
                        "{shown}:{}: {field}: {}",
                        line.trim_start_matches("line "),
                        e.message
                    );
                }
                eprintln!(
                    "stored {accepted} event(s) from earlier lines; nothing from this chunk \
                     (lines {}-{}). Fix it and run again: stored events are skipped.",
                    lines[0],
                    lines[lines.len() - 1]
                );
                return Ok(ExitCode::FAILURE);
            }
            Err(AcceptError::Store(e)) => return Err(e.into()),
            Err(AcceptError::Failed(e)) => anyhow::bail!(e),
        }
    }
    bar.finish_and_clear();
    println!("stored {accepted} event(s), skipped {duplicates} already stored");
    process_if_free(&app).await?;
    Ok(ExitCode::SUCCESS)
}

async fn lead_show(
    config: Config,
    clock: SharedClock,
    raw: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let email = Email::parse(raw)?;
    let recent = config.processing.recent_activity;
    let app = read_only(config, clock).await?;
    match LeadReport::load(app.store(), &email, recent).await? {
        Some(report) if json => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(report) => print!("{}", printable(&report.to_text())),
        None => {
            eprintln!("no lead with e-mail {email}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn events(
    config: Config,
    clock: SharedClock,
    command: EventsCommand,
) -> anyhow::Result<ExitCode> {
    let app = read_only(config, clock).await?;
    match command {
        EventsCommand::Failed { json, limit } => {
            let failed = app.store().failed_events(limit).await?;
            if json {
                let list: Vec<_> = failed
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "seq": f.seq,
                            "message_id": f.message_id,
                            "email": f.email,
                            "type": f.kind,
                            "name": f.name,
                            "occurred_at": crate::clock::from_ms(f.occurred_at),
                            "attempts": f.attempts,
                            "error": f.error.as_deref().and_then(|e| serde_json::from_str::<RuleError>(e).ok()),
                            "rules": failed_rules(f),
                            "fix": fix_of(f),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if failed.is_empty() {
                println!("no failed events");
            } else {
                for f in &failed {
                    let rules = failed_rules(f);
                    let error = if rules.is_empty() {
                        f.error
                            .as_deref()
                            .and_then(|e| serde_json::from_str::<RuleError>(e).ok())
                            .map_or_else(|| "unknown error".to_string(), |e| e.to_string())
                    } else {
                        rules
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n    ")
                    };
                    let error = format!("{error}\n    fix: {}", fix_of(f));
                    let line = format!(
                        "#{} {} {} \"{}\" at {} (tried {}x)\n    {error}",
                        f.seq,
                        f.email,
                        f.kind,
                        f.name,
                        crate::clock::from_ms(f.occurred_at).format("%Y-%m-%d %H:%M:%S"),
                        f.attempts
                    );
                    println!("{}", printable(&line));
                }
                println!(
                    "{} failed event(s). Fix the rule, then run `nurtured events retry`.",
                    failed.len()
                );
            }
        }
        EventsCommand::Export(_) => {
            unreachable!("`events export` reads the database without building the app")
        }
        EventsCommand::Retry { seqs } => {
            let n = app
                .store()
                .retry_failed((!seqs.is_empty()).then_some(seqs.as_slice()))
                .await?;
            println!("queued {n} failed event(s) again");
            process_if_free(&app).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rule files a partly failed event failed for (empty when it failed as a whole).
fn failed_rules(f: &crate::store::FailedEvent) -> Vec<RuleError> {
    f.rules
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

/// What to do about a failed event.
fn fix_of(f: &crate::store::FailedEvent) -> String {
    let rules = failed_rules(f);
    if rules.is_empty() {
        return "nothing of the event was applied; fix the cause above (the rule at that \
                line, or the event's data), check with `nurtured rules check`, then \
                `nurtured events retry` processes the event again"
            .into();
    }
    let files: Vec<&str> = rules.iter().map(|e| e.file.as_str()).collect();
    format!(
        "the other rule files' changes were applied; fix {} at the line shown, check with \
         `nurtured rules check`, then `nurtured events retry` runs only {} for this event, on \
         the lead as it is now",
        files.join(", "),
        if files.len() == 1 {
            "that file"
        } else {
            "those files"
        }
    )
}

/// `nurtured rules check`: compiles all files and checks the schedules' functions.
fn rules_check(config: &Config) -> ExitCode {
    let sandbox = Sandbox::new(&config.limits, Arc::new(config.thresholds.clone()));
    let (count, mut errors) = ruleset::check_dir(&sandbox, &config.rules_dir, &config.rules_shown);
    if errors.is_empty()
        && let Ok(rules) = Rules::load(&sandbox, &config.rules_dir, &config.rules_shown)
    {
        let set = rules.current();
        let origin = config
            .file
            .as_ref()
            .map_or("embedded defaults".into(), |p| p.display().to_string());
        for s in &config.schedules {
            if let Job::Rule { file, function, .. } = &s.job {
                match set.file(file) {
                    None => errors.push(RuleError::new(
                        &origin,
                        format!(
                            "schedule `{}` names rule file `{file}`, which is not in {}",
                            s.name,
                            config.rules_dir.display()
                        ),
                    )),
                    Some(f) if !f.has_function(function, 1) => errors.push(RuleError::new(
                        &f.shown,
                        format!(
                            "schedule `{}` calls {function}(lead), which this file does not define",
                            s.name
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        // Functions called with a lead by schedules and team assignments: their
        // parameter holds the lead whatever it is called.
        let mut calls: Vec<(&str, &str)> = config
            .schedules
            .iter()
            .filter_map(|s| match &s.job {
                Job::Rule { file, function, .. } => Some((file.as_str(), function.as_str())),
                _ => None,
            })
            .collect();
        calls.extend(config.sales.teams.iter().filter_map(|t| match &t.assign {
            crate::config::sales::Assign::Rule { file, function } => {
                Some((file.as_str(), function.as_str()))
            }
            crate::config::sales::Assign::RoundRobin => None,
        }));
        for f in &set.files {
            let functions: Vec<&str> = calls
                .iter()
                .filter(|(file, _)| *file == f.name)
                .map(|(_, function)| *function)
                .collect();
            if !functions.is_empty() {
                errors.extend(crate::rules::property_check::check_with(
                    &f.ast, &f.shown, &functions,
                ));
            }
        }
    }
    errors.extend(crate::rules::topic_check::unknown_topics(
        &config.rules_dir,
        &config.rules_shown,
        &config.topics,
    ));
    for e in &errors {
        println!("{e}");
    }
    if errors.is_empty() {
        println!("ok: {count} rule file(s) compiled");
        ExitCode::SUCCESS
    } else {
        println!("{} error(s)", errors.len());
        ExitCode::FAILURE
    }
}
