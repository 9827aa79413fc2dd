//! The checked `[mail]` table and `[[streams]]`: transport, sender, signed links,
//! quarantine, frequency cap, send window, DKIM and the nurture streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveTime, Weekday};

use super::raw::{RawMail, RawStream};
use crate::domain::Funnel;

/// How mail leaves the daemon.
#[derive(Clone, PartialEq, Eq)]
pub enum TransportConfig {
    /// `.eml` files in a folder (the embedded default: no mail server needed).
    File(PathBuf),
    /// An SMTP URL as lettre reads it: `smtp://`, `smtps://`, `?tls=required`.
    Smtp(String),
}

/// Shown with the password of an SMTP URL masked.
impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportConfig::File(dir) => f.debug_tuple("File").field(dir).finish(),
            TransportConfig::Smtp(url) => f
                .debug_tuple("Smtp")
                .field(&super::redact::url(url))
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: TransportConfig,
    pub from: lettre::message::Mailbox,
    pub reply_to: Option<lettre::message::Mailbox>,
    /// Base of the links in mails (no trailing slash).
    pub public_url: String,
    pub secret: String,
    pub templates_dir: PathBuf,
    pub templates_shown: String,
    pub default_locale: String,
    pub quarantine: Vec<String>,
    pub unsubscribe_mailto: Option<String>,
    pub tracking: bool,
    pub connections: usize,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max_age: Duration,
    pub sender: Sender,
    pub cap: Cap,
    pub window: SendWindow,
    pub dkim: Option<Dkim>,
    /// Trigger mails for events that were older than this when processed are not sent
    /// (suppressed as `stale_event`).
    pub max_event_age: Duration,
    /// The pause of delivery while the server refuses the sender: first wait, longest.
    pub pause_first: Duration,
    pub pause_max: Duration,
    /// The base of the VERP envelope sender (`bounce@example.com` becomes
    /// `bounce+TOKEN@example.com`); `None`: the From address, without VERP.
    pub bounce_address: Option<lettre::Address>,
    /// Earlier secrets: links they signed still verify (`mail.previous_secrets`).
    pub previous_secrets: Vec<String>,
}

impl MailConfig {
    pub fn in_quarantine(&self, stage: &str) -> bool {
        self.quarantine.iter().any(|s| s == stage)
    }
}

/// Shown in the footer of every mail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sender {
    pub company: String,
    pub address: String,
    pub website: String,
    pub imprint_url: String,
    pub privacy_url: String,
}

/// At most `max` marketing mails per lead in any `per`.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub max: u32,
    pub per: Duration,
}

/// When stream steps may go out, in the lead's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    pub days: Vec<Weekday>,
    pub from: NaiveTime,
    pub until: NaiveTime,
}

#[derive(Clone)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    /// The private key (PEM).
    pub key_pem: String,
    pub key_file: PathBuf,
}

/// Shown without the key itself.
impl std::fmt::Debug for Dkim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dkim")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key_pem", &super::redact::MASK)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// A nurture stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub name: String,
    pub stages: Vec<String>,
    /// The lead must carry all of these tags as well (none: any lead in the stages).
    pub tags: Vec<String>,
    /// Events that end the stream (the lead did what the stream was for).
    pub goals: Vec<String>,
    pub reentry: Reentry,
    pub on_quarantine: OnQuarantine,
    pub steps: Vec<Step>,
    /// The topic of its mails (`[[topics]]`).
    pub topic: String,
}

impl Stream {
    /// True when a lead in `stage` with `tags` belongs in the stream.
    pub fn serves(&self, stage: &str, tags: &std::collections::BTreeSet<String>) -> bool {
        self.stages.iter().any(|s| s == stage) && self.tags.iter().all(|t| tags.contains(t))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// After the previous step went out (the first: after joining).
    pub after: Duration,
    pub template: String,
}

/// May a lead that left a stream join it again?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    Never,
    Always,
    After(Duration),
}

impl Reentry {
    /// Milliseconds that must pass after leaving before joining again.
    pub fn wait_ms(self) -> i64 {
        match self {
            Reentry::Never => i64::MAX / 4,
            Reentry::Always => 0,
            Reentry::After(d) => d.as_millis() as i64,
        }
    }
}

/// What a stream does when its lead enters quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnQuarantine {
    /// Wait, and go on from the same step if the lead comes back to a stage it serves.
    Pause,
    /// Leave the stream.
    Exit,
}

