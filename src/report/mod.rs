//! Read models shared by the HTTP API and the CLI: a lead with its history
//! ([`lead`]), lead lists ([`lead_list`]), the daemon's counters ([`stats`]), and the
//! reports over a [`period`]: the [`funnel`] and the sales handoff's [`sla`], with
//! their figures ([`measure`]) and text tables ([`table`]); what shadow rules would
//! have done ([`shadow`]).

pub mod funnel;
pub mod lead;
pub mod lead_list;
pub mod measure;
pub mod period;
pub mod shadow;
pub mod sla;
pub mod stats;
pub mod table;

pub use funnel::FunnelReport;
pub use lead::LeadReport;
pub use period::{Period, PeriodError};
pub use sla::SlaReport;
pub use stats::Stats;
