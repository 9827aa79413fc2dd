//! Rules: Rhai scripts written by marketing ops, compiled once, run in a sandbox for
//! every event. Rules decide; Rust checks and applies what they ask for.
//!
//! - [`sandbox`]: the engine and its limits;
//! - [`api`]: the `lead` object and helpers a rule can call; [`mail_api`]: mail and
//!   streams;
//! - [`ruleset`]: compiled files and reload; [`watch`]: reload on change;
//! - [`run`]: calling `on_event` / a scheduled function;
//! - [`fixture`]: `nurtured rules test`; [`error`]: errors with file:line:column;
//! - [`shadow`]: the files that run in shadow follow the config file;
//! - [`property_check`]: unknown `lead.NAME` / `event.NAME`, found when a file compiles;
//! - [`topic_check`]: unknown topic ids in `subscribed("...")`, for `nurtured rules check`.

pub mod api;
pub mod error;
pub mod fixture;
pub mod mail_api;
pub mod property_check;
pub mod ruleset;
pub mod run;
pub mod sales_api;
pub mod sandbox;
pub mod shadow;
pub mod topic_check;
pub mod watch;

pub use error::RuleError;
pub use ruleset::{RuleSet, Rules};
pub use run::{Context, Evaluation, EventView, ShadowRun};
pub use sandbox::Sandbox;
