//! The history to replay, merged in time order: events in arrival order (their time
//! is when they were received), and between them the stage moves made through the API,
//! the handoff answers, the scheduled job runs and the consent changes no event made,
//! each at its recorded time. A step at the same millisecond as an event comes after
//! it (the event was taken in first).

use std::collections::VecDeque;

use crate::store::PendingEvent;
use crate::store::replay::{ReplayConsent, ReplayEvent, ReplayJobRun, ReplayStageMove};

/// One step of the replay.
#[derive(Debug, Clone)]
pub enum Step {
    Event(Box<PendingEvent>),
    /// A move through the API (a salesperson, the CRM).
    Stage {
        stage: String,
        reason: String,
        user: String,
    },
    /// Sales answered the lead's handoff.
    Answer {
        accept: bool,
        stage: String,
        reason: String,
        user: String,
    },
    /// Mail consent given or withdrawn without an event.
    Consent {
        granted: bool,
        source: String,
    },
    /// A scheduled job ran (every lead): the index of its schedule in the config.
    Job {
        schedule: usize,
        previous: Option<i64>,
    },
}

/// A step with its time (epoch ms) and lead (0 for a job).
#[derive(Debug, Clone)]
pub struct Item {
    pub at: i64,
    pub lead_id: i64,
    pub step: Step,
}

impl Item {
    pub fn event(e: ReplayEvent) -> Self {
        Item {
            at: e.received_at,
            lead_id: e.lead_id,
            step: Step::Event(Box::new(PendingEvent {
                seq: e.seq,
                message_id: e.message_id,
                lead_id: e.lead_id,
                kind: e.kind,
                name: e.name,
                properties: e.properties,
                traits: e.traits,
                context: e.context,
                occurred_at: e.occurred_at,
                attempts: 0,
                history: e.history,
                retry_rules: None,
            })),
        }
    }
}

/// Whether an API stage move is a handoff answer (see `crate::handoff::answer`):
/// `accepted by X (handoff N)` or `rejected by X (handoff N): reason`.
fn answer_of(reason: &str) -> Option<bool> {
    if !reason.contains("(handoff ") {
        return None;
    }
    if reason.starts_with("accepted by ") {
        Some(true)
    } else if reason.starts_with("rejected by ") {
        Some(false)
    } else {
        None
    }
}

/// The steps other than events, in time order.
pub fn side_steps(
    moves: Vec<ReplayStageMove>,
    runs: Vec<ReplayJobRun>,
    consents: Vec<ReplayConsent>,
    schedule_index: &dyn Fn(&str) -> Option<usize>,
) -> VecDeque<Item> {
    // (at, kind, id) orders steps of the same time: moves, then consents, then jobs.
    let mut keyed: Vec<((i64, u8, i64), Item)> = Vec::new();
    for m in moves {
        let user = m
            .source
            .strip_prefix("api:")
            .unwrap_or(&m.source)
            .to_string();
        let step = match answer_of(&m.reason) {
            Some(accept) => Step::Answer {
                accept,
                stage: m.to_stage,
                reason: m.reason,
                user,
            },
            None => Step::Stage {
                stage: m.to_stage,
                reason: m.reason,
                user,
            },
        };
        keyed.push((
            (m.at, 0, m.id),
            Item {
                at: m.at,
                lead_id: m.lead_id,
                step,
            },
        ));
    }
    for c in consents {
        keyed.push((
            (c.at, 1, c.id),
            Item {
                at: c.at,
                lead_id: c.lead_id,
                step: Step::Consent {
                    granted: c.granted,
                    source: c.source.unwrap_or_default(),
                },
            },
        ));
    }
    let mut previous: std::collections::HashMap<usize, i64> = Default::default();
    let mut runs = runs;
    runs.sort_by_key(|r| (r.due_at, r.id));
    for r in runs {
        let Some(schedule) = schedule_index(&r.schedule) else {
            continue;
        };
        let before = previous.insert(schedule, r.due_at);
        keyed.push((
            (r.due_at, 2, r.id),
            Item {
                at: r.due_at,
                lead_id: 0,
                step: Step::Job {
                    schedule,
                    previous: before,
                },
            },
        ));
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Merges a page of events (in arrival order) with the side steps due before each:
/// a side step goes before the first event received after it.
pub fn merge(events: Vec<ReplayEvent>, side: &mut VecDeque<Item>, out: &mut Vec<Item>) {
    for e in events {
        while side.front().is_some_and(|s| s.at < e.received_at) {
            out.extend(side.pop_front());
        }
        out.push(Item::event(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, lead: i64, received: i64) -> ReplayEvent {
        ReplayEvent {
            seq,
            message_id: format!("m{seq}"),
            lead_id: lead,
            kind: "track".into(),
            name: "Page Viewed".into(),
            properties: "{}".into(),
            traits: None,
            context: None,
            occurred_at: received - 1000,
            received_at: received,
            history: false,
        }
    }

    fn shape(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match &i.step {
                Step::Event(e) => format!("e{}", e.seq),
                Step::Stage { stage, .. } => format!("stage {stage}"),
                Step::Answer { accept, .. } => format!("answer {accept}"),
                Step::Consent { granted, .. } => format!("consent {granted}"),
                Step::Job { previous, .. } => format!("job {previous:?}"),
            })
            .collect()
    }

    #[test]
    fn side_steps_go_between_events_by_time_and_ties_after_the_event() {
        let moves = vec![
            ReplayStageMove {
                id: 2,
                lead_id: 1,
                to_stage: "customer".into(),
                at: 250,
                source: "api:crm".into(),
                reason: "won".into(),
            },
            ReplayStageMove {
                id: 1,
                lead_id: 1,
                to_stage: "sal".into(),
                at: 150,
                source: "api:anna".into(),
                reason: "accepted by anna (handoff 3)".into(),
            },
        ];
        let runs = vec![
            ReplayJobRun {
                id: 9,
                schedule: "decay".into(),
                due_at: 200,
            },
            ReplayJobRun {
                id: 8,
                schedule: "gone".into(),
                due_at: 120,
            },
            ReplayJobRun {
                id: 10,
                schedule: "decay".into(),
                due_at: 400,
            },
        ];
        let consents = vec![ReplayConsent {
            id: 1,
            lead_id: 1,
            granted: false,
            at: 200,
            source: Some("unsubscribe link".into()),
        }];
        let index = |s: &str| (s == "decay").then_some(0);
        let mut side = side_steps(moves, runs, consents, &index);
        let mut out = Vec::new();
        merge(
            vec![ev(1, 1, 100), ev(2, 1, 150), ev(3, 2, 300)],
            &mut side,
            &mut out,
        );
        assert_eq!(
            shape(&out),
            [
                "e1",
                "e2",
                "answer true",
                "consent false",
                "job None",
                "stage customer",
                "e3"
            ]
        );
        assert_eq!(
            shape(&side.into_iter().collect::<Vec<_>>()),
            ["job Some(200)"]
        );
    }
}
