//! The `data` each mail template gets from the rules, found without running them: every
//! `send_mail("template", #{ data: #{ ... } })` call in the rule files (read from the
//! Rhai syntax tree) and, where a call's data is not written out as a map, the event
//! properties of the rule fixtures whose events ask for that mail.
//!
//! `nurtured templates check` and the daemon's template reload render each template
//! once per call with these keys, so a template that reads `data.webinar` is checked
//! against the calls that really pass (or lack) `webinar`.

use std::collections::BTreeMap;
use std::path::Path;

use rhai::{ASTNode, Engine, Expr, OptimizationLevel, Position};
use serde_json::{Map, Value, json};

use crate::rules::mail_api::OPT_IN_TEMPLATE;

/// One place that asks for a mail, with the `data` it passes.
#[derive(Debug, Clone, PartialEq)]
pub struct DataCall {
    /// `rules/50-mail.rhai:31:14` or `rules/tests/x.toml (event 3)`.
    pub at: String,
    /// The data keys with a sample value of the type written in the call.
    pub data: Map<String, Value>,
}

/// The calls per template name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateData {
    pub calls: BTreeMap<String, Vec<DataCall>>,
}

impl TemplateData {
    /// Reads the `.rhai` files of `rules_dir` and the fixtures in `rules_dir/tests`.
    /// Files that cannot be read or parsed are left out (`rules check` reports them).
    pub fn collect(rules_dir: &Path, rules_shown: &str) -> Self {
        let shown_dir = rules_shown.trim_end_matches('/');
        let mut found = Self::default();
        let mut dynamic: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, text) in files(rules_dir, "rhai") {
            let shown = format!("{shown_dir}/{name}");
            for call in in_rule(&shown, &text) {
                match call {
                    Found::Literal(template, c) => {
                        found.calls.entry(template).or_default().push(c);
                    }
                    Found::Dynamic(template, at) => {
                        dynamic.entry(template).or_default().push(at);
                    }
                }
            }
        }
        if !dynamic.is_empty() {
            let tests = rules_dir.join("tests");
            for (name, text) in files(&tests, "toml") {
                let shown = format!("{shown_dir}/tests/{name}");
                for (template, c) in in_fixture(&shown, &text) {
                    if let Some(rule_calls) = dynamic.get(&template) {
                        let c = DataCall {
                            at: format!("{} via {}", c.at, rule_calls.join(", ")),
                            ..c
                        };
                        found.calls.entry(template).or_default().push(c);
                    }
                }
            }
        }
        found
    }

    /// The distinct data maps passed to `template`, each with the first call that
    /// passes it; empty when no rule asks for the template.
    pub fn samples(&self, template: &str) -> Vec<(&str, Value)> {
        let mut out: Vec<(&str, Value)> = Vec::new();
        for c in self.calls.get(template).into_iter().flatten() {
            let keys: Vec<&String> = c.data.keys().collect();
            if !out.iter().any(|(_, v)| {
                v.as_object()
                    .is_some_and(|m| m.keys().collect::<Vec<_>>() == keys)
            }) {
                out.push((&c.at, Value::Object(c.data.clone())));
            }
        }
        out
    }

    /// `rules/50-mail.rhai:31:14 passes topic; rules/x.rhai:9:5 passes nothing`.
    pub fn describe(&self, template: &str) -> String {
        self.calls
            .get(template)
            .into_iter()
            .flatten()
            .map(|c| {
                let keys: Vec<&str> = c.data.keys().map(String::as_str).collect();
                if keys.is_empty() {
                    format!("{} passes no data", c.at)
                } else {
                    format!("{} passes {}", c.at, keys.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

enum Found {
    Literal(String, DataCall),
    /// The data is an expression, not a map written out: where.
    Dynamic(String, String),
}

/// The files of `dir` ending in `.ext`, in name order.
fn files(dir: &Path, ext: &str) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext) && p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().to_string();
            Some((name, std::fs::read_to_string(&p).ok()?))
        })
        .collect();
    out.sort();
    out
}

/// The mail calls of one rule file.
fn in_rule(shown: &str, text: &str) -> Vec<Found> {
    let mut engine = Engine::new_raw();
    // Constant maps stay maps in the tree.
    engine.set_optimization_level(OptimizationLevel::None);
    // The file was checked against the sandbox's limits when it was loaded.
    engine.set_max_expr_depths(0, 0);
    let Ok(ast) = engine.compile(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let at = |pos: Position| match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{shown}:{l}:{c}"),
        (Some(l), None) => format!("{shown}:{l}"),
        _ => shown.to_string(),
    };
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(Expr::MethodCall(f, pos) | Expr::FnCall(f, pos))) = path.last()
        else {
            return true;
        };
        match f.name.as_str() {
            "send_opt_in" => out.push(Found::Literal(
                OPT_IN_TEMPLATE.to_string(),
                DataCall {
                    at: at(*pos),
                    data: Map::new(),
                },
            )),
            "send_mail" => {
                let mut args = f.args.iter();
                let Some(template) = args.by_ref().find_map(|a| match a {
                    Expr::StringConstant(s, _) => Some(s.trim().to_string()),
                    _ => None,
                }) else {
                    return true; // a template chosen at run time: nothing to check
                };
                match args.next() {
                    None => out.push(Found::Literal(
                        template,
                        DataCall {
                            at: at(*pos),
                            data: Map::new(),
                        },
                    )),
                    Some(Expr::Map(options, _)) => {
                        match options.0.iter().find(|(k, _)| k.name == "data") {
                            None => out.push(Found::Literal(
                                template,
                                DataCall {
                                    at: at(*pos),
                                    data: Map::new(),
                                },
                            )),
                            Some((_, Expr::Map(data, _))) => out.push(Found::Literal(
                                template,
                                DataCall {
                                    at: at(*pos),
                                    data: data
                                        .0
                                        .iter()
                                        .map(|(k, v)| (k.name.to_string(), sample(&k.name, v)))
                                        .collect(),
                                },
                            )),
                            Some(_) => out.push(Found::Dynamic(template, at(*pos))),
                        }
                    }
                    Some(_) => out.push(Found::Dynamic(template, at(*pos))),
                }
            }
            _ => {}
        }
        true
    });
    out
}

