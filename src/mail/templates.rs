//! Mail templates (Tera) from the templates folder.
//!
//! A mail named `trigger/use-case` is three files in a locale folder:
//! `de/trigger/use-case.subject`, `.txt` and `.html`. They usually extend the locale's
//! layouts (`de/layout.txt`, `de/layout.html`) with the footer, imprint and unsubscribe
//! link. `.html` files escape every value; the lead's own data can never inject markup.
//! A lead whose `locale` is `en` (or `en-GB`) gets `en/...` when that exists, otherwise
//! the default locale.
//!
//! Every variable must exist: a typo is an error with file:line:column at
//! `nurtured templates check` and on reload, not an empty spot in a sent mail. Each
//! mail is rendered with the `data` the rules pass to it ([`super::template_data`]); a
//! mail that no longer renders after a reload keeps its last good version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tera::{Kwargs, State, Tera, TeraResult};

use super::template_data::TemplateData;

/// The three parts of a mail.
pub const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// A template problem, with the file and position when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("{location}: {message}")]
pub struct TemplateError {
    /// `templates/de/x.html:2:7`, or the file or folder when no position applies.
    pub location: String,
    pub message: String,
    /// The mail (`de/trigger/use-case`) that does not render, when it is one.
    #[serde(skip)]
    pub mail: Option<String>,
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The locale folder used.
    pub locale: String,
}

/// The compiled templates, swapped as a whole on reload.
pub struct Templates {
    dir: PathBuf,
    shown: String,
    default_locale: String,
    current: RwLock<Arc<Compiled>>,
    errors: RwLock<Vec<TemplateError>>,
    /// Where the rules are, to read the `data` they pass on each reload.
    rules: RwLock<Option<(PathBuf, String)>>,
}

struct Compiled {
    tera: Tera,
    /// Mail names per locale: `de` -> {`trigger/use-case`, ...}.
    mails: BTreeMap<String, BTreeSet<String>>,
    /// Mails (`de/trigger/x`) that did not render after a reload: their last good
    /// version, which stays in use.
    kept: BTreeMap<String, Arc<Compiled>>,
}

