//! Schedules from the config: cron lines ([`crontab`]) that run a built-in job
//! (interest decay) or a rule function over matching leads ([`runner`]).

pub mod crontab;
pub mod runner;

pub use runner::{JobReport, Scheduler};
