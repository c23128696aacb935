//! `upload_queue`: placeholder until its issue lands.

use std::process::ExitCode;

use crate::error::{Error, Result};

/// Arguments of `upload_queue`.
#[derive(Debug, clap::Args)]
pub struct UploadQueueArgs {}

/// Runs `upload_queue`.
pub fn run(_args: UploadQueueArgs) -> Result<ExitCode> {
    Err(Error::Other("`upload_queue` is not implemented yet".into()))
}
