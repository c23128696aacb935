//! The `iam` identity backend: the writer as an IAM user with a managed
//! policy attached and an access key issued by the store.
//!
//! Reads first, concurrently (`GetUser`, `ListAccessKeys`,
//! `ListAttachedUserPolicies`); then the policy (`GetPolicy`,
//! `GetPolicyVersion`, compared semantically) and the writer's key (a signed
//! GET as the writer) side by side; then the attachment. A converged store
//! costs five IAM reads and one S3 GET.

use std::time::Duration;

use serde_json::Value;

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::http::Endpoint;
use crate::iam::{AccessKeyMeta, IamClient};

use super::ProvisionConfig;
use super::identity::{
    IdentityContext, WriterCheck, WriterFile, check_writer, load_writer_file, own_requests,
    plane_endpoint, save_writer_file, wait_until_valid,
};
use super::policy;
use super::report::{Outcome, Status};

/// How long a freshly issued key may take to be accepted.
const NEW_KEY_GRACE: Duration = Duration::from_secs(10);

/// The IAM identity plane.
#[derive(Debug)]
pub struct IamPlane {
    client: IamClient,
}

impl IamPlane {
    /// The plane on `--iam-endpoint`, or on the S3 endpoint itself (same
    /// connection pool and counters) when none is given, as SeaweedFS serves
    /// IAM on its S3 port.
    pub fn new(cfg: &ProvisionConfig, admin: &Credentials, s3: &Endpoint) -> Result<IamPlane> {
        // AWS's global IAM endpoint signs in us-east-1 whatever the
        // bucket's region.
        let endpoint = plane_endpoint(cfg, s3, Some("us-east-1"))?;
        Ok(IamPlane {
            client: IamClient::new(endpoint, admin.clone()),
        })
    }

    /// Requests counted on a separate IAM endpoint (0 when shared with S3).
    pub fn own_requests(&self, s3: &Endpoint) -> (u64, u64) {
        own_requests(&self.client.endpoint, s3)
    }

    /// Reconciles writer policy, writer identity and attachment.
    pub async fn reconcile(
        &self,
        cx: &IdentityContext<'_>,
        actions: &[&str],
    ) -> Result<Vec<Outcome>> {
        let cfg = cx.config;
        let user = cfg.writer_user.as_str();
        let file = load_writer_file(&cfg.writer_credentials_file)?;
        let (existing_user, keys, attached) = tokio::try_join!(
            self.client.get_user(user),
            self.client.list_access_keys(user),
            self.client.list_attached_user_policies(user),
        )?;
        if let Some(f) = &file
            && !f.managed
            && !keys
                .iter()
                .any(|k| k.access_key_id == f.creds.access_key_id)
        {
            return Err(self.foreign_file(cfg, f));
        }
        let attached_arn = attached
            .iter()
            .find(|p| p.name == cfg.writer_policy || policy_name_of(&p.arn) == cfg.writer_policy)
            .map(|p| p.arn.clone());
        let desired = policy::writer_policy(&cfg.bucket, actions);
        let (policy, identity) = tokio::join!(
            self.reconcile_policy(cfg, &desired, attached_arn.clone()),
            self.reconcile_identity(cx, existing_user.is_some(), &keys, file.as_ref()),
        );
        let (policy, arn) = policy?;
        let identity = identity?;
        let attachment = self
            .reconcile_attachment(cfg, attached_arn.is_some(), arn.as_deref())
            .await?;
        Ok(vec![policy, identity, attachment])
    }