impl Templates {
    /// Loads the folder; fails with every problem found.
    pub fn load(dir: &Path, shown: &str, default_locale: &str) -> Result<Self, Vec<TemplateError>> {
        let compiled = compile(dir, shown)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            shown: shown.to_string(),
            default_locale: default_locale.to_string(),
            current: RwLock::new(Arc::new(compiled)),
            errors: RwLock::new(Vec::new()),
            rules: RwLock::new(None),
        })
    }

    /// Reads the `data` that the rules of `dir` pass to each mail at every reload, and
    /// now: a mail that does not render with it shows in [`Self::errors`].
    pub fn with_rules(self, dir: &Path, shown: &str) -> Self {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) =
            Some((dir.to_path_buf(), shown.to_string()));
        let data = self.rule_data();
        let problems = self.render_all(&self.compiled(), &data);
        for e in &problems {
            tracing::warn!(location = %e.location, error = %e.message, "template does not render");
        }
        *self.errors.write().unwrap_or_else(|e| e.into_inner()) = problems;
        self
    }

    fn rule_data(&self) -> TemplateData {
        match &*self.rules.read().unwrap_or_else(|e| e.into_inner()) {
            Some((dir, shown)) => TemplateData::collect(dir, shown),
            None => TemplateData::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the folder again; on errors the previous templates stay live. A mail that
    /// compiles but does not render (an unknown variable) keeps its last good version.
    pub fn reload(&self) -> Vec<TemplateError> {
        match compile(&self.dir, &self.shown) {
            Ok(mut c) => {
                let data = self.rule_data();
                let problems = self.render_all(&c, &data);
                let previous = self.compiled();
                for e in &problems {
                    let kept = e
                        .mail
                        .as_ref()
                        .and_then(|key| Some((key.clone(), previous.good(key)?)));
                    if let Some((key, good)) = kept {
                        tracing::warn!(
                            location = %e.location,
                            error = %e.message,
                            "template does not render; its last good version stays in use"
                        );
                        c.kept.insert(key, good);
                    } else {
                        tracing::warn!(location = %e.location, error = %e.message, "template does not render");
                    }
                }
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
                *self.errors.write().unwrap_or_else(|e| e.into_inner()) = problems.clone();
                tracing::info!(dir = %self.shown, problems = problems.len(), "templates reloaded");
                problems
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "template reload failed; the previous templates stay live");
                }
                *self.errors.write().unwrap_or_else(|e| e.into_inner()) = errors.clone();
                errors
            }
        }
    }

    /// Problems of the last reload (the templates in use are the previous ones).
    pub fn errors(&self) -> Vec<TemplateError> {
        self.errors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn compiled(&self) -> Arc<Compiled> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The locale folder used for a lead with `locale` (`en-GB` -> `en`).
    pub fn locale_for(&self, name: &str, locale: Option<&str>) -> Option<String> {
        let c = self.compiled();
        let wanted = locale
            .map(|l| l.split(['-', '_']).next().unwrap_or(l).to_lowercase())
            .filter(|l| !l.is_empty());
        [wanted, Some(self.default_locale.clone())]
            .into_iter()
            .flatten()
            .find(|l| c.mails.get(l).is_some_and(|m| m.contains(name)))
    }

    /// Mail names found, per locale.
    pub fn mails(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.compiled().mails.clone()
    }

    /// Renders mail `name` for a lead with `locale`; `context` is what
    /// [`sample_context`] shows.
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        context: &Value,
    ) -> Result<Rendered, TemplateError> {
        let Some(locale) = self.locale_for(name, locale) else {
            return Err(TemplateError {
                location: format!("{}/{}/{name}", self.shown, self.default_locale),
                message: format!(
                    "no mail template `{name}`: add {name}.subject, {name}.txt and {name}.html \
                     under {}/{}/",
                    self.shown, self.default_locale
                ),
                mail: None,
            });
        };
        let c = self.compiled();
        let c = c.good(&format!("{locale}/{name}")).unwrap_or(c);
        self.render_in(&c, name, &locale, context)
    }

    /// Renders mail `name` of `locale` with the templates `c`.
    fn render_in(
        &self,
        c: &Compiled,
        name: &str,
        locale: &str,
        context: &Value,
    ) -> Result<Rendered, TemplateError> {
        let ctx = tera::Context::from_serialize(context).map_err(|e| TemplateError {
            location: name.to_string(),
            message: e.to_string(),
            mail: None,
        })?;
        let part = |ext: &str| {
            c.tera
                .render(&format!("{locale}/{name}.{ext}"), &ctx)
                .map_err(|e| error(&self.shown, &e))
        };
        let subject = part("subject")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Rendered {
            subject,
            text: part("txt")?,
            html: part("html")?,
            locale: locale.to_string(),
        })
    }

    /// Renders every mail of every locale of `c` against the sample lead, once per
    /// `data` the rules pass to it (the sample `data` for mails no rule asks for).
    fn render_all(&self, c: &Compiled, data: &TemplateData) -> Vec<TemplateError> {
        let sample = sample_context();
        let mut handoff = sample_context();
        handoff["data"] = crate::handoff::brief::sample_notification();
        handoff["mail"]["marketing"] = json!(false);
        let mut problems = Vec::new();
        for (locale, names) in &c.mails {
            for name in names {
                let key = format!("{locale}/{name}");
                let calls = data.samples(name);
                let result = if name.starts_with("handoff/") {
                    self.render_in(c, name, locale, &handoff).err()
                } else if calls.is_empty() {
                    self.render_in(c, name, locale, &sample).err()
                } else {
                    calls.iter().find_map(|(at, d)| {
                        let mut ctx = sample.clone();
                        ctx["data"] = d.clone();
                        let mut e = self.render_in(c, name, locale, &ctx).err()?;
                        if e.message.contains("data.") || e.message.contains("not defined") {
                            e.message = format!(
                                "{} (the rule call {at} does not pass it; the rules pass to \
                                 `{name}`: {}; add the key to the call's `data` map or take it \
                                 out of the template)",
                                e.message,
                                data.describe(name)
                            );
                        }
                        Some(e)
                    })
                };
                if let Some(mut e) = result {
                    e.mail = Some(key);
                    problems.push(e);
                }
            }
        }
        problems
    }

    /// Renders every mail of every locale against a sample lead, and checks that the
    /// `required` mail names (from streams and rules) exist in the default locale.
    pub fn check(&self, required: &[(String, String)], data: &TemplateData) -> Vec<TemplateError> {
        let mut problems = Vec::new();
        let c = self.compiled();
        for (name, needed_by) in required {
            if !c
                .mails
                .get(&self.default_locale)
                .is_some_and(|m| m.contains(name))
            {
                problems.push(TemplateError {
                    location: format!("{}/{}/{name}", self.shown, self.default_locale),
                    message: format!(
                        "missing mail template `{name}` (used by {needed_by}): add {name}.subject, \
                         {name}.txt and {name}.html"
                    ),
                    mail: None,
                });
            }
        }
        problems.extend(self.render_all(&c, data));
        problems
    }
}

