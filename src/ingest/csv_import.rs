//! `nurtured import leads.csv --map 'E-Mail=email,Firma=company'`: a list of people
//! (a trade fair's, a CRM's) becomes one identify event per row, checked by the same
//! [`segment::parse_item`] as every other event, so the rest is the path of
//! `nurtured ingest`.
//!
//! The whole file is read and checked before anything is stored:
//! - a problem with the file itself (cannot be read, a header that is empty or
//!   repeats a column, a column named in `--map` that the header lacks, a `--map`
//!   that names an unknown field) stops the import: nothing is stored;
//! - a problem with a row (no or a bad e-mail address, a bad number, the same address
//!   as an earlier row, a cell too long) refuses that row, with its CSV line and the
//!   reason; the other rows are taken, all in one transaction.
//!
//! Each row's `messageId` is derived from what the row says (the mapped values and
//! the consent source), not from its line, so importing the same file again, even
//! sorted differently, stores nothing new, while a row whose data changed is taken as
//! a new identify.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::file::content_id;
use super::segment::{self, At, Item};

/// The fields a CSV column can fill (the lead's fields, as identify traits).
pub const FIELDS: &[&str] = &[
    "email",
    "user_id",
    "first_name",
    "last_name",
    "name",
    "phone",
    "company",
    "title",
    "industry",
    "employees",
    "revenue",
    "country",
    "time_zone",
    "locale",
    "owner",
];

/// What a column fills.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A lead field of [`FIELDS`].
    Field(&'static str),
    /// A free attribute: `attributes.NAME`.
    Attribute(String),
}

/// `--map`: CSV column -> target, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    columns: Vec<(String, Target)>,
}

/// A `--map` that cannot be used, or a file that cannot be imported at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("--map: {0}")]
    Map(String),
    #[error("{file}: cannot read: {detail}")]
    Read { file: String, detail: String },
    #[error("{file}:{line}: header: {detail}")]
    Header {
        file: String,
        line: u64,
        detail: String,
    },
}

impl Mapping {
    /// Parses `Column=field,Other Column=attributes.name`.
    pub fn parse(raw: &str) -> Result<Self, FileError> {
        let mut columns: Vec<(String, Target)> = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((column, target)) = part.rsplit_once('=') else {
                return Err(FileError::Map(format!(
                    "`{part}` has no `=`; write COLUMN=FIELD, e.g. 'E-Mail=email'"
                )));
            };
            let (column, target) = (column.trim(), target.trim());
            if column.is_empty() {
                return Err(FileError::Map(format!("`{part}` names no CSV column")));
            }
            let target = if let Some(name) = target.strip_prefix("attributes.") {
                if name.is_empty() || FIELDS.contains(&name) {
                    return Err(FileError::Map(format!(
                        "`{target}`: give an attribute name that is not a lead field"
                    )));
                }
                Target::Attribute(name.to_string())
            } else if let Some(f) = FIELDS.iter().find(|f| **f == target) {
                Target::Field(f)
            } else {
                return Err(FileError::Map(format!(
                    "`{target}` (for column `{column}`) is not a field; use one of: {}, or \
                     attributes.NAME for a free attribute",
                    FIELDS.join(", ")
                )));
            };
            if let Some((other, _)) = columns.iter().find(|(_, t)| *t == target) {
                return Err(FileError::Map(format!(
                    "columns `{other}` and `{column}` both fill `{}`",
                    shown(&target)
                )));
            }
            if columns.iter().any(|(c, _)| c == column) {
                return Err(FileError::Map(format!("column `{column}` is mapped twice")));
            }
            columns.push((column.to_string(), target));
        }
        if !columns.iter().any(|(_, t)| *t == Target::Field("email")) {
            return Err(FileError::Map(
                "no column fills `email`; map the column with the addresses, e.g. \
                 'E-Mail=email'"
                    .into(),
            ));
        }
        Ok(Self { columns })
    }
}

fn shown(t: &Target) -> String {
    match t {
        Target::Field(f) => (*f).to_string(),
        Target::Attribute(a) => format!("attributes.{a}"),
    }
}

/// What an import adds to each row.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Grants e-mail consent with this source text.
    pub consent_source: Option<String>,
}

/// A row that is not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub line: u64,
    pub reason: String,
}

/// A checked file: the items of the good rows (with their lines), and the refused
/// rows.
#[derive(Debug)]
pub struct Checked {
    pub items: Vec<Item>,
    pub lines: Vec<u64>,
    pub refused: Vec<Refused>,
}

/// `;` when the header has more of them than `,` (spreadsheets in German locales
/// write `;`), else `,`.
fn delimiter(header_line: &str) -> u8 {
    if header_line.matches(';').count() > header_line.matches(',').count() {
        b';'
    } else {
        b','
    }
}

