//! The backtest report as one self-contained HTML page (`nurtured backtest --html`):
//! inline CSS and SVG charts drawn here, no script and no external request, so it
//! opens anywhere, prints, and can be mailed to a colleague. Built from the JSON
//! report (`--json`), so both always show the same figures; a missing figure shows
//! as a dash.

use std::fmt::Write;

use serde_json::Value;

const BASE: &str = "#5b7db1";
const CAND: &str = "#e07b39";
static NULL: Value = Value::Null;

/// How a figure is written.
type Show = fn(&Value) -> String;

/// The page for `report` (the JSON that `nurtured backtest --json` prints).
pub fn render(report: &Value) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let base = at(report, &["baseline"]);
    let cand = at(report, &["candidate"]);
    let title = format!(
        "Backtest: {} vs {}",
        text(at(base, &["rules"])),
        text(at(cand, &["rules"]))
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body><main>",
        esc(&title)
    );
    header(&mut h, report, base, cand);
    headline(&mut h, report, base, cand);
    stages(&mut h, base, cand);
    outcomes(&mut h, report, base, cand);
    fired(&mut h, base, cand);
    mails(&mut h, base, cand);
    handoffs(&mut h, base, cand);
    diff(&mut h, at(report, &["diff"]));
    h.push_str(
        "<footer>Made by <code>nurtured backtest</code>. The replay sent no mail and changed \
         nothing in the live database.</footer></main></body></html>\n",
    );
    h
}

/// The value at `path`, or null.
fn at<'a, K: AsRef<str>>(v: &'a Value, path: &[K]) -> &'a Value {
    path.iter()
        .fold(v, |v, k| v.get(k.as_ref()).unwrap_or(&NULL))
}

