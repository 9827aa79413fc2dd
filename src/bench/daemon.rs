//! The daemon under test, as a child process: `nurtured run` from this executable on a
//! generated nurtured.toml in a temporary folder (a fresh SQLite file or PostgreSQL
//! database, or a PostgreSQL database shared with other daemons under a cluster name
//! of its own; a free loopback port, no schedules; otherwise the configuration, rules
//! and templates the bench was started with). What it costs is read from outside: its memory from
//! `/proc/<pid>/status`, its database from the file system, its shutdown from SIGTERM
//! to exit.

use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tempfile::TempDir;
use toml::{Table, Value};

use super::client::Api;
use super::report::kib_field;
use crate::config::{Config, env, raw};

/// Where the child's mail goes.
#[derive(Debug, Clone, Copy)]
pub enum MailTo {
    /// `.eml` files in its data folder.
    Files,
    /// The SMTP server on this loopback port.
    Smtp(u16),
}

/// How long the child may take to answer /healthz after start.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the child may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// A running child daemon. Dropping it kills the process (SIGKILL); [`Daemon::stop`]
/// ends it the regular way.
pub struct Daemon {
    child: tokio::process::Child,
    pub pid: u32,
    pub api: Api,
    dir: Option<TempDir>,
    folder: PathBuf,
    database: Database,
}

/// Where the child keeps its data.
enum Database {
    /// A SQLite file (its WAL beside it).
    File(PathBuf),
    /// A database of its own on a PostgreSQL server.
    Postgres(String),
}

/// The folders of the runs' daemons, kept until the benchmark ends: removing a
/// run's hundred thousand mail files right before the next run starts would make the
/// file system slower for that run (ext4 looks twice at recently freed inodes).
static FOLDERS: std::sync::Mutex<Vec<TempDir>> = std::sync::Mutex::new(Vec::new());

/// Removes the folders of every run so far, or with `keep` leaves them and returns
/// where they are.
pub fn clean_up(keep: bool) -> Vec<PathBuf> {
    let folders = std::mem::take(&mut *FOLDERS.lock().unwrap_or_else(|e| e.into_inner()));
    if keep {
        folders.into_iter().map(TempDir::keep).collect()
    } else {
        Vec::new()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            FOLDERS.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        }
    }
}

/// How the daemon ended after SIGTERM.
#[derive(Debug)]
pub struct Stopped {
    /// From SIGTERM to the exit of the process.
    pub took: Duration,
    /// `None` when it did not exit within the limit and was killed.
    pub status: Option<ExitStatus>,
}

impl Stopped {
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) if s.success() => format!("exited in {:.2} s", self.took.as_secs_f64()),
            Some(s) => format!("exited in {:.2} s with {s}", self.took.as_secs_f64()),
            None => format!(
                "still running {:.0} s after SIGTERM, killed",
                self.took.as_secs_f64()
            ),
        }
    }
}

impl Daemon {
    /// Starts `nurtured run` on a fresh database (a SQLite file, or a new database on
    /// the PostgreSQL server `postgres`) and waits until /healthz answers.
    pub async fn start(
        config: &Config,
        mail: MailTo,
        postgres: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dir = temp_folder()?;
        let database = match postgres {
            Some(server) => Database::Postgres(crate::store::testing::fresh_postgres(server)),
            None => Database::File(dir.path().join("nurtured.db")),
        };
        Self::launch(config, mail, dir, database, None).await
    }

    /// Starts `nurtured run` on the PostgreSQL database `url` that other daemons may
    /// share, as the cluster member `name`, and waits until /healthz answers.
    pub async fn start_member(
        config: &Config,
        mail: MailTo,
        url: &str,
        name: &str,
    ) -> anyhow::Result<Self> {
        let database = Database::Postgres(url.to_string());
        Self::launch(config, mail, temp_folder()?, database, Some(name)).await
    }

    async fn launch(
        config: &Config,
        mail: MailTo,
        dir: TempDir,
        database: Database,
        name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let url = match &database {
            Database::File(path) => format!("sqlite://{}", path.display()),
            Database::Postgres(url) => url.clone(),
        };
        let mut table = child_config(config, dir.path(), port, mail, url)?;
        if let Some(name) = name {
            set(&mut table, &["cluster", "name"], Value::String(name.into()));
        }
        let file = dir.path().join("nurtured.toml");
        std::fs::write(&file, toml::to_string(&table)?)
            .with_context(|| format!("cannot write {}", file.display()))?;
        let child = spawn(dir.path(), &file)?;
        let pid = child.id().context("the daemon exited at once")?;
        let mut daemon = Self {
            child,
            pid,
            api: Api::new(&format!("http://127.0.0.1:{port}"), &config.api_token)?,
            folder: dir.path().to_path_buf(),
            database,
            dir: Some(dir),
        };
        daemon.wait_healthy().await?;
        Ok(daemon)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if self.api.healthy().await {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the daemon exited with {status} before answering /healthz:\n{}",
                    self.log_tail()
                );
            }
            anyhow::ensure!(
                started.elapsed() < START_LIMIT,
                "the daemon did not answer /healthz within {START_LIMIT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines the daemon logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.folder().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        kib_field(&status, field)
    }

