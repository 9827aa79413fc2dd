//! The preference page `/p/{token}` and the unsubscribe page `/u/{token}`, in the
//! lead's language (German or English; else `mail.default_locale`), rendered with
//! Tera with every value escaped.
//!
//! The pages show the lead's address masked (`a***@example.com`): a link found in a log
//! does not tell whose it is.
//!
//! GET only shows (mail scanners follow links): the topics with a checkbox each, and
//! "leave all". POST acts: the topics not ticked are left, the ticked ones kept (or
//! taken again); "leave all" withdraws the marketing consent. On `/u/`, a POST without
//! `action=leave_all` (the page's first button, or a mail client's RFC 8058 one-click
//! `List-Unsubscribe=One-Click`) leaves only the topic of the mail the link came in;
//! links without a topic (older mails, or a topic since removed from the config)
//! withdraw the consent as before.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::AppState;
use crate::domain::Lead;
use crate::mail::token::{Claim, Purpose};
use crate::process::manual::ConsentKind;
use crate::process::topics::TopicChoice;

const PAGE: &str = r#"<!doctype html>
<html lang="{{ t.lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>{{ title }}</title></head>
<body style="font-family:sans-serif;max-width:36em;margin:3em auto">
<h1>{{ title }}</h1>
{% for p in paragraphs %}<p>{{ p }}</p>
{% endfor %}{% if form == "preferences" %}<form method="post">
<fieldset><legend>{{ t.topics }}</legend>
{% for topic in topics %}<p><label><input type="checkbox" name="keep" value="{{ topic.id }}"{% if topic.kept %} checked{% endif %}> <strong>{{ topic.name }}</strong></label>{% if topic.description %}<br><small>{{ topic.description }}</small>{% endif %}</p>
{% endfor %}</fieldset>
<p><button type="submit" name="action" value="save">{{ t.save }}</button></p>
<p><button type="submit" name="action" value="leave_all">{{ t.leave_all }}</button></p>
</form>
{% elif form == "unsubscribe" %}<form method="post">
{% if topic %}<p><button type="submit" name="List-Unsubscribe" value="One-Click">{{ t.leave_topic }}</button></p>
{% endif %}<p><button type="submit" name="action" value="leave_all">{{ t.leave_all }}</button></p>
</form>
{% if preferences_url %}<p><a href="{{ preferences_url }}">{{ t.choose }}</a></p>{% endif %}
{% endif %}</body></html>
"#;

static TERA: LazyLock<tera::Tera> = LazyLock::new(|| {
    let mut tera = tera::Tera::new();
    tera.autoescape_on([".html"]);
    tera.add_raw_template("page.html", PAGE)
        .expect("the page template compiles");
    tera
});

/// The words of the pages in one language.
#[derive(Debug, Clone, Copy, Serialize)]
struct Texts {
    lang: &'static str,
    preferences: &'static str,
    intro: &'static str,
    topics: &'static str,
    save: &'static str,
    leave_all: &'static str,
    saved: &'static str,
    saved_some: &'static str,
    saved_none: &'static str,
    left_all: &'static str,
    no_consent: &'static str,
    unsubscribe: &'static str,
    unsubscribe_ask: &'static str,
    unsubscribe_ask_topic: &'static str,
    leave_topic: &'static str,
    left_topic: &'static str,
    choose: &'static str,
    invalid: &'static str,
    invalid_text: &'static str,
    unknown: &'static str,
    unknown_text: &'static str,
    later: &'static str,
    later_text: &'static str,
}