/// Escapes text for HTML (element content and attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value as plain text (not escaped).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        Value::Number(_) => count(v),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// A whole number with thousands separators, a fraction with up to two decimals.
fn count(v: &Value) -> String {
    let Some(x) = v.as_f64() else {
        return "–".into();
    };
    if x.fract() != 0.0 {
        let s = format!("{x:.2}");
        return s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    let digits = format!("{}", x.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |x| format!("{:.1} %", x * 100.0))
}

fn fixed(v: &Value, decimals: usize) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.decimals$}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The keys of the objects at `a` and `b`, `a`'s first, each once.
fn keys(a: &Value, b: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in [a, b] {
        if let Some(m) = v.as_object() {
            for k in m.keys() {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
    }
    out
}

/// The change from `a` to `b` as a signed number, with a class for its colour.
fn delta(a: &Value, b: &Value) -> String {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if (y - x).abs() > 1e-12 => {
            let d = y - x;
            let class = if d > 0.0 { "up" } else { "down" };
            let sign = if d > 0.0 { "+" } else { "−" };
            format!(
                "<span class=\"{class}\">{sign}{}</span>",
                esc(&count(&Value::from(d.abs())))
            )
        }
        (Some(_), Some(_)) => "<span class=\"same\">±0</span>".into(),
        _ => String::new(),
    }
}

fn legend(h: &mut String) {
    let _ = write!(
        h,
        "<p class=\"legend\"><span class=\"key\" style=\"background:{BASE}\"></span>baseline \
         <span class=\"key\" style=\"background:{CAND}\"></span>candidate</p>"
    );
}

fn header(h: &mut String, report: &Value, base: &Value, cand: &Value) {
    let window = |k: &str, open: &str| match at(report, &["window", k]) {
        Value::String(s) => esc(s),
        _ => open.into(),
    };
    let outcome_stages = match at(report, &["outcome_stages"]).as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|s| esc(&text(s)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "–".into(),
    };
    let labels = match at(report, &["labels"]) {
        Value::String(s) => format!(" · labels from <code>{}</code>", esc(s)),
        _ => String::new(),
    };
    let _ = write!(
        h,
        "<header><h1>Backtest report</h1><p class=\"sub\">Baseline <code>{}</code> against \
         candidate <code>{}</code> · history from {} until {} · converted: reached {}{labels}\
         </p></header>",
        esc(&text(at(base, &["rules"]))),
        esc(&text(at(cand, &["rules"]))),
        window("since", "the first event"),
        window("until", "the last"),
        outcome_stages,
    );
}

fn headline(h: &mut String, report: &Value, base: &Value, cand: &Value) {
    h.push_str("<section id=\"headline\"><h2>At a glance</h2><div class=\"cards\">");
    let card = |h: &mut String, label: &str, value: String, note: String| {
        let _ = write!(
            h,
            "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{value}</div>\
             <div class=\"note\">{note}</div></div>",
            esc(label)
        );
    };
    card(
        h,
        "Events replayed",
        esc(&count(at(report, &["events"]))),
        format!(
            "{} events/s, {} s",
            esc(&count(&Value::from(
                num(at(report, &["events_per_second"])).round()
            ))),
            esc(&fixed(at(report, &["seconds"]), 2))
        ),
    );
    card(
        h,
        "Leads",
        esc(&count(at(report, &["leads"]))),
        format!(
            "{} converted",
            esc(&count(at(base, &["outcomes", "converted"])))
        ),
    );
    card(
        h,
        "Leads that differ",
        esc(&count(at(report, &["diff", "leads"]))),
        format!(
            "{} with other scores",
            esc(&count(at(report, &["diff", "scores"])))
        ),
    );
    for (label, key, show) in [
        ("Precision of MQL", "precision", pct as Show),
        ("Recall of MQL", "recall", pct),
        ("Lift over base rate", "lift", |v: &Value| fixed(v, 2) + "×"),
        ("AUC fit + interest", "auc_fit_interest", |v: &Value| {
            fixed(v, 3)
        }),
    ] {
        let b = at(base, &["outcomes", key]);
        let c = at(cand, &["outcomes", key]);
        card(
            h,
            label,
            format!(
                "<span class=\"b\">{}</span> → <span class=\"c\">{}</span>",
                esc(&show(b)),
                esc(&show(c))
            ),
            "baseline → candidate".into(),
        );
    }
    h.push_str("</div></section>");
}

/// Horizontal bars, two per row (baseline and candidate).
fn pair_bars(h: &mut String, rows: &[(String, f64, f64)], aria: &str) {
    let max = rows
        .iter()
        .map(|r| r.1.max(r.2))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let (label_w, bar_w, row_h) = (150.0, 360.0, 38.0);
    let height = row_h * rows.len() as f64 + 10.0;
    let _ = write!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 600 {height}\" role=\"img\" aria-label=\"{}\">",
        esc(aria)
    );
    for (i, (label, b, c)) in rows.iter().enumerate() {
        let y = 5.0 + row_h * i as f64;
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"axis\">{}</text>",
            label_w - 8.0,
            y + 20.0,
            esc(label)
        );
        for (j, (v, colour)) in [(b, BASE), (c, CAND)].into_iter().enumerate() {
            let w = (v / max * bar_w).max(if *v > 0.0 { 1.5 } else { 0.0 });
            let by = y + 3.0 + 15.0 * j as f64;
            let _ = write!(
                h,
                "<rect x=\"{label_w}\" y=\"{by}\" width=\"{w:.1}\" height=\"13\" fill=\"{colour}\">\
                 <title>{}: {}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"val\">{}</text>",
                if j == 0 { "baseline" } else { "candidate" },
                esc(&count(&Value::from(*v))),
                label_w + w + 4.0,
                by + 11.0,
                esc(&count(&Value::from(*v)))
            );
        }
    }
    h.push_str("</svg>");
}

