//! Which streams a lead belongs in: a stage change moves it into the streams of its new
//! stage and out of the others (or pauses them in quarantine), a goal event ends a
//! stream. Entering a stage that hands over to sales asks for a handoff. The result is
//! added to the [`Changes`] of the same unit of work, so it is written in the same
//! transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::topics::Topics;
use crate::config::{OnQuarantine, Stream};
use crate::domain::{Changes, HandoffRequest, Lead, SettledHandoff, Source, StreamChange};
use crate::store::EnrollParams;

/// The configured streams and quarantine stages.
#[derive(Debug, Clone, Default)]
pub struct StreamPlan {
    pub streams: Vec<Stream>,
    pub quarantine: Vec<String>,
    /// What the store needs to enroll a lead in each stream.
    pub params: HashMap<String, EnrollParams>,
    /// Stage -> the sales team a lead entering it is handed to.
    pub handoff_on: BTreeMap<String, String>,
    /// The sales teams rules may hand leads to.
    pub teams: Vec<String>,
    /// Stages worked by sales.
    pub sales_stages: BTreeSet<String>,
    /// What marketing mail is about (`[[topics]]`).
    pub topics: Topics,
    /// Hashes addresses to find those erased before: a new lead for one starts
    /// without mail consent until a double opt-in (see `crate::privacy::erased`).
    pub erased_key: Option<crate::privacy::AddressKey>,
}

impl StreamPlan {
    pub fn new(streams: Vec<Stream>, quarantine: Vec<String>) -> Self {
        let params = enroll_params(&streams);
        Self {
            streams,
            quarantine,
            params,
            handoff_on: BTreeMap::new(),
            teams: Vec::new(),
            sales_stages: BTreeSet::new(),
            topics: Topics::default(),
            erased_key: None,
        }
    }

    /// Sets the topics.
    pub fn with_topics(mut self, topics: Topics) -> Self {
        self.topics = topics;
        self
    }

    /// The topic of a marketing mail: its stream's, else its template's.
    pub fn topic_of(&self, source: &str, template: &str) -> &str {
        source
            .strip_prefix("stream:")
            .and_then(|name| self.stream(name))
            .map_or_else(|| self.topics.of_template(template), |s| s.topic.as_str())
    }

    /// Sets the key that recognises erased addresses.
    pub fn with_erased_key(mut self, key: crate::privacy::AddressKey) -> Self {
        self.erased_key = Some(key);
        self
    }