const DE: Texts = Texts {
    lang: "de",
    preferences: "E-Mail-Einstellungen",
    intro: "Wählen Sie, welche E-Mails Sie an {email} erhalten möchten.",
    topics: "Themen",
    save: "Auswahl speichern",
    leave_all: "Keine Marketing-E-Mails mehr erhalten",
    saved: "Gespeichert",
    saved_some: "Sie erhalten weiter E-Mails zu: {topics}.",
    saved_none: "Sie erhalten keine E-Mails zu unseren Themen mehr.",
    left_all: "Sie erhalten keine Marketing-E-Mails mehr von uns.",
    no_consent: "Sie erhalten derzeit keine Marketing-E-Mails von uns.",
    unsubscribe: "Abmelden",
    unsubscribe_ask: "Möchten Sie keine weiteren E-Mails von uns erhalten?",
    unsubscribe_ask_topic: "Möchten Sie keine E-Mails mehr zum Thema „{topic}“ erhalten?",
    leave_topic: "Ja, von diesem Thema abmelden",
    left_topic: "Sie erhalten keine E-Mails mehr zum Thema „{topic}“.",
    choose: "Themen einzeln wählen",
    invalid: "Ungültiger Link",
    invalid_text: "Dieser Link ist ungültig oder unvollständig. Bitte verwenden Sie den Link \
                   aus der E-Mail unverändert.",
    unknown: "Link nicht mehr gültig",
    unknown_text: "Zu diesem Link gibt es keinen Empfänger mehr.",
    later: "Bitte später erneut versuchen",
    later_text: "Ihre Auswahl konnte gerade nicht gespeichert werden.",
};

const EN: Texts = Texts {
    lang: "en",
    preferences: "E-mail preferences",
    intro: "Choose which e-mails you want to receive at {email}.",
    topics: "Topics",
    save: "Save my choice",
    leave_all: "Stop all marketing e-mails",
    saved: "Saved",
    saved_some: "You will keep receiving e-mails about: {topics}.",
    saved_none: "You will no longer receive e-mails about our topics.",
    left_all: "You will no longer receive marketing e-mails from us.",
    no_consent: "You currently receive no marketing e-mails from us.",
    unsubscribe: "Unsubscribe",
    unsubscribe_ask: "Do you want to stop receiving e-mails from us?",
    unsubscribe_ask_topic: "Do you want to stop receiving e-mails about “{topic}”?",
    leave_topic: "Yes, unsubscribe from this topic",
    left_topic: "You will no longer receive e-mails about “{topic}”.",
    choose: "Choose topics one by one",
    invalid: "Invalid link",
    invalid_text: "This link is invalid or incomplete. Please use the link from the e-mail \
                   unchanged.",
    unknown: "Link no longer valid",
    unknown_text: "There is no recipient for this link any more.",
    later: "Please try again later",
    later_text: "Your choice could not be saved just now.",
};

/// The texts for `locale` (`en-GB` counts as `en`).
fn texts(locale: &str) -> &'static Texts {
    match locale.split(['-', '_']).next().unwrap_or_default() {
        "en" => &EN,
        _ => &DE,
    }
}

/// The lead's language, else the configured default one.
fn locale_of(state: &AppState, lead: Option<&Lead>) -> String {
    let lang = |l: &str| {
        l.split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_lowercase()
    };
    lead.and_then(|l| l.locale.as_deref())
        .map(lang)
        .filter(|l| l == "de" || l == "en")
        .unwrap_or_else(|| lang(&state.config.mail.default_locale))
}

fn render(
    status: StatusCode,
    t: &Texts,
    title: &str,
    paragraphs: &[String],
    extra: serde_json::Value,
) -> Response {
    let mut context = json!({
        "t": t,
        "title": title,
        "paragraphs": paragraphs,
        "form": "",
        "topics": [],
        "topic": "",
        "preferences_url": "",
    });
    if let (Some(c), serde_json::Value::Object(extra)) = (context.as_object_mut(), extra) {
        c.extend(extra);
    }
    let html = tera::Context::from_serialize(&context)
        .and_then(|ctx| TERA.render("page.html", &ctx))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the preference page does not render");
            String::from("<!doctype html><title>Error</title>")
        });
    // The URL holds the token: not kept by caches, not sent on as a referrer.
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

fn message(status: StatusCode, t: &Texts, title: &str, text: &str) -> Response {
    render(status, t, title, &[text.to_string()], json!({}))
}

fn invalid(state: &AppState) -> Response {
    let t = texts(&state.config.mail.default_locale);
    message(StatusCode::BAD_REQUEST, t, t.invalid, t.invalid_text)
}

fn unknown(t: &Texts) -> Response {
    message(StatusCode::NOT_FOUND, t, t.unknown, t.unknown_text)
}

fn later(t: &Texts) -> Response {
    message(StatusCode::SERVICE_UNAVAILABLE, t, t.later, t.later_text)
}

