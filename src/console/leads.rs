//! `GET /ui/leads`: the lead list of `GET /v1/leads` with its filters (stage, tag,
//! lowest fit and interest, owner, search) as a form, in pages by cursor, each lead
//! linking to its page; `GET /ui/leads.csv` the same filters as the API's CSV (every
//! match, not one page). A sales user sees only their own leads: those with a handoff
//! to them (the leads they may open).

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ConsoleState;
use super::page::{self, Viewer};
use super::when;
use crate::domain::change::number;
use crate::report::lead_list::{self, LeadPage, ListQuery, ParamError};

/// The filters the page passes on (to the next page and the CSV link).
const FILTERS: &[&str] = &["stage", "tag", "min_fit", "min_interest", "owner", "q"];

/// The query's filter pairs (non-empty, known) and its cursor. Other parameters (a
/// link's `sort`, say) are left out; a sales user's `owner` is replaced by their own.
fn pairs(raw: Option<&str>, viewer: &Viewer) -> (Vec<(String, String)>, Option<String>) {
    let mut filters = Vec::new();
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        if k == "cursor" {
            cursor = Some(v.to_string());
        } else if FILTERS.contains(&k.as_ref())
            && (k != "owner" || viewer.sees_all())
            && !filters.iter().any(|(name, _)| name == k.as_ref())
        {
            filters.push((k.into_owned(), v.to_string()));
        }
    }
    (filters, cursor)
}

/// `pairs` as a query string.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A lead's console page.
pub fn lead_href(email: &str) -> String {
    format!(
        "/ui/leads/{}",
        url::form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()
    )
}

/// The checked query, with a sales user held to the leads handed off to them; `None`
/// for a sales user without an owner id (who has no leads).
fn checked(
    state: &ConsoleState,
    viewer: &Viewer,
    filters: &[(String, String)],
    cursor: Option<&str>,
) -> Result<Option<ListQuery>, ParamError> {
    let cursor = cursor.map(|c| ("cursor", c));
    let mut q = ListQuery::parse(
        filters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(cursor),
        &state.app.config.funnel,
        Some(lead_list::DEFAULT_LIMIT),
    )?;
    if !viewer.sees_all() {
        match &viewer.user.owner {
            Some(owner) => q.filter.handoff_owner = Some(owner.clone()),
            None => return Ok(None),
        }
    }
    Ok(Some(q))
}

pub async fn list(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (filters, cursor) = pairs(raw.as_deref(), &viewer);
    let value = |k: &str| {
        filters
            .iter()
            .find(|(name, _)| name == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let stages: Vec<&str> = state
        .app
        .config
        .funnel
        .stages()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut data = json!({
        "form": {
            "stage": value("stage"), "tag": value("tag"), "min_fit": value("min_fit"),
            "min_interest": value("min_interest"), "owner": value("owner"), "q": value("q"),
        },
        "stages": stages,
        "problem": null,
        "no_owner": false,
        "leads": [],
        "next": null,
        "first": null,
        "csv": format!("/ui/leads.csv?{}", query_string(filters.iter().map(|(k, v)| (k.as_str(), v.as_str())))),
    });
    let query = match checked(&state, &viewer, &filters, cursor.as_deref()) {
        Ok(Some(q)) => q,
        Ok(None) => {
            data["no_owner"] = json!(true);
            return page::page("leads.html", &viewer, "leads", data);
        }
        Err(e) => {
            data["problem"] = json!(format!("{} {e}", viewer.lang.t("leads_bad_filter")));
            let mut response = page::page("leads.html", &viewer, "leads", data);
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let limit = query.limit.unwrap_or(lead_list::DEFAULT_LIMIT);
    let found = match LeadPage::load(
        &state.app.processor.store,
        &query.filter,
        query.after,
        limit,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return page::internal(&viewer, e),
    };
    let tz = state.app.config.time_zone;
    let leads: Vec<Value> = found
        .leads
        .iter()
        .map(|l| {
            let name: Vec<&str> = [&l.first_name, &l.last_name]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            let updated = chrono::DateTime::parse_from_rfc3339(&l.updated_at)
                .map(|t| when::at(t.timestamp_millis(), tz))
                .unwrap_or_default();
            json!({
                "email": l.email,
                "href": lead_href(&l.email),
                "name": name.join(" "),
                "company": l.company,
                "title": l.title,
                "stage": l.stage,
                "fit": number(l.fit),
                "interest": number(l.interest),
                "tags": l.tags,
                "owner": l.owner,
                "updated": updated,
            })
        })
        .collect();
    let with = |extra: Option<(&str, &str)>| {
        let q = query_string(
            filters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(extra),
        );
        if q.is_empty() {
            "/ui/leads".to_string()
        } else {
            format!("/ui/leads?{q}")
        }
    };
    data["leads"] = json!(leads);
    data["next"] = json!(
        found
            .next_cursor
            .as_deref()
            .map(|c| with(Some(("cursor", c))))
    );
    data["first"] = json!(cursor.is_some().then(|| with(None)));
    page::page("leads.html", &viewer, "leads", data)
}

/// `GET /ui/leads.csv`: every lead matching the filters, as the API writes CSV.
pub async fn csv(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (filters, _) = pairs(raw.as_deref(), &viewer);
    let query = match checked(&state, &viewer, &filters, None) {
        Ok(q) => q,
        Err(e) => {
            return page::error(
                Some(&viewer),
                viewer.lang,
                StatusCode::BAD_REQUEST,
                &format!("{} {e}", viewer.lang.t("leads_bad_filter")),
            );
        }
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    if let Err(e) = lead_list::write_csv_header(&mut w) {
        return page::internal(&viewer, e);
    }
    if let Some(query) = query {
        let mut after = 0;
        loop {
            let found = match LeadPage::load(
                &state.app.processor.store,
                &query.filter,
                after,
                lead_list::MAX_LIMIT,
            )
            .await
            {
                Ok(p) => p,
                Err(e) => return page::internal(&viewer, e),
            };
            if let Err(e) = lead_list::write_csv_rows(&mut w, &found.leads) {
                return page::internal(&viewer, e);
            }
            match found.next_cursor.and_then(|c| c.parse::<i64>().ok()) {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    let body = match w.into_inner() {
        Ok(b) => b,
        Err(e) => return page::internal(&viewer, e),
    };
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"leads.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_links_escape_the_address() {
        assert_eq!(
            lead_href("anna+test@acme.example"),
            "/ui/leads/anna%2Btest%40acme.example"
        );
    }

    #[test]
    fn query_strings_encode_values() {
        assert_eq!(
            query_string([("q", "ACME GmbH"), ("stage", "mql")]),
            "q=ACME+GmbH&stage=mql"
        );
    }
}
