//! `GET /ui/funnel` (marketing and admin): the funnel report of `GET /v1/reports/funnel`
//! for a period picked with the same `days` / `since` parameters: leads per stage as
//! bars, conversion from each stage to the later ones, time in stage, and new leads per
//! channel (also drawn as a uPlot chart by `funnel.js`; every number is in the HTML).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::ConsoleState;
use super::page::{self, Viewer};
use super::texts::Lang;
use super::when;
use crate::report::funnel::FunnelReport;
use crate::report::period::DEFAULT_DAYS;
use crate::report::{Period, PeriodError};

pub async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    if !viewer.sees_all() {
        return page::forbidden(&viewer, viewer.lang.t("funnel_forbidden"));
    }
    let app = &state.app;
    let tz = app.config.time_zone;
    // A form sends both fields; an empty one counts as not given.
    let given = |k: &str| {
        params
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (days, since) = (given("days"), given("since"));
    let form = json!({
        "days": days.clone().unwrap_or_default(),
        "since": since.clone().unwrap_or_default(),
        "default_days": DEFAULT_DAYS,
    });
    let period = match Period::parse(
        days.as_deref(),
        since.as_deref(),
        app.processor.clock.now(),
        tz,
    ) {
        Ok(p) => p,
        Err(e) => {
            let mut response = page::page(
                "funnel.html",
                &viewer,
                "funnel",
                json!({"form": form, "problem": period_problem(viewer.lang, &e)}),
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let report = match FunnelReport::load(&app.processor.store, &app.config.funnel, period).await {
        Ok(r) => r,
        Err(e) => return page::internal(&viewer, e),
    };
    let (since_ms, until_ms) = period.ms();
    let mut data = view(&report, viewer.lang);
    data["form"] = form;
    data["problem"] = Value::Null;
    data["since"] = json!(when::at(since_ms, tz));
    data["until"] = json!(when::at(until_ms, tz));
    page::page("funnel.html", &viewer, "funnel", data)
}

/// The reason a period was refused, in the viewer's words.
fn period_problem(lang: Lang, e: &PeriodError) -> String {
    let key = match e {
        PeriodError::Both => "funnel_bad_both",
        PeriodError::Days(_) => "funnel_bad_days",
        PeriodError::Since(_) => "funnel_bad_since",
        PeriodError::Future(_) => "funnel_bad_future",
    };
    lang.t(key)
        .replace("{max}", &crate::report::period::MAX_DAYS.to_string())
}

/// A rate as the page shows it: `66.7 %` (`66,7 %` in German), `–` without one.
pub fn percent(rate: Option<f64>, lang: Lang) -> String {
    match rate {
        None => "–".into(),
        Some(r) => {
            let text = format!("{r:.1} %");
            match lang {
                Lang::De => text.replace('.', ","),
                Lang::En => text,
            }
        }
    }
}

/// The template's view of `report`.
fn view(report: &FunnelReport, lang: Lang) -> Value {
    let most = report.stages.iter().map(|s| s.leads).max().unwrap_or(0);
    let stages: Vec<Value> = report
        .stages
        .iter()
        .map(|s| {
            json!({
                "stage": s.stage,
                "leads": s.leads,
                "width": bar_width(s.leads, most),
            })
        })
        .collect();
    // Each stage someone entered: the next stage always (when open), and the later
    // stages that someone reached.
    let conversions: Vec<Value> = report
        .conversions
        .iter()
        .filter(|c| c.entered > 0)
        .map(|c| {
            let reached: Vec<Value> = c
                .reached
                .iter()
                .enumerate()
                .filter(|(i, r)| (*i == 0 && !c.closed) || r.leads > 0)
                .map(|(_, r)| {
                    json!({
                        "stage": r.stage,
                        "leads": r.leads,
                        "rate": percent(r.rate_pct, lang),
                    })
                })
                .collect();
            json!({"stage": c.stage, "entered": c.entered, "reached": reached})
        })
        .collect();
    let times: Vec<Value> = report
        .time_in_stage
        .iter()
        .filter(|s| s.spread.count > 0)
        .map(|s| {
            json!({
                "stage": s.stage,
                "stays": s.spread.count,
                "median": s.spread.median_ms.map_or_else(|| "–".into(), when::span),
                "p90": s.spread.p90_ms.map_or_else(|| "–".into(), when::span),
            })
        })
        .collect();
    // Only stages that some channel's leads reached get a column.
    let columns: Vec<String> = report
        .channels
        .first()
        .map(|c| {
            c.stages
                .iter()
                .map(|s| s.stage.clone())
                .filter(|stage| {
                    report
                        .channels
                        .iter()
                        .any(|c| c.stages.iter().any(|s| &s.stage == stage && s.leads > 0))
                })
                .collect()
        })
        .unwrap_or_default();
    let channels: Vec<Value> = report
        .channels
        .iter()
        .map(|c| {
            let cells: Vec<i64> = columns
                .iter()
                .map(|col| {
                    c.stages
                        .iter()
                        .find(|s| &s.stage == col)
                        .map_or(0, |s| s.leads)
                })
                .collect();
            json!({"channel": c.channel, "leads": c.leads, "cells": cells})
        })
        .collect();
    let chart = json!({
        "channels": report.channels.iter().map(|c| c.channel.as_str()).collect::<Vec<_>>(),
        "leads": report.channels.iter().map(|c| c.leads).collect::<Vec<_>>(),
        "label": lang.t("funnel_new_leads"),
    });
    json!({
        "stages": stages,
        "leads_created": report.leads_created,
        "conversions": conversions,
        "times": times,
        "columns": columns,
        "channels": channels,
        "chart": script_json(&chart),
    })
}

/// JSON for a `<script type="application/json">` block: `<`, `>` and `&` escaped, so
/// no text in it (a channel's name) can end the block.
pub fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A bar's width in percent of the largest; a sliver for a stage with leads.
fn bar_width(n: i64, most: i64) -> f64 {
    if most <= 0 || n <= 0 {
        return 0.0;
    }
    ((n as f64 * 1000.0 / most as f64).round() / 10.0).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_in_the_viewers_language() {
        assert_eq!(percent(Some(66.7), Lang::En), "66.7 %");
        assert_eq!(percent(Some(66.7), Lang::De), "66,7 %");
        assert_eq!(percent(Some(100.0), Lang::En), "100.0 %");
        assert_eq!(percent(None, Lang::De), "–");
    }

    #[test]
    fn script_json_cannot_close_its_block() {
        let text = script_json(&json!({"c": "</script><b>&"}));
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["c"], "</script><b>&");
    }

    #[test]
    fn bars_are_relative_to_the_largest_stage() {
        assert_eq!(bar_width(5, 10), 50.0);
        assert_eq!(bar_width(10, 10), 100.0);
        assert_eq!(bar_width(1, 10_000), 1.0);
        assert_eq!(bar_width(0, 10), 0.0);
        assert_eq!(bar_width(0, 0), 0.0);
    }
}
