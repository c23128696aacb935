//! The command line: one subcommand per file under `commands/`, dispatched
//! here. Errors are printed once, as a chain, and mapped to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (for provision: the store has converged)
  1  failure (a check failed, a path could not be pushed, ...)
  2  bad input: a flag, manifest field or file is wrong (the message names it)
  3  the store could not be reached or refused a request";

/// Turn any S3-compatible object store into a signed, trusted Nix binary cache.
#[derive(Debug, Parser)]
#[command(name = "nix-binary-cache", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate and inspect Nix signing keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Write the cache into a nix.conf (managed block) and AWS credentials.
    Configure(commands::configure::ConfigureArgs),
    /// Validate a manifest written by the Nix modules.
    Check(commands::check::CheckArgs),
    /// Reconcile the store into a binary cache: bucket, policies, writer.
    Provision(commands::provision::ProvisionArgs),
    /// Upload store paths (and their closure), signed, to the cache.
    Push(commands::push::PushArgs),
    /// Queue the paths of a finished build for upload (post-build-hook).
    Enqueue(commands::enqueue::EnqueueArgs),
    /// Drain the upload queue, retrying while the cache is down (a service).
    UploadQueue(commands::upload_queue::UploadQueueArgs),
    /// Inspect the upload queue.
    #[command(subcommand)]
    Queue(commands::queue::QueueCommand),
    /// Diagnose why a cache does not work, and say what to change.
    ///
    /// Checks, each reported as ok, warn, fail or skip, with the fix in one
    /// sentence: the endpoint answers and its TLS certificate is valid; the
    /// clock agrees with the store's (SigV4 refuses more than 15 minutes);
    /// `nix-cache-info` is served anonymously with the right StoreDir; an
    /// anonymous write and an anonymous listing are refused; the writer
    /// credentials authenticate, may write (a fixed probe object,
    /// `doctor/write-probe`) and may not delete; the signing key is a
    /// trusted key; the Nix daemon's nix.conf (`$NIX_CONF_DIR/nix.conf`, else
    /// /etc/nix/nix.conf) lists the substituter and the keys; the current
    /// user may use the cache; a sample of narinfos verifies and their NARs
    /// exist. Exit 1 when a check fails, 0 otherwise.
    Doctor(commands::doctor::DoctorArgs),
    /// Add a new key's signature to every narinfo in the bucket.
    ///
    /// For each narinfo: it must parse, carry a valid signature from a
    /// trusted key (--trusted-public-key, e.g. the old key), and no
    /// signature of a trusted key name may fail to verify; then the key's
    /// signature is added with one PUT of the whole narinfo (only a `Sig:`
    /// line changes; NARs are not touched). A narinfo already carrying a
    /// valid signature of the key is left alone, so a second run writes
    /// nothing and an interrupted run is resumed by running it again. Exit 0
    /// when every narinfo carries the key's signature, 1 when some were
    /// skipped (each is listed with what to do).
    Resign(commands::resign::ResignArgs),
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(c) => commands::keys::run(c),
        Command::Configure(a) => commands::configure::run(a),
        Command::Check(a) => commands::check::run(a),
        Command::Provision(a) => commands::provision::run(a),
        Command::Push(a) => commands::push::run(a),
        Command::Enqueue(a) => commands::enqueue::run(a),
        Command::UploadQueue(a) => commands::upload_queue::run(a),
        Command::Queue(c) => commands::queue::run(c),
        Command::Doctor(a) => commands::doctor::run(a),
        Command::Resign(a) => commands::resign::run(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let message = err.to_string();
            eprintln!("error: {message}");
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                // Variants that already print their source (`Io`) are not repeated.
                let cause = s.to_string();
                if !message.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
                source = s.source();
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// Runs an async command body on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(f)
}

/// Prints a command's report: one JSON document with `--json`, else its
/// text form.
pub fn print_report<R: serde::Serialize>(report: &R, json: bool, text: impl FnOnce(&R) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("a report serialises")
        );
    } else {
        print!("{}", text(report));
    }
}

/// Exit 0 when `ok`, 1 otherwise (see `--help`).
pub fn exit_status(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The exit status of a process ended by SIGPIPE (128 + 13), as a shell
/// reports it.
const EXIT_BROKEN_PIPE: i32 = 141;

/// Rust ignores SIGPIPE, so `println!` to a closed pipe (`... | head -1`,
/// `... | grep -q`) panics with a backtrace. Other Unix tools just stop:
/// so does the helper, with the status a SIGPIPE death would give. (Setting
/// SIGPIPE back to its default would need `unsafe`, and would also apply to
/// writes that should fail as errors.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout")
            && message.contains(&format!("(os error {})", libc::EPIPE))
        {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info);
    }));
}
