//! The funnel report over a period: leads per stage now, stage moves, conversion from
//! each stage to the later ones, median time in stage, and new leads per inbound
//! channel. `GET /v1/reports/funnel` and `nurtured report funnel`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use serde::Serialize;

use super::measure::{Spread, human_or_dash, rate, rate_text};
use super::period::Period;
use super::table::{Align, Table};
use crate::domain::Funnel;
use crate::store::{NewLeadRow, Store, StoreError};

/// The channel of a lead that names none.
pub const DIRECT: &str = "direct";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelReport {
    pub period: Period,
    /// Leads per stage now (whenever they were created), in funnel order, zeros
    /// included; stages no longer configured come last.
    pub stages: Vec<StageLeads>,
    /// Leads created in the period.
    pub leads_created: i64,
    /// Stage moves in the period per pair of stages (creations not counted).
    pub moves: Vec<MoveCount>,
    /// Per configured stage: leads that entered it in the period, and how many of
    /// them reached each later stage by now.
    pub conversions: Vec<Conversion>,
    /// Per stage: stays that ended in the period (the lead moved on), their median
    /// and 90th percentile length.
    pub time_in_stage: Vec<StageTime>,
    /// Leads created in the period per inbound channel, the largest first.
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StageLeads {
    pub stage: String,
    pub leads: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MoveCount {
    pub from: String,
    pub to: String,
    pub moves: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Conversion {
    pub stage: String,
    /// A closed stage ends the journey (customer, lost, disqualified).
    pub closed: bool,
    pub entered: i64,
    /// Every later stage in funnel order.
    pub reached: Vec<Reached>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reached {
    pub stage: String,
    pub leads: i64,
    /// `leads` of `entered` in percent, one decimal; `null` when none entered.
    pub rate_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StageTime {
    pub stage: String,
    /// `count` is the number of stays.
    #[serde(flatten)]
    pub spread: Spread,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Channel {
    pub channel: String,
    /// Leads of this channel created in the period.
    pub leads: i64,
    /// Per configured stage, how many of them are in it now or have been in it.
    pub stages: Vec<StageLeads>,
}

impl FunnelReport {
    /// Reads the period's figures; `funnel` gives the stage order.
    pub async fn load(store: &Store, funnel: &Funnel, period: Period) -> Result<Self, StoreError> {
        let (since, until) = period.ms();
        let now_counts = store.stage_counts().await?;
        let move_counts = store.stage_move_counts(since, until).await?;
        let (entered, reached) = store.stage_conversions(since, until).await?;
        let stays = store.stays_ended(since, until).await?;
        let new_leads = store.leads_created_between(since, until).await?;
        let lead_stages = store.stages_of_leads_created(since, until).await?;

        let order = StageOrder::new(funnel);
        let configured: Vec<&str> = funnel.stages().iter().map(|s| s.name.as_str()).collect();

        let now_map: HashMap<&str, i64> =
            now_counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let stages = order
            .all(now_counts.iter().map(|(s, _)| s.as_str()))
            .into_iter()
            .map(|stage| StageLeads {
                leads: now_map.get(stage.as_str()).copied().unwrap_or(0),
                stage,
            })
            .collect();

        let mut moves: Vec<MoveCount> = move_counts
            .into_iter()
            .map(|m| MoveCount {
                from: m.from_stage,
                to: m.to_stage,
                moves: m.moves,
            })
            .collect();
        moves.sort_by(|a, b| {
            order
                .key(&a.from)
                .cmp(&order.key(&b.from))
                .then_with(|| order.key(&a.to).cmp(&order.key(&b.to)))
        });

        let entered: HashMap<&str, i64> = entered
            .iter()
            .map(|e| (e.stage.as_str(), e.leads))
            .collect();
        let reached: HashMap<(&str, &str), i64> = reached
            .iter()
            .map(|r| ((r.stage.as_str(), r.reached.as_str()), r.leads))
            .collect();
        let conversions = configured
            .iter()
            .enumerate()
            .map(|(i, &stage)| {
                let n = entered.get(stage).copied().unwrap_or(0);
                Conversion {
                    stage: stage.to_string(),
                    closed: funnel.is_closed(stage),
                    entered: n,
                    reached: configured[i + 1..]
                        .iter()
                        .map(|&later| {
                            let leads = reached.get(&(stage, later)).copied().unwrap_or(0);
                            Reached {
                                stage: later.to_string(),
                                leads,
                                rate_pct: rate(leads, n),
                            }
                        })
                        .collect(),
                }
            })
            .collect();

        let mut by_stage: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for s in &stays {
            // A stay of negative length comes from events sent with a time before the
            // lead was created (a backfill); it says nothing about the stage.
            if s.ms >= 0 {
                by_stage.entry(s.stage.as_str()).or_default().push(s.ms);
            }
        }
        let time_in_stage = order
            .all(by_stage.keys().copied())
            .into_iter()
            .map(|stage| StageTime {
                spread: Spread::of(by_stage.remove(stage.as_str()).unwrap_or_default()),
                stage,
            })
            .collect();

        let channels = channels(&new_leads, &lead_stages, &configured);
        Ok(Self {
            period,
            stages,
            leads_created: new_leads.len() as i64,
            moves,
            conversions,
            time_in_stage,
            channels,
        })
    }

    /// A readable report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Funnel report, {}", self.period.to_text());

        let _ = writeln!(out, "\nLeads per stage now");
        let mut t = Table::new(&[("stage", Align::Left), ("leads", Align::Right)]);
        for s in &self.stages {
            t.row(vec![s.stage.clone(), s.leads.to_string()]);
        }
        out.push_str(&t.render(2));

        let _ = writeln!(out, "\nStage moves in the period");
        let mut t = Table::new(&[
            ("from", Align::Left),
            ("to", Align::Left),
            ("moves", Align::Right),
        ]);
        for m in &self.moves {
            t.row(vec![m.from.clone(), m.to.clone(), m.moves.to_string()]);
        }
        out.push_str(&or_none(&t));

        let _ = writeln!(
            out,
            "\nConversion: leads that entered a stage in the period, and the later stages \
             they reached by now"
        );
        let mut t = Table::new(&[
            ("from", Align::Left),
            ("entered", Align::Right),
            ("reached", Align::Left),
            ("leads", Align::Right),
            ("rate", Align::Right),
        ]);
        for c in self.conversions.iter().filter(|c| c.entered > 0) {
            // Later stages someone got to, and the next stage of an open one always.
            let open = !c.closed;
            let shown = c
                .reached
                .iter()
                .enumerate()
                .filter(|(i, r)| (*i == 0 && open) || r.leads > 0);
            let mut first = true;
            for (_, r) in shown {
                let (from, entered) = if first {
                    (c.stage.clone(), c.entered.to_string())
                } else {
                    (String::new(), String::new())
                };
                first = false;
                t.row(vec![
                    from,
                    entered,
                    r.stage.clone(),
                    r.leads.to_string(),
                    rate_text(r.rate_pct),
                ]);
            }
        }
        out.push_str(&or_none(&t));

        let _ = writeln!(out, "\nTime in stage (stays that ended in the period)");
        let mut t = Table::new(&[
            ("stage", Align::Left),
            ("stays", Align::Right),
            ("median", Align::Right),
            ("p90", Align::Right),
        ]);
        for s in self.time_in_stage.iter().filter(|s| s.spread.count > 0) {
            t.row(vec![
                s.stage.clone(),
                s.spread.count.to_string(),
                human_or_dash(s.spread.median_ms),
                human_or_dash(s.spread.p90_ms),
            ]);
        }
        out.push_str(&or_none(&t));

        let _ = writeln!(
            out,
            "\nNew leads per channel ({} created in the period; per stage: in it now or \
             have been)",
            self.leads_created
        );
        // Only stages that some channel's leads reached.
        let columns: Vec<&str> = self
            .channels
            .first()
            .map(|c| {
                c.stages
                    .iter()
                    .map(|s| s.stage.as_str())
                    .filter(|stage| {
                        self.channels
                            .iter()
                            .any(|c| c.stages.iter().any(|s| s.stage == *stage && s.leads > 0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut heads = vec![("channel", Align::Left), ("leads", Align::Right)];
        heads.extend(columns.iter().map(|c| (*c, Align::Right)));
        let mut t = Table::new(&heads);
        for c in &self.channels {
            let mut row = vec![c.channel.clone(), c.leads.to_string()];
            for col in &columns {
                let n = c
                    .stages
                    .iter()
                    .find(|s| s.stage == *col)
                    .map_or(0, |s| s.leads);
                row.push(n.to_string());
            }
            t.row(row);
        }
        out.push_str(&or_none(&t));
        out
    }
}

/// The rendered table, or "  (none)" without rows.
fn or_none(t: &Table) -> String {
    if t.is_empty() {
        "  (none)\n".into()
    } else {
        t.render(2)
    }
}

/// A lead's inbound channel: `context.campaign.source` of its first event, else that
/// event's `properties.utm_source`, else its attribute `source`, else [`DIRECT`];
/// trimmed and in lower case, so "Google" and "google " are one channel.
pub fn channel_of(lead: &NewLeadRow) -> String {
    [
        &lead.campaign_source,
        &lead.utm_source,
        &lead.attribute_source,
    ]
    .into_iter()
    .flatten()
    .map(|s| s.trim())
    .find(|s| !s.is_empty())
    .map_or_else(|| DIRECT.to_string(), str::to_lowercase)
}

/// New leads per channel, with how many are in or have been in each configured stage;
/// the largest channel first, then by name.
fn channels(
    new_leads: &[NewLeadRow],
    lead_stages: &[crate::store::LeadStageRow],
    configured: &[&str],
) -> Vec<Channel> {
    let channel_by_lead: HashMap<i64, String> =
        new_leads.iter().map(|l| (l.id, channel_of(l))).collect();
    let mut leads: BTreeMap<&str, i64> = BTreeMap::new();
    for c in channel_by_lead.values() {
        *leads.entry(c.as_str()).or_default() += 1;
    }
    let mut seen: BTreeSet<(&str, &str, i64)> = BTreeSet::new();
    let mut per_stage: HashMap<(&str, &str), i64> = HashMap::new();
    for row in lead_stages {
        if let Some(c) = channel_by_lead.get(&row.lead_id)
            && seen.insert((c.as_str(), row.stage.as_str(), row.lead_id))
        {
            *per_stage
                .entry((c.as_str(), row.stage.as_str()))
                .or_default() += 1;
        }
    }
    let mut out: Vec<Channel> = leads
        .into_iter()
        .map(|(channel, n)| Channel {
            channel: channel.to_string(),
            leads: n,
            stages: configured
                .iter()
                .map(|&stage| StageLeads {
                    stage: stage.to_string(),
                    leads: per_stage.get(&(channel, stage)).copied().unwrap_or(0),
                })
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| {
        b.leads
            .cmp(&a.leads)
            .then_with(|| a.channel.cmp(&b.channel))
    });
    out
}

/// Funnel order for sorting; stages no longer configured come after, by name.
struct StageOrder<'a> {
    funnel: &'a Funnel,
}

impl<'a> StageOrder<'a> {
    fn new(funnel: &'a Funnel) -> Self {
        Self { funnel }
    }

    fn key<'s>(&self, stage: &'s str) -> (usize, &'s str) {
        (self.funnel.position(stage).unwrap_or(usize::MAX), stage)
    }

    /// Every configured stage in order, then the other names in `found`, sorted.
    fn all<'s>(&self, found: impl Iterator<Item = &'s str>) -> Vec<String> {
        let mut out: Vec<String> = self
            .funnel
            .stages()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let extra: BTreeSet<&str> = found
            .filter(|s| self.funnel.position(s).is_none())
            .collect();
        out.extend(extra.into_iter().map(str::to_string));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Side, StageDef};
    use crate::store::LeadStageRow;

    fn lead(id: i64, campaign: Option<&str>, utm: Option<&str>, attr: Option<&str>) -> NewLeadRow {
        NewLeadRow {
            id,
            campaign_source: campaign.map(Into::into),
            utm_source: utm.map(Into::into),
            attribute_source: attr.map(Into::into),
        }
    }

    #[test]
    fn channel_takes_the_first_source_given() {
        assert_eq!(
            channel_of(&lead(1, Some("LinkedIn"), Some("google"), None)),
            "linkedin"
        );
        assert_eq!(
            channel_of(&lead(1, Some("  "), Some("Google "), Some("x"))),
            "google"
        );
        assert_eq!(channel_of(&lead(1, None, None, Some("Partner"))), "partner");
        assert_eq!(channel_of(&lead(1, None, None, None)), "direct");
    }

    #[test]
    fn channels_count_each_lead_once_per_stage() {
        let new = vec![
            lead(1, Some("google"), None, None),
            lead(2, Some("google"), None, None),
            lead(3, None, None, None),
        ];
        let stages = |id, s: &str| LeadStageRow {
            lead_id: id,
            stage: s.into(),
        };
        let history = vec![
            stages(1, "subscriber"),
            stages(1, "lead"),
            stages(1, "lead"),
            stages(2, "subscriber"),
            stages(3, "subscriber"),
            stages(3, "lead"),
            stages(9, "lead"), // not in the cohort
        ];
        let c = channels(&new, &history, &["subscriber", "lead", "mql"]);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].channel.as_str(), c[0].leads), ("google", 2));
        let n: Vec<i64> = c[0].stages.iter().map(|s| s.leads).collect();
        assert_eq!(n, [2, 1, 0]);
        assert_eq!((c[1].channel.as_str(), c[1].leads), ("direct", 1));
    }

    #[test]
    fn unknown_stages_sort_after_the_configured_ones() {
        let def = |n: &str| StageDef {
            name: n.into(),
            side: Side::Marketing,
            closed: false,
        };
        let f = Funnel::new(vec![def("b"), def("a")], "b").unwrap();
        let o = StageOrder::new(&f);
        assert_eq!(
            o.all(["zz", "a", "old"].into_iter()),
            ["b", "a", "old", "zz"]
        );
        assert!(o.key("a") < o.key("old"));
        assert!(o.key("b") < o.key("a"));
    }
}
