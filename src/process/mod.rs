//! Event processing. Pending events are read in arrival order; each lead's events run
//! one after the other through the rules (off the async reactor), while different
//! leads run side by side; results are written in shared transactions. A rule file
//! that fails for an event loses its own changes for it, the other files' changes are
//! written, and the event is kept as failed for that file (retried for it alone); an
//! event that cannot run at all is kept as failed as a whole. Shadow rule files'
//! would-be actions are written with the batch.
//!
//! - [`feed`]: events handed from intake straight to the pipeline;
//! - [`processor`]: the shared parts, the lease, and a single batch
//!   ([`processor::Processor::run_once`]) for the command line and rule fixtures;
//! - [`pipeline`]: the daemon's continuous processing, per-lead queues; [`lanes`]: the
//!   rule threads; [`evaluate`]: one lead's events through the rules; [`commit`]:
//!   group commit of the results;
//! - [`locks`]: per-lead locks; [`cache`]: leads ([`compact`]) and their histories
//!   ([`history`]) in memory under one byte budget;
//! - [`manual`]: changes made through the API (sales, CRM), under the lead's lock;
//! - [`edit`]: one lead's change written together with the caller's own rows (a
//!   handoff answered);
//! - [`jobs`]: scheduled work on many leads (rule functions, interest decay);
//! - [`topics`]: a lead's topic preferences, changed by the lead.

pub mod cache;
pub mod commit;
pub mod compact;
pub mod edit;
pub mod erase;
pub mod evaluate;
pub mod feed;
pub mod history;
pub mod history_only;
pub mod jobs;
pub mod lanes;
pub mod locks;
pub mod manual;
pub mod pipeline;
pub mod processor;
pub mod topics;

pub use edit::LeadEdit;
pub use evaluate::EventOutcome;
pub use processor::{BatchOutcome, ProcessError, Processor};
