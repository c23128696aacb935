//! `nix-binary-cache`: parse the command line, run, map the result to an
//! exit code. Everything else lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    nix_binary_cache::cli::main()
}
