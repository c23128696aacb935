//! `doctor`: resolve flags and manifest into a [`DoctorConfig`], run the
//! checks of [`crate::doctor`] and print them.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::commands::cache_args::CacheArgs;
use crate::doctor::{self, DoctorConfig};
use crate::error::{Error, Result};
use crate::nix_conf::{self, UserInfo};

/// Arguments of `doctor` (its help text is on the command in `cli.rs`).
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Env file with the writer's key pair: checks that it authenticates,
    /// may write and may not delete. Default: push.writerCredentialsFile (or
    /// the provision state file) of the manifest.
    #[arg(long, value_name = "PATH")]
    pub writer_credentials_file: Option<PathBuf>,
    /// The secret key push signs with: checks that clients trust it.
    /// Default: push.signingKeyFile of the manifest.
    #[arg(long, value_name = "PATH")]
    pub signing_key_file: Option<PathBuf>,
    /// A public key that signs for the cache (`name:base64`); repeatable.
    /// Default: trust.publicKeys and trust.retiredPublicKeys of the manifest.
    #[arg(long = "public-key", value_name = "KEY")]
    pub public_keys: Vec<String>,
    /// The URL clients substitute from. Default: cache.substituterUrl of the
    /// manifest, else ENDPOINT/BUCKET.
    #[arg(long, value_name = "URL")]
    pub substituter_url: Option<String>,
    /// The store directory of the clients. Default: cache.storeDir of the
    /// manifest, else /nix/store.
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<String>,
    /// Print the checks as one JSON document.
    #[arg(long)]
    pub json: bool,
}

impl DoctorArgs {
    fn config(self) -> Result<DoctorConfig> {
        let location = self.cache.resolve()?;
        let public_keys = location.trusted_keys(&self.public_keys, "--public-key")?;
        let c = location.manifest.as_ref().map(|m| &m.cache);
        let substituter_url = self
            .substituter_url
            .or(c.map(|c| c.substituter_url()))
            .unwrap_or_else(|| {
                format!(
                    "{}/{}",
                    location.endpoint.url.as_str().trim_end_matches('/'),
                    location.bucket
                )
            });
        crate::http::parse_endpoint_url(&substituter_url, "--substituter-url")?;
        let store_dir = self
            .store_dir
            .or(c.map(|c| c.store_dir.clone()))
            .unwrap_or_else(|| crate::pathinfo::DEFAULT_STORE_DIR.into());
        if !store_dir.starts_with('/') {
            return Err(Error::config(
                "--store-dir",
                format!("`{store_dir}` must be an absolute path, e.g. /nix/store"),
            ));
        }
        Ok(DoctorConfig {
            writer_credentials_file: location.writer_credentials_file(self.writer_credentials_file),
            signing_key_file: location.signing_key_file(self.signing_key_file),
            from_manifest: location.manifest.is_some(),
            endpoint: location.endpoint,
            bucket: location.bucket,
            path_style: location.path_style,
            substituter_url,
            store_dir,
            public_keys,
            nix_conf: nix_conf::daemon_conf_path(),
            user: UserInfo::current(),
        })
    }
}

/// Runs `doctor`: exit 0 when no check failed, 1 otherwise.
pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let json = args.json;
    let cfg = args.config()?;
    let report = crate::cli::block_on(doctor::run(&cfg));
    crate::cli::print_report(&report, json, |r| r.to_text());
    Ok(crate::cli::exit_status(report.ok))
}
