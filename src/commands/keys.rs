//! `keys`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {}

/// Runs a `keys` subcommand.
pub fn run(_c: KeysCommand) -> Result<ExitCode> {
    Err(Error::Other("`keys` is not implemented yet".into()))
}
