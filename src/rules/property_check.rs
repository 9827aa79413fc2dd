//! Unknown `lead.NAME` and `event.NAME` reads, found in the compiled rule before it
//! runs: a misspelled lead property would fail every event that reaches it, and a
//! misspelled event key would silently read `()`. Part of compiling a rule file, so
//! `nurtured rules check`, the daemon's start and its reload all report them.
//!
//! The walk follows the Rhai syntax tree (not the text): in every function, the
//! parameters that hold the lead or the event are known by position in
//! `on_event(lead, event)` and, in any function, by name (`lead`, `event`), so helpers
//! that receive them are covered too. A function that assigns a new value to such a
//! name (`let lead = ...`) is not checked for it. Below `event.properties`, `traits`,
//! `context` and `lead.attributes` the keys are free-form and not checked.

use std::any::TypeId;
use std::sync::OnceLock;

use chrono::Utc;
use rhai::{AST, ASTNode, Engine, Expr, Map, Position, Stmt};

use super::api::LeadHandle;
use super::error::RuleError;
use super::ruleset::ON_EVENT;
use super::run::EventView;

/// The properties of `lead` (its registered getters), in name order.
static LEAD_PROPERTIES: OnceLock<Vec<String>> = OnceLock::new();
/// The methods of `lead` (`tag`, `add_interest`, ...), in name order.
static LEAD_METHODS: OnceLock<Vec<String>> = OnceLock::new();

/// Event keys whose content is free-form: nothing below them is checked.
const FREE_EVENT_KEYS: [&str; 3] = ["properties", "traits", "context"];

/// Remembers the lead's properties as registered on `engine` (once per process; every
/// engine registers the same API).
pub fn remember_lead_properties(engine: &Engine) {
    let on_lead = || {
        engine.collect_fn_metadata(
            None,
            |info| {
                let m = info.metadata;
                (m.param_types.first() == Some(&TypeId::of::<LeadHandle>()))
                    .then(|| m.name.to_string())
            },
            false,
        )
    };
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names.dedup();
        names
    };
    LEAD_PROPERTIES.get_or_init(|| {
        sorted(
            on_lead()
                .iter()
                .filter_map(|n| n.strip_prefix("get$").map(str::to_string))
                .collect(),
        )
    });
    LEAD_METHODS.get_or_init(|| {
        sorted(
            on_lead()
                .into_iter()
                .filter(|n| !n.starts_with("get$") && !n.starts_with("set$"))
                .collect(),
        )
    });
}

/// The methods a rule can call on `lead`, e.g. `tag`, `add_interest`.
pub fn lead_methods() -> &'static [String] {
    LEAD_METHODS.get().map_or(&[], Vec::as_slice)
}

/// The properties a rule can read from `lead`, e.g. `title`, `fit`.
pub fn lead_properties() -> &'static [String] {
    LEAD_PROPERTIES.get().map_or(&[], Vec::as_slice)
}

/// The keys of the event map handed to rules (`type`, `name`, `properties`, ...), taken
/// from the map itself, for a page view (which has the most keys).
pub fn event_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let view = EventView {
            seq: 0,
            kind: "page".into(),
            name: String::new(),
            message_id: String::new(),
            properties: Map::new(),
            traits: Map::new(),
            context: Map::new(),
            at: Utc::now(),
        };
        let mut keys: Vec<String> = view
            .to_dynamic()
            .try_cast::<Map>()
            .map(|m| m.keys().map(ToString::to_string).collect())
            .unwrap_or_default();
        keys.sort();
        keys
    })
}

