//! `provision`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {}

/// Runs `provision`.
pub fn run(_args: ProvisionArgs) -> Result<ExitCode> {
    Err(Error::Other("`provision` is not implemented yet".into()))
}
