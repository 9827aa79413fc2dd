//! The export of everything stored about one person (GDPR access, Art. 15): one JSON
//! document with the lead's traits and consent, the consent ledger, raw events, score
//! ledger, stage history, mails with their text as sent, stream memberships, handoffs
//! with their log and webhook calls, and suppressions. `nurtured lead export EMAIL`
//! and `GET /v1/leads/{email}/export`.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::domain::Email;
use crate::store::{Store, StoreError};

/// The version of the document's shape; it goes up when a part changes meaning.
pub const EXPORT_VERSION: u32 = 1;

/// Everything stored about one person.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Export {
    pub version: u32,
    pub exported_at: String,
    pub email: String,
    /// Instants in the parts are Unix milliseconds (UTC).
    pub time_unit: &'static str,
    /// `lead` (one object), `consent_log`, `events`, `score_ledger`, `stage_history`,
    /// `mails`, `enrollments`, `handoffs`, `handoff_log`, `webhooks`, `suppressions`.
    #[schema(value_type = Object)]
    pub data: BTreeMap<&'static str, Value>,
}

impl Export {
    /// The export of the lead with `email`; `None` when there is none.
    pub async fn load(
        store: &Store,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<Option<Self>, StoreError> {
        let Some(id) = store.live_lead_id(email.as_str()).await? else {
            return Ok(None);
        };
        let Some(parts) = store.export_lead(id).await? else {
            return Ok(None);
        };
        let data = parts
            .into_iter()
            .map(|(name, mut rows)| {
                let v = if name == "lead" {
                    rows.pop().unwrap_or(Value::Null)
                } else {
                    Value::Array(rows)
                };
                (name, v)
            })
            .collect();
        Ok(Some(Self {
            version: EXPORT_VERSION,
            exported_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            email: email.to_string(),
            time_unit: "unix_ms",
            data,
        }))
    }
}
