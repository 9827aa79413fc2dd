//! What a rule writer runs into: unknown lead properties and event keys found by
//! `rules check` and named in the same words at run time, fixtures with
//! `actions_include` and `only`, read-only commands while a rule file does not compile,
//! and a rule API reference in docs/rules.md that lists every registered function.

use std::any::TypeId;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{cli_in, mql_journey, prepare_dir, spawn_app, text, write_rule};

/// A rule that reads `lead.titel` and `event.nme`.
const TYPO: &str = "fn on_event(lead, event) {\n    if lead.titel == \"Leiter\" && event.nme == \"Webinar Attended\" {\n        lead.tag(\"leiter\");\n    }\n}\n";

fn write_events(dir: &Path, name: &str, events: &[Value]) {
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(dir.join(name), lines.join("\n")).unwrap();
}

#[test]
fn rules_check_names_unknown_properties_with_position_suggestion_and_the_list() {
    let dir = prepare_dir();
    std::fs::write(dir.path().join("rules/55-leiter.rhai"), TYPO).unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(
            "rules/55-leiter.rhai:2:13: unknown lead property `titel`; did you mean `title`? \
             The lead's properties are: attributes, company, consent_email,"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "rules/55-leiter.rhai:2:40: unknown event key `nme`; did you mean `name`? The \
             event's keys are: context, message_id, name, page, path, properties,"
        ),
        "{shown}"
    );
    assert!(shown.contains("2 error(s)"), "{shown}");
    assert!(!shown.contains("getter"), "{shown}");

    // A scheduled function's lead is known by the schedule, whatever it is called.
    std::fs::write(
        dir.path().join("rules/95-review.rhai"),
        "fn review(l) {\n    if l.intrest > 10 {\n        l.tag(\"busy\");\n    }\n}\n",
    )
    .unwrap();
    let mut toml = std::fs::read_to_string(dir.path().join("nurtured.toml")).unwrap();
    toml.push_str(
        "\n[[schedules]]\nname = \"review\"\ncron = \"0 7 * * 1\"\nrule = \"95-review.rhai\"\nfunction = \"review\"\n",
    );
    std::fs::write(dir.path().join("nurtured.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("rules/55-leiter.rhai"),
        TYPO.replace("titel", "title").replace("nme", "name"),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains(
            "rules/95-review.rhai:2:10: unknown lead property `intrest`; did you mean `interest`?"
        ),
        "{shown}"
    );
    std::fs::remove_file(dir.path().join("rules/95-review.rhai")).unwrap();
    let toml = std::fs::read_to_string(dir.path().join("nurtured.toml")).unwrap();
    let toml = toml.split("\n[[schedules]]").next().unwrap().to_string();
    std::fs::write(dir.path().join("nurtured.toml"), toml).unwrap();

    // Fixed, the folder passes again.
    std::fs::write(
        dir.path().join("rules/55-leiter.rhai"),
        TYPO.replace("titel", "title").replace("nme", "name"),
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn at_run_time_an_unknown_lead_property_is_named_in_the_same_words() {
    // The lead under another name is beyond the static check: the event fails, and the
    // error says what `rules check` would have said.
    let dir = prepare_dir();
    std::fs::write(
        dir.path().join("rules/55-leiter.rhai"),
        "fn on_event(lead, event) {\n    let person = lead;\n    if person.titel == \"Leiter\" {\n        person.tag(\"leiter\");\n    }\n}\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    write_events(
        dir.path(),
        "events.jsonl",
        &[
            json!({"type": "track", "userId": "leiter@kunde.example", "messageId": "t-1",
                 "event": "Webinar Attended", "properties": {"webinar": "B2B"}}),
        ],
    );
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli_in(dir.path(), &["events", "failed"]);
    let shown = text(&out);
    assert!(
        shown.contains(
            "rules/55-leiter.rhai:3:15: unknown lead property `titel`; did you mean `title`? \
             The lead's properties are: attributes, company,"
        ),
        "{shown}"
    );
    assert!(!shown.contains("getter"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_does_not_load_a_file_with_an_unknown_property() {
    let app = spawn_app().await;
    write_rule(&app, "55-leiter.rhai", TYPO).await;
    let stats = app.stats().await;
    let errors = stats["rules"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["file"], "rules/55-leiter.rhai");
    assert_eq!(errors[0]["line"], 2);
    assert_eq!(errors[0]["column"], 13);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown lead property `titel`; did you mean `title`?"),
        "{errors:?}"
    );
    let files = stats["rules"]["files"].as_array().unwrap();
    assert!(
        files.iter().all(|f| f["file"] != "rules/55-leiter.rhai"),
        "{files:?}"
    );
    // The shipped rules go on scoring.
    app.post_journey("goes-on@example.com").await;
    app.settle().await;
    assert_eq!(app.lead("goes-on@example.com").await["stage"], "mql");
    app.stop().await;
}

/// Writes `fixtures` (name, TOML) into a new folder and runs `rules test` on it.
fn rules_test(dir: &Path, fixtures: &[(&str, &str)]) -> (Output, String) {
    let folder = dir.join("my-tests");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, toml) in fixtures {
        std::fs::write(folder.join(name), toml).unwrap();
    }
    let out = cli_in(dir, &["rules", "test", folder.to_str().unwrap()]);
    let shown = text(&out);
    (out, shown)
}

const PRICING_LEAD: &str = "[lead]\nemail = \"p.klein@kunde.example\"\nstage = \"lead\"\n\n[[events]]\ntype = \"page\"\nname = \"Preise\"\nproperties = { url = \"https://www.example.com/preise\" }\n";

#[test]
fn fixtures_check_actions_among_others_and_run_only_the_named_files() {
    let dir = prepare_dir();
    // With every file, the pricing page gives points, a tag and a mail.
    let all_exact = format!("{PRICING_LEAD}expect = {{ actions = [\"add_interest 25\"] }}\n");
    let only_exact = format!("only = [\"20-interest.rhai\"]\n{all_exact}");
    let include = format!(
        "{PRICING_LEAD}expect = {{ actions_include = [\"add_interest 25\", \"send_mail trigger/pricing-follow-up\"] }}\n"
    );
    let include_wrong_order = format!(
        "{PRICING_LEAD}expect = {{ actions_include = [\"send_mail trigger/pricing-follow-up\", \"add_interest 25\"] }}\n"
    );
    let include_at_end = format!(
        "{PRICING_LEAD}\n[expect]\nactions_include = [\"tag low-priority\", \"send_mail trigger/pricing-follow-up\"]\n"
    );
    let only_unknown = format!("only = [\"21-nope.rhai\"]\n{PRICING_LEAD}");
    let (out, shown) = rules_test(
        dir.path(),
        &[
            ("a-all-exact.toml", &all_exact),
            ("b-only-exact.toml", &only_exact),
            ("c-include.toml", &include),
            ("d-include-wrong-order.toml", &include_wrong_order),
            ("e-include-at-end.toml", &include_at_end),
            ("f-only-unknown.toml", &only_unknown),
        ],
    );
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("FAIL  ") && shown.contains("a-all-exact.toml"),
        "{shown}"
    );
    for ok in [
        "b-only-exact.toml",
        "c-include.toml",
        "e-include-at-end.toml",
    ] {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(ok)),
            "{ok}:\n{shown}"
        );
    }
    // `actions` stays exact: the other files' actions show in the diff.
    assert!(shown.contains("+  tag low-priority"), "{shown}");
    assert!(
        shown.contains(
            "+  (no `add_interest 25` after `send_mail trigger/pricing-follow-up`; the actions were:)"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("only: no rule file `21-nope.rhai` in ")
            && shown.contains("the rule files are: 10-fit.rhai, 20-interest.rhai,"),
        "{shown}"
    );
    assert!(shown.contains("3 passed, 3 failed"), "{shown}");
}

#[test]
fn the_shipped_example_of_only_and_actions_include_passes() {
    let dir = prepare_dir();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests/example-only-and-include.toml");
    let text_of = std::fs::read_to_string(example).unwrap();
    assert!(text_of.contains("only = [") && text_of.contains("actions_include"));
    let (out, shown) = rules_test(dir.path(), &[("example.toml", &text_of)]);
    assert!(out.status.success(), "{shown}");
    // The same fixture fails once an action it names no longer happens.
    let broken = text_of.replace("add_interest 25", "add_interest 26");
    let (out, shown) = rules_test(dir.path(), &[("example.toml", &broken)]);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("(no `add_interest 26`; the actions were:)"),
        "{shown}"
    );
}

