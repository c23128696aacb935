//! Provisioning: reconcile an S3 store into a Nix binary cache.
//!
//! Desired state, read, compare, write the difference. The resources, in
//! the order they are reconciled and reported:
//!
//! | resource | module |
//! |---|---|
//! | `bucket`, `nix-cache-info`, `bucket-policy`, `lifecycle` | [`bucket`] (plain S3, every backend) |
//! | `writer-policy`, `writer-identity`, `attachment` | [`identity`] (per backend: [`iam`], [`minio`]) |
//!
//! A converged store costs reads only (S3 GET/HEAD, IAM `Get*`/`List*`),
//! about ten of them, sent concurrently where they do not depend on each
//! other. Concurrent runs on one host serialise on a lock file in the state
//! directory; a store that is not up yet (boot ordering) is waited for with
//! bounded, logged retries.
//!
//! [`ProvisionConfig`] is the one input, built from command-line flags or
//! from a manifest's `cache` and `provision` sections; [`provision`] runs it
//! and returns a [`Report`].

pub mod bucket;
pub mod iam;
pub mod identity;
pub mod lifecycle;
pub mod minio_plane;
pub mod policy;
pub mod report;

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::credentials::Credentials;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::http::{self, Endpoint, EndpointConfig};
use crate::manifest::{Backend, Manifest};
use crate::s3::{S3Client, validate_bucket_name};

pub use identity::{IdentityContext, IdentityPlane};
pub use report::{Outcome, Report, Requests, Status};

/// Everything a provision run needs; flags and manifests both become this.
#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    /// S3 endpoint URL.
    pub endpoint: String,
    /// SigV4 region.
    pub region: String,
    /// Path-style bucket addressing.
    pub path_style: bool,
    /// Allow plain http to a host that is not loopback.
    pub allow_insecure_http: bool,
    /// Extra PEM CA bundle.
    pub ca_file: Option<PathBuf>,
    /// The cache's bucket.
    pub bucket: String,
    /// Identity backend.
    pub backend: Backend,
    /// Env file with the store's admin key pair.
    pub admin_credentials_file: PathBuf,
    /// IAM endpoint; `None`: the S3 endpoint.
    pub iam_endpoint: Option<String>,
    /// Name of the writer identity (IAM user, MinIO user).
    pub writer_user: String,
    /// Name of the writer policy.
    pub writer_policy: String,
    /// The writer credentials env file.
    pub writer_credentials_file: PathBuf,
    /// State directory (lock file, writer credentials by default).
    pub state_dir: PathBuf,
    /// Anonymous reads allowed.
    pub public: bool,
    /// `StoreDir` of `nix-cache-info`.
    pub store_dir: String,
    /// `Priority` of `nix-cache-info`.
    pub priority: u32,
    /// `WantMassQuery` of `nix-cache-info`.
    pub want_mass_query: bool,
    /// Lifecycle rule aborting incomplete uploads after this many days (0: none).
    pub abort_incomplete_multipart_days: u32,
    /// How long to wait for a store that is not up yet.
    pub wait_timeout: Duration,
    /// Read and report only.
    pub dry_run: bool,
    /// The manifest the configuration came from (for error messages).
    pub manifest: Option<PathBuf>,
}

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nix-binary-cache";

impl ProvisionConfig {
    /// The configuration of a manifest's `cache` and `provision` sections.
    pub fn from_manifest(m: &Manifest, path: &Path) -> Result<ProvisionConfig> {
        let p = m.provision.as_ref().ok_or_else(|| Error::Manifest {
            path: path.to_path_buf(),
            message: "has no [provision] section: this host does not provision the store".into(),
        })?;
        Ok(ProvisionConfig {
            endpoint: m.cache.endpoint.clone(),
            region: m.cache.region.clone(),
            path_style: m.cache.path_style,
            allow_insecure_http: m.cache.allow_insecure_http,
            ca_file: m.cache.ca_file.clone(),
            bucket: m.cache.bucket.clone(),
            backend: p.backend,
            admin_credentials_file: p.admin_credentials_file.clone(),
            iam_endpoint: p.iam_endpoint.clone(),
            writer_user: p.writer_user.clone(),
            writer_policy: p.writer_policy.clone(),
            writer_credentials_file: p.writer_credentials_path(),
            state_dir: p.state_dir.clone(),
            public: p.public,
            store_dir: m.cache.store_dir.clone(),
            priority: m.cache.priority,
            want_mass_query: m.cache.want_mass_query,
            abort_incomplete_multipart_days: p.abort_incomplete_multipart_days,
            wait_timeout: Duration::from_secs(p.wait_timeout_secs),
            dry_run: false,
            manifest: Some(path.to_path_buf()),
        })
    }