/// The lead of a verified link, if it still has the address the link was made for.
async fn lead_of(state: &AppState, claim: &Claim) -> Result<Option<Lead>, Response> {
    match state.processor.store.leads_by_ids(&[claim.lead]).await {
        Ok(mut leads) => Ok(leads
            .remove(&claim.lead)
            .filter(|l| state.signer.is_for(claim, l.email.as_str()))),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the lead of a link");
            Err(later(texts(&state.config.mail.default_locale)))
        }
    }
}

/// Verifies the token and finds its lead; or the page that says why not.
async fn open(state: &AppState, token: &str, purpose: Purpose) -> Result<(Claim, Lead), Response> {
    let claim = state
        .signer
        .verify(token, purpose)
        .map_err(|_| invalid(state))?;
    let lead = lead_of(state, &claim).await?;
    match lead {
        Some(lead) => Ok((claim, lead)),
        None => Err(unknown(texts(&state.config.mail.default_locale))),
    }
}

fn topic_name<'a>(state: &'a AppState, id: &'a str, locale: &str) -> &'a str {
    state
        .config
        .topics
        .get(id)
        .map_or(id, |t| t.name_in(locale))
}

fn source(what: &str, claim: &Claim) -> String {
    match claim.mail {
        Some(m) => format!("{what} (mail {m})"),
        None => what.to_string(),
    }
}

/// GET `/p/{token}`: the topics and the lead's choices; changes nothing.
#[utoipa::path(
    get,
    path = "/p/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "The preference page", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 404, description = "The lead no longer has the address", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (_, lead) = match open(&state, &token, Purpose::Preferences).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    preferences_form(&state, &lead, StatusCode::OK, Vec::new())
}

fn preferences_form(
    state: &AppState,
    lead: &Lead,
    status: StatusCode,
    mut paragraphs: Vec<String>,
) -> Response {
    let locale = locale_of(state, Some(lead));
    let t = texts(&locale);
    if !lead.consent_email.granted {
        paragraphs.push(t.no_consent.to_string());
        return render(status, t, t.preferences, &paragraphs, json!({}));
    }
    paragraphs.push(t.intro.replace("{email}", &masked(lead.email.as_str())));
    let topics: Vec<_> = state
        .config
        .topics
        .list
        .iter()
        .map(|topic| {
            json!({
                "id": topic.id,
                "name": topic.name_in(&locale),
                "description": topic.description_in(&locale),
                "kept": !lead.topics_left.contains(&topic.id),
            })
        })
        .collect();
    render(
        status,
        t,
        t.preferences,
        &paragraphs,
        json!({"form": "preferences", "topics": topics}),
    )
}

/// The address with its local part hidden but for the first character
/// (`a***@example.com`): enough for the lead to recognise it, nothing for someone who
/// found the link in a log.
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// The form fields: every `keep` value, and `action`.
fn form_fields(body: &[u8]) -> (BTreeSet<String>, String) {
    let mut keep = BTreeSet::new();
    let mut action = String::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "keep" => {
                keep.insert(v.into_owned());
            }
            "action" => action = v.into_owned(),
            _ => {}
        }
    }
    (keep, action)
}

/// POST `/p/{token}`: keeps the ticked topics and leaves the others, or leaves all.
#[utoipa::path(
    post,
    path = "/p/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    request_body(content = Option<super::openapi::PreferenceForm>, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The choices were saved", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 404, description = "The lead no longer has the address", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn save(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let (claim, lead) = match open(&state, &token, Purpose::Preferences).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let locale = locale_of(&state, Some(&lead));
    let t = texts(&locale);
    let (keep, action) = form_fields(&body);
    let all: BTreeSet<String> = state.config.topics.ids().into_iter().collect();
    let keep: BTreeSet<String> = keep.intersection(&all).cloned().collect();
    let choice = TopicChoice {
        leave: all.difference(&keep).cloned().collect(),
        keep: keep.clone(),
        leave_all: action == "leave_all",
    };
    let is_for = |email: &str| state.signer.is_for(&claim, email);
    let source = source("preference page", &claim);
    match state
        .processor
        .set_topics(claim.lead, &is_for, &choice, &source)
        .await
    {
        Ok(Some(_)) if choice.leave_all => message(StatusCode::OK, t, t.saved, t.left_all),
        Ok(Some(lead)) => {
            let names: Vec<&str> = state
                .config
                .topics
                .list
                .iter()
                .filter(|x| !lead.topics_left.contains(&x.id))
                .map(|x| x.name_in(&locale))
                .collect();
            let said = if names.is_empty() {
                t.saved_none.to_string()
            } else {
                t.saved_some.replace("{topics}", &names.join(", "))
            };
            preferences_form(&state, &lead, StatusCode::OK, vec![said])
        }
        Ok(None) => unknown(t),
        Err(e) => {
            tracing::error!(error = %e, "topic preferences not saved");
            later(t)
        }
    }
}

