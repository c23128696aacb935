//! `push`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {}

/// Runs `push`.
pub fn run(_args: PushArgs) -> Result<ExitCode> {
    Err(Error::Other("`push` is not implemented yet".into()))
}
