//! Text from outside (identify traits, event properties, what rules make of them) made
//! fit for the one-line places it reaches: mail headers and display names, reasons in
//! a lead's history, log fields.
//!
//! [`one_line`] keeps the words and drops what could break a line: line breaks and
//! tabs become a space, every other control character (NUL, the rest of C0, DEL, C1)
//! is removed, runs of white space collapse into one space, and the ends are trimmed.
//! [`cut`] shortens a text to a number of characters, ending it with an ellipsis.
//! [`printable`] escapes control characters (but line breaks) in a text page for a
//! terminal, so stored data cannot move the cursor or rewrite what is shown.

use std::borrow::Cow;

/// The ellipsis that ends a text that was cut.
pub const ELLIPSIS: char = '…';

/// `text` on one line: white space (CR, LF, TAB, and any other) becomes one space
/// between words, other control characters vanish, the ends are trimmed. Borrows when
/// the text was clean already.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if is_one_line(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else if c.is_control() {
            // Dropped without a trace: "Ev\0e" is "Eve".
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// True when [`one_line`] would leave `text` as it is.
pub fn is_one_line(text: &str) -> bool {
    let mut previous_space = true; // no space at the start
    for c in text.chars() {
        if c == ' ' {
            if previous_space {
                return false;
            }
            previous_space = true;
        } else if c.is_whitespace() || c.is_control() {
            return false;
        } else {
            previous_space = false;
        }
    }
    !previous_space || text.is_empty()
}

/// `text` with at most `max` characters: a longer text keeps its first `max - 1`
/// characters and ends with [`ELLIPSIS`]. Borrows when it was short enough.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            let mut out = String::with_capacity(end + ELLIPSIS.len_utf8());
            out.push_str(text[..end].trim_end());
            out.push(ELLIPSIS);
            Cow::Owned(out)
        }
    }
}

/// `text` for a terminal: line feeds stay, every other control character (ESC, CR,
/// NUL, ...) is written escaped (`\u{1b}`, `\r`). Borrows when there is none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_tabs_become_one_space_other_controls_vanish() {
        assert_eq!(
            one_line("Eve\r\nBcc: evil@x.example"),
            "Eve Bcc: evil@x.example"
        );
        assert_eq!(one_line("Ev\0e"), "Eve");
        assert_eq!(one_line("\u{1}A\u{7f}n\u{1b}[31mna\u{9b}"), "An[31mna");
        assert_eq!(one_line("  Anna \t\n Maria  "), "Anna Maria");
        assert_eq!(one_line("a\u{2028}b\u{85}c\u{b}d\u{c}e"), "a b c d e");
        assert_eq!(one_line("\r\n\0"), "");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn clean_text_is_borrowed_and_kept() {
        for clean in [
            "Anna",
            "Anna Maria Schmidt",
            "Jürgen Müller-Lüdenscheidt",
            "",
            "ÄÖÜ ß 😀",
        ] {
            assert!(is_one_line(clean), "{clean:?}");
            assert!(matches!(one_line(clean), Cow::Borrowed(s) if s == clean));
        }
        for dirty in [" a", "a ", "a  b", "a\tb", "a\nb", "a\0b", "a\u{a0}b", " "] {
            assert!(!is_one_line(dirty), "{dirty:?}");
            assert!(is_one_line(&one_line(dirty)), "{dirty:?}");
        }
    }

    #[test]
    fn cut_keeps_short_text_and_ends_long_text_with_an_ellipsis() {
        assert!(matches!(cut("short", 500), Cow::Borrowed("short")));
        let exact = "x".repeat(500);
        assert_eq!(cut(&exact, 500), exact);
        let long = "ä".repeat(600);
        let c = cut(&long, 500);
        assert_eq!(c.chars().count(), 500);
        assert!(c.ends_with(ELLIPSIS));
        assert!(c.starts_with("ää"));
        // A cut right after a word does not leave a space before the ellipsis.
        assert_eq!(cut("abc def", 5), "abc…");
        assert_eq!(cut("abcdef", 1), "…");
    }

    #[test]
    fn printable_text_keeps_its_lines_and_escapes_the_rest() {
        assert!(matches!(printable("a\nb"), Cow::Borrowed("a\nb")));
        assert_eq!(
            printable("Eve\u{1b}[2J\r\nX\0\tY\n"),
            "Eve\\u{1b}[2J\\r\nX\\u{0}\\tY\n"
        );
    }

    #[test]
    fn hostile_text_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let s: String = (0..40)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from_u32((seed % 0x300) as u32).unwrap_or(' ')
                })
                .collect();
            let line = one_line(&s);
            assert!(is_one_line(&line), "{s:?} -> {line:?}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(cut(&line, 7).chars().count() <= 7);
        }
    }
}
