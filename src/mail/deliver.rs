//! The delivery worker: turns due stream steps into outbox rows, claims due mails,
//! decides for each whether it may go out ([`super::policy`]), renders, signs and sends
//! it, and records the outcome.
//!
//! Claims and outcomes are written in short transactions that check the processing
//! lease; no transaction is open during an SMTP call. Up to `mail.connections` mails
//! are sent at once. A send passes a gate of `mail.connections` permits right before
//! the step that makes the server accept the mail (the end of the message), and keeps
//! its permit until its outcome is committed: each sending task hands its outcome to
//! one recorder and waits for the transaction that holds it, and outcomes that arrive
//! while a commit runs share the next one (group commit). So at any moment at most
//! `mail.connections` mails have been accepted by the server without their outcome
//! committed: a crash of the process (SIGKILL, abort) sends at most that many mails
//! again on the next start, with the same Message-ID, never a claimed batch's worth.
//! While an outcome commits, its connection already starts the next mail (MAIL, RCPT,
//! DATA) up to the gate.
//!
//! A sending task that panics (whatever a lead's data did to it) still gets an
//! outcome: it counts as a failed try with the panic's message, like a refusal by the
//! server, and the mail fails once its tries span `mail.retry_max_age`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::breaker::{Admit, Breaker, Tripped};
use super::links::Links;
use super::message::{self, DkimSigner, Parts};
use super::plan::StreamPlan;
use super::policy::{self, Decision, Facts};
use super::templates::Templates;
use super::token::Signer;
use super::transport::{SendError, Transport};
use crate::clock::{SharedClock, from_ms, to_ms};
use crate::config::MailConfig;
use crate::domain::text::{cut, one_line};
use crate::domain::{Lead, MailClass};
use crate::process::Processor;
use crate::store::{
    DueStep, Finish, MailContent, OutboxRow, StepDone, StepMail, Store, StoreError,
};

/// Mails claimed per round.
const CLAIM: i64 = 500;
/// Lead data read longer ago than this is read again right before a mail is sent.
const FRESH: Duration = Duration::from_millis(100);
/// Longest sleep between looks at the outbox (a clock that jumps, mail queued by
/// another process).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Longest wait between two tries of a mail.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub steps_queued: usize,
    pub sent: usize,
    pub later: usize,
    pub failed: usize,
    pub suppressed: usize,
}

/// Why a pass stopped (what was finished is recorded).
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A test's hook into sending: called in the sending task right before a mail is
/// handed to the transport, with the outbox row. See [`Mailer::inject_send_fault`].
#[doc(hidden)]
pub type SendHook = Box<dyn Fn(&OutboxRow) + Send + Sync>;

pub struct Mailer {
    pub processor: Arc<Processor>,
    pub config: Arc<MailConfig>,
    pub plan: Arc<StreamPlan>,
    pub templates: Arc<Templates>,
    pub transport: Arc<Transport>,
    pub dkim: Option<Arc<DkimSigner>>,
    pub signer: Arc<Signer>,
    /// For leads without a time zone of their own.
    pub time_zone: Tz,
    pub clock: SharedClock,
    pub wake: Arc<Notify>,
    sending: Arc<Semaphore>,
    /// The pause of delivery while the server refuses the sender.
    pub breaker: Arc<Breaker>,
    /// The version of the breaker's state last written to the database.
    pause_written: std::sync::atomic::AtomicU64,
    /// Unset in production; only [`Mailer::inject_send_fault`] sets it.
    send_hook: Arc<OnceLock<SendHook>>,
}

/// The outcome of one mail, on its way to the store.
struct Outcome {
    finish: Finish,
    step: Option<StepDone>,
    suppress: Option<(String, String, String)>,
}

/// An outcome handed to the recorder.
struct ToRecord {
    outcome: Outcome,
    /// When the server answered (for mails that were sent or tried).
    answered: Option<Instant>,
    /// Told once the outcome is committed; the sender waits for it before it takes
    /// its next mail. Dropped unsent when the outcome could not be recorded.
    recorded: Option<oneshot::Sender<()>>,
}

