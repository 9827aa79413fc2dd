//! Links in mails: signed unsubscribe and confirmation links under the public base
//! URL, and, for leads who allowed tracking, click redirects and an open pixel.

use super::token::{Claim, Purpose, Signer};

/// Makes the links of one mail.
pub struct Links<'a> {
    pub signer: &'a Signer,
    /// Public base URL, no trailing slash.
    pub base: &'a str,
    pub lead: i64,
    pub email: &'a str,
    pub mail: i64,
    /// When the mail was queued: confirmation links work for [`CONFIRM_DAYS`] after.
    pub queued: chrono::DateTime<chrono::Utc>,
    /// The topic of a marketing mail: its one-click unsubscribe leaves this topic.
    pub topic: Option<&'a str>,
}

/// How long a double opt-in link works.
pub const CONFIRM_DAYS: i64 = 30;

impl Links<'_> {
    fn token(&self, purpose: Purpose, url: Option<&str>) -> String {
        let expires = (purpose == Purpose::Confirm)
            .then(|| (self.queued + chrono::Duration::days(CONFIRM_DAYS)).timestamp());
        let topic = (purpose == Purpose::Unsubscribe)
            .then_some(self.topic)
            .flatten()
            .map(str::to_string);
        self.signer.sign(&Claim {
            purpose,
            lead: self.lead,
            to: self.signer.address(self.email),
            mail: Some(self.mail),
            url: url.map(str::to_string),
            expires,
            round: None,
            topic,
            key: 0,
        })
    }

    /// One-click unsubscribe (GET shows a page, POST unsubscribes).
    pub fn unsubscribe(&self) -> String {
        format!("{}/u/{}", self.base, self.token(Purpose::Unsubscribe, None))
    }

    /// The preference page: which topics the lead receives (GET shows, POST acts).
    pub fn preferences(&self) -> String {
        format!("{}/p/{}", self.base, self.token(Purpose::Preferences, None))
    }

    /// Double opt-in confirmation.
    pub fn confirm(&self) -> String {
        format!(
            "{}/confirm/{}",
            self.base,
            self.token(Purpose::Confirm, None)
        )
    }

    fn open_pixel(&self) -> String {
        format!("{}/o/{}", self.base, self.token(Purpose::Open, None))
    }

    fn click(&self, url: &str) -> String {
        format!("{}/c/{}", self.base, self.token(Purpose::Click, Some(url)))
    }

    /// Sends `http(s)` links of the HTML part through the click redirect (except the
    /// daemon's own links) and adds the open pixel before `</body>`.
    pub fn track(&self, html: &str) -> String {
        const HREF: &str = "href=\"";
        let mut out = String::with_capacity(html.len() + 512);
        let mut rest = html;
        while let Some(at) = rest.find(HREF) {
            let (before, after) = rest.split_at(at + HREF.len());
            out.push_str(before);
            let end = after.find('"').unwrap_or(after.len());
            let url = &after[..end];
            // Attribute values are HTML-escaped; the redirect needs the real URL.
            let real = url.replace("&amp;", "&");
            // Only well-formed absolute links, in their normalised (ASCII) form.
            let parsed = url::Url::parse(&real)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && !real.starts_with(self.base));
            if let Some(target) = parsed {
                out.push_str(&self.click(target.as_str()));
            } else {
                out.push_str(url);
            }
            rest = &after[end..];
        }
        out.push_str(rest);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            self.open_pixel()
        );
        match out.rfind("</body>") {
            Some(i) => out.insert_str(i, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_go_through_the_redirect_and_the_pixel_is_added() {
        let signer = Signer::new("a secret that is long enough for tests");
        let links = Links {
            signer: &signer,
            base: "https://m.example.com",
            lead: 1,
            email: "a@example.com",
            mail: 9,
            queued: chrono::Utc::now(),
            topic: None,
        };
        let html = "<body><a href=\"https://www.example.com/x?a=1&amp;b=2\">x</a> \
                    <a href=\"https://m.example.com/u/T\">abmelden</a></body>";
        let out = links.track(html);
        let start = out.find("https://m.example.com/c/").expect("click link");
        let token = &out[start + "https://m.example.com/c/".len()..];
        let token = &token[..token.find('"').unwrap()];
        let claim = signer.verify(token, Purpose::Click).unwrap();
        assert_eq!(
            claim.url.as_deref(),
            Some("https://www.example.com/x?a=1&b=2")
        );
        assert!(
            out.contains("href=\"https://m.example.com/u/T\""),
            "own links stay"
        );
        assert!(out.contains("/o/") && out.ends_with("</body>"), "{out}");
    }
}
