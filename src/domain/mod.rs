//! The lead and its funnel, as plain data with the rules for changing it.
//!
//! Nothing here touches the database or Rhai: rules and the API ask for changes, and
//! the functions here check them and record what changed, who asked and why.

pub mod change;
pub mod email;
pub mod funnel;
pub mod lead;
pub mod mail;
pub mod text;
pub mod traits;

pub use change::{Axis, Changes, HandoffRequest, ScoreChange, SettledHandoff, Source, StageMove};
pub use email::Email;
pub use funnel::{Funnel, Side, StageDef};
pub use lead::{Consent, Lead};
pub use mail::{MailClass, MailRequest, Repeat, StreamChange};
pub use traits::Traits;