    /// How to name a setting in an error: the flag, or the manifest key.
    pub fn field(&self, flag: &str, manifest_key: &str) -> String {
        match &self.manifest {
            Some(p) => format!("{}: {manifest_key}", p.display()),
            None => flag.to_string(),
        }
    }

    /// The exact bytes of `nix-cache-info`.
    pub fn nix_cache_info(&self) -> String {
        format!(
            "StoreDir: {}\nWantMassQuery: {}\nPriority: {}\n",
            self.store_dir,
            u8::from(self.want_mass_query),
            self.priority
        )
    }

    /// An endpoint configuration for `url` with this run's TLS settings.
    pub fn endpoint_config(&self, url: &str, field: String) -> Result<EndpointConfig> {
        let parsed = http::parse_endpoint_url(url, &field)?;
        http::check_transport_security(&parsed, self.allow_insecure_http, &field)?;
        let mut ec = EndpointConfig::new(url)?;
        ec.region = self.region.clone();
        ec.allow_insecure_http = self.allow_insecure_http;
        ec.ca_file = self.ca_file.clone();
        Ok(ec)
    }

    /// Checks every value before any request is sent.
    pub fn validate(&self) -> Result<()> {
        validate_bucket_name(&self.bucket)
            .map_err(|m| Error::config(self.field("--bucket", "cache.bucket"), m))?;
        self.endpoint_config(&self.endpoint, self.field("--endpoint", "cache.endpoint"))?;
        if let Some(iam) = &self.iam_endpoint {
            self.endpoint_config(iam, self.field("--iam-endpoint", "provision.iamEndpoint"))?;
        }
        if self.region.is_empty() || self.region.contains(char::is_whitespace) {
            return Err(Error::config(
                self.field("--region", "cache.region"),
                format!("`{}` is not a region name (e.g. us-east-1)", self.region),
            ));
        }
        if self.backend != Backend::S3 {
            validate_iam_name(&self.writer_user, 64).map_err(|m| {
                Error::config(self.field("--writer-user", "provision.writerUser"), m)
            })?;
            validate_iam_name(&self.writer_policy, 128).map_err(|m| {
                Error::config(self.field("--writer-policy", "provision.writerPolicy"), m)
            })?;
        }
        if !self.store_dir.starts_with('/') || self.store_dir.contains(char::is_whitespace) {
            return Err(Error::config(
                self.field("--store-dir", "cache.storeDir"),
                format!(
                    "`{}` must be an absolute path without spaces",
                    self.store_dir
                ),
            ));
        }
        for (path, flag, key) in [
            (
                &self.admin_credentials_file,
                "--admin-credentials-file",
                "provision.adminCredentialsFile",
            ),
            (
                &self.writer_credentials_file,
                "--writer-credentials-file",
                "provision.writerCredentialsFile",
            ),
        ] {
            if fsutil::is_in_nix_store(path) {
                return Err(Error::config(
                    self.field(flag, key),
                    format!(
                        "{} is in the Nix store, which every user can read: keep secrets \
                         outside it (e.g. a LoadCredential path or /var/lib)",
                        path.display()
                    ),
                ));
            }
        }
        if self.backend == Backend::Iam && self.writer_credentials_file.starts_with("/run") {
            eprintln!(
                "warning: the writer credentials file {} is under /run, which is emptied at \
                 boot: an IAM store would issue a new key at every boot; keep it in the state \
                 directory",
                self.writer_credentials_file.display()
            );
        }
        Ok(())
    }
}

/// IAM user and policy names: 1 to `max` of `A-Z a-z 0-9 + = , . @ _ -`.
fn validate_iam_name(name: &str, max: usize) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!("`{name}` must be 1 to {max} characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c)))
    {
        return Err(format!(
            "`{name}` contains `{c}`; use letters, digits and + = , . @ _ -"
        ));
    }
    Ok(())
}

