//! Lead lists, shared by `GET /v1/leads` and `nurtured lead list`: the parameters
//! checked once (a bad one is named), a page of leads with the cursor of the next one,
//! and the same page as CSV (header, quoting, and cells that a spreadsheet would take
//! for a formula made harmless).

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Serialize;

use crate::domain::funnel::Funnel;
use crate::store::{LeadFilter, LeadListRow, Store, StoreError, rfc3339};

/// Leads per page when the request names no limit.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub const MAX_LIMIT: usize = 1000;
/// The parameters a lead list takes.
pub const PARAMS: &[&str] = &[
    "stage",
    "tag",
    "min_fit",
    "min_interest",
    "owner",
    "q",
    "limit",
    "cursor",
    "format",
];

/// A parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// A checked lead list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: LeadFilter,
    /// Leads per page; `None` only from the command line (all matches).
    pub limit: Option<usize>,
    /// The lead id the page starts after (0: from the start).
    pub after: i64,
    /// `csv` asked for by `format=csv`.
    pub csv: bool,
}

impl ListQuery {
    /// Checks `name=value` pairs (a query string's, or the command line's options).
    /// Empty values count as absent; `default_limit` applies when no `limit` is given.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        funnel: &Funnel,
        default_limit: Option<usize>,
    ) -> Result<Self, ParamError> {
        let mut q = ListQuery {
            filter: LeadFilter::default(),
            limit: default_limit,
            after: 0,
            csv: false,
        };
        let mut seen = BTreeSet::new();
        for (name, raw) in pairs {
            if !PARAMS.contains(&name) {
                return Err(bad(
                    name,
                    format!("unknown parameter; use: {}", PARAMS.join(", ")),
                ));
            }
            if !seen.insert(name) {
                return Err(bad(name, "given twice; give it once"));
            }
            let value = raw.trim();
            if value.is_empty() {
                continue;
            }
            match name {
                "stage" => {
                    if funnel.stage(value).is_none() {
                        return Err(bad(
                            name,
                            format!(
                                "`{value}` is not a stage; use one of: {}",
                                funnel.names_joined()
                            ),
                        ));
                    }
                    q.filter.stage = Some(value.to_string());
                }
                "tag" => q.filter.tag = Some(value.to_string()),
                "owner" => q.filter.owner = Some(value.to_string()),
                "q" => q.filter.q = Some(value.to_string()),
                "min_fit" => q.filter.min_fit = Some(number(name, value)?),
                "min_interest" => q.filter.min_interest = Some(number(name, value)?),
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = Some(n),
                    _ => {
                        return Err(bad(
                            name,
                            format!("`{value}` is not a whole number from 1 to {MAX_LIMIT}"),
                        ));
                    }
                },
                "cursor" => match value.parse::<i64>() {
                    Ok(n) if n >= 0 => q.after = n,
                    _ => {
                        return Err(bad(
                            name,
                            format!(
                                "`{value}` is not a cursor; pass the `next_cursor` of the \
                                 previous page"
                            ),
                        ));
                    }
                },
                "format" => match value {
                    "json" => q.csv = false,
                    "csv" => q.csv = true,
                    _ => return Err(bad(name, format!("`{value}` is not json or csv"))),
                },
                _ => unreachable!("every parameter of PARAMS is handled"),
            }
        }
        Ok(q)
    }
}

fn number(param: &str, value: &str) -> Result<f64, ParamError> {
    match value.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err(bad(param, format!("`{value}` is not a number"))),
    }
}

/// One lead in a list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListedLead {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub stage: String,
    pub fit: f64,
    pub interest: f64,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl ListedLead {
    fn from_row(row: LeadListRow) -> Result<Self, StoreError> {
        let tags: Vec<String> =
            serde_json::from_str(&row.tags).map_err(|e| StoreError::Corrupt {
                what: "lead tags",
                detail: e.to_string(),
            })?;
        Ok(ListedLead {
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            company: row.company,
            title: row.title,
            stage: row.stage,
            fit: row.fit,
            interest: row.interest,
            tags,
            owner: row.owner,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        })
    }
}

/// A page of leads; `next_cursor` is set when more leads may follow.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeadPage {
    pub leads: Vec<ListedLead>,
    pub next_cursor: Option<String>,
}

