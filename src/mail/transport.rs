//! Where mail goes: an SMTP server over pooled connections ([`super::smtp_pool`]), or
//! `.eml` files in a folder (the embedded default, so the daemon runs with no mail
//! server). SMTP failures are classified: worth retrying, or final.

use std::time::Duration;

use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use super::smtp_pool::{PoolError, SmtpPool};
use crate::config::mail::{MailConfig, TransportConfig};

pub enum Transport {
    Smtp(SmtpPool),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// A send that did not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later: 4xx, connection refused, timeout, a dropped connection.
    Retry(String),
    /// Do not try again (5xx). `rejected` when the server refused the recipient.
    Final { message: String, rejected: bool },
}

impl Transport {
    pub fn new(config: &MailConfig) -> Result<Self, String> {
        match &config.transport {
            TransportConfig::File(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
                Ok(Transport::File(AsyncFileTransport::new(dir)))
            }
            TransportConfig::Smtp(url) => {
                let hello = config.from.email.domain().to_string();
                SmtpPool::from_url(url, &hello, config.timeout, config.connections)
                    .map(Transport::Smtp)
                    .map_err(|e| format!("mail.url: {e}"))
            }
        }
    }

    /// Sends one message; gives up after `timeout`.
    pub async fn send(&self, message: Message, timeout: Duration) -> Result<(), SendError> {
        match self {
            Transport::Smtp(pool) => {
                let raw = message.formatted();
                tokio::time::timeout(timeout, pool.send(message.envelope(), &raw))
                    .await
                    .map_err(|_| {
                        SendError::Retry(format!(
                            "no answer from the SMTP server within {timeout:?}"
                        ))
                    })?
                    .map(|_| ())
                    .map_err(|e| classify(&e))
            }
            Transport::File(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Retry(format!("cannot write the mail file: {e}"))),
        }
    }
}

/// 5xx is final, everything else (4xx, network, timeout) is worth another try.
fn classify(e: &PoolError) -> SendError {
    let e = match e {
        PoolError::Connect(m) => return SendError::Retry(m.clone()),
        PoolError::Smtp(e) => e,
    };
    let message = e.to_string();
    if e.is_permanent() {
        let code = e.status().map(u16::from).unwrap_or(0);
        // 550 mailbox unavailable, 551 user not local, 553 mailbox name not allowed.
        SendError::Final {
            rejected: matches!(code, 550 | 551 | 553),
            message,
        }
    } else if e.is_client() {
        SendError::Final {
            message,
            rejected: false,
        }
    } else {
        SendError::Retry(message)
    }
}
