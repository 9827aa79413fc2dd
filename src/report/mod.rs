//! Read models shared by the HTTP API and the CLI: a lead with its history
//! ([`lead`]) and the daemon's counters ([`stats`]).

pub mod lead;
pub mod stats;

pub use lead::LeadReport;
pub use stats::Stats;
