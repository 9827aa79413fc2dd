//! Rule errors with the file, line and column they come from, in words a marketing ops
//! person can act on.

use std::fmt;

use rhai::{EvalAltResult, ParseError, Position};
use serde::{Deserialize, Serialize};

/// A compile or run-time error in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct RuleError {
    pub file: String,
    /// 1-based; 0 when the error has no position.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The daemon, not the rule, failed (e.g. the database did not answer): the event
    /// is tried again later instead of being marked failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// The limits, for messages that say which one was hit.
#[derive(Debug, Clone, Copy)]
pub struct LimitNames {
    pub max_operations: u64,
    pub timeout: std::time::Duration,
}

fn line_col(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

/// Rhai appends " (line X, position Y)" to messages; the position is shown separately.
fn without_position(text: String) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

impl RuleError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: message.into(),
            transient: false,
        }
    }

    /// A syntax error found while compiling `file`.
    pub fn from_parse(file: &str, err: &ParseError) -> Self {
        let (line, column) = line_col(err.1);
        Self {
            file: file.to_string(),
            line,
            column,
            message: format!(
                "{}; fix the rule, then check it with `nurtured rules check`",
                without_position(err.0.to_string())
            ),
            transient: false,
        }
    }

    /// A run-time error raised while calling into `file`. Follows nested function calls
    /// to the innermost error, so the position is where things went wrong.
    pub fn from_eval(file: &str, err: &EvalAltResult, limits: LimitNames) -> Self {
        let mut file = file.to_string();
        let mut err = err;
        loop {
            match err {
                EvalAltResult::ErrorInFunctionCall(_, source, inner, _) => {
                    if !source.is_empty() {
                        file = source.clone();
                    }
                    err = inner;
                }
                EvalAltResult::ErrorInModule(_, inner, _) => err = inner,
                _ => break,
            }
        }
        let (line, column) = line_col(err.position());
        let transient = matches!(err, EvalAltResult::ErrorSystem(..));
        let message = match err {
            EvalAltResult::ErrorTooManyOperations(_) => format!(
                "the rule did too much work (more than {} steps) and was stopped; look for an \
                 endless loop (the limit is limits.max_operations)",
                limits.max_operations
            ),
            EvalAltResult::ErrorTerminated(..) => format!(
                "the rule ran longer than {} and was stopped; look for an endless loop or slow \
                 code (the limit is limits.timeout)",
                humantime::format_duration(limits.timeout)
            ),
            EvalAltResult::ErrorStackOverflow(_) => {
                "functions call each other too deeply (limits.max_call_depth); look for a \
                 function that calls itself without end"
                    .to_string()
            }
            EvalAltResult::ErrorDataTooLarge(what, _) => format!(
                "{what} is larger than the limits allow (limits.max_string_size, \
                 max_array_size, max_map_size)"
            ),
            EvalAltResult::ErrorFunctionNotFound(sig, _) => format!(
                "no function {sig}: check the spelling and the kinds of values passed{}; the \
                 rule API is listed in docs/rules.md under \"Rule API reference\"",
                lead_method_suggestion(sig)
                    .map_or_else(String::new, |m| format!(" (did you mean `lead.{m}`?)"))
            ),
            EvalAltResult::ErrorDotExpr(text, _) => {
                dot_message(text).unwrap_or_else(|| without_position(err.to_string()))
            }
            EvalAltResult::ErrorRuntime(value, _) => {
                if value.is_string() {
                    value.to_string()
                } else {
                    without_position(err.to_string())
                }
            }
            other => without_position(other.to_string()),
        };
        Self {
            file,
            line,
            column,
            message,
            transient,
        }
    }
}

/// For a method called on the lead (`add_intrest (Lead, i64, ...)`), the closest
/// method the lead has, when the name looks like a typo of it.
fn lead_method_suggestion(signature: &str) -> Option<&'static str> {
    let (name, args) = signature.split_once(" (")?;
    if !args.starts_with("Lead") {
        return None;
    }
    let methods = super::property_check::lead_methods();
    if methods.iter().any(|m| m == name) {
        return None; // the name is right; the values passed are not
    }
    super::property_check::suggestion(name, methods.iter().map(String::as_str))
}

