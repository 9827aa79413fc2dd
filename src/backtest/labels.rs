//! Outcomes kept outside nurtured (in a CRM): a CSV file with a header holding at
//! least the columns `email` and `converted` (`1`/`0`, `true`/`false`, `yes`/`no`,
//! `ja`/`nein`), other columns ignored, read for `nurtured backtest --labels FILE`.
//! Comma, semicolon or tab separated (as the header line shows); a byte-order mark
//! and quoted fields are fine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::domain::Email;

/// What is wrong with the labels file, with its line and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("{}: cannot read the labels file: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: not valid CSV: {error}; save the file as CSV (UTF-8) with one header line", file.display())]
    Csv {
        file: PathBuf,
        line: u64,
        error: String,
    },
    #[error("{}:1: the header has no column `{column}` (found: {found}); add a column named `{column}` to the first line", file.display())]
    MissingColumn {
        file: PathBuf,
        column: &'static str,
        found: String,
    },
    #[error("{}:{line}: `converted` is `{value}`; write 1 or 0 (also true/false, yes/no, ja/nein)", file.display())]
    BadValue {
        file: PathBuf,
        line: u64,
        value: String,
    },
    #[error("{}:{line}: {error}; correct the address or remove the line", file.display())]
    BadAddress {
        file: PathBuf,
        line: u64,
        error: crate::domain::email::InvalidEmail,
    },
    #[error("{}:{line}: {email} is marked converted = {value} here but {} on line {first}; keep one of the lines", file.display(), !value)]
    Conflict {
        file: PathBuf,
        line: u64,
        first: u64,
        email: String,
        value: bool,
    },
}

/// `converted` as written in the file.
fn flag(text: &str) -> Option<bool> {
    match text.trim().to_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "ja" | "j" | "x" => Some(true),
        "0" | "false" | "no" | "n" | "nein" | "" => Some(false),
        _ => None,
    }
}

/// The separator the header line uses: the most frequent of `,`, `;` and tab.
fn separator(text: &str) -> u8 {
    let header = text.lines().next().unwrap_or("");
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&c| (header.bytes().filter(|&b| b == c).count(), c == b','))
        .unwrap_or(b',')
}

/// Reads the labels: the addresses (trimmed, lower-cased) and whether they converted.
/// An address listed twice must have the same value both times.
pub fn read(path: &Path) -> Result<HashMap<String, bool>, LabelsError> {
    let file = || path.to_path_buf();
    let text = std::fs::read_to_string(path).map_err(|error| LabelsError::Read {
        file: file(),
        error,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(separator(text))
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| LabelsError::Csv {
        file: file(),
        line: e.position().map_or(1, csv::Position::line),
        error: e.to_string(),
    };
    let header = reader.headers().map_err(csv_error)?.clone();
    let names: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let column = |name: &'static str| {
        names
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| LabelsError::MissingColumn {
                file: file(),
                column: name,
                found: if header.is_empty() {
                    "nothing".to_string()
                } else {
                    header
                        .iter()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    };
    let (email_at, converted_at) = (column("email")?, column("converted")?);
    let mut labels = HashMap::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let raw = record.get(email_at).unwrap_or("");
        let email = Email::parse(raw).map_err(|error| LabelsError::BadAddress {
            file: file(),
            line,
            error,
        })?;
        let value = record.get(converted_at).unwrap_or("");
        let converted = flag(value).ok_or_else(|| LabelsError::BadValue {
            file: file(),
            line,
            value: value.to_string(),
        })?;
        let key = email.as_str().to_string();
        match labels.insert(key.clone(), converted) {
            Some(before) if before != converted => {
                return Err(LabelsError::Conflict {
                    file: file(),
                    line,
                    first: first_line[&key],
                    email: key,
                    value: converted,
                });
            }
            Some(_) => {}
            None => {
                first_line.insert(key, line);
            }
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Result<HashMap<String, bool>, LabelsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    fn err(text: &str) -> String {
        labels(text).unwrap_err().to_string()
    }

    #[test]
    fn columns_in_any_order_with_other_columns_quotes_and_a_bom() {
        let l = labels(
            "\u{feff}Firma,Converted,\"E-Mail-Notiz\",EMAIL\n\
             \"Muster, GmbH\",1,\"says \"\"hi\"\"\", Anna@Example.com \n\
             Acme,nein,,bob@example.com\n\
             \n\
             Acme,TRUE,,carl@example.com\n\
             Acme,no,,dora@example.com\n\
             Acme,ja,,anna@example.com\n",
        )
        .unwrap();
        assert_eq!(l.len(), 4);
        assert!(l["anna@example.com"]);
        assert!(!l["bob@example.com"]);
        assert!(l["carl@example.com"]);
        assert!(!l["dora@example.com"]);
    }

    #[test]
    fn a_semicolon_file_from_a_german_spreadsheet() {
        let l =
            labels("email;converted;Umsatz\r\na@example.com;1;1.000,50\r\nb@example.com;0;\r\n")
                .unwrap();
        assert!(l["a@example.com"]);
        assert!(!l["b@example.com"]);
    }

    #[test]
    fn mistakes_name_the_line_and_the_fix() {
        let e = err("email,won\na@example.com,1\n");
        assert!(
            e.contains("labels.csv:1: the header has no column `converted`"),
            "{e}"
        );
        assert!(e.contains("found: `email`, `won`"), "{e}");

        let e = err("email,converted\na@example.com,1\nb@example.com,maybe\n");
        assert!(
            e.contains("labels.csv:3: `converted` is `maybe`; write 1 or 0"),
            "{e}"
        );

        let e = err("email,converted\na@example.com,1\nnot-an-address,0\n");
        assert!(
            e.contains("labels.csv:3: `not-an-address` is not an e-mail address"),
            "{e}"
        );
        assert!(e.contains("correct the address or remove the line"), "{e}");

        let e = err("email,converted\na@example.com,1\nx@example.com,0\nA@example.com,0\n");
        assert!(
            e.contains(
                "labels.csv:4: a@example.com is marked converted = false here but true on line 2"
            ),
            "{e}"
        );

        // The same value twice is fine.
        assert_eq!(
            labels("email,converted\na@x.de,1\na@x.de,yes\n")
                .unwrap()
                .len(),
            1
        );

        let e = err("");
        assert!(e.contains("no column `email`"), "{e}");
        let e = labels("email,converted\n").unwrap();
        assert!(e.is_empty());

        let missing = std::path::Path::new("/nonexistent/labels.csv");
        let e = read(missing).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/labels.csv: cannot read"), "{e}");
    }
}
