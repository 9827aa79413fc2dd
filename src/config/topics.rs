//! `[[topics]]`: what marketing mail is about, so a lead can leave one kind of mail
//! and keep another. Every stream and every trigger mail belongs to one topic (a
//! stream's `topic`, a template listed in a topic's `templates`, else the default
//! topic: the one with `default = true`, or the first).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mail::{Checker, Stream};

/// A topic as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopic {
    pub id: String,
    /// The name in `mail.default_locale`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Names in other locales: `names = { en = "..." }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub descriptions: BTreeMap<String, String>,
    /// The topic of mails that name none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// Trigger mail templates of this topic (e.g. `trigger/pricing-follow-up`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
}

/// The shipped topics (`nurtured.toml` spells them out).
pub fn default_raw() -> Vec<RawTopic> {
    vec![
        RawTopic {
            id: "insights".into(),
            name: "Fachartikel und Leitfäden".into(),
            description: "Praxiswissen, Checklisten und Einladungen zu Webinaren.".into(),
            names: [("en".to_string(), "Articles and guides".to_string())].into(),
            descriptions: [(
                "en".to_string(),
                "Know-how, checklists and webinar invitations.".to_string(),
            )]
            .into(),
            default: true,
            templates: vec![],
        },
        RawTopic {
            id: "product".into(),
            name: "Produktneuigkeiten".into(),
            description: "Neue Funktionen und Tipps für Kunden.".into(),
            names: [("en".to_string(), "Product news".to_string())].into(),
            descriptions: [(
                "en".to_string(),
                "New features and tips for customers.".to_string(),
            )]
            .into(),
            default: false,
            templates: vec![],
        },
    ]
}

/// A checked topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub id: String,
    pub name: String,
    pub description: String,
    pub names: BTreeMap<String, String>,
    pub descriptions: BTreeMap<String, String>,
    pub templates: Vec<String>,
}

impl Topic {
    /// The name in `locale`, else the default one.
    pub fn name_in(&self, locale: &str) -> &str {
        self.names.get(locale).unwrap_or(&self.name)
    }

    pub fn description_in(&self, locale: &str) -> &str {
        self.descriptions.get(locale).unwrap_or(&self.description)
    }
}

/// The checked topics; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub list: Vec<Topic>,
    default: usize,
}

/// The topic used when `[[topics]]` is empty.
const IMPLICIT: &str = "marketing";

impl Topics {
    pub fn default_id(&self) -> &str {
        &self.list[self.default].id
    }

    pub fn get(&self, id: &str) -> Option<&Topic> {
        self.list.iter().find(|t| t.id == id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.list.iter().map(|t| t.id.clone()).collect()
    }

    /// The topic of a trigger mail of `template`.
    pub fn of_template(&self, template: &str) -> &str {
        self.list
            .iter()
            .find(|t| t.templates.iter().any(|x| x == template))
            .map_or_else(|| self.default_id(), |t| &t.id)
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            list: vec![Topic {
                id: IMPLICIT.into(),
                name: "Marketing-E-Mails".into(),
                description: String::new(),
                names: [("en".to_string(), "Marketing e-mails".to_string())].into(),
                descriptions: BTreeMap::new(),
                templates: vec![],
            }],
            default: 0,
        }
    }
}

