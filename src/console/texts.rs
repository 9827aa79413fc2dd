//! The console's words in German and English (`console/i18n/{de,en}.toml`, embedded),
//! and which language a request gets: the user's `language` setting, else the first of
//! `de` / `en` in the browser's `Accept-Language`, else English.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::{HeaderMap, header};

/// A console language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    De,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }

    /// The language of `setting` (a user's), else of the `Accept-Language` header.
    pub fn pick(setting: Option<&str>, headers: &HeaderMap) -> Lang {
        match setting {
            Some("de") => return Lang::De,
            Some("en") => return Lang::En,
            _ => {}
        }
        let Some(accept) = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
        else {
            return Lang::En;
        };
        // Highest quality first; among equals, the order written.
        let mut tags: Vec<(f32, usize, &str)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut it = part.split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, i, tag))
            })
            .collect();
        tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, tag) in tags {
            let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
            match primary.as_str() {
                "de" => return Lang::De,
                "en" => return Lang::En,
                _ => {}
            }
        }
        Lang::En
    }

    /// The words of this language, by key.
    pub fn texts(self) -> &'static BTreeMap<String, String> {
        match self {
            Lang::De => &DE,
            Lang::En => &EN,
        }
    }

    /// One word by key; the key itself when missing (a unit test keeps both complete).
    pub fn t(self, key: &str) -> &'static str {
        self.texts().get(key).map_or("?", String::as_str)
    }
}

fn table(text: &str, file: &str) -> BTreeMap<String, String> {
    toml::from_str(text).unwrap_or_else(|e| panic!("{file} is not a table of strings: {e}"))
}

static DE: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| table(include_str!("../../console/i18n/de.toml"), "de.toml"));
static EN: LazyLock<BTreeMap<String, String>> =
    LazyLock::new(|| table(include_str!("../../console/i18n/en.toml"), "en.toml"));

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn both_languages_have_the_same_words() {
        let de: Vec<&String> = DE.keys().collect();
        let en: Vec<&String> = EN.keys().collect();
        let only_de: Vec<_> = de.iter().filter(|k| !EN.contains_key(**k)).collect();
        let only_en: Vec<_> = en.iter().filter(|k| !DE.contains_key(**k)).collect();
        assert!(
            only_de.is_empty() && only_en.is_empty(),
            "only in de.toml: {only_de:?}; only in en.toml: {only_en:?}"
        );
        assert!(DE.values().all(|v| !v.trim().is_empty()));
    }

    #[test]
    fn the_setting_wins_then_the_browser_then_english() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::pick(None, &h), Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("fr-FR, de-DE;q=0.8, en;q=0.5"),
        );
        assert_eq!(Lang::pick(None, &h), Lang::De);
        assert_eq!(Lang::pick(Some("en"), &h), Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("de;q=0.4, en-GB"),
        );
        assert_eq!(Lang::pick(None, &h), Lang::En);
    }
}
