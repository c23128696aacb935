//! `queue`: what the upload queue holds, since when, how often it was
//! tried and why it failed (read from the uploader's state files).

use std::path::PathBuf;
use std::process::ExitCode;

use super::upload_queue::spool_dir;
use crate::error::Result;
use crate::push::count;
use crate::push::queue::{Spool, age_of, secs_until};

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
    /// Manifest written by the Nix modules.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `queue` subcommand.
pub fn run(c: QueueCommand) -> Result<ExitCode> {
    let QueueCommand::Status(a) = c;
    let spool = Spool::new(spool_dir(&a.spool, &a.manifest)?);
    let entries = spool.list()?;
    if a.json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|q| {
                serde_json::json!({
                    "name": q.name,
                    "queued": q.entry.as_ref().map(|e| e.queued.clone()),
                    "paths": q.entry.as_ref().map(|e| e.paths.clone()),
                    "drv": q.entry.as_ref().and_then(|e| e.drv.clone()),
                    "attempts": q.state.attempts,
                    "lastAttempt": q.state.last_attempt,
                    "lastError": q.state.last_error,
                    "nextAttempt": q.state.next_attempt,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"spool": spool.dir, "entries": items})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("the upload queue in {} is empty", spool.dir.display());
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
        match &q.entry {
            Some(e) => {
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
            None => println!("- {}{age}: unreadable entry file", q.name),
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
            if let Some(err) = &q.state.last_error {
                println!("  last error: {err}");
            }
        } else {
            println!("  not tried yet");
        }
    }
    Ok(ExitCode::SUCCESS)
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
