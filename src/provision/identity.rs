//! The identity plane: who may write the cache, and the writer credentials
//! file builders use.
//!
//! The bucket plane is plain S3 on every store; identities are not. Each
//! backend is one variant of [`IdentityPlane`]:
//!
//! - `Iam` ([`super::iam::IamPlane`]): the AWS IAM API (AWS, SeaweedFS,
//!   Ceph RGW). The store issues the writer's access key.
//! - `Minio` ([`super::minio_plane::MinioPlane`]): the MinIO admin API v3. The
//!   writer's secret is given or generated here, and set on the store.
//! - `None`: the `s3` backend. Identities are managed elsewhere; provision
//!   only checks that the given writer credentials authenticate and may write.
//!
//! # What a backend provides
//!
//! A backend is a struct built by [`IdentityPlane::new`] from the
//! [`ProvisionConfig`], the admin [`Credentials`] and the S3 [`Endpoint`]
//! (MinIO serves its admin API on the S3 port, so a backend may build its
//! client on a clone of that endpoint: requests then count in the run's
//! totals). It provides two things:
//!
//! 1. `writer_actions()`: the S3 actions its writer policy holds. The
//!    backend decides whether [`policy::MULTIPART_LISTING_ACTIONS`] belong in
//!    it (MinIO accepts them; SeaweedFS's IAM cannot update a policy holding
//!    them). Build the document with [`policy::writer_policy`] and compare
//!    with [`policy::same_policy`].
//! 2. `async fn reconcile(&self, cx: &IdentityContext<'_>) ->
//!    Result<Vec<Outcome>>`: read first, compare, write only the difference,
//!    and return exactly three outcomes, in this order:
//!    `writer-policy` (name: the policy name), `writer-identity` (name: the
//!    user name; covers the user *and* the writer credentials file) and
//!    `attachment` (name: `POLICY -> USER`). Under `cx.config.dry_run` send
//!    reads only and answer `Status::WouldCreate` / `WouldUpdate`. A
//!    converged store must cost reads only (IAM `Get*`/`List*`, MinIO admin
//!    `info-*`/`list-*`, S3 GET). Errors are [`crate::Error::Store`] with the
//!    store's code; "already exists" answers to a racing create are success.
//!
//! The shared pieces every backend uses live here: [`load_writer_file`] /
//! [`save_writer_file`] (the env file, atomically, 0600), [`check_writer`]
//! (a signed GET as the writer: HEAD hides the error code) and
//! [`wait_until_valid`] (new keys take a moment to work).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::http::Endpoint;
use crate::manifest::Backend;
use crate::s3::{S3Client, S3Error};

use super::ProvisionConfig;
use super::iam::IamPlane;
use super::minio_plane::MinioPlane;
use super::policy;
use super::report::{Outcome, Status};

/// The first line of a writer credentials file that provision wrote. Only
/// such a file may be replaced when its key stops working: a file without it
/// was given by someone, and an IAM store cannot adopt a given secret.
pub const MANAGED_MARKER: &str = "# Managed by `nix-binary-cache provision`";

/// The identity backend of a run.
#[derive(Debug)]
pub enum IdentityPlane {
    /// The AWS IAM API.
    Iam(IamPlane),
    /// The MinIO admin API v3.
    Minio(MinioPlane),
    /// `s3` backend: bucket plane only; the writer is checked, not managed.
    None,
}

/// What a backend gets to reconcile the writer.
#[derive(Debug)]
pub struct IdentityContext<'a> {
    /// The whole configuration (bucket, writer user, policy name, writer
    /// credentials file, dry run).
    pub config: &'a ProvisionConfig,
    /// The bucket plane signed as the admin; `s3.with_credentials(Some(w))`
    /// signs as the writer for [`check_writer`].
    pub s3: &'a S3Client,
    /// False only under `--dry-run` when the bucket does not exist yet.
    pub bucket_exists: bool,
}

impl IdentityPlane {
    /// The plane for `config.backend`; no request is sent.
    pub fn new(
        config: &ProvisionConfig,
        admin: &Credentials,
        s3_endpoint: &Endpoint,
    ) -> Result<IdentityPlane> {
        match config.backend {
            Backend::Iam => Ok(IdentityPlane::Iam(IamPlane::new(
                config,
                admin,
                s3_endpoint,
            )?)),
            Backend::S3 => Ok(IdentityPlane::None),
            Backend::Minio => Ok(IdentityPlane::Minio(MinioPlane::new(
                config,
                admin,
                s3_endpoint,
            )?)),
        }
    }

