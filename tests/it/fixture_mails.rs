//! Rule fixtures follow the outbox: `queued` shows the mails it would really queue
//! (once per lead, template and key), `suppressed` the ones it would hold back.

use crate::helpers::{cli_in, prepare_dir, text};

/// A lead with consent downloads on one topic three times: the rule asks for the use
/// case mail on the second and the third download.
fn fixture(second: &str, third: &str) -> String {
    format!(
        r#"description = "asks twice, queued once"
[lead]
email = "o.nce@kunde.example"
stage = "lead"
traits = {{ consent_email = true }}

[[events]]
type = "identify"
at = "2026-03-02T08:00:00Z"
traits = {{ consent_email = true }}

[[events]]
type = "track"
event = "Content Downloaded"
at = "2026-03-02T09:00:00Z"
properties = {{ topic = "crm" }}

[[events]]
type = "track"
event = "Content Downloaded"
at = "2026-03-03T09:00:00Z"
properties = {{ topic = "crm" }}
expect = {{ actions = ["add_interest 5", "send_mail trigger/use-case crm"], {second} }}

[[events]]
type = "track"
event = "Content Downloaded"
at = "2026-03-04T09:00:00Z"
properties = {{ topic = "crm" }}
expect = {{ actions = ["add_interest 5", "send_mail trigger/use-case crm"], {third} }}
"#
    )
}

#[test]
fn a_once_only_mail_asked_on_two_steps_is_queued_once() {
    let dir = prepare_dir();
    let tests = dir.path().join("rules/tests");
    std::fs::create_dir(&tests).unwrap();
    std::fs::write(
        tests.join("once.toml"),
        fixture(
            r#"queued = ["trigger/use-case crm"], suppressed = []"#,
            r#"queued = [], suppressed = ["trigger/use-case crm (once_only)"]"#,
        ),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "test"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("1 passed, 0 failed"), "{shown}");

    // Expecting the mail twice fails, and the diff shows what the outbox would do.
    std::fs::write(
        tests.join("once.toml"),
        fixture(
            r#"queued = ["trigger/use-case crm"]"#,
            r#"queued = ["trigger/use-case crm"]"#,
        ),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "test"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("after event 4"), "{shown}");
    assert!(shown.contains("-queued: [trigger/use-case crm]"), "{shown}");
    assert!(shown.contains("+queued: []"), "{shown}");
    assert!(shown.contains("0 passed, 1 failed"), "{shown}");
}
