//! `enqueue`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {}

/// Runs `enqueue`.
pub fn run(_args: EnqueueArgs) -> Result<ExitCode> {
    Err(Error::Other("`enqueue` is not implemented yet".into()))
}
