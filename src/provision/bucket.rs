//! The bucket plane, plain S3 on every store: the bucket, `nix-cache-info`,
//! the anonymous-read bucket policy and the optional lifecycle rule.

use crate::error::{Error, Result};
use crate::s3::{S3Client, is_unsupported};

use super::ProvisionConfig;
use super::lifecycle::{self, LifecycleChange};
use super::policy::{self, BucketPolicyChange};
use super::report::{Outcome, Status};

/// Content type Nix's own binary caches serve `nix-cache-info` with.
pub const NIX_CACHE_INFO_TYPE: &str = "text/x-nix-cache-info";

/// Whether the bucket exists: HEAD, and on a bare 403 a GET `?location`
/// to learn why (HEAD answers carry no error code).
pub async fn bucket_exists(s3: &S3Client, bucket: &str) -> Result<bool> {
    match s3.bucket_exists(bucket).await {
        Err(Error::Store {
            status: 400 | 403, ..
        }) => {
            s3.get_bucket_location(bucket).await?;
            // Readable after all: HEAD was refused for another reason.
            Ok(true)
        }
        other => other,
    }
}

/// The bucket: created when missing (a racing `BucketAlreadyOwnedByYou`
/// counts as created by us).
pub async fn ensure_bucket(s3: &S3Client, cfg: &ProvisionConfig, exists: bool) -> Result<Outcome> {
    let outcome = |status| Outcome::new("bucket", cfg.bucket.clone(), status);
    if exists {
        return Ok(outcome(Status::Unchanged));
    }
    if cfg.dry_run {
        return Ok(outcome(Status::WouldCreate));
    }
    s3.create_bucket(&cfg.bucket).await?;
    Ok(outcome(Status::Created))
}

/// `nix-cache-info`, the policy and the lifecycle rule: read concurrently,
/// then each written only where it differs; every branch runs to its end. `bucket_exists` is false only
/// under `--dry-run` for a bucket still to be created: nothing is read then.
pub async fn reconcile(
    s3: &S3Client,
    cfg: &ProvisionConfig,
    bucket_exists: bool,
) -> Result<Vec<Outcome>> {
    // `join`, not `try_join`: one failure must not cancel a write of
    // another resource halfway.
    //
    // The policy and the lifecycle rule run one after the other: both live
    // in the bucket's own metadata, and a store may rewrite that metadata
    // whole (SeaweedFS does), so two concurrent writes can lose one of them.
    let bucket_config = async {
        let policy = bucket_policy(s3, cfg, bucket_exists).await;
        let lifecycle = lifecycle_rule(s3, cfg, bucket_exists).await;
        (policy, lifecycle)
    };
    let (info, (policy, lifecycle)) =
        tokio::join!(nix_cache_info(s3, cfg, bucket_exists), bucket_config);
    let (info, policy) = (info?, policy?);
    if cfg.public && !cfg.dry_run && policy.status != Status::Unchanged {
        wait_for_anonymous_read(s3, cfg).await;
    }
    Ok([Some(info), Some(policy), lifecycle?]
        .into_iter()
        .flatten()
        .collect())
}

/// Some stores (SeaweedFS among them) apply a new bucket policy a moment
/// after acknowledging it. A run that changed the policy waits, bounded,
/// until an anonymous client can read `nix-cache-info`, so that "created"
/// means a substituter works now; reads only, and only after a change.
async fn wait_for_anonymous_read(s3: &S3Client, cfg: &ProvisionConfig) {
    let anonymous = s3.with_credentials(None);
    wait_until_applied(cfg, "the anonymous-read policy", || async {
        matches!(
            anonymous.get_object(&cfg.bucket, "nix-cache-info").await,
            Ok(Some(_))
        )
    })
    .await;
}