fn stages(h: &mut String, base: &Value, cand: &Value) {
    let (b, c) = (at(base, &["stages"]), at(cand, &["stages"]));
    let names = keys(b, c);
    h.push_str("<section id=\"stages\"><h2>Leads per stage at the end</h2>");
    if names.is_empty() {
        h.push_str("<p class=\"empty\">No leads.</p></section>");
        return;
    }
    legend(h);
    let rows: Vec<(String, f64, f64)> = names
        .iter()
        .map(|n| (n.clone(), num(at(b, &[n])), num(at(c, &[n]))))
        .collect();
    pair_bars(h, &rows, "Leads per stage, baseline and candidate");
    h.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Stage</th><th class=\"n\">Baseline</th>\
         <th class=\"n\">Candidate</th><th class=\"n\">Change</th></tr></thead><tbody>",
    );
    for n in &names {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(n),
            esc(&count(at(b, &[n]))),
            esc(&count(at(c, &[n]))),
            delta(at(b, &[n]), at(c, &[n]))
        );
    }
    h.push_str("</tbody></table></div></section>");
}

fn outcomes(h: &mut String, report: &Value, base: &Value, cand: &Value) {
    let (b, c) = (at(base, &["outcomes"]), at(cand, &["outcomes"]));
    h.push_str("<section id=\"outcomes\"><h2>Against real outcomes</h2>");
    let _ = write!(
        h,
        "<p class=\"help\">A lead converted when it later reached an outcome stage{}. \
         <b>Precision</b>: of the leads the rules made MQL, the share that converted. \
         <b>Recall</b>: of the converted leads, the share the rules made MQL first. \
         <b>Lift</b>: precision over the base rate (1 = no better than picking at random). \
         <b>AUC</b>: the chance that a converted lead scores higher than one that did not \
         (0.5 = no signal, 1 = perfect).</p>",
        if at(report, &["labels"]).is_string() {
            " or is marked converted in the labels file"
        } else {
            ""
        }
    );
    h.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Figure</th><th class=\"n\">Baseline</th>\
         <th class=\"n\">Candidate</th></tr></thead><tbody>",
    );
    let rows: [(&str, &str, Show); 11] = [
        ("Leads", "leads", count),
        ("Converted", "converted", count),
        ("Base rate", "base_rate", pct),
        ("MQL decisions", "mql", count),
        ("MQL and converted", "true_positives", count),
        ("Precision", "precision", pct),
        ("Recall", "recall", pct),
        ("Lift", "lift", |v| fixed(v, 2)),
        ("AUC of fit", "auc_fit", |v| fixed(v, 3)),
        ("AUC of interest", "auc_interest", |v| fixed(v, 3)),
        ("AUC of fit + interest", "auc_fit_interest", |v| fixed(v, 3)),
    ];
    for (label, key, show) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(label),
            esc(&show(at(b, &[key]))),
            esc(&show(at(c, &[key])))
        );
    }
    h.push_str("</tbody></table></div>");
    h.push_str(
        "<h3>Calibration: conversion rate per score decile</h3><p class=\"help\">Leads ranked \
         by score into ten equal groups (10 = the highest scores). A score that predicts \
         buying rises from left to right.</p>",
    );
    legend(h);
    h.push_str("<div class=\"pair\">");
    for (label, key) in [("Fit", "fit_deciles"), ("Interest", "interest_deciles")] {
        let _ = write!(h, "<figure><figcaption>{label}</figcaption>");
        calibration(
            h,
            at(b, &[key]),
            at(c, &[key]),
            num(at(b, &["base_rate"])),
            label,
        );
        decile_table(h, at(b, &[key]), at(c, &[key]));
        h.push_str("</figure>");
    }
    h.push_str("</div></section>");
}

/// The decile with number `d` in a list of deciles.
fn decile(list: &Value, d: u64) -> &Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| at(x, &["decile"]).as_u64() == Some(d)))
        .unwrap_or(&NULL)
}

