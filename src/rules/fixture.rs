//! `nurtured rules test`: fixture files that feed a lead a sequence of events and say
//! what the rules should have done. Each fixture runs the real pipeline (checking,
//! storing, processing) against a fresh SQLite database in a temporary folder.
//!
//! ```toml
//! description = "A manager who downloads and views pricing becomes an MQL"
//! only = ["20-interest.rhai"]  # optional: run just these rule files
//! [lead]                       # starting point; all keys but email optional
//! email = "anna@example.com"
//! stage = "lead"
//! [[events]]
//! type = "identify"            # identify | track | page | job
//! at = "2026-03-02T09:00:00Z"  # default: one minute after the previous event
//! traits = { firstName = "Anna", phone = "+49 30 1234" }
//! [[events]]
//! type = "track"
//! event = "Content Downloaded"
//! properties = { topic = "crm" }
//! expect = { interest = 10, actions = ["add_interest 10"] }
//! # or: actions_include = ["add_interest 10"] (in this order, among others)
//! [expect]                     # after the last event
//! stage = "mql"
//! tags = []
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::daemon::App;
use crate::domain::change::{Outcome, number};
use crate::domain::{Changes, Email, Lead};
use crate::ingest::{self, segment};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub description: String,
    pub lead: StartLead,
    #[serde(default)]
    pub events: Vec<Step>,
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Run just these rule files (names in the rules folder); all of them when empty.
    #[serde(default)]
    pub only: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartLead {
    pub email: String,
    pub stage: Option<String>,
    pub fit: Option<f64>,
    pub interest: Option<f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Known data, applied without running rules.
    #[serde(default)]
    pub traits: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(rename = "type")]
    pub kind: String,
    pub at: Option<DateTime<Utc>>,
    /// Track: the event name.
    pub event: Option<String>,
    /// Page: the page name.
    pub name: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub traits: Map<String, Value>,
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Job: rule file and function, as in a schedule.
    pub rule: Option<String>,
    pub function: Option<String>,
    pub expect: Option<Expect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub stage: Option<String>,
    pub fit: Option<f64>,
    pub interest: Option<f64>,
    /// The exact set of tags.
    pub tags: Option<Vec<String>>,
    /// Actions in order, short form (`add_interest 10`, `set_stage mql`); actions that
    /// changed nothing are left out, refused ones end in ` (skipped)`.
    pub actions: Option<Vec<String>>,
    /// These actions, in this order, among any others.
    pub actions_include: Option<Vec<String>>,
    /// The event must fail with an error containing this text.
    pub fails: Option<String>,
    /// The mails the outbox would really queue, in order (`template` or `template key`):
    /// once per lead, template and key (or repeat period), with consent, not in
    /// quarantine. See [`fixture_mails`].
    pub queued: Option<Vec<String>>,
    /// The mails asked for but not queued, as `template (reason)`.
    pub suppressed: Option<Vec<String>>,
}

/// Default time of the first event.
const START: &str = "2026-03-02T09:00:00Z";

/// The result of one fixture.
pub struct Report {
    pub file: PathBuf,
    pub events: usize,
    pub failures: Vec<String>,
}

fn short(changes: &Changes) -> Vec<String> {
    changes
        .actions
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Applied => Some(a.action.to_string()),
            Outcome::Unchanged => None,
            Outcome::Skipped(_) => Some(format!("{} (skipped)", a.action)),
        })
        .collect()
}

