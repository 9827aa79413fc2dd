//! SMTP connections kept open between mails, on lettre's SMTP client.
//!
//! lettre 0.11 leaves Nagle's algorithm on. It writes the end of a message (`.`) apart
//! from the message, so every mail then waits for the server's delayed ACK: 40 ms on
//! Linux, which limits a connection to about 25 mails per second. Until a lettre
//! release sets `TCP_NODELAY` itself (lettre PR #1159), this pool opens the TCP
//! connections, sets `TCP_NODELAY`, and hands them to lettre, which does all of the
//! SMTP: greeting, EHLO, STARTTLS, AUTH and the mail transaction.
//!
//! A mail goes out in two steps: [`SmtpPool::open`] gives the server the sender and the
//! recipients (MAIL, RCPT, DATA), [`SmtpPool::finish`] the message; only its answer to
//! the end of the message makes the server take the mail. The delivery worker
//! ([`super::deliver`]) waits between the two until fewer than `mail.connections`
//! accepted mails are still unrecorded, so the first step of the next mail overlaps
//! with the commit of the previous one. A connection goes back to the pool as soon as
//! the server answered the message.
//!
//! URLs as lettre reads them: `smtp://host[:port]` (plain, port 25),
//! `smtp://host?tls=opportunistic` or `?tls=required` (STARTTLS, port 587),
//! `smtps://host` (TLS from the start, port 465); `user:pass@` for AUTH PLAIN/LOGIN.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::{Error, response::Response};

/// A send that did not work: the connection could not be made (worth another try), or
/// what lettre reported (the server's answer, or the connection failing on the way).
#[derive(Debug)]
pub enum PoolError {
    Connect(String),
    Smtp(Error),
    /// The server refused the login (AUTH): a problem of the sender's account.
    Login(String),
    /// The server answered MAIL FROM with an error: it refuses the sender.
    Sender(Error),
    /// The server cannot take this mail as it is (it lacks SMTPUTF8 or 8BITMIME).
    Unsupported(String),
}

impl From<Error> for PoolError {
    fn from(e: Error) -> Self {
        PoolError::Smtp(e)
    }
}
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A mail transaction under way: the server has the sender and the recipients and
/// waits for the message. Dropped without [`SmtpPool::finish`], the connection closes
/// and the server forgets the transaction.
pub struct Open {
    conn: AsyncSmtpConnection,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    None,
    /// STARTTLS; `required` fails when the server does not offer it.
    StartTls {
        required: bool,
    },
    /// TLS from the first byte (`smtps://`).
    Wrapper,
}

/// An idle connection older than this is checked with NOOP before use.
const CHECK_AFTER: Duration = Duration::from_secs(2);

pub struct SmtpPool {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    wrapper: Option<tokio_rustls::TlsConnector>,
}

