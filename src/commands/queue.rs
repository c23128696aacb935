//! `queue`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Queue subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {}

/// Runs a `queue` subcommand.
pub fn run(_c: QueueCommand) -> Result<ExitCode> {
    Err(Error::Other("`queue` is not implemented yet".into()))
}
