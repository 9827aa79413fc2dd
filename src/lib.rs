//! nurtured: a daemon for B2B lead management. It takes in what leads do, runs the
//! rules marketing ops write in Rhai, scores leads on fit and interest, and moves
//! them through a configurable funnel, explaining every change.
//!
//! # Layout
//! The modules follow the data flow:
//!
//! - [`http`] and [`ingest`]: events in (Segment HTTP API, JSONL files), checked and
//!   stored durably;
//! - [`process`]: pending events in batches -> [`rules`] (Rhai, sandboxed) -> changes
//!   to the lead ([`domain`]) -> one transaction per batch;
//! - [`schedule`]: cron-driven jobs (interest decay, rule functions over leads);
//! - [`store`]: all SQL (SQLite);
//! - [`report`]: read models for the API and the CLI;
//! - [`config`], [`clock`], [`daemon`] (wiring), [`cli`], [`bench`].

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod process;
pub mod report;
pub mod rules;
pub mod schedule;
pub mod store;