    /// Resident memory now (VmRSS), in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:")
            .map_or(f64::NAN, |k| k as f64 / 1024.0)
    }

    /// The most resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:")
            .map_or(f64::NAN, |k| k as f64 / 1024.0)
    }

    /// CPU time the daemon used so far, user and system, all its threads (from
    /// `/proc/<pid>/stat`), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return f64::NAN;
        };
        // After the command name in parentheses: state, then utime and stime as the
        // 12th and 13th fields, in clock ticks.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => (user + system) / clock_ticks(),
            _ => f64::NAN,
        }
    }

    /// CPU time so far per kind of thread (the thread name without its number:
    /// `rules`, `tokio-rt-worker`, ...; each of SQLite's connection threads apart),
    /// in seconds, largest first. Threads that have ended are not counted.
    pub fn cpu_by_thread(&self) -> Vec<(String, f64)> {
        let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return Vec::new();
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let name = head.split_once('(').map_or("", |(_, n)| n);
            // `rules-0` and `rules-1` are one kind; names are cut at 15 characters.
            // SQLite's connection threads are shown one by one: one of them writes.
            let kind = if name.starts_with("sqlx") {
                format!("sqlite thread {}", task.file_name().to_string_lossy())
            } else {
                name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                    .to_string()
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                *by_name.entry(kind).or_default() += (user + system) / clock_ticks();
            }
        }
        let mut out: Vec<(String, f64)> = by_name.into_iter().filter(|(_, s)| *s >= 0.05).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    /// The size of the database and of its write-ahead log, in bytes: the SQLite file
    /// and its WAL, or PostgreSQL's `pg_database_size` (whose WAL is the server's,
    /// shared with other databases, so 0 here).
    pub async fn database_bytes(&self) -> anyhow::Result<(u64, u64)> {
        match &self.database {
            Database::File(path) => {
                let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                Ok((size(path), size(Path::new(&wal))))
            }
            Database::Postgres(url) => {
                let bytes = crate::store::testing::query_i64(
                    url,
                    "SELECT pg_database_size(current_database())".to_string(),
                )
                .await
                .context("cannot read the size of the PostgreSQL database")?;
                Ok((u64::try_from(bytes).unwrap_or(0), 0))
            }
        }
    }

    /// The daemon's folder: its configuration, database, log and mail.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Sends SIGTERM and waits for the exit; kills the process when it takes longer
    /// than a minute.
    pub async fn stop(mut self) -> anyhow::Result<Stopped> {
        let sent = Instant::now();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("cannot run `kill` to send SIGTERM")?;
        anyhow::ensure!(kill.success(), "`kill -TERM {}` failed: {kill}", self.pid);
        match tokio::time::timeout(STOP_LIMIT, self.child.wait()).await {
            Ok(status) => Ok(Stopped {
                took: sent.elapsed(),
                status: Some(status?),
            }),
            Err(_) => {
                self.child.kill().await?;
                Ok(Stopped {
                    took: sent.elapsed(),
                    status: None,
                })
            }
        }
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A new folder for a daemon's configuration, data and log.
fn temp_folder() -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix("nurtured-bench-")
        .tempdir()
        .context("cannot make a temporary folder for the daemon")
}

