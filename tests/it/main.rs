//! Integration tests: the daemon over real HTTP on a loopback port, the `nurtured`
//! binary, and real SQLite files in temporary folders.

mod anonymous;
mod api;
mod authoring;
mod backtest;
mod backtest_html;
mod bad_data;
mod bench;
mod bounces;
mod cli;
mod cluster;
mod delivery;
mod desk;
mod dkim;
mod fixture_mails;
mod handoff;
mod helpers;
mod history;
mod isolation;
mod keys;
pub mod lease;
mod lists;
pub mod mail;
mod mail_retry;
mod privacy;
mod reports;
mod rules;
mod schedules;
mod sdk;
mod shadow;
mod shutdown;
mod store_copy;
mod streams;
mod tag_sources;
mod template_data;
mod topics;
mod would_queue;
