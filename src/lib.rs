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
//! - [`mail`]: the outbox -> policy (consent, quarantine, cap) -> templates -> SMTP,
//!   and the nurture streams;
//! - [`bounces`]: what comes back after sending (delivery and feedback reports, ESP
//!   webhooks) -> suppression and consent;
//! - [`schedule`]: cron-driven jobs (interest decay, rule functions over leads);
//! - [`sla`]: business time for the sales handoff's deadlines;
//! - [`store`]: all SQL (SQLite and PostgreSQL), and copying a base between them;
//! - [`cluster`]: several daemons on one PostgreSQL database (lead shards, a leader);
//! - [`report`]: read models for the API and the CLI;
//! - [`metrics`]: Prometheus metrics for `/metrics`;
//! - [`backtest`]: the stored history replayed through two rule sets in memory;
//! - [`privacy`]: export and erasure of a person's data, retention of raw data;
//! - [`config`], [`clock`], [`daemon`] (wiring), [`cli`], [`bench`] (with
//!   [`smtp_sink`], a local SMTP server for the benchmark and the tests).

pub mod backtest;
pub mod bench;
pub mod bounces;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod daemon;
pub mod domain;
pub mod handoff;
pub mod http;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod privacy;
pub mod process;
pub mod report;
pub mod rules;
pub mod schedule;
pub mod sla;
pub mod smtp_sink;
pub mod store;

/// Picks ring as the process-wide TLS crypto provider. Two providers are linked (ring
/// for the SMTP client, aws-lc through the local test SMTP server); rustls refuses to
/// guess between them. Call once at start; later calls do nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
