//! VERP addresses: the envelope sender of a mail (`bounce+TOKEN@domain`) and the
//! `mailto:` unsubscribe address (`unsubscribe+TOKEN@domain`) carry a short token
//! naming the outbox row, so a report or a reply maps back to its mail.
//!
//! A token is `KIND ID "-" MAC`: `b` (bounce) or `u` (unsubscribe), the outbox id in
//! base 36, and the first 5 bytes of HMAC-SHA256(`mail.secret`, kind and id) in hex.
//! Everything is lower case, since some servers fold the case of local parts; the MAC
//! keeps anyone from forging a bounce that suppresses an address of their choice.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What an address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The envelope sender: delivery reports come back to it.
    Bounce,
    /// The List-Unsubscribe `mailto:` address.
    Unsubscribe,
}

impl Purpose {
    fn letter(self) -> char {
        match self {
            Purpose::Bounce => 'b',
            Purpose::Unsubscribe => 'u',
        }
    }
}

/// Bytes of the MAC kept in a token (40 bits).
const MAC_BYTES: usize = 5;

/// The first `bytes` bytes of HMAC-SHA256(`secret`, `text`) in hex.
fn keyed(secret: &str, text: &str, bytes: usize) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    m.update(text.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..bytes])
}

fn mac(secret: &str, purpose: Purpose, id: i64) -> String {
    keyed(
        secret,
        &format!("verp:{}:{id}", purpose.letter()),
        MAC_BYTES,
    )
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// The keyed part of a mail's Message-ID (`mail-ID.CREATED.TAG@domain`): the first 8
/// bytes of HMAC-SHA256(`mail.secret`, id and creation time) in hex. A report mailed to
/// the bounce or unsubscribe address is believed for a mail it names by Message-ID; the
/// tag keeps anyone who saw one of the ids from writing the next one.
pub fn message_tag(secret: &str, id: i64, created_at: i64) -> String {
    keyed(secret, &format!("message-id:{id}.{created_at}"), 8)
}

/// The token for outbox row `id`.
pub fn token(secret: &str, purpose: Purpose, id: i64) -> String {
    format!(
        "{}{}-{}",
        purpose.letter(),
        base36(id.max(0) as u64),
        mac(secret, purpose, id)
    )
}

/// `base` with the token in its local part: `bounce@x.example` becomes
/// `bounce+b2n-0a1b2c3d4e@x.example`.
pub fn address(base: &lettre::Address, secret: &str, purpose: Purpose, id: i64) -> String {
    format!(
        "{}+{}@{}",
        base.user(),
        token(secret, purpose, id),
        base.domain()
    )
}

/// The `mailto:` unsubscribe address `to` (as configured) with the token of mail
/// `id`; unchanged when it is not a plain address.
pub fn mailto(to: &str, secret: &str, id: i64) -> String {
    match to.parse::<lettre::Address>() {
        Ok(a) if !a.user().contains('+') => address(&a, secret, Purpose::Unsubscribe, id),
        _ => to.to_string(),
    }
}

/// The purpose and outbox id of a VERP address (or of its local part, or of a bare
/// token), when its token verifies; `None` for any other address.
pub fn read(secret: &str, address: &str) -> Option<(Purpose, i64)> {
    let address = address
        .trim()
        .trim_start_matches("mailto:")
        .trim_matches(['<', '>']);
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let token = local.rsplit_once('+').map_or(local, |(_, t)| t);
    let token = token.to_ascii_lowercase();
    let (head, mac_hex) = token.split_once('-')?;
    let mut chars = head.chars();
    let purpose = match chars.next()? {
        'b' => Purpose::Bounce,
        'u' => Purpose::Unsubscribe,
        _ => return None,
    };
    let digits = chars.as_str();
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let id = i64::from_str_radix(digits, 36).ok()?;
    let expected = mac(secret, purpose, id);
    // Compared in constant time.
    let same = expected.len() == mac_hex.len()
        && expected
            .bytes()
            .zip(mac_hex.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some((purpose, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

    #[test]
    fn an_address_reads_back_whatever_its_case() {
        let base: lettre::Address = "bounce@mail.example.com".parse().unwrap();
        let a = address(&base, SECRET, Purpose::Bounce, 123_456);
        assert!(a.starts_with("bounce+b2n9c-"), "{a}");
        assert!(a.split('@').next().unwrap().len() <= 24, "short: {a}");
        assert_eq!(a, a.to_ascii_lowercase());
        assert_eq!(read(SECRET, &a), Some((Purpose::Bounce, 123_456)));
        assert_eq!(
            read(SECRET, &format!("<{}>", a.to_ascii_uppercase())),
            Some((Purpose::Bounce, 123_456))
        );
        let u = address(&base, SECRET, Purpose::Unsubscribe, 7);
        assert_eq!(read(SECRET, &u), Some((Purpose::Unsubscribe, 7)));
    }

    #[test]
    fn forged_or_foreign_tokens_do_not_read() {
        let base: lettre::Address = "bounce@mail.example.com".parse().unwrap();
        let a = address(&base, SECRET, Purpose::Bounce, 42);
        // Another id with the MAC of 42.
        let forged = a.replacen("+b16-", "+b17-", 1);
        assert_ne!(forged, a);
        assert_eq!(read(SECRET, &forged), None);
        // Another purpose with the same MAC.
        assert_eq!(read(SECRET, &a.replacen("+b", "+u", 1)), None);
        // Another secret.
        assert_eq!(read("another-secret-0123456789-0123456789", &a), None);
        for other in [
            "bounce@mail.example.com",
            "anna@kunde.example",
            "",
            "+-@",
            "b-@x",
        ] {
            assert_eq!(read(SECRET, other), None, "{other}");
        }
    }
}
