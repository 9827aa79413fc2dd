//! The sales handoff's service level: the business-time [`calendar`] in which its
//! deadlines and escalation steps are counted. (Handoffs, owners and escalation build
//! on it.)

pub mod calendar;

pub use calendar::{Calendar, Hours};
