//! Privacy duties towards leads: everything stored about a person as one document
//! ([`export`]), forgetting a person while reports keep counting them (the erasure is
//! in [`crate::process::erase`]), the keyed hashes of erased addresses and the new
//! consent an erased address needs before marketing mail ([`erased`]), and the daily
//! deletion of old raw events and mail bodies ([`retention`]).

pub mod erased;
pub mod export;
pub mod retention;

pub use erased::AddressKey;
pub use export::Export;
