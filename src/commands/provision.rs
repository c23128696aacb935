//! `provision`: reconcile the store into a binary cache, from flags or
//! from the manifest the NixOS module writes. Both become one
//! [`ProvisionConfig`]; the engine is [`crate::provision`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgAction;

use crate::error::Result;
use crate::manifest::{self, Backend};
use crate::provision::{DEFAULT_STATE_DIR, ProvisionConfig, provision};

/// Reconcile an S3 store into a Nix binary cache: bucket, `nix-cache-info`,
/// anonymous-read bucket policy, writer policy, writer identity and its
/// credentials file, attachment, and optionally a lifecycle rule.
///
/// Reads first and writes only what differs; prints one line per resource
/// (`created`, `updated`, `unchanged`; `would create`/`would update` under
/// --dry-run) and the number of requests sent. A converged store costs
/// reads only. Exit 0 when the store has converged (under --dry-run: when
/// nothing would change, 1 otherwise).
///
/// Admin credentials are read from a file, never from the command line.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ProvisionArgs {
    /// Take everything from this manifest (its `cache` and `provision` sections).
    #[arg(long, value_name = "PATH", conflicts_with_all = [
        "endpoint", "bucket", "backend", "admin_credentials_file", "writer_user",
        "writer_policy", "writer_credentials_file", "state_dir", "iam_endpoint", "region",
        "public", "no_public", "priority", "want_mass_query", "store_dir",
        "abort_incomplete_multipart_days", "allow_insecure_http", "ca_file",
    ])]
    manifest: Option<PathBuf>,

    /// S3 endpoint URL, e.g. https://s3.example.org.
    #[arg(long, value_name = "URL", required_unless_present = "manifest")]
    endpoint: Option<String>,

    /// Bucket of the cache.
    #[arg(long, value_name = "NAME", required_unless_present = "manifest")]
    bucket: Option<String>,

    /// Identity backend: `iam` (AWS, SeaweedFS, Ceph RGW), `minio`, or `s3`
    /// (writer managed elsewhere: only checked).
    #[arg(long, value_enum, required_unless_present = "manifest")]
    backend: Option<Backend>,

    /// Env file with the store's admin key pair (AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD).
    #[arg(long, value_name = "PATH", required_unless_present = "manifest")]
    admin_credentials_file: Option<PathBuf>,

    /// Name of the writer identity.
    #[arg(long, value_name = "NAME", default_value = "nix-cache-writer")]
    writer_user: String,

    /// Name of the writer policy.
    #[arg(long, value_name = "NAME", default_value = "nix-cache-write")]
    writer_policy: String,

    /// Writer credentials env file (written by provision for `iam`, given
    /// for `s3`, either for `minio`). Default: STATE_DIR/writer.env.
    #[arg(long, value_name = "PATH")]
    writer_credentials_file: Option<PathBuf>,

    /// State directory: lock file and, by default, the writer credentials.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Endpoint of the identity plane: the IAM API (`iam` backend) or the
    /// MinIO admin API (`minio`). Default: the S3 endpoint.
    #[arg(long, value_name = "URL")]
    iam_endpoint: Option<String>,

    /// SigV4 region.
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    region: String,

    /// Allow anonymous reads (the default).
    #[arg(long, overrides_with = "no_public")]
    public: bool,

    /// Keep the cache private: remove our anonymous-read statement.
    #[arg(long, overrides_with = "public")]
    no_public: bool,

    /// `Priority` in nix-cache-info (lower is preferred; cache.nixos.org is 40).
    #[arg(long, value_name = "N", default_value_t = 41)]
    priority: u32,

    /// `WantMassQuery` in nix-cache-info.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    want_mass_query: bool,

    /// `StoreDir` in nix-cache-info.
    #[arg(long, value_name = "DIR", default_value = crate::pathinfo::DEFAULT_STORE_DIR)]
    store_dir: String,

    /// Abort incomplete multipart uploads after N days (0: leave the
    /// bucket's lifecycle alone).
    #[arg(long, value_name = "N", default_value_t = 0)]
    abort_incomplete_multipart_days: u32,

    /// Wait this long for a store that is not up yet. Default 120.
    #[arg(long, value_name = "SECS")]
    wait_timeout: Option<u64>,

    /// Allow plain http to a host that is not loopback.
    #[arg(long)]
    allow_insecure_http: bool,

    /// Extra PEM CA bundle for a store with a self-signed certificate.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,

    /// Read and report what would change; change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

const AFTER_HELP: &str = "\
Every run prints one line per resource: created, updated, unchanged (would create /
would update under --dry-run), then the number of requests sent. A converged store
costs reads only. Exit 0 when the store has converged; under --dry-run, 0 when nothing
would change and 1 when something would.

The `iam` backend issues the writer's access key itself and keeps it in the writer
credentials file (mode 0600) while it authenticates; a file it did not write cannot be
adopted. The `minio` backend sets the writer user's secret from the writer credentials
file (whose access key is the user's name), or generates a secret and writes the file
(mode 0600) when there is none. The `s3` backend only checks the given writer
credentials.";

impl ProvisionArgs {
    /// The one configuration, from the manifest or from the flags.
    fn config(self) -> Result<ProvisionConfig> {
        let mut cfg = match &self.manifest {
            Some(path) => ProvisionConfig::from_manifest(&manifest::load(path)?, path)?,
            None => {
                let state_dir = self.state_dir;
                ProvisionConfig {
                    // clap enforces these without --manifest.
                    endpoint: self.endpoint.unwrap_or_default(),
                    bucket: self.bucket.unwrap_or_default(),
                    backend: self.backend.unwrap_or(Backend::S3),
                    admin_credentials_file: self.admin_credentials_file.unwrap_or_default(),
                    region: self.region,
                    path_style: true,
                    allow_insecure_http: self.allow_insecure_http,
                    ca_file: self.ca_file,
                    iam_endpoint: self.iam_endpoint,
                    writer_user: self.writer_user,
                    writer_policy: self.writer_policy,
                    writer_credentials_file: self
                        .writer_credentials_file
                        .unwrap_or_else(|| state_dir.join("writer.env")),
                    state_dir,
                    public: !self.no_public,
                    store_dir: self.store_dir,
                    priority: self.priority,
                    want_mass_query: self.want_mass_query,
                    abort_incomplete_multipart_days: self.abort_incomplete_multipart_days,
                    wait_timeout: Duration::from_secs(120),
                    dry_run: false,
                    manifest: None,
                }
            }
        };
        if let Some(secs) = self.wait_timeout {
            cfg.wait_timeout = Duration::from_secs(secs);
        }
        cfg.dry_run = self.dry_run;
        Ok(cfg)
    }
}

/// Runs `provision`.
pub fn run(args: ProvisionArgs) -> Result<ExitCode> {
    let json = args.json;
    let cfg = args.config()?;
    let report = crate::cli::block_on(provision(&cfg))?;
    crate::cli::print_report(&report, json, |r| r.to_text());
    Ok(crate::cli::exit_status(report.converged))
}
