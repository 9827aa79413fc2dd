//! Events handed from intake straight to processing, so the daemon does not read back
//! what it has just written. Intake passes the events of each commit here, in commit
//! order; the pipeline takes them while it runs ([`Feed::open`]).
//!
//! The store stays the truth: a commit's events carry consecutive sequence numbers, so
//! the pipeline takes a commit from the feed only when it starts right after the last
//! event it has seen. Anything else (a feed that ran over, events stored by another
//! process, the backlog found at start) shows as a gap and is read from the store.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::store::PendingEvent;

/// Events the feed holds at most; more are left to be read from the store.
const CAPACITY: usize = 20_000;

#[derive(Default)]
struct State {
    /// Open while the pipeline runs.
    open: bool,
    /// The events of each commit, oldest first.
    commits: VecDeque<Vec<PendingEvent>>,
    held: usize,
}

/// Committed events on their way to processing.
#[derive(Default)]
pub struct Feed {
    state: Mutex<State>,
}

impl Feed {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the events of one commit (ordered by sequence number); dropped when the
    /// pipeline does not run or the feed is full (they are read from the store then).
    pub fn push(&self, events: Vec<PendingEvent>) {
        if events.is_empty() {
            return;
        }
        let mut s = self.state();
        if !s.open || s.held + events.len() > CAPACITY {
            return;
        }
        s.held += events.len();
        s.commits.push_back(events);
    }

    /// Starts taking events (the pipeline starts).
    pub fn open(&self) {
        let mut s = self.state();
        s.open = true;
        s.commits.clear();
        s.held = 0;
    }

    /// Stops taking events and forgets what it holds (the pipeline stops).
    pub fn close(&self) {
        let mut s = self.state();
        s.open = false;
        s.commits.clear();
        s.held = 0;
    }

    /// Events held now.
    pub fn held(&self) -> usize {
        self.state().held
    }

    /// The commits that follow `cursor` without a gap, up to about `room` events (a
    /// commit is never split), and the new cursor. `None` when there is a gap before
    /// the next commit: the caller reads from the store. Commits at or before the
    /// cursor (read from the store meanwhile) are dropped.
    pub fn take(&self, cursor: i64, room: usize) -> Option<(Vec<PendingEvent>, i64)> {
        let mut s = self.state();
        let mut cursor = cursor;
        let mut out: Vec<PendingEvent> = Vec::new();
        while let Some(first) = s.commits.front() {
            let (Some(low), Some(high)) = (first.first(), first.last()) else {
                s.commits.pop_front();
                continue;
            };
            let (low, high) = (low.seq, high.seq);
            if high <= cursor {
                let n = first.len();
                s.commits.pop_front();
                s.held -= n;
                continue;
            }
            if low != cursor + 1 {
                return if out.is_empty() {
                    None
                } else {
                    Some((out, cursor))
                };
            }
            if !out.is_empty() && out.len() + first.len() > room {
                break;
            }
            let commit = s.commits.pop_front().unwrap_or_default();
            s.held -= commit.len();
            cursor = high;
            out.extend(commit);
        }
        Some((out, cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(seqs: std::ops::RangeInclusive<i64>) -> Vec<PendingEvent> {
        seqs.map(|seq| PendingEvent {
            seq,
            message_id: format!("m-{seq}"),
            lead_id: 1,
            kind: "track".into(),
            name: "x".into(),
            properties: "{}".into(),
            traits: None,
            context: None,
            occurred_at: 0,
            attempts: 0,
            history: false,
            retry_rules: None,
        })
        .collect()
    }

    fn seqs(e: &[PendingEvent]) -> Vec<i64> {
        e.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn takes_consecutive_commits_and_stops_at_a_gap() {
        let feed = Feed::default();
        feed.open();
        feed.push(events(1..=3));
        feed.push(events(4..=5));
        feed.push(events(8..=9)); // 6 and 7 came from elsewhere
        let (got, cursor) = feed.take(0, 100).unwrap();
        assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5]);
        assert_eq!(cursor, 5);
        assert!(
            feed.take(cursor, 100).is_none(),
            "the gap is read from the store"
        );
        // The store read brought 6..=9; the feed drops what is behind the cursor.
        let (got, cursor) = feed.take(9, 100).unwrap();
        assert!(got.is_empty());
        assert_eq!(cursor, 9);
        assert_eq!(feed.held(), 0);
    }

    #[test]
    fn a_gap_at_start_and_room_are_respected() {
        let feed = Feed::default();
        feed.open();
        feed.push(events(11..=12));
        assert!(feed.take(7, 100).is_none());
        feed.push(events(13..=15));
        let (got, cursor) = feed.take(10, 3).unwrap();
        assert_eq!(seqs(&got), vec![11, 12], "a commit is not split");
        assert_eq!(cursor, 12);
        let (got, _) = feed.take(cursor, 3).unwrap();
        assert_eq!(seqs(&got), vec![13, 14, 15]);
    }

    #[test]
    fn drops_while_closed_or_full() {
        let feed = Feed::default();
        feed.push(events(1..=2));
        assert_eq!(feed.held(), 0, "closed: nothing is held");
        feed.open();
        feed.push(events(1..=(CAPACITY as i64)));
        feed.push(events((CAPACITY as i64 + 1)..=(CAPACITY as i64 + 1)));
        assert_eq!(feed.held(), CAPACITY);
        feed.close();
        assert_eq!(feed.held(), 0);
    }
}
