//! The `nurtured` command: parses the command line and hands over to the library.

use clap::Parser;

/// Rules, JSON and SQL rows allocate many small values on one thread and free them on
/// another (intake, rule threads, SQLite's connection threads); jemalloc handles that
/// with less work and less memory than the system allocator or mimalloc (measured:
/// `nurtured bench`, see docs/performance.md). It also serves SQLite's allocations
/// (`unprefixed_malloc_on_supported_platforms`), so all memory is in one allocator.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    nurtured::install_crypto();
    let args = nurtured::cli::Args::parse();
    nurtured::cli::main(args)
}
