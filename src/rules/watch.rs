//! Hot reload: watches a folder (rules, templates) and reloads when a file changes.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::ruleset::Rules;
use super::sandbox::Sandbox;

/// Quiet time after the last change before reloading (editors write in steps).
const SETTLE: Duration = Duration::from_millis(150);

/// Watches until `shutdown`; reloads after changes settle.
pub async fn watch(rules: Arc<Rules>, sandbox: Arc<Sandbox>, shutdown: CancellationToken) {
    let dir = rules.dir().to_path_buf();
    let reload = move || {
        rules.reload(&sandbox);
    };
    watch_folder(&dir, RecursiveMode::NonRecursive, "rules", reload, shutdown).await;
}

/// Watches `dir` until `shutdown` and calls `reload` (on a blocking thread) once
/// changes have settled. `what` names the folder in warnings.
pub async fn watch_folder(
    dir: &std::path::Path,
    mode: RecursiveMode,
    what: &'static str,
    reload: impl Fn() + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let reload = Arc::new(reload);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = match notify::recommended_watcher(
        move |res: notify::Result<notify::Event>| {
            // Reading the files (as the reload does) must not trigger another reload.
            if let Ok(event) = res
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the {what} folder; it reloads on restart only");
            return;
        }
    };
    if let Err(e) = watcher.watch(dir, mode) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the {what} folder; it reloads on restart only");
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        // Let a burst of writes finish. (A closed channel means the watcher stopped:
        // reload once more and end, rather than wait on it in a loop.)
        let mut stopped = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => break,
                got = rx.recv() => if got.is_none() {
                    stopped = true;
                    break;
                },
            }
        }
        let reload = reload.clone();
        let _ = tokio::task::spawn_blocking(move || reload()).await;
        if stopped {
            tracing::warn!("the {what} folder is no longer watched; changes load on restart");
            return;
        }
    }
}
