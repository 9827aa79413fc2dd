//! The compiled rule files of the rules folder, in file-name order, and their reload:
//! a file that changed is compiled again; if it no longer compiles, its previous
//! version stays live and the error is kept for `/v1/stats` and the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rhai::AST;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::RuleError;
use super::property_check;
use super::sandbox::Sandbox;

/// The function called for every event.
pub const ON_EVENT: &str = "on_event";

/// One compiled rule file.
pub struct RuleFile {
    /// File name inside the rules folder, e.g. `40-funnel.rhai`.
    pub name: String,
    /// Path as shown in messages and history, e.g. `rules/40-funnel.rhai`.
    pub shown: Arc<str>,
    pub ast: AST,
    pub has_on_event: bool,
    pub digest: String,
    pub loaded_at: DateTime<Utc>,
    /// Run times of its `on_event` (`nurtured_rule_file_duration_seconds`).
    pub run_time: metrics::Histogram,
}

impl RuleFile {
    pub fn has_function(&self, name: &str, params: usize) -> bool {
        self.ast
            .iter_functions()
            .any(|f| f.name == name && f.params.len() == params)
    }
}

/// A consistent set of rule files, swapped as a whole on reload.
#[derive(Default)]
pub struct RuleSet {
    pub files: Vec<Arc<RuleFile>>,
    /// Names of the files that run in shadow (`[rules] shadow`): after the live files,
    /// on a copy of the lead, with what they ask for recorded and not applied.
    pub shadow: Arc<BTreeSet<String>>,
}

impl RuleSet {
    pub fn file(&self, name: &str) -> Option<&Arc<RuleFile>> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Whether the file named `name` runs in shadow.
    pub fn is_shadow(&self, name: &str) -> bool {
        self.shadow.contains(name)
    }
}

/// Status of the rules for `/v1/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct RulesStatus {
    pub version: u64,
    pub files: Vec<FileStatus>,
    pub errors: Vec<RuleError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    pub file: String,
    pub digest: String,
    pub loaded_at: DateTime<Utc>,
    /// Runs in shadow: recorded, not applied.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// The live rules.
pub struct Rules {
    dir: PathBuf,
    shown_dir: String,
    current: RwLock<Arc<RuleSet>>,
    state: RwLock<(u64, Vec<RuleError>)>,
    /// Files left out by [`Rules::load_lenient`] because they did not compile.
    left_out: Vec<RuleError>,
}