impl Mailer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        processor: Arc<Processor>,
        config: Arc<MailConfig>,
        plan: Arc<StreamPlan>,
        templates: Arc<Templates>,
        transport: Transport,
        dkim: Option<DkimSigner>,
        time_zone: Tz,
        clock: SharedClock,
    ) -> Self {
        let signer = Arc::new(Signer::from_config(&config));
        let sending = Arc::new(Semaphore::new(config.connections));
        let breaker = Arc::new(Breaker::new(config.pause_first, config.pause_max));
        Self {
            breaker,
            pause_written: std::sync::atomic::AtomicU64::new(0),
            wake: processor.mail_wake.clone(),
            processor,
            signer,
            sending,
            config,
            plan,
            templates,
            transport: Arc::new(transport),
            dkim: dkim.map(Arc::new),
            time_zone,
            clock,
            send_hook: Arc::new(OnceLock::new()),
        }
    }

    /// Fault injection for tests: `hook` runs in every sending task right before the
    /// mail goes to the transport (and may panic, to show what a crashing send does).
    /// Only code can set it, once, before the daemon starts; nothing in the
    /// configuration reaches it, and while it is unset a send pays one atomic load.
    #[doc(hidden)]
    pub fn inject_send_fault(&self, hook: impl Fn(&OutboxRow) + Send + Sync + 'static) {
        if self.send_hook.set(Box::new(hook)).is_err() {
            panic!("a send fault is injected once, before the daemon starts");
        }
    }

    fn store(&self) -> &Store {
        &self.processor.store
    }

    /// Runs passes until `shutdown`: woken when mail is queued, otherwise when the next
    /// mail is due (at most [`MAX_IDLE`] apart).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // A pause stored by the previous run goes on: the server is probed when it ends.
        match self.store().mail_pause().await {
            Ok(Some(pause)) => {
                tracing::warn!(
                    answer = %pause.answer,
                    next_probe = %pause.next_probe,
                    "delivery stays paused: the SMTP server refused the sender before the restart"
                );
                self.breaker.restore(pause);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the stored pause of delivery"),
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let idle = match self.run_due_until(&shutdown).await {
                Ok(_) => {
                    backoff = Duration::from_millis(500);
                    self.until_next().await
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "mail delivery pass failed");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    async fn until_next(&self) -> Duration {
        // In a cluster the other daemons queue mail without waking this one: look
        // every poll interval.
        let max_idle = if self.processor.cluster.get().is_some() {
            self.processor.poll_interval.min(MAX_IDLE)
        } else {
            MAX_IDLE
        };
        let now = self.clock.now();
        if let Admit::Wait(until) = self.breaker.admit(now) {
            // Paused: the mails that are due wait for the probe.
            let wait = (until - now).num_milliseconds();
            return Duration::from_millis(wait.clamp(0, max_idle.as_millis() as i64) as u64);
        }
        match self.store().next_mail_due().await {
            Ok(Some(due)) => {
                let wait = due - to_ms(self.clock.now());
                Duration::from_millis(wait.clamp(0, max_idle.as_millis() as i64) as u64)
            }
            _ => max_idle,
        }
    }

    /// Queues due stream steps, then sends every mail that is due now.
    pub async fn run_due(&self) -> Result<Pass, MailError> {
        self.run_due_until(&CancellationToken::new()).await
    }

    /// Like [`Mailer::run_due`], stopping between claims of [`CLAIM`] mails once
    /// `shutdown` is cancelled: a backlog of queued mail waits for the next start
    /// instead of holding up the stop.
    pub async fn run_due_until(&self, shutdown: &CancellationToken) -> Result<Pass, MailError> {
        if self.processor.held_lease().is_err() {
            // Another process sends (the leader of a cluster, or the daemon working this
            // database while a command runs).
            return Ok(Pass::default());
        }
        let mut pass = Pass {
            steps_queued: self.queue_steps().await?,
            ..Pass::default()
        };
        loop {
            if shutdown.is_cancelled() {
                return Ok(pass);
            }
            let now = self.clock.now();
            // While the server refuses the sender, nothing goes out; when the pause is
            // over, one mail goes as a probe.
            let limit = match self.breaker.admit(now) {
                Admit::All => CLAIM,
                Admit::Probe => 1,
                Admit::Wait(_) => {
                    self.write_pause().await;
                    return Ok(pass);
                }
            };
            let lease = self.processor.held_lease()?;
            let mut tx = self.store().begin_write().await?;
            tx.hold_lease(&lease).await?;
            // Mails claimed by a process that stopped (or lost the lease) go again.
            let requeued = tx.requeue_claims(lease.holder(), &[]).await?;
            let claimed = tx.claim_mails(lease.holder(), to_ms(now), limit).await?;
            tx.commit().await?;
            if requeued > 0 {
                tracing::warn!(
                    mails = requeued,
                    "mails claimed by a process that stopped are queued again"
                );
            }
            if claimed.is_empty() {
                return Ok(pass);
            }
            let ids: Vec<i64> = claimed.iter().map(|r| r.id).collect();
            let delivered = self.deliver(claimed, &mut pass).await;
            self.write_pause().await;
            if let Err(e) = delivered {
                // Whatever has no outcome recorded goes again in a later pass.
                let mut tx = self.store().begin_write().await?;
                tx.hold_lease(&lease).await?;
                tx.requeue_claims(lease.holder(), &ids).await?;
                tx.commit().await?;
                return Err(e);
            }
            if (ids.len() as i64) < limit {
                return Ok(pass);
            }
        }
    }

    /// Writes the breaker's state to the database when it changed since the last write
    /// (for the stats of every daemon and `nurtured stats`).
    async fn write_pause(&self) {
        use std::sync::atomic::Ordering;
        let (version, pause) = self.breaker.snapshot();
        if self.pause_written.load(Ordering::Relaxed) == version {
            return;
        }
        match self.store().set_mail_pause(pause.as_ref()).await {
            Ok(()) => self.pause_written.store(version, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "cannot store the pause of delivery"),
        }
    }

    /// Puts due stream steps in the outbox.
    async fn queue_steps(&self) -> Result<usize, MailError> {
        let now = self.clock.now();
        let due: Vec<DueStep> = self.store().due_steps(to_ms(now), 5000).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let steps: Vec<StepMail> = due
            .into_iter()
            .map(|d| {
                let template = self
                    .plan
                    .stream(&d.stream)
                    .and_then(|s| s.steps.get(d.step as usize))
                    .map(|s| s.template.clone());
                StepMail { due: d, template }
            })
            .collect();
        let lease = self.processor.held_lease()?;
        let mut tx = self.store().begin_write().await?;
        tx.hold_lease(&lease).await?;
        let queued = tx.enqueue_steps(&steps, to_ms(now)).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// Decides, sends and records a claimed batch.
    async fn deliver(&self, claimed: Vec<OutboxRow>, pass: &mut Pass) -> Result<(), MailError> {
        let now = self.clock.now();
        let read_at = Instant::now();
        let mut lead_ids: Vec<i64> = claimed.iter().map(|r| r.lead_id).collect();
        lead_ids.sort_unstable();
        lead_ids.dedup();
        let mut leads = self.store().leads_by_ids(&lead_ids).await?;
        // An address erased before needs new consent (see `crate::privacy::erased`).
        let key = crate::privacy::AddressKey::for_mail(&self.config);
        let renew =
            crate::privacy::erased::without_new_consent(self.store(), &key, leads.values()).await?;
        for id in renew {
            if let Some(l) = leads.get_mut(&id) {
                if l.consent_email.granted {
                    // The claimed consent is withdrawn on the lead too, so rules plan no
                    // more marketing mail and a sign-up asks for the confirmation.
                    let email = l.email.as_str().to_string();
                    let is_for = |address: &str| address == email;
                    if let Err(e) = self
                        .processor
                        .set_consent(
                            id,
                            &is_for,
                            crate::process::manual::ConsentKind::Email,
                            false,
                            crate::privacy::erased::RENEW_SOURCE,
                        )
                        .await
                    {
                        tracing::warn!(lead = id, error = %e, "cannot withdraw the claimed consent");
                    }
                }
                l.consent_email.granted = false;
            }
        }
        let emails: Vec<String> = claimed.iter().map(|r| r.email.clone()).collect();
        let suppressed = self.store().suppressed_among(&emails).await?;
        let since = to_ms(now) - self.config.cap.per.as_millis() as i64;
        let recent = self.store().marketing_sent_since(&lead_ids, since).await?;
        let enrollment_ids: Vec<i64> = claimed.iter().filter_map(|r| r.enrollment_id).collect();
        let enrollments = self.store().enrollment_statuses(&enrollment_ids).await?;
        let seqs: Vec<i64> = claimed.iter().filter_map(|r| r.event_seq).collect();
        // What happened (for the templates) and when (trigger mails for stale events
        // are held back), in one read.
        let (events, event_times): (HashMap<i64, (String, Value)>, HashMap<i64, i64>) = self
            .store()
            .events_by_seq(&seqs)
            .await?
            .into_iter()
            .map(|(seq, (name, props, at))| ((seq, (name, props)), (seq, at)))
            .unzip();
        let data = BatchData {
            event_times,
            read_at,
            leads,
            suppressed,
            recent,
            enrollments,
            events,
        };

        let (tx, mut rx) = mpsc::unbounded_channel::<ToRecord>();
        // Group commit: the outcomes that arrived while the previous commit ran go into
        // one transaction; each sender waits for the commit of its outcome before it
        // takes its next mail, so no more than `mail.connections` accepted mails are
        // ever unrecorded.
        // If outcomes cannot be recorded (the database fails, the lease is lost),
        // nothing more is sent: the rest is queued again by the caller.
        let stop = std::sync::atomic::AtomicBool::new(false);
        // Permits for mails that may be accepted and not yet recorded.
        let gate = Arc::new(Semaphore::new(self.config.connections));
        let record = async {
            let mut buffer = Vec::new();
            let mut failed = None;
            while let Some(first) = rx.recv().await {
                buffer.push(first);
                while let Ok(more) = rx.try_recv() {
                    buffer.push(more);
                }
                if failed.is_some() {
                    buffer.clear(); // drain, so that the senders finish
                    continue;
                }
                match self.record_with_retries(&buffer, pass).await {
                    Ok(()) => {
                        for r in buffer.drain(..) {
                            if let Some(done) = r.recorded {
                                let _ = done.send(());
                            }
                        }
                    }
                    Err(e) => {
                        // Sends waiting at the gate stop before the server has the mail.
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        gate.close();
                        failed = Some(e);
                        buffer.clear();
                    }
                }
            }
            failed.map_or(Ok(()), Err)
        };
        let send = async {
            self.send_all(claimed, &data, now, tx, &stop, &gate).await;
        };
        let ((), recorded) = tokio::join!(send, record);
        recorded
    }

    /// Records outcomes, trying again a few times when the database is busy.
    async fn record_with_retries(
        &self,
        buffer: &[ToRecord],
        pass: &mut Pass,
    ) -> Result<(), MailError> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..3 {
            match self.record(buffer, pass).await {
                Ok(()) => return Ok(()),
                Err(MailError::Store(StoreError::LeaseLost)) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot record mail outcomes yet");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
            }
        }
        self.record(buffer, pass).await
    }

    /// Decides for each claimed mail and sends those that may go, at most
    /// `mail.connections` at once; every outcome goes to `tx`.
    async fn send_all(
        &self,
        claimed: Vec<OutboxRow>,
        data: &BatchData,
        now: DateTime<Utc>,
        tx: mpsc::UnboundedSender<ToRecord>,
        stop: &std::sync::atomic::AtomicBool,
        gate: &Arc<Semaphore>,
    ) {
        let BatchData {
            read_at: _,
            leads,
            suppressed,
            recent,
            enrollments,
            events,
            event_times,
        } = data;
        let mut recent = recent.clone();
        for row in claimed {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let lead = leads.get(&row.lead_id);
            let topic = self.plan.topic_of(&row.source, &row.template);
            let facts = Facts {
                class: row.class(),
                stream_step: row.kind == "stream",
                stream_active: row
                    .enrollment_id
                    .and_then(|id| enrollments.get(&id))
                    .is_some_and(|s| s == "active"),
                lead,
                suppressed: suppressed.get(&row.email).map(String::as_str),
                recent_marketing: recent.get(&row.lead_id).copied(),
                topic: (row.class() == MailClass::Marketing).then_some(topic),
            };
            // A trigger mail answers what a lead just did: for an event that was already
            // older than `mail.max_event_age` when it was processed, none goes out.
            // An event deleted since (by retention) is older than any sensible age.
            let stale = row.kind == "trigger"
                && row.event_seq.is_some_and(|s| {
                    event_times.get(&s).is_none_or(|at| {
                        row.created_at - at > self.config.max_event_age.as_millis() as i64
                    })
                });
            let decision = match (
                if stale {
                    Decision::Suppress("stale_event")
                } else {
                    policy::decide(&self.config, self.time_zone, &facts, now)
                },
                self.breaker.paused_until(self.clock.now()),
            ) {
                // The server refused the sender while this batch was under way: the
                // rest waits for the probe, without using up a try.
                (Decision::Send, Some(until)) => {
                    let _ = tx.send(ToRecord {
                        outcome: paused(&row, until, &self.breaker),
                        answered: None,
                        recorded: None,
                    });
                    continue;
                }
                (decision, _) => decision,
            };
            match decision {
                Decision::Send => {
                    let lead = lead.expect("decide sends only to known leads").clone();
                    if row.class() == MailClass::Marketing {
                        let e = recent.entry(row.lead_id).or_insert((0, to_ms(now)));
                        e.0 += 1;
                    }
                    let event = row.event_seq.and_then(|s| events.get(&s)).cloned();
                    let permit = self
                        .sending
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed");
                    let job = SendJob {
                        gate: gate.clone(),
                        read_at: data.read_at,
                        mailer: self.parts(),
                        row,
                        lead,
                        event,
                        now,
                    };
                    let tx = tx.clone();
                    let (plan, config, row) =
                        (self.plan.clone(), self.config.clone(), job.row.clone());
                    tokio::spawn(async move {
                        // A send that panics still gets an outcome: a failed try.
                        let (outcome, accepted) = match tokio::spawn(job.run()).await {
                            Ok(sent) => sent,
                            Err(e) => {
                                let error = crash_message(e);
                                tracing::error!(mail = row.id, error, "sending a mail crashed");
                                (failed_try(&config, &plan, &row, now, &error), None)
                            }
                        };
                        // The server answered: the connection is free for the next mail.
                        drop(permit);
                        let (recorded, committed) = oneshot::channel();
                        let _ = tx.send(ToRecord {
                            outcome,
                            answered: Some(Instant::now()),
                            recorded: Some(recorded),
                        });
                        // The gate's permit goes back only once this outcome is
                        // committed.
                        let _ = committed.await;
                        drop(accepted);
                    });
                }
                decision => {
                    let outcome = not_sent(&self.plan, &row, decision, now).expect("not a send");
                    let _ = tx.send(ToRecord {
                        outcome,
                        answered: None,
                        recorded: None,
                    });
                }
            }
        }
    }

    async fn record(&self, outcomes: &[ToRecord], pass: &mut Pass) -> Result<(), MailError> {
        let now = to_ms(self.clock.now());
        let mut done = Vec::with_capacity(outcomes.len());
        let mut steps = Vec::new();
        let mut suppress = Vec::new();
        let oldest = outcomes.iter().filter_map(|r| r.answered).min();
        for ToRecord { outcome: o, .. } in outcomes {
            done.push(o.finish.clone());
            steps.extend(o.step);
            suppress.extend(o.suppress.clone());
        }
        let lease = self.processor.held_lease()?;
        let waited = Instant::now();
        let mut tx = self.store().begin_write().await?;
        let held = Instant::now();
        tx.hold_lease(&lease).await?;
        tx.finish_mails(&done, &steps, &suppress, now).await?;
        tx.commit().await?;
        let held_ms = held.elapsed().as_secs_f64() * 1e3;
        for f in &done {
            match f {
                Finish::Sent { .. } => pass.sent += 1,
                Finish::Later { .. } => pass.later += 1,
                Finish::Failed { .. } => pass.failed += 1,
                Finish::Suppressed { .. } => pass.suppressed += 1,
            }
        }
        if let Some(at) = oldest {
            // How long a mail the server had answered waited to be recorded: the window
            // in which a crash would send it again.
            tracing::debug!(
                mails = done.len(),
                unrecorded_ms = at.elapsed().as_secs_f64() * 1e3,
                wait_ms = (held - waited).as_secs_f64() * 1e3,
                held_ms,
                "mail outcomes recorded"
            );
        }
        Ok(())
    }

    fn parts(&self) -> Shared {
        Shared {
            store: self.store().clone(),
            time_zone: self.time_zone,
            config: self.config.clone(),
            plan: self.plan.clone(),
            templates: self.templates.clone(),
            transport: self.transport.clone(),
            dkim: self.dkim.clone(),
            signer: self.signer.clone(),
            send_hook: self.send_hook.clone(),
            breaker: self.breaker.clone(),
            clock: self.clock.clone(),
            send_duration: self.processor.metrics.smtp_send_duration.clone(),
        }
    }
}

/// The outcome of a mail held back by a pause of delivery: queued again for the end
/// of the pause, its tries unchanged.
fn paused(row: &OutboxRow, until: DateTime<Utc>, breaker: &Breaker) -> Outcome {
    let answer = breaker.snapshot().1.map(|p| p.answer).unwrap_or_default();
    Outcome {
        finish: Finish::Later {
            id: row.id,
            until: to_ms(until),
            reason: format!("delivery paused, the SMTP server refuses the sender: {answer}"),
            retry: false,
        },
        step: None,
        suppress: None,
    }
}

/// What deciding for a claimed batch needs, read before sending.
struct BatchData {
    read_at: Instant,
    leads: HashMap<i64, Lead>,
    suppressed: HashMap<String, String>,
    /// Marketing mails per lead within the cap period: (count, oldest).
    recent: HashMap<i64, (i64, i64)>,
    enrollments: HashMap<i64, String>,
    events: HashMap<i64, (String, Value)>,
    /// When the events of trigger mails happened (ms).
    event_times: HashMap<i64, i64>,
}

/// What a send task needs from the mailer.
struct Shared {
    store: Store,
    time_zone: Tz,
    config: Arc<MailConfig>,
    plan: Arc<StreamPlan>,
    templates: Arc<Templates>,
    transport: Arc<Transport>,
    dkim: Option<Arc<DkimSigner>>,
    signer: Arc<Signer>,
    send_hook: Arc<OnceLock<SendHook>>,
    breaker: Arc<Breaker>,
    clock: SharedClock,
    /// Records how long each SMTP send took.
    send_duration: metrics::Histogram,
}

/// One mail to render and send.
struct SendJob {
    mailer: Shared,
    row: OutboxRow,
    lead: Lead,
    event: Option<(String, Value)>,
    now: DateTime<Utc>,
    /// When the lead data of the batch was read.
    read_at: Instant,
    /// Passed right before the server can accept the mail (see the module doc).
    gate: Arc<Semaphore>,
}

impl SendJob {
    /// Sends the mail; returns its outcome and, when the server may have accepted it,
    /// the gate's permit, to be held until the outcome is recorded.
    async fn run(mut self) -> (Outcome, Option<OwnedSemaphorePermit>) {
        let mut accepted = None;
        let outcome = self.attempt(&mut accepted).await;
        (outcome, accepted)
    }

    async fn attempt(&mut self, accepted: &mut Option<OwnedSemaphorePermit>) -> Outcome {
        // Internal mail ignores the lead's consent and quarantine: nothing to check again.
        let internal = self.row.class() == MailClass::Internal;
        if !internal
            && self.read_at.elapsed() > FRESH
            && let Some(held) = self.check_again().await
        {
            return held;
        }
        let m = &self.mailer;
        let row = &self.row;
        let marketing = row.class() == MailClass::Marketing;
        let links = Links {
            signer: &m.signer,
            base: &m.config.public_url,
            lead: self.lead.id,
            email: self.lead.email.as_str(),
            mail: row.id,
            queued: from_ms(row.created_at),
            topic: marketing.then(|| m.plan.topic_of(&row.source, &row.template)),
        };
        let context = template_context(&self.lead, row, self.event.as_ref(), &links, &m.config);
        let finished = |finish: Finish| Outcome {
            step: step_done(&m.plan, row, false, self.now),
            finish,
            suppress: None,
        };
        // Internal mail is read by colleagues: in the default locale.
        let locale = if internal {
            None
        } else {
            self.lead.locale.as_deref()
        };
        let rendered = match m.templates.render(&row.template, locale, &context) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(mail = row.id, error = %e, "mail not sent: the template does not render");
                return finished(Finish::Failed {
                    id: row.id,
                    reason: format!("template: {e}"),
                });
            }
        };
        let html = if marketing && m.config.tracking && self.lead.consent_tracking.granted {
            links.track(&rendered.html)
        } else {
            rendered.html.clone()
        };
        let mut unsubscribe = Vec::new();
        if marketing {
            unsubscribe.push(links.unsubscribe());
            if let Some(to) = &m.config.unsubscribe_mailto {
                unsubscribe.push(format!(
                    "mailto:{}?subject=unsubscribe",
                    crate::bounces::verp::mailto(to, &m.config.secret, row.id)
                ));
            }
        }
        let name = if internal {
            String::new()
        } else {
            self.lead.name()
        };
        let built = message::build(
            Parts {
                outbox_id: row.id,
                created_at: row.created_at,
                secret: &m.config.secret,
                from: &m.config.from,
                reply_to: m.config.reply_to.as_ref(),
                to: row.email.as_str(),
                to_name: &name,
                subject: &rendered.subject,
                text: rendered.text.clone(),
                html: html.clone(),
                unsubscribe,
                return_path: m.config.bounce_address.as_ref().map(|b| {
                    crate::bounces::verp::address(
                        b,
                        &m.config.secret,
                        crate::bounces::verp::Purpose::Bounce,
                        row.id,
                    )
                }),
            },
            m.dkim.as_deref(),
        );
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                return finished(Finish::Failed {
                    id: row.id,
                    reason: e.to_string(),
                });
            }
        };
        let message_id = built.message_id.clone();
        let headers = serde_json::to_string(&built.headers).unwrap_or_default();
        if let Some(hook) = m.send_hook.get() {
            hook(row);
        }
        let started = Instant::now();
        let (sent, permit) = m
            .transport
            .send(built.message, m.config.timeout, &self.gate)
            .await;
        // A send held back while delivery is paused reached no server: not timed.
        if !matches!(sent, Err(SendError::Paused(_))) {
            m.send_duration.record(started.elapsed());
        }
        *accepted = permit;
        // The server answered about this mail, not about the sender: delivery runs.
        if !matches!(sent, Err(SendError::Paused(_)))
            && let Some(ended) = m.breaker.accepted()
        {
            tracing::info!(
                paused_since = %ended.since,
                refused_probes = ended.refused_probes,
                "delivery resumes: the SMTP server takes mail again"
            );
        }
        match sent {
            Ok(()) => finished(Finish::Sent {
                id: row.id,
                message_id,
                content: MailContent {
                    recipient: row.email.clone(),
                    subject: rendered.subject,
                    text_body: rendered.text,
                    html_body: html,
                    headers,
                },
            }),
            Err(SendError::Paused(answer)) => {
                let (tripped, until) = m.breaker.refused(m.clock.now(), &answer);
                match tripped {
                    Tripped::Opened(pause) => tracing::error!(
                        mail = row.id,
                        answer = %answer,
                        pause = ?pause,
                        "delivery paused: the SMTP server refuses the sender; no address is \
                         suppressed and mails keep their tries"
                    ),
                    Tripped::Longer(pause) => tracing::warn!(
                        mail = row.id,
                        answer = %answer,
                        pause = ?pause,
                        "delivery stays paused: the SMTP server still refuses the sender"
                    ),
                    Tripped::Already => {}
                }
                paused(row, until, &m.breaker)
            }
            Err(SendError::Retry(error)) => failed_try(&m.config, &m.plan, row, self.now, &error),
            Err(SendError::Final { message, rejected }) => {
                tracing::error!(mail = row.id, error = %message, "mail refused by the server");
                let mut o = finished(Finish::Failed {
                    id: row.id,
                    reason: message.clone(),
                });
                // A colleague's address that bounced is not put on the leads' list.
                if rejected && !internal {
                    o.suppress = Some((row.email.clone(), "rejected".to_string(), message));
                }
                o
            }
        }
    }
}

