//! The `nurtured` command: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = nurtured::cli::Args::parse();
    nurtured::cli::main(args)
}
