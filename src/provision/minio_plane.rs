//! The `minio` identity backend: the writer as a MinIO user whose access key
//! is its name, a canned policy, and the builtin attachment, through the
//! admin API v3 ([`crate::minio::admin`]).
//!
//! Unlike an IAM store, MinIO takes the secret from us: the writer
//! credentials file is given (its secret is set on the user), or, when it
//! does not exist, provision generates a strong secret and writes the file
//! (0600) before it creates the user, so a run interrupted between the two
//! repairs itself.
//!
//! Reads first, concurrently: a health probe, then `info-canned-policy` and
//! `user-info`, then a signed GET as the writer on the same endpoint (MinIO
//! cannot give a secret back; the GET says whether it still works). A
//! converged store costs those four reads.
//!
//! The admin endpoint is the S3 endpoint on a real MinIO;
//! `provision.iamEndpoint` (`--iam-endpoint`) points the identity plane
//! elsewhere. The writer check goes to the identity plane's endpoint too:
//! that is where the users live.

use std::time::Duration;

use serde_json::Value;

use crate::credentials::{self, Credentials};
use crate::error::{Error, Result};
use crate::http::Endpoint;
use crate::minio::admin::{AdminClient, AttachOutcome, UserInfo};
use crate::s3::S3Client;

use super::ProvisionConfig;
use super::identity::{
    IdentityContext, WriterCheck, WriterFile, check_writer, load_writer_file, own_requests,
    plane_endpoint, save_writer_file, wait_until_valid,
};
use super::policy;
use super::report::{Outcome, Status};

/// How long a new secret may take to be accepted (MinIO: at once on one
/// node; a moment on a cluster).
const NEW_SECRET_GRACE: Duration = Duration::from_secs(10);

/// MinIO's shortest secret key.
const MIN_SECRET_LEN: usize = 8;

/// The MinIO identity plane.
#[derive(Debug)]
pub struct MinioPlane {
    admin: AdminClient,
    /// S3 requests on the admin endpoint, unsigned until the writer check
    /// gives them the writer's credentials.
    identities: S3Client,
}

impl MinioPlane {
    /// The plane on `--iam-endpoint`, or on the S3 endpoint itself (same
    /// connection pool and counters). Checks the writer user's name against
    /// MinIO's rules; no request is sent.
    pub fn new(cfg: &ProvisionConfig, admin: &Credentials, s3: &Endpoint) -> Result<MinioPlane> {
        let user = &cfg.writer_user;
        if user.len() < 3 || user.contains(['=', ',']) {
            return Err(Error::config(
                cfg.field("--writer-user", "provision.writerUser"),
                format!(
                    "`{user}` is not a MinIO access key: use at least 3 characters and \
                     neither `=` nor `,`"
                ),
            ));
        }
        let endpoint = plane_endpoint(cfg, s3, None)?;
        Ok(MinioPlane {
            admin: AdminClient::new(endpoint.clone(), admin.clone())
                .with_credentials_file(&cfg.admin_credentials_file),
            identities: S3Client::new(endpoint, None, cfg.path_style),
        })
    }

    /// Requests counted on a separate admin endpoint (0 when shared with S3).
    pub fn own_requests(&self, s3: &Endpoint) -> (u64, u64) {
        own_requests(&self.admin.endpoint, s3)
    }

    /// Reconciles writer policy, writer identity and attachment.
    pub async fn reconcile(
        &self,
        cx: &IdentityContext<'_>,
        actions: &[&str],
    ) -> Result<Vec<Outcome>> {
        let cfg = cx.config;
        let file = load_writer_file(&cfg.writer_credentials_file)?;
        if let Some(f) = &file {
            check_writer_file(cfg, f)?;
        }
        self.admin.wait_until_ready(cfg.wait_timeout).await?;
        let (current_policy, user) = tokio::try_join!(
            self.admin.info_canned_policy(&cfg.writer_policy),
            self.admin.user_info(&cfg.writer_user),
        )?;
        let desired = policy::writer_policy(&cfg.bucket, actions);
        let (policy, identity) = tokio::try_join!(
            self.reconcile_policy(cfg, &desired, current_policy.as_ref()),
            self.reconcile_identity(cx, user.as_ref(), file),
        )?;
        let attachment = self.reconcile_attachment(cfg, user.as_ref()).await?;
        Ok(vec![policy, identity, attachment])
    }

    /// The canned policy: created when missing, overwritten when it grants
    /// something else (compared as sets: MinIO reorders what it stores).
    async fn reconcile_policy(
        &self,
        cfg: &ProvisionConfig,
        desired: &Value,
        current: Option<&Value>,
    ) -> Result<Outcome> {
        let name = cfg.writer_policy.as_str();
        let outcome = |status| Outcome::new("writer-policy", name, status);
        let status = match current {
            Some(c) if policy::same_policy(c, desired) => return Ok(outcome(Status::Unchanged)),
            Some(_) => Status::update(cfg.dry_run),
            None => Status::create(cfg.dry_run),
        };
        if !cfg.dry_run {
            self.admin.add_canned_policy(name, desired).await?;
        }
        Ok(match status {
            Status::Updated | Status::WouldUpdate => outcome(status).detail("document differs"),
            _ => outcome(status),
        })
    }