/// Reads and checks the whole file.
pub fn check(
    path: &Path,
    mapping: &Mapping,
    options: &Options,
    now: DateTime<Utc>,
) -> Result<Checked, FileError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| FileError::Read {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| FileError::Read {
        file: file.clone(),
        detail: format!(
            "not UTF-8 text (byte {}); save the file as CSV UTF-8",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter(text.lines().next().unwrap_or_default()))
        .flexible(true)
        .from_reader(text.as_bytes());
    let header_error = |detail: String| FileError::Header {
        file: file.clone(),
        line: 1,
        detail,
    };
    let headers = reader
        .headers()
        .map_err(|e| header_error(e.to_string()))?
        .clone();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim();
        if h.is_empty() {
            return Err(header_error(format!(
                "column {} has no name; every column needs one",
                i + 1
            )));
        }
        if index.insert(h, i).is_some() {
            return Err(header_error(format!(
                "column `{h}` appears twice; rename one"
            )));
        }
    }
    let mut wanted = Vec::with_capacity(mapping.columns.len());
    for (column, target) in &mapping.columns {
        match index.get(column.as_str()) {
            Some(i) => wanted.push((*i, column.as_str(), target)),
            None => {
                return Err(header_error(format!(
                    "no column `{column}` (mapped to `{}`); the columns are: {}",
                    shown(target),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }

    let mut out = Checked {
        items: Vec::new(),
        lines: Vec::new(),
        refused: Vec::new(),
    };
    let mut first_line_of: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                out.refused.push(Refused {
                    line,
                    reason: format!("not readable as CSV: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        if record.len() != headers.len() {
            out.refused.push(Refused {
                line,
                reason: format!(
                    "has {} cells, the header has {}",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        match row_event(&record, &wanted, options) {
            Err(reason) => out.refused.push(Refused { line, reason }),
            Ok((email, event)) => {
                if let Some(first) = first_line_of.get(&email) {
                    out.refused.push(Refused {
                        line,
                        reason: format!("duplicate row: {email} is on line {first} already"),
                    });
                    continue;
                }
                let at = At {
                    index: None,
                    prefix: "",
                };
                match segment::parse_item(&event, Some("identify"), at, now, &mut |_| {
                    unreachable!("every import row has a messageId")
                }) {
                    Ok(item) => {
                        first_line_of.insert(email, line);
                        out.items.push(item);
                        out.lines.push(line);
                    }
                    Err(errors) => out.refused.push(Refused {
                        line,
                        reason: errors
                            .iter()
                            .map(|e| format!("{}: {}", column_of(&e.path, &wanted), e.message))
                            .collect::<Vec<_>>()
                            .join("; "),
                    }),
                }
            }
        }
    }
    Ok(out)
}

/// The CSV column behind a JSON path of the event (`traits.phone` -> `Telefon`).
fn column_of(path: &str, wanted: &[(usize, &str, &Target)]) -> String {
    let field = path.strip_prefix("traits.").unwrap_or(path);
    wanted
        .iter()
        .find(|(_, _, t)| match t {
            Target::Field(f) => *f == field || (*f == "user_id" && field == "userId"),
            Target::Attribute(a) => a == field,
        })
        .map_or_else(|| path.to_string(), |(_, c, _)| format!("column `{c}`"))
}

/// The identify event of one row, with the row's lower-cased address.
fn row_event(
    record: &csv::StringRecord,
    wanted: &[(usize, &str, &Target)],
    options: &Options,
) -> Result<(String, Value), String> {
    let mut traits = Map::new();
    let mut user_id = None;
    let mut email = None;
    for (i, column, target) in wanted {
        let cell = record.get(*i).unwrap_or_default().trim();
        if cell.is_empty() {
            continue;
        }
        match target {
            Target::Field("email") => match crate::domain::Email::parse(cell) {
                Ok(e) => {
                    traits.insert("email".into(), Value::String(e.as_str().to_string()));
                    email = Some(e.as_str().to_string());
                }
                Err(e) => return Err(format!("bad address in column `{column}`: {e}")),
            },
            Target::Field("user_id") => user_id = Some(cell.to_string()),
            Target::Field("employees") => match cell.parse::<i64>() {
                Ok(n) if n >= 0 => {
                    traits.insert("employees".into(), json!(n));
                }
                _ => {
                    return Err(format!(
                        "bad number in column `{column}`: `{cell}` is not a whole number"
                    ));
                }
            },
            Target::Field("revenue") => {
                let normal = if cell.contains(',') && !cell.contains('.') {
                    cell.replace(',', ".")
                } else {
                    cell.to_string()
                };
                match normal.parse::<f64>() {
                    Ok(n) if n.is_finite() && n >= 0.0 => {
                        traits.insert("revenue".into(), json!(n));
                    }
                    _ => {
                        return Err(format!(
                            "bad number in column `{column}`: `{cell}` is not an amount"
                        ));
                    }
                }
            }
            Target::Field(field) => {
                traits.insert((*field).to_string(), Value::String(cell.to_string()));
            }
            Target::Attribute(name) => {
                traits.insert(name.clone(), Value::String(cell.to_string()));
            }
        }
    }
    let Some(email) = email else {
        return Err("bad address: the e-mail cell is empty".into());
    };
    if let Some(source) = &options.consent_source {
        traits.insert("consent_email".into(), Value::Bool(true));
        traits.insert("consent_source".into(), Value::String(source.clone()));
    }
    let mut event = json!({ "type": "identify", "traits": traits });
    if let Some(u) = user_id {
        event["userId"] = Value::String(u);
    }
    // Derived from the content (traits are kept in key order), before the id is added.
    let id = content_id(&event);
    event["messageId"] = Value::String(format!(
        "import:{}",
        id.strip_prefix("sha256:").unwrap_or(&id)
    ));
    Ok((email, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_names_known_fields_only() {
        let m = Mapping::parse("E-Mail=email, Firma=company,Messe=attributes.fair").unwrap();
        assert_eq!(m.columns.len(), 3);
        let err = Mapping::parse("E-Mail=email,Firma=firma").unwrap_err();
        assert!(err.to_string().contains("`firma`"), "{err}");
        assert!(Mapping::parse("Firma=company").is_err());
        assert!(Mapping::parse("A=email,B=email").is_err());
    }

    #[test]
    fn semicolons_are_taken_when_the_header_has_them() {
        assert_eq!(delimiter("E-Mail;Firma;Name"), b';');
        assert_eq!(delimiter("email,company"), b',');
    }
}
