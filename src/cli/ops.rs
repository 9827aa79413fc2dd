//! `nurtured completions SHELL` and `nurtured man`: shell completions and roff man pages
//! generated from the command line's own definition, so they never fall behind it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Args;
use super::exit::Exit;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: Shell) -> ExitCode {
    let mut command = Args::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "nurtured", &mut script);
    emit(&script, "the completions")
}

/// Writes the man page of `nurtured` to stdout, or with `out` one page per command and
/// subcommand (`nurtured.1`, `nurtured-lead-show.1`, ...) into that folder.
pub fn man(out: Option<&Path>) -> ExitCode {
    let command = Args::command();
    let Some(dir) = out else {
        let mut page = Vec::new();
        if let Err(e) = clap_mangen::Man::new(command).render(&mut page) {
            eprintln!("error: cannot render the man page: {e}");
            return Exit::Failed.into();
        }
        return emit(&page, "the man page");
    };
    match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir)) {
        Ok(()) => {
            eprintln!("wrote the man pages to {}", dir.display());
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the man pages to {}: {e}",
                dir.display()
            );
            Exit::Failed.into()
        }
    }
}

/// Writes `bytes` to stdout. A reader that stops early (`| head`) is not an error.
fn emit(bytes: &[u8], what: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Exit::Ok.into(),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok.into(),
        Err(e) => {
            eprintln!("error: cannot write {what}: {e}");
            Exit::Failed.into()
        }
    }
}
