//! Running rules: every file's `on_event(lead, event)` in file order for one event, or
//! one scheduled function for one lead. The result is the changed lead with its
//! [`Changes`]; for an event, a live file that fails is left out (its changes
//! dropped, its error kept), and the shadow files' would-be changes come apart.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rhai::{CallFnOptions, Dynamic, Engine, Map, Scope};

use super::api::{History, LeadHandle, Session};
use super::error::RuleError;
use super::ruleset::{ON_EVENT, RuleFile, RuleSet};
use super::sandbox::{Sandbox, with_deadline};
use crate::domain::{Changes, Funnel, Lead};

/// What a rule run needs besides the lead.
#[derive(Clone)]
pub struct Context {
    pub funnel: Arc<Funnel>,
    pub history: Arc<dyn History>,
    /// Names of the configured nurture streams.
    pub streams: Arc<Vec<String>>,
    /// Names of the sales teams.
    pub teams: Arc<Vec<String>>,
    /// Ids of the configured `[[topics]]`.
    pub topics: Arc<Vec<String>>,
}

impl Context {
    /// A fresh run on a copy of `lead`.
    fn session(&self, lead: &Lead, at: DateTime<Utc>, upto_seq: i64, file: Arc<str>) -> LeadHandle {
        LeadHandle::new(Session {
            lead: lead.clone(),
            changes: Changes::default(),
            funnel: self.funnel.clone(),
            history: self.history.clone(),
            streams: self.streams.clone(),
            teams: self.teams.clone(),
            topics: self.topics.clone(),
            at,
            upto_seq,
            file,
        })
    }
}

/// The event as rules see it.
#[derive(Debug, Clone)]
pub struct EventView {
    pub seq: i64,
    pub kind: String,
    pub name: String,
    pub message_id: String,
    pub properties: Map,
    pub traits: Map,
    pub context: Map,
    pub at: DateTime<Utc>,
}

/// Reads a JSON object (as stored) straight into a Rhai map; `None` or `null` is empty.
pub fn json_map(text: Option<&str>) -> Result<Map, String> {
    match text {
        None => Ok(Map::new()),
        Some(t) => match serde_json::from_str::<Dynamic>(t).map_err(|e| e.to_string())? {
            d if d.is_unit() => Ok(Map::new()),
            d => d
                .try_cast::<Map>()
                .ok_or_else(|| "not a JSON object".to_string()),
        },
    }
}

