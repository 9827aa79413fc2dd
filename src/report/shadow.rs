//! What the shadow rules would have done: per file, the would-be actions counted per
//! call site, the errors, and the most recent examples with the lead and the event.
//! Shown by `nurtured rules shadow` and in the `shadow` section of `/v1/stats`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::shadow::{ShadowCount, ShadowExample};
use crate::store::{Store, StoreError};

/// Per shadow file.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowFile {
    /// As shown (`rules/55-webinar-fan.rhai`).
    pub file: String,
    /// Would-be actions in all.
    pub actions: i64,
    /// Events the file failed for (they failed nothing else).
    pub errors: i64,
    /// Per call site and action, most frequent first.
    pub counts: Vec<ShadowCount>,
    /// The most recent actions and errors, newest first.
    pub recent: Vec<ShadowExample>,
}

/// Every shadow file with records (also files promoted or removed since: their records
/// stay until the next `store` reset).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowReport {
    pub files: Vec<ShadowFile>,
    /// The most recent errors of all files, newest first.
    pub errors: Vec<ShadowExample>,
}

impl ShadowReport {
    /// Of one file (`rules/NAME.rhai` or `NAME.rhai`) or all; `recent` examples per file.
    pub async fn load(
        store: &Store,
        file: Option<&str>,
        recent: usize,
    ) -> Result<Self, StoreError> {
        let counts = store.shadow_counts(file).await?;
        let examples = store.shadow_examples(file, recent).await?;
        let mut files: BTreeMap<String, ShadowFile> = BTreeMap::new();
        let entry = |files: &mut BTreeMap<String, ShadowFile>, name: &str| {
            files.entry(name.to_string()).or_insert_with(|| ShadowFile {
                file: name.to_string(),
                actions: 0,
                errors: 0,
                counts: Vec::new(),
                recent: Vec::new(),
            });
        };
        for c in counts {
            entry(&mut files, &c.file);
            let f = files.get_mut(&c.file).expect("just added");
            if c.action == "error" {
                f.errors += c.count;
            } else {
                f.actions += c.count;
            }
            f.counts.push(c);
        }
        let mut errors: Vec<ShadowExample> = Vec::new();
        for x in examples {
            entry(&mut files, &x.file);
            if x.action == "error" {
                errors.push(x.clone());
            }
            files.get_mut(&x.file).expect("just added").recent.push(x);
        }
        errors.sort_by(|a, b| b.at.cmp(&a.at).then(b.seq.cmp(&a.seq)));
        errors.truncate(recent);
        Ok(Self {
            files: files.into_values().collect(),
            errors,
        })
    }

    /// The text `nurtured rules shadow` prints.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if self.files.is_empty() {
            out.push_str(
                "no shadow records: name a rule file in [rules] shadow of the config to run it \
                 in shadow\n",
            );
            return out;
        }
        for f in &self.files {
            let _ = writeln!(
                out,
                "{}: {} would-be action(s), {} error(s)",
                f.file, f.actions, f.errors
            );
            for c in &f.counts {
                let _ = writeln!(out, "  {:>7}  {}  {}", c.count, c.source, c.action);
            }
            if !f.recent.is_empty() {
                out.push_str("  recent:\n");
            }
            for x in &f.recent {
                let when = crate::clock::from_ms(x.at).format("%Y-%m-%d %H:%M:%S");
                match &x.message {
                    Some(m) => {
                        let _ = writeln!(
                            out,
                            "    {when} {} event #{} {}: error: {m}",
                            x.email, x.seq, x.source
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "    {when} {} event #{} {}: {}",
                            x.email, x.seq, x.source, x.action
                        );
                    }
                }
            }
        }
        out.push_str(
            "Shadow files change no lead. To promote one, remove it from [rules] shadow in the \
             config; the daemon applies it from the next event on.\n",
        );
        out
    }
}