/// Compares what was expected with what happened; `None` when they agree.
fn compare(
    expect: &Expect,
    lead: &Lead,
    actions: &[String],
    error: Option<&str>,
) -> Option<String> {
    let mut want = Vec::new();
    let mut got = Vec::new();
    let mut line = |w: String, g: String| {
        want.push(w);
        got.push(g);
    };
    match (&expect.fails, error) {
        (Some(text), Some(e)) if e.contains(text.as_str()) => {}
        (Some(text), e) => line(
            format!("fails with: ...{text}..."),
            format!("fails with: {}", e.unwrap_or("(it did not fail)")),
        ),
        (None, Some(e)) => line("no error".into(), format!("error: {e}")),
        (None, None) => {}
    }
    if let Some(stage) = &expect.stage {
        line(format!("stage: {stage}"), format!("stage: {}", lead.stage));
    }
    let close = |a: f64, b: f64| (a - b).abs() < 0.005;
    if let Some(fit) = expect.fit {
        let g = if close(fit, lead.fit) { fit } else { lead.fit };
        line(
            format!("fit: {}", number(fit)),
            format!("fit: {}", number(g)),
        );
    }
    if let Some(interest) = expect.interest {
        let g = if close(interest, lead.interest) {
            interest
        } else {
            lead.interest
        };
        line(
            format!("interest: {}", number(interest)),
            format!("interest: {}", number(g)),
        );
    }
    if let Some(tags) = &expect.tags {
        let mut tags = tags.clone();
        tags.sort();
        let have: Vec<&str> = lead.tags.iter().map(String::as_str).collect();
        line(
            format!("tags: [{}]", tags.join(", ")),
            format!("tags: [{}]", have.join(", ")),
        );
    }
    if let Some(list) = &expect.actions {
        want.push("actions:".into());
        got.push("actions:".into());
        want.extend(list.iter().map(|a| format!("  {a}")));
        got.extend(actions.iter().map(|a| format!("  {a}")));
    }
    if let Some(list) = &expect.actions_include {
        let (w, g) = included(list, actions);
        want.extend(w);
        got.extend(g);
    }
    if want == got {
        return None;
    }
    let (w, g) = (want.join("\n") + "\n", got.join("\n") + "\n");
    let diff = similar::TextDiff::from_lines(&w, &g);
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header("expected", "actual")
            .to_string(),
    )
}

/// `actions_include`: the wanted actions, and what was found of them in order (equal
/// when all were); a missing one is marked, with the actions that did happen.
fn included(list: &[String], actions: &[String]) -> (Vec<String>, Vec<String>) {
    let mut want = vec!["actions include, in this order:".to_string()];
    want.extend(list.iter().map(|a| format!("  {a}")));
    let mut rest = actions.iter();
    let mut got = vec!["actions include, in this order:".to_string()];
    for (i, a) in list.iter().enumerate() {
        if rest.any(|x| x == a) {
            got.push(format!("  {a}"));
        } else {
            let after = if i == 0 {
                String::new()
            } else {
                format!(" after `{}`", list[i - 1])
            };
            got.push(format!("  (no `{a}`{after}; the actions were:)"));
            got.extend(actions.iter().map(|x| format!("    {x}")));
            if actions.is_empty() {
                got.push("    (none)".into());
            }
            break;
        }
    }
    (want, got)
}

/// A rules folder in `dir` with copies of just the `only` files of `rules_dir`.
fn only_these(rules_dir: &Path, only: &[String], dir: &Path) -> Result<PathBuf, String> {
    let folder = dir.join("rules");
    std::fs::create_dir_all(&folder).map_err(|e| format!("no temporary folder: {e}"))?;
    for name in only {
        let from = rules_dir.join(name);
        if !name.ends_with(".rhai") || name.contains('/') || !from.is_file() {
            let mut known: Vec<String> = std::fs::read_dir(rules_dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".rhai"))
                .collect();
            known.sort();
            return Err(format!(
                "only: no rule file `{name}` in {}; the rule files are: {}",
                rules_dir.display(),
                known.join(", ")
            ));
        }
        std::fs::copy(&from, folder.join(name)).map_err(|e| format!("only: {name}: {e}"))?;
    }
    Ok(folder)
}

/// Runs one fixture file.
pub async fn run_file(config: &Config, path: &Path) -> Report {
    let mut report = Report {
        file: path.to_path_buf(),
        events: 0,
        failures: Vec::new(),
    };
    if let Err(e) = run_inner(config, path, &mut report).await {
        report.failures.push(e);
    }
    report
}