impl EventView {
    /// The Rhai map handed to `on_event`: `type`, `name`, `properties`, `traits`,
    /// `context`, `timestamp`, `message_id`, and for page views `url`, `path`, `page`.
    pub(crate) fn to_dynamic(&self) -> Dynamic {
        let mut m = Map::new();
        m.insert("type".into(), self.kind.clone().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert("message_id".into(), self.message_id.clone().into());
        m.insert("seq".into(), self.seq.into());
        m.insert(
            "timestamp".into(),
            self.at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        if self.kind == "page" {
            let text = |k: &str| {
                self.properties
                    .get(k)
                    .and_then(|v| {
                        v.read_lock::<rhai::ImmutableString>()
                            .map(|s| s.to_string())
                    })
                    .unwrap_or_default()
            };
            let url = text("url");
            let path = match text("path") {
                p if !p.is_empty() => p,
                _ => crate::ingest::segment::url_path(&url),
            };
            m.insert("url".into(), url.into());
            m.insert("path".into(), path.into());
            m.insert("page".into(), text("name").into());
        }
        m.insert(
            "properties".into(),
            Dynamic::from_map(self.properties.clone()),
        );
        m.insert("traits".into(), Dynamic::from_map(self.traits.clone()));
        m.insert("context".into(), Dynamic::from_map(self.context.clone()));
        Dynamic::from_map(m)
    }
}

/// The outcome of a successful run.
pub struct Evaluation {
    pub lead: Lead,
    pub changes: Changes,
    /// Live files that failed (their changes for the event were dropped).
    pub failed: Vec<RuleError>,
    /// What the shadow files would have done (nothing of it is in `lead`/`changes`).
    pub shadow: Vec<ShadowRun>,
}

/// One shadow file's run for one event: its would-be changes, or its error.
#[derive(Debug)]
pub struct ShadowRun {
    /// As shown (`rules/55-webinar-fan.rhai`).
    pub file: Arc<str>,
    /// The file name in the rules folder.
    pub name: String,
    pub result: Result<Changes, RuleError>,
}

pub(crate) fn call(
    sandbox: &Sandbox,
    engine: &Engine,
    file: &RuleFile,
    function: &str,
    args: Vec<Dynamic>,
) -> Result<Dynamic, RuleError> {
    let mut scope = Scope::new();
    let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
    with_deadline(sandbox.timeout, || {
        engine
            .call_fn_with_options::<Dynamic>(options, &mut scope, &file.ast, function, args)
            .map_err(|e| RuleError::from_eval(&file.shown, &e, sandbox.limits))
    })
}

/// Runs `go` on the normal engine; if it fails without a position (a hit limit), runs
/// it again on the locating engine to find where the rule was when it was stopped.
pub(crate) fn with_position<T>(
    sandbox: &Sandbox,
    go: impl Fn(&Engine) -> Result<T, RuleError>,
) -> Result<T, RuleError> {
    match go(&sandbox.engine) {
        Err(mut e) if e.line == 0 => {
            if let Some((file, pos)) = sandbox.locate(|engine| {
                let _ = go(engine);
            }) {
                if !file.is_empty() {
                    e.file = file;
                }
                e.line = pos.line().unwrap_or(0);
                e.column = pos.position().unwrap_or(0);
            }
            Err(e)
        }
        other => other,
    }
}

/// Runs every live `on_event` for one event, starting from `lead`, then every shadow
/// file (see [`RuleSet::shadow`]) on a copy of the lead as the live files left it.
///
/// A live file that fails for the event is left out: its changes for the event are
/// dropped, the files after it start from the lead as the files before it left it, and
/// its error is in [`Evaluation::failed`]. Only an error of the daemon itself
/// ([`RuleError::transient`]) fails the whole run.
pub fn run_event(
    sandbox: &Sandbox,
    rules: &RuleSet,
    ctx: &Context,
    lead: &Lead,
    event: &EventView,
) -> Result<Evaluation, RuleError> {
    run_event_files(sandbox, rules, ctx, lead, event, None)
}

/// Like [`run_event`]; with `only`, runs just the live files of that name (a retry of
/// the files that failed for the event) and no shadow file.
pub fn run_event_files(
    sandbox: &Sandbox,
    rules: &RuleSet,
    ctx: &Context,
    lead: &Lead,
    event: &EventView,
    only: Option<&[String]>,
) -> Result<Evaluation, RuleError> {
    let live: Vec<&Arc<RuleFile>> = rules
        .files
        .iter()
        .filter(|f| f.has_on_event && !rules.is_shadow(&f.name))
        .filter(|f| only.is_none_or(|o| o.contains(&f.name)))
        .collect();
    let mut shared = event_dynamic(event);
    let mut failed: Vec<RuleError> = Vec::new();
    let mut left_out: Vec<usize> = Vec::new();
    // A failing file is left out and the run starts over (rules are pure: the files
    // before it come to the same result), so the common case copies nothing.
    let session = loop {
        let failing = std::cell::Cell::new(None);
        let run = with_position(sandbox, |engine| {
            let handle = ctx.session(lead, shared.1, shared.2, Arc::from(""));
            for (i, file) in live.iter().enumerate() {
                if left_out.contains(&i) {
                    continue;
                }
                handle.set_file(&file.shown);
                let started = std::time::Instant::now();
                let called = call(
                    sandbox,
                    engine,
                    file,
                    ON_EVENT,
                    vec![Dynamic::from(handle.clone()), shared.0.clone()],
                );
                file.run_time.record(started.elapsed());
                if let Err(e) = called {
                    failing.set(Some(i));
                    return Err(e);
                }
            }
            Ok(handle.finish())
        });
        match run {
            Ok(s) => break s,
            Err(e) if e.transient => return Err(e),
            Err(e) => match failing.get() {
                Some(i) if !left_out.contains(&i) => {
                    left_out.push(i);
                    failed.push(e);
                    // A fresh event map: a file may have changed the one it was given.
                    shared = event_dynamic(event);
                }
                _ => return Err(e),
            },
        }
    };
    let shadow = if only.is_some() || rules.shadow.is_empty() {
        Vec::new()
    } else {
        run_shadow(sandbox, rules, ctx, &session.lead, event)
    };
    Ok(Evaluation {
        lead: session.lead,
        changes: session.changes,
        failed,
        shadow,
    })
}

/// Runs each shadow file on its own copy of `lead`: what it would do, or its error.
fn run_shadow(
    sandbox: &Sandbox,
    rules: &RuleSet,
    ctx: &Context,
    lead: &Lead,
    event: &EventView,
) -> Vec<ShadowRun> {
    rules
        .files
        .iter()
        .filter(|f| f.has_on_event && rules.is_shadow(&f.name))
        .map(|file| {
            let shared = event_dynamic(event);
            let result = with_position(sandbox, |engine| {
                let handle = ctx.session(lead, shared.1, shared.2, Arc::clone(&file.shown));
                let _ = call(
                    sandbox,
                    engine,
                    file,
                    ON_EVENT,
                    vec![Dynamic::from(handle.clone()), shared.0.clone()],
                )?;
                Ok(handle.finish().changes)
            });
            ShadowRun {
                file: Arc::clone(&file.shown),
                name: file.name.clone(),
                result,
            }
        })
        .collect()
}

/// The event map, shared so that handing it to each rule file does not copy it.
pub(crate) fn event_dynamic(event: &EventView) -> (Dynamic, DateTime<Utc>, i64) {
    (event.to_dynamic().into_shared(), event.at, event.seq)
}

/// Runs `function(lead)` of one file (a scheduled job) at time `at`.
pub fn run_function(
    sandbox: &Sandbox,
    file: &RuleFile,
    function: &str,
    ctx: &Context,
    lead: &Lead,
    at: DateTime<Utc>,
) -> Result<Evaluation, RuleError> {
    with_position(sandbox, |engine| {
        let handle = ctx.session(lead, at, i64::MAX, Arc::clone(&file.shown));
        let _ = call(
            sandbox,
            engine,
            file,
            function,
            vec![Dynamic::from(handle.clone())],
        )?;
        let s = handle.finish();
        Ok(Evaluation {
            lead: s.lead,
            changes: s.changes,
            failed: Vec::new(),
            shadow: Vec::new(),
        })
    })
}

/// Calls `function(lead)` of one file for its answer (e.g. the owner a team's
/// assignment rule picks) and returns it as text; changes it asks for are dropped.
pub fn ask_function(
    sandbox: &Sandbox,
    file: &RuleFile,
    function: &str,
    ctx: &Context,
    lead: &Lead,
    at: DateTime<Utc>,
) -> Result<String, RuleError> {
    with_position(sandbox, |engine| {
        let handle = ctx.session(lead, at, i64::MAX, Arc::clone(&file.shown));
        let answer = call(sandbox, engine, file, function, vec![Dynamic::from(handle)])?;
        if answer.is_unit() {
            return Ok(String::new());
        }
        answer
            .into_immutable_string()
            .map(|s| s.to_string())
            .map_err(|t| {
                RuleError::new(
                    &file.shown,
                    format!("{function}(lead) must return a text (an owner id, or \"\"), not {t}"),
                )
            })
    })
}
