//! The manifest: the one contract between the Nix modules and the helper.
//!
//! The NixOS and home-manager modules render their options into one TOML
//! file (`nix/manifest.nix`, via `pkgs.formats.toml`) and every service the
//! modules define runs `nix-binary-cache <command> --manifest FILE`. Keys are
//! the Nix option names (camelCase) so that an error names the option a user
//! wrote. Keep this in sync with `nix/manifest.nix`.
//!
//! Parsing goes through `toml_edit`, so a type error points at a line and a
//! column; unknown keys are refused (`deny_unknown_fields`), so a typo in a
//! module or a version skew between module and helper fails the build, not
//! the boot.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Manifest format version this helper reads.
pub const MANIFEST_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// Format version; must be [`MANIFEST_VERSION`].
    pub version: u32,
    /// Where the cache lives.
    pub cache: CacheSection,
    /// The provision role (one host that holds the store's admin key).
    #[serde(default)]
    pub provision: Option<ProvisionSection>,
    /// The trust role (every machine).
    #[serde(default)]
    pub trust: Option<TrustSection>,
    /// The push role (builders).
    #[serde(default)]
    pub push: Option<PushSection>,
}

/// `cache`: the store endpoint and the bucket, shared by all roles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheSection {
    /// S3 endpoint URL, e.g. `https://s3.example.org`.
    pub endpoint: String,
    /// Bucket name (S3 naming rules: 3-63 of `a-z 0-9 . -`).
    pub bucket: String,
    /// SigV4 region. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Address buckets as `endpoint/bucket` (true, the default) or
    /// `bucket.endpoint` (false).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Allow `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Extra PEM CA bundle for a store with a self-signed certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The URL clients substitute from. Default: `endpoint/bucket` (path
    /// style) or `https://bucket.host` (virtual-host style).
    #[serde(default)]
    pub substituter_url: Option<String>,
    /// The Nix store directory written to `nix-cache-info`. Default `/nix/store`.
    #[serde(default = "default_store_dir")]
    pub store_dir: String,
    /// `Priority` in `nix-cache-info` (lower is preferred; cache.nixos.org is 40).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// `WantMassQuery` in `nix-cache-info`.
    #[serde(default = "default_true")]
    pub want_mass_query: bool,
}

/// `provision`: what the store must look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvisionSection {
    /// `iam`, `minio` or `s3`.
    pub backend: Backend,
    /// Env file with the admin key pair (`AWS_*` or `MINIO_ROOT_*`).
    /// Under systemd this is a `LoadCredential` path.
    pub admin_credentials_file: PathBuf,
    /// IAM endpoint (`iam` backend). Default: the S3 endpoint.
    #[serde(default)]
    pub iam_endpoint: Option<String>,
    /// Name of the writer identity. Default `nix-cache-writer`.
    #[serde(default = "default_writer_user")]
    pub writer_user: String,
    /// Name of the writer policy. Default `nix-cache-write`.
    #[serde(default = "default_writer_policy")]
    pub writer_policy: String,
    /// Writer credentials env file. Default `<stateDir>/writer.env`.
    #[serde(default)]
    pub writer_credentials_file: Option<PathBuf>,
    /// State directory (writer credentials, lock). Default `/var/lib/nix-binary-cache`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Allow anonymous reads (a public cache). Default true.
    #[serde(default = "default_true")]
    pub public: bool,
    /// Abort incomplete multipart uploads after this many days (0: no rule).
    #[serde(default)]
    pub abort_incomplete_multipart_days: u32,
    /// How long to wait for a store that is not up yet, in seconds.
    #[serde(default = "default_wait")]
    pub wait_timeout_secs: u64,
}

/// Identity-plane backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The AWS IAM API (SeaweedFS, AWS, Ceph RGW).
    Iam,
    /// The MinIO admin API v3.
    Minio,
    /// Bucket plane only; identities are managed elsewhere.
    S3,
}

/// `trust`: what clients accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustSection {
    /// Public keys that sign for the cache (`name:base64`).
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// Keys no longer used for signing but still trusted.
    #[serde(default)]
    pub retired_public_keys: Vec<String>,
}

/// `push`: how builders upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PushSection {
    /// Name of the signing key, ending in `-N` (e.g. `cache.example.org-1`).
    pub key_name: String,
    /// Secret key file (generated once if missing, never overwritten).
    pub signing_key_file: PathBuf,
    /// Writer credentials env file.
    pub writer_credentials_file: PathBuf,
    /// `zstd`, `xz` or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Compression level (zstd 1-19, xz 0-9). Default: the codec's default.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Parallel uploads.
    #[serde(default = "default_jobs")]
    pub jobs: u32,
    /// Caches whose paths are not uploaded again (e.g. https://cache.nixos.org).
    #[serde(default)]
    pub skip_if_substitutable: Vec<String>,
    /// Spool directory of the upload queue.
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    /// Maximum number of queued entries; beyond it new ones are refused.
    #[serde(default = "default_spool_max")]
    pub spool_max_entries: u32,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_store_dir() -> String {
    "/nix/store".into()
}
fn default_priority() -> u32 {
    41
}
fn default_writer_user() -> String {
    "nix-cache-writer".into()
}
fn default_writer_policy() -> String {
    "nix-cache-write".into()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/nix-binary-cache")
}
fn default_wait() -> u64 {
    120
}
fn default_compression() -> String {
    "zstd".into()
}
fn default_jobs() -> u32 {
    4
}
fn default_spool() -> PathBuf {
    PathBuf::from("/var/spool/nix-binary-cache")
}
fn default_spool_max() -> u32 {
    10000
}

impl ProvisionSection {
    /// The writer credentials file: the configured one or `<stateDir>/writer.env`.
    pub fn writer_credentials_path(&self) -> PathBuf {
        self.writer_credentials_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("writer.env"))
    }
}

/// Reads and parses a manifest. Validation of values is [`Manifest::validate`].
pub fn load(path: &Path) -> crate::Result<Manifest> {
    let text = crate::fsutil::read_text(path)?;
    parse(&text).map_err(|message| crate::Error::Manifest {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses manifest text; the error carries line and column.
pub fn parse(text: &str) -> Result<Manifest, String> {
    toml_edit::de::from_str::<Manifest>(text).map_err(|e| e.to_string().trim_end().to_string())
}
