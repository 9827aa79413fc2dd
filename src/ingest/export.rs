//! The way back out: stored events as Segment JSONL, one event per line, in the
//! order they were stored, which `nurtured ingest` (and so a fresh database) reads
//! back to the same events per lead. Read from the database a page at a time, so the
//! history is never held in memory.
//!
//! Each line carries `type`, `messageId` (the stored one, so ingesting the export
//! into the same database adds nothing), `timestamp`, `userId` (the sender's user id
//! when the lead has one, else its e-mail address), `traits` (identify), `event`
//! (track), `name` (page), `properties` and `context`. When `userId` is not the
//! address, the address goes into `traits.email` (identify) or
//! `context.traits.email` (track, page) unless the event already has one there, so
//! each line names its lead by itself.

use std::io::Write;

use serde_json::{Map, Value};

use super::segment::{GROUP, PAGE_VIEWED};
use crate::store::{EventRange, ExportRow, Store, StoreError, rfc3339};

/// Events read per query.
const PAGE: usize = 1000;

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
    #[error("stored event {seq} has damaged JSON in its {field}: {detail}")]
    Corrupt {
        seq: i64,
        field: &'static str,
        detail: String,
    },
}

fn object(
    seq: i64,
    field: &'static str,
    text: Option<&str>,
) -> Result<Map<String, Value>, ExportError> {
    match text {
        None => Ok(Map::new()),
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(ExportError::Corrupt {
                seq,
                field,
                detail: format!("not an object: {other}"),
            }),
            Err(e) => Err(ExportError::Corrupt {
                seq,
                field,
                detail: e.to_string(),
            }),
        },
    }
}

/// One stored event as a Segment call.
pub fn segment_line(row: &ExportRow) -> Result<Value, ExportError> {
    let mut out = Map::new();
    let kind = row.kind.as_str();
    out.insert("type".into(), Value::String(kind.to_string()));
    out.insert("messageId".into(), Value::String(row.message_id.clone()));
    out.insert("timestamp".into(), Value::String(rfc3339(row.occurred_at)));
    let by_user_id = row.external_id.is_some();
    out.insert(
        "userId".into(),
        Value::String(row.external_id.clone().unwrap_or_else(|| row.email.clone())),
    );
    let mut properties = object(row.seq, "properties", Some(&row.properties))?;
    let mut context = object(row.seq, "context", row.context.as_deref())?;
    match kind {
        "identify" => {
            let mut traits = object(row.seq, "traits", row.traits.as_deref())?;
            if row.name == GROUP {
                // A group call stored as an identify: its group id is not a property
                // of the person.
                properties.remove("groupId");
            }
            if by_user_id && !traits.contains_key("email") {
                traits.insert("email".into(), Value::String(row.email.clone()));
            }
            out.insert("traits".into(), Value::Object(traits));
        }
        "track" => {
            out.insert("event".into(), Value::String(row.name.clone()));
        }
        _ => {
            if let Some(Value::String(name)) = properties.get("name") {
                out.insert("name".into(), Value::String(name.clone()));
            } else if row.name != PAGE_VIEWED {
                out.insert("name".into(), Value::String(row.name.clone()));
            }
        }
    }
    if by_user_id && kind != "identify" {
        let traits = context
            .entry("traits")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(t) = traits
            && !t.contains_key("email")
        {
            t.insert("email".into(), Value::String(row.email.clone()));
        }
    }
    out.insert("properties".into(), Value::Object(properties));
    if !context.is_empty() {
        out.insert("context".into(), Value::Object(context));
    }
    Ok(Value::Object(out))
}

/// Writes every event in `range` to `out`, one JSON line each; returns how many.
pub async fn write_jsonl(
    store: &Store,
    range: EventRange,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let rows = store.export_events(range, after, PAGE).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.seq;
        for row in &rows {
            serde_json::to_writer(&mut *out, &segment_line(row)?).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        if rows.len() < PAGE {
            break;
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, name: &str, external_id: Option<&str>) -> ExportRow {
        ExportRow {
            seq: 1,
            message_id: "m-1".into(),
            kind: kind.into(),
            name: name.into(),
            properties: r#"{"topic":"scoring"}"#.into(),
            traits: (kind == "identify").then(|| r#"{"title":"CMO"}"#.into()),
            context: None,
            occurred_at: 0,
            email: "anna@acme.example".into(),
            external_id: external_id.map(str::to_string),
        }
    }

    #[test]
    fn a_line_names_its_lead_by_itself() {
        let line = segment_line(&row("track", "Webinar Attended", Some("crm-1"))).unwrap();
        assert_eq!(line["userId"], "crm-1");
        assert_eq!(line["event"], "Webinar Attended");
        assert_eq!(line["context"]["traits"]["email"], "anna@acme.example");
        assert_eq!(line["timestamp"], "1970-01-01T00:00:00.000Z");
        let line = segment_line(&row("identify", "Identify", None)).unwrap();
        assert_eq!(line["userId"], "anna@acme.example");
        assert_eq!(line["traits"], serde_json::json!({"title": "CMO"}));
        assert!(line.get("context").is_none());
    }
}
