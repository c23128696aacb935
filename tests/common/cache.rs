//! A binary cache bucket on the test SeaweedFS, set up the way provisioning
//! leaves it (bucket, anonymous `s3:GetObject`, `nix-cache-info`), a
//! signing key, and the invariant every test checks: each narinfo in the
//! bucket points at a NAR object that exists with exactly `FileSize` bytes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::narinfo::NarInfo;
use nix_binary_cache::s3::S3Client;
use nix_binary_cache::signing::SecretKey;

use super::seaweed::Seaweed;

/// A client signing as the SeaweedFS admin.
pub fn admin(s: &Seaweed) -> S3Client {
    let ep = Endpoint::new(EndpointConfig::new(&s.endpoint).unwrap()).unwrap();
    S3Client::new(
        ep,
        Some(Credentials::new(&s.admin_key, &s.admin_secret)),
        true,
    )
}

/// Runs a future to completion on a fresh runtime (tests are synchronous:
/// they mostly run processes).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Creates `bucket` as a public binary cache.
pub fn make_cache_bucket(s: &Seaweed, bucket: &str) {
    let c = admin(s);
    block_on(async {
        c.create_bucket(bucket).await.unwrap();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
                           "Resource": [format!("arn:aws:s3:::{bucket}/*")]}]
        });
        c.put_bucket_policy(bucket, &policy).await.unwrap();
        c.put_object(
            bucket,
            "nix-cache-info",
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n",
            "text/x-nix-cache-info",
        )
        .await
        .unwrap();
    });
}

/// Makes `bucket` a cache with `provision` (the `iam` backend: bucket,
/// `nix-cache-info`, anonymous-read policy, a writer that may not delete),
/// state in `dir/state`; returns the writer credentials file it wrote.
pub fn provision_cache(s: &Seaweed, dir: &Path, bucket: &str) -> PathBuf {
    let state = dir.join("state");
    let admin = s.admin_env_file(dir);
    super::ok(
        super::cmd()
            .args(["provision", "--endpoint", &s.endpoint, "--bucket", bucket])
            .args(["--backend", "iam", "--admin-credentials-file"])
            .arg(&admin)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap(),
    );
    state.join("writer.env")
}

/// The substituter URL of `bucket`.
pub fn cache_url(s: &Seaweed, bucket: &str) -> String {
    format!("{}/{bucket}", s.endpoint)
}

/// A signing key in `dir` (mode 0600): returns the secret key file and the
/// public key line clients trust.
pub fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let k = SecretKey::generate(name).unwrap();
    let p = dir.join(format!("{name}.sk"));
    std::fs::write(&p, k.to_file_string()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    (p, k.public().to_string())
}

/// Every key in the bucket.
pub fn keys(s: &Seaweed, bucket: &str) -> Vec<String> {
    let c = admin(s);
    let mut v: Vec<String> = block_on(c.list_all(bucket, ""))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    v.sort();
    v
}

/// Deletes every object of `bucket` but `nix-cache-info`: the cache as
/// provisioning left it, for the next round of a test.
pub fn clear_cache(s: &Seaweed, bucket: &str) {
    let c = admin(s);
    for k in keys(s, bucket) {
        if k != "nix-cache-info" {
            block_on(c.delete_object(bucket, &k)).unwrap();
        }
    }
}

/// Checks every narinfo in the bucket: it parses, and its `URL:` object
/// exists with exactly `FileSize` bytes. Returns the parsed narinfos.
#[track_caller]
pub fn check_narinfos(s: &Seaweed, bucket: &str) -> Vec<NarInfo> {
    let c = admin(s);
    block_on(async {
        let mut out = Vec::new();
        for o in c.list_all(bucket, "").await.unwrap() {
            if !o.key.ends_with(".narinfo") {
                continue;
            }
            let text = c.get_object(bucket, &o.key).await.unwrap().unwrap();
            let n = NarInfo::parse_bytes(&text)
                .unwrap_or_else(|e| panic!("{}: unreadable narinfo: {e}", o.key));
            let meta = c
                .head_object(bucket, &n.url)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{}: its NAR {} is missing", o.key, n.url));
            assert_eq!(
                Some(meta.size),
                n.file_size,
                "{}: NAR {} has {} bytes, FileSize says {:?}",
                o.key,
                n.url,
                meta.size,
                n.file_size
            );
            out.push(n);
        }
        out
    })
}