/// `nurtured run` from this executable with the configuration `file`, in `dir`, its
/// output going to `daemon.log` there.
fn spawn(dir: &Path, file: &Path) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let exe = std::env::current_exe().context("cannot find the nurtured executable")?;
    let mut command = tokio::process::Command::new(&exe);
    command
        .arg("--config")
        .arg(file)
        .arg("run")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    // The environment's overrides are written into the generated file already; left
    // in place they would replace its database and address.
    for (var, _) in std::env::vars() {
        if var.starts_with(env::PREFIX) {
            command.env_remove(var);
        }
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {} run", exe.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The configuration the bench was started with (its file and `NURTURED_*` variables),
/// changed where a benchmark must differ: its own database and data folder in `dir`,
/// `port` on loopback, no schedules, mail as `mail` says. The rule and template
/// folders keep the names they were written with (rule sources in the lead history
/// are named after them), through links in `dir`.
fn child_config(
    config: &Config,
    dir: &Path,
    port: u16,
    mail: MailTo,
    database_url: String,
) -> anyhow::Result<Table> {
    let text = match &config.file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let mut table: Table = text.parse().context("the configuration is not TOML")?;
    let defaults = Table::try_from(raw::RawConfig::default())?;
    env::apply(&mut table, &defaults, std::env::vars())?;
    let base = std::env::current_dir()?.join(
        config
            .file
            .as_ref()
            .and_then(|p| p.parent())
            .unwrap_or(Path::new("")),
    );
    let written = |path: &[&str]| {
        get(&table, path)
            .or_else(|| get(&defaults, path))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let rules = link_folder(dir, &base, &written(&["rules_dir"]))?;
    let templates = link_folder(dir, &base, &written(&["mail", "templates_dir"]))?;
    let key_file = written(&["mail", "dkim", "key_file"]);
    let secret = written(&["mail", "secret"]);

    let s = |v: String| Value::String(v);
    set(&mut table, &["rules_dir"], s(rules));
    set(&mut table, &["mail", "templates_dir"], s(templates));
    if !key_file.is_empty() {
        set(
            &mut table,
            &["mail", "dkim", "key_file"],
            s(base.join(key_file).display().to_string()),
        );
    }
    set(
        &mut table,
        &["data_dir"],
        s(dir.join("data").display().to_string()),
    );
    set(&mut table, &["database_url"], s(database_url));
    set(&mut table, &["http_addr"], s(format!("127.0.0.1:{port}")));
    set(&mut table, &["schedules"], Value::Array(Vec::new()));
    match mail {
        MailTo::Files => set(&mut table, &["mail", "url"], s(String::new())),
        MailTo::Smtp(port) => {
            set(
                &mut table,
                &["mail", "url"],
                s(format!("smtp://127.0.0.1:{port}")),
            );
            // The bench's SMTP server is on loopback: its links need not be https.
            set(
                &mut table,
                &["mail", "allow_insecure_links"],
                Value::Boolean(true),
            );
            // The daemon refuses SMTP with the shipped secret; the bench's mail stays
            // on loopback, so a throwaway secret does.
            if secret == raw::DEV_SECRET {
                set(
                    &mut table,
                    &["mail", "secret"],
                    s(format!("bench-{}", uuid::Uuid::new_v4().simple())),
                );
            }
        }
    }
    Ok(table)
}

/// `written` as the child should see it: relative names stay (a link in `dir` points
/// at the folder), anything else becomes an absolute path.
fn link_folder(dir: &Path, base: &Path, written: &str) -> anyhow::Result<String> {
    let path = Path::new(written);
    if path.is_absolute() {
        return Ok(written.to_string());
    }
    let target = base.join(path);
    if cfg!(unix) && path.components().all(|c| matches!(c, Component::Normal(_))) {
        let link = dir.join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        symlink(&target, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))?;
        Ok(written.to_string())
    } else {
        Ok(target.display().to_string())
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("links need a unix system"))
}

fn get<'a>(table: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(*p)?.as_table()?;
    }
    t.get(*last)
}

fn set(table: &mut Table, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        t = entry.as_table_mut().expect("made a table above");
    }
    t.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_gets_its_own_database_port_and_mail_and_keeps_the_rest() {
        let from = tempfile::tempdir().unwrap();
        let file = from.path().join("nurtured.toml");
        std::fs::create_dir(from.path().join("rules")).unwrap();
        std::fs::write(
            &file,
            "api_token = \"a-long-token\"\nrules_dir = \"rules\"\n\n[processing]\nbatch_size = 777\n",
        )
        .unwrap();
        let config = Config::load_with_env(Some(&file), Vec::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nurtured.db").display());
        let table = child_config(&config, dir.path(), 4321, MailTo::Smtp(2525), url).unwrap();
        let text = toml::to_string(&table).unwrap();
        let child_file = dir.path().join("nurtured.toml");
        std::fs::write(&child_file, &text).unwrap();
        let child = Config::load_with_env(Some(&child_file), Vec::new()).unwrap();
        assert_eq!(child.api_token, "a-long-token");
        assert_eq!(child.processing.batch_size, 777);
        assert_eq!(child.http_addr.to_string(), "127.0.0.1:4321");
        assert!(child.schedules.is_empty(), "{text}");
        assert_eq!(
            child.database_url,
            format!("sqlite://{}", dir.path().join("nurtured.db").display())
        );
        assert_eq!(child.rules_shown, "rules");
        assert_eq!(
            child.rules_dir.canonicalize().unwrap(),
            from.path().join("rules").canonicalize().unwrap()
        );
        assert!(matches!(
            child.mail.transport,
            crate::config::mail::TransportConfig::Smtp(ref u) if u == "smtp://127.0.0.1:2525"
        ));
        assert!(!child.uses_dev_secret());
    }
}
