//! Events taken in as history (`nurtured ingest --history`, `"history": true` on
//! `/v1/batch` and `/v1/import`): the rules run, points, tags, attributes and stage
//! moves are kept, but what would reach a person now is dropped.
//!
//! - mails the rules ask for (trigger mails, opt-in confirmations): dropped;
//! - streams: a lead does not join (or resume) a stream for a past event; leaving
//!   one (a goal reached, a stage left) still happens;
//! - handoffs to sales: none. A salesperson handed a lead that turned MQL a month ago,
//!   with its deadline already blown and no notification, gets a stale lead and an
//!   escalation for nothing; an imported MQL waits in its stage until a live event or
//!   a stage change through the API or the command line hands it over. An open handoff
//!   still ends when a past event moves the lead on.
//!
//! Webhooks and notifications follow handoffs, so none go out either.

use crate::domain::{Changes, StreamChange};

/// Drops from `changes` what an event taken in as history must not cause.
pub fn strip(changes: &mut Changes) {
    changes.mails.clear();
    changes
        .streams
        .retain(|c| !matches!(c, StreamChange::Enroll { .. }));
    changes.handoffs.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_stream_exits_but_joins_none() {
        let mut c = Changes::default();
        c.streams.push(StreamChange::Enroll {
            stream: "new-leads".into(),
        });
        c.streams.push(StreamChange::Exit {
            stream: None,
            reason: "goal reached".into(),
        });
        strip(&mut c);
        assert_eq!(c.streams.len(), 1);
        assert!(matches!(c.streams[0], StreamChange::Exit { .. }));
    }
}
