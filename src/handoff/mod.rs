//! Handing leads to sales: a handoff is asked for by a rule (`lead.handoff(team,
//! reason)`) or by entering a stage (`[sales] on_stage`), written with the change that
//! caused it, and then worked by the [`desk::Desk`]:
//!
//! - [`desk`]: runs the passes: new handoffs in batches, then the escalation steps at
//!   their minute;
//! - [`assign`]: gives a batch of new handoffs owners (in turn or by a rule) and
//!   deadlines in the owners' business time, and queues their notifications;
//! - [`ladder`]: when each step of an assignment falls;
//! - [`brief`]: what sales is told about the lead;
//! - [`answer`]: accept (-> `sal`) or reject with a reason (-> back to marketing);
//! - [`webhook`]: signed JSON or Slack calls for each step, with retries.

pub mod answer;
pub mod assign;
pub mod brief;
pub mod desk;
pub mod ladder;
pub mod webhook;

pub use answer::{Answer, AnswerError};
pub use desk::{Desk, DeskError, DeskPass};
pub use webhook::WebhookSender;
