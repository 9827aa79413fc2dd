//! The SLA report of the sales handoff: handoffs created in a period by state, time to
//! accept (wall-clock and business time), figures per owner, and the handoffs still
//! waiting now with their deadlines. `GET /v1/reports/sla` and `nurtured report sla`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::measure::{Spread, human, human_or_dash, rate, rate_text};
use super::period::Period;
use super::table::{Align, Table};
use crate::clock::from_ms;
use crate::store::{HandoffReportRow, Store, StoreError};

/// The states of a handoff, in the order they happen.
pub const STATES: [&str; 6] = [
    "new",
    "open",
    "escalated",
    "accepted",
    "rejected",
    "expired",
];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlaReport {
    /// Handoffs count by their `created_at` in this period.
    pub period: Period,
    pub handoffs: i64,
    /// Every state, zeros included.
    pub by_state: Vec<StateCount>,
    /// Handoffs that missed at least one deadline.
    pub breached: i64,
    pub breached_pct: Option<f64>,
    /// Accepted handoffs: wall-clock time from the handoff to the acceptance.
    pub time_to_accept: Spread,
    /// Accepted handoffs with a recorded business time: business time from the
    /// handoff to the acceptance (working hours of the sales calendar).
    pub business_time_to_accept: Spread,
    /// Per owner, by owner id.
    pub owners: Vec<OwnerFigures>,
    /// Handoffs waiting for an answer now, whenever they were created; the earliest
    /// deadline first.
    pub open: Vec<OpenHandoff>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StateCount {
    pub state: String,
    pub handoffs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct OwnerFigures {
    pub owner: String,
    /// Handoffs assigned to this owner at some point.
    pub assigned: i64,
    /// Handoffs that ended accepted, rejected or expired while with this owner.
    pub accepted: i64,
    pub rejected: i64,
    pub expired: i64,
    /// Deadlines this owner missed.
    pub breaches: i64,
    /// Accepted while with this owner: time from the assignment to this owner to the
    /// acceptance.
    pub time_to_accept: Spread,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OpenHandoff {
    pub id: i64,
    pub email: String,
    pub team: String,
    pub state: String,
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub due_at: Option<DateTime<Utc>>,
    /// Past its deadline now.
    pub overdue: bool,
    /// Time left to the deadline; negative when overdue.
    pub due_in_ms: Option<i64>,
}

impl SlaReport {
    /// Reads the period's handoffs; the open ones as of `period.until`.
    pub async fn load(store: &Store, period: Period) -> Result<Self, StoreError> {
        let (since, until) = period.ms();
        let rows = store.handoffs_created_between(since, until).await?;
        let breaches = store.handoff_breaches_by_owner(since, until).await?;
        let open = store
            .handoffs_waiting()
            .await?
            .into_iter()
            .map(|h| {
                let due_in_ms = h.due_at.map(|d| d - until);
                OpenHandoff {
                    id: h.id,
                    email: h.email,
                    team: h.team,
                    state: h.state,
                    owner: h.owner,
                    created_at: from_ms(h.created_at),
                    due_at: h.due_at.map(from_ms),
                    overdue: due_in_ms.is_some_and(|d| d < 0),
                    due_in_ms,
                }
            })
            .collect();
        let breaches: Vec<(String, i64)> = breaches
            .into_iter()
            .map(|b| (b.owner, b.breaches))
            .collect();
        Self::from_rows(period, &rows, &breaches, open)
    }

    /// The figures of `rows` (handoffs created in `period`); pure, for tests.
    pub fn from_rows(
        period: Period,
        rows: &[HandoffReportRow],
        breaches: &[(String, i64)],
        open: Vec<OpenHandoff>,
    ) -> Result<Self, StoreError> {
        let mut states: BTreeMap<&str, i64> = BTreeMap::new();
        let mut accept_ms = Vec::new();
        let mut business_ms = Vec::new();
        let mut owners: BTreeMap<String, OwnerFigures> = BTreeMap::new();
        let mut owner_accept_ms: HashMap<String, Vec<i64>> = HashMap::new();
        let figures = |owners: &mut BTreeMap<String, OwnerFigures>, o: &str| {
            owners.entry(o.to_string()).or_insert_with(|| OwnerFigures {
                owner: o.to_string(),
                ..OwnerFigures::default()
            });
        };
        for h in rows {
            *states.entry(h.state.as_str()).or_default() += 1;
            for o in h.owners()? {
                figures(&mut owners, &o);
                if let Some(f) = owners.get_mut(&o) {
                    f.assigned += 1;
                }
            }
            let ended_with = h.owner.as_deref().and_then(|o| owners.get_mut(o));
            if let Some(f) = ended_with {
                match h.state.as_str() {
                    "accepted" => f.accepted += 1,
                    "rejected" => f.rejected += 1,
                    "expired" => f.expired += 1,
                    _ => {}
                }
            }
            if h.state == "accepted"
                && let Some(answered) = h.answered_at
            {
                let wall = answered - h.created_at;
                if wall >= 0 {
                    accept_ms.push(wall);
                }
                if let Some(b) = h.business_ms.filter(|b| *b >= 0) {
                    business_ms.push(b);
                }
                if let Some(o) = &h.owner {
                    let mine = answered - h.assigned_at.unwrap_or(h.created_at);
                    if mine >= 0 {
                        owner_accept_ms.entry(o.clone()).or_default().push(mine);
                    }
                }
            }
        }
        for (o, n) in breaches {
            figures(&mut owners, o);
            if let Some(f) = owners.get_mut(o) {
                f.breaches += n;
            }
        }
        for (o, f) in owners.iter_mut() {
            f.time_to_accept = Spread::of(owner_accept_ms.remove(o).unwrap_or_default());
        }
        let mut by_state: Vec<StateCount> = STATES
            .iter()
            .map(|s| StateCount {
                state: s.to_string(),
                handoffs: states.remove(s).unwrap_or(0),
            })
            .collect();
        by_state.extend(states.into_iter().map(|(s, n)| StateCount {
            state: s.to_string(),
            handoffs: n,
        }));
        let handoffs = rows.len() as i64;
        let breached = rows.iter().filter(|h| h.breached_at.is_some()).count() as i64;
        Ok(Self {
            period,
            handoffs,
            by_state,
            breached,
            breached_pct: rate(breached, handoffs),
            time_to_accept: Spread::of(accept_ms),
            business_time_to_accept: Spread::of(business_ms),
            owners: owners.into_values().collect(),
            open,
        })
    }

    /// A readable report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "SLA report, handoffs created {}",
            self.period.to_text()
        );
        let _ = writeln!(
            out,
            "\n{} handoff(s); {} missed a deadline ({})",
            self.handoffs,
            self.breached,
            rate_text(self.breached_pct)
        );
        let mut t = Table::new(&[("state", Align::Left), ("handoffs", Align::Right)]);
        for s in &self.by_state {
            t.row(vec![s.state.clone(), s.handoffs.to_string()]);
        }
        out.push_str(&t.render(2));

        let _ = writeln!(out, "\nTime to accept");
        let mut t = Table::new(&[
            ("clock", Align::Left),
            ("accepted", Align::Right),
            ("median", Align::Right),
            ("p90", Align::Right),
        ]);
        for (name, s) in [
            ("wall-clock", &self.time_to_accept),
            ("business time", &self.business_time_to_accept),
        ] {
            t.row(vec![
                name.into(),
                s.count.to_string(),
                human_or_dash(s.median_ms),
                human_or_dash(s.p90_ms),
            ]);
        }
        out.push_str(&t.render(2));

        let _ = writeln!(
            out,
            "\nPer owner (time to accept from the assignment to the owner)"
        );
        let mut t = Table::new(&[
            ("owner", Align::Left),
            ("assigned", Align::Right),
            ("accepted", Align::Right),
            ("rejected", Align::Right),
            ("expired", Align::Right),
            ("breaches", Align::Right),
            ("median accept", Align::Right),
        ]);
        for o in &self.owners {
            t.row(vec![
                o.owner.clone(),
                o.assigned.to_string(),
                o.accepted.to_string(),
                o.rejected.to_string(),
                o.expired.to_string(),
                o.breaches.to_string(),
                human_or_dash(o.time_to_accept.median_ms),
            ]);
        }
        if t.is_empty() {
            out.push_str("  (none)\n");
        } else {
            out.push_str(&t.render(2));
        }

        let overdue = self.open.iter().filter(|h| h.overdue).count();
        let _ = writeln!(
            out,
            "\nWaiting for an answer now: {} ({overdue} overdue)",
            self.open.len()
        );
        let mut t = Table::new(&[
            ("id", Align::Right),
            ("lead", Align::Left),
            ("team", Align::Left),
            ("state", Align::Left),
            ("owner", Align::Left),
            ("due (UTC)", Align::Left),
            ("", Align::Left),
        ]);
        for h in &self.open {
            let when = match h.due_in_ms {
                None => String::new(),
                Some(d) if d < 0 => format!("OVERDUE by {}", human(-d)),
                Some(d) => format!("in {}", human(d)),
            };
            t.row(vec![
                h.id.to_string(),
                h.email.clone(),
                h.team.clone(),
                h.state.clone(),
                h.owner.clone().unwrap_or_else(|| "-".into()),
                h.due_at
                    .map_or_else(|| "-".into(), |d| d.format("%Y-%m-%d %H:%M").to_string()),
                when,
            ]);
        }
        if !t.is_empty() {
            out.push_str(&t.render(2));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const H: i64 = 3_600_000;

    fn period() -> Period {
        Period::last_days(30, Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap())
    }

    fn row(id: i64, state: &str, owners: &[&str]) -> HandoffReportRow {
        HandoffReportRow {
            id,
            state: state.into(),
            owner: owners.last().map(|o| o.to_string()),
            owners_had: serde_json::to_string(owners).unwrap(),
            created_at: 0,
            assigned_at: Some(0),
            breached_at: None,
            answered_at: None,
            business_ms: None,
        }
    }

    #[test]
    fn counts_states_times_and_owners() {
        let mut a = row(1, "accepted", &["anna"]);
        a.answered_at = Some(2 * H);
        a.business_ms = Some(H);
        let mut b = row(2, "accepted", &["anna", "ben"]);
        b.assigned_at = Some(5 * H);
        b.answered_at = Some(6 * H);
        b.breached_at = Some(4 * H);
        let mut c = row(3, "accepted", &["ben"]);
        c.answered_at = Some(10 * H);
        let d = row(4, "expired", &["ben"]);
        let e = row(5, "open", &["anna"]);
        let rows = [a, b, c, d, e];
        let r = SlaReport::from_rows(period(), &rows, &[("anna".into(), 1)], vec![]).unwrap();
        assert_eq!(r.handoffs, 5);
        let states: Vec<i64> = r.by_state.iter().map(|s| s.handoffs).collect();
        assert_eq!(states, [0, 1, 0, 3, 0, 1]);
        assert_eq!(r.breached, 1);
        assert_eq!(r.breached_pct, Some(20.0));
        // Wall-clock 2h, 6h, 10h.
        assert_eq!(r.time_to_accept.count, 3);
        assert_eq!(r.time_to_accept.median_ms, Some(6 * H));
        assert_eq!(r.time_to_accept.p90_ms, Some(9 * H + 12 * 60_000));
        assert_eq!(r.business_time_to_accept.count, 1);
        assert_eq!(r.business_time_to_accept.median_ms, Some(H));

        let anna = &r.owners[0];
        assert_eq!(anna.owner, "anna");
        assert_eq!((anna.assigned, anna.accepted, anna.breaches), (3, 1, 1));
        assert_eq!(anna.time_to_accept.median_ms, Some(2 * H));
        let ben = &r.owners[1];
        assert_eq!(
            (ben.assigned, ben.accepted, ben.expired, ben.breaches),
            (3, 2, 1, 0)
        );
        // From ben's assignment: 1h (handoff 2) and 10h (handoff 3).
        assert_eq!(ben.time_to_accept.median_ms, Some(5 * H + 30 * 60_000));
    }

    #[test]
    fn damaged_owner_lists_are_reported() {
        let mut a = row(1, "open", &[]);
        a.owners_had = "anna".into();
        assert!(matches!(
            SlaReport::from_rows(period(), &[a], &[], vec![]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
