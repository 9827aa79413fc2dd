//! When each escalation step of an assignment fires. An assignment's points are the
//! team's ladder steps plus the deadline (a breach is recorded there), ordered by
//! their offset, all counted in business time from the assignment in the owner's
//! calendar. A handoff remembers the index of its next point.

use chrono::{DateTime, Utc};

use crate::config::sales::{Step, Team};

/// Something that happens at a point of an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The deadline passed without an answer.
    Breach,
    Step(Step),
}

/// The points of an assignment in order, with their business-time offsets. At the
/// same offset, the breach comes first.
pub fn points(team: &Team) -> Vec<(std::time::Duration, Point)> {
    let mut out = vec![(team.reaction, Point::Breach)];
    out.extend(
        team.ladder
            .iter()
            .map(|e| (e.at.offset(team.reaction), Point::Step(e.action))),
    );
    // Stable: the breach stays before steps at the deadline.
    out.sort_by_key(|(offset, _)| *offset);
    out
}

/// The instant point `index` of an assignment to `owner` at `assigned` falls on;
/// `None` past the last point.
pub fn point_at(
    team: &Team,
    owner: &str,
    assigned: DateTime<Utc>,
    index: usize,
) -> Option<(DateTime<Utc>, Point)> {
    let (offset, point) = *points(team).get(index)?;
    let work = chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::MAX);
    Some((team.calendar(owner).add(assigned, work), point))
}

/// The deadline of an assignment to `owner` at `assigned`.
pub fn deadline(team: &Team, owner: &str, assigned: DateTime<Utc>) -> DateTime<Utc> {
    let work = chrono::Duration::from_std(team.reaction).unwrap_or(chrono::Duration::MAX);
    team.calendar(owner).add(assigned, work)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::config::Config;

    fn berlin(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2026, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_shipped_ladder_fires_in_business_time() {
        let config = Config::load_with_env(None, Vec::new()).unwrap();
        let team = config.sales.team("inbound").unwrap();
        let kinds: Vec<Point> = points(team).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            kinds,
            [
                Point::Step(Step::Remind),
                Point::Breach,
                Point::Step(Step::Escalate),
                Point::Step(Step::Reassign)
            ]
        );
        // Friday 16:30 with 2 hours to react, across the change to summer time.
        let start = berlin(3, 27, 16, 30);
        assert_eq!(deadline(team, "anna", start), berlin(3, 30, 10, 30));
        let at = |i| point_at(team, "anna", start, i).unwrap().0;
        assert_eq!(at(0), berlin(3, 30, 9, 30));
        assert_eq!(at(1), berlin(3, 30, 10, 30));
        assert_eq!(at(2), berlin(3, 30, 10, 30));
        assert_eq!(at(3), berlin(3, 30, 11, 30));
        assert!(point_at(team, "anna", start, 4).is_none());
    }
}