/// Columns per decile: the conversion rate of baseline and candidate.
fn calibration(h: &mut String, b: &Value, c: &Value, base_rate: f64, what: &str) {
    let rate = |l: &Value, d| num(at(decile(l, d), &["rate"]));
    let top = (1..=10)
        .flat_map(|d| [rate(b, d), rate(c, d)])
        .fold(base_rate, f64::max);
    // A round top of the scale: 10 %, 20 %, ... 100 %.
    let top = ((top * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    let (left, width, plot_h, y0) = (40.0, 340.0, 170.0, 10.0);
    let _ = write!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 390 215\" role=\"img\" \
         aria-label=\"Conversion rate per {} decile\">",
        esc(&what.to_lowercase())
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let y = y0 + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"axis\">{:.0}%</text>",
            left + width,
            left - 4.0,
            y + 4.0,
            v * 100.0
        );
    }
    let slot = width / 10.0;
    for d in 1..=10u64 {
        let x = left + slot * (d - 1) as f64;
        for (j, (list, colour)) in [(b, BASE), (c, CAND)].into_iter().enumerate() {
            let entry = decile(list, d);
            if entry.is_null() {
                continue;
            }
            let r = num(at(entry, &["rate"]));
            let bh = (r / top * plot_h).max(if r > 0.0 { 1.0 } else { 0.0 });
            let _ = write!(
                h,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\">\
                 <title>{} decile {d}: {} of {} converted ({})</title></rect>",
                x + 4.0 + j as f64 * (slot - 8.0) / 2.0,
                y0 + plot_h - bh,
                (slot - 8.0) / 2.0,
                if j == 0 { "baseline" } else { "candidate" },
                esc(&count(at(entry, &["converted"]))),
                esc(&count(at(entry, &["leads"]))),
                esc(&pct(at(entry, &["rate"])))
            );
        }
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{d}</text>",
            x + slot / 2.0,
            y0 + plot_h + 16.0
        );
    }
    if base_rate > 0.0 {
        let y = y0 + plot_h - base_rate / top * plot_h;
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"baseline-rate\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"axis\">base rate</text>",
            left + width,
            left + 4.0,
            y - 4.0
        );
    }
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"212\" text-anchor=\"middle\" class=\"axis\">{} decile (10 = highest)</text></svg>",
        left + width / 2.0,
        esc(what)
    );
}

fn decile_table(h: &mut String, b: &Value, c: &Value) {
    h.push_str(
        "<div class=\"scroll\"><table class=\"small\"><thead><tr><th>Decile</th>\
         <th class=\"n\">Baseline: leads</th><th class=\"n\">converted</th><th class=\"n\">scores</th>\
         <th class=\"n\">Candidate: leads</th><th class=\"n\">converted</th><th class=\"n\">scores</th>\
         </tr></thead><tbody>",
    );
    for d in 1..=10u64 {
        let (x, y) = (decile(b, d), decile(c, d));
        if x.is_null() && y.is_null() {
            continue;
        }
        let range = |e: &Value| {
            if e.is_null() {
                "–".to_string()
            } else {
                format!("{}–{}", count(at(e, &["min"])), count(at(e, &["max"])))
            }
        };
        let _ = write!(
            h,
            "<tr><td>{d}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&count(at(x, &["leads"]))),
            esc(&pct(at(x, &["rate"]))),
            esc(&range(x)),
            esc(&count(at(y, &["leads"]))),
            esc(&pct(at(y, &["rate"]))),
            esc(&range(y)),
        );
    }
    h.push_str("</tbody></table></div>");
}