impl Compiled {
    /// The templates that render mail `key` (`de/trigger/x`): its kept last good
    /// version, or these when they have the mail.
    fn good(self: &Arc<Self>, key: &str) -> Option<Arc<Compiled>> {
        if let Some(kept) = self.kept.get(key) {
            return Some(kept.clone());
        }
        let (locale, name) = key.split_once('/')?;
        self.mails
            .get(locale)
            .is_some_and(|m| m.contains(name))
            .then(|| self.clone())
    }
}

/// Reads and compiles the folder.
fn compile(dir: &Path, shown: &str) -> Result<Compiled, Vec<TemplateError>> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files).map_err(|e| {
        vec![TemplateError {
            location: shown.to_string(),
            message: format!("cannot read the templates folder: {e}"),
            mail: None,
        }]
    })?;
    let mut tera = Tera::new();
    tera.register_filter("date", date_filter);
    let mut problems = Vec::new();
    // Each file is checked alone first, so every syntax error is reported, not only the
    // first; then all together, for inheritance.
    for (name, text) in &files {
        let mut alone = Tera::new();
        alone.register_filter("date", date_filter);
        if let Err(e) = alone.add_raw_template(name, text)
            && matches!(e.kind(), tera::ErrorKind::SyntaxError(_))
        {
            problems.push(error(shown, &e));
        }
    }
    if problems.is_empty()
        && let Err(e) = tera.add_raw_templates(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    {
        problems.push(error(shown, &e));
    }
    // Mails: names that have all three parts; a mail with a part missing is an error.
    let mut parts: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (name, _) in &files {
        let Some((locale, rest)) = name.split_once('/') else {
            continue;
        };
        let Some((mail, ext)) = rest.rsplit_once('.') else {
            continue;
        };
        if mail == "layout" || mail.starts_with('_') || mail.contains("/_") {
            continue;
        }
        if PARTS.contains(&ext) {
            parts
                .entry((locale.to_string(), mail.to_string()))
                .or_default()
                .insert(ext.to_string());
        }
    }
    let mut mails: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((locale, mail), found) in parts {
        let missing: Vec<&str> = PARTS
            .iter()
            .copied()
            .filter(|p| !found.contains(*p))
            .collect();
        if missing.is_empty() {
            mails.entry(locale).or_default().insert(mail);
        } else {
            problems.push(TemplateError {
                location: format!("{shown}/{locale}/{mail}"),
                message: format!(
                    "a mail needs .subject, .txt and .html; missing: {}",
                    missing
                        .iter()
                        .map(|p| format!("{mail}.{p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                mail: None,
            });
        }
    }
    if problems.is_empty() {
        Ok(Compiled {
            tera,
            mails,
            kept: BTreeMap::new(),
        })
    } else {
        Err(problems)
    }
}

/// Template files under `dir`, named by their path relative to `root` with `/`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().to_string();
        if file_name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| PARTS.contains(&e.to_string_lossy().as_ref()))
        {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect::<Vec<_>>()
                .join("/");
            out.push((name, std::fs::read_to_string(&path)?));
        }
    }
    Ok(())
}

/// A Tera error as `templates/de/x.html:2:7: message`.
fn error(shown: &str, e: &tera::Error) -> TemplateError {
    match e.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            let span = r.span();
            TemplateError {
                location: format!(
                    "{shown}/{}:{}:{}",
                    r.filename(),
                    span.start_line,
                    span.start_col + 1
                ),
                message: hint(r.message()),
                mail: None,
            }
        }
        _ => {
            let text = e.to_string();
            // Other errors name the file in their text (`--> de/x.html:1:8`).
            let location = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("--> "))
                .map(|l| format!("{shown}/{l}"))
                .unwrap_or_else(|| shown.to_string());
            let message = text
                .lines()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or(&text)
                .to_string();
            TemplateError {
                location,
                message: hint(&message),
                mail: None,
            }
        }
    }
}