/// Runs provisioning: validate, lock, wait for the store, reconcile every
/// resource, and report.
pub async fn provision(cfg: &ProvisionConfig) -> Result<Report> {
    cfg.validate()?;
    let admin = Credentials::from_env_file(&cfg.admin_credentials_file)?;
    let s3_endpoint = Endpoint::new(
        cfg.endpoint_config(&cfg.endpoint, cfg.field("--endpoint", "cache.endpoint"))?,
    )?;
    let s3 = S3Client::new(s3_endpoint.clone(), Some(admin.clone()), cfg.path_style);
    let plane = IdentityPlane::new(cfg, &admin, &s3_endpoint)?;
    let _lock = if cfg.dry_run {
        None
    } else {
        Some(lock_state_dir(&cfg.state_dir).await?)
    };
    let outcomes = reconcile(cfg, &s3, &plane)
        .await
        .map_err(|e| explain_admin_error(e, cfg, &admin))?;
    let (iam_reads, iam_writes) = plane.own_requests(&s3_endpoint);
    Ok(Report::new(
        cfg.endpoint.clone(),
        cfg.bucket.clone(),
        cfg.dry_run,
        outcomes,
        Requests {
            reads: s3_endpoint.stats.reads() + iam_reads,
            writes: s3_endpoint.stats.writes() + iam_writes,
        },
    ))
}

async fn reconcile(
    cfg: &ProvisionConfig,
    s3: &S3Client,
    plane: &IdentityPlane,
) -> Result<Vec<Outcome>> {
    let exists = wait_for_store(cfg, s3).await?;
    let mut outcomes = vec![bucket::ensure_bucket(s3, cfg, exists).await?];
    let bucket_exists = exists || !cfg.dry_run;
    let cx = IdentityContext {
        config: cfg,
        s3,
        bucket_exists,
    };
    // Both planes run to their end even when one fails, so that no write is
    // cancelled halfway; the bucket plane's error is reported first.
    let (buckets, identities) = tokio::join!(
        bucket::reconcile(s3, cfg, bucket_exists),
        plane.reconcile(&cx)
    );
    if let (Err(_), Err(e)) = (&buckets, &identities) {
        eprintln!("provision: the identity plane failed too: {e}");
    }
    outcomes.extend(buckets?);
    outcomes.extend(identities?);
    Ok(outcomes)
}

