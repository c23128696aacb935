//! `push`: upload store paths and their closures, signed, to the cache.
//!
//! The target comes from flags or from the manifest the Nix modules write
//! (`--manifest`: its `cache` and `push` sections); a flag given as well
//! overrides the manifest's value. The same target options serve
//! `upload-queue`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::commands::cache_args::{CacheArgs, required};
use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::manifest;
use crate::push::{self, Cache, Compression, ProgressMode, PushOptions, Upstream};
use crate::signing::SecretKey;

/// Arguments of `push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Store paths to push, or links to them (`./result`). Their closures
    /// are pushed too unless --no-closure is given.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub target: PushTarget,
}

/// Where and how to push: flags, or a manifest with flags overriding it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PushTarget {
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Env file with the writer's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "PATH")]
    pub writer_credentials_file: Option<PathBuf>,
    /// Nix secret key file (`name:base64`) that signs the narinfos.
    #[arg(long, value_name = "PATH")]
    pub signing_key_file: Option<PathBuf>,
    /// NARs uploaded at once [default: 4].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// NAR compression [default: zstd]. xz is smaller but several times
    /// slower, and its encoder needs ~94 MiB at level 6.
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// Compression level (zstd 1-19, default 3; xz 0-9, default 6).
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
    /// Do not upload paths this cache already serves (one HEAD per path);
    /// repeatable, e.g. --skip-if-substitutable https://cache.nixos.org.
    #[arg(long, value_name = "URL")]
    pub skip_if_substitutable: Vec<String>,
    /// Push only the given paths; their references must already be in the
    /// cache or an upstream, or those paths are refused.
    #[arg(long)]
    pub no_closure: bool,
    /// Print only errors and the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Everything a push needs, resolved from flags and manifest.
#[derive(Debug)]
pub struct ResolvedTarget {
    /// The bucket, with a client signing as the writer.
    pub cache: Cache,
    /// The signing key.
    pub key: SecretKey,
    /// Push options.
    pub options: PushOptions,
    /// The manifest, when one was given (read once, here).
    pub manifest: Option<manifest::Manifest>,
}

impl PushTarget {
    /// Reads the manifest (if any), the credentials and the key, and checks
    /// every value; errors name the flag or manifest field.
    pub fn resolve(&self) -> Result<ResolvedTarget> {
        let mut loc = self.cache.resolve()?;
        let push_m = loc.manifest.as_ref().and_then(|m| m.push.as_ref());
        let creds_file = required(
            loc.writer_credentials_file(self.writer_credentials_file.clone()),
            "--writer-credentials-file",
            "push.writerCredentialsFile",
        )?;
        let key_file = required(
            loc.signing_key_file(self.signing_key_file.clone()),
            "--signing-key-file",
            "push.signingKeyFile",
        )?;
        // Parts of 8 MiB over a slow uplink need more than the default.
        loc.endpoint.timeout = Duration::from_secs(300);
        let client = loc.client(Some(Credentials::from_env_file(&creds_file)?))?;

        let key = SecretKey::from_file(&key_file)?;
        if let Some(p) = push_m
            && p.key_name != key.name
        {
            return Err(Error::invalid_file(
                &key_file,
                format!(
                    "holds the key `{}`, but push.keyName is `{}`; clients trust keys by name",
                    key.name, p.key_name
                ),
            ));
        }

        let compression = match (self.compression, push_m) {
            (Some(c), _) => c,
            (None, Some(p)) => Compression::parse(&p.compression)
                .map_err(|e| Error::config("push.compression", e))?,
            (None, None) => Compression::Zstd,
        };
        // The manifest's level belongs to the manifest's codec: a flag
        // choosing another codec drops it.
        let manifest_level = push_m
            .filter(|p| Compression::parse(&p.compression) == Ok(compression))
            .and_then(|p| p.compression_level);
        let level = self.compression_level.or(manifest_level);
        if let Some(l) = level {
            compression
                .check_level(l)
                .map_err(|e| Error::config("--compression-level", e))?;
        }
        let jobs = self.jobs.or(push_m.map(|p| p.jobs as usize)).unwrap_or(4);
        if jobs == 0 {
            return Err(Error::config("--jobs", "must be at least 1"));
        }
        let upstream_urls = if self.skip_if_substitutable.is_empty() {
            push_m
                .map(|p| p.skip_if_substitutable.clone())
                .unwrap_or_default()
        } else {
            self.skip_if_substitutable.clone()
        };
        let upstreams = upstream_urls
            .iter()
            .map(|u| {
                Upstream::new(
                    u,
                    loc.endpoint.allow_insecure_http,
                    loc.endpoint.ca_file.clone(),
                )
                .map_err(|e| match e {
                    Error::InvalidConfig { message, .. } => {
                        Error::config("--skip-if-substitutable", message)
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = PushOptions {
            compression,
            level,
            jobs,
            closure: !self.no_closure,
            upstreams,
            store_dir: loc
                .manifest
                .as_ref()
                .map(|m| m.cache.store_dir.clone())
                .unwrap_or_else(|| crate::pathinfo::DEFAULT_STORE_DIR.into()),
            progress: if self.quiet {
                ProgressMode::Quiet
            } else {
                ProgressMode::Auto
            },
            ..PushOptions::default()
        };
        Ok(ResolvedTarget {
            cache: Cache::new(client, loc.bucket),
            key,
            options,
            manifest: loc.manifest,
        })
    }
}

/// Runs `push`.
pub fn run(args: PushArgs) -> Result<ExitCode> {
    let t = args.target.resolve()?;
    let report = crate::cli::block_on(push::push(&t.cache, &t.key, &t.options, &args.paths))?;
    println!("{}", report.summary());
    if report.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        // Each failure was reported as it happened; the paths not tried
        // after the store failed are counted, not listed.
        let skipped = report
            .failed
            .iter()
            .filter(|(_, why)| why == push::NOT_ATTEMPTED)
            .count();
        if skipped > 0 {
            eprintln!(
                "error: {} not attempted after the store failed; run the push again once it works",
                push::count(skipped, "path", "paths")
            );
        }
        Ok(ExitCode::from(1))
    }
}
