//! The Rhai [`Engine`] rules run in: limits on work, depth, sizes and time per call;
//! no `eval`, no imports from disk (Rhai has no file or network access of its own);
//! `print` and `debug` go to the log.
//!
//! Rhai reports a hit limit at the outermost call, not where the rule was looping. So
//! when that happens, the event is run once more on a second engine that records each
//! step's position ([`Sandbox::locate`]); the last one is where the rule was stuck.
//! This costs nothing while rules behave.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rhai::{Dynamic, Engine, Position, module_resolvers::DummyModuleResolver};

use super::api;
use super::error::LimitNames;
use crate::config::Limits;

thread_local! {
    /// Wall-clock deadline of the rule call running on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Last position stepped through by the locating engine on this thread.
    static LAST_STEP: RefCell<Option<(String, Position)>> = const { RefCell::new(None) };
}

/// Runs `f` with a deadline `limit` from now for rule code on this thread.
pub fn with_deadline<T>(limit: std::time::Duration, f: impl FnOnce() -> T) -> T {
    let previous = DEADLINE.replace(Some(Instant::now() + limit));
    let out = f();
    DEADLINE.set(previous);
    out
}

/// The engines plus the limits they enforce (for messages).
pub struct Sandbox {
    pub engine: Engine,
    /// Same as `engine`, plus a step recorder; only used to find where a limit was hit.
    locator: Engine,
    pub limits: LimitNames,
    pub timeout: std::time::Duration,
    /// Where rule files record their run times (the daemon's); none in commands.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn build(limits: &Limits, thresholds: Arc<BTreeMap<String, f64>>) -> Engine {
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
        // The interner is shared and locked; rules run on several threads at once.
        .set_max_strings_interned(0)
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
    engine
}

impl Sandbox {
    pub fn new(limits: &Limits, thresholds: Arc<BTreeMap<String, f64>>) -> Self {
        let engine = build(limits, thresholds.clone());
        let mut locator = build(limits, thresholds);
        #[allow(deprecated)] // the debugger API is marked volatile, not deprecated
        locator.register_debugger(
            |_, debugger| debugger,
            |_, event, _, source, pos| {
                let step = matches!(
                    event,
                    rhai::debugger::DebuggerEvent::Step | rhai::debugger::DebuggerEvent::Start
                );
                if step && !pos.is_none() {
                    LAST_STEP.with(|s| {
                        let mut s = s.borrow_mut();
                        match s.as_mut() {
                            Some((file, p)) if source == Some(file.as_str()) => *p = pos,
                            _ => *s = Some((source.unwrap_or_default().to_string(), pos)),
                        }
                    });
                }
                Ok(rhai::debugger::DebuggerCommand::StepInto)
            },
        );
        Self {
            engine,
            locator,
            limits: LimitNames {
                max_operations: limits.max_operations,
                timeout: limits.timeout,
            },
            timeout: limits.timeout,
            metrics: None,
        }
    }

    /// Rule files compiled from now on record their run times in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs `f` on the locating engine and returns the last position it stepped through.
    pub fn locate(&self, f: impl FnOnce(&Engine)) -> Option<(String, Position)> {
        LAST_STEP.with(|s| s.borrow_mut().take());
        f(&self.locator);
        LAST_STEP.with(|s| s.borrow_mut().take())
    }
}
