//! The `nurtured` command: parses the command line and hands over to the library.

use clap::Parser;

/// Rules, JSON and SQL rows allocate many small values on several threads at once;
/// mimalloc handles that much better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nurtured::install_crypto();
    let args = nurtured::cli::Args::parse();
    nurtured::cli::main(args)
}