impl SmtpPool {
    /// Reads an `smtp://` / `smtps://` URL; `hello` names this host in EHLO.
    pub fn from_url(
        text: &str,
        hello: &str,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Result<Self, String> {
        // Errors show the URL with its password masked.
        let shown = crate::config::redact::url(text);
        let url = url::Url::parse(text).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => Security::Wrapper,
            ("smtp", None) => Security::None,
            ("smtp", Some("required")) => Security::StartTls { required: true },
            ("smtp", Some("opportunistic")) => Security::StartTls { required: false },
            (scheme, tls) => {
                return Err(format!(
                    "`{scheme}://` with tls={} is not supported: use smtp://, \
                     smtp://...?tls=required, smtp://...?tls=opportunistic or smtps://",
                    tls.unwrap_or("")
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("`{shown}` names no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port().unwrap_or(match security {
            Security::None => 25,
            Security::StartTls { .. } => 587,
            Security::Wrapper => 465,
        });
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| format!("`{shown}`: bad percent-encoding in the credentials"))
        };
        let credentials = match url.password() {
            Some(p) => Some(Credentials::new(decode(url.username())?, decode(p)?)),
            None => None,
        };
        let wrapper = (security == Security::Wrapper).then(tls_connector);
        Ok(Self {
            host,
            port,
            security,
            credentials,
            hello: ClientId::Domain(hello.to_string()),
            connect_timeout,
            idle_timeout: Duration::from_secs(60),
            max_idle,
            idle: Mutex::new(Vec::new()),
            wrapper,
        })
    }

    /// Opens a mail transaction for `envelope` on a pooled connection, or a new one if
    /// none is idle: MAIL (with SMTPUTF8 / 8BITMIME as `raw` needs them, as lettre's own
    /// `send` does), RCPT for each recipient, DATA. A message is never sent a second
    /// time on another connection: a connection idle for a while is checked (NOOP)
    /// before it is used instead.
    pub async fn open(&self, envelope: &Envelope, raw: &[u8]) -> Result<Open, PoolError> {
        let mut conn = match self.take_idle().await {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        let needs = [
            (non_ascii, Extension::SmtpUtfEight, "SMTPUTF8", "addresses"),
            (
                !raw.is_ascii(),
                Extension::EightBitMime,
                "8BITMIME",
                "message",
            ),
        ];
        for (needed, extension, name, what) in needs {
            if !needed {
                continue;
            }
            if !conn.server_info().supports_feature(extension) {
                self.put_back(conn);
                return Err(PoolError::Unsupported(format!(
                    "the {what} need {name}, which the server does not offer"
                )));
            }
            options.push(match extension {
                Extension::SmtpUtfEight => MailParameter::SmtpUtfEight,
                _ => MailParameter::Body(MailBodyParameter::EightBitMime),
            });
        }
        let mail = Mail::new(envelope.from().cloned(), options);
        if let Err(e) = conn.command(mail).await {
            conn.abort().await;
            return Err(PoolError::Sender(e));
        }
        for to in envelope.to() {
            if let Err(e) = conn.command(Rcpt::new(to.clone(), Vec::new())).await {
                conn.abort().await;
                return Err(e.into());
            }
        }
        if let Err(e) = conn.command(Data).await {
            conn.abort().await;
            return Err(e.into());
        }
        Ok(Open { conn })
    }

    /// Sends the message of an opened transaction and returns the server's answer; the
    /// connection goes back to the pool when the server took it.
    pub async fn finish(&self, open: Open, raw: &[u8]) -> Result<Response, PoolError> {
        let Open { mut conn } = open;
        match conn.message(raw).await {
            Ok(r) => {
                self.put_back(conn);
                Ok(r)
            }
            Err(e) => {
                conn.abort().await;
                Err(e.into())
            }
        }
    }

    /// An idle connection that still works, if there is one.
    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if since.elapsed() >= self.idle_timeout || conn.has_broken() {
                continue;
            }
            // Busy connections go straight on; one that waited may have been closed by
            // the server.
            if since.elapsed() < CHECK_AFTER || conn.test_connected().await {
                return Some(conn);
            }
        }
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle && !conn.has_broken() {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, PoolError> {
        let at = format!("{}:{}", self.host, self.port);
        let failed =
            |what: &str, e: &dyn fmt::Display| PoolError::Connect(format!("{what} {at}: {e}"));
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| failed("cannot connect to", &"timed out"))?
        .map_err(|e| failed("cannot connect to", &e))?;
        tcp.set_nodelay(true)
            .map_err(|e| failed("cannot set TCP_NODELAY for", &e))?;
        let mut conn = match &self.wrapper {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| failed("not a TLS server name:", &e))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed("TLS failed with", &e))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Tls(tls)), &self.hello)
                    .await
                    .map_err(|e| failed("no SMTP greeting from", &e))?
            }
            None => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                .await
                .map_err(|e| failed("no SMTP greeting from", &e))?,
        };
        if let Security::StartTls { required } = self.security {
            if conn.can_starttls() {
                let params = TlsParameters::new(self.host.clone())
                    .map_err(|e| failed("cannot set up TLS for", &e))?;
                conn.starttls(params, &self.hello)
                    .await
                    .map_err(|e| failed("STARTTLS failed with", &e))?;
            } else if required {
                return Err(PoolError::Connect(format!(
                    "{at} does not offer STARTTLS, and the URL says tls=required"
                )));
            }
        }
        if let Some(c) = &self.credentials {
            // A refused login is a problem of the configuration, not of the mail:
            // delivery pauses (and the log says why) until the server takes it again.
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(|e| PoolError::Login(format!("login refused by {at}: {e}")))?;
        }
        Ok(conn)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.to_string())
}

/// TLS with the Mozilla roots, on ring.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS stream lettre can run SMTP over.
struct Tls(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl AsyncTokioStream for Tls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_do_not_show_the_password() {
        for url in [
            "smtp:u:hunter2@mail.example.com",
            "smtp://u:hunter2@mail.example.com?tls=maybe",
            "smtp://u:hunter2@[::1",
        ] {
            let err = SmtpPool::from_url(url, "x", Duration::from_secs(1), 1)
                .err()
                .unwrap();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    fn pool(url: &str) -> SmtpPool {
        SmtpPool::from_url(url, "example.com", Duration::from_secs(5), 4).unwrap()
    }

    #[test]
    fn urls_are_read_as_lettre_reads_them() {
        let p = pool("smtp://mail.example.com");
        assert_eq!((p.port, p.security), (25, Security::None));
        let p = pool("smtp://u%40x:p%2Bw@mail.example.com?tls=required");
        assert_eq!(
            (p.port, p.security),
            (587, Security::StartTls { required: true })
        );
        assert!(p.credentials.is_some());
        let p = pool("smtps://mail.example.com:2465");
        assert_eq!((p.port, p.security), (2465, Security::Wrapper));
        assert!(SmtpPool::from_url("smtp://h?tls=maybe", "x", Duration::from_secs(1), 1).is_err());
        assert_eq!(percent_decode("p%2Bw%40").as_deref(), Some("p+w@"));
    }
}
