//! Integration tests: the daemon over real HTTP on a loopback port, the `nurtured`
//! binary, and real SQLite files in temporary folders.

mod anonymous;
mod api;
mod backtest;
mod bad_data;
mod bench;
mod bounces;
mod cli;
mod cluster;
mod delivery;
mod desk;
mod dkim;
mod handoff;
mod helpers;
mod history;
mod isolation;
mod keys;
pub mod lease;
pub mod mail;
mod privacy;
mod reports;
mod rules;
mod schedules;
mod sdk;
mod shutdown;
mod store_copy;
mod streams;
mod topics;