    /// Sets the sales teams, the stages that hand leads to them and the stages sales
    /// works.
    pub fn with_sales(
        mut self,
        teams: Vec<String>,
        handoff_on: BTreeMap<String, String>,
        sales_stages: BTreeSet<String>,
    ) -> Self {
        self.teams = teams;
        self.handoff_on = handoff_on;
        self.sales_stages = sales_stages;
        self
    }

    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.name == name)
    }

    pub fn in_quarantine(&self, stage: &str) -> bool {
        self.quarantine.iter().any(|s| s == stage)
    }

    pub fn names(&self) -> Vec<String> {
        self.streams.iter().map(|s| s.name.clone()).collect()
    }

    /// Stream changes for a lead just created in `stage`, as [`Changes`].
    pub fn created(&self, stage: &str) -> Changes {
        Changes {
            streams: self.on_create(stage),
            ..Changes::default()
        }
    }

    /// The streams a lead just created in `stage` (with no tags yet) joins.
    pub fn on_create(&self, stage: &str) -> Vec<StreamChange> {
        self.streams
            .iter()
            .filter(|s| s.serves(stage, &BTreeSet::new()) && !self.in_quarantine(stage))
            .map(|s| StreamChange::Enroll {
                stream: s.name.clone(),
            })
            .collect()
    }

    /// The streams that resume (or start) when `lead` gives its consent for mail: those
    /// that serve it, unless it is in quarantine.
    pub fn on_consent(&self, lead: &Lead) -> Vec<StreamChange> {
        if self.in_quarantine(&lead.stage) {
            return Vec::new();
        }
        self.streams
            .iter()
            .filter(|s| s.serves(&lead.stage, &lead.tags) && !lead.topics_left.contains(&s.topic))
            .map(|s| StreamChange::Enroll {
                stream: s.name.clone(),
            })
            .collect()
    }

    /// Adds the stream changes that follow from a unit of work that changed the lead
    /// from `before` to `after` (stage and tags); `event` is the name of the event
    /// processed.
    pub fn follow(&self, before: &Lead, after: &Lead, event: Option<&str>, changes: &mut Changes) {
        if let Some(name) = event {
            for s in self
                .streams
                .iter()
                .filter(|s| s.goals.iter().any(|g| g == name))
            {
                changes.streams.push(StreamChange::Exit {
                    stream: Some(s.name.clone()),
                    reason: format!("goal reached: {name}"),
                });
            }
        }
        let moved = before.stage != after.stage;
        if !moved && before.tags == after.tags {
            return;
        }
        if moved && !self.handoff_on.contains_key(&after.stage) {
            // A handoff still open ends: sales took the lead another way (the CRM moved
            // it on), or it went elsewhere.
            changes.handoff_settled = Some(SettledHandoff {
                stage: after.stage.clone(),
                by_sales: self.sales_stages.contains(&after.stage),
                source: changes
                    .moves
                    .iter()
                    .rev()
                    .find(|m| m.to == after.stage)
                    .map_or_else(|| Source::System("stage".into()), |m| m.source.clone()),
            });
        }
        if moved && let Some(team) = self.handoff_on.get(&after.stage) {
            let why = changes
                .moves
                .iter()
                .rev()
                .find(|m| m.to == after.stage)
                .map_or_else(String::new, |m| format!(": {}", m.reason));
            changes.handoffs.push(HandoffRequest {
                team: team.clone(),
                reason: format!("entered {}{why}", after.stage),
                source: Source::System(format!("stage:{}", after.stage)),
            });
        }
        let quarantined = self.in_quarantine(&after.stage);
        for s in &self.streams {
            let was = s.serves(&before.stage, &before.tags);
            let is = s.serves(&after.stage, &after.tags);
            if !moved && was == is {
                continue;
            }
            if is && after.topics_left.contains(&s.topic) {
                // The lead left the stream's topic: it does not join.
                continue;
            }
            let change = if is && !quarantined {
                StreamChange::Enroll {
                    stream: s.name.clone(),
                }
            } else if moved && quarantined && s.on_quarantine == OnQuarantine::Pause {
                StreamChange::Pause {
                    stream: s.name.clone(),
                }
            } else if was || self.in_quarantine(&before.stage) {
                StreamChange::Exit {
                    stream: Some(s.name.clone()),
                    reason: if moved {
                        format!("moved from {} to {}", before.stage, after.stage)
                    } else {
                        "no longer has the stream's tags".to_string()
                    },
                }
            } else {
                continue;
            };
            changes.streams.push(change);
        }
    }
}

