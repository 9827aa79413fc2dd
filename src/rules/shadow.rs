//! Shadow rules: the list of files that run in shadow (`[rules] shadow`) follows the
//! config file while the daemon runs. The config file is polled once a second (its
//! size, time and contents), not its folder watched: that folder may hold the database,
//! whose every write would wake a folder watcher. When the file changes, the key is
//! read again and the rule set swapped, so a file goes into shadow, or is promoted out
//! of it, without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::ruleset::Rules;

/// Quiet time after the last change before the file is read (editors write in steps).
const SETTLE: Duration = Duration::from_millis(150);
/// How often the config file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// Reads `[rules] shadow` from `config` again and applies it; a file that cannot be
/// read or parsed keeps the list as it was (and says why in the log).
pub fn reload(rules: &Rules, config: &std::path::Path) {
    match crate::config::rules::reread_shadow(config) {
        Ok(list) => {
            rules.set_shadow(&list);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read [rules] shadow from the config file; the shadow list stays as it was");
        }
    }
}

/// Watches the config file until `shutdown` and applies changes of its shadow list.
pub async fn watch(rules: Arc<Rules>, config: PathBuf, shutdown: CancellationToken) {
    let config = std::path::absolute(&config).unwrap_or(config);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|event| !matches!(event.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    };
    let poll = notify::Config::default()
        .with_poll_interval(POLL)
        .with_compare_contents(true);
    let mut watcher = match notify::PollWatcher::new(handler, poll) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; [rules] shadow changes load on restart only");
            return;
        }
    };
    if let Err(e) = watcher.watch(&config, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the config file; [rules] shadow changes load on restart only");
        return;
    }
    // A change made between the start and the watch would go unseen: read it once now.
    {
        let (rules, config) = (rules.clone(), config.clone());
        let _ = tokio::task::spawn_blocking(move || reload(&rules, &config)).await;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => break,
                got = rx.recv() => if got.is_none() { break },
            }
        }
        let (rules, config) = (rules.clone(), config.clone());
        let _ = tokio::task::spawn_blocking(move || reload(&rules, &config)).await;
    }
}