    /// The writer policy: found among the user's attachments or by name,
    /// created when missing, given a new default version when it differs.
    /// Returns the outcome and the ARN as the store spells it.
    async fn reconcile_policy(
        &self,
        cfg: &ProvisionConfig,
        desired: &Value,
        attached_arn: Option<String>,
    ) -> Result<(Outcome, Option<String>)> {
        let name = cfg.writer_policy.as_str();
        let outcome = |status| Outcome::new("writer-policy", name, status);
        let found = match attached_arn {
            Some(arn) => Some((arn, None)),
            None => self.find_policy(name).await?,
        };
        let (arn, version) = match found {
            Some(f) => f,
            None if cfg.dry_run => return Ok((outcome(Status::WouldCreate), None)),
            None => match self.client.create_policy(name, desired).await {
                Ok(p) => return Ok((outcome(Status::Created), Some(p.arn))),
                // Created by a concurrent run: compare with what it wrote.
                Err(e) if e.store_code() == Some("EntityAlreadyExists") => {
                    self.find_policy(name).await?.ok_or(e)?
                }
                Err(e) => return Err(e),
            },
        };
        let version = match version {
            Some(v) => v,
            None => self
                .client
                .get_policy(&arn)
                .await?
                .map(|p| p.default_version_id)
                .ok_or_else(|| {
                    Error::Other(format!(
                        "policy {arn} is attached to {} but the store does not know it; \
                         detach it and run provision again",
                        cfg.writer_user
                    ))
                })?,
        };
        let current = self.client.get_policy_version(&arn, &version).await?;
        if policy::same_policy(&current, desired) {
            return Ok((outcome(Status::Unchanged), Some(arn)));
        }
        if cfg.dry_run {
            return Ok((
                outcome(Status::WouldUpdate).detail("document differs"),
                Some(arn),
            ));
        }
        match self.client.create_policy_version(&arn, desired).await {
            Ok(()) => {}
            Err(e) if e.store_code() == Some("LimitExceeded") => {
                self.prune_oldest_version(&arn).await?;
                self.client.create_policy_version(&arn, desired).await?;
            }
            Err(e) => return Err(e),
        }
        Ok((
            outcome(Status::Updated).detail("document differed; new default version"),
            Some(arn),
        ))
    }