fn fired(h: &mut String, base: &Value, cand: &Value) {
    let (b, c) = (at(base, &["fired"]), at(cand, &["fired"]));
    let mut lines = keys(b, c);
    let times = |l: &str| num(at(b, &[l, "times"])).max(num(at(c, &[l, "times"])));
    lines.sort_by(|x, y| {
        times(y.as_str())
            .total_cmp(&times(x.as_str()))
            .then_with(|| x.cmp(y))
    });
    h.push_str("<section id=\"fired\"><h2>Rule lines that fired</h2>");
    if lines.is_empty() {
        h.push_str("<p class=\"empty\">No rule line fired.</p></section>");
        return;
    }
    h.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>File:line</th><th class=\"n\">Times</th>\
         <th class=\"n\">Points</th><th class=\"n\">Stage moves</th><th class=\"n\">Tags</th>\
         <th class=\"n\">Mails</th><th class=\"n\">Handoffs</th></tr></thead><tbody>",
    );
    for l in &lines {
        let _ = write!(h, "<tr><td><code>{}</code></td>", esc(l));
        for k in [
            "times",
            "points",
            "stage_moves",
            "tags",
            "mails",
            "handoffs",
        ] {
            let (x, y) = (at(b, &[l.as_str(), k]), at(c, &[l.as_str(), k]));
            let (vx, vy) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            if vx == 0.0 && vy == 0.0 {
                h.push_str("<td class=\"n\"></td>");
            } else if x == y {
                let _ = write!(h, "<td class=\"n\">{}</td>", esc(&count(x)));
            } else {
                let _ = write!(
                    h,
                    "<td class=\"n\"><span class=\"b\">{}</span> → <span class=\"c\">{}</span> {}</td>",
                    esc(&count(x)),
                    esc(&count(y)),
                    delta(x, y)
                );
            }
        }
        h.push_str("</tr>");
    }
    h.push_str(
        "</tbody></table></div><p class=\"help\">One number where both sets agree; where \
         they differ, baseline → candidate and the change (a dash: the line is not in that \
         set). Empty: nothing.</p></section>",
    );
}

/// `reason n, reason n` for a map of counts.
fn reasons(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, n)| format!("{} {}", esc(&k.replace('_', " ")), esc(&count(n))))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "–".into(),
    }
}

fn mails(h: &mut String, base: &Value, cand: &Value) {
    let (b, c) = (at(base, &["mails"]), at(cand, &["mails"]));
    let names = keys(b, c);
    h.push_str("<section id=\"mails\"><h2>Mails per template</h2>");
    if names.is_empty() {
        h.push_str("<p class=\"empty\">No rule asked for a mail.</p></section>");
        return;
    }
    h.push_str(
        "<p class=\"help\">Asked: how often rules asked for the mail. Queued: what the outbox \
         would have sent. The rest it would have held back, for the reasons shown (no \
         consent, quarantine, once only, repeat period, ...). Nothing was sent.</p>\
         <div class=\"scroll\"><table><thead><tr><th>Template</th><th>Set</th>\
         <th class=\"n\">Asked</th><th class=\"n\">Queued</th><th>Held back</th></tr></thead><tbody>",
    );
    for n in &names {
        for (set, v) in [("baseline", at(b, &[n])), ("candidate", at(c, &[n]))] {
            let _ = write!(
                h,
                "<tr class=\"{set}\"><td>{}</td><td>{set}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td>{}</td></tr>",
                if set == "baseline" {
                    format!("<code>{}</code>", esc(n))
                } else {
                    String::new()
                },
                esc(&count(at(v, &["asked"]))),
                esc(&count(at(v, &["queued"]))),
                reasons(at(v, &["suppressed"]))
            );
        }
    }
    h.push_str("</tbody></table></div></section>");
}

fn handoffs(h: &mut String, base: &Value, cand: &Value) {
    let (b, c) = (at(base, &["handoffs"]), at(cand, &["handoffs"]));
    let teams = keys(b, c);
    h.push_str("<section id=\"handoffs\"><h2>Handoffs to sales per team</h2>");
    if teams.is_empty() {
        h.push_str("<p class=\"empty\">No handoffs.</p></section>");
        return;
    }
    legend(h);
    let rows: Vec<(String, f64, f64)> = teams
        .iter()
        .map(|t| (t.clone(), num(at(b, &[t])), num(at(c, &[t]))))
        .collect();
    pair_bars(h, &rows, "Handoffs per team, baseline and candidate");
    h.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Team</th><th class=\"n\">Baseline</th>\
         <th class=\"n\">Candidate</th><th class=\"n\">Change</th></tr></thead><tbody>",
    );
    for t in &teams {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(t),
            esc(&count(at(b, &[t]))),
            esc(&count(at(c, &[t]))),
            delta(at(b, &[t]), at(c, &[t]))
        );
    }
    h.push_str("</tbody></table></div></section>");
}

