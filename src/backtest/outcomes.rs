//! The rule sets' decisions against real outcomes (placeholder until the outcomes
//! module is merged: the types are final, the figures are left empty).

/// One lead's scores and MQL decision, and whether it converted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LeadOutcome {
    pub email: String,
    /// Scores just before the lead converted (its first move into an outcome stage, or
    /// its end state when converted only by a label), else at the end of the replay.
    pub fit: f64,
    pub interest: f64,
    /// The MQL decision: rules moved the lead into the MQL stage before it converted.
    pub mql: bool,
    pub converted: bool,
}

/// Precision, recall, lift, AUC and deciles of one rule set.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcomes {
    pub leads: usize,
    pub converted: usize,
    pub base_rate: Option<f64>,
    pub mql: usize,
    pub true_positives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub lift: Option<f64>,
    pub auc_fit: Option<f64>,
    pub auc_interest: Option<f64>,
    pub auc_fit_interest: Option<f64>,
    pub fit_deciles: Vec<Decile>,
    pub interest_deciles: Vec<Decile>,
}

/// Conversion in one tenth of the leads, ordered by a score.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decile {
    pub decile: u8,
    pub leads: usize,
    pub converted: usize,
    pub rate: Option<f64>,
    pub min: f64,
    pub max: f64,
}

/// The figures over `leads`.
pub fn outcomes(leads: &[LeadOutcome]) -> Outcomes {
    Outcomes {
        leads: leads.len(),
        ..Outcomes::default()
    }
}
