//! Environment overrides: `NURTURED_<KEY>` for top-level keys and
//! `NURTURED_<TABLE>__<KEY>` for keys in a table (`NURTURED_LIMITS__TIMEOUT=500ms`).

use toml::{Table, Value};

/// Prefix of every override variable.
pub const PREFIX: &str = "NURTURED_";

/// Variables with the prefix that are not configuration keys: the config file to read,
/// and the PostgreSQL server the test suite runs against.
const NOT_KEYS: &[&str] = &["NURTURED_CONFIG", crate::store::testing::POSTGRES_ENV];

/// The prefix of the test suite's own variables (`NURTURED_TEST_POSTGRES`,
/// `NURTURED_TEST_PYTHON`): no configuration key starts with `test_`.
const TEST_PREFIX: &str = "NURTURED_TEST_";

/// One applied override, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub var: String,
    /// Dotted key path, e.g. `limits.timeout`.
    pub key: String,
}

/// Why an override variable was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}: {message}")]
pub struct EnvError {
    pub var: String,
    pub message: String,
}

/// Applies every `NURTURED_*` variable in `vars` to `table`. `defaults` tells which keys
/// exist and their types, so `NURTURED_API_TOKEN=123` stays a string.
pub fn apply(
    table: &mut Table,
    defaults: &Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, EnvError> {
    let mut applied = Vec::new();
    let mut vars: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(PREFIX) && !k.starts_with(TEST_PREFIX) && !NOT_KEYS.contains(&k.as_str())
        })
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let fail = |message: String| EnvError {
            var: var.clone(),
            message,
        };
        let default = lookup(defaults, &path).ok_or_else(|| {
            fail(format!(
                "`{}` is not a config key; top-level keys: {}; keys in a table are set with \
                 a double underscore, e.g. NURTURED_LIMITS__TIMEOUT",
                path.join("."),
                defaults.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let value = match default {
            Value::String(_) => Value::String(raw.clone()),
            // A list as TOML writes it (`["a", "b"]`): `mail.previous_secrets` next to
            // `NURTURED_MAIL__SECRET`.
            // Lists of tables (stages, streams, ...) stay in the file.
            Value::Array(items) if !items.iter().any(Value::is_table) => match parse_scalar(&raw) {
                Some(Value::Array(list)) if !list.iter().any(Value::is_table) => Value::Array(list),
                _ => {
                    return Err(fail(format!(
                        "`{}` is a list: write it as TOML does, e.g. [\"a\", \"b\"], or set \
                         it in the config file",
                        path.join(".")
                    )));
                }
            },
            Value::Array(_) | Value::Table(_) => {
                return Err(fail(format!(
                    "`{}` is a list of tables or a table; set it in the config file",
                    path.join(".")
                )));
            }
            _ => parse_scalar(&raw)
                .ok_or_else(|| fail(format!("`{raw}` is not a {} value", default.type_str())))?,
        };
        insert(table, &path, value);
        applied.push(Override {
            var: var.clone(),
            key: path.join("."),
        });
    }
    Ok(applied)
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = table.get(first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        lookup(v.as_table()?, rest)
    }
}

fn insert(table: &mut Table, path: &[String], value: Value) {
    let (first, rest) = path.split_first().expect("non-empty path");
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = entry {
        insert(t, rest, value);
    }
}

fn parse_scalar(raw: &str) -> Option<Value> {
    let doc: Table = format!("v = {raw}").parse().ok()?;
    doc.get("v").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Table {
        "api_token = \"x\"\n[limits]\ntimeout = \"1s\"\nmax_operations = 5\n"
            .parse()
            .unwrap()
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_top_level_and_nested_keys() {
        let mut t = Table::new();
        let applied = apply(
            &mut t,
            &defaults(),
            vars(&[
                ("NURTURED_API_TOKEN", "123"),
                ("NURTURED_LIMITS__MAX_OPERATIONS", "9"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.len(), 2);
        assert_eq!(t["api_token"], Value::String("123".into()));
        assert_eq!(t["limits"]["max_operations"], Value::Integer(9));
    }

    #[test]
    fn unknown_and_mistyped_variables_are_refused() {
        let err = apply(
            &mut Table::new(),
            &defaults(),
            vars(&[("NURTURED_TOKEN", "x")]),
        )
        .unwrap_err();
        assert!(err.message.contains("not a config key"), "{err}");
        let err = apply(
            &mut Table::new(),
            &defaults(),
            vars(&[("NURTURED_LIMITS__MAX_OPERATIONS", "lots")]),
        )
        .unwrap_err();
        assert!(err.message.contains("integer"), "{err}");
    }

    #[test]
    fn a_list_is_taken_as_toml_writes_it() {
        let defaults: Table = "[mail]\nprevious_secrets = []\n[[stages]]\nname = \"x\"\n"
            .parse()
            .unwrap();
        let mut t = Table::new();
        apply(
            &mut t,
            &defaults,
            [(
                "NURTURED_MAIL__PREVIOUS_SECRETS".to_string(),
                r#"["old one", "older one"]"#.to_string(),
            )],
        )
        .unwrap();
        assert_eq!(
            t["mail"]["previous_secrets"],
            Value::Array(vec!["old one".into(), "older one".into()])
        );
        let err = apply(
            &mut Table::new(),
            &defaults,
            [(
                "NURTURED_MAIL__PREVIOUS_SECRETS".to_string(),
                "old one".to_string(),
            )],
        )
        .unwrap_err();
        assert!(
            err.message.contains("is a list: write it as TOML does"),
            "{err}"
        );
        let err = apply(
            &mut Table::new(),
            &defaults,
            [(
                "NURTURED_STAGES".to_string(),
                r#"[{ name = "y" }]"#.to_string(),
            )],
        )
        .unwrap_err();
        assert!(err.message.contains("list of tables"), "{err}");
    }
}
