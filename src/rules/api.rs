//! What a rule can see and do: the `lead` object handed to rule functions, duration
//! helpers (`days(30)`), `threshold(name)` and small text helpers.
//!
//! Calls that change the lead are checked and applied to a working copy at once, so a
//! later rule in the same event sees the result; the working copy is kept only if the
//! whole event succeeds. Each change remembers the file and line that asked for it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, Map, NativeCallContext};
use serde_json::Value;

use crate::domain::change::{Action, Axis};
use crate::domain::{Changes, Funnel, Lead, Source};

pub(super) type Res<T> = Result<T, Box<EvalAltResult>>;

/// The event history a rule can ask about.
pub trait History: Send + Sync {
    /// Counts the lead's events named `name` (all events when `None`) whose properties
    /// contain every key/value of `filter`, that happened in `[since, until]` and arrived
    /// no later than event `upto_seq`.
    fn count(
        &self,
        lead_id: i64,
        name: Option<&str>,
        filter: Option<&serde_json::Map<String, Value>>,
        since: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        upto_seq: i64,
    ) -> Result<i64, String>;
}

/// State of one rule run on one lead.
pub struct Session {
    pub lead: Lead,
    pub changes: Changes,
    pub funnel: Arc<Funnel>,
    pub history: Arc<dyn History>,
    /// Names of the configured nurture streams.
    pub streams: Arc<Vec<String>>,
    /// Names of the sales teams.
    pub teams: Arc<Vec<String>>,
    /// Ids of the configured `[[topics]]`.
    pub topics: Arc<Vec<String>>,
    /// "Now" for the rules: the event's time, or the job's run time.
    pub at: DateTime<Utc>,
    /// Counting sees events up to this one (the current event included).
    pub upto_seq: i64,
    /// The rule file running now (named in the source of each change).
    pub file: Arc<str>,
}

/// The `lead` object in Rhai: a handle on the [`Session`].
#[derive(Clone)]
pub struct LeadHandle(Arc<Mutex<Session>>);

impl LeadHandle {
    pub fn new(session: Session) -> Self {
        Self(Arc::new(Mutex::new(session)))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Session> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the rule file about to run.
    pub fn set_file(&self, file: &Arc<str>) {
        self.lock().file = Arc::clone(file);
    }

    /// Ends the run and hands back the session.
    pub fn finish(self) -> Session {
        match Arc::try_unwrap(self.0) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(shared) => {
                // A rule kept a copy of the lead somewhere; take the state out anyway.
                let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
                Session {
                    lead: guard.lead.clone(),
                    changes: std::mem::take(&mut guard.changes),
                    funnel: guard.funnel.clone(),
                    history: guard.history.clone(),
                    streams: guard.streams.clone(),
                    teams: guard.teams.clone(),
                    topics: guard.topics.clone(),
                    at: guard.at,
                    upto_seq: guard.upto_seq,
                    file: guard.file.clone(),
                }
            }
        }
    }
}

/// A length of time (`days(30)`), used for history windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub chrono::Duration);

pub(super) fn runtime(ctx: &NativeCallContext, message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        ctx.call_position(),
    ))
}