fn enroll_params(streams: &[Stream]) -> HashMap<String, EnrollParams> {
    streams
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                EnrollParams {
                    first_after_ms: s
                        .steps
                        .first()
                        .map_or(0, |step| step.after.as_millis() as i64),
                    reentry_ms: s.reentry.wait_ms(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Reentry, mail::Step};

    fn stream(name: &str, stages: &[&str], on_quarantine: OnQuarantine) -> Stream {
        Stream {
            name: name.into(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            tags: vec![],
            goals: vec!["Demo Requested".into()],
            reentry: Reentry::Never,
            on_quarantine,
            steps: vec![Step {
                after: Duration::from_secs(60),
                template: "t".into(),
            }],
            topic: "news".into(),
        }
    }

    fn plan() -> StreamPlan {
        StreamPlan::new(
            vec![
                stream("leads", &["lead"], OnQuarantine::Exit),
                stream("mql", &["mql", "sal"], OnQuarantine::Pause),
            ],
            vec!["sql".into()],
        )
    }

    fn lead(stage: &str) -> Lead {
        let at = chrono::Utc::now();
        Lead::new(
            1,
            crate::domain::Email::parse("a@example.com").unwrap(),
            stage,
            at,
        )
    }

    fn follow(before: &str, after: &str) -> Vec<StreamChange> {
        let mut c = Changes::default();
        plan().follow(&lead(before), &lead(after), None, &mut c);
        c.streams
    }

    #[test]
    fn a_lead_that_left_the_topic_does_not_join_its_streams() {
        let (mut before, mut after) = (lead("lead"), lead("mql"));
        before.topics_left.insert("news".into());
        after.topics_left.insert("news".into());
        let mut c = Changes::default();
        plan().follow(&before, &after, None, &mut c);
        assert_eq!(
            c.streams,
            vec![StreamChange::Exit {
                stream: Some("leads".into()),
                reason: "moved from lead to mql".into()
            }]
        );
        after.consent_email.granted = true;
        assert!(plan().on_consent(&after).is_empty());
        after.topics_left.clear();
        assert_eq!(plan().on_consent(&after).len(), 1);
        assert_eq!(plan().topic_of("stream:mql", "t"), "news");
        assert_eq!(plan().topic_of("rule:x", "trigger/x"), "marketing");
    }

    #[test]
    fn a_stage_change_moves_the_lead_between_streams() {
        assert_eq!(
            follow("lead", "mql"),
            vec![
                StreamChange::Exit {
                    stream: Some("leads".into()),
                    reason: "moved from lead to mql".into()
                },
                StreamChange::Enroll {
                    stream: "mql".into()
                },
            ]
        );
    }

    #[test]
    fn quarantine_pauses_or_ends_and_leaving_it_resumes() {
        assert_eq!(
            follow("sal", "sql"),
            vec![StreamChange::Pause {
                stream: "mql".into()
            }]
        );
        // Back to a stage the paused stream serves: enroll resumes it.
        assert_eq!(
            follow("sql", "mql"),
            vec![
                StreamChange::Exit {
                    stream: Some("leads".into()),
                    reason: "moved from sql to mql".into()
                },
                StreamChange::Enroll {
                    stream: "mql".into()
                },
            ]
        );
    }

    #[test]
    fn a_goal_event_ends_the_stream() {
        let mut c = Changes::default();
        plan().follow(&lead("mql"), &lead("mql"), Some("Demo Requested"), &mut c);
        assert_eq!(c.streams.len(), 2);
        assert!(
            matches!(&c.streams[0], StreamChange::Exit { reason, .. } if reason == "goal reached: Demo Requested")
        );
    }

    #[test]
    fn a_tag_brings_the_lead_into_a_stream_and_taking_it_away_ends_it() {
        let mut webinar = stream("webinar", &["lead", "mql"], OnQuarantine::Exit);
        webinar.tags = vec!["webinar".into()];
        let plan = StreamPlan::new(vec![webinar], vec!["sql".into()]);
        let before = lead("lead");
        let mut after = before.clone();
        after.tags.insert("webinar".into());
        let mut c = Changes::default();
        plan.follow(&before, &after, None, &mut c);
        assert_eq!(
            c.streams,
            vec![StreamChange::Enroll {
                stream: "webinar".into()
            }]
        );
        let mut c = Changes::default();
        plan.follow(&after, &before, None, &mut c);
        assert!(
            matches!(&c.streams[..], [StreamChange::Exit { reason, .. }] if reason == "no longer has the stream's tags"),
            "{:?}",
            c.streams
        );
        // Not for a stage the stream does not serve.
        let mut c = Changes::default();
        plan.follow(
            &lead("subscriber"),
            &{
                let mut l = lead("subscriber");
                l.tags.insert("webinar".into());
                l
            },
            None,
            &mut c,
        );
        assert!(c.streams.is_empty());
    }
}
