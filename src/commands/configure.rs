//! `configure`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `configure`.
#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {}

/// Runs `configure`.
pub fn run(_args: ConfigureArgs) -> Result<ExitCode> {
    Err(Error::Other("`configure` is not implemented yet".into()))
}
