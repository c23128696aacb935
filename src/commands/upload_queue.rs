//! `upload-queue`: the uploader service. Drains the spool that `enqueue`
//! fills: pushes the waiting entries, removes each one only once its
//! paths are in the cache, and while the cache is down waits with capped
//! exponential backoff, so nothing queued is ever dropped. `--once` makes
//! one pass over every entry and exits (0 when the queue is empty after it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::push::PushTarget;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::push::queue::{Spool, backoff, drain_once, secs_until};
use crate::push::{ProgressMode, count};

/// Arguments of `upload-queue`.
#[derive(Debug, clap::Args)]
pub struct UploadQueueArgs {
    /// Spool directory (default: the manifest's push.spoolDir).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// One pass over every entry, then exit (1 if entries remain).
    #[arg(long)]
    pub once: bool,
    /// How often to look for new entries.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub poll_interval: u64,
    /// Longest wait between attempts while the cache is down.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub max_backoff: u64,
    #[command(flatten)]
    pub target: PushTarget,
}

/// The spool from `--spool`, else the manifest's push.spoolDir (the
/// queue commands and `enqueue` alike).
pub fn spool_dir(spool: &Option<PathBuf>, manifest: Option<&Manifest>) -> Result<PathBuf> {
    spool
        .clone()
        .or_else(|| manifest?.push.as_ref().map(|p| p.spool_dir.clone()))
        .ok_or_else(|| {
            Error::config(
                "--spool",
                "missing: give --spool, or --manifest with push.spoolDir",
            )
        })
}

/// Runs `upload-queue`.
pub fn run(args: UploadQueueArgs) -> Result<ExitCode> {
    let mut t = args.target.resolve()?;
    let spool = Spool::new(spool_dir(&args.spool, t.manifest.as_ref())?);
    if t.options.progress == ProgressMode::Auto {
        t.options.progress = ProgressMode::Lines;
    }
    let cap = Duration::from_secs(args.max_backoff.max(1));
    crate::cli::block_on(async {
        let mut failures = 0u32;
        loop {
            let pass = drain_once(&spool, &t.cache, &t.key, &t.options, args.once, cap).await;
            match &pass {
                Ok(p) if p.attempted > 0 => {
                    if let Some(r) = &p.report {
                        eprintln!("{}", r.summary());
                    }
                    match &p.error {
                        Some(e) => {
                            failures += 1;
                            eprintln!(
                                "upload-queue: {} waiting; push failed: {e}",
                                count(p.waiting, "entry", "entries")
                            );
                        }
                        None => {
                            failures = 0;
                            eprintln!(
                                "upload-queue: {} pushed, {} waiting",
                                count(p.done, "entry", "entries"),
                                p.waiting
                            );
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    eprintln!("upload-queue: {e}");
                }
            }
            if args.once {
                let left = spool.names()?.len();
                if left > 0 {
                    eprintln!(
                        "upload-queue: {} remaining; see `nix-binary-cache queue status --spool {}`",
                        count(left, "entry", "entries"),
                        spool.dir.display()
                    );
                    return Ok(ExitCode::from(1));
                }
                return pass.map(|_| ExitCode::SUCCESS);
            }
            let wait = if failures > 0 {
                let w = backoff(failures, cap);
                eprintln!("upload-queue: next attempt in {}s", w.as_secs());
                w
            } else {
                let poll = Duration::from_secs(args.poll_interval.max(1));
                match pass.as_ref().ok().and_then(|p| p.next_due) {
                    Some(t) if secs_until(t) > 0 => poll.min(Duration::from_secs(secs_until(t))),
                    _ => poll,
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}
