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
    /// Endpoint of the identity plane: the IAM API (`iam` backend) or the
    /// MinIO admin API (`minio`). Default: the S3 endpoint, where SeaweedFS
    /// and MinIO serve them.
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
    crate::pathinfo::DEFAULT_STORE_DIR.into()
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

impl CacheSection {
    /// The URL clients substitute from: `substituterUrl`, else
    /// `endpoint/bucket` (path style) or `scheme://bucket.host` (virtual-host
    /// style), as the Nix modules compute it.
    pub fn substituter_url(&self) -> String {
        if let Some(u) = &self.substituter_url {
            return u.clone();
        }
        match url::Url::parse(&self.endpoint) {
            Ok(u) if !self.path_style && u.host_str().is_some() => {
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "{}://{}.{}{port}",
                    u.scheme(),
                    self.bucket,
                    u.host_str().unwrap_or_default()
                )
            }
            _ => format!("{}/{}", self.endpoint.trim_end_matches('/'), self.bucket),
        }
    }
}

impl ProvisionSection {
    /// The writer credentials file: the configured one or `<stateDir>/writer.env`.
    pub fn writer_credentials_path(&self) -> PathBuf {
        self.writer_credentials_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("writer.env"))
    }
}

/// One thing wrong with a manifest: the option path (camelCase, as in the
/// Nix module, e.g. `push.keyName`) and what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The option path, e.g. `cache.endpoint` or `trust.publicKeys[1]`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A URL the helper sends credentials to: valid, and plain http only to
    /// loopback unless `allow_insecure_http`.
    fn endpoint_url(&mut self, field: &str, url: &str, allow_insecure_http: bool) {
        let checked = crate::http::parse_endpoint_url(url, field)
            .and_then(|u| crate::http::check_transport_security(&u, allow_insecure_http, field));
        if let Err(e) = checked {
            self.config_error(field, e);
        }
    }

    /// A URL clients fetch from (no credentials travel, signatures protect
    /// the content): it only has to be a valid http(s) URL.
    fn public_url(&mut self, field: &str, url: &str) {
        if let Err(e) = crate::http::parse_endpoint_url(url, field) {
            self.config_error(field, e);
        }
    }

    fn config_error(&mut self, field: &str, e: crate::Error) {
        match e {
            crate::Error::InvalidConfig { message, .. } => self.add(field, message),
            e => self.add(field, e.to_string()),
        }
    }

    /// A file or directory the helper writes or that holds a secret: an
    /// absolute path outside the world-readable Nix store.
    fn private_path(&mut self, field: &str, path: &Path, what: &str) {
        if !path.is_absolute() {
            self.add(
                field,
                format!("`{}` must be an absolute path", path.display()),
            );
        } else if crate::fsutil::is_in_nix_store(path) {
            self.add(
                field,
                format!(
                    "`{}` is inside /nix/store, which every user can read and nothing may \
                     write; {what}: give a path such as /run/secrets/… or /var/lib/… (a \
                     string, not a Nix path literal, so the file is not copied into the store)",
                    path.display()
                ),
            );
        }
    }

    /// An IAM-style name (user or policy): 1..=max of `A-Za-z0-9+=,.@_-`.
    fn iam_name(&mut self, field: &str, name: &str, max: usize) {
        let ok = (1..=max).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !ok {
            self.add(
                field,
                format!("`{name}` must be 1 to {max} characters of letters, digits and `+=,.@_-`"),
            );
        }
    }
}

