//! Payloads of the Segment HTTP tracking API (`identify`, `track`, `page`, `screen`,
//! `alias`, `group`, `batch`), checked field by field into [`Item`]s. Every problem
//! names its JSON path and, in a batch, the index of the item.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{Email, Traits};
use crate::store::NewEvent;

/// The event types this API takes (`screen` is stored as a page view).
pub const KINDS: [&str; 6] = ["identify", "track", "page", "screen", "alias", "group"];

/// Name stored for page views, as in Segment's naming for page calls.
pub const PAGE_VIEWED: &str = "Page Viewed";
/// Name stored for identify calls.
pub const IDENTIFY: &str = "Identify";
/// Name stored for the identify that carries a group's traits to a member.
pub const GROUP: &str = "Group";

const MAX_EVENT_BYTES: usize = 64 * 1024;
const MAX_NAME: usize = 200;
const MAX_ID: usize = 200;
/// Ids and event names are keys and stored as text: a NUL in one is refused, as
/// PostgreSQL cannot store it (and would fail the commit the event shares).
const NUL: &str = "contains a NUL character (\\u0000); send the text without it";

/// How an event names its lead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeadKey {
    pub email: Option<Email>,
    /// The sender's own id for the person, when it is not an e-mail address.
    pub user_id: Option<String>,
    /// Segment's `anonymousId`: the visitor before (or besides) a known identity.
    pub anonymous_id: Option<String>,
}

/// What a checked call asks for beyond storing its event.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// An event (identify, track, page, screen).
    Event,
    /// `alias`: `previous_id` (an anonymous id, or another user id) is the same person
    /// as the key. Nothing is stored as an event.
    Alias { previous_id: String },
    /// `group`: the key belongs to the group; `traits` (JSON object) are the group's.
    /// The item's event is the identify that carries them as company traits.
    Group { group_id: String, traits: String },
}

/// One checked event with the key of its lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: LeadKey,
    pub event: NewEvent,
    pub call: Call,
}

/// A problem with the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("{}{path}: {message}", index.map(|i| format!("item {i}: ")).unwrap_or_default())]
pub struct InputError {
    /// Index in `batch` (or line number minus one for files), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// JSON path of the offending field, e.g. `batch[3].event`.
    pub path: String,
    pub message: String,
}

/// Where an item sits, for paths in error messages.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub index: Option<usize>,
    /// Path prefix of the item: `` for a single call, `batch[3]` in a batch.
    pub prefix: &'a str,
}