/// The closest known name to `wrong`, when it is close enough to be a typo.
pub fn suggestion<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong = wrong.to_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(&wrong, &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// "unknown lead property `titel`; did you mean `title`? The lead's properties are: ..."
pub fn unknown_lead_property(name: &str) -> String {
    unknown(
        "lead property",
        name,
        lead_properties(),
        "The lead's properties are",
        " (free attributes: lead.attr(\"NAME\"))",
    )
}

/// "unknown event key `nmae`; did you mean `name`? The event's keys are: ..."
pub fn unknown_event_key(name: &str) -> String {
    unknown(
        "event key",
        name,
        event_keys(),
        "The event's keys are",
        " (the event's own data: event.properties.NAME)",
    )
}

fn unknown(what: &str, name: &str, known: &[String], list: &str, hint: &str) -> String {
    let mean = suggestion(name, known.iter().map(String::as_str))
        .map_or_else(String::new, |s| format!("; did you mean `{s}`?"));
    let sep = if mean.is_empty() { ". " } else { " " };
    format!(
        "unknown {what} `{name}`{mean}{sep}{list}: {}{hint}",
        known.join(", ")
    )
}

/// What a variable holds, as far as the check knows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Lead,
    Event,
}

/// A function's body (from, to) and the parameters that hold the lead or the event.
struct Scope {
    from: (usize, usize),
    to: (usize, usize),
    roles: Vec<(String, Role)>,
}

fn at(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

/// The innermost function whose body holds `pos` (a closure inside a function wins).
fn scope_of(scopes: &mut [Scope], pos: Position) -> Option<&mut Scope> {
    let pos = at(pos);
    scopes
        .iter_mut()
        .filter(|s| s.from <= pos && pos <= s.to)
        .max_by_key(|s| s.from)
}

/// The unknown `lead.NAME` / `event.NAME` reads in a compiled file, in source order.
pub fn check(ast: &AST, shown: &str) -> Vec<RuleError> {
    check_with(ast, shown, &[])
}

/// [`check`], where the one parameter of each of `lead_functions` (the functions that
/// schedules and team assignments call with a lead) holds the lead, whatever its name.
pub fn check_with(ast: &AST, shown: &str, lead_functions: &[&str]) -> Vec<RuleError> {
    let mut scopes: Vec<Scope> = ast
        .iter_fn_def()
        .map(|def| {
            let roles = def
                .params
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let role = match (def.name.as_str(), def.params.len(), i, p.as_str()) {
                        (ON_EVENT, 2, 0, _) | (_, _, _, "lead") => Role::Lead,
                        (name, 1, 0, _) if lead_functions.contains(&name) => Role::Lead,
                        (ON_EVENT, 2, 1, _) | (_, _, _, "event") => Role::Event,
                        _ => return None,
                    };
                    Some((p.to_string(), role))
                })
                .collect();
            Scope {
                from: at(def.body.start_position()),
                to: at(def.body.end_position()),
                roles,
            }
        })
        .collect();
    // A name given a new value inside a function no longer holds the lead / event there.
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Var(x, ..))) = path.last()
            && let Some(scope) = scope_of(&mut scopes, x.0.pos)
        {
            scope.roles.retain(|(n, _)| *n != x.0.name.as_str());
        }
        true
    });
    let mut found: Vec<(Position, String)> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::Dot(x, ..))) = path.last()
            && let Expr::Variable(v, _, var_pos) = &x.lhs
            && let Some(scope) = scope_of(&mut scopes, *var_pos)
            && let Some((_, role)) = scope.roles.iter().find(|(n, _)| *n == v.1.as_str())
            && let Some((property, pos)) = head(&x.rhs)
        {
            let message = match role {
                Role::Lead if !lead_properties().iter().any(|p| p == property) => {
                    Some(unknown_lead_property(property))
                }
                Role::Event
                    if !event_keys().iter().any(|p| p == property)
                        && !FREE_EVENT_KEYS.contains(&property) =>
                {
                    Some(unknown_event_key(property))
                }
                _ => None,
            };
            if let Some(m) = message {
                found.push((pos, m));
            }
        }
        true
    });
    found.sort_by_key(|(pos, _)| at(*pos));
    found.dedup();
    found
        .into_iter()
        .map(|(pos, message)| RuleError {
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            ..RuleError::new(
                shown,
                format!("{message}; fix the rule, then check it with `nurtured rules check`"),
            )
        })
        .collect()
}

