//! Outcomes kept outside nurtured (a CRM export): a CSV of addresses and whether each
//! converted (placeholder until the labels module is merged).

use std::collections::HashMap;
use std::path::Path;

/// Why a labels file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Reads a CSV with a header holding at least `email` and `converted`.
pub fn read(path: &Path) -> Result<HashMap<String, bool>, LabelsError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_lowercase())
        .collect();
    let email = header.iter().position(|h| h == "email");
    let converted = header.iter().position(|h| h == "converted");
    let mut out = HashMap::new();
    if let (Some(e), Some(c)) = (email, converted) {
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            if let (Some(a), Some(v)) = (cells.get(e), cells.get(c)) {
                let v = v.trim().to_lowercase();
                out.insert(
                    a.trim().to_lowercase(),
                    matches!(v.as_str(), "1" | "true" | "yes" | "ja"),
                );
            }
        }
    }
    Ok(out)
}
