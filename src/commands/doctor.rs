//! `doctor`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// Runs `doctor`.
pub fn run(_args: DoctorArgs) -> Result<ExitCode> {
    Err(Error::Other("`doctor` is not implemented yet".into()))
}
