//! Secrets kept out of errors, logs and stats: a URL is shown with its password
//! replaced by `***` (the user name stays, so an operator still sees which account is
//! meant). Used wherever `mail.url` or a database URL can appear in a message.

/// What a password is shown as.
pub const MASK: &str = "***";

/// `text` with the password of its `user:password@` part replaced by [`MASK`]. Works on
/// text that is not a valid URL too (the error about a bad URL must not show the
/// password either): everything between `scheme://user:` and the last `@` before the
/// host is masked.
pub fn url(text: &str) -> String {
    query_passwords(&userinfo(text))
}

/// The values of `password=` and `sslpassword=` query parameters (PostgreSQL URLs may
/// carry the password so) replaced by [`MASK`].
fn query_passwords(text: &str) -> String {
    let Some(q) = text.find('?') else {
        return text.to_string();
    };
    let (head, query) = text.split_at(q + 1);
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") =>
            {
                format!("{k}={MASK}")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}", pairs.join("&"))
}

fn userinfo(text: &str) -> String {
    // Without `://` (a mistyped scheme), everything before the first `:` is taken as
    // the user name: a password is masked rather than shown.
    let start = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[start..];
    // The authority ends at the first `/`, `?` or `#` after the last `@` (a password
    // may itself contain `/`, `?` or `@` when it is not percent-encoded).
    let Some(at) = rest.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &rest[..at];
    let Some(colon) = userinfo.find(':') else {
        return text.to_string();
    };
    format!(
        "{}{}:{MASK}{}",
        &text[..start],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_users_kept() {
        assert_eq!(
            url("smtp://mailer:s3cr%2Bt@mail.example.com:587?tls=required"),
            "smtp://mailer:***@mail.example.com:587?tls=required"
        );
        assert_eq!(
            url("smtps://u%40x.de:pa:ss@w@smtp.example.com"),
            "smtps://u%40x.de:***@smtp.example.com"
        );
        assert_eq!(
            url("postgres://app:hunter2@db:5432/leads"),
            "postgres://app:***@db:5432/leads"
        );
        // Nothing secret: unchanged.
        assert_eq!(url("smtp://mail.example.com"), "smtp://mail.example.com");
        assert_eq!(
            url("smtp://user@mail.example.com"),
            "smtp://user@mail.example.com"
        );
        assert_eq!(url("not a url"), "not a url");
        // A broken URL is masked as well.
        assert_eq!(url("smtpx://u:topsecret@h"), "smtpx://u:***@h");
        assert_eq!(
            url("postgres://db/leads?user=n&password=hunter2&sslmode=require"),
            "postgres://db/leads?user=n&password=***&sslmode=require"
        );
        assert!(!url("smtp://u:p@ss/w?rd@host/x").contains("ss/w"));
    }
}
