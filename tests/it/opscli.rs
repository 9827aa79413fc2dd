//! What an operator installs around the binary: shell completions, the man page, the
//! systemd unit and the Containerfile in `contrib/`, the exit codes, and progress bars
//! that show on a terminal only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::CommandFactory;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, cli_in, free_port, mql_journey, prepare_dir, text};

const BIN: &str = env!("CARGO_BIN_EXE_nurtured");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether `program` can be run here (found on PATH).
fn available(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn nurtured(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("nurtured runs")
}

#[test]
fn bash_loads_the_completions_and_every_shell_gets_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let out = nurtured(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = dir.path().join("nurtured.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let bash = Command::new("bash")
        .args([
            "-c",
            &format!("source {}; complete -p nurtured", script.display()),
        ])
        .output()
        .expect("bash runs");
    assert!(bash.status.success(), "{}", text(&bash));
    assert!(bash.stderr.is_empty(), "{}", text(&bash));
    assert!(
        String::from_utf8_lossy(&bash.stdout).contains("-F _nurtured nurtured"),
        "{}",
        text(&bash)
    );
    // Bash completes the subcommands from the script.
    let words = Command::new("bash")
        .args([
            "-c",
            &format!(
                "source {}; COMP_WORDS=(nurtured lead ''); COMP_CWORD=2; _nurtured nurtured '' lead; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ),
        ])
        .output()
        .expect("bash runs");
    let offered = String::from_utf8_lossy(&words.stdout);
    for sub in ["list", "show", "export", "erase"] {
        assert!(
            offered.lines().any(|l| l == sub),
            "`nurtured lead <TAB>` offers {sub}: {offered}"
        );
    }

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = nurtured(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("nurtured"), "{shell}: {script}");
        assert!(script.contains("backtest"), "{shell}: {script}");
    }
    if available("zsh") {
        let file = dir.path().join("_nurtured");
        std::fs::write(&file, nurtured(&["completions", "zsh"]).stdout).unwrap();
        let check = Command::new("zsh")
            .args(["-n", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(check.status.success(), "zsh -n: {}", text(&check));
    }
    let out = nurtured(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("possible values"), "{}", text(&out));
}

/// The subcommands of `nurtured`, as the command line defines them.
fn subcommands() -> Vec<String> {
    nurtured::cli::Args::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn the_man_page_renders_and_names_every_subcommand() {
    let out = nurtured(&["man"]);
    assert!(out.status.success(), "{}", text(&out));
    let roff = String::from_utf8(out.stdout).unwrap();
    assert!(
        roff.lines().any(|l| l.starts_with(".TH nurtured 1")),
        "{roff}"
    );
    assert!(roff.contains(".SH SUBCOMMANDS"), "{roff}");
    let names = subcommands();
    assert!(names.len() > 15, "{names:?}");
    for name in &names {
        assert!(
            roff.contains(&format!("nurtured\\-{name}(1)")),
            "{name}: {roff}"
        );
    }

    if available("man") {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("nurtured.1");
        std::fs::write(&page, &roff).unwrap();
        let shown = Command::new("man")
            .args(["--warnings", "-l", page.to_str().unwrap()])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("man runs");
        assert!(shown.status.success(), "{}", text(&shown));
        assert!(shown.stderr.is_empty(), "groff warns: {}", text(&shown));
        let page = String::from_utf8_lossy(&shown.stdout);
        assert!(page.contains("SUBCOMMANDS"), "{page}");
        assert!(page.contains("--config <FILE>"), "{page}");
        for name in &names {
            assert!(
                page.contains(&format!("nurtured-{name}(1)")),
                "{name}: {page}"
            );
        }
    } else {
        eprintln!("man is not installed here: the page was checked as roff text only");
    }

    // One page per command and subcommand.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("man1");
    let out = nurtured(&["man", "--out", folder.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for page in [
        "nurtured.1",
        "nurtured-run.1",
        "nurtured-lead-show.1",
        "nurtured-store-copy.1",
    ] {
        let roff = std::fs::read_to_string(folder.join(page)).unwrap_or_default();
        assert!(roff.contains(".TH "), "{page}: {roff}");
    }
    let show = std::fs::read_to_string(folder.join("nurtured-lead-show.1")).unwrap();
    assert!(show.contains("\\-\\-json"), "{show}");
}

/// `contrib/nurtured.service` with ExecStart pointed at the binary under test, so
/// `systemd-analyze verify` finds it.
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo("contrib/nurtured.service")).unwrap();
    let exec = "ExecStart=/usr/local/bin/nurtured --config /etc/nurtured/nurtured.toml run";
    assert!(unit.lines().any(|l| l == exec), "{unit}");
    let path = dir.join("nurtured.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/nurtured ", &format!("{BIN} ")),
    )
    .unwrap();
    path
}

/// A `Key=value` of the unit (the last one, as systemd reads it).
fn setting<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies_clean() {
    let unit = std::fs::read_to_string(repo("contrib/nurtured.service")).unwrap();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "nurtured"),
        ("ConfigurationDirectory", "nurtured"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
    ] {
        assert_eq!(setting(&unit, key), [value], "{key}");
    }
    // State goes where the unit lets the daemon write.
    assert!(setting(&unit, "Environment").contains(&"NURTURED_DATA_DIR=/var/lib/nurtured"));
    assert!(setting(&unit, "SystemCallFilter").contains(&"@system-service"));
    // The stop timeout covers the daemon's drain with room to release the lease.
    let stop = humantime::parse_duration(setting(&unit, "TimeoutStopSec")[0]).unwrap();
    assert!(
        stop >= nurtured::daemon::DRAIN + Duration::from_secs(5),
        "{stop:?}"
    );

    if !Path::new("/usr/bin/systemd-analyze").exists() && !available("systemd-analyze") {
        eprintln!(
            "\n*** systemd-analyze is not installed here: contrib/nurtured.service was NOT \
             verified (install systemd to check it) ***\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).trim(), "", "systemd-analyze verify warns");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let report = text(&out);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for nurtured.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {report}"));
    // docs/operations.md reports 1.2 ("OK"); 10 would be fully exposed.
    assert!(score <= 1.5, "exposure {score}: {report}");
}

#[test]
fn the_containerfile_copies_what_exists_and_runs_the_built_binary() {
    let file = std::fs::read_to_string(repo("contrib/Containerfile")).unwrap();
    // Instructions, with continuation lines joined.
    let joined = file.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        froms,
        [
            "FROM docker.io/library/rust:1-bookworm AS build",
            "FROM docker.io/library/debian:bookworm-slim"
        ]
    );
    let mut workdir = "/";
    let mut built = None;
    let mut installed = None;
    for line in &lines {
        if let Some(dir) = line.strip_prefix("WORKDIR ") {
            workdir = dir;
        }
        if line.starts_with("RUN cargo build") {
            assert!(line.contains("--release"), "{line}");
            assert!(line.contains("--bin nurtured"), "{line}");
            built = Some(format!("{workdir}/target/release/nurtured"));
        }
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        let parts: Vec<&str> = args.split_whitespace().collect();
        if let Some(stage) = parts[0].strip_prefix("--from=") {
            assert_eq!(stage, "build");
            assert_eq!(Some(parts[1].to_string()), built, "{line}");
            installed = Some(parts[2]);
            continue;
        }
        for source in &parts[..parts.len() - 1] {
            assert!(
                repo(source).exists(),
                "COPY {source}: not in the repository"
            );
        }
    }
    let installed = installed.expect("the binary is copied from the build stage");
    assert!(
        lines.contains(
            &format!("ENTRYPOINT [\"{installed}\", \"--config\", \"/etc/nurtured/nurtured.toml\"]")
                .as_str()
        ),
        "{joined}"
    );
    assert!(lines.contains(&"CMD [\"run\"]"));
    assert!(lines.contains(&"USER nurtured"));
    assert!(lines.contains(&"VOLUME /var/lib/nurtured"));
    assert!(lines.contains(&"EXPOSE 8080"));
    assert!(joined.contains("NURTURED_HTTP_ADDR=0.0.0.0:8080"));
    assert!(joined.contains("NURTURED_DATA_DIR=/var/lib/nurtured"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("HEALTHCHECK ") && l.contains("http://127.0.0.1:8080/healthz")),
        "{joined}"
    );
    // Every file the build compiles in is copied into the build stage.
    for embedded in [
        "migrations",
        "bench",
        "nurtured.toml",
        "src",
        ".cargo",
        "Cargo.lock",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("COPY ") && l.contains(embedded)),
            "{embedded} is not copied"
        );
    }
}