impl At<'_> {
    fn path(&self, field: &str) -> String {
        match (self.prefix.is_empty(), field.is_empty()) {
            (true, true) => "$".into(),
            (true, false) => field.into(),
            (false, true) => self.prefix.into(),
            (false, false) => format!("{}.{field}", self.prefix),
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> InputError {
        InputError {
            index: self.index,
            path: self.path(field),
            message: message.into(),
        }
    }
}

/// Parses a request body as JSON, reporting line and column of a syntax error.
pub fn parse_json(body: &[u8]) -> Result<Value, InputError> {
    serde_json::from_slice(body).map_err(|e| InputError {
        index: None,
        path: "$".into(),
        message: format!(
            "the body is not valid JSON ({e}); send a JSON object with Content-Type: application/json"
        ),
    })
}

/// Checks a `/v1/batch` body.
pub fn parse_batch(
    body: &Value,
    now: DateTime<Utc>,
    new_id: &mut dyn FnMut(&Value) -> String,
) -> Result<Vec<Item>, Vec<InputError>> {
    let top = At {
        index: None,
        prefix: "",
    };
    let Some(batch) = body.get("batch") else {
        return Err(vec![
            top.error("batch", "missing: send {\"batch\": [ ... ]}"),
        ]);
    };
    let Some(list) = batch.as_array() else {
        return Err(vec![top.error("batch", "must be a list of events")]);
    };
    let mut items = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let prefix = format!("batch[{i}]");
        let at = At {
            index: Some(i),
            prefix: &prefix,
        };
        match parse_item(v, None, at, now, new_id) {
            Ok(item) => items.push(item),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// Checks one event. `kind` is fixed by the endpoint (`/v1/track`), or taken from the
/// item's `type` (batch, files).
pub fn parse_item(
    v: &Value,
    kind: Option<&'static str>,
    at: At<'_>,
    now: DateTime<Utc>,
    new_id: &mut dyn FnMut(&Value) -> String,
) -> Result<Item, Vec<InputError>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![at.error("", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let declared = match obj.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => {
            errors.push(at.error("type", "must be a string"));
            None
        }
    };
    let kind = match (kind, declared) {
        (Some(k), None) => k,
        (Some(k), Some(t)) if t == k => k,
        (Some(k), Some(t)) => {
            return Err(vec![at.error(
                "type",
                format!("is `{t}` but this endpoint takes `{k}` events"),
            )]);
        }
        (None, Some(t)) => match KINDS.iter().find(|k| **k == t) {
            Some(k) => k,
            None => {
                return Err(vec![at.error(
                    "type",
                    format!("`{t}` is not supported; use one of: {}", KINDS.join(", ")),
                )]);
            }
        },
        (None, None) => {
            return Err(vec![at.error(
                "type",
                format!("missing; say which event this is: {}", KINDS.join(", ")),
            )]);
        }
    };

    let object = |field: &str, errors: &mut Vec<InputError>| -> Option<&Map<String, Value>> {
        match obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                errors.push(at.error(field, "must be a JSON object"));
                None
            }
        }
    };
    let properties = object("properties", &mut errors);
    let traits = object("traits", &mut errors);
    let context = object("context", &mut errors);

    let id = |field: &str, errors: &mut Vec<InputError>| match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if s.len() > MAX_ID => {
            errors.push(at.error(field, format!("is longer than {MAX_ID} characters")));
            None
        }
        Some(Value::String(s)) if s.contains('\0') => {
            errors.push(at.error(field, NUL));
            None
        }
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            errors.push(at.error(field, "must be a string"));
            None
        }
    };
    let user_id = id("userId", &mut errors);
    let anonymous_id = id("anonymousId", &mut errors);

    // The e-mail that names the lead: traits, then context.traits, then properties
    // (track/page), then a userId that is itself an address.
    let mut email = None;
    let mut email_sources: Vec<(String, Option<&Value>)> = Vec::new();
    if !matches!(kind, "group" | "alias") {
        // A group's traits describe the group: their e-mail is not the person's.
        email_sources.push(("traits.email".into(), traits.and_then(|t| t.get("email"))));
    }
    email_sources.push((
        "context.traits.email".into(),
        context
            .and_then(|c| c.get("traits"))
            .and_then(|t| t.get("email")),
    ));
    if matches!(kind, "track" | "page" | "screen") {
        email_sources.push((
            "properties.email".into(),
            properties.and_then(|p| p.get("email")),
        ));
    }
    for (path, value) in email_sources {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => match Email::parse(s) {
                Ok(e) => {
                    email = Some(e);
                    break;
                }
                Err(e) => errors.push(at.error(&path, e.to_string())),
            },
            Some(_) => errors.push(at.error(&path, "must be a string")),
        }
    }
    let mut user_id = user_id;
    if let Some(uid) = &user_id
        && let Ok(e) = Email::parse(uid)
    {
        email.get_or_insert(e);
        user_id = None;
    }
    let call = match kind {
        "alias" => {
            let previous_id = id("previousId", &mut errors);
            if email.is_none() && user_id.is_none() && errors.is_empty() {
                errors.push(at.error(
                    "userId",
                    "missing: alias needs the userId (or e-mail address) that previousId is \
                     now known by",
                ));
            }
            match previous_id {
                Some(previous_id) => Call::Alias { previous_id },
                None => {
                    if !errors.iter().any(|e| e.path == at.path("previousId")) {
                        errors.push(at.error(
                            "previousId",
                            "missing: alias needs the previous id (an anonymousId or a userId)",
                        ));
                    }
                    Call::Event
                }
            }
        }
        "group" => match id("groupId", &mut errors) {
            Some(group_id) => Call::Group {
                group_id,
                traits: Value::Object(traits.cloned().unwrap_or_default()).to_string(),
            },
            None => {
                if !errors.iter().any(|e| e.path == at.path("groupId")) {
                    errors.push(at.error(
                        "groupId",
                        "missing: name the group (account) the person belongs to",
                    ));
                }
                Call::Event
            }
        },
        _ => Call::Event,
    };
    if email.is_none() && user_id.is_none() && anonymous_id.is_none() && errors.is_empty() {
        errors.push(at.error(
            "userId",
            "missing: give userId, anonymousId, or traits.email (context.traits.email for \
             track and page), so the event can be tied to a lead or a visitor",
        ));
    }

    let mut name = String::new();
    match kind {
        "track" => match obj.get("event") {
            Some(Value::String(s)) if s.contains('\0') => errors.push(at.error("event", NUL)),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_NAME => {
                name = s.trim().to_string();
            }
            Some(Value::String(s)) if s.len() > MAX_NAME => {
                errors.push(at.error("event", format!("is longer than {MAX_NAME} characters")));
            }
            Some(Value::String(_)) | None | Some(Value::Null) => errors.push(at.error(
                "event",
                "missing: name what the lead did, e.g. \"Content Downloaded\"",
            )),
            Some(_) => errors.push(at.error("event", "must be a string")),
        },
        "page" | "screen" => name = PAGE_VIEWED.into(),
        "group" => name = GROUP.into(),
        "alias" => name = "Alias".into(),
        _ => name = IDENTIFY.into(),
    }

    let mut props = properties.cloned().unwrap_or_default();
    if let Call::Group { group_id, .. } = &call {
        props.insert("groupId".into(), Value::String(group_id.clone()));
    }
    if matches!(kind, "page" | "screen") {
        match obj.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) => {
                props
                    .entry("name")
                    .or_insert_with(|| Value::String(n.clone()));
            }
            Some(_) => errors.push(at.error("name", "must be a string")),
        }
        match props.get("url") {
            Some(Value::String(url)) if !props.contains_key("path") => {
                // Kept with the event so rules can count views of a page whatever
                // its query string.
                let path = url_path(url);
                props.insert("path".into(), Value::String(path));
            }
            Some(Value::String(_)) | None => {}
            Some(_) => errors.push(at.error("properties.url", "must be a string")),
        }
    }

    // RudderStack's SDKs send identify traits in context.traits only.
    let context_traits = match context.and_then(|c| c.get("traits")) {
        Some(Value::Object(t)) if traits.is_none() && kind == "identify" => Some(t),
        _ => None,
    };
    let person_traits = match kind {
        "identify" => Some(traits.or(context_traits).cloned().unwrap_or_default()),
        "group" => Some(company_traits(traits)),
        _ => None,
    };
    let traits_path = at.path(if context_traits.is_some() {
        "context.traits"
    } else {
        "traits"
    });
    let traits_json = if let Some(t) = person_traits {
        if let Err(errs) = Traits::parse(&t, &traits_path) {
            errors.extend(errs.into_iter().map(|e| InputError {
                index: at.index,
                path: e.path,
                message: e.message,
            }));
        }
        Some(Value::Object(t).to_string())
    } else {
        None
    };

    let occurred_at = match obj
        .get("timestamp")
        .or_else(|| obj.get("originalTimestamp"))
    {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => {
                errors.push(at.error(
                    "timestamp",
                    format!("`{s}` is not an ISO-8601 time such as 2026-03-01T09:30:00Z"),
                ));
                now
            }
        },
        Some(_) => {
            errors.push(at.error("timestamp", "must be an ISO-8601 string"));
            now
        }
    };

    let message_id = match obj.get("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.contains('\0') => {
            errors.push(at.error("messageId", NUL));
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_ID => {
            Some(s.trim().to_string())
        }
        Some(Value::String(_)) => {
            errors.push(at.error("messageId", format!("must be 1 to {MAX_ID} characters")));
            None
        }
        Some(_) => {
            errors.push(at.error("messageId", "must be a string"));
            None
        }
    };

    let properties = Value::Object(props).to_string();
    let context = context.map(|c| Value::Object(c.clone()).to_string());
    let size = properties.len()
        + traits_json.as_ref().map_or(0, String::len)
        + context.as_ref().map_or(0, String::len);
    if size > MAX_EVENT_BYTES {
        errors.push(at.error(
            "",
            format!("is {size} bytes; one event may carry at most {MAX_EVENT_BYTES} bytes"),
        ));
    }
    if !errors.is_empty() {
        // One problem per field (traits.email is checked twice on identify).
        let mut seen = std::collections::HashSet::new();
        errors.retain(|e| seen.insert(e.path.clone()));
        return Err(errors);
    }
    Ok(Item {
        key: LeadKey {
            email,
            user_id,
            anonymous_id,
        },
        call,
        event: NewEvent {
            message_id: message_id.unwrap_or_else(|| new_id(v)),
            kind: stored_kind(kind),
            name,
            properties,
            traits: traits_json,
            context,
            occurred_at,
            history: false,
        },
    })
}

