//! What a rule can ask of sales: `lead.handoff(team, reason)` hands the lead to a team
//! of `[[sales.teams]]`. The owner, deadline and notification follow once the change
//! is written; a lead already with sales is not handed over twice.

use rhai::{Engine, NativeCallContext};

use super::api::{LeadHandle, Res, act, runtime};
use crate::domain::change::Action;

pub fn register(engine: &mut Engine) {
    engine.register_fn(
        "handoff",
        |ctx: NativeCallContext, l: &mut LeadHandle, team: &str, reason: &str| -> Res<()> {
            let teams = l.lock().teams.clone();
            if !teams.iter().any(|t| t == team) {
                return Err(runtime(
                    &ctx,
                    format!(
                        "unknown team `{team}`; the teams are: {} (see [[sales.teams]] in nurtured.toml)",
                        if teams.is_empty() {
                            "(none)".to_string()
                        } else {
                            teams.join(", ")
                        }
                    ),
                ));
            }
            act(
                &ctx,
                l,
                Action::Handoff {
                    team: team.to_string(),
                    reason: reason.to_string(),
                },
            )
        },
    );
}