impl SendJob {
    /// Looks at the lead once more just before sending (when the batch's data is more
    /// than [`FRESH`] old): an unsubscribe, a move into quarantine or a goal reached
    /// since the batch was read stops the mail here.
    async fn check_again(&mut self) -> Option<Outcome> {
        let m = &self.mailer;
        let row = &self.row;
        let gate = match m.store.send_gate(row.lead_id, row.enrollment_id).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return not_sent(&m.plan, row, Decision::Suppress("lead_deleted"), self.now);
            }
            Err(e) => {
                let later = Decision::Later {
                    until: self.now + chrono::Duration::seconds(30),
                    reason: "the database did not answer",
                };
                tracing::warn!(mail = row.id, error = %e, "cannot check the lead before sending");
                return not_sent(&m.plan, row, later, self.now);
            }
        };
        self.lead.consent_email.granted = gate.consent_email;
        if gate.consent_email {
            let key = crate::privacy::AddressKey::for_mail(&m.config);
            match crate::privacy::erased::without_new_consent(&m.store, &key, [&self.lead]).await {
                Ok(renew) if !renew.is_empty() => self.lead.consent_email.granted = false,
                Ok(_) => {}
                Err(e) => {
                    let later = Decision::Later {
                        until: self.now + chrono::Duration::seconds(30),
                        reason: "the database did not answer",
                    };
                    tracing::warn!(mail = row.id, error = %e, "cannot check the lead before sending");
                    return not_sent(&m.plan, row, later, self.now);
                }
            }
        }
        self.lead.stage = gate.stage;
        if let Ok(left) = serde_json::from_str(&gate.topics_left) {
            self.lead.topics_left = left;
        }
        let topic = m.plan.topic_of(&row.source, &row.template);
        let facts = Facts {
            class: row.class(),
            stream_step: row.kind == "stream",
            stream_active: gate.enrollment.as_deref() == Some("active"),
            lead: Some(&self.lead),
            suppressed: gate.suppressed.as_deref(),
            // The cap was counted when the batch was decided.
            recent_marketing: None,
            topic: (row.class() == MailClass::Marketing).then_some(topic),
        };
        let decision = policy::decide(&m.config, m.time_zone, &facts, self.now);
        not_sent(&m.plan, row, decision, self.now)
    }
}