fn lead_state(v: &Value) -> String {
    let tags = match at(v, &["tags"]).as_array() {
        Some(t) if !t.is_empty() => t
            .iter()
            .map(|t| format!("<span class=\"tag\">{}</span>", esc(&text(t))))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "<span class=\"muted\">no tags</span>".into(),
    };
    format!(
        "<b>{}</b> · fit {} · interest {}<br>{tags}",
        esc(&text(at(v, &["stage"]))),
        esc(&count(at(v, &["fit"]))),
        esc(&count(at(v, &["interest"])))
    )
}

fn diff(h: &mut String, d: &Value) {
    let _ = write!(
        h,
        "<section id=\"diff\"><h2>What the candidate changes</h2><p>{} leads end differently \
         (stage, tags or scores); {} of them with other scores.</p>",
        esc(&count(at(d, &["leads"]))),
        esc(&count(at(d, &["scores"])))
    );
    if let Some(pairs) = at(d, &["stages"]).as_array().filter(|p| !p.is_empty()) {
        h.push_str(
            "<h3>Stage at the end: baseline → candidate</h3><div class=\"scroll\"><table>\
             <thead><tr><th>Baseline</th><th></th><th>Candidate</th><th class=\"n\">Leads</th>\
             </tr></thead><tbody>",
        );
        for p in pairs {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>→</td><td>{}</td><td class=\"n\">{}</td></tr>",
                esc(&text(at(p, &["from"]))),
                esc(&text(at(p, &["to"]))),
                esc(&count(at(p, &["leads"])))
            );
        }
        h.push_str("</tbody></table></div>");
    }
    if let Some(tags) = at(d, &["tags"]).as_array().filter(|t| !t.is_empty()) {
        h.push_str(
            "<h3>Tags</h3><div class=\"scroll\"><table><thead><tr><th>Tag</th>\
             <th class=\"n\">Added</th><th class=\"n\">Removed</th></tr></thead><tbody>",
        );
        for t in tags {
            let _ = write!(
                h,
                "<tr><td><span class=\"tag\">{}</span></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&text(at(t, &["tag"]))),
                esc(&count(at(t, &["added"]))),
                esc(&count(at(t, &["removed"])))
            );
        }
        h.push_str("</tbody></table></div>");
    }
    match at(d, &["examples"]).as_array().filter(|e| !e.is_empty()) {
        Some(examples) => {
            let _ = write!(h, "<h3>Examples ({})</h3>", examples.len());
            for e in examples {
                let because = match at(e, &["because"]).as_array() {
                    Some(list) if !list.is_empty() => list
                        .iter()
                        .map(|b| format!("<li><code>{}</code></li>", esc(&text(b))))
                        .collect::<String>(),
                    _ => "<li class=\"muted\">no rule line recorded</li>".into(),
                };
                let _ = write!(
                    h,
                    "<article class=\"example\"><h4>{}</h4><div class=\"states\">\
                     <div><div class=\"label\">baseline</div>{}</div>\
                     <div><div class=\"label\">candidate</div>{}</div></div>\
                     <div class=\"label\">because</div><ul>{because}</ul></article>",
                    esc(&text(at(e, &["email"]))),
                    lead_state(at(e, &["baseline"])),
                    lead_state(at(e, &["candidate"]))
                );
            }
        }
        None => h.push_str("<p class=\"empty\">No lead ends differently.</p>"),
    }
    h.push_str("</section>");
}