/// Reads the `*.rhai` files of `dir` in name order.
fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, RuleError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        RuleError::new(
            &shown,
            format!("cannot read the rules folder: {e}; set rules_dir in nurtured.toml"),
        )
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rhai") && path.is_file() {
            let name = entry.file_name().to_string_lossy().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((name, text)),
                Err(e) => {
                    return Err(RuleError::new(
                        &format!("{shown}/{name}"),
                        format!("cannot read: {e}"),
                    ));
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Compiles one file's text; the first error if it does not compile.
pub fn compile(
    sandbox: &Sandbox,
    name: &str,
    shown: &str,
    text: &str,
) -> Result<RuleFile, RuleError> {
    compile_all(sandbox, name, shown, text).map_err(|mut e| e.swap_remove(0))
}

/// Compiles one file's text; every error found (a syntax error stops at the first, the
/// unknown properties of [`property_check`] are all listed).
pub fn compile_all(
    sandbox: &Sandbox,
    name: &str,
    shown: &str,
    text: &str,
) -> Result<RuleFile, Vec<RuleError>> {
    let mut ast = sandbox
        .engine
        .compile(text)
        .map_err(|e| vec![RuleError::from_parse(shown, &e)])?;
    ast.set_source(shown);
    let mut file = RuleFile {
        name: name.to_string(),
        shown: shown.into(),
        ast,
        has_on_event: false,
        digest: hex::encode(&Sha256::digest(text.as_bytes())[..8]),
        loaded_at: Utc::now(),
        run_time: sandbox
            .metrics
            .as_ref()
            .map_or_else(metrics::Histogram::noop, |m| m.rule_file(shown)),
    };
    file.has_on_event = file.has_function(ON_EVENT, 2);
    if !file.has_on_event && file.ast.iter_functions().any(|f| f.name == ON_EVENT) {
        return Err(vec![RuleError::new(
            shown,
            "on_event must take two parameters: fn on_event(lead, event)",
        )]);
    }
    let unknown = property_check::check(&file.ast, shown);
    if !unknown.is_empty() {
        return Err(unknown);
    }
    Ok(file)
}

impl Rules {
    /// Compiles every file of `dir`; all must compile. `shown_dir` is how the folder
    /// is named in messages and history (as written in the config, e.g. `rules`).
    pub fn load(sandbox: &Sandbox, dir: &Path, shown_dir: &str) -> Result<Self, Vec<RuleError>> {
        Self::load_with_shadow(sandbox, dir, shown_dir, &[])
    }

    /// Like [`Rules::load`], with the files named in `shadow` running in shadow. A
    /// shadow file that does not compile does not stop the others: it is left out and
    /// its error shows in [`Rules::status`].
    pub fn load_with_shadow(
        sandbox: &Sandbox,
        dir: &Path,
        shown_dir: &str,
        shadow: &[String],
    ) -> Result<Self, Vec<RuleError>> {
        let shown_dir = shown_dir.trim_end_matches('/').to_string();
        let texts = read_dir(dir).map_err(|e| vec![e])?;
        let mut files = Vec::new();
        let mut errors = Vec::new();
        let mut shadow_errors = Vec::new();
        for (name, text) in &texts {
            match compile_all(sandbox, name, &format!("{shown_dir}/{name}"), text) {
                Ok(f) => files.push(Arc::new(f)),
                Err(all) if shadow.contains(name) => {
                    for e in &all {
                        tracing::error!(error = %e, "shadow rule file does not compile; it does not run");
                    }
                    shadow_errors.extend(all);
                }
                Err(all) => errors.extend(all),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shown_dir,
            current: RwLock::new(Arc::new(RuleSet {
                files,
                shadow: Arc::new(shadow.iter().cloned().collect()),
            })),
            state: RwLock::new((1, shadow_errors)),
            left_out: Vec::new(),
        })
    }

    /// Sets the files that run in shadow (`[rules] shadow`, read again while the daemon
    /// runs). Returns whether the list changed.
    pub fn set_shadow(&self, shadow: &[String]) -> bool {
        let wanted: BTreeSet<String> = shadow.iter().cloned().collect();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if *current.shadow == wanted {
            return false;
        }
        tracing::info!(shadow = ?wanted, "rule files in shadow changed");
        *current = Arc::new(RuleSet {
            files: current.files.clone(),
            shadow: Arc::new(wanted),
        });
        state.0 += 1;
        true
    }

    /// Compiles the files of `dir` that compile and keeps the errors of the others
    /// (in [`Rules::left_out`] and the status), for commands that only read: they work
    /// while a rule file is broken. Whatever runs rules refuses such a set.
    /// A shadow file that does not compile is not left out: it never stops processing.
    pub fn load_lenient(sandbox: &Sandbox, dir: &Path, shown_dir: &str, shadow: &[String]) -> Self {
        let shown = shown_dir.trim_end_matches('/').to_string();
        let (files, errors, shadow_errors) = match read_dir(dir) {
            Err(e) => (Vec::new(), vec![e], Vec::new()),
            Ok(texts) => {
                let mut files = Vec::new();
                let mut errors = Vec::new();
                let mut shadow_errors = Vec::new();
                for (name, text) in &texts {
                    match compile_all(sandbox, name, &format!("{shown}/{name}"), text) {
                        Ok(f) => files.push(Arc::new(f)),
                        Err(all) if shadow.contains(name) => shadow_errors.extend(all),
                        Err(all) => errors.extend(all),
                    }
                }
                (files, errors, shadow_errors)
            }
        };
        let mut status = errors.clone();
        status.extend(shadow_errors);
        Self {
            dir: dir.to_path_buf(),
            shown_dir: shown,
            current: RwLock::new(Arc::new(RuleSet {
                files,
                shadow: Arc::new(shadow.iter().cloned().collect()),
            })),
            state: RwLock::new((1, status)),
            left_out: errors,
        }
    }

    /// The errors of the files [`Rules::load_lenient`] left out; empty when every file
    /// compiled (always after [`Rules::load`]).
    pub fn left_out(&self) -> &[RuleError] {
        &self.left_out
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn shown_dir(&self) -> &str {
        &self.shown_dir
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the folder. Changed files are compiled; a file that fails keeps its
    /// previous version. Returns the errors of this reload.
    pub fn reload(&self, sandbox: &Sandbox) -> Vec<RuleError> {
        let texts = match read_dir(&self.dir) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "rules folder unreadable; keeping the loaded rules");
                self.state.write().unwrap_or_else(|e| e.into_inner()).1 = vec![e.clone()];
                return vec![e];
            }
        };
        let old = self.current();
        let by_name: BTreeMap<&str, &Arc<RuleFile>> =
            old.files.iter().map(|f| (f.name.as_str(), f)).collect();
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in &texts {
            let digest = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
            let previous = by_name.get(name.as_str());
            if let Some(p) = previous.filter(|p| p.digest == digest) {
                files.push(Arc::clone(p));
                continue;
            }
            match compile_all(sandbox, name, &format!("{}/{name}", self.shown_dir), text) {
                Ok(f) => {
                    tracing::info!(file = %f.shown, "rule file loaded");
                    files.push(Arc::new(f));
                }
                Err(all) => {
                    let e = &all[0];
                    match previous {
                        Some(p) => {
                            tracing::error!(error = %e, "rule file does not compile; its previous version stays live");
                            files.push(Arc::clone(p));
                        }
                        None => {
                            tracing::error!(error = %e, "new rule file does not compile; it is not loaded");
                        }
                    }
                    errors.extend(all);
                }
            }
        }
        let changed = files.len() != old.files.len()
            || files
                .iter()
                .zip(old.files.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if changed {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            // The shadow list as it is now (it may have changed during the compile).
            let shadow = current.shadow.clone();
            *current = Arc::new(RuleSet { files, shadow });
            state.0 += 1;
        }
        state.1 = errors.clone();
        errors
    }

    pub fn status(&self) -> RulesStatus {
        let set = self.current();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        RulesStatus {
            version: state.0,
            files: set
                .files
                .iter()
                .map(|f| FileStatus {
                    file: f.shown.to_string(),
                    digest: f.digest.clone(),
                    loaded_at: f.loaded_at,
                    shadow: set.is_shadow(&f.name),
                })
                .collect(),
            errors: state
                .1
                .iter()
                .cloned()
                .chain(
                    set.shadow
                        .iter()
                        .filter(|n| {
                            set.file(n).is_none()
                                && !state.1.iter().any(|e| e.file.ends_with(&format!("/{n}")))
                        })
                        .map(|n| {
                    RuleError::new(
                        &format!("{}/{n}", self.shown_dir),
                        "named in [rules] shadow but not loaded: the file is missing or does \
                         not compile; check the name and `nurtured rules check`",
                    )
                        }),
                )
                .collect(),
        }
    }
}

/// Compiles every file of `dir` and returns all errors: `nurtured rules check`.
pub fn check_dir(sandbox: &Sandbox, dir: &Path, shown_dir: &str) -> (usize, Vec<RuleError>) {
    let shown_dir = shown_dir.trim_end_matches('/');
    match read_dir(dir) {
        Err(e) => (0, vec![e]),
        Ok(texts) => {
            let errors: Vec<_> = texts
                .iter()
                .filter_map(|(name, text)| {
                    compile_all(sandbox, name, &format!("{shown_dir}/{name}"), text).err()
                })
                .flatten()
                .collect();
            (texts.len(), errors)
        }
    }
}