/// Adds what to do to Tera's message about an unknown variable.
fn hint(message: &str) -> String {
    if message.contains("is not defined") {
        format!(
            "{message} (the variables are described in docs/mail.md under \"Mail templates\"; \
             `nurtured templates check` renders every template)"
        )
    } else {
        message.to_string()
    }
}

/// `{{ value | date(format="%d.%m.%Y") }}` for Unix milliseconds or RFC 3339 text.
#[allow(clippy::needless_pass_by_value)] // the signature Tera asks for
fn date_filter(value: &tera::Value, kwargs: Kwargs, _: &State) -> TeraResult<String> {
    let format = kwargs.get::<&str>("format")?.unwrap_or("%d.%m.%Y");
    let at: Option<DateTime<Utc>> = if let Some(ms) = value.as_i64() {
        DateTime::from_timestamp_millis(ms)
    } else if let Some(s) = value.as_str() {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    } else {
        None
    };
    let at = at.ok_or_else(|| {
        tera::Error::message(format!(
            "date: expected Unix milliseconds or an RFC 3339 time, not {}",
            value.name()
        ))
    })?;
    let mut out = String::new();
    use std::fmt::Write as _;
    write!(out, "{}", at.format(format)).map_err(|_| {
        tera::Error::message(format!(
            "date: `{format}` is not a strftime format (e.g. \"%d.%m.%Y %H:%M\")"
        ))
    })?;
    Ok(out)
}

/// The context every template gets, filled with a sample lead: the reference for the
/// variables a template may use (see docs/mail.md).
pub fn sample_context() -> Value {
    json!({
        "lead": {
            "id": 1,
            "email": "anna.beispiel@example.com",
            "first_name": "Anna",
            "last_name": "Beispiel",
            "name": "Anna Beispiel",
            "company": "Beispiel AG",
            "title": "Leiterin IT",
            "industry": "Maschinenbau",
            "country": "DE",
            "locale": "de",
            "stage": "lead",
            "fit": 35.0,
            "interest": 42.0,
            "tags": ["webinar"],
            "attributes": {},
        },
        "event": {"name": "Content Downloaded", "properties": {"topic": "security"}},
        "data": {"topic": "security"},
        "stream": {"name": "new-leads", "step": 1},
        "mail": {"id": 1, "template": "sample", "marketing": true},
        "topic": "insights",
        "preferences_url": "https://mail.example.com/p/TOKEN",
        "links": {
            "unsubscribe": "https://mail.example.com/u/TOKEN",
            "preferences": "https://mail.example.com/p/TOKEN",
            "confirm": "https://mail.example.com/confirm/TOKEN",
        },
        "sender": {
            "company": "Beispiel GmbH",
            "address": "Musterstraße 1, 10115 Berlin",
            "website": "https://www.example.com",
            "imprint_url": "https://www.example.com/impressum",
            "privacy_url": "https://www.example.com/datenschutz",
        },
        "now": "2026-03-02T09:00:00Z",
    })
}

/// The mail names the configuration and the rules use, with who uses them: every
/// stream step, and each `send_mail("...")` / `send_opt_in()` in the rule files.
pub fn required(config: &crate::config::Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in &config.sales.teams {
        let by = format!("sales team `{}`", t.name);
        out.push(("handoff/new".to_string(), by.clone()));
        for e in &t.ladder {
            use crate::config::sales::Step;
            let name = match e.action {
                Step::Remind => "handoff/reminder",
                Step::Escalate => "handoff/escalation",
                Step::Reassign => "handoff/new",
                Step::Return => continue,
            };
            out.push((name.to_string(), by.clone()));
        }
    }
    for s in &config.streams {
        for (i, step) in s.steps.iter().enumerate() {
            out.push((
                step.template.clone(),
                format!("stream `{}` step {}", s.name, i + 1),
            ));
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(&config.rules_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
    {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let shown = format!(
            "{}/{}",
            config.rules_shown,
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(at) = rest.find("send_mail(\"") {
                rest = &rest[at + "send_mail(\"".len()..];
                if let Some(end) = rest.find('"') {
                    out.push((rest[..end].to_string(), format!("{shown}:{}", n + 1)));
                }
            }
            if code.contains("send_opt_in(") {
                out.push((
                    crate::rules::mail_api::OPT_IN_TEMPLATE.to_string(),
                    format!("{shown}:{}", n + 1),
                ));
            }
        }
    }
    out
}