    /// The policy named `name` (ARN, default version) via ListPolicies.
    async fn find_policy(&self, name: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .client
            .list_policies()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| {
                let v = Some(p.default_version_id).filter(|v| !v.is_empty());
                (p.arn, v)
            }))
    }

    /// Deletes the oldest non-default version (AWS keeps at most five).
    async fn prune_oldest_version(&self, arn: &str) -> Result<()> {
        let versions = self.client.list_policy_versions(arn).await?;
        let oldest = versions
            .iter()
            .filter(|v| !v.is_default)
            .min_by_key(|v| {
                v.version_id
                    .trim_start_matches('v')
                    .parse::<u64>()
                    .unwrap_or(u64::MAX)
            })
            .ok_or_else(|| {
                Error::Other(format!(
                    "policy {arn} has reached the store's version limit and has no \
                     non-default version to delete"
                ))
            })?;
        self.client
            .delete_policy_version(arn, &oldest.version_id)
            .await
    }

    /// The writer user and its key: keep the key in the file while it
    /// authenticates; otherwise issue a new one, write the file, check it,
    /// then delete the user's other keys.
    async fn reconcile_identity(
        &self,
        cx: &IdentityContext<'_>,
        user_exists: bool,
        keys: &[AccessKeyMeta],
        file: Option<&WriterFile>,
    ) -> Result<Outcome> {
        let cfg = cx.config;
        let user = cfg.writer_user.as_str();
        let path = &cfg.writer_credentials_file;
        let outcome = |status| Outcome::new("writer-identity", user, status);
        if !user_exists {
            if cfg.dry_run {
                return Ok(outcome(Status::WouldCreate).detail("user and access key"));
            }
            match self.client.create_user(user).await {
                Ok(_) => {}
                Err(e) if e.store_code() == Some("EntityAlreadyExists") => {}
                Err(e) => return Err(e),
            }
        }
        let listed = |id: &str| keys.iter().any(|k| k.access_key_id == id && k.is_active());
        let reason = match file {
            Some(f) if listed(&f.creds.access_key_id) => {
                let id = &f.creds.access_key_id;
                if !cx.bucket_exists {
                    return Ok(outcome(Status::Unchanged)
                        .detail(format!("access key {id}; not checked: no bucket yet")));
                }
                match check_writer(cx.s3, &cfg.bucket, &f.creds).await? {
                    WriterCheck::Valid => {
                        return Ok(outcome(Status::Unchanged)
                            .detail(format!("access key {id} authenticates")));
                    }
                    _ if !f.managed => return Err(self.foreign_file(cfg, f)),
                    WriterCheck::WrongSecret => {
                        format!("the secret in the file does not match access key {id}")
                    }
                    WriterCheck::UnknownKey => {
                        format!("the store no longer accepts access key {id}")
                    }
                }
            }
            Some(f) => format!(
                "access key {} is no longer a key of {user}",
                f.creds.access_key_id
            ),
            None => "no writer credentials file yet".to_string(),
        };
        if cfg.dry_run {
            return Ok(
                outcome(Status::WouldUpdate).detail(format!("{reason}: would issue a new key"))
            );
        }
        let mut stale: Vec<String> = keys.iter().map(|k| k.access_key_id.clone()).collect();
        if stale.len() >= 2 {
            // AWS allows two keys per user: make room first. None of them
            // is in a working file, or we would not be here.
            for id in stale.drain(..) {
                self.delete_key(user, &id).await?;
            }
        }
        let new = self.client.create_access_key(user).await?;
        save_writer_file(
            path,
            &new,
            &format!(
                "access key of IAM user {user} at {}",
                self.client.endpoint.config().url
            ),
        )?;
        let check = if cx.bucket_exists {
            wait_until_valid(cx.s3, &cfg.bucket, &new, NEW_KEY_GRACE).await?
        } else {
            WriterCheck::Valid
        };
        if check != WriterCheck::Valid {
            return Err(Error::Other(format!(
                "the store issued access key {} for {user} (written to {}) but does not \
                 accept it after {}s ({check:?}); run provision again",
                new.access_key_id,
                path.display(),
                NEW_KEY_GRACE.as_secs()
            )));
        }
        // Delete every other key, listed afresh: besides the stale ones, a
        // CreateAccessKey whose answer was lost and that the HTTP layer
        // retried has issued a key nobody knows.
        let others: Vec<String> = self
            .client
            .list_access_keys(user)
            .await?
            .into_iter()
            .map(|k| k.access_key_id)
            .filter(|id| *id != new.access_key_id)
            .collect();
        let removed = others.len();
        for id in &others {
            self.delete_key(user, id).await?;
        }
        let mut detail = if user_exists {
            format!("{reason}: issued access key {}", new.access_key_id)
        } else {
            format!("user created; issued access key {}", new.access_key_id)
        };
        detail.push_str(&format!(", written to {}", path.display()));
        if removed > 0 {
            detail.push_str(&format!("; deleted {removed} old key(s)"));
        }
        let status = if user_exists {
            Status::Updated
        } else {
            Status::Created
        };
        Ok(outcome(status).detail(detail))
    }

    /// DeleteAccessKey; a key already gone is fine.
    async fn delete_key(&self, user: &str, id: &str) -> Result<()> {
        match self.client.delete_access_key(user, id).await {
            Err(e) if e.store_code() == Some("NoSuchEntity") => Ok(()),
            other => other,
        }
    }

    /// Attaches the writer policy unless it already is.
    async fn reconcile_attachment(
        &self,
        cfg: &ProvisionConfig,
        attached: bool,
        arn: Option<&str>,
    ) -> Result<Outcome> {
        let name = format!("{} -> {}", cfg.writer_policy, cfg.writer_user);
        let outcome = |status| Outcome::new("attachment", name.clone(), status);
        if attached {
            return Ok(outcome(Status::Unchanged));
        }
        if cfg.dry_run {
            return Ok(outcome(Status::WouldCreate));
        }
        let arn = arn.ok_or_else(|| Error::Other("the writer policy has no ARN".into()))?;
        match self.client.attach_user_policy(&cfg.writer_user, arn).await {
            Ok(()) => {}
            // A concurrent attach got there first.
            Err(e) if e.store_code() == Some("EntityAlreadyExists") => {}
            Err(e) => return Err(e),
        }
        Ok(outcome(Status::Created))
    }

    /// The error for a writer credentials file provision did not write and
    /// whose key the store did not issue to the writer.
    fn foreign_file(&self, cfg: &ProvisionConfig, f: &WriterFile) -> Error {
        Error::invalid_file(
            &cfg.writer_credentials_file,
            format!(
                "holds access key {}, which is not a working key of IAM user {}; an IAM store \
                 issues its own keys and cannot adopt a given secret. Delete this file (or point \
                 the writer credentials file at a path that does not exist yet) and run provision \
                 again: it will issue a key for {} and write it there",
                f.creds.access_key_id, cfg.writer_user, cfg.writer_user
            ),
        )
    }
}

/// The policy name at the end of a policy ARN (`arn:aws:iam::1:policy/path/NAME`).
fn policy_name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}
