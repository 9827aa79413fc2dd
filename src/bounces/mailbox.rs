//! The messages in a file given to `nurtured bounces ingest`: an mbox (messages each
//! behind a `From ` line) or a single message (`.eml`). mbox files are split by
//! `mail-parser`.

/// The raw messages in `bytes`.
pub fn messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    if !bytes.starts_with(b"From ") {
        return vec![bytes.to_vec()];
    }
    mail_parser::mailbox::mbox::MessageIterator::new(bytes)
        .filter_map(Result::ok)
        .map(|m| m.contents().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_splits_and_a_single_message_does_not() {
        let mbox =
            b"From MAILER-DAEMON Mon Dec  7 10:00:00 2026\nSubject: one\n\nbody\n>From here\n\n\
                     From MAILER-DAEMON Mon Dec  7 10:01:00 2026\nSubject: two\n\nbody\n";
        let m = messages(mbox);
        assert_eq!(m.len(), 2);
        assert!(String::from_utf8_lossy(&m[1]).contains("Subject: two"));
        assert_eq!(messages(b"Subject: x\r\n\r\nbody").len(), 1);
    }
}