/// Checks `[[topics]]` and gives every stream its topic.
pub(super) fn topics(raw: &[RawTopic], streams: &mut [Stream], c: &Checker) -> Topics {
    let bad = c.bad;
    let out = if raw.is_empty() {
        Topics::default()
    } else {
        let mut list = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            let key = format!("topics[{i}]");
            let id_ok = !t.id.is_empty()
                && t.id.len() <= 64
                && t.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !id_ok {
                bad(
                    &format!("{key}.id"),
                    format!(
                        "`{}` is not a topic id: use 1 to 64 lower-case letters, digits, `-` or `_`",
                        t.id
                    ),
                );
            }
            if raw[..i].iter().any(|o| o.id == t.id) {
                bad(&format!("{key}.id"), format!("`{}` is used twice", t.id));
            }
            if t.name.trim().is_empty() {
                bad(
                    &format!("{key}.name"),
                    "give the name leads see on the preference page".into(),
                );
            }
            for (j, template) in t.templates.iter().enumerate() {
                if raw[..i].iter().any(|o| o.templates.contains(template)) {
                    bad(
                        &format!("{key}.templates[{j}]"),
                        format!("`{template}` already belongs to another topic"),
                    );
                }
            }
            list.push(Topic {
                id: t.id.clone(),
                name: t.name.clone(),
                description: t.description.clone(),
                names: t.names.clone(),
                descriptions: t.descriptions.clone(),
                templates: t.templates.clone(),
            });
        }
        let defaults: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].default).collect();
        if defaults.len() > 1 {
            bad(
                "topics",
                format!(
                    "more than one topic has `default = true` ({}): mark one",
                    defaults
                        .iter()
                        .map(|&i| raw[i].id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Topics {
            list,
            default: defaults.first().copied().unwrap_or(0),
        }
    };
    for (i, s) in streams.iter_mut().enumerate() {
        if s.topic.is_empty() {
            s.topic = out.default_id().to_string();
        } else if out.get(&s.topic).is_none() {
            bad(
                &format!("streams[{i}].topic"),
                format!(
                    "unknown topic `{}`; the topics are: {} (see [[topics]])",
                    s.topic,
                    out.ids().join(", ")
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(Some(&path), Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn streams_and_templates_get_their_topics() {
        let c = load("").unwrap();
        assert_eq!(c.topics.default_id(), "insights");
        assert_eq!(c.stream("customers").unwrap().topic, "product");
        assert_eq!(c.stream("new-leads").unwrap().topic, "insights");
        assert_eq!(c.topics.of_template("trigger/use-case"), "insights");
        assert_eq!(
            c.topics.get("product").unwrap().name_in("en"),
            "Product news"
        );
        assert_eq!(
            c.topics.get("product").unwrap().name_in("fr"),
            "Produktneuigkeiten"
        );

        let c = load(
            "topics = []\n[[streams]]\nname = \"s\"\nstages = [\"lead\"]\n\
             steps = [{ after = \"1d\", template = \"t\" }]\n",
        )
        .unwrap();
        assert_eq!(c.topics.ids(), ["marketing"]);
        assert_eq!(c.stream("s").unwrap().topic, "marketing");

        let c = load(
            "[[topics]]\nid = \"a\"\nname = \"A\"\n[[topics]]\nid = \"b\"\nname = \"B\"\n\
             default = true\ntemplates = [\"trigger/x\"]\n\
             [[streams]]\nname = \"s\"\nstages = [\"lead\"]\n\
             steps = [{ after = \"1d\", template = \"t\" }]\n",
        )
        .unwrap();
        assert_eq!(c.topics.default_id(), "b");
        assert_eq!(c.topics.of_template("trigger/x"), "b");
        assert_eq!(c.topics.of_template("trigger/y"), "b");
        assert_eq!(c.stream("s").unwrap().topic, "b");
        // The shipped streams name the shipped topic `product`.
        let err = load("[[topics]]\nid = \"a\"\nname = \"A\"\n").unwrap_err();
        assert!(
            err.contains("`streams[3].topic`: unknown topic `product`"),
            "{err}"
        );
    }

    #[test]
    fn topic_mistakes_are_explained() {
        let err = load(
            "[mail]\nprevious_secrets = [\"short\"]\n\
             [[streams]]\nname = \"s\"\nstages = [\"lead\"]\ntopic = \"nope\"\n\
             steps = [{ after = \"1d\", template = \"t\" }]\n\
             [[topics]]\nid = \"Bad Id\"\nname = \"\"\ndefault = true\ntemplates = [\"t/x\"]\n\
             [[topics]]\nid = \"b\"\nname = \"B\"\ndefault = true\ntemplates = [\"t/x\"]\n\
             [[topics]]\nid = \"b\"\nname = \"B2\"\n",
        )
        .unwrap_err();
        for needle in [
            "`mail.previous_secrets[0]`: must be at least 32 characters",
            "`topics[0].id`: `Bad Id` is not a topic id",
            "`topics[0].name`",
            "`topics[1].templates[0]`: `t/x` already belongs to another topic",
            "`topics[2].id`: `b` is used twice",
            "`topics`: more than one topic has `default = true` (Bad Id, b)",
            "`streams[0].topic`: unknown topic `nope`",
        ] {
            assert!(err.contains(needle), "{needle} in:\n{err}");
        }
    }
}
