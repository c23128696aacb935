//! `check`: validates a manifest. The modules run it in a build step, so a
//! bad configuration fails `nixos-rebuild build` rather than the boot; it
//! reads only the manifest, never the secrets or directories it names.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::Result;
use crate::manifest;

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The manifest (TOML) to validate.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
}

/// Runs `check`: prints `ok`, or every problem (exit 2).
pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let m = manifest::load(&args.manifest)?;
    let problems = m.validate();
    if problems.is_empty() {
        println!("ok");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("error: {}: {p}", args.manifest.display());
    }
    eprintln!(
        "{} problem{} in {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        args.manifest.display()
    );
    Ok(ExitCode::from(2))
}