impl Manifest {
    /// Every problem with the values (the schema itself is enforced when
    /// parsing). Checks only the text, never the file system: the module runs
    /// this at build time, where secrets and state directories do not exist.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        if self.version != MANIFEST_VERSION {
            p.add(
                "version",
                format!(
                    "is {}, but this nix-binary-cache reads version {MANIFEST_VERSION}; use the \
                     helper from the same flake revision as the module",
                    self.version
                ),
            );
        }

        let c = &self.cache;
        p.endpoint_url("cache.endpoint", &c.endpoint, c.allow_insecure_http);
        if let Err(m) = crate::s3::validate_bucket_name(&c.bucket) {
            p.add(
                "cache.bucket",
                format!("{m} (S3 bucket naming rules); e.g. `nix-cache`"),
            );
        }
        if c.region.trim().is_empty() {
            p.add(
                "cache.region",
                "must not be empty; the default is `us-east-1`",
            );
        }
        if let Some(url) = &c.substituter_url {
            p.public_url("cache.substituterUrl", url);
        }
        if !c.store_dir.starts_with('/') || (c.store_dir.len() > 1 && c.store_dir.ends_with('/')) {
            p.add(
                "cache.storeDir",
                format!(
                    "`{}` must be an absolute path without a trailing slash, e.g. /nix/store",
                    c.store_dir
                ),
            );
        }

        if let Some(pr) = &self.provision {
            p.private_path(
                "provision.adminCredentialsFile",
                &pr.admin_credentials_file,
                "it holds the store's admin key",
            );
            if let Some(f) = &pr.writer_credentials_file {
                p.private_path(
                    "provision.writerCredentialsFile",
                    f,
                    "it holds the writer's secret",
                );
            }
            p.private_path(
                "provision.stateDir",
                &pr.state_dir,
                "provisioning writes state there",
            );
            if let Some(url) = &pr.iam_endpoint {
                p.endpoint_url("provision.iamEndpoint", url, c.allow_insecure_http);
            }
            p.iam_name("provision.writerUser", &pr.writer_user, 64);
            p.iam_name("provision.writerPolicy", &pr.writer_policy, 128);
        }

        if let Some(t) = &self.trust {
            // Nix keeps the first key of each name: a second one is ignored.
            let mut names: Vec<(String, String)> = Vec::new();
            let lists = [
                ("trust.publicKeys", &t.public_keys),
                ("trust.retiredPublicKeys", &t.retired_public_keys),
            ];
            for (list, keys) in lists {
                for (i, k) in keys.iter().enumerate() {
                    let field = format!("{list}[{i}]");
                    match crate::signing::PublicKey::parse(k) {
                        Err(m) => p.add(
                            field,
                            format!(
                                "`{k}` {m}; copy the line `nix-binary-cache keys public` \
                                 prints on the builder"
                            ),
                        ),
                        Ok(key) => {
                            if let Some((_, first)) = names.iter().find(|(n, _)| *n == key.name) {
                                p.add(
                                    field,
                                    format!(
                                        "a second key named `{}` (the first is {first}); Nix \
                                         trusts only the first key of each name: give every \
                                         key its own name (`-1`, `-2`, …)",
                                        key.name
                                    ),
                                );
                            } else {
                                names.push((key.name, field));
                            }
                        }
                    }
                }
            }
        }

        if let Some(pu) = &self.push {
            match crate::signing::validate_key_name(&pu.key_name) {
                Err(m) => p.add("push.keyName", m),
                Ok(()) if crate::signing::key_generation(&pu.key_name).is_none() => p.add(
                    "push.keyName",
                    format!(
                        "`{}` must end in `-N` (e.g. `{}-1`): key rotation derives the next \
                         name from that number",
                        pu.key_name, pu.key_name
                    ),
                ),
                Ok(()) => {}
            }
            p.private_path(
                "push.signingKeyFile",
                &pu.signing_key_file,
                "it holds the secret signing key",
            );
            p.private_path(
                "push.writerCredentialsFile",
                &pu.writer_credentials_file,
                "it holds the writer's secret",
            );
            p.private_path(
                "push.spoolDir",
                &pu.spool_dir,
                "the upload queue writes there",
            );
            // The codec and level rules are push's own, so `check` and
            // `push` cannot disagree.
            match crate::push::Compression::parse(&pu.compression) {
                Err(m) => p.add("push.compression", m),
                Ok(codec) => {
                    if let Some(level) = pu.compression_level
                        && let Err(m) = codec.check_level(level)
                    {
                        p.add("push.compressionLevel", m);
                    }
                }
            }
            if pu.jobs == 0 {
                p.add("push.jobs", "must be at least 1 (parallel uploads)");
            }
            if pu.spool_max_entries == 0 {
                p.add(
                    "push.spoolMaxEntries",
                    "must be at least 1, or no build would ever be queued for upload",
                );
            }
            for (i, url) in pu.skip_if_substitutable.iter().enumerate() {
                p.public_url(&format!("push.skipIfSubstitutable[{i}]"), url);
            }
        }
        p.0
    }
}

/// Reads, parses and validates a manifest: what every command given
/// `--manifest` calls. All problems are reported at once, one per line.
pub fn load_valid(path: &Path) -> crate::Result<Manifest> {
    let m = load(path)?;
    let problems = m.validate();
    if problems.is_empty() {
        return Ok(m);
    }
    Err(crate::Error::Manifest {
        path: path.to_path_buf(),
        message: problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n  "),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "version = 1\n[cache]\nendpoint = \"https://s3.example.org\"\nbucket = \"nix-cache\"\n";

    #[test]
    fn defaults_fill_a_minimal_manifest() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.cache.region, "us-east-1");
        assert!(m.cache.path_style && m.cache.want_mass_query);
        assert!(m.validate().is_empty());
    }

    #[test]
    fn problems_name_the_option_path() {
        let text = format!(
            "{MINIMAL}[push]\nkeyName = \"k\"\nsigningKeyFile = \"/nix/store/x\"\n\
             writerCredentialsFile = \"/run/w\"\ncompression = \"none\"\ncompressionLevel = 1\n"
        );
        let problems = parse(&text).unwrap().validate();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "push.keyName",
                "push.signingKeyFile",
                "push.compressionLevel"
            ]
        );
        assert!(
            problems[0]
                .to_string()
                .starts_with("push.keyName: `k` must end in `-N`")
        );
    }

    #[test]
    fn substituter_url_defaults() {
        let mut m = parse(MINIMAL).unwrap();
        assert_eq!(
            m.cache.substituter_url(),
            "https://s3.example.org/nix-cache"
        );
        m.cache.path_style = false;
        m.cache.endpoint = "https://s3.example.org:9000/".into();
        assert_eq!(
            m.cache.substituter_url(),
            "https://nix-cache.s3.example.org:9000"
        );
        m.cache.substituter_url = Some("https://cache.example.org".into());
        assert_eq!(m.cache.substituter_url(), "https://cache.example.org");
    }

    #[test]
    fn load_valid_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, MINIMAL.replace("nix-cache", "NC").replace("= 1", "= 9")).unwrap();
        let err = load_valid(&p).unwrap_err().to_string();
        assert!(
            err.contains("m.toml") && err.contains("version:") && err.contains("cache.bucket:"),
            "{err}"
        );
        std::fs::write(&p, MINIMAL).unwrap();
        assert_eq!(load_valid(&p).unwrap().cache.bucket, "nix-cache");
    }
}
