//! Identify traits: what a form, CRM or tracking tool tells us about a person,
//! parsed once at the edge into typed patches for the lead.
//!
//! The typed text traits (names, phone, company, title, industry, country, time zone,
//! locale, owner, consent source) are single lines: they go into mail headers and
//! display names, so they are cleaned here with [`one_line`] (line breaks and tabs
//! become a space, other control characters are removed). Free attributes are kept
//! as sent.

use serde_json::{Map, Value};

use super::email::Email;
use super::text::one_line;

/// A change to one lead field: leave it, set it, or clear it (`null` in the payload).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

impl<T: Clone> Patch<T> {
    pub fn apply(&self, field: &mut Option<T>) {
        match self {
            Patch::Keep => {}
            Patch::Set(v) => *field = Some(v.clone()),
            Patch::Clear => *field = None,
        }
    }

    fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }
}

/// Parsed identify traits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Traits {
    pub email: Option<Email>,
    pub first_name: Patch<String>,
    pub last_name: Patch<String>,
    pub phone: Patch<String>,
    pub company: Patch<String>,
    pub title: Patch<String>,
    pub industry: Patch<String>,
    pub employees: Patch<i64>,
    pub revenue: Patch<f64>,
    pub country: Patch<String>,
    pub time_zone: Patch<String>,
    pub locale: Patch<String>,
    pub owner: Patch<String>,
    pub consent_email: Option<bool>,
    pub consent_tracking: Option<bool>,
    pub consent_source: Option<String>,
    /// Every other trait, kept as a free attribute (`None` removes it).
    pub attributes: Vec<(String, Option<Value>)>,
}

/// A trait that has the wrong type or value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TraitError {
    /// JSON path below the traits object, e.g. `traits.employees`.
    pub path: String,
    pub message: String,
}

/// Names under which a field is accepted (Segment's camelCase first, then snake_case).
const FIRST_NAME: &[&str] = &["firstName", "first_name"];
const LAST_NAME: &[&str] = &["lastName", "last_name"];
const TITLE: &[&str] = &["title", "jobTitle", "job_title", "position"];
const EMPLOYEES: &[&str] = &["employees", "employee_count", "employeeCount"];
const REVENUE: &[&str] = &["revenue", "annualRevenue", "annual_revenue"];
const TIME_ZONE: &[&str] = &["timezone", "time_zone", "timeZone"];
const LOCALE: &[&str] = &["locale", "language"];
/// Keys consumed by typed fields; everything else becomes an attribute.
const TYPED: &[&[&str]] = &[
    &["email"],
    FIRST_NAME,
    LAST_NAME,
    &["name"],
    &["phone"],
    &["company"],
    TITLE,
    &["industry"],
    EMPLOYEES,
    REVENUE,
    &["country"],
    &["address"],
    TIME_ZONE,
    LOCALE,
    &["owner"],
    &["consent_email"],
    &["consent_tracking"],
    &["consent_source"],
];

impl Traits {
    /// Parses a traits object; `base` is the JSON path of the object for error messages.
    pub fn parse(obj: &Map<String, Value>, base: &str) -> Result<Self, Vec<TraitError>> {
        let mut p = Parser {
            obj,
            base,
            errors: Vec::new(),
        };
        let mut t = Traits {
            email: p.email(),
            first_name: p.text(FIRST_NAME),
            last_name: p.text(LAST_NAME),
            phone: p.text(&["phone"]),
            title: p.text(TITLE),
            industry: p.text(&["industry"]),
            employees: p.count(EMPLOYEES, None),
            revenue: p.amount(REVENUE, None),
            country: p.text(&["country"]),
            time_zone: p.time_zone(),
            locale: p.text(LOCALE),
            owner: p.text(&["owner"]),
            consent_email: p.flag("consent_email"),
            consent_tracking: p.flag("consent_tracking"),
            consent_source: match p.text(&["consent_source"]) {
                Patch::Set(s) => Some(s),
                _ => None,
            },
            ..Traits::default()
        };
        p.name(&mut t);
        p.company(&mut t);
        if t.country.is_keep()
            && let Some(Value::Object(addr)) = obj.get("address")
        {
            t.country = p.nested_text(addr, "address", "country");
        }
        for (key, value) in obj {
            if TYPED.iter().any(|names| names.contains(&key.as_str())) {
                continue;
            }
            let value = (!value.is_null()).then(|| value.clone());
            t.attributes.push((key.clone(), value));
        }
        if p.errors.is_empty() {
            Ok(t)
        } else {
            Err(p.errors)
        }
    }
}

struct Parser<'a> {
    obj: &'a Map<String, Value>,
    base: &'a str,
    errors: Vec<TraitError>,
}

impl<'a> Parser<'a> {
    fn find(&self, names: &[&str]) -> Option<(String, &'a Value)> {
        let obj: &'a Map<String, Value> = self.obj;
        names
            .iter()
            .find_map(|n| obj.get(*n).map(|v| (format!("{}.{n}", self.base), v)))
    }

