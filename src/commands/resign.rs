//! `resign`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `resign`.
#[derive(Debug, clap::Args)]
pub struct ResignArgs {}

/// Runs `resign`.
pub fn run(_args: ResignArgs) -> Result<ExitCode> {
    Err(Error::Other("`resign` is not implemented yet".into()))
}
