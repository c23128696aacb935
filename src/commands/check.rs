//! `check`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// Runs `check`.
pub fn run(_args: CheckArgs) -> Result<ExitCode> {
    Err(Error::Other("`check` is not implemented yet".into()))
}
