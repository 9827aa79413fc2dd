//! Log output: one line per event. Field values often carry a lead's or an event's
//! data (a name, a rule error quoting an asset); their control characters (CR, LF,
//! NUL, the rest of C0, DEL, C1) are written escaped (`\n`, `\u{0}`), so such data
//! can neither break a line nor forge one.

use std::fmt::{self, Write};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// The default field format, with control characters escaped.
#[derive(Debug, Default)]
pub struct OneLineFields(DefaultFields);

impl<'writer> FormatFields<'writer> for OneLineFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_fields(Writer::new(&mut line), fields)?;
        write_escaped(&mut writer, &line)
    }
}

/// Writes `text` with its control characters escaped.
fn write_escaped(out: &mut impl Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(char::is_control) {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().expect("found above");
        write!(out, "{}", c.escape_default())?;
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lead_data_cannot_break_or_forge_a_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(OneLineFields::default())
            .finish();
        let name = "Eve\r\n2026-01-01T00:00:00Z ERROR forged line\u{0}\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("lead", name);
            let _in = span.enter();
            tracing::warn!(%name, debug = ?name, "mail for {name} failed");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            !out.trim_end_matches('\n').chars().any(char::is_control),
            "{out:?}"
        );
        assert!(
            out.contains(r"mail for Eve\r\n2026-01-01T00:00:00Z ERROR forged line\u{0}"),
            "{out}"
        );
    }

    #[test]
    fn clean_text_is_written_as_it_is() {
        let mut out = String::new();
        write_escaped(&mut out, "mails=3 reason=\"ok\" Jürgen").unwrap();
        assert_eq!(out, "mails=3 reason=\"ok\" Jürgen");
        let mut out = String::new();
        write_escaped(&mut out, "a\tb\u{85}c").unwrap();
        assert_eq!(out, r"a\tb\u{85}c");
    }
}
