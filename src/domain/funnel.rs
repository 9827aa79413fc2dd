//! The funnel: the ordered list of stages from configuration, which side owns each,
//! and which ones are closed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which team works a lead in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Marketing,
    Sales,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Marketing => "marketing",
            Side::Sales => "sales",
        })
    }
}

/// One stage of the funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageDef {
    pub name: String,
    pub side: Side,
    /// A closed stage ends the journey: rules cannot move a lead out of it, only sales
    /// or the API can.
    pub closed: bool,
}

/// The configured stages in funnel order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Funnel {
    stages: Vec<StageDef>,
    initial: usize,
}

/// Why a stage list is not a usable funnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunnelError {
    #[error("the stage list is empty; list at least one [[stages]] entry")]
    Empty,
    #[error("stage `{0}` is listed twice")]
    Duplicate(String),
    #[error("stage name `{0}` is not allowed: use lower-case letters, digits, `_` or `-`")]
    BadName(String),
    #[error("initial stage `{initial}` is not in the stage list ({known})")]
    UnknownInitial { initial: String, known: String },
}

impl Funnel {
    pub fn new(stages: Vec<StageDef>, initial: &str) -> Result<Self, FunnelError> {
        if stages.is_empty() {
            return Err(FunnelError::Empty);
        }
        for (i, s) in stages.iter().enumerate() {
            let ok = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !ok {
                return Err(FunnelError::BadName(s.name.clone()));
            }
            if stages[..i].iter().any(|o| o.name == s.name) {
                return Err(FunnelError::Duplicate(s.name.clone()));
            }
        }
        let funnel = Self { stages, initial: 0 };
        let initial = funnel
            .position(initial)
            .ok_or_else(|| FunnelError::UnknownInitial {
                initial: initial.to_string(),
                known: funnel.names_joined(),
            })?;
        Ok(Self { initial, ..funnel })
    }

    pub fn stage(&self, name: &str) -> Option<&StageDef> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Position in funnel order (0 = first).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    pub fn initial(&self) -> &str {
        &self.stages[self.initial].name
    }

    pub fn stages(&self) -> &[StageDef] {
        &self.stages
    }

    pub fn is_closed(&self, name: &str) -> bool {
        self.stage(name).is_some_and(|s| s.closed)
    }

    /// The stages in which a lead is being worked on by sales: sales side, not closed.
    pub fn open_sales_stages(&self) -> Vec<String> {
        self.stages
            .iter()
            .filter(|s| s.side == Side::Sales && !s.closed)
            .map(|s| s.name.clone())
            .collect()
    }

    /// "subscriber, lead, mql, ..." for error messages.
    pub fn names_joined(&self) -> String {
        self.stages
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> StageDef {
        StageDef {
            name: name.into(),
            side: Side::Marketing,
            closed: false,
        }
    }

    #[test]
    fn order_and_initial() {
        let f = Funnel::new(vec![def("subscriber"), def("lead"), def("mql")], "lead").unwrap();
        assert_eq!(f.initial(), "lead");
        assert_eq!(f.position("mql"), Some(2));
        assert!(f.stage("sql").is_none());
    }

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(Funnel::new(vec![], "x"), Err(FunnelError::Empty));
        assert!(matches!(
            Funnel::new(vec![def("a"), def("a")], "a"),
            Err(FunnelError::Duplicate(_))
        ));
        assert!(matches!(
            Funnel::new(vec![def("MQL")], "MQL"),
            Err(FunnelError::BadName(_))
        ));
        assert!(matches!(
            Funnel::new(vec![def("a")], "b"),
            Err(FunnelError::UnknownInitial { .. })
        ));
    }
}
