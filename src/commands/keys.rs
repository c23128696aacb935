//! `keys`: the builder's signing key. `generate` makes it once and never
//! replaces it, so it can run at every activation; `public` prints what
//! clients must trust.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::signing::{self, SecretKey};

/// Key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a signing key if it is missing; print its public key.
    ///
    /// An existing valid key is kept ("unchanged"); an existing file that is
    /// not a valid key is an error and is never overwritten. The public key
    /// is printed as the last line and written to the public key file.
    Generate(GenerateArgs),
    /// Print the public key of a secret key file (`name:base64`).
    Public(PublicArgs),
}

/// Arguments of `keys generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Key name, ending in `-N` for rotation (e.g. `cache.example.org-1`).
    #[arg(long)]
    pub name: String,
    /// Where the secret key lives (created 0600, its directory 0700).
    #[arg(long, value_name = "PATH")]
    pub secret_key_file: PathBuf,
    /// Where to write the public key (0644). Default: the secret key file's
    /// path with `.pub` appended.
    #[arg(long, value_name = "PATH")]
    pub public_key_file: Option<PathBuf>,
}

/// Arguments of `keys public`.
#[derive(Debug, clap::Args)]
pub struct PublicArgs {
    /// The secret key file.
    #[arg(value_name = "PATH")]
    pub secret_key_file: PathBuf,
}

/// Runs a `keys` subcommand.
pub fn run(c: KeysCommand) -> Result<ExitCode> {
    match c {
        KeysCommand::Generate(a) => generate(a),
        KeysCommand::Public(a) => {
            println!("{}", SecretKey::from_file(&a.secret_key_file)?.public());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The default public key file: the secret key file's path plus `.pub`.
pub fn default_public_key_file(secret_key_file: &Path) -> PathBuf {
    let mut p = secret_key_file.as_os_str().to_os_string();
    p.push(".pub");
    PathBuf::from(p)
}

fn generate(a: GenerateArgs) -> Result<ExitCode> {
    signing::validate_key_name(&a.name).map_err(|m| Error::config("--name", m))?;
    if let Some(w) = signing::key_name_warning(&a.name) {
        eprintln!("{w}");
    }
    let (key, change) = signing::ensure_secret_key_file(&a.secret_key_file, &a.name)?;
    println!("secret key {}: {change}", a.secret_key_file.display());
    let public = key.public().to_string();
    let pub_file = a
        .public_key_file
        .unwrap_or_else(|| default_public_key_file(&a.secret_key_file));
    fsutil::create_dir_all_mode(fsutil::parent_dir(&pub_file), 0o755)?;
    let change = fsutil::write_if_changed(&pub_file, format!("{public}\n").as_bytes(), 0o644)?;
    println!("public key {}: {change}", pub_file.display());
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}