impl LeadPage {
    /// The page of `query` with `limit` leads at most.
    pub async fn load(
        store: &Store,
        filter: &LeadFilter,
        after: i64,
        limit: usize,
    ) -> Result<Self, StoreError> {
        let mut rows = store.list_leads(filter, after, limit + 1).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        let leads = rows
            .into_iter()
            .map(ListedLead::from_row)
            .collect::<Result<_, _>>()?;
        Ok(LeadPage { leads, next_cursor })
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "stage",
    "fit",
    "interest",
    "tags",
    "owner",
    "created_at",
    "updated_at",
];

/// A text cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, or a
/// tab or carriage return first) gets a `'` in front, so opening the file runs nothing.
pub fn safe_cell(text: &str) -> Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Writes the CSV header.
pub fn write_csv_header<W: std::io::Write>(w: &mut csv::Writer<W>) -> csv::Result<()> {
    w.write_record(CSV_HEADER)
}

/// Writes leads as CSV rows (tags joined by `;`).
pub fn write_csv_rows<W: std::io::Write>(
    w: &mut csv::Writer<W>,
    leads: &[ListedLead],
) -> csv::Result<()> {
    for l in leads {
        let text = |v: &Option<String>| safe_cell(v.as_deref().unwrap_or("")).into_owned();
        w.write_record([
            safe_cell(&l.email).into_owned(),
            text(&l.first_name),
            text(&l.last_name),
            text(&l.company),
            text(&l.title),
            safe_cell(&l.stage).into_owned(),
            l.fit.to_string(),
            l.interest.to_string(),
            safe_cell(&l.tags.join(";")).into_owned(),
            text(&l.owner),
            l.created_at.clone(),
            l.updated_at.clone(),
        ])?;
    }
    Ok(())
}

/// A whole page as CSV text, with its header.
pub fn to_csv(leads: &[ListedLead]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail.
    let _ = write_csv_header(&mut w).and_then(|()| write_csv_rows(&mut w, leads));
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_prefixed() {
        assert_eq!(safe_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(safe_cell("+49 30 1"), "'+49 30 1");
        assert_eq!(safe_cell("-1"), "'-1");
        assert_eq!(safe_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(safe_cell("ACME GmbH"), "ACME GmbH");
    }

    #[test]
    fn csv_quotes_commas_and_quotes() {
        let lead = ListedLead {
            email: "a@b.example".into(),
            first_name: Some("Anna".into()),
            last_name: None,
            company: Some("Müller, \"Söhne\" & Co".into()),
            title: Some("=cmd".into()),
            stage: "lead".into(),
            fit: 20.0,
            interest: -5.5,
            tags: vec!["a".into(), "b".into()],
            owner: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let text = to_csv(&[lead]);
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
        assert_eq!(
            lines.next().unwrap(),
            "a@b.example,Anna,,\"Müller, \"\"Söhne\"\" & Co\",'=cmd,lead,20,-5.5,a;b,,\
             2026-01-01T00:00:00.000Z,2026-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let funnel = crate::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .funnel;
        let err = |pairs: &[(&str, &str)]| {
            ListQuery::parse(pairs.iter().copied(), &funnel, Some(DEFAULT_LIMIT)).unwrap_err()
        };
        assert_eq!(err(&[("stage", "nope")]).param, "stage");
        assert_eq!(err(&[("min_fit", "ten")]).param, "min_fit");
        assert_eq!(err(&[("limit", "0")]).param, "limit");
        assert_eq!(err(&[("limit", "1001")]).param, "limit");
        assert_eq!(err(&[("cursor", "x")]).param, "cursor");
        assert_eq!(err(&[("colour", "red")]).param, "colour");
        let ok = ListQuery::parse(
            [
                ("stage", "mql"),
                ("min_fit", "10"),
                ("q", "acme"),
                ("tag", ""),
            ],
            &funnel,
            Some(DEFAULT_LIMIT),
        )
        .unwrap();
        assert_eq!(ok.filter.stage.as_deref(), Some("mql"));
        assert_eq!(ok.filter.min_fit, Some(10.0));
        assert_eq!(ok.filter.tag, None);
        assert_eq!(ok.limit, Some(DEFAULT_LIMIT));
    }
}