/// GET `/u/{token}`: asks before unsubscribing (the mail's topic, or everything).
#[utoipa::path(
    get,
    path = "/u/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    responses(
        (status = 200, description = "The unsubscribe page with its button", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 404, description = "The lead no longer has the address", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Response {
    let Ok(claim) = state.signer.verify(&token, Purpose::Unsubscribe) else {
        return invalid(&state);
    };
    let lead = match lead_of(&state, &claim).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let locale = locale_of(&state, lead.as_ref());
    let t = texts(&locale);
    let topic = known_topic(&state, &claim);
    let ask = match topic {
        Some(id) => t
            .unsubscribe_ask_topic
            .replace("{topic}", topic_name(&state, id, &locale)),
        None => t.unsubscribe_ask.to_string(),
    };
    // Links signed with the current secret offer the preference page too.
    let preferences_url = if claim.key == 0 {
        let mut p = claim.clone();
        p.purpose = Purpose::Preferences;
        p.topic = None;
        format!(
            "{}/p/{}",
            state.config.mail.public_url,
            state.signer.sign(&p)
        )
    } else {
        String::new()
    };
    render(
        StatusCode::OK,
        t,
        t.unsubscribe,
        &[ask],
        json!({"form": "unsubscribe", "topic": topic.unwrap_or_default(), "preferences_url": preferences_url}),
    )
}

/// The link's topic, if it is one of the configured topics.
fn known_topic<'a>(state: &AppState, claim: &'a Claim) -> Option<&'a str> {
    claim
        .topic
        .as_deref()
        .filter(|t| state.config.topics.get(t).is_some())
}

/// POST `/u/{token}`: one-click leaves the mail's topic; `action=leave_all` (or a link
/// without a topic) withdraws the marketing consent.
#[utoipa::path(
    post,
    path = "/u/{token}",
    tag = "links",
    params(("token" = String, Path, description = "The signed token of the link")),
    request_body(content = Option<super::openapi::PreferenceForm>, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Unsubscribed (one click, RFC 8058)", body = String, content_type = "text/html"),
        (status = 400, description = "The link does not verify", body = String, content_type = "text/html"),
        (status = 404, description = "The lead no longer has the address", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this address (`Retry-After` says when to try again)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/html"),
    ),
)]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(claim) = state.signer.verify(&token, Purpose::Unsubscribe) else {
        return invalid(&state);
    };
    let lead = match lead_of(&state, &claim).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let locale = locale_of(&state, lead.as_ref());
    let t = texts(&locale);
    let (_, action) = form_fields(&body);
    let is_for = |email: &str| state.signer.is_for(&claim, email);
    let topic = known_topic(&state, &claim).filter(|_| action != "leave_all");
    let done = match topic {
        Some(id) => {
            let choice = TopicChoice {
                leave: BTreeSet::from([id.to_string()]),
                keep: BTreeSet::new(),
                leave_all: false,
            };
            let source = source("unsubscribe link", &claim);
            state
                .processor
                .set_topics(claim.lead, &is_for, &choice, &source)
                .await
                .map(|l| {
                    l.map(|_| {
                        t.left_topic
                            .replace("{topic}", topic_name(&state, id, &locale))
                    })
                })
        }
        None => {
            let source = source("unsubscribe link", &claim);
            state
                .processor
                .set_consent(claim.lead, &is_for, ConsentKind::Email, false, &source)
                .await
                .map(|l| l.map(|_| t.left_all.to_string()))
        }
    };
    match done {
        Ok(Some(text)) => message(StatusCode::OK, t, t.saved, &text),
        Ok(None) => unknown(t),
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe failed");
            later(t)
        }
    }
}
