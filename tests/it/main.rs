//! Integration tests: the daemon over real HTTP on a loopback port, the `nurtured`
//! binary, and real SQLite files in temporary folders.

mod api;
mod bad_data;
mod bench;
mod cli;
mod cluster;
mod desk;
mod dkim;
mod handoff;
mod helpers;
mod isolation;
pub mod lease;
pub mod mail;
mod privacy;
mod reports;
mod rules;
mod schedules;
mod shutdown;
mod store_copy;
mod streams;