/// The kind an event is stored as: a screen is a page view, a group call an identify
/// (with the group's traits as company traits).
fn stored_kind(kind: &'static str) -> &'static str {
    match kind {
        "screen" => "page",
        "group" => "identify",
        other => other,
    }
}

/// Group traits that name the company of a member lead.
const COMPANY_KEYS: &[&str] = &[
    "name",
    "industry",
    "employees",
    "employee_count",
    "employeeCount",
    "revenue",
    "annualRevenue",
    "annual_revenue",
];

/// A group's traits as identify traits of a member: name, industry, employees and
/// revenue go into the `company` object; every other group trait becomes the free
/// attribute `company_<trait>`.
pub fn company_traits(group: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut company = Map::new();
    let mut out = Map::new();
    for (k, v) in group.into_iter().flatten() {
        if COMPANY_KEYS.contains(&k.as_str()) {
            company.insert(k.clone(), v.clone());
        } else if !matches!(k.as_str(), "id" | "groupId") {
            out.insert(format!("company_{k}"), v.clone());
        }
    }
    if !company.is_empty() {
        out.insert("company".into(), Value::Object(company));
    }
    out
}

/// The path part of a URL (`https://x.de/preise?a=1` -> `/preise`).
pub fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or("/").to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one(v: &Value, kind: Option<&'static str>) -> Result<Item, Vec<InputError>> {
        let at = At {
            index: None,
            prefix: "",
        };
        parse_item(v, kind, at, Utc::now(), &mut |_| "generated".into())
    }

    #[test]
    fn track_with_email_user_id() {
        let item = one(
            &json!({"userId": "Anna@Example.com", "event": "Content Downloaded",
                   "properties": {"topic": "crm"}, "messageId": "m1",
                   "timestamp": "2026-03-01T09:00:00Z"}),
            Some("track"),
        )
        .unwrap();
        assert_eq!(item.key.email.unwrap().as_str(), "anna@example.com");
        assert_eq!(item.key.user_id, None);
        assert_eq!(item.event.name, "Content Downloaded");
        assert_eq!(item.event.message_id, "m1");
        assert_eq!(
            item.event.occurred_at.to_rfc3339(),
            "2026-03-01T09:00:00+00:00"
        );
    }

    #[test]
    fn a_nul_in_an_id_or_an_event_name_is_refused_with_its_path() {
        let errors = one(
            &json!({"userId": "u\u{0}1", "event": "Down\u{0}loaded", "messageId": "m\u{0}1"}),
            Some("track"),
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["userId", "event", "messageId"], "{errors:?}");
        assert!(
            errors.iter().all(|e| e.message.contains("NUL")),
            "{errors:?}"
        );
        // Other control characters in a name are kept (and shown escaped where printed).
        let item = one(
            &json!({"userId": "u1", "event": "Tab\tBell\u{7}"}),
            Some("track"),
        )
        .unwrap();
        assert_eq!(item.event.name, "Tab\tBell\u{7}");
    }

    #[test]
    fn page_keeps_its_name_in_properties() {
        let item = one(
            &json!({"userId": "u1", "name": "Pricing", "properties": {"url": "https://x/pricing"}}),
            Some("page"),
        )
        .unwrap();
        assert_eq!(item.event.name, PAGE_VIEWED);
        assert!(item.event.properties.contains("\"name\":\"Pricing\""));
        assert!(item.event.properties.contains("\"path\":\"/pricing\""));
        assert_eq!(item.event.message_id, "generated");
    }

    #[test]
    fn paths_of_urls() {
        assert_eq!(url_path("https://example.com/preise?x=1"), "/preise");
        assert_eq!(url_path("https://example.com"), "/");
        assert_eq!(url_path("/pricing#plans"), "/pricing");
    }

    #[test]
    fn batch_errors_name_index_and_field() {
        let body = json!({"batch": [
            {"type": "track", "userId": "u1", "event": "X"},
            {"type": "track", "userId": "u1"},
            {"type": "merge", "userId": "u1"},
            {"type": "identify", "traits": {"email": "bad"}},
        ]});
        let errs = parse_batch(&body, Utc::now(), &mut |_| "g".into()).unwrap_err();
        let got: Vec<_> = errs.iter().map(|e| (e.index, e.path.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(1), "batch[1].event"),
                (Some(2), "batch[2].type"),
                (Some(3), "batch[3].traits.email")
            ]
        );
        assert!(errs[1].message.contains("identify, track, page"));
    }

    #[test]
    fn needs_a_way_to_find_the_lead() {
        let errs = one(&json!({"event": "X", "anonymousId": ""}), Some("track")).unwrap_err();
        assert_eq!(errs[0].path, "userId");
        assert!(
            errs[0].message.contains("anonymousId"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn anonymous_track_and_screen_are_accepted() {
        let item = one(&json!({"event": "X", "anonymousId": "a-1"}), Some("track")).unwrap();
        assert_eq!(item.key.anonymous_id.as_deref(), Some("a-1"));
        assert_eq!((item.key.email, item.key.user_id), (None, None));
        let screen = one(
            &json!({"type": "screen", "anonymousId": "a-1", "name": "Pricing"}),
            None,
        )
        .unwrap();
        assert_eq!(screen.event.kind, "page");
        assert_eq!(screen.event.name, PAGE_VIEWED);
        assert!(screen.event.properties.contains("\"name\":\"Pricing\""));
    }

    #[test]
    fn identify_traits_may_come_in_context() {
        let item = one(
            &json!({"userId": "crm-1", "context": {"traits": {"email": "a@b.example",
                    "title": "CTO", "employees": "many"}}}),
            Some("identify"),
        )
        .unwrap_err();
        assert_eq!(item[0].path, "context.traits.employees");
        let item = one(
            &json!({"userId": "crm-1", "context": {"traits": {"email": "a@b.example", "title": "CTO"}}}),
            Some("identify"),
        )
        .unwrap();
        assert_eq!(item.key.email.unwrap().as_str(), "a@b.example");
        assert!(item.event.traits.unwrap().contains("\"title\":\"CTO\""));
    }

    #[test]
    fn alias_needs_both_ids() {
        let item = one(
            &json!({"type": "alias", "previousId": "a-1", "userId": "crm-1"}),
            None,
        )
        .unwrap();
        assert_eq!(
            item.call,
            Call::Alias {
                previous_id: "a-1".into()
            }
        );
        let errs = one(&json!({"type": "alias", "userId": "crm-1"}), None).unwrap_err();
        assert_eq!(errs[0].path, "previousId");
        let errs = one(&json!({"type": "alias", "previousId": "a-1"}), None).unwrap_err();
        assert_eq!(errs[0].path, "userId");
    }

    #[test]
    fn group_traits_become_company_traits() {
        let item = one(
            &json!({"type": "group", "userId": "crm-1", "groupId": "g-1",
                    "traits": {"name": "ACME GmbH", "industry": "Software", "employees": 120,
                               "plan": "enterprise", "email": "info@acme.example"}}),
            None,
        )
        .unwrap();
        assert_eq!(item.event.kind, "identify");
        assert_eq!(item.event.name, GROUP);
        // The group's e-mail does not name the person.
        assert_eq!(item.key.email, None);
        let traits: Value = serde_json::from_str(item.event.traits.as_deref().unwrap()).unwrap();
        assert_eq!(traits["company"]["name"], "ACME GmbH");
        assert_eq!(traits["company"]["employees"], 120);
        assert_eq!(traits["company_plan"], "enterprise");
        let t = Traits::parse(traits.as_object().unwrap(), "traits").unwrap();
        assert_eq!(
            t.company,
            crate::domain::traits::Patch::Set("ACME GmbH".into())
        );
        assert_eq!(t.employees, crate::domain::traits::Patch::Set(120));
        let errs = one(
            &json!({"type": "group", "userId": "crm-1", "traits": {"employees": "many"}}),
            None,
        )
        .unwrap_err();
        assert!(errs.iter().any(|e| e.path == "groupId"), "{errs:?}");
    }

    #[test]
    fn bad_json_reports_position() {
        let e = parse_json(b"{\"batch\": [}").unwrap_err();
        assert!(e.message.contains("line 1 column"), "{}", e.message);
    }
}