    /// The S3 actions of the writer policy on this backend.
    pub fn writer_actions(&self) -> Vec<&'static str> {
        match self {
            // SeaweedFS's CreatePolicyVersion rejects the multipart listing
            // actions: a policy holding them could never be updated.
            IdentityPlane::Iam(_) => policy::BASE_WRITER_ACTIONS.to_vec(),
            IdentityPlane::Minio(_) => {
                let mut a = policy::BASE_WRITER_ACTIONS.to_vec();
                a.extend_from_slice(policy::MULTIPART_LISTING_ACTIONS);
                a
            }
            IdentityPlane::None => Vec::new(),
        }
    }

    /// Reconciles the writer policy, identity and attachment.
    pub async fn reconcile(&self, cx: &IdentityContext<'_>) -> Result<Vec<Outcome>> {
        match self {
            IdentityPlane::Iam(p) => p.reconcile(cx, &self.writer_actions()).await,
            IdentityPlane::Minio(p) => p.reconcile(cx, &self.writer_actions()).await,
            IdentityPlane::None => check_given_writer(cx).await.map(|o| vec![o]),
        }
    }

    /// Requests sent by the plane's own endpoint when it is not the S3
    /// endpoint (reads, writes).
    pub fn own_requests(&self, s3_endpoint: &Endpoint) -> (u64, u64) {
        match self {
            IdentityPlane::Iam(p) => p.own_requests(s3_endpoint),
            IdentityPlane::Minio(p) => p.own_requests(s3_endpoint),
            IdentityPlane::None => (0, 0),
        }
    }
}

/// The endpoint of the identity plane: `--iam-endpoint` when it names
/// another endpoint (signing in `region`, or in the run's region), or the S3
/// endpoint itself (same connection pool and counters), where SeaweedFS
/// serves IAM and MinIO its admin API.
pub fn plane_endpoint(
    cfg: &ProvisionConfig,
    s3: &Endpoint,
    region: Option<&str>,
) -> Result<Endpoint> {
    match &cfg.iam_endpoint {
        Some(url) if url.trim_end_matches('/') != cfg.endpoint.trim_end_matches('/') => {
            let mut ec =
                cfg.endpoint_config(url, cfg.field("--iam-endpoint", "provision.iamEndpoint"))?;
            if let Some(r) = region {
                ec.region = r.to_string();
            }
            Endpoint::new(ec)
        }
        _ => Ok(s3.clone()),
    }
}

/// Requests counted on a plane's own endpoint: (reads, writes), or (0, 0)
/// when it shares the S3 endpoint's counters (they are in the S3 totals).
pub fn own_requests(own: &Endpoint, s3: &Endpoint) -> (u64, u64) {
    if std::sync::Arc::ptr_eq(&own.stats, &s3.stats) {
        (0, 0)
    } else {
        (own.stats.reads(), own.stats.writes())
    }
}

/// A writer credentials file as found on disk.
#[derive(Debug, Clone)]
pub struct WriterFile {
    /// The key pair it holds.
    pub creds: Credentials,
    /// True when provision wrote it (first line is [`MANAGED_MARKER`]).
    pub managed: bool,
}

/// Reads the writer credentials file: `Ok(None)` when it does not exist.
pub fn load_writer_file(path: &Path) -> Result<Option<WriterFile>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = fsutil::read_text(path)?;
    let creds = Credentials::parse_env(&text).map_err(|m| Error::invalid_file(path, m))?;
    Ok(Some(WriterFile {
        creds,
        managed: text.starts_with(MANAGED_MARKER),
    }))
}

/// Writes the writer credentials file atomically, mode 0600 (its directory
/// 0700 when created), marked as managed by provision.
pub fn save_writer_file(path: &Path, creds: &Credentials, about: &str) -> Result<()> {
    fsutil::create_dir_all_mode(fsutil::parent_dir(path), fsutil::SECRET_DIR_MODE)?;
    let text = format!(
        "{MANAGED_MARKER}: {about}.\n# Builders push with these credentials; \
         deleting this file makes the next run issue new ones.\n{}",
        creds.to_env()
    );
    fsutil::write_atomic(path, text.as_bytes(), fsutil::SECRET_MODE)
}

/// What a signed GET as the writer says about its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterCheck {
    /// The store knows the key and the secret matches (200 or `AccessDenied`).
    Valid,
    /// `InvalidAccessKeyId`: the store does not know the key.
    UnknownKey,
    /// `SignatureDoesNotMatch`: the key exists, the secret is not its secret.
    WrongSecret,
}

/// Signs `GET /bucket?location` as the writer and classifies the answer.
///
/// HEAD would answer a bare 403 for a wrong secret and for a missing
/// permission alike; GET carries the error code. `NoSuchBucket` means the
/// store authenticated the request before looking for the bucket.
pub async fn check_writer(s3: &S3Client, bucket: &str, creds: &Credentials) -> Result<WriterCheck> {
    let writer = s3.with_credentials(Some(creds.clone()));
    let resp = writer.send(&writer.location_request(bucket)).await?;
    if resp.status.is_success() {
        return Ok(WriterCheck::Valid);
    }
    let e = S3Error::from_response(&resp);
    match e.code.as_str() {
        "AccessDenied" | "NoSuchBucket" => Ok(WriterCheck::Valid),
        "InvalidAccessKeyId" | "InvalidClientTokenId" => Ok(WriterCheck::UnknownKey),
        "SignatureDoesNotMatch" => Ok(WriterCheck::WrongSecret),
        _ => Err(writer.error(&format!("writer check (GetBucketLocation {bucket})"), &resp)),
    }
}