/// Polls `applied` (reads only) for up to 15 s after a write the store may
/// apply asynchronously; warns, without failing, if it never shows. Without
/// this, the next run could read the old state and write again.
async fn wait_until_applied<F, Fut>(cfg: &ProvisionConfig, what: &str, mut applied: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(15);
    let start = std::time::Instant::now();
    while start.elapsed() < LIMIT {
        if applied().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!(
        "warning: {}: the store has not applied {what} after {}s; \
         it may take effect later",
        cfg.bucket,
        LIMIT.as_secs()
    );
}

/// `nix-cache-info`, compared byte for byte.
async fn nix_cache_info(
    s3: &S3Client,
    cfg: &ProvisionConfig,
    bucket_exists: bool,
) -> Result<Outcome> {
    let key = "nix-cache-info";
    let outcome = |status| Outcome::new("nix-cache-info", format!("{}/{key}", cfg.bucket), status);
    let want = cfg.nix_cache_info();
    let current = if bucket_exists {
        s3.get_object(&cfg.bucket, key).await?
    } else {
        None
    };
    let status = match &current {
        Some(bytes) if bytes.as_ref() == want.as_bytes() => return Ok(outcome(Status::Unchanged)),
        Some(_) => Status::update(cfg.dry_run),
        None => Status::create(cfg.dry_run),
    };
    if !cfg.dry_run {
        s3.put_object(&cfg.bucket, key, want, NIX_CACHE_INFO_TYPE)
            .await?;
    }
    Ok(match current {
        Some(_) => outcome(status).detail("content differed"),
        None => outcome(status),
    })
}

/// The bucket policy: anonymous `s3:GetObject` when public, compared
/// semantically; statements of others kept. A private cache only has our
/// statement removed, if there is one.
async fn bucket_policy(
    s3: &S3Client,
    cfg: &ProvisionConfig,
    bucket_exists: bool,
) -> Result<Outcome> {
    let name = if cfg.public {
        "anonymous read"
    } else {
        "private"
    };
    let outcome =
        |status| Outcome::new("bucket-policy", format!("{} ({name})", cfg.bucket), status);
    let current = if bucket_exists {
        s3.get_bucket_policy(&cfg.bucket).await?
    } else {
        None
    };
    let change = policy::plan_bucket_policy(current.as_ref(), &cfg.bucket, cfg.public);
    let status = match (&change, &current) {
        (BucketPolicyChange::Unchanged, _) => return Ok(outcome(Status::Unchanged)),
        (BucketPolicyChange::Put(_), None) => Status::create(cfg.dry_run),
        _ => Status::update(cfg.dry_run),
    };
    if !cfg.dry_run {
        match &change {
            BucketPolicyChange::Put(doc) => s3
                .put_bucket_policy(&cfg.bucket, doc)
                .await
                .map_err(|e| explain_block_public_access(e, cfg))?,
            BucketPolicyChange::Delete => s3.delete_bucket_policy(&cfg.bucket).await?,
            BucketPolicyChange::Unchanged => {}
        }
    }
    let detail = match change {
        BucketPolicyChange::Delete => "our statement removed; no statement left",
        BucketPolicyChange::Put(_) if !cfg.public => "our statement removed; others kept",
        BucketPolicyChange::Put(_) if current.is_some() => {
            "anonymous read statement set; others kept"
        }
        _ => "anonymous read of objects",
    };
    Ok(outcome(status).detail(detail))
}

/// AWS refuses a public policy while Block Public Access is on for the
/// bucket (the default for new buckets): say what to change.
fn explain_block_public_access(e: Error, cfg: &ProvisionConfig) -> Error {
    let blocked = match &e {
        Error::Store { code, message, .. } => {
            code.as_deref() == Some("AccessDenied")
                && (message.contains("BlockPublicPolicy") || message.contains("public access"))
        }
        _ => false,
    };
    if !blocked {
        return e;
    }
    Error::Other(format!(
        "the store refuses a public bucket policy on {b}: its Block Public Access setting \
         (BlockPublicPolicy) is on. For a public cache turn it off for this bucket, e.g. \
         `aws s3api put-public-access-block --bucket {b} --public-access-block-configuration \
         BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false`; \
         or make the cache private (public = false, --no-public). ({e})",
        b = cfg.bucket
    ))
}

/// The lifecycle rule aborting incomplete multipart uploads, when
/// configured. A store without lifecycle support is reported, not fatal.
async fn lifecycle_rule(
    s3: &S3Client,
    cfg: &ProvisionConfig,
    bucket_exists: bool,
) -> Result<Option<Outcome>> {
    let days = cfg.abort_incomplete_multipart_days;
    if days == 0 {
        return Ok(None);
    }
    let outcome = |status| {
        Outcome::new(
            "lifecycle",
            format!("{} (abort incomplete uploads after {days} d)", cfg.bucket),
            status,
        )
    };
    let unsupported = |e: &Error| {
        Ok(Some(outcome(Status::Unsupported).detail(format!(
            "the store does not implement bucket lifecycle rules ({}); \
             incomplete uploads are not cleaned up automatically",
            e.store_code().unwrap_or("HTTP 501")
        ))))
    };
    let current = if bucket_exists {
        match s3.get_bucket_lifecycle(&cfg.bucket).await {
            Ok(c) => c,
            Err(e) if is_unsupported(&e) => return unsupported(&e),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let change = lifecycle::plan(current.as_deref(), days).map_err(|m| Error::Store {
        operation: format!("GetBucketLifecycleConfiguration {}", cfg.bucket),
        endpoint: s3.endpoint.config().url.to_string(),
        status: 200,
        code: None,
        message: format!("unreadable configuration: {m}"),
    })?;
    let LifecycleChange::Put { xml, created } = change else {
        return Ok(Some(outcome(Status::Unchanged)));
    };
    let status = if created {
        Status::create(cfg.dry_run)
    } else {
        Status::update(cfg.dry_run)
    };
    if !cfg.dry_run {
        match s3.put_bucket_lifecycle(&cfg.bucket, &xml).await {
            Ok(()) => {}
            Err(e) if is_unsupported(&e) => return unsupported(&e),
            Err(e) => return Err(e),
        }
        wait_until_applied(cfg, "the lifecycle rule", || async {
            match s3.get_bucket_lifecycle(&cfg.bucket).await {
                Ok(current) => matches!(
                    lifecycle::plan(current.as_deref(), days),
                    Ok(LifecycleChange::Unchanged)
                ),
                Err(_) => false,
            }
        })
        .await;
    }
    Ok(Some(outcome(status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_public_access_is_explained() {
        let mut cfg = crate::provision::tests::cfg();
        cfg.bucket = "b".into();
        let refused = Error::store(
            "PutBucketPolicy b",
            "https://s3.amazonaws.com",
            403,
            "AccessDenied".into(),
            "User is not authorized to perform: s3:PutBucketPolicy because public policies \
             are blocked by the BlockPublicPolicy block public access setting."
                .into(),
            "",
        );
        let e = explain_block_public_access(refused, &cfg).to_string();
        assert!(
            e.contains("BlockPublicPolicy=false") && e.contains("--no-public"),
            "{e}"
        );
        // Any other refusal is left as it was.
        let other = Error::store(
            "PutBucketPolicy b",
            "x",
            403,
            "AccessDenied".into(),
            "no".into(),
            "",
        );
        assert!(matches!(
            explain_block_public_access(other, &cfg),
            Error::Store { .. }
        ));
    }
}