pub(super) struct Checker<'a> {
    pub bad: &'a dyn Fn(&str, String),
    pub duration: &'a dyn Fn(&str, &str) -> Duration,
    pub resolve: &'a dyn Fn(&str) -> PathBuf,
}

pub(super) fn mail(
    raw: &RawMail,
    data_dir: &Path,
    funnel: Option<&Funnel>,
    c: &Checker,
) -> Option<MailConfig> {
    let bad = c.bad;
    let transport = if raw.url.is_empty() {
        TransportConfig::File(data_dir.join("mail"))
    } else if let Some(path) = raw.url.strip_prefix("file://") {
        TransportConfig::File((c.resolve)(path))
    } else if raw.url.starts_with("smtp://") || raw.url.starts_with("smtps://") {
        TransportConfig::Smtp(raw.url.clone())
    } else {
        bad(
            "mail.url",
            format!(
                "`{}` is not a mail URL: use smtp://user:pass@host:587?tls=required, \
                 smtps://user:pass@host:465, file://FOLDER, or leave it empty for .eml files \
                 in the data folder",
                super::redact::url(&raw.url)
            ),
        );
        TransportConfig::File(data_dir.join("mail"))
    };
    let mailbox = |key: &str, text: &str| match text.parse::<lettre::message::Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            bad(
                key,
                format!("`{text}` is not an address ({e}): write \"Name <user@example.com>\""),
            );
            None
        }
    };
    let from = mailbox("mail.from", &raw.from);
    let reply_to = if raw.reply_to.is_empty() {
        None
    } else {
        mailbox("mail.reply_to", &raw.reply_to)
    };
    let public_url = raw.public_url.trim_end_matches('/').to_string();
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        bad(
            "mail.public_url",
            format!(
                "`{}` is not an http(s) URL: links in mails point here (e.g. https://mail.example.com)",
                raw.public_url
            ),
        );
    }
    // Unsubscribe links must be HTTPS for real mail (RFC 8058); .eml files in a folder
    // are for trying things out and may point at a local http:// address.
    if matches!(transport, TransportConfig::Smtp(_))
        && public_url.starts_with("http://")
        && !raw.allow_insecure_links
    {
        bad(
            "mail.public_url",
            format!(
                "`{}` is plain http, but mail goes out over SMTP: the unsubscribe and \
                 confirmation links in real mail must be https:// (RFC 8058). Set \
                 mail.public_url to the https:// address at which leads reach this daemon \
                 (e.g. behind a reverse proxy), or, for a test setup only, set \
                 mail.allow_insecure_links = true",
                raw.public_url
            ),
        );
    }
    if raw.secret.len() < 32 {
        bad(
            "mail.secret",
            "must be at least 32 characters: it signs unsubscribe and confirmation links".into(),
        );
    }
    for (i, p) in raw.previous_secrets.iter().enumerate() {
        if p.len() < 32 {
            bad(
                &format!("mail.previous_secrets[{i}]"),
                "must be at least 32 characters, like mail.secret".into(),
            );
        } else if p == super::raw::DEV_SECRET {
            // The shipped secret is public: links it signs could be forged by anyone.
            bad(
                &format!("mail.previous_secrets[{i}]"),
                "is the shipped development secret, which is public: leave it out (links \
                 signed with it stop working, as they could be forged)"
                    .into(),
            );
        }
    }
    super::check_stages(funnel, &raw.quarantine, "mail.quarantine", bad);
    let unsubscribe_mailto = match raw.unsubscribe_mailto.trim() {
        "" => None,
        m if m.contains('@') => Some(m.trim_start_matches("mailto:").to_string()),
        m => {
            bad(
                "mail.unsubscribe_mailto",
                format!("`{m}` is not an e-mail address"),
            );
            None
        }
    };
    let connections = if (1..=256).contains(&raw.connections) {
        raw.connections as usize
    } else {
        bad(
            "mail.connections",
            format!("must be between 1 and 256, not {}", raw.connections),
        );
        1
    };
    let cap_max = if (0..=1000).contains(&raw.frequency_cap.max) {
        raw.frequency_cap.max as u32
    } else {
        bad(
            "mail.frequency_cap.max",
            format!(
                "must be between 0 (no cap) and 1000, not {}",
                raw.frequency_cap.max
            ),
        );
        0
    };
    let window = working_time(
        &raw.send_window.days,
        &raw.send_window.hours,
        "mail.send_window",
        bad,
    )
    .map(|(days, from, until)| SendWindow { days, from, until });
    let dkim = dkim(raw, c);
    let bounce_address =
        super::bounces::bounce_address(&raw.bounce_address, from.as_ref().map(|f| &f.email), bad);
    Some(MailConfig {
        transport,
        from: from?,
        reply_to,
        public_url,
        secret: raw.secret.clone(),
        templates_dir: (c.resolve)(&raw.templates_dir),
        templates_shown: raw.templates_dir.clone(),
        default_locale: raw.default_locale.clone(),
        quarantine: raw.quarantine.clone(),
        unsubscribe_mailto,
        tracking: raw.tracking,
        connections,
        timeout: (c.duration)("mail.timeout", &raw.timeout),
        retry_base: (c.duration)("mail.retry_base", &raw.retry_base),
        retry_max_age: (c.duration)("mail.retry_max_age", &raw.retry_max_age),
        sender: Sender {
            company: raw.sender.company.clone(),
            address: raw.sender.address.clone(),
            website: raw.sender.website.clone(),
            imprint_url: raw.sender.imprint_url.clone(),
            privacy_url: raw.sender.privacy_url.clone(),
        },
        cap: Cap {
            max: cap_max,
            per: (c.duration)("mail.frequency_cap.per", &raw.frequency_cap.per),
        },
        window: window?,
        dkim,
        max_event_age: (c.duration)("mail.max_event_age", &raw.max_event_age),
        pause_first: (c.duration)("mail.pause.first", &raw.pause.first),
        pause_max: (c.duration)("mail.pause.max", &raw.pause.max),
        bounce_address,
        previous_secrets: raw.previous_secrets.clone(),
    })
}

