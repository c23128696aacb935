//! `queue`: what the upload queue holds, since when, how often it was
//! tried and why it failed (read from the uploader's state files), and
//! which files in the spool cannot be used, naming each with what is wrong
//! and what to do (the uploader leaves them alone).

use std::path::PathBuf;
use std::process::ExitCode;

use super::upload_queue::spool_dir;
use crate::error::Result;
use crate::manifest;
use crate::pathinfo::DEFAULT_STORE_DIR;
use crate::push::count;
use crate::push::queue::{Spool, age_of, bad_entry, secs_until};

/// Queue subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Show the waiting entries: age, paths, attempts, last error.
    Status(StatusArgs),
}

/// Arguments of `queue status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Spool directory (default: the manifest's push.spoolDir).
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Manifest written by the Nix modules: supplies push.spoolDir and the
    /// store directory entries are checked against (cache.storeDir;
    /// default /nix/store).
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `queue` subcommand.
pub fn run(c: QueueCommand) -> Result<ExitCode> {
    let QueueCommand::Status(a) = c;
    let m = a.manifest.as_deref().map(manifest::load).transpose()?;
    let spool = Spool::new(spool_dir(&a.spool, m.as_ref())?);
    // The store the uploader checks entries against: a path outside it is
    // reported now, not only after the uploader's next pass.
    let store_dir = m.map_or_else(|| DEFAULT_STORE_DIR.to_string(), |m| m.cache.store_dir);
    let entries = spool.list()?;
    let strays = spool.strays();
    if a.json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|q| {
                let usable = q.usable(&store_dir);
                let entry = q.entry.as_ref().ok();
                serde_json::json!({
                    "name": q.name,
                    "file": spool.entry_path(&q.name),
                    "problem": usable.err(),
                    "queued": entry.map(|e| e.queued.clone()),
                    "paths": entry.map(|e| e.paths.clone()),
                    "drv": entry.and_then(|e| e.drv.clone()),
                    "attempts": q.state.attempts,
                    "lastAttempt": q.state.last_attempt,
                    "lastError": q.state.last_error,
                    "nextAttempt": q.state.next_attempt,
                    "stateProblem": q.state_problem,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"spool": spool.dir, "entries": items, "strays": strays})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("the upload queue in {} is empty", spool.dir.display());
        print_strays(&strays);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} waiting in {}, oldest first:",
        count(entries.len(), "entry", "entries"),
        spool.dir.display()
    );
    for q in &entries {
        let age = age_of(&q.name)
            .map(|d| format!(" ({} ago)", human(d.as_secs())))
            .unwrap_or_default();
        let usable = q.usable(&store_dir);
        match &usable {
            Ok(e) => {
                let more = if e.paths.len() > 1 {
                    format!(" (+{} more)", e.paths.len() - 1)
                } else {
                    String::new()
                };
                println!(
                    "- queued {}{age}: {}{more}",
                    e.queued,
                    e.paths.first().map(String::as_str).unwrap_or("(no paths)")
                );
            }
            Err(problem) => {
                println!("- {}{age}: cannot be used", q.name);
                println!("  {}", bad_entry(&spool.entry_path(&q.name), problem));
            }
        }
        if let Some(problem) = &q.state_problem {
            println!(
                "  its state file {} {problem}: ignored (the uploader replaces it at its next attempt)",
                spool.state_path(&q.name).display()
            );
        }
        if q.state.attempts > 0 {
            let next = secs_until(q.state.next_attempt);
            println!(
                "  {} failed, the last at {}; next try {}",
                count(q.state.attempts as usize, "attempt", "attempts"),
                q.state.last_attempt.as_deref().unwrap_or("?"),
                if next == 0 {
                    "at the next pass".to_string()
                } else {
                    format!("in {}", human(next))
                }
            );
            if let Some(err) = q.state.last_error.as_ref().filter(|_| usable.is_ok()) {
                println!("  last error: {err}");
            }
        } else {
            println!("  not tried yet");
        }
    }
    print_strays(&strays);
    Ok(ExitCode::SUCCESS)
}

/// Files in the spool that are not entries, and what becomes of them.
fn print_strays(strays: &[PathBuf]) {
    if strays.is_empty() {
        return;
    }
    println!("files that are not queue entries:");
    for p in strays {
        let in_queue = p.parent().and_then(|d| d.file_name()) == Some("queue".as_ref());
        let what = if !in_queue {
            "an entry being written, or left by a post-build hook that died while \
             writing it: an hour after it was written the uploader queues it if it is \
             complete and removes it if not"
        } else {
            "ignored by the uploader (entry names end in .json and do not start with \
             a dot); remove it"
        };
        println!("- {}: {what}", p.display());
    }
}

/// 75 → "1m15s".
fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}