/// Applies an action for the calling rule; a refused action becomes a rule error at the
/// call's position.
pub(super) fn act(ctx: &NativeCallContext, lead: &mut LeadHandle, action: Action) -> Res<()> {
    let mut s = lead.lock();
    let pos = ctx.call_position();
    let source = Source::Rule {
        file: Arc::clone(&s.file),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
    };
    let Session {
        lead,
        changes,
        funnel,
        at,
        ..
    } = &mut *s;
    lead.apply(action, &source, *at, funnel, changes)
        .map(|_| ())
        .map_err(|e| runtime(ctx, e.to_string()))
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

pub(super) fn to_json(ctx: &NativeCallContext, v: &Dynamic) -> Res<Value> {
    rhai::serde::from_dynamic::<Value>(v)
        .map_err(|e| runtime(ctx, format!("this value cannot be stored: {e}")))
}

fn to_dynamic(v: &Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

/// Registers the rule API on `engine`. `thresholds` are the named numbers from config.
pub fn register(engine: &mut Engine, thresholds: Arc<BTreeMap<String, f64>>) {
    engine.register_type_with_name::<LeadHandle>("Lead");
    engine.register_type_with_name::<Span>("Duration");
    super::mail_api::register(engine);
    super::sales_api::register(engine);

    // Read-only fields. Unknown text is "" and unknown numbers are 0, so comparisons
    // never fail on a missing value; `lead.has("phone")` tells known from unknown.
    macro_rules! text_field {
        ($($name:literal => $field:ident),* $(,)?) => {$(
            engine.register_get($name, |l: &mut LeadHandle| text(&l.lock().lead.$field));
        )*};
    }
    text_field!(
        "external_id" => external_id, "first_name" => first_name, "last_name" => last_name,
        "phone" => phone, "company" => company, "title" => title, "industry" => industry,
        "country" => country, "time_zone" => time_zone, "locale" => locale, "owner" => owner,
    );
    engine
        .register_get("email", |l: &mut LeadHandle| {
            l.lock().lead.email.as_str().to_string()
        })
        .register_get("email_domain", |l: &mut LeadHandle| {
            l.lock().lead.email.domain().to_string()
        })
        .register_get("name", |l: &mut LeadHandle| l.lock().lead.name())
        .register_get("employees", |l: &mut LeadHandle| -> INT {
            l.lock().lead.employees.unwrap_or(0)
        })
        .register_get("revenue", |l: &mut LeadHandle| -> FLOAT {
            l.lock().lead.revenue.unwrap_or(0.0)
        })
        .register_get("stage", |l: &mut LeadHandle| l.lock().lead.stage.clone())
        .register_get("fit", |l: &mut LeadHandle| -> FLOAT { l.lock().lead.fit })
        .register_get("interest", |l: &mut LeadHandle| -> FLOAT {
            l.lock().lead.interest
        })
        .register_get("tags", |l: &mut LeadHandle| -> Array {
            l.lock()
                .lead
                .tags
                .iter()
                .map(|t| Dynamic::from(t.clone()))
                .collect()
        })
        .register_get("consent_email", |l: &mut LeadHandle| {
            l.lock().lead.consent_email.granted
        })
        .register_get("consent_tracking", |l: &mut LeadHandle| {
            l.lock().lead.consent_tracking.granted
        })
        .register_get("attributes", |l: &mut LeadHandle| -> Dynamic {
            to_dynamic(&Value::Object(l.lock().lead.attributes.clone()))
        })
        .register_get("days_in_stage", |l: &mut LeadHandle| -> INT {
            let s = l.lock();
            (s.at - s.lead.stage_since).num_days()
        })
        .register_get("side", |l: &mut LeadHandle| {
            let s = l.lock();
            s.funnel
                .stage(&s.lead.stage)
                .map_or_else(String::new, |d| d.side.to_string())
        })
        .register_get("is_closed", |l: &mut LeadHandle| {
            let s = l.lock();
            s.funnel.is_closed(&s.lead.stage)
        });

    engine
        .register_fn("has_tag", |l: &mut LeadHandle, tag: &str| {
            l.lock().lead.tags.contains(tag)
        })
        .register_fn("attr", |l: &mut LeadHandle, key: &str| -> Dynamic {
            l.lock()
                .lead
                .attributes
                .get(key)
                .map_or(Dynamic::UNIT, to_dynamic)
        })
        .register_fn(
            "has",
            |ctx: NativeCallContext, l: &mut LeadHandle, field: &str| -> Res<bool> {
                let s = l.lock();
                let lead = &s.lead;
                let known = |v: &Option<String>| v.as_deref().is_some_and(|t| !t.is_empty());
                Ok(match field {
                    "email" => true,
                    "name" => known(&lead.first_name) || known(&lead.last_name),
                    "first_name" => known(&lead.first_name),
                    "last_name" => known(&lead.last_name),
                    "phone" => known(&lead.phone),
                    "company" => known(&lead.company),
                    "title" => known(&lead.title),
                    "industry" => known(&lead.industry),
                    "country" => known(&lead.country),
                    "time_zone" => known(&lead.time_zone),
                    "locale" => known(&lead.locale),
                    "owner" => known(&lead.owner),
                    "external_id" => known(&lead.external_id),
                    "employees" => lead.employees.is_some(),
                    "revenue" => lead.revenue.is_some(),
                    other => {
                        return Err(runtime(
                            &ctx,
                            format!(
                                "`{other}` is not a lead field; has() knows: name, first_name, \
                                 last_name, phone, company, title, industry, country, \
                                 time_zone, locale, owner, external_id, employees, revenue \
                                 (use lead.attr(\"{other}\") for free attributes)"
                            ),
                        ));
                    }
                })
            },
        )
        .register_fn(
            "stage_at_least",
            |ctx: NativeCallContext, l: &mut LeadHandle, stage: &str| -> Res<bool> {
                let s = l.lock();
                let want = s.funnel.position(stage).ok_or_else(|| {
                    runtime(
                        &ctx,
                        format!(
                            "unknown stage `{stage}`; the stages are: {}",
                            s.funnel.names_joined()
                        ),
                    )
                })?;
                Ok(s.funnel.position(&s.lead.stage).is_some_and(|p| p >= want))
            },
        );

    // Changes.
    fn points(v: &Dynamic) -> Option<f64> {
        v.as_int()
            .map(|i| i as f64)
            .ok()
            .or_else(|| v.as_float().ok())
    }
    for (name, axis) in [("add_fit", Axis::Fit), ("add_interest", Axis::Interest)] {
        engine.register_fn(
            name,
            move |ctx: NativeCallContext,
                  l: &mut LeadHandle,
                  p: Dynamic,
                  reason: &str|
                  -> Res<()> {
                let points = points(&p).ok_or_else(|| {
                    runtime(
                        &ctx,
                        format!("points must be a number, not {}", p.type_name()),
                    )
                })?;
                act(
                    &ctx,
                    l,
                    Action::AddScore {
                        axis,
                        points,
                        reason: reason.to_string(),
                    },
                )
            },
        );
    }
    engine
        .register_fn(
            "set_fit",
            |ctx: NativeCallContext,
             l: &mut LeadHandle,
             criterion: &str,
             p: Dynamic,
             reason: &str|
             -> Res<()> {
                let points = points(&p).ok_or_else(|| {
                    runtime(
                        &ctx,
                        format!("points must be a number, not {}", p.type_name()),
                    )
                })?;
                let current = l.lock().lead.fit_parts.get(criterion).copied();
                if current.unwrap_or(0.0) == points {
                    return Ok(()); // nothing changes
                }
                act(
                    &ctx,
                    l,
                    Action::SetFit {
                        criterion: criterion.to_string(),
                        points,
                        reason: reason.to_string(),
                    },
                )
            },
        )
        .register_fn(
            "set_stage",
            |ctx: NativeCallContext, l: &mut LeadHandle, stage: &str, reason: &str| {
                act(
                    &ctx,
                    l,
                    Action::SetStage {
                        stage: stage.to_string(),
                        reason: reason.to_string(),
                    },
                )
            },
        )
        .register_fn(
            "tag",
            |ctx: NativeCallContext, l: &mut LeadHandle, tag: &str| {
                let tag = tag.trim();
                if l.lock().lead.tags.contains(tag) {
                    return Ok(()); // nothing changes
                }
                act(&ctx, l, Action::Tag(tag.to_string()))
            },
        )
        .register_fn(
            "untag",
            |ctx: NativeCallContext, l: &mut LeadHandle, tag: &str| {
                let tag = tag.trim();
                if !l.lock().lead.tags.contains(tag) {
                    return Ok(()); // nothing changes
                }
                act(&ctx, l, Action::Untag(tag.to_string()))
            },
        )
        .register_fn(
            "set_attr",
            |ctx: NativeCallContext, l: &mut LeadHandle, key: &str, value: Dynamic| -> Res<()> {
                let value = if value.is_unit() {
                    None
                } else {
                    Some(to_json(&ctx, &value)?)
                };
                act(
                    &ctx,
                    l,
                    Action::SetAttr {
                        key: key.to_string(),
                        value,
                    },
                )
            },
        )
        .register_fn(
            "remove_attr",
            |ctx: NativeCallContext, l: &mut LeadHandle, key: &str| {
                act(
                    &ctx,
                    l,
                    Action::SetAttr {
                        key: key.to_string(),
                        value: None,
                    },
                )
            },
        );

    // History.
    fn count(
        ctx: &NativeCallContext,
        l: &LeadHandle,
        name: &str,
        filter: Option<Map>,
        window: Option<Span>,
    ) -> Res<INT> {
        let filter = match filter {
            Some(m) => match to_json(ctx, &Dynamic::from_map(m))? {
                Value::Object(o) => Some(o),
                _ => None,
            },
            None => None,
        };
        let (history, lead_id, at, upto) = {
            let s = l.lock();
            (s.history.clone(), s.lead.id, s.at, s.upto_seq)
        };
        let name = (!name.is_empty() && name != "*").then_some(name);
        let since = window.map(|w| at - w.0);
        history
            .count(lead_id, name, filter.as_ref(), since, at, upto)
            // Not the rule's fault: a system error, so the batch is retried as a whole.
            .map_err(|e| {
                Box::new(EvalAltResult::ErrorSystem(
                    "cannot read the lead's history".into(),
                    e.into(),
                ))
            })
    }
    engine
        .register_fn(
            "count",
            |ctx: NativeCallContext, l: &mut LeadHandle, name: &str| {
                count(&ctx, l, name, None, None)
            },
        )
        .register_fn(
            "count",
            |ctx: NativeCallContext, l: &mut LeadHandle, name: &str, w: Span| {
                count(&ctx, l, name, None, Some(w))
            },
        )
        .register_fn(
            "count",
            |ctx: NativeCallContext, l: &mut LeadHandle, name: &str, f: Map| {
                count(&ctx, l, name, Some(f), None)
            },
        )
        .register_fn(
            "count",
            |ctx: NativeCallContext, l: &mut LeadHandle, name: &str, f: Map, w: Span| {
                count(&ctx, l, name, Some(f), Some(w))
            },
        );

    // Durations.
    for (name, unit) in [
        ("minutes", chrono::Duration::minutes(1)),
        ("hours", chrono::Duration::hours(1)),
        ("days", chrono::Duration::days(1)),
        ("weeks", chrono::Duration::weeks(1)),
    ] {
        engine.register_fn(name, move |ctx: NativeCallContext, n: INT| -> Res<Span> {
            if !(0..=100_000).contains(&n) {
                return Err(runtime(
                    &ctx,
                    format!("{name}({n}) is out of range (0 to 100000)"),
                ));
            }
            Ok(Span(unit * n as i32))
        });
    }
    engine.register_fn("to_string", |s: &mut Span| {
        format!("{} days", s.0.num_seconds() as f64 / 86_400.0)
    });

    // Settings and helpers.
    engine.register_fn(
        "threshold",
        move |ctx: NativeCallContext, name: &str| -> Res<FLOAT> {
            thresholds.get(name).copied().ok_or_else(|| {
                runtime(
                    &ctx,
                    format!(
                        "unknown threshold `{name}`; the [thresholds] in nurtured.toml are: {}",
                        thresholds.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        },
    );
    engine.register_fn("matches_any", |text: &str, words: Array| -> bool {
        let text = text.to_lowercase();
        words.iter().any(|w| {
            w.read_lock::<rhai::ImmutableString>()
                .is_some_and(|w| !w.is_empty() && text.contains(&w.to_lowercase()))
        })
    });
    super::property_check::remember_lead_properties(engine);
}
