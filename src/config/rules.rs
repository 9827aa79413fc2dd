//! `[rules]`: which rule files run in shadow. The list is checked here once at start,
//! and read again from the config file while the daemon runs (see
//! [`crate::rules::shadow`]), so a file goes into or out of shadow without a restart.

use std::path::Path;

use super::raw::RawRules;

/// Checks the names of `[rules] shadow`: file names of the rules folder, `NAME.rhai`.
pub fn shadow(raw: &RawRules, bad: &dyn Fn(&str, String)) -> Vec<String> {
    let mut out = Vec::new();
    for (i, name) in raw.shadow.iter().enumerate() {
        match check_name(name) {
            Ok(n) => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            Err(m) => bad(&format!("rules.shadow[{i}]"), m),
        }
    }
    out
}

fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.contains('/') || name.contains('\\') || !name.ends_with(".rhai") {
        return Err(format!(
            "`{name}` is not a rule file name: write the name of a file in the rules folder, \
             such as \"55-webinar-fan.rhai\""
        ));
    }
    Ok(name.to_string())
}

/// Reads `[rules] shadow` again from the config file (the daemon watches the file).
/// An error says what is wrong with the file, with its path; the caller keeps the list
/// it had.
pub fn reread_shadow(path: &Path) -> Result<Vec<String>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{shown}: {e}"))?;
    let Some(rules) = table.get("rules") else {
        return Ok(Vec::new());
    };
    let raw: RawRules = rules
        .clone()
        .try_into()
        .map_err(|e| format!("{shown}: [rules]: {e}"))?;
    let mut out = Vec::new();
    for (i, name) in raw.shadow.iter().enumerate() {
        let n = check_name(name).map_err(|m| format!("{shown}: rules.shadow[{i}]: {m}"))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_rule_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, "[rules]\nshadow = [\"55-a.rhai\", \"55-a.rhai\"]\n").unwrap();
        assert_eq!(reread_shadow(&path).unwrap(), vec!["55-a.rhai"]);
        std::fs::write(&path, "[rules]\nshadow = [\"rules/55-a.rhai\"]\n").unwrap();
        let e = reread_shadow(&path).unwrap_err();
        assert!(e.contains("rules.shadow[0]"), "{e}");
        std::fs::write(&path, "rules_dir = \"rules\"\n").unwrap();
        assert!(reread_shadow(&path).unwrap().is_empty());
    }
}
