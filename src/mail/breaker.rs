//! The pause of delivery while the SMTP server refuses the sender (a circuit breaker).
//!
//! A refusal that concerns the sender ([`super::refusal`]: 5.1.7, 5.1.8, 5.7.x
//! authentication and policy answers, a refused login) says nothing about the mail or
//! its recipient: every other mail would get the same answer. Delivery then pauses for
//! `mail.pause.first`; after the pause one mail goes out as a probe. If the server
//! refuses it again, the pause doubles (at most `mail.pause.max`); once the server
//! takes a mail, delivery goes on. Mails held back by a pause keep their tries, and
//! no address is suppressed for it.
//!
//! The state lives in memory in the daemon that sends (the leader of a cluster) and is
//! copied to the database on every change, so `GET /v1/stats` of any daemon and
//! `nurtured stats` show it.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Delivery runs.
    All,
    /// The pause is over: one mail may go out to see whether the server takes it.
    Probe,
    /// Paused until then.
    Wait(DateTime<Utc>),
}

/// A pause as shown in the stats and stored in the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    /// When the server first refused the sender.
    pub since: DateTime<Utc>,
    /// When the next mail goes out as a probe.
    pub next_probe: DateTime<Utc>,
    /// The server's last answer.
    pub answer: String,
    /// Probes the server refused since the pause began.
    pub refused_probes: u32,
}

#[derive(Debug)]
struct State {
    pause: Option<Pause>,
    /// The current pause length.
    wait: Duration,
    /// Counts changes, so that the mailer writes the state only when it changed.
    version: u64,
}

#[derive(Debug)]
pub struct Breaker {
    first: Duration,
    max: Duration,
    state: Mutex<State>,
}

/// What a refusal did to the breaker (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// Delivery was running and pauses now.
    Opened(Duration),
    /// A probe was refused: the pause is longer now.
    Longer(Duration),
    /// Already paused (a mail that was under way when the pause began).
    Already,
}

impl Breaker {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            state: Mutex::new(State {
                pause: None,
                wait: first,
                version: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What may go out at `now`.
    pub fn admit(&self, now: DateTime<Utc>) -> Admit {
        match &self.lock().pause {
            None => Admit::All,
            Some(p) if now >= p.next_probe => Admit::Probe,
            Some(p) => Admit::Wait(p.next_probe),
        }
    }

    /// The end of the current pause, if delivery is paused at `now` (a probe that is due
    /// counts as not paused).
    pub fn paused_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.admit(now) {
            Admit::Wait(until) => Some(until),
            _ => None,
        }
    }

    /// The server refused the sender at `now` with `answer`.
    pub fn refused(&self, now: DateTime<Utc>, answer: &str) -> (Tripped, DateTime<Utc>) {
        let mut s = self.lock();
        s.version += 1;
        let wait = s.wait;
        let next = |w: Duration| now + chrono::Duration::from_std(w).unwrap_or_default();
        match s.pause.take() {
            None => {
                let wait = self.first;
                s.wait = wait;
                let p = Pause {
                    since: now,
                    next_probe: next(wait),
                    answer: answer.to_string(),
                    refused_probes: 0,
                };
                let until = p.next_probe;
                s.pause = Some(p);
                (Tripped::Opened(wait), until)
            }
            Some(mut p) if now >= p.next_probe => {
                let wait = wait.saturating_mul(2).min(self.max);
                s.wait = wait;
                p.next_probe = next(wait);
                p.answer = answer.to_string();
                p.refused_probes += 1;
                let until = p.next_probe;
                s.pause = Some(p);
                (Tripped::Longer(wait), until)
            }
            Some(mut p) => {
                p.answer = answer.to_string();
                let until = p.next_probe;
                s.pause = Some(p);
                (Tripped::Already, until)
            }
        }
    }

    /// The server took a mail (or answered about it, not about the sender): delivery
    /// runs. Returns the pause that ended, if there was one.
    pub fn accepted(&self) -> Option<Pause> {
        let mut s = self.lock();
        let ended = s.pause.take();
        if ended.is_some() {
            s.version += 1;
            s.wait = self.first;
        }
        ended
    }

    /// Takes up a pause stored by an earlier run of the daemon.
    pub fn restore(&self, pause: Pause) {
        let mut s = self.lock();
        let length = (pause.next_probe - pause.since)
            .to_std()
            .unwrap_or(self.first);
        s.wait = length.clamp(self.first, self.max);
        s.pause = Some(pause);
    }

    /// The pause now and a number that changes with every change of it.
    pub fn snapshot(&self) -> (u64, Option<Pause>) {
        let s = self.lock();
        (s.version, s.pause.clone())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, 9, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    #[test]
    fn pauses_double_up_to_the_maximum_and_end_when_the_server_takes_a_mail() {
        let b = Breaker::new(Duration::from_secs(30), Duration::from_secs(100));
        assert_eq!(b.admit(at(0)), Admit::All);
        let (t, until) = b.refused(at(0), "550 5.1.8 bad outbound sender");
        assert_eq!(
            (t, until),
            (Tripped::Opened(Duration::from_secs(30)), at(30))
        );
        // Mails under way when the pause began do not lengthen it.
        assert_eq!(b.refused(at(1), "again").0, Tripped::Already);
        assert_eq!(b.admit(at(29)), Admit::Wait(at(30)));
        assert_eq!(b.paused_until(at(29)), Some(at(30)));
        assert_eq!(b.admit(at(30)), Admit::Probe);
        assert_eq!(b.paused_until(at(30)), None);
        let (t, until) = b.refused(at(30), "550 5.1.8 still");
        assert_eq!(
            (t, until),
            (Tripped::Longer(Duration::from_secs(60)), at(90))
        );
        let (t, until) = b.refused(at(90), "550 5.1.8 still");
        assert_eq!(
            (t, until),
            (Tripped::Longer(Duration::from_secs(100)), at(190))
        );
        let (_, pause) = b.snapshot();
        let pause = pause.unwrap();
        assert_eq!(pause.since, at(0));
        assert_eq!(pause.refused_probes, 2);
        assert_eq!(pause.answer, "550 5.1.8 still");
        let ended = b.accepted().unwrap();
        assert_eq!(ended.since, at(0));
        assert_eq!(b.admit(at(191)), Admit::All);
        assert!(b.accepted().is_none());
        // A new pause starts short again.
        assert_eq!(b.refused(at(200), "x").1, at(230));
    }

    #[test]
    fn a_stored_pause_is_taken_up() {
        let b = Breaker::new(Duration::from_secs(30), Duration::from_secs(900));
        b.restore(Pause {
            since: at(0),
            next_probe: at(120),
            answer: "535 5.7.8 authentication failed".into(),
            refused_probes: 2,
        });
        assert_eq!(b.admit(at(60)), Admit::Wait(at(120)));
        assert_eq!(
            b.refused(at(120), "x").0,
            Tripped::Longer(Duration::from_secs(240))
        );
    }
}