fn dkim(raw: &RawMail, c: &Checker) -> Option<Dkim> {
    let d = &raw.dkim;
    if d.domain.is_empty() && d.selector.is_empty() && d.key_file.is_empty() {
        return None;
    }
    if d.domain.is_empty() || d.selector.is_empty() || d.key_file.is_empty() {
        (c.bad)(
            "mail.dkim",
            "give domain, selector and key_file together (or none, to send unsigned)".into(),
        );
        return None;
    }
    let key_file = (c.resolve)(&d.key_file);
    match std::fs::read_to_string(&key_file) {
        Ok(key_pem) => Some(Dkim {
            domain: d.domain.clone(),
            selector: d.selector.clone(),
            key_pem,
            key_file,
        }),
        Err(e) => {
            (c.bad)(
                "mail.dkim.key_file",
                format!("cannot read {}: {e}", key_file.display()),
            );
            None
        }
    }
}

/// Parses `mon-fri` / `mon,wed,fri` and `09:00-17:00` (keys `{key}.days`, `{key}.hours`).
pub(super) fn working_time(
    days: &str,
    hours: &str,
    key: &str,
    bad: &dyn Fn(&str, String),
) -> Option<(Vec<Weekday>, NaiveTime, NaiveTime)> {
    let day = |t: &str| t.trim().parse::<Weekday>().ok();
    let mut list = Vec::new();
    let mut ok = true;
    for part in days.split(',') {
        match part.split_once('-') {
            Some((a, b)) => match (day(a), day(b)) {
                (Some(mut d), Some(end)) => loop {
                    list.push(d);
                    if d == end {
                        break;
                    }
                    d = d.succ();
                },
                _ => ok = false,
            },
            None => match day(part) {
                Some(d) => list.push(d),
                None => ok = false,
            },
        }
    }
    if !ok || list.is_empty() {
        bad(
            &format!("{key}.days"),
            format!("`{days}` is not a list of days: write e.g. \"mon-fri\" or \"mon,wed,fri\""),
        );
    }
    let times = hours.split_once('-').and_then(|(a, b)| {
        Some((
            NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?,
            NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?,
        ))
    });
    match times {
        Some((from, until)) if from < until && ok && !list.is_empty() => Some((list, from, until)),
        Some((from, until)) if from < until => None,
        _ => {
            bad(
                &format!("{key}.hours"),
                format!("`{hours}` is not a time range: write e.g. \"09:00-17:00\""),
            );
            None
        }
    }
}