/// The first property read on the right of a dot: `titel` in `lead.titel.len()`.
fn head(expr: &Expr) -> Option<(&str, Position)> {
    match expr {
        Expr::Property(p, pos) => Some((p.2.as_str(), *pos)),
        Expr::Dot(x, ..) | Expr::Index(x, ..) => head(&x.lhs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::rules::Sandbox;

    fn errors(text: &str) -> Vec<String> {
        let config = Config::load_with_env(None, Vec::new()).expect("default config");
        let sandbox = Sandbox::new(&config.limits, Arc::new(BTreeMap::new()));
        let ast = sandbox.engine.compile(text).expect("compiles");
        check(&ast, "rules/x.rhai")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_misspelled_lead_property_is_reported_with_a_suggestion() {
        let e = errors("fn on_event(lead, event) {\n    if lead.titel == \"CEO\" {}\n}\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("rules/x.rhai:2:13: unknown lead property `titel`; did you mean `title`? The lead's properties are: "),
            "{}",
            e[0]
        );
        assert!(e[0].contains("first_name"), "{}", e[0]);
        assert!(!e[0].contains("getter"), "{}", e[0]);
    }

    #[test]
    fn parameters_are_known_by_position_in_on_event_and_by_name_in_helpers() {
        let text = "fn on_event(l, e) {\n  l.fitt; e.nmae; e.properties.anything; l.attributes.x;\n}\n\
                    fn helper(x, lead) { lead.stagee.len() }\n\
                    fn other(event) { event.typ }\n\
                    fn free(x) { x.whatever }\n\
                    fn shadow(lead) { let lead = #{ a: 1 }; lead.a }\n";
        let e = errors(text);
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].contains("2:5: unknown lead property `fitt`; did you mean `fit`?"),
            "{}",
            e[0]
        );
        assert!(
            e[1].contains("2:13: unknown event key `nmae`; did you mean `name`?"),
            "{}",
            e[1]
        );
        assert!(
            e[2].contains("4:27: unknown lead property `stagee`; did you mean `stage`?"),
            "{}",
            e[2]
        );
        assert!(
            e[3].contains("5:25: unknown event key `typ`; did you mean `type`?"),
            "{}",
            e[3]
        );
    }

    #[test]
    fn functions_called_with_a_lead_are_checked_whatever_the_parameter_is_called() {
        let config = Config::load_with_env(None, Vec::new()).expect("default config");
        let sandbox = Sandbox::new(&config.limits, Arc::new(BTreeMap::new()));
        let ast = sandbox
            .engine
            .compile("fn review(l) {\n    l.intrest\n}\n")
            .unwrap();
        assert!(check(&ast, "rules/x.rhai").is_empty());
        let e = check_with(&ast, "rules/x.rhai", &["review"]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].to_string().starts_with(
                "rules/x.rhai:2:7: unknown lead property `intrest`; did you mean `interest`?"
            ),
            "{}",
            e[0]
        );
    }

    #[test]
    fn known_names_and_methods_pass() {
        let text = "fn on_event(lead, event) {\n  lead.title; lead.fit; lead.count(\"x\"); lead.tag(\"a\");\n  \
                    event.name; event.path; event.properties.topic; event.url.len();\n}\n";
        assert_eq!(errors(text), Vec::<String>::new());
    }

    #[test]
    fn no_suggestion_when_nothing_is_close() {
        let m = unknown_lead_property("zzzzzzzz");
        assert!(
            m.starts_with("unknown lead property `zzzzzzzz`. The lead's properties are: "),
            "{m}"
        );
    }

    #[test]
    fn event_keys_come_from_the_event_map() {
        for key in [
            "type",
            "name",
            "properties",
            "traits",
            "context",
            "timestamp",
            "url",
            "path",
            "page",
            "seq",
            "message_id",
        ] {
            assert!(
                event_keys().iter().any(|k| k == key),
                "{key}: {:?}",
                event_keys()
            );
        }
    }
}
