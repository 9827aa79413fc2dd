//! Mail out: templates, the outbox's delivery worker, streams, quarantine and consent.
//!
//! - [`plan`]: which streams a lead belongs in after a change (written with it);
//! - [`deliver`]: the worker that sends due mails; [`policy`]: may this mail go out now;
//!   [`refusal`]: whose problem a refusal is; [`breaker`]: the pause while the server
//!   refuses the sender;
//! - [`templates`]: Tera templates per locale; [`message`]: the RFC 5322 message with
//!   List-Unsubscribe and DKIM; [`transport`]: SMTP ([`smtp_pool`]) or `.eml` files;
//! - [`links`] and [`token`]: signed unsubscribe, confirmation and tracking links;
//! - [`window`]: the send window in the lead's time zone.

pub mod breaker;
pub mod deliver;
pub mod links;
pub mod message;
pub mod plan;
pub mod policy;
pub mod refusal;
pub mod smtp_pool;
pub mod templates;
pub mod token;
pub mod transport;
pub mod window;
pub mod would_queue;

pub use deliver::{Mailer, Pass};
pub use plan::StreamPlan;
pub use templates::{TemplateError, Templates};
pub use token::{Purpose, Signer};
