//! Postmark's bounce and spam-complaint webhooks (`/hooks/postmark`). Postmark does not
//! sign them; the webhook URL carries HTTP Basic credentials
//! (`https://USER:PASSWORD@host/hooks/postmark`) that `[bounces.postmark]` checks.

use serde::Deserialize;

use super::report::{Kind, Report, status_code};

/// One Postmark webhook call (a bounce or a spam complaint).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Event {
    #[serde(default)]
    record_type: Option<String>,
    #[serde(rename = "ID", default)]
    id: Option<serde_json::Value>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    email: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    details: Option<String>,
}

/// The report in a Postmark webhook body; none for record types that are not about a
/// failed address (auto-responders, address changes, subscriptions).
pub fn reports(body: &[u8]) -> Result<Vec<Report>, String> {
    let e: Event = serde_json::from_slice(body)
        .map_err(|e| format!("not a Postmark bounce or spam complaint webhook: {e}"))?;
    let kind = e.kind.as_deref().unwrap_or_default();
    let kind = match (e.record_type.as_deref(), kind) {
        (Some("SpamComplaint"), _) | (_, "SpamComplaint" | "SpamNotification") => Kind::Complaint,
        (_, "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated") => Kind::Hard,
        (_, "SoftBounce" | "Transient" | "DnsError" | "Blocked" | "DMARCPolicy") => Kind::Soft,
        (_, "Unsubscribe") => Kind::Unsubscribe,
        _ => return Ok(Vec::new()),
    };
    let mut r = Report::new(kind, "postmark");
    r.recipient = Some(e.email);
    r.id = e.id.map(|id| id.to_string());
    let text = [e.details.as_deref(), e.description.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ");
    r.status = e
        .details
        .as_deref()
        .and_then(status_code)
        .or_else(|| e.kind.clone());
    r.diagnostic = (!text.is_empty()).then_some(text);
    Ok(vec![r])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_bounce_and_spam_complaint() {
        let hard = br#"{"RecordType":"Bounce","ID":4323372036854775807,"Type":"HardBounce",
            "TypeCode":1,"Name":"Hard bounce","Tag":"Test","MessageID":"883953f4-6105-42a2-a16a-77a8eac79483",
            "ServerID":23,"MessageStream":"outbound","Description":"The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details":"smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email":"john@example.com","From":"sender@example.com","BouncedAt":"2019-11-05T16:33:54.9070259Z",
            "DumpAvailable":true,"Inactive":true,"CanActivate":true,"Subject":"Test subject"}"#;
        let r = reports(hard).unwrap();
        assert_eq!(r[0].kind, Kind::Hard);
        assert_eq!(r[0].recipient.as_deref(), Some("john@example.com"));
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
        let spam = br#"{"RecordType":"SpamComplaint","ID":42,"Type":"SpamComplaint","TypeCode":512,
            "Name":"Spam complaint","MessageID":"00000000-0000-0000-0000-000000000000",
            "Email":"john@example.com","From":"sender@example.com","BouncedAt":"2019-11-05T16:33:54Z"}"#;
        assert_eq!(reports(spam).unwrap()[0].kind, Kind::Complaint);
        let auto = br#"{"RecordType":"Bounce","Type":"AutoResponder","Email":"john@example.com"}"#;
        assert!(reports(auto).unwrap().is_empty());
        assert!(reports(b"[]").is_err());
    }
}
