//! E-mail addresses, the key a lead is found by: trimmed, lower-cased, checked once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A syntactically plausible e-mail address in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why a text is not an e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not an e-mail address: {why}")]
pub struct InvalidEmail {
    pub value: String,
    pub why: &'static str,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let value = raw.trim();
        let fail = |why| InvalidEmail {
            value: raw.to_string(),
            why,
        };
        if value.is_empty() {
            return Err(fail("it is empty"));
        }
        if value.len() > 254 {
            return Err(fail("it is longer than 254 characters"));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("it contains white space"));
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err(fail("it has no @"));
        };
        if local.is_empty() || local.contains('@') {
            return Err(fail("the part before @ is empty or has another @"));
        }
        if domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(fail("the domain after @ is not a domain name"));
        }
        Ok(Self(value.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the @.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidEmail;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_space() {
        let e = Email::parse("  Anna.Schmidt@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "anna.schmidt@example.com");
        assert_eq!(e.domain(), "example.com");
    }

    #[test]
    fn rejects_non_addresses() {
        for bad in [
            "",
            "anna",
            "anna@",
            "@example.com",
            "a b@example.com",
            "a@b",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