/// Checks freshly issued credentials until they work: stores take a moment
/// to accept a new key (SeaweedFS about 0.2 s). Gives up after `limit`.
pub async fn wait_until_valid(
    s3: &S3Client,
    bucket: &str,
    creds: &Credentials,
    limit: Duration,
) -> Result<WriterCheck> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let check = check_writer(s3, bucket, creds).await?;
        if check == WriterCheck::Valid || start.elapsed() >= limit {
            return Ok(check);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// The `s3` backend: the given writer credentials must authenticate, and
/// (checked once per key pair, then remembered in the state directory) may
/// write. Nothing is created.
async fn check_given_writer(cx: &IdentityContext<'_>) -> Result<Outcome> {
    let cfg = cx.config;
    let path = &cfg.writer_credentials_file;
    let file = load_writer_file(path)?.ok_or_else(|| {
        Error::config(
            cfg.field(
                "--writer-credentials-file",
                "provision.writerCredentialsFile",
            ),
            format!(
                "{} does not exist: with the `s3` backend the writer's key pair is created \
                 in the store's own console and given to provision in this file \
                 (AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines, mode 0600)",
                path.display()
            ),
        )
    })?;
    let creds = &file.creds;
    let name = creds.access_key_id.clone();
    if !cx.bucket_exists {
        return Ok(Outcome::new("writer-identity", name, Status::Unchanged)
            .detail("not checked: the bucket does not exist yet"));
    }
    match check_writer(cx.s3, &cfg.bucket, creds).await? {
        WriterCheck::Valid => {}
        WriterCheck::UnknownKey => {
            return Err(Error::invalid_file(
                path,
                format!(
                    "the store does not know the access key {name} (InvalidAccessKeyId): \
                     put a key pair of the writer identity in this file"
                ),
            ));
        }
        WriterCheck::WrongSecret => {
            return Err(Error::invalid_file(
                path,
                format!(
                    "the secret for access key {name} is wrong (SignatureDoesNotMatch): \
                     put the key's current secret in this file"
                ),
            ));
        }
    }
    let stamp_path = cfg.state_dir.join("writer.verified");
    let stamp = write_stamp(creds);
    if std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(Outcome::new("writer-identity", name, Status::Unchanged)
            .detail("authenticates; write access verified before"));
    }
    if cfg.dry_run {
        return Ok(Outcome::new("writer-identity", name, Status::Unchanged)
            .detail("authenticates; write access not probed under --dry-run"));
    }
    // A write probe: the writer puts nix-cache-info with the content the
    // bucket plane has just made sure of, so the object does not change.
    let writer = cx.s3.with_credentials(Some(creds.clone()));
    writer
        .put_object(
            &cfg.bucket,
            "nix-cache-info",
            cfg.nix_cache_info(),
            super::bucket::NIX_CACHE_INFO_TYPE,
        )
        .await
        .map_err(|e| {
            Error::Other(format!(
                "the writer credentials in {} authenticate but may not write to bucket {}: {e}; \
                 allow them s3:PutObject on arn:aws:s3:::{}/*",
                path.display(),
                cfg.bucket,
                cfg.bucket
            ))
        })?;
    fsutil::create_dir_all_mode(&cfg.state_dir, fsutil::SECRET_DIR_MODE)?;
    fsutil::write_atomic(&stamp_path, stamp.as_bytes(), fsutil::SECRET_MODE)?;
    Ok(Outcome::new("writer-identity", name, Status::Unchanged)
        .detail("authenticates; write access verified"))
}

/// A fingerprint of a key pair for the "write access verified" stamp (a
/// hash: the secret itself is never written outside the credentials file).
fn write_stamp(creds: &Credentials) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(creds.access_key_id.as_bytes());
    h.update([0]);
    h.update(creds.secret_access_key.as_bytes());
    format!("{}\n", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writer_file_round_trip_and_marker() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state/writer.env");
        assert!(load_writer_file(&p).unwrap().is_none());
        let c = Credentials::new("AKIA1", "s3cr3t");
        save_writer_file(&p, &c, "IAM user w of http://127.0.0.1:1").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let f = load_writer_file(&p).unwrap().unwrap();
        assert!(f.managed);
        assert_eq!(f.creds, c);
        std::fs::write(&p, c.to_env()).unwrap();
        assert!(!load_writer_file(&p).unwrap().unwrap().managed);
        std::fs::write(&p, "nonsense\n").unwrap();
        assert!(load_writer_file(&p).is_err());
    }

    #[test]
    fn stamp_depends_on_secret() {
        let a = write_stamp(&Credentials::new("k", "a"));
        assert_ne!(a, write_stamp(&Credentials::new("k", "b")));
        assert_eq!(a.len(), 65);
    }
}
