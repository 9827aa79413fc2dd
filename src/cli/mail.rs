//! `nurtured templates check`, `nurtured mail list`, `nurtured mail show` and
//! `nurtured mail retry`.

use std::process::ExitCode;

use super::MailCommand;
use crate::clock::{SharedClock, from_ms};
use crate::config::Config;
use crate::domain::Email;
use crate::domain::text::printable;
use crate::mail::Templates;
use crate::mail::template_data::TemplateData;
use crate::mail::templates::required;
use crate::store::{MailFilter, OutboxRow, RetrySelection};

/// Loads and renders every template; 0 when all is well, 1 otherwise.
pub fn templates_check(config: &Config) -> ExitCode {
    let m = &config.mail;
    let templates = match Templates::load(&m.templates_dir, &m.templates_shown, &m.default_locale) {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            println!("{} problem(s)", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let data = TemplateData::collect(&config.rules_dir, &config.rules_shown);
    let problems = templates.check(&required(config), &data);
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        let mails = templates.mails();
        let count: usize = mails.values().map(|m| m.len()).sum();
        let locales: Vec<&str> = mails.keys().map(String::as_str).collect();
        println!(
            "ok: {count} mails ({}) render against the sample lead with the data the rules \
             pass; every template that streams and rules use exists",
            locales.join(", ")
        );
        ExitCode::SUCCESS
    } else {
        println!("{} problem(s)", problems.len());
        ExitCode::FAILURE
    }
}

pub async fn mail(
    config: Config,
    clock: SharedClock,
    command: MailCommand,
) -> anyhow::Result<ExitCode> {
    let app = super::commands::read_only(config, clock).await?;
    let store = app.store();
    match command {
        MailCommand::List {
            status,
            lead,
            limit,
            json,
        } => {
            let lead_id = match lead {
                None => None,
                Some(raw) => {
                    let email = Email::parse(&raw)?;
                    match store.lead_by_email(&email).await? {
                        Some(l) => Some(l.id),
                        None => {
                            eprintln!("no lead with e-mail {email}");
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
            };
            let rows = store
                .list_mails(&MailFilter {
                    status,
                    lead_id,
                    limit,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:>6}  {:<10}  {:<16}  {:<28}  {:<30}  why",
                    "id", "status", "when", "to", "template"
                );
                for r in &rows {
                    println!("{}", printable(&line(r)));
                }
            }
        }
        MailCommand::Show { id, json } => {
            let Some((row, content)) = store.mail(id).await? else {
                eprintln!("no mail {id}");
                return Ok(ExitCode::FAILURE);
            };
            let history = store.mail_log(id).await?;
            if json {
                let v = serde_json::json!({ "mail": row, "content": content, "history": history });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            // The page shows stored data (subject, body, reasons): written for a terminal.
            let mut page = format!(
                "mail {}: {} ({} mail, {})\n",
                row.id, row.status, row.class, row.kind
            );
            let mut field = |name: &str, value: &dyn std::fmt::Display| {
                page.push_str(&format!("  {name:<10} {value}\n"));
            };
            field("to:", &row.email);
            field("template:", &row.template);
            field("asked by:", &row.source);
            field("queued:", &time(row.created_at));
            field("due:", &time(row.due_at));
            field("attempts:", &row.attempts);
            if let Some(r) = &row.reason {
                field("why:", r);
            }
            if let Some(m) = &row.message_id {
                field("message:", m);
            }
            for h in &history {
                field(
                    "history:",
                    &format!("{} {} by {} ({})", time(h.at), h.what, h.actor, h.note),
                );
            }
            if let Some(c) = content {
                field("subject:", &c.subject);
                field("headers:", &c.headers);
                page.push_str(&format!("\n{}\n", c.text_body));
            }
            print!("{}", printable(&page));
        }
        MailCommand::Retry {
            ids,
            failed,
            template,
        } => {
            let selection = if failed {
                RetrySelection::Failed {
                    template: template.as_deref(),
                }
            } else {
                RetrySelection::Ids(&ids)
            };
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let now = crate::clock::to_ms(app.processor.clock.now());
            let report = store
                .retry_mails(selection, &format!("cli:{user}"), now)
                .await?;
            for id in &report.queued {
                println!("mail {id}: queued again");
            }
            for r in &report.refused {
                eprintln!("mail {}: not queued again: {}", r.id, r.reason);
            }
            if report.queued.is_empty() && report.refused.is_empty() {
                println!(
                    "no failed mails{}",
                    template
                        .map(|t| format!(" of template {t}"))
                        .unwrap_or_default()
                );
            }
            if !report.refused.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn time(ms: i64) -> String {
    from_ms(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn line(r: &OutboxRow) -> String {
    let when = r.finished_at.unwrap_or(r.due_at);
    format!(
        "{:>6}  {:<10}  {:<16}  {:<28}  {:<30}  {}",
        r.id,
        r.status,
        from_ms(when).format("%Y-%m-%d %H:%M"),
        r.email,
        r.template,
        r.reason.as_deref().unwrap_or("")
    )
}