const CSS: &str = "\
:root{--b:#5b7db1;--c:#e07b39;--ink:#1d2430;--muted:#667085;--line:#e3e7ee;--bg:#f6f7f9}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}\
main{max-width:1080px;margin:0 auto;padding:16px}\
header h1{margin:.2em 0 .1em;font-size:1.6em}\
.sub{color:var(--muted);margin:0 0 1em}\
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin:0 0 16px}\
h2{font-size:1.2em;margin:.1em 0 .6em}h3{font-size:1em;margin:1.2em 0 .4em}h4{margin:0 0 .4em;font-size:1em;word-break:break-all}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}\
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px}\
.card .value{font-size:1.45em;font-weight:600;white-space:nowrap}\
.label{color:var(--muted);font-size:.82em;text-transform:uppercase;letter-spacing:.03em}\
.note{color:var(--muted);font-size:.85em}\
.b{color:var(--b);font-weight:600}.c{color:var(--c);font-weight:600}\
.up{color:#1a7f37}.down{color:#b42318}.same{color:var(--muted)}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;margin:.4em 0}\
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}\
th{font-size:.85em;color:var(--muted);font-weight:600}\
td.n,th.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}\
table.small{font-size:.85em}\
tr.candidate td{border-bottom-width:2px}\
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}\
td code{white-space:nowrap;word-break:normal}\
.chart{width:100%;max-width:760px;height:auto;display:block;margin:.3em 0}\
.chart .axis{font-size:11px;fill:var(--muted)}.chart .val{font-size:11px;fill:var(--ink)}\
.chart .grid{stroke:var(--line)}.chart .baseline-rate{stroke:#888;stroke-dasharray:4 3}\
.legend{margin:.2em 0;font-size:.9em;color:var(--muted)}\
.key{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 10px;vertical-align:-1px}\
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}\
figure{margin:0}figcaption{font-weight:600}\
.help{color:var(--muted);font-size:.9em}\
.empty,.muted{color:var(--muted)}\
.tag{display:inline-block;background:#eef1f6;border-radius:10px;padding:0 8px;font-size:.85em;margin:1px 0}\
.example{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:8px 0}\
.states{display:grid;grid-template-columns:1fr 1fr;gap:10px;margin-bottom:6px}\
.example ul{margin:.2em 0 0;padding-left:1.2em}\
footer{color:var(--muted);font-size:.85em;text-align:center;padding:8px}\
@media (max-width:560px){main{padding:8px}section{padding:10px}.states{grid-template-columns:1fr}}\
@media print{body{background:#fff;font-size:11pt}main{max-width:none;padding:0}\
section{border:none;border-radius:0;padding:0;margin:0 0 14pt;break-inside:avoid-page}\
.example,figure,tr{break-inside:avoid}.scroll{overflow:visible}\
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_is_escaped_and_missing_figures_show_a_dash() {
        let report = json!({
            "baseline": {"rules": "rules", "stages": {"lead": 3, "mql": 0}},
            "candidate": {"rules": "<script>x</script>", "stages": {"lead": 2, "mql": 1}},
            "diff": {"leads": 1, "examples": [{"email": "a&b@x.de", "because": ["f.rhai:1 tag \"<b>\""],
                     "baseline": {"stage": "lead", "tags": []}, "candidate": {"stage": "mql", "tags": ["x'y"]}}]}
        });
        let page = render(&report);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("a&amp;b@x.de"));
        assert!(page.contains("tag &quot;&lt;b&gt;&quot;"));
        assert!(page.contains("x&#39;y"));
        assert!(page.contains("<span class=\"up\">+1</span>"));
        assert!(page.contains("<span class=\"down\">−1</span>"));
        // No outcomes: dashes, not NaN or panics.
        assert!(page.contains("<td class=\"n\">–</td>"));
        assert!(!page.contains("NaN"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        // An empty report renders too.
        assert!(render(&json!({})).contains("No leads."));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(&json!(1234567)), "1,234,567");
        assert_eq!(count(&json!(12.5)), "12.5");
        assert_eq!(count(&json!(-1000)), "-1,000");
        assert_eq!(pct(&json!(0.1234)), "12.3 %");
        assert_eq!(fixed(&json!(null), 2), "–");
    }
}