    /// The user and its secret: unchanged while the file's credentials
    /// authenticate and the user is enabled; otherwise the secret (given,
    /// or generated and written to the file first) is set with add-user,
    /// which also enables the user and keeps its policies.
    async fn reconcile_identity(
        &self,
        cx: &IdentityContext<'_>,
        user: Option<&UserInfo>,
        file: Option<WriterFile>,
    ) -> Result<Outcome> {
        let cfg = cx.config;
        let name = cfg.writer_user.as_str();
        let path = &cfg.writer_credentials_file;
        let outcome = |status| Outcome::new("writer-identity", name, status);
        let given = file.map(|f| f.creds);
        let reason = match (user, &given) {
            (None, _) => None,
            (Some(_), None) => Some("no writer credentials file yet".to_string()),
            (Some(u), Some(_)) if !u.is_enabled() => Some("the user is disabled".to_string()),
            (Some(_), Some(_)) if !cx.bucket_exists => {
                return Ok(outcome(Status::Unchanged).detail("not checked: no bucket yet"));
            }
            (Some(_), Some(creds)) => {
                match check_writer(&self.identities, &cfg.bucket, creds).await? {
                    WriterCheck::Valid => {
                        return Ok(outcome(Status::Unchanged).detail("the secret authenticates"));
                    }
                    WriterCheck::WrongSecret => Some(format!(
                        "the secret in {} is not the user's",
                        path.display()
                    )),
                    WriterCheck::UnknownKey => Some("MinIO does not accept the key".to_string()),
                }
            }
        };
        let source = match &given {
            Some(_) => format!("the secret of {}", path.display()),
            None => format!("a generated secret, written to {}", path.display()),
        };
        if cfg.dry_run {
            return Ok(match reason {
                None => outcome(Status::WouldCreate).detail(format!("user with {source}")),
                Some(r) => outcome(Status::WouldUpdate).detail(format!("{r}: would set {source}")),
            });
        }
        let creds = match given {
            Some(c) => c,
            None => {
                let c = Credentials::new(name, credentials::random_secret());
                save_writer_file(
                    path,
                    &c,
                    &format!(
                        "secret of MinIO user {name} at {}",
                        self.admin.endpoint.config().url
                    ),
                )?;
                c
            }
        };
        self.admin.add_user(name, &creds.secret_access_key).await?;
        if cx.bucket_exists {
            let check =
                wait_until_valid(&self.identities, &cfg.bucket, &creds, NEW_SECRET_GRACE).await?;
            if check != WriterCheck::Valid {
                return Err(Error::Other(format!(
                    "MinIO accepted the new secret of user {name} (from {}) but does not \
                     authenticate it after {}s ({check:?}); run provision again",
                    path.display(),
                    NEW_SECRET_GRACE.as_secs()
                )));
            }
        }
        Ok(match reason {
            None => outcome(Status::Created).detail(format!("user created with {source}")),
            Some(r) => outcome(Status::Updated).detail(format!("{r}: set {source}")),
        })
    }

    /// Attaches the writer policy unless `user-info` listed it.
    async fn reconcile_attachment(
        &self,
        cfg: &ProvisionConfig,
        user: Option<&UserInfo>,
    ) -> Result<Outcome> {
        let name = format!("{} -> {}", cfg.writer_policy, cfg.writer_user);
        let outcome = |status| Outcome::new("attachment", name.clone(), status);
        if user.is_some_and(|u| u.policies().contains(&cfg.writer_policy)) {
            return Ok(outcome(Status::Unchanged));
        }
        if cfg.dry_run {
            return Ok(outcome(Status::WouldCreate));
        }
        Ok(
            match self
                .admin
                .attach_user_policy(&cfg.writer_user, &cfg.writer_policy)
                .await?
            {
                AttachOutcome::Attached(_) => outcome(Status::Created),
                AttachOutcome::AlreadyApplied => {
                    outcome(Status::Unchanged).detail("attached by a concurrent run")
                }
                AttachOutcome::MappingReplaced(all) => outcome(Status::Created).detail(format!(
                    "server without builtin attach: the user's policies are now {}",
                    all.join(",")
                )),
            },
        )
    }
}

/// On MinIO the access key is the user name, and secrets have at least 8
/// characters: a file that breaks either rule is refused before any request.
fn check_writer_file(cfg: &ProvisionConfig, f: &WriterFile) -> Result<()> {
    let path = &cfg.writer_credentials_file;
    if f.creds.access_key_id != cfg.writer_user {
        return Err(Error::invalid_file(
            path,
            format!(
                "holds access key {}, but the MinIO writer user is {} ({}); on MinIO the \
                 access key is the user's name: make them the same",
                f.creds.access_key_id,
                cfg.writer_user,
                cfg.field("--writer-user", "provision.writerUser"),
            ),
        ));
    }
    if f.creds.secret_access_key.len() < MIN_SECRET_LEN {
        return Err(Error::invalid_file(
            path,
            format!(
                "the secret is shorter than the {MIN_SECRET_LEN} characters MinIO requires: \
                 use a longer one, or delete the file to have a strong one generated"
            ),
        ));
    }
    Ok(())
}
