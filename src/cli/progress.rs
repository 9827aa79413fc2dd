//! Progress bars for the long commands (`ingest`, `import`, `events retry`, `events
//! export`): drawn on stderr only when it is a terminal, so pipes, logs and tests get
//! the summary lines alone.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

/// A bar of `len` steps labelled `what`; hidden (drawing nothing) when stderr is not a
/// terminal.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    // Cleared when dropped, so an error printed after it starts on a line of its own.
    let bar = ProgressBar::new(len).with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} events, {elapsed} elapsed, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A spinner counting the bytes written, for output whose length is not known ahead;
/// hidden when stderr is not a terminal.
pub fn bytes(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_finish(ProgressFinish::AndClear);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {binary_bytes} written, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