pub(super) fn streams(raw: &[RawStream], funnel: Option<&Funnel>, c: &Checker) -> Vec<Stream> {
    let bad = c.bad;
    let mut out = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let key = format!("streams[{i}]");
        if raw[..i].iter().any(|o| o.name == s.name) {
            bad(
                &format!("{key}.name"),
                format!("`{}` is used twice", s.name),
            );
        }
        super::check_stages(funnel, &s.stages, &format!("{key}.stages"), bad);
        if s.steps.is_empty() {
            bad(
                &format!("{key}.steps"),
                "a stream needs at least one step".into(),
            );
        }
        let reentry = match s.reentry.as_str() {
            "never" => Reentry::Never,
            "always" => Reentry::Always,
            other => match humantime::parse_duration(other) {
                Ok(d) => Reentry::After(d),
                Err(_) => {
                    bad(
                        &format!("{key}.reentry"),
                        format!(
                            "`{other}` is not a re-entry policy: use \"never\", \"always\" or a \
                             duration such as \"90d\""
                        ),
                    );
                    Reentry::Never
                }
            },
        };
        let on_quarantine = match s.on_quarantine.as_str() {
            "pause" => OnQuarantine::Pause,
            "exit" => OnQuarantine::Exit,
            other => {
                bad(
                    &format!("{key}.on_quarantine"),
                    format!("`{other}` is not allowed: use \"pause\" or \"exit\""),
                );
                OnQuarantine::Pause
            }
        };
        let steps = s
            .steps
            .iter()
            .enumerate()
            .map(|(j, step)| Step {
                after: if step.after == "0s" || step.after == "0" {
                    Duration::ZERO
                } else {
                    (c.duration)(&format!("{key}.steps[{j}].after"), &step.after)
                },
                template: step.template.clone(),
            })
            .collect();
        out.push(Stream {
            name: s.name.clone(),
            stages: s.stages.clone(),
            tags: s.tags.clone(),
            goals: s.goals.clone(),
            reentry,
            on_quarantine,
            steps,
            topic: s.topic.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(Some(&path), Vec::new())
    }

    const SECRET: &str = "secret = \"a-secret-of-at-least-thirty-two-characters\"\n";

    #[test]
    fn smtp_needs_an_https_public_url_unless_insecure_links_are_allowed() {
        let smtp = format!("[mail]\nurl = \"smtp://127.0.0.1:2525\"\n{SECRET}");
        let err = load(&format!("{smtp}public_url = \"http://mail.example.com\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mail.public_url"), "{err}");
        assert!(err.contains("https://"), "{err}");
        assert!(err.contains("mail.allow_insecure_links = true"), "{err}");
        load(&format!(
            "{smtp}public_url = \"https://mail.example.com\"\n"
        ))
        .unwrap();
        load(&format!(
            "{smtp}public_url = \"http://127.0.0.1:8080\"\nallow_insecure_links = true\n"
        ))
        .unwrap();
        // .eml files keep working with the shipped http://127.0.0.1:8080.
        load("[mail]\npublic_url = \"http://127.0.0.1:8080\"\n").unwrap();
    }

    #[test]
    fn errors_and_debug_output_never_show_the_smtp_password() {
        let err = load("[mail]\nurl = \"smtpx://mailer:hunter2-secret@mail.example.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("smtpx://mailer:***@mail.example.com"), "{err}");
        let err = load("database_url = \"mysql://app:hunter2-secret@db/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("mysql://app:***@db/x"), "{err}");
        let c = load(&format!(
            "[mail]\nurl = \"smtp://mailer:hunter2-secret@mail.example.com\"\n{SECRET}\
             public_url = \"https://mail.example.com\"\n"
        ))
        .unwrap();
        let shown = format!("{:?}", c.mail.transport);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("mailer:***@"), "{shown}");
        // A broken URL in the pool's own checks.
        let Err(e) = crate::mail::smtp_pool::SmtpPool::from_url(
            "smtp://mailer:hunter2-secret@mail.example.com?tls=maybe",
            "x",
            std::time::Duration::from_secs(1),
            1,
        ) else {
            panic!("tls=maybe is refused");
        };
        assert!(!e.contains("hunter2"), "{e}");
        let Err(e) = crate::mail::smtp_pool::SmtpPool::from_url(
            "smtp://mailer:hunter2%zz@",
            "x",
            std::time::Duration::from_secs(1),
            1,
        ) else {
            panic!("no host");
        };
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn dkim_keys_are_not_shown_in_debug_output() {
        let d = super::Dkim {
            domain: "example.com".into(),
            selector: "s1".into(),
            key_pem: "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK".into(),
            key_file: "dkim.pem".into(),
        };
        let shown = format!("{d:?}");
        assert!(!shown.contains("MIIBOg"), "{shown}");
        assert!(shown.contains("dkim.pem"), "{shown}");
    }
}