#[test]
fn exit_codes_tell_a_mistake_from_a_failure() {
    let dir = prepare_dir();
    // 2: a configuration key that does not exist.
    let config = dir.path().join("nurtured.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[limits]\nmax_ops = 5\n")).unwrap();
    for args in [&["stats"][..], &["rules", "check"], &["run"]] {
        let out = cli_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("max_ops"), "{}", text(&out));
    }
    std::fs::write(&config, &good).unwrap();
    // 2: a command-line mistake (clap).
    let out = cli_in(dir.path(), &["lead", "show"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A rule file that does not compile: `rules check` found it (1); the commands that
    // need the rules cannot start (2).
    let events = dir.path().join("events.jsonl");
    let lines: Vec<String> = mql_journey("exit@example.com")
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    std::fs::write(dir.path().join("rules/99-broken.rhai"), "let x = ;\n").unwrap();
    let out = cli_in(dir.path(), &["rules", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("99-broken.rhai:1:"), "{}", text(&out));
    for args in [&["ingest", "events.jsonl"][..], &["run"]] {
        let out = cli_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("99-broken.rhai"), "{}", text(&out));
    }
    std::fs::remove_file(dir.path().join("rules/99-broken.rhai")).unwrap();

    // 1: what was read has problems; a lead that does not exist.
    std::fs::write(dir.path().join("bad.jsonl"), "not json\n").unwrap();
    let out = cli_in(dir.path(), &["ingest", "bad.jsonl"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = cli_in(dir.path(), &["lead", "show", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // 0.
    let out = cli_in(dir.path(), &["ingest", "events.jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn progress_bars_show_on_a_terminal_and_never_in_a_pipe() {
    let dir = prepare_dir();
    let events = dir.path().join("events.jsonl");
    let lines: Vec<String> = (0..2500)
        .map(|i| {
            json!({"type": "track", "userId": format!("bar{i}@example.com"),
                   "messageId": format!("bar-{i}"), "event": "Content Downloaded",
                   "properties": {"title": "Guide"}})
            .to_string()
        })
        .collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    // In a pipe (as here, and in logs): the summary lines alone.
    let out = cli_in(dir.path(), &["ingest", "events.jsonl", "--history"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        !shown.contains('\r') && !shown.contains('\u{1b}'),
        "{shown:?}"
    );
    assert!(!shown.contains("storing ["), "{shown}");
    assert!(shown.contains("stored 2500 event(s)"), "{shown}");

    // On a terminal (a pseudo-terminal from `script`): a bar per phase.
    if !available("script") {
        eprintln!(
            "\n*** `script` (util-linux) is missing: the bars on a terminal were NOT checked ***\n"
        );
        return;
    }
    let more: Vec<String> = lines.iter().map(|l| l.replace("bar-", "again-")).collect();
    std::fs::write(&events, more.join("\n")).unwrap();
    let out = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "stty cols 120 rows 40; {BIN} ingest events.jsonl --history"
        ))
        .arg("/dev/null")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .env("TERM", "xterm")
        .output()
        .expect("script runs");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("storing ["), "{shown:?}");
    assert!(shown.contains("/2,500 events"), "{shown:?}");
    assert!(shown.contains("processing ["), "{shown:?}");
    assert!(shown.contains("stored 2500 event(s)"), "{shown}");

    // `events export`: a spinner with the bytes written, on a terminal only.
    let out = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "stty cols 120 rows 40; {BIN} events export --out all.jsonl"
        ))
        .arg("/dev/null")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .env("TERM", "xterm")
        .output()
        .expect("script runs");
    let shown = text(&out);
    assert!(shown.contains("exporting: "), "{shown:?}");
    assert!(shown.contains("wrote 5000 event(s)"), "{shown}");
    let out = cli_in(dir.path(), &["events", "export", "--out", "again.jsonl"]);
    assert_eq!(text(&out).trim(), "wrote 5000 event(s) to again.jsonl");
}

/// A running daemon maps no memory both writable and executable (so
/// `MemoryDenyWriteExecute=yes` in the unit cannot break it: Rhai interprets, jemalloc
/// and ring map no such pages), and it stops on SIGTERM well within `TimeoutStopSec`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_maps_no_writable_code_and_stops_on_sigterm() {
    nurtured::install_crypto();
    let dir = prepare_dir();
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("run")
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove(nurtured::store::testing::POSTGRES_ENV)
        .env("NURTURED_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nurtured run starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = client
        .post(format!("{base}/v1/batch"))
        .bearer_auth(TOKEN)
        .json(&json!({ "batch": mql_journey("maps@example.com") }))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{:?}", sent.status());
    // Rules have run once the lead is an MQL.
    loop {
        let lead: Value = client
            .get(format!("{base}/v1/leads/maps@example.com"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if lead["stage"] == "mql" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{lead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    let wx: Vec<&str> = maps
        .lines()
        .filter(|l| {
            let perms = l.split_whitespace().nth(1).unwrap_or("");
            perms.contains('w') && perms.contains('x')
        })
        .collect();
    assert!(wx.is_empty(), "writable and executable mappings: {wx:?}");

    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(stopping.elapsed() < nurtured::daemon::DRAIN + Duration::from_secs(2));
}