/// Sends the first request (does the bucket exist?) until the store
/// answers, for at most `wait_timeout`: connection errors and 5xx answers
/// are retried with backoff and logged; anything else is an answer.
async fn wait_for_store(cfg: &ProvisionConfig, s3: &S3Client) -> Result<bool> {
    let probe = S3Client::new(
        s3.endpoint.with_max_retries(0),
        s3.credentials().cloned(),
        cfg.path_style,
    );
    http::wait_until_up(
        cfg.wait_timeout,
        |left| {
            let probe = &probe;
            async move {
                let answer = tokio::time::timeout(
                    left.max(Duration::from_millis(200)),
                    bucket::bucket_exists(probe, &cfg.bucket),
                )
                .await;
                match answer {
                    Ok(Ok(exists)) => Ok(Ok(exists)),
                    Ok(Err(e)) if store_not_up(&e) => Ok(Err(short_reason(&e))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Ok(Err("no answer".to_string())),
                }
            }
        },
        |why, attempt, delay, left| {
            eprintln!(
                "provision: the store at {} is not up yet ({why}); retry {attempt} in {:.1}s, \
                 giving up in {:.1}s",
                cfg.endpoint,
                delay.as_secs_f64(),
                left.as_secs_f64()
            )
        },
        |why| Error::Transport {
            endpoint: cfg.endpoint.clone(),
            message: format!(
                "the store did not answer within {}s ({why}); is it running? Check the \
                 endpoint ({}), or allow it more time to start with {}",
                cfg.wait_timeout.as_secs(),
                cfg.field("--endpoint", "cache.endpoint"),
                cfg.field("--wait-timeout", "provision.waitTimeoutSecs"),
            ),
        },
    )
    .await
}

/// Connection errors, 5xx (but 501) and 429: the store is not (fully) up.
fn store_not_up(e: &Error) -> bool {
    match e {
        Error::Transport { .. } => true,
        Error::Store { status, .. } => (*status >= 500 && *status != 501) || *status == 429,
        _ => false,
    }
}

/// The gist of a transport or store error, without the endpoint prefix.
fn short_reason(e: &Error) -> String {
    match e {
        Error::Transport { message, .. } => message.clone(),
        Error::Store { status, code, .. } => match code {
            Some(c) => format!("HTTP {status} {c}"),
            None => format!("HTTP {status}"),
        },
        other => other.to_string(),
    }
}

/// Takes the state directory's lock (`provision.lock`), waiting for a
/// concurrent run to finish. Released when the file is dropped.
async fn lock_state_dir(dir: &Path) -> Result<File> {
    fsutil::create_dir_all_mode(dir, fsutil::SECRET_DIR_MODE)?;
    let path = dir.join("provision.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(fsutil::SECRET_MODE)
        .open(&path)
        .io_context("open", &path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            eprintln!(
                "provision: waiting for another provision run to finish (lock {})",
                path.display()
            );
            let waited = path.clone();
            tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(|e| {
                    Error::Other(format!("waiting for the lock {}: {e}", waited.display()))
                })?
                .io_context("lock", &path)
        }
        Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// Rewrites "wrong credentials" and "not allowed" answers to admin requests
/// so that they name the admin credentials file and say what to change.
fn explain_admin_error(mut e: Error, cfg: &ProvisionConfig, admin: &Credentials) -> Error {
    if let Error::Store {
        code: Some(code),
        message,
        ..
    } = &mut e
    {
        let file = cfg.admin_credentials_file.display();
        let id = &admin.access_key_id;
        match code.as_str() {
            "InvalidAccessKeyId" | "InvalidClientTokenId" => {
                *message = format!(
                    "the store does not know the admin access key {id} from {file}: put the \
                     store's admin key pair in that file"
                )
            }
            "SignatureDoesNotMatch" => {
                *message = format!(
                    "the store rejects the admin secret for access key {id} from {file} (or \
                     the region is wrong): put the key's current secret in that file"
                )
            }
            "AccessDenied" | "AccessDeniedException" => {
                *message = format!(
                    "the admin identity (access key {id} from {file}) may not do this: use the \
                     store's admin credentials, or grant that identity the permission"
                )
            }
            _ => {}
        }
    }
    e
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cfg() -> ProvisionConfig {
        ProvisionConfig {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            path_style: true,
            allow_insecure_http: false,
            ca_file: None,
            bucket: "nix-cache".into(),
            backend: Backend::Iam,
            admin_credentials_file: "/etc/admin.env".into(),
            iam_endpoint: None,
            writer_user: "nix-cache-writer".into(),
            writer_policy: "nix-cache-write".into(),
            writer_credentials_file: "/var/lib/nix-binary-cache/writer.env".into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            public: true,
            store_dir: "/nix/store".into(),
            priority: 41,
            want_mass_query: true,
            abort_incomplete_multipart_days: 0,
            wait_timeout: Duration::from_secs(1),
            dry_run: false,
            manifest: None,
        }
    }

    #[test]
    fn validation_names_the_setting() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.bucket = "Nix_Cache".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("--bucket: "), "{e}");
        c.manifest = Some("/etc/m.toml".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("/etc/m.toml: cache.bucket: "), "{e}");
        let mut c = cfg();
        c.endpoint = "http://s3.example.org".into();
        assert!(c.validate().unwrap_err().to_string().contains("plain http"));
        let mut c = cfg();
        c.writer_user = "a b".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.writer_credentials_file = "/nix/store/x-writer.env".into();
        assert!(c.validate().unwrap_err().to_string().contains("Nix store"));
    }

    #[test]
    fn nix_cache_info_bytes() {
        let mut c = cfg();
        assert_eq!(
            c.nix_cache_info(),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n"
        );
        c.want_mass_query = false;
        c.priority = 30;
        assert!(
            c.nix_cache_info()
                .contains("WantMassQuery: 0\nPriority: 30\n")
        );
    }
}