/// Rhai's words for a property without getter or setter ("Unknown property 'titel' - a
/// getter is not registered for type 'Lead'"), in the words of the rule API.
fn dot_message(text: &str) -> Option<String> {
    if let Some(rest) = text.strip_prefix("Unknown property '") {
        let (property, rest) = rest.split_once("' - a getter is not registered for type '")?;
        let kind = rest.strip_suffix('\'')?;
        return Some(if kind == "Lead" {
            super::property_check::unknown_lead_property(property)
        } else {
            format!("a value of type {kind} has no property `{property}`")
        });
    }
    let rest = text.strip_prefix("No writable property '")?;
    let (property, rest) = rest.split_once("' - a setter is not registered for type '")?;
    let kind = rest.split('\'').next()?;
    Some(if kind == "Lead" {
        format!(
            "`lead.{property}` cannot be set: rules change the lead with its methods \
             (set_stage, set_fit, add_interest, tag, set_attr, ...), listed in docs/rules.md \
             under \"Changing the lead\""
        )
    } else {
        format!("`{property}` cannot be set on a value of type {kind}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let mut e = RuleError::new("rules/a.rhai", "boom");
        assert_eq!(e.to_string(), "rules/a.rhai: boom");
        e.line = 3;
        e.column = 7;
        assert_eq!(e.to_string(), "rules/a.rhai:3:7: boom");
    }

    /// Rhai's own error for a property without getter, raised by a real engine on a
    /// type named like the lead, comes out in the words of the rule API.
    #[test]
    fn an_unknown_property_of_the_lead_is_named_with_a_suggestion() {
        #[derive(Clone)]
        struct Fake;
        let config = crate::config::Config::load_with_env(None, Vec::new()).expect("defaults");
        // Building the sandbox registers the lead's properties.
        let _ = crate::rules::Sandbox::new(&config.limits, Default::default());
        let mut engine = rhai::Engine::new();
        engine.register_type_with_name::<Fake>("Lead");
        let ast = engine.compile("fn f(x) {\n    x.titel\n}").unwrap();
        let err = engine
            .call_fn::<rhai::Dynamic>(&mut rhai::Scope::new(), &ast, "f", (Fake,))
            .unwrap_err();
        let limits = LimitNames {
            max_operations: 1,
            timeout: std::time::Duration::from_secs(1),
        };
        let e = RuleError::from_eval("rules/x.rhai", &err, limits);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "rules/x.rhai:2:7: unknown lead property `titel`; did you mean `title`? \
                 The lead's properties are: attributes, company,"
            ),
            "{text}"
        );
        assert!(!text.contains("getter"), "{text}");

        let ast = engine.compile("fn f(x) {\n    x.title = 1;\n}").unwrap();
        let err = engine
            .call_fn::<rhai::Dynamic>(&mut rhai::Scope::new(), &ast, "f", (Fake,))
            .unwrap_err();
        let text = RuleError::from_eval("rules/x.rhai", &err, limits).to_string();
        assert!(text.contains("`lead.title` cannot be set"), "{text}");
        assert!(!text.contains("setter"), "{text}");

        let ast = engine
            .compile("fn f(x) {\n    x.add_intrest(10, \"typo\");\n}")
            .unwrap();
        let err = engine
            .call_fn::<rhai::Dynamic>(&mut rhai::Scope::new(), &ast, "f", (Fake,))
            .unwrap_err();
        let text = RuleError::from_eval("rules/x.rhai", &err, limits).to_string();
        assert!(
            text.starts_with("rules/x.rhai:2:7: no function add_intrest (Lead, i64, ")
                && text.contains("(did you mean `lead.add_interest`?)"),
            "{text}"
        );
    }

    #[test]
    fn strips_rhai_position_suffix() {
        assert_eq!(
            without_position("Variable not found: x (line 2, position 5)".into()),
            "Variable not found: x"
        );
    }
}
