//! What a rule can ask for in mail: `lead.send_mail(template, options)` for trigger
//! mails, `lead.send_opt_in()` for the double opt-in confirmation, and
//! `lead.enroll(stream)` / `lead.unenroll(stream)`, and `lead.subscribed(topic)`: true
//! while the lead has marketing consent and has not left the topic.
//!
//! Asking is not sending: the mail goes to the outbox with the rest of the event's
//! changes, and consent, quarantine and the frequency cap are checked when it is sent.

use rhai::{Engine, Map, NativeCallContext};

use super::api::{LeadHandle, Res, Span, act, runtime, to_json};
use crate::domain::change::Action;
use crate::domain::{MailClass, MailRequest, Repeat};

/// The options `send_mail` accepts.
const OPTIONS: &str = "key, every, always, transactional, data";

/// The template of the double opt-in confirmation.
pub const OPT_IN_TEMPLATE: &str = "optin/confirm";

fn request(ctx: &NativeCallContext, template: &str, options: &Map) -> Res<MailRequest> {
    let mut m = MailRequest {
        template: template.trim().to_string(),
        class: MailClass::Marketing,
        key: String::new(),
        repeat: Repeat::Once,
        data: serde_json::Map::new(),
        opt_in: false,
    };
    for (name, value) in options {
        match name.as_str() {
            "key" => m.key = value.to_string(),
            "every" => {
                let span = value.clone().try_cast::<Span>().ok_or_else(|| {
                    runtime(
                        ctx,
                        format!(
                            "`every` takes a duration such as days(14), not {}",
                            value.type_name()
                        ),
                    )
                })?;
                m.repeat = Repeat::Every(span.0.num_milliseconds());
            }
            "always" => {
                if value
                    .as_bool()
                    .map_err(|t| runtime(ctx, format!("`always` takes true or false, not {t}")))?
                {
                    m.repeat = Repeat::Always;
                }
            }
            "transactional" => {
                if value.as_bool().map_err(|t| {
                    runtime(ctx, format!("`transactional` takes true or false, not {t}"))
                })? {
                    m.class = MailClass::Transactional;
                }
            }
            "data" => match to_json(ctx, value)? {
                serde_json::Value::Object(map) => m.data = map,
                other => {
                    return Err(runtime(
                        ctx,
                        format!("`data` must be a map such as #{{ topic: \"x\" }}, not {other}"),
                    ));
                }
            },
            other => {
                return Err(runtime(
                    ctx,
                    format!("send_mail has no option `{other}`; the options are: {OPTIONS}"),
                ));
            }
        }
    }
    Ok(m)
}

fn known_stream(ctx: &NativeCallContext, l: &LeadHandle, stream: &str) -> Res<()> {
    let streams = l.lock().streams.clone();
    if streams.iter().any(|s| s == stream) {
        Ok(())
    } else {
        Err(runtime(
            ctx,
            format!(
                "unknown stream `{stream}`; the streams are: {} (see [[streams]] in nurtured.toml)",
                streams.join(", ")
            ),
        ))
    }
}

pub fn register(engine: &mut Engine) {
    engine
        .register_fn(
            "subscribed",
            |ctx: NativeCallContext, l: &mut LeadHandle, topic: &str| -> Res<bool> {
                let s = l.lock();
                if !s.topics.iter().any(|t| t == topic) {
                    return Err(runtime(
                        &ctx,
                        format!(
                            "unknown topic `{topic}`; the topics are: {} (see [[topics]] in nurtured.toml)",
                            s.topics.join(", ")
                        ),
                    ));
                }
                Ok(s.lead.consent_email.granted && !s.lead.topics_left.contains(topic))
            },
        )
        .register_fn(
            "send_mail",
            |ctx: NativeCallContext, l: &mut LeadHandle, template: &str| -> Res<()> {
                let m = request(&ctx, template, &Map::new())?;
                act(&ctx, l, Action::SendMail(m))
            },
        )
        .register_fn(
            "send_mail",
            |ctx: NativeCallContext, l: &mut LeadHandle, template: &str, options: Map| -> Res<()> {
                let m = request(&ctx, template, &options)?;
                act(&ctx, l, Action::SendMail(m))
            },
        )
        .register_fn(
            "send_opt_in",
            |ctx: NativeCallContext, l: &mut LeadHandle| -> Res<()> {
                if l.lock().lead.consent_email.granted {
                    return Ok(()); // nothing to confirm
                }
                let m = MailRequest {
                    template: OPT_IN_TEMPLATE.to_string(),
                    class: MailClass::Transactional,
                    key: String::new(),
                    // A new sign-up may ask again, but not more than once a day.
                    repeat: Repeat::Every(86_400_000),
                    data: serde_json::Map::new(),
                    opt_in: true,
                };
                act(&ctx, l, Action::SendMail(m))
            },
        )
        .register_fn(
            "enroll",
            |ctx: NativeCallContext, l: &mut LeadHandle, stream: &str| -> Res<()> {
                known_stream(&ctx, l, stream)?;
                act(&ctx, l, Action::Enroll(stream.to_string()))
            },
        )
        .register_fn(
            "unenroll",
            |ctx: NativeCallContext, l: &mut LeadHandle, stream: &str| -> Res<()> {
                known_stream(&ctx, l, stream)?;
                act(&ctx, l, Action::Unenroll(stream.to_string()))
            },
        );
}
