//! Hot reload: watches the rules folder and reloads the rules when a file changes.

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
            tracing::warn!(error = %e, "cannot watch the rules folder; rules reload on restart only");
            return;
        }
    };
    if let Err(e) = watcher.watch(rules.dir(), RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %rules.dir().display(), "cannot watch the rules folder; rules reload on restart only");
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        // Let a burst of writes finish.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => break,
                _ = rx.recv() => continue,
            }
        }
        let (rules, sandbox) = (rules.clone(), sandbox.clone());
        let _ = tokio::task::spawn_blocking(move || rules.reload(&sandbox)).await;
    }
}