/// Runs `nurtured ARGS` in `dir`, killed after `limit` if it has not ended.
fn cli_with_limit(dir: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurtured"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nurtured runs");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn read_only_commands_and_retry_work_while_a_rule_file_does_not_compile() {
    let dir = prepare_dir();
    // A lead, a mail, and a failed event, while the rules are fine.
    std::fs::write(
        dir.path().join("rules/55-boom.rhai"),
        "fn on_event(lead, event) {\n    if event.name == \"Boom\" {\n        lead.set_stage(\"nope\", \"typo\");\n    }\n}\n",
    )
    .unwrap();
    let mut events = mql_journey("readonly@example.com");
    events.push(
        json!({"type": "track", "userId": "crm-4711", "messageId": "j-boom", "event": "Boom"}),
    );
    write_events(dir.path(), "events.jsonl", &events);
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 failed in total"), "{}", text(&out));

    // Now a file does not compile.
    std::fs::write(
        dir.path().join("rules/55-boom.rhai"),
        "fn on_event(lead, event) {\n    if event.name == \"Boom\" {\n        lead.set_stage(\"lead\", \"fixed\"\n    }\n}\n",
    )
    .unwrap();
    let broken = "rules/55-boom.rhai:4:5:";

    let out = cli_in(dir.path(), &["stats"]);
    assert!(out.status.success(), "{}", text(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    let errors = stats["rules"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{stats}");
    assert_eq!(errors[0]["file"], "rules/55-boom.rhai");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(broken),
        "{}",
        text(&out)
    );

    let out = cli_in(dir.path(), &["lead", "show", "readonly@example.com"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stage     mql"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(broken),
        "{}",
        text(&out)
    );

    let out = cli_in(
        dir.path(),
        &["lead", "show", "readonly@example.com", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout).expect("lead JSON on stdout, warnings apart");

    let out = cli_in(dir.path(), &["mail", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let mails: Value = serde_json::from_slice(&out.stdout).expect("mail JSON");
    let id = mails[0]["id"].as_i64().expect("the journey queued a mail");
    let out = cli_in(dir.path(), &["mail", "show", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out));

    for args in [
        &["report", "funnel"][..],
        &["report", "sla"][..],
        &["report", "funnel", "--json"][..],
    ] {
        let out = cli_in(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }

    let out = cli_in(dir.path(), &["events", "failed"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("\"Boom\"") && shown.contains("unknown stage `nope`"),
        "{shown}"
    );

    // Retry queues the event again; processing waits for rules that compile.
    let out = cli_in(dir.path(), &["events", "retry"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("queued 1 failed event(s) again"), "{shown}");
    assert!(
        shown.contains("not processed here while a rule file does not compile"),
        "{shown}"
    );
    let out = cli_in(dir.path(), &["events", "failed"]);
    assert!(text(&out).contains("no failed events"), "{}", text(&out));
    let out = cli_in(dir.path(), &["stats"]);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["events_pending"], 1, "{stats}");

    // What runs rules still refuses, naming the file.
    let out = cli_in(dir.path(), &["rules", "check"]);
    assert!(
        !out.status.success() && text(&out).contains(broken),
        "{}",
        text(&out)
    );
    write_events(
        dir.path(),
        "more.jsonl",
        &[
            json!({"type": "track", "userId": "crm-4711", "messageId": "j-more", "event": "Email Opened"}),
        ],
    );
    let out = cli_in(dir.path(), &["ingest", "more.jsonl"]);
    assert!(
        !out.status.success() && text(&out).contains(broken),
        "{}",
        text(&out)
    );
    let out = cli_with_limit(dir.path(), &["run"], Duration::from_secs(30));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("rules do not compile") && text(&out).contains(broken),
        "{}",
        text(&out)
    );

    // Fixed, a retry processes the waiting event.
    std::fs::write(
        dir.path().join("rules/55-boom.rhai"),
        "fn on_event(lead, event) {\n    if event.name == \"Boom\" {\n        lead.tag(\"boom\");\n    }\n}\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["events", "retry"]);
    assert!(
        text(&out).contains("processed 1 event(s); 0 failed in total"),
        "{}",
        text(&out)
    );
    let out = cli_in(
        dir.path(),
        &["lead", "show", "readonly@example.com", "--json"],
    );
    let lead: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(lead["tags"].to_string().contains("boom"), "{lead}");
}

/// Every function and lead property the rule engine registers is in the reference of
/// docs/rules.md, so the reference cannot fall behind the API.
#[test]
fn every_registered_rule_function_is_documented() {
    let config = nurtured::config::Config::load_with_env(None, Vec::new()).unwrap();
    let sandbox = nurtured::rules::Sandbox::new(&config.limits, Default::default());
    let lead = TypeId::of::<nurtured::rules::api::LeadHandle>();
    let mut api: Vec<(String, bool)> = sandbox.engine.collect_fn_metadata(
        None,
        |info| {
            let m = info.metadata;
            Some((m.name.to_string(), m.param_types.first() == Some(&lead)))
        },
        false,
    );
    api.sort();
    api.dedup();
    assert!(api.len() > 40, "{api:?}");
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rules.md"))
        .unwrap();
    let reference = docs
        .split("### Every function at a glance")
        .nth(1)
        .expect("docs/rules.md has the section \"Every function at a glance\"");
    let reference = reference.split("\n## ").next().unwrap();
    let missing: Vec<String> = api
        .iter()
        .filter_map(|(name, on_lead)| {
            let wanted = match (name.strip_prefix("get$"), on_lead) {
                (Some(property), true) => format!("| `lead.{property}` |"),
                (Some(property), false) => format!(".{property}`"),
                (None, true) => format!("| `lead.{name}("),
                (None, false) => format!("`{name}("),
            };
            (!reference.contains(&wanted)).then(|| format!("{name}: {wanted}"))
        })
        .collect();
    assert!(missing.is_empty(), "not in docs/rules.md: {missing:#?}");
}
