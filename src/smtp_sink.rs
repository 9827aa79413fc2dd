//! A local SMTP server (mailin-embedded) that records what it receives, for the
//! integration tests and `nurtured bench --mails`. Its answers can be steered while it
//! runs: refuse a recipient (550), refuse every recipient or the sender (550 5.1.8),
//! fail the next messages temporarily (451), or hold the answer to RCPT or to the end
//! of DATA for a while.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, SslConfig, response};

/// How the server answers.
#[derive(Debug, Default)]
pub struct Behavior {
    /// Answer to RCPT per address (e.g. 550 for a rejected recipient).
    pub rcpt: HashMap<String, (u16, String)>,
    /// Answers to the next RCPT commands, one each, before the usual answer again
    /// (e.g. 451 for greylisting). At RCPT, not at the end of DATA: mailin stays in
    /// DATA mode after refusing a message there.
    pub next_rcpt: VecDeque<(u16, String)>,
    /// Answer to every RCPT while set (before `next_rcpt` and `rcpt`), e.g. `550 5.1.8
    /// Access denied, bad outbound sender` for a sending account the server blocks.
    pub rcpt_all: Option<(u16, String)>,
    /// Answer to every MAIL FROM while set.
    pub mail_from: Option<(u16, String)>,
    /// Wait before answering RCPT.
    pub rcpt_delay: Duration,
    /// Keep the raw messages (off for benchmarks).
    pub keep_raw: bool,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as received (empty unless `keep_raw`).
    pub raw: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).to_string()
    }

    /// The value of a header (unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        let prefix = format!("{}:", name.to_lowercase());
        unfolded
            .split("\r\n")
            .find(|l| l.to_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

#[derive(Debug, Default)]
struct State {
    behavior: Behavior,
    received: Vec<Received>,
    /// Commands seen: `MAIL from`, `RCPT to`, `DATA`.
    log: Vec<String>,
}

/// A running server; it stops with the process.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

#[derive(Clone)]
struct Session {
    state: Arc<Mutex<State>>,
    from: String,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handler for Session {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        let mut s = self.state();
        s.log.push(format!("MAIL {from}"));
        match &s.behavior.mail_from {
            Some((code, text)) => Response::custom(*code, text.clone()),
            None => response::OK,
        }
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let (delay, answer) = {
            let mut s = self.state();
            s.log.push(format!("RCPT {to}"));
            let next = match s.behavior.rcpt_all.clone() {
                Some(all) => Some(all),
                None => s.behavior.next_rcpt.pop_front(),
            };
            (
                s.behavior.rcpt_delay,
                next.or_else(|| s.behavior.rcpt.get(to).cloned()),
            )
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        match answer {
            Some((code, text)) => Response::custom(code, text),
            None => response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.state().log.push("DATA".into());
        self.from = from.to_string();
        self.to = to.to_vec();
        self.buf.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let raw = if s.behavior.keep_raw {
            std::mem::take(&mut self.buf)
        } else {
            self.buf.clear();
            Vec::new()
        };
        s.received.push(Received {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            raw,
            at: Instant::now(),
        });
        response::OK
    }
}

impl SmtpSink {
    /// Starts on a free loopback port, keeping raw messages.
    pub fn start() -> io::Result<Self> {
        Self::start_on(TcpListener::bind("127.0.0.1:0")?, true)
    }

    /// Starts on `listener` with room for `sessions` connections at once.
    pub fn start_on(listener: TcpListener, keep_raw: bool) -> io::Result<Self> {
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            behavior: Behavior {
                keep_raw,
                ..Behavior::default()
            },
            ..State::default()
        }));
        let session = Session {
            state: state.clone(),
            from: String::new(),
            to: Vec::new(),
            buf: Vec::new(),
        };
        let mut server = Server::new(session);
        server
            .with_name("sink.local")
            .with_ssl(SslConfig::None)
            .map_err(|e| io::Error::other(e.to_string()))?
            .with_num_threads(64)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                eprintln!("test SMTP server stopped: {e}");
            }
        });
        Ok(Self { port, state })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how the server answers from now on.
    pub fn behave(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut self.lock().behavior);
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().received.len()
    }

    /// Commands seen so far.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Arrival times per recipient (for latency measurements).
    pub fn arrivals(&self) -> Vec<(String, Instant)> {
        self.lock()
            .received
            .iter()
            .map(|r| (r.to.first().cloned().unwrap_or_default(), r.at))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    #[tokio::test]
    async fn answers_as_told() {
        crate::install_crypto();
        let sink = SmtpSink::start().unwrap();
        sink.behave(|b| {
            b.next_rcpt
                .push_back((451, "4.7.1 greylisted, try later".into()))
        });
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port)
            .build();
        let m = || {
            Message::builder()
                .from("a@example.com".parse().unwrap())
                .to("b@example.com".parse().unwrap())
                .subject("x")
                .body("hello".to_string())
                .unwrap()
        };
        let started = Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(3), t.send(m()))
            .await
            .expect("answers in time")
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(3), t.send(m()))
            .await
            .expect("answers in time")
            .unwrap();
        assert_eq!(sink.count(), 1);
    }
}