/// A value of the type the call writes: the constant itself, or a text for anything
/// computed at run time.
fn sample(key: &str, e: &Expr) -> Value {
    match e {
        Expr::StringConstant(s, _) => json!(s.as_str()),
        Expr::IntegerConstant(i, _) => json!(i),
        Expr::BoolConstant(b, _) => json!(b),
        Expr::CharConstant(c, _) => json!(c.to_string()),
        Expr::Array(items, _) => Value::Array(items.iter().map(|i| sample(key, i)).collect()),
        Expr::Map(m, _) => Value::Object(
            m.0.iter()
                .map(|(k, v)| (k.name.to_string(), sample(&k.name, v)))
                .collect(),
        ),
        Expr::DynamicConstant(d, _) => serde_json::to_value(&**d).unwrap_or_else(|_| json!(key)),
        _ => json!(key),
    }
}

/// The mails a fixture's events expect (`send_mail TEMPLATE ...` actions), each with
/// that event's properties as the data sample.
fn in_fixture(shown: &str, text: &str) -> Vec<(String, DataCall)> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let events = doc.get("events").and_then(|e| e.as_array());
    for (i, event) in events.into_iter().flatten().enumerate() {
        let actions = event
            .get("expect")
            .and_then(|e| e.get("actions"))
            .and_then(|a| a.as_array());
        let properties = event
            .get("properties")
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|p| p.as_object().cloned())
            .unwrap_or_default();
        for a in actions.into_iter().flatten().filter_map(|a| a.as_str()) {
            if let Some(rest) = a.strip_prefix("send_mail ") {
                let template = rest.split_whitespace().next().unwrap_or_default();
                out.push((
                    template.to_string(),
                    DataCall {
                        at: format!("{shown} (event {})", i + 1),
                        data: properties.clone(),
                    },
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_data_maps_are_read_with_their_position() {
        let text = r#"
fn on_event(lead, event) {
    if event.type == "track" {
        lead.send_mail("trigger/webinar", #{ key: "w", data: #{ webinar: event.name, seats: 3 } });
    }
    lead.send_mail("trigger/plain");
    lead.send_opt_in();
}
"#;
        let found = in_rule("rules/55-webinar.rhai", text);
        let literal: Vec<(String, DataCall)> = found
            .into_iter()
            .filter_map(|f| match f {
                Found::Literal(t, c) => Some((t, c)),
                Found::Dynamic(..) => None,
            })
            .collect();
        assert_eq!(literal.len(), 3, "{literal:?}");
        assert_eq!(literal[0].0, "trigger/webinar");
        assert_eq!(literal[0].1.at, "rules/55-webinar.rhai:4:14");
        assert_eq!(
            Value::Object(literal[0].1.data.clone()),
            json!({"webinar": "webinar", "seats": 3})
        );
        assert_eq!(literal[1].0, "trigger/plain");
        assert!(literal[1].1.data.is_empty());
        assert_eq!(literal[2].0, OPT_IN_TEMPLATE);
    }

    #[test]
    fn data_from_a_variable_is_dynamic() {
        let text =
            r#"fn on_event(lead, event) { let d = #{}; lead.send_mail("t", #{ data: d }); }"#;
        let found = in_rule("r.rhai", text);
        assert!(matches!(&found[..], [Found::Dynamic(t, _)] if t == "t"));
    }

    #[test]
    fn dynamic_data_takes_the_properties_of_the_fixtures_that_ask_for_the_mail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("55-webinar.rhai"),
            r#"fn on_event(lead, event) { lead.send_mail("trigger/webinar", #{ data: event.properties }); }"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/webinar.toml"),
            r#"
[lead]
email = "a@example.com"
[[events]]
type = "track"
event = "Webinar Attended"
properties = { webinar = "Funnel", seats = 2 }
expect = { actions = ["send_mail trigger/webinar"] }
"#,
        )
        .unwrap();
        let data = TemplateData::collect(dir.path(), "rules");
        let samples = data.samples("trigger/webinar");
        assert_eq!(samples.len(), 1, "{data:?}");
        assert_eq!(samples[0].1, json!({"webinar": "Funnel", "seats": 2}));
        assert_eq!(
            samples[0].0,
            "rules/tests/webinar.toml (event 1) via rules/55-webinar.rhai:1:33"
        );
    }
}