async fn run_inner(config: &Config, path: &Path, report: &mut Report) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let fixture: Fixture = toml::from_str(&text).map_err(|e| format!("not a fixture: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
    let mut config = config.clone();
    config.database_url = format!("sqlite://{}", dir.path().join("fixture.db").display());
    if !fixture.only.is_empty() {
        config.rules_dir = only_these(&config.rules_dir, &fixture.only, dir.path())?;
    }
    let start: DateTime<Utc> = START.parse().expect("valid start");
    let clock = Arc::new(ManualClock::new(
        fixture.events.first().and_then(|e| e.at).unwrap_or(start),
    ));
    let app = App::build(config, clock.clone())
        .await
        .map_err(|e| e.to_string())?;
    app.rules_complete().map_err(|e| e.to_string())?;
    let store = app.store();
    let funnel = app.processor.funnel.clone();
    app.processor
        .take_lease("fixture")
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;

    // The starting lead.
    let email = Email::parse(&fixture.lead.email).map_err(|e| format!("[lead] email: {e}"))?;
    let stage = fixture
        .lead
        .stage
        .clone()
        .unwrap_or_else(|| funnel.initial().to_string());
    if funnel.stage(&stage).is_none() {
        return Err(format!(
            "[lead] stage: unknown stage `{stage}`; the stages are: {}",
            funnel.names_joined()
        ));
    }
    let t0 = clock.now() - Duration::days(1);
    let mut tx = store.begin_write().await.map_err(|e| e.to_string())?;
    let id = tx
        .create_lead(&email, None, &stage, t0, "created by the fixture")
        .await
        .map_err(|e| e.to_string())?;
    let mut lead = Lead::new(id, email.clone(), &stage, t0);
    let traits =
        crate::domain::Traits::parse(&fixture.lead.traits, "lead.traits").map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    lead.apply_traits(&traits, t0, "fixture");
    lead.fit = fixture.lead.fit.unwrap_or(0.0);
    lead.interest = fixture.lead.interest.unwrap_or(0.0);
    lead.tags = fixture.lead.tags.iter().cloned().collect();
    tx.execute(crate::store::build::leads(tx.dialect(), &[(&lead, 0)]))
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;

    let mut all_actions = Vec::new();
    let mut mails = fixture_mails::Mails::new(&app);
    let mut at = clock.now() - Duration::minutes(1);
    for (n, step) in fixture.events.iter().enumerate() {
        at = step.at.unwrap_or(at + Duration::minutes(1));
        clock.set(at);
        let what = step
            .event
            .as_deref()
            .or(step.name.as_deref())
            .or(step.function.as_deref())
            .map_or(String::new(), |w| format!(" \"{w}\""));
        let label = format!("event {} ({}{what}, {})", n + 1, step.kind, at.to_rfc3339());
        let (changes, error) = if step.kind == "job" {
            let (Some(rule), Some(function)) = (&step.rule, &step.function) else {
                return Err(format!(
                    "{label}: a job needs rule = \"FILE.rhai\" and function = \"NAME\""
                ));
            };
            let mut results = app
                .processor
                .run_rule_on(rule, function, &[id], at)
                .await
                .map_err(|e| e.to_string())?;
            let (_, r) = results.pop().ok_or("the lead vanished")?;
            match r {
                Ok(c) => (c, None),
                Err(e) => (Changes::default(), Some(e.to_string())),
            }
        } else {
            let mut v = json!({
                "type": step.kind,
                "userId": email.as_str(),
                "timestamp": at.to_rfc3339(),
                "messageId": format!("fixture-{}", n + 1),
                "properties": step.properties,
                "traits": step.traits,
                "context": step.context,
            });
            if let Some(e) = &step.event {
                v["event"] = json!(e);
            }
            if let Some(name) = &step.name {
                v["name"] = json!(name);
            }
            let loc = segment::At {
                index: None,
                prefix: "",
            };
            let item =
                segment::parse_item(&v, None, loc, at, &mut |_| String::new()).map_err(|errs| {
                    format!(
                        "{label}: {}",
                        errs.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })?;
            ingest::accept(
                store,
                vec![item],
                &|_| (None, String::new()),
                &app.processor.new_leads(),
                at,
            )
            .await
            .map_err(|e| format!("{label}: {e}"))?;
            let outcome = app.processor.run_once().await.map_err(|e| e.to_string())?;
            let Some(o) = outcome.events.into_iter().next() else {
                return Err(format!("{label}: the event was not processed"));
            };
            match o.result {
                // A file that failed: the others' changes applied, the error shows.
                Ok(c) => (c, o.failed_rules.first().map(ToString::to_string)),
                Err(e) => (Changes::default(), Some(e.to_string())),
            }
        };
        report.events += 1;
        let actions = short(&changes);
        all_actions.extend(actions.iter().cloned());
        let current = store
            .lead_by_email(&email)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the lead vanished")?;
        let expect = step.expect.as_ref();
        let step_mails = mails.offer(id, &current, &changes, at);
        if let Some(diff) = fixture_mails::compare(expect, &step_mails) {
            report.failures.push(format!("after {label}:\n{diff}"));
        }
        if let Some(diff) = compare(
            expect.unwrap_or(&Expect::default()),
            &current,
            &actions,
            error.as_deref(),
        ) {
            report.failures.push(format!("after {label}:\n{diff}"));
        }
    }
    if let Some(expect) = &fixture.expect {
        let current = store
            .lead_by_email(&email)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the lead vanished")?;
        if let Some(diff) = compare(expect, &current, &all_actions, None) {
            report.failures.push(format!("at the end:\n{diff}"));
        }
        if let Some(diff) = fixture_mails::compare(Some(expect), &mails.all) {
            report.failures.push(format!("at the end:\n{diff}"));
        }
    }
    store.close().await;
    Ok(())
}

/// The mails of a fixture as the outbox would treat them: `queued` and `suppressed`.
pub mod fixture_mails {
    use chrono::{DateTime, Utc};

    use super::Expect;
    use crate::daemon::App;
    use crate::domain::{Changes, Lead};
    use crate::mail::would_queue::{Verdict, WouldQueue};

    /// What became of the mails asked for.
    #[derive(Debug, Default, Clone)]
    pub struct Outcome {
        pub queued: Vec<String>,
        pub suppressed: Vec<String>,
    }

    /// The outbox's view across the fixture's steps.
    pub struct Mails {
        queue: WouldQueue,
        /// Over all steps so far.
        pub all: Outcome,
    }

    impl Mails {
        pub fn new(app: &App) -> Self {
            Self {
                queue: WouldQueue::new(
                    std::sync::Arc::new(app.config.mail.clone()),
                    app.processor.plan.clone(),
                    app.config.time_zone,
                ),
                all: Outcome::default(),
            }
        }

        /// The mails of one step, for the lead as it is after the step.
        pub fn offer(
            &mut self,
            lead_id: i64,
            lead: &Lead,
            changes: &Changes,
            at: DateTime<Utc>,
        ) -> Outcome {
            let mut out = Outcome::default();
            for (mail, _) in &changes.mails {
                match self.queue.offer(lead_id, lead, mail, at) {
                    Verdict::Queued => out.queued.push(mail.to_string()),
                    Verdict::Suppressed(why) => out.suppressed.push(format!("{mail} ({why})")),
                }
            }
            self.all.queued.extend(out.queued.iter().cloned());
            self.all.suppressed.extend(out.suppressed.iter().cloned());
            out
        }
    }

    /// Compares `queued` and `suppressed` when the fixture expects them.
    pub fn compare(expect: Option<&Expect>, got: &Outcome) -> Option<String> {
        let expect = expect?;
        let (mut want, mut have) = (String::new(), String::new());
        for (name, wanted, actual) in [
            ("queued", &expect.queued, &got.queued),
            ("suppressed", &expect.suppressed, &got.suppressed),
        ] {
            if let Some(list) = wanted {
                want += &format!("{name}: [{}]\n", list.join(", "));
                have += &format!("{name}: [{}]\n", actual.join(", "));
            }
        }
        (want != have).then(|| {
            similar::TextDiff::from_lines(&want, &have)
                .unified_diff()
                .context_radius(3)
                .header("expected", "actual")
                .to_string()
        })
    }
}

/// Runs every `*.toml` fixture in `dir`, prints a report, and returns the exit code.
pub async fn run_dir(config: &Config, dir: &Path) -> ExitCode {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            println!("cannot read fixture folder {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    if files.is_empty() {
        println!("no fixtures (*.toml) in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let r = run_file(config, file).await;
        if r.failures.is_empty() {
            passed += 1;
            println!("ok    {} ({} events)", r.file.display(), r.events);
        } else {
            failed += 1;
            println!("FAIL  {}", r.file.display());
            for f in &r.failures {
                for line in f.lines() {
                    println!("      {line}");
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
