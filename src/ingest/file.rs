//! `nurtured ingest FILE.jsonl`: one Segment event per line (with its `type`), checked
//! like the HTTP API. The whole file is checked before anything is stored; then it is
//! stored in chunks. Lines without a `messageId` get one derived from their content,
//! so running the same file twice adds nothing.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::segment::{self, At, InputError, Item};

/// Lines stored per transaction.
pub const CHUNK: usize = 1000;

/// A problem with a line of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {path}: {message}")]
pub struct LineError {
    pub file: String,
    pub line: usize,
    pub path: String,
    pub message: String,
}

/// A checked file: items with their line numbers.
#[derive(Debug)]
pub struct Checked {
    pub items: Vec<Item>,
    pub lines: Vec<usize>,
}

/// Reads and checks every line; blank lines and lines starting with `#` are skipped.
pub fn check(path: &Path, now: DateTime<Utc>) -> Result<Checked, Vec<LineError>> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![LineError {
                file: shown,
                line: 0,
                path: "$".into(),
                message: format!("cannot read the file: {e}"),
            }]);
        }
    };
    let mut out = Checked {
        items: Vec::new(),
        lines: Vec::new(),
    };
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let to_line = |e: InputError| LineError {
            file: shown.clone(),
            line: i + 1,
            path: e.path,
            message: e.message,
        };
        let value: Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(e) => {
                errors.push(to_line(InputError {
                    index: None,
                    path: "$".into(),
                    message: format!("not valid JSON: {e}"),
                }));
                continue;
            }
        };
        let at = At {
            index: None,
            prefix: "",
        };
        match segment::parse_item(&value, None, at, now, &mut content_id) {
            Ok(item) => {
                out.items.push(item);
                out.lines.push(i + 1);
            }
            Err(errs) => errors.extend(errs.into_iter().map(to_line)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A message id derived from the event's content.
pub fn content_id(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    format!("sha256:{}", hex::encode(&digest[..16]))
}
