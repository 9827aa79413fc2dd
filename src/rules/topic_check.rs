//! `nurtured rules check` looks at each `subscribed("...")` with a literal topic id in
//! the rule files and reports ids that are not in `[[topics]]` with their position, so
//! a typo shows before an event fails on it.

use std::path::Path;

use super::RuleError;
use crate::config::topics::Topics;

const CALL: &str = "subscribed(\"";

/// The unknown topic ids named by `subscribed("...")` in the `.rhai` files of `dir`.
pub fn unknown_topics(dir: &Path, shown_dir: &str, topics: &Topics) -> Vec<RuleError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new(); // the compile check reports an unreadable folder
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let shown = format!("{}/{name}", shown_dir.trim_end_matches('/'));
        out.extend(in_text(&shown, &text, topics));
    }
    out
}

fn in_text(shown: &str, text: &str, topics: &Topics) -> Vec<RuleError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut from = 0;
        while let Some(at) = code[from..].find(CALL) {
            let start = from + at + CALL.len();
            let Some(len) = code[start..].find('"') else {
                break;
            };
            let id = &code[start..start + len];
            if topics.get(id).is_none() {
                out.push(RuleError {
                    line: i + 1,
                    column: code[..from + at].chars().count() + 1,
                    ..RuleError::new(
                        shown,
                        format!(
                            "unknown topic `{id}`; the topics are: {} (see [[topics]] in nurtured.toml)",
                            topics.ids().join(", ")
                        ),
                    )
                });
            }
            from = start + len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_are_reported_with_their_position() {
        let topics = Topics::default();
        let text = "fn on_event(lead, event) {\n  if lead.subscribed(\"marketing\") && \
                    lead.subscribed(\"news\") {}\n  // lead.subscribed(\"commented\")\n}\n";
        let errors = in_text("rules/x.rhai", text, &topics);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            "rules/x.rhai:2:43: unknown topic `news`; the topics are: marketing \
             (see [[topics]] in nurtured.toml)"
        );
    }
}
