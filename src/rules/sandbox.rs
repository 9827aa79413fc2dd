//! The one Rhai [`Engine`] rules run in: limits on work, depth, sizes and time per call;
//! no `eval`, no imports from disk (Rhai has no file or network access of its own);
//! `print` and `debug` go to the log.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, Engine, module_resolvers::DummyModuleResolver};

use super::api;
use super::error::LimitNames;
use crate::config::Limits;

thread_local! {
    /// Wall-clock deadline of the rule call running on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with a deadline `limit` from now for rule code on this thread.
pub fn with_deadline<T>(limit: std::time::Duration, f: impl FnOnce() -> T) -> T {
    let previous = DEADLINE.replace(Some(Instant::now() + limit));
    let out = f();
    DEADLINE.set(previous);
    out
}

/// The engine plus the limits it enforces (for messages).
pub struct Sandbox {
    pub engine: Engine,
    pub limits: LimitNames,
    pub timeout: std::time::Duration,
}

impl Sandbox {
    pub fn new(limits: &Limits, thresholds: Arc<BTreeMap<String, f64>>) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_depth)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_variables(1_000)
            .set_max_functions(1_000)
            .set_max_modules(0)
            .set_strict_variables(true)
            .set_module_resolver(DummyModuleResolver::new());
        engine.disable_symbol("eval");
        engine.on_progress(|ops| {
            if ops % 512 == 0
                && let Some(deadline) = DEADLINE.get()
                && Instant::now() > deadline
            {
                return Some(Dynamic::from("deadline"));
            }
            None
        });
        engine.on_print(|text| tracing::info!(target: "rules", "{text}"));
        engine.on_debug(|text, source, pos| {
            tracing::debug!(target: "rules", source = source.unwrap_or(""), position = %pos, "{text}")
        });
        api::register(&mut engine, thresholds);
        Self {
            engine,
            limits: LimitNames {
                max_operations: limits.max_operations,
                timeout: limits.timeout,
            },
            timeout: limits.timeout,
        }
    }
}
