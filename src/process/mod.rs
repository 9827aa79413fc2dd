//! Event processing: pending events are taken in batches, in arrival order, the rules
//! run for each (off the async reactor), and each batch's results are written in one
//! transaction. An event whose rules fail is kept as failed with the error; its effects
//! are dropped as a whole and the other events go on.
//!
//! - [`worker`]: one batch ([`worker::Processor::run_once`]) and the loop around it;
//! - [`history`]: the event history rules count on, held in memory (bounded) with the
//!   store behind it;
//! - [`manual`]: changes made through the API (sales, CRM), under the same lead lock;
//! - [`edit`]: one lead's change written together with the caller's own rows (a
//!   handoff answered);
//! - [`jobs`]: scheduled work on many leads (rule functions, interest decay).

pub mod edit;
pub mod history;
pub mod jobs;
pub mod manual;
pub mod worker;

pub use edit::LeadEdit;
pub use worker::{BatchOutcome, EventOutcome, Processor};
