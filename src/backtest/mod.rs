//! `nurtured backtest`: the stored history replayed through two rule sets, compared
//! with each other and with real outcomes ([`outcomes`], [`labels`]), as JSON or as
//! one HTML page ([`html`]).

pub mod html;
pub mod labels;
pub mod outcomes;