/// The wait before try `attempts + 1`: `base`, doubled each time, at most an hour,
/// spread by up to a fifth either way so many mails do not retry at one instant.
pub(crate) fn backoff(base: Duration, attempts: i64, id: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    let wait = base
        .saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF);
    // A cheap, well-spread number in 0..1000 from the mail and attempt.
    let spread = (id as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((attempts as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        >> 54;
    let factor = 0.8 + 0.4 * (spread as f64 / 1024.0);
    wait.mul_f64(factor)
}

/// The outcome of a try that did not work but may work later (a temporary refusal, a
/// connection that failed, a crashed send): tried again after [`backoff`], or failed
/// once the tries span `retry_max_age`. The age counts from the first failed try, not
/// from queuing (a mail may have waited for the cap or the send window before).
fn failed_try(
    config: &MailConfig,
    plan: &StreamPlan,
    row: &OutboxRow,
    now: DateTime<Utc>,
    error: &str,
) -> Outcome {
    let tries = row.tries + 1;
    let age = to_ms(now) - row.first_try_at.unwrap_or(to_ms(now));
    if age >= config.retry_max_age.as_millis() as i64 {
        tracing::error!(
            mail = row.id,
            error,
            tries,
            "mail failed: every try failed until the retry age"
        );
        return Outcome {
            step: step_done(plan, row, false, now),
            finish: Finish::Failed {
                id: row.id,
                reason: format!("gave up after {tries} tries: {error}"),
            },
            suppress: None,
        };
    }
    let wait = backoff(config.retry_base, tries, row.id);
    tracing::warn!(mail = row.id, error, retry_in = ?wait, "mail not sent yet; trying again later");
    Outcome {
        finish: Finish::Later {
            id: row.id,
            until: to_ms(now) + wait.as_millis() as i64,
            reason: format!("try {tries} failed: {error}"),
            retry: true,
        },
        step: None,
        suppress: None,
    }
}

/// What a crashed sending task leaves as the reason: the panic's message, on one line
/// and at most 300 characters.
fn crash_message(e: tokio::task::JoinError) -> String {
    let what = if e.is_panic() {
        let payload = e.into_panic();
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    } else {
        "the task was cancelled".to_string()
    };
    format!("sending crashed: {}", cut(&one_line(&what), 300))
}

/// The outcome of a mail the policy does not let go now (`None` for a send).
fn not_sent(
    plan: &StreamPlan,
    row: &OutboxRow,
    decision: Decision,
    now: DateTime<Utc>,
) -> Option<Outcome> {
    match decision {
        Decision::Send => None,
        Decision::Suppress(reason) => Some(Outcome {
            // Held back for quarantine or for consent not (yet) given: the stream
            // waits and sends this step when the lead may receive it.
            step: step_done(
                plan,
                row,
                matches!(reason, "quarantine" | "no_consent"),
                now,
            ),
            finish: Finish::Suppressed {
                id: row.id,
                reason: reason.to_string(),
            },
            suppress: None,
        }),
        Decision::Later { until, reason } => Some(Outcome {
            finish: Finish::Later {
                id: row.id,
                until: to_ms(until),
                reason: reason.to_string(),
                retry: false,
            },
            step: None,
            suppress: None,
        }),
    }
}

/// For a stream mail that is done with (sent, failed or suppressed): the next step, or,
/// when it was `held` (quarantine, no consent yet), the same step once the stream
/// resumes.
fn step_done(
    plan: &StreamPlan,
    row: &OutboxRow,
    held: bool,
    now: DateTime<Utc>,
) -> Option<StepDone> {
    let (enrollment_id, step) = (row.enrollment_id?, row.step?);
    if held {
        return Some(StepDone::Repeat { enrollment_id });
    }
    let stream = row.source.strip_prefix("stream:")?;
    let next_step = step + 1;
    let next_due = plan
        .stream(stream)
        .and_then(|s| s.steps.get(next_step as usize))
        .map(|s| to_ms(now) + s.after.as_millis() as i64);
    Some(StepDone::Advance {
        enrollment_id,
        next_step,
        next_due,
    })
}

/// The variables a template sees (docs/mail.md lists them; [`super::templates::sample_context`]
/// shows them filled in).
fn template_context(
    lead: &Lead,
    row: &OutboxRow,
    event: Option<&(String, Value)>,
    links: &Links,
    config: &MailConfig,
) -> Value {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let data: Value = serde_json::from_str(&row.data).unwrap_or_else(|_| json!({}));
    let (event_name, properties) = event.cloned().unwrap_or_else(|| (String::new(), json!({})));
    let stream = row
        .source
        .strip_prefix("stream:")
        .unwrap_or_default()
        .to_string();
    let preferences = links.preferences();
    json!({
        "lead": {
            "id": lead.id,
            "email": lead.email.as_str(),
            "first_name": text(&lead.first_name),
            "last_name": text(&lead.last_name),
            "name": lead.name(),
            "company": text(&lead.company),
            "title": text(&lead.title),
            "industry": text(&lead.industry),
            "country": text(&lead.country),
            "locale": text(&lead.locale),
            "stage": lead.stage,
            "fit": lead.fit,
            "interest": lead.interest,
            "tags": lead.tags,
            "attributes": lead.attributes,
        },
        "event": {"name": event_name, "properties": properties},
        "data": data,
        "stream": {"name": stream, "step": row.step.map_or(0, |s| s + 1)},
        "mail": {
            "id": row.id,
            "template": row.template,
            "marketing": row.class() == MailClass::Marketing,
        },
        "topic": links.topic.unwrap_or_default(),
        "preferences_url": preferences,
        "links": {
            "unsubscribe": links.unsubscribe(),
            "preferences": preferences,
            // Only the opt-in mail carries a confirmation link.
            "confirm": if row.kind == "optin" { links.confirm() } else { String::new() },
        },
        "sender": config.sender,
        "now": from_ms(row.created_at).to_rfc3339(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_spreads_and_stops_at_an_hour() {
        let base = Duration::from_secs(30);
        let first = backoff(base, 1, 7);
        assert!(
            first >= Duration::from_secs(24) && first <= Duration::from_secs(36),
            "{first:?}"
        );
        let third = backoff(base, 3, 7);
        assert!(
            third >= Duration::from_secs(96) && third <= Duration::from_secs(144),
            "{third:?}"
        );
        assert!(backoff(base, 30, 7) <= Duration::from_secs(4320));
        assert_ne!(backoff(base, 2, 1), backoff(base, 2, 2), "spread by mail");
    }
}
