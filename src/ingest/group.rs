//! Group commit for intake: concurrent requests share one write transaction. Each
//! request is answered after the commit that holds its events, so a 200 still means
//! stored durably, and single-event intake grows with the number of connections
//! instead of queueing one commit per request.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::{AcceptError, Accepted, Item, NewLeads, Request, accept_all_stored};
use crate::clock::SharedClock;
use crate::mail::StreamPlan;
use crate::process::feed::Feed;
use crate::store::Store;

/// Items written in one transaction at most (a request is never split).
const MAX_ITEMS: usize = 10_000;
/// Requests waiting for the writer at most; more wait in their handlers.
const QUEUE: usize = 4_096;

struct Submission {
    items: Vec<Item>,
    batch: bool,
    reply: oneshot::Sender<Result<Accepted, AcceptError>>,
}

/// Hands checked requests to the intake writer.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Submission>,
}

/// What the intake writer needs.
pub struct Writer {
    pub store: Store,
    /// Where new leads start.
    pub stage: String,
    pub plan: Arc<StreamPlan>,
    pub clock: SharedClock,
    /// Woken when events were stored.
    pub wake: Arc<Notify>,
    /// Where the stored events go for processing in this process, if anywhere.
    pub feed: Option<Arc<Feed>>,
    /// Counts the events stored (`nurtured_events_received_total`).
    pub received: metrics::Counter,
}

fn batch_paths(i: usize) -> (Option<usize>, String) {
    (Some(i), format!("batch[{i}]"))
}

fn single_paths(_: usize) -> (Option<usize>, String) {
    (None, String::new())
}

impl Intake {
    /// Starts the writer; it ends when every [`Intake`] handle is gone.
    pub fn start(w: Writer) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, tokio::spawn(run(w, rx)))
    }

    /// Stores a request's items (with `batch[i]` paths in errors when `batch`), and
    /// answers once they are committed.
    pub async fn submit(&self, items: Vec<Item>, batch: bool) -> Result<Accepted, AcceptError> {
        let (reply, answer) = oneshot::channel();
        let gone = || AcceptError::Failed("the daemon is stopping; send again".into());
        self.tx
            .send(Submission {
                items,
                batch,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(w: Writer, mut rx: mpsc::Receiver<Submission>) {
    while let Some(first) = rx.recv().await {
        let mut items = first.items.len();
        let mut group = vec![first];
        while items < MAX_ITEMS {
            match rx.try_recv() {
                Ok(s) => {
                    items += s.items.len();
                    group.push(s);
                }
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(group.len());
        let requests: Vec<Request<'static>> = group
            .into_iter()
            .map(|s| {
                replies.push(s.reply);
                Request {
                    items: s.items,
                    paths: if s.batch { &batch_paths } else { &single_paths },
                }
            })
            .collect();
        let new_leads = NewLeads {
            stage: &w.stage,
            streams: Some(&w.plan),
        };
        let (results, stored) = accept_all_stored(
            &w.store,
            requests,
            &new_leads,
            w.clock.now(),
            w.feed.is_some(),
        )
        .await;
        if let Some(feed) = &w.feed {
            feed.push(stored);
        }
        w.received.increment(
            results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|a| a.accepted as u64)
                .sum(),
        );
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|a| a.accepted > 0))
        {
            w.wake.notify_one();
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}
