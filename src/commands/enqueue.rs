//! `enqueue`: the nix-daemon's `post-build-hook`. It drops the build's
//! `$OUT_PATHS` into the spool and returns in milliseconds, touching
//! neither the network nor Nix, whatever the state of the cache.
//!
//! It always exits 0: a failing hook stops Nix's build loop ("the build
//! succeeds but no further builds execute"), so its own errors are logged
//! on stderr and swallowed. The uploader (`upload-queue`) does the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use super::upload_queue::spool_dir;
use crate::error::Result;
use crate::push::queue::{Enqueued, Spool, split_out_paths};

/// Arguments of `enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// Spool directory (default: the manifest's push.spoolDir).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Manifest written by the Nix modules (spool directory and cap).
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Refuse new entries while this many wait [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_entries: Option<usize>,
}

fn enqueue(args: &EnqueueArgs) -> Result<Enqueued> {
    let m = args
        .manifest
        .as_deref()
        .map(crate::manifest::load)
        .transpose()?;
    let spool = spool_dir(&args.spool, m.as_ref())?;
    let max = args
        .max_entries
        .or(m.and_then(|m| m.push).map(|p| p.spool_max_entries as usize))
        .unwrap_or(10_000);
    let paths = split_out_paths(&std::env::var("OUT_PATHS").unwrap_or_default());
    let drv = std::env::var("DRV_PATH").ok().filter(|d| !d.is_empty());
    Spool::new(spool).enqueue(&paths, drv.as_deref(), max)
}

/// Runs `enqueue`; exits 0 even on its own errors (see the module docs).
pub fn run(args: EnqueueArgs) -> Result<ExitCode> {
    match enqueue(&args) {
        Ok(Enqueued::Queued(_)) => {}
        Ok(Enqueued::Nothing) => {
            eprintln!("nix-binary-cache enqueue: OUT_PATHS is empty; nothing to queue");
        }
        Ok(Enqueued::Full(n)) => eprintln!(
            "nix-binary-cache enqueue: the upload queue is full ({n} entries wait); \
             not queued: {} (push them later with `nix-binary-cache push`)",
            std::env::var("OUT_PATHS").unwrap_or_default().trim()
        ),
        Err(e) => eprintln!(
            "nix-binary-cache enqueue: error: {e}; not queued: {} (the build is not affected)",
            std::env::var("OUT_PATHS").unwrap_or_default().trim()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
