//! `[backtest]`: what `nurtured backtest` counts as a conversion (the outcome stages)
//! and which stage is the MQL decision whose precision it measures.

use serde::{Deserialize, Serialize};

use crate::domain::Funnel;

/// `[backtest]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBacktest {
    /// A lead converted when it reached one of these stages.
    #[serde(default = "outcomes")]
    pub outcomes: Vec<String>,
    /// Rules moving a lead into this stage make the MQL decision.
    #[serde(default = "mql_stage")]
    pub mql_stage: String,
}

fn outcomes() -> Vec<String> {
    vec!["customer".into()]
}

fn mql_stage() -> String {
    "mql".into()
}

impl Default for RawBacktest {
    fn default() -> Self {
        Self {
            outcomes: outcomes(),
            mql_stage: mql_stage(),
        }
    }
}

/// The checked `[backtest]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backtest {
    pub outcomes: Vec<String>,
    pub mql_stage: String,
}

/// Checks `[backtest]` against the funnel; problems go to `bad` as (key, message).
pub fn backtest(
    raw: &RawBacktest,
    funnel: Option<&Funnel>,
    bad: &dyn Fn(&str, String),
) -> Backtest {
    super::check_stages(funnel, &raw.outcomes, "backtest.outcomes", bad);
    super::check_stages(
        funnel,
        std::slice::from_ref(&raw.mql_stage),
        "backtest.mql_stage",
        &|_, m| bad("backtest.mql_stage", m),
    );
    if raw.outcomes.is_empty() {
        bad(
            "backtest.outcomes",
            "name at least one stage that counts as converted, e.g. [\"customer\"]".into(),
        );
    }
    Backtest {
        outcomes: raw.outcomes.clone(),
        mql_stage: raw.mql_stage.clone(),
    }
}