    fn fail(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(TraitError {
            path,
            message: message.into(),
        });
    }

    fn email(&mut self) -> Option<Email> {
        let (path, v) = self.find(&["email"])?;
        match v {
            Value::Null => None,
            Value::String(s) => match Email::parse(s) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.fail(path, e.to_string());
                    None
                }
            },
            _ => {
                self.fail(path, "must be a string with an e-mail address");
                None
            }
        }
    }

    fn text_value(&mut self, path: String, v: &Value) -> Patch<String> {
        match v {
            Value::Null => Patch::Clear,
            Value::String(s) => match one_line(s) {
                line if line.is_empty() => Patch::Clear,
                line => Patch::Set(line.into_owned()),
            },
            Value::Number(n) => Patch::Set(n.to_string()),
            Value::Bool(b) => Patch::Set(b.to_string()),
            _ => {
                self.fail(path, "must be a string");
                Patch::Keep
            }
        }
    }

    fn text(&mut self, names: &[&str]) -> Patch<String> {
        match self.find(names) {
            Some((path, v)) => self.text_value(path, v),
            None => Patch::Keep,
        }
    }

    fn nested_text(&mut self, obj: &Map<String, Value>, parent: &str, key: &str) -> Patch<String> {
        match obj.get(key) {
            Some(v) => self.text_value(format!("{}.{parent}.{key}", self.base), v),
            None => Patch::Keep,
        }
    }

    /// A head count: a number, a numeric string, or a range such as "51-200" or "1000+"
    /// (the lower bound counts).
    fn count_value(&mut self, path: String, v: &Value) -> Patch<i64> {
        match v {
            Value::Null => Patch::Clear,
            Value::Number(n) => match n.as_f64() {
                Some(f) if f >= 0.0 => Patch::Set(f.round() as i64),
                _ => {
                    self.fail(path, "must be a number of 0 or more");
                    Patch::Keep
                }
            },
            Value::String(s) if s.trim().is_empty() => Patch::Clear,
            Value::String(s) => {
                let lower = s
                    .trim()
                    .split(['-', '+', '–'])
                    .next()
                    .unwrap_or_default()
                    .replace(['.', ',', ' ', '_'], "");
                match lower.parse::<i64>() {
                    Ok(n) if n >= 0 => Patch::Set(n),
                    _ => {
                        self.fail(
                            path,
                            format!("`{s}` is not a number (give 200, \"200\" or a range like \"51-200\")"),
                        );
                        Patch::Keep
                    }
                }
            }
            _ => {
                self.fail(path, "must be a number");
                Patch::Keep
            }
        }
    }

    fn count(
        &mut self,
        names: &[&str],
        within: Option<(&'a Map<String, Value>, &str)>,
    ) -> Patch<i64> {
        let found = match within {
            Some((obj, parent)) => names.iter().find_map(|n| {
                obj.get(*n)
                    .map(|v| (format!("{}.{parent}.{n}", self.base), v))
            }),
            None => self.find(names),
        };
        match found {
            Some((path, v)) => self.count_value(path, v),
            None => Patch::Keep,
        }
    }

    fn amount(
        &mut self,
        names: &[&str],
        within: Option<(&'a Map<String, Value>, &str)>,
    ) -> Patch<f64> {
        let found = match within {
            Some((obj, parent)) => names.iter().find_map(|n| {
                obj.get(*n)
                    .map(|v| (format!("{}.{parent}.{n}", self.base), v))
            }),
            None => self.find(names),
        };
        let Some((path, v)) = found else {
            return Patch::Keep;
        };
        match v {
            Value::Null => Patch::Clear,
            Value::String(s) if s.trim().is_empty() => Patch::Clear,
            Value::Number(n) => Patch::Set(n.as_f64().unwrap_or_default()),
            Value::String(s) => match s.trim().replace([',', ' ', '_'], "").parse::<f64>() {
                Ok(f) => Patch::Set(f),
                Err(_) => {
                    self.fail(path, format!("`{s}` is not a number"));
                    Patch::Keep
                }
            },
            _ => {
                self.fail(path, "must be a number");
                Patch::Keep
            }
        }
    }

    fn flag(&mut self, name: &str) -> Option<bool> {
        let (path, v) = self.find(&[name])?;
        let parsed = match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) if n.as_i64() == Some(1) => Some(true),
            Value::Number(n) if n.as_i64() == Some(0) => Some(false),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" | "ja" => Some(true),
                "false" | "no" | "0" | "off" | "nein" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.fail(path, "must be true or false");
        }
        parsed
    }

    fn time_zone(&mut self) -> Patch<String> {
        match self.find(TIME_ZONE) {
            Some((path, v)) => match self.text_value(path.clone(), v) {
                Patch::Set(tz) if tz.parse::<chrono_tz::Tz>().is_err() => {
                    self.fail(
                        path,
                        format!("`{tz}` is not an IANA time zone (such as Europe/Berlin)"),
                    );
                    Patch::Keep
                }
                other => other,
            },
            None => Patch::Keep,
        }
    }

    /// `name` fills first and last name unless those are given on their own.
    fn name(&mut self, t: &mut Traits) {
        let Some((path, v)) = self.find(&["name"]) else {
            return;
        };
        let full = self.text_value(path, v);
        let Patch::Set(full) = full else {
            return;
        };
        let (first, last) = match full.rsplit_once(' ') {
            Some((f, l)) => (f.trim().to_string(), l.trim().to_string()),
            None => (full.clone(), String::new()),
        };
        if t.first_name.is_keep() {
            t.first_name = Patch::Set(first);
        }
        if t.last_name.is_keep() && !last.is_empty() {
            t.last_name = Patch::Set(last);
        }
    }

    /// `company` is either the company name or Segment's company object.
    fn company(&mut self, t: &mut Traits) {
        let Some((path, v)) = self.find(&["company"]) else {
            return;
        };
        match v {
            Value::Object(c) => {
                t.company = self.nested_text(c, "company", "name");
                if t.industry.is_keep() {
                    t.industry = self.nested_text(c, "company", "industry");
                }
                if t.employees.is_keep() {
                    t.employees = self.count(EMPLOYEES, Some((c, "company")));
                }
                if t.revenue.is_keep() {
                    t.revenue = self.amount(REVENUE, Some((c, "company")));
                }
            }
            other => t.company = self.text_value(path, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: &Value) -> Result<Traits, Vec<TraitError>> {
        Traits::parse(v.as_object().unwrap(), "traits")
    }

    #[test]
    fn segment_shape() {
        let t = parse(&json!({
            "email": "Anna@Example.com",
            "name": "Anna Maria Schmidt",
            "phone": "+49 30 1234",
            "company": {"name": "ACME GmbH", "employee_count": 200, "industry": "Software"},
            "title": "Head of Marketing",
            "address": {"country": "DE"},
            "plan": "trial",
            "consent_email": "yes"
        }))
        .unwrap();
        assert_eq!(t.email.unwrap().as_str(), "anna@example.com");
        assert_eq!(t.first_name, Patch::Set("Anna Maria".into()));
        assert_eq!(t.last_name, Patch::Set("Schmidt".into()));
        assert_eq!(t.company, Patch::Set("ACME GmbH".into()));
        assert_eq!(t.employees, Patch::Set(200));
        assert_eq!(t.industry, Patch::Set("Software".into()));
        assert_eq!(t.country, Patch::Set("DE".into()));
        assert_eq!(t.consent_email, Some(true));
        assert_eq!(t.attributes, vec![("plan".into(), Some(json!("trial")))]);
    }

    #[test]
    fn ranges_and_nulls() {
        let t = parse(&json!({"employees": "51-200", "phone": null, "revenue": ""})).unwrap();
        assert_eq!(t.employees, Patch::Set(51));
        assert_eq!(t.phone, Patch::Clear);
        assert_eq!(t.revenue, Patch::Clear);
    }

    #[test]
    fn text_traits_are_single_lines() {
        let t = parse(&json!({
            "firstName": "Eve\r\nBcc: evil@x.example",
            "lastName": "Ev\u{0}il\u{7f}",
            "company": {"name": "ACME\tGmbH\n", "industry": "\u{1}Software"},
            "title": "\r\n",
            "phone": "+49\u{0}30 1234",
            "country": " D\u{1b}E ",
            "locale": "de\n",
            "timezone": "Europe/Berlin\r\n",
            "owner": "lena\u{0}",
            "consent_source": "form\r\nX-Injected: 1",
            "notes": "kept\nas sent"
        }))
        .unwrap();
        assert_eq!(t.first_name, Patch::Set("Eve Bcc: evil@x.example".into()));
        assert_eq!(t.last_name, Patch::Set("Evil".into()));
        assert_eq!(t.company, Patch::Set("ACME GmbH".into()));
        assert_eq!(t.industry, Patch::Set("Software".into()));
        assert_eq!(t.title, Patch::Clear, "nothing but line breaks is nothing");
        assert_eq!(t.phone, Patch::Set("+4930 1234".into()));
        assert_eq!(t.country, Patch::Set("DE".into()));
        assert_eq!(t.locale, Patch::Set("de".into()));
        assert_eq!(t.time_zone, Patch::Set("Europe/Berlin".into()));
        assert_eq!(t.owner, Patch::Set("lena".into()));
        assert_eq!(t.consent_source.as_deref(), Some("form X-Injected: 1"));
        assert_eq!(
            t.attributes,
            vec![("notes".into(), Some(json!("kept\nas sent")))]
        );
        let t = parse(&json!({"name": "Anna\r\nMaria\u{0} Schmidt\n"})).unwrap();
        assert_eq!(t.first_name, Patch::Set("Anna Maria".into()));
        assert_eq!(t.last_name, Patch::Set("Schmidt".into()));
    }

    #[test]
    fn errors_name_the_path() {
        let errs = parse(&json!({"email": "nope", "employees": "many", "timezone": "Mars/Base"}))
            .unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["traits.email", "traits.employees", "traits.timezone"]
        );
    }
}
