//! Bounces, complaints and unsubscribe mails that arrive after the SMTP dialogue.
//!
//! - [`verp`]: the `bounce+TOKEN@` envelope sender and `unsubscribe+TOKEN@` address;
//! - [`parse`]: a raw message (DSN, ARF, plain bounce, unsubscribe mail) into
//!   [`report::Report`]s; [`mailbox`]: the messages of an `.eml` or mbox file;
//! - [`ses`], [`postmark`], [`mailgun`], [`sendgrid`]: the ESPs' webhooks, each
//!   with its signature or secret checked;
//! - [`apply`]: map a report to its mail and act (suppress, count, unsubscribe);
//!   [`log_json`]: a line of the bounce log for the API and the command line.

pub mod apply;
pub mod mailbox;
pub mod mailgun;
pub mod parse;
pub mod postmark;
pub mod report;
pub mod sendgrid;
pub mod ses;
pub mod verp;

pub use apply::{Applied, ApplyError, apply};
pub use report::{Kind, Report};

/// One line of the bounce log as JSON, with its time as RFC 3339.
pub fn log_json(r: &crate::store::BounceLogRow) -> serde_json::Value {
    serde_json::json!({
        "at": crate::store::rfc3339(r.at), "email": r.email, "lead_id": r.lead_id,
        "outbox_id": r.outbox_id, "kind": r.kind, "status": r.status,
        "diagnostic": r.diagnostic, "source": r.source, "report_id": r.report_id,
        "action": r.action,
    })
}
