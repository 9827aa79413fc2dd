//! Where mail goes: an SMTP server over pooled connections ([`super::smtp_pool`]), or
//! `.eml` files in a folder (the embedded default, so the daemon runs with no mail
//! server). SMTP failures are classified: worth retrying, or final.
//!
//! A send waits at a gate right before the step that makes the mail accepted (the end
//! of the message over SMTP, writing the file) and hands the gate's permit back: the
//! caller holds it until the outcome is recorded, which bounds how many accepted mails
//! a crash can leave unrecorded.

use std::sync::Arc;
use std::time::Duration;

use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::refusal::{self, Step, Whose};
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
    /// The server refuses the sender (its account, domain or login): delivery pauses
    /// and the mail waits without using up a try.
    Paused(String),
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

    /// Sends one message; each exchange with the server gives up after `timeout`.
    /// Waits for a permit of `gate` right before the mail can be accepted and returns
    /// it (when it got one) with the result. A closed gate stops the send before the
    /// server could accept the mail.
    pub async fn send(
        &self,
        message: Message,
        timeout: Duration,
        gate: &Arc<Semaphore>,
    ) -> (Result<(), SendError>, Option<OwnedSemaphorePermit>) {
        let closed =
            || SendError::Retry("delivery stopped before the message was sent".to_string());
        let late =
            || SendError::Retry(format!("no answer from the SMTP server within {timeout:?}"));
        match self {
            Transport::Smtp(pool) => {
                let raw = message.formatted();
                let open = match tokio::time::timeout(timeout, pool.open(message.envelope(), &raw))
                    .await
                {
                    Err(_) => return (Err(late()), None),
                    Ok(Err(e)) => return (Err(classify(&e)), None),
                    Ok(Ok(open)) => open,
                };
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    return (Err(closed()), None);
                };
                let sent = match tokio::time::timeout(timeout, pool.finish(open, &raw)).await {
                    Err(_) => Err(late()),
                    Ok(r) => r.map(|_| ()).map_err(|e| classify(&e)),
                };
                (sent, Some(permit))
            }
            Transport::File(t) => {
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    return (Err(closed()), None);
                };
                let sent = t
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError::Retry(format!("cannot write the mail file: {e}")));
                (sent, Some(permit))
            }
        }
    }
}

/// 5xx is final, everything else (4xx, network, timeout) is worth another try; a
/// refusal of the sender (see [`super::refusal`]) pauses delivery.
fn classify(e: &PoolError) -> SendError {
    let (e, step) = match e {
        PoolError::Connect(m) => return SendError::Retry(m.clone()),
        PoolError::Login(m) => return SendError::Paused(m.clone()),
        PoolError::Unsupported(m) => {
            return SendError::Final {
                message: m.clone(),
                rejected: false,
            };
        }
        PoolError::Smtp(e) => (e, Step::Later),
        PoolError::Sender(e) => (e, Step::MailFrom),
    };
    let message = e.to_string();
    if e.is_permanent() {
        match refusal::whose(step, e.status().map(u16::from), &message) {
            Whose::Recipient => SendError::Final {
                message,
                rejected: true,
            },
            Whose::Sender => SendError::Paused(message),
            Whose::Mail => SendError::Final {
                message,
                rejected: false,
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_pauses_and_a_down_server_is_retried() {
        let login = PoolError::Login(
            "login refused by smtp.example.com:587: permanent error (535): 5.7.8 bad credentials"
                .into(),
        );
        assert!(matches!(classify(&login), SendError::Paused(m) if m.contains("535")));
        let down = PoolError::Connect("cannot connect to 127.0.0.1:1: refused".into());
        assert!(matches!(classify(&down), SendError::Retry(_)));
        let utf8 = PoolError::Unsupported("the addresses need SMTPUTF8".into());
        assert!(matches!(
            classify(&utf8),
            SendError::Final {
                rejected: false,
                ..
            }
        ));
    }
}
