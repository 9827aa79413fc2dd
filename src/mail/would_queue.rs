//! What the outbox would do with the mails rules ask for, without a database
//! (placeholder until the would-queue module is merged: it queues everything).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::MailConfig;
use crate::domain::{Lead, MailRequest};
use crate::mail::StreamPlan;

/// The outbox's verdict on one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Queued,
    Suppressed(&'static str),
}

/// Per lead: what the outbox remembers between mails.
pub struct WouldQueue {
    _config: Arc<MailConfig>,
    _plan: Arc<StreamPlan>,
    _default_tz: chrono_tz::Tz,
}

impl WouldQueue {
    pub fn new(config: Arc<MailConfig>, plan: Arc<StreamPlan>, default_tz: chrono_tz::Tz) -> Self {
        Self {
            _config: config,
            _plan: plan,
            _default_tz: default_tz,
        }
    }

    /// A mail asked for at `at` for lead `lead_id`: what the outbox would do with it.
    pub fn offer(
        &mut self,
        _lead_id: i64,
        _lead: &Lead,
        _mail: &MailRequest,
        _at: DateTime<Utc>,
    ) -> Verdict {
        Verdict::Queued
    }
}
