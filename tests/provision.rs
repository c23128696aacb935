//! `provision` against a real SeaweedFS, through a recording proxy: a fresh
//! store is made into a cache, a converged one costs reads only, drift is
//! repaired exactly, and every failure says what to change.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::store::{BUCKET, ProxiedStore, WRITER};
use common::{cmd, show};
use nix_binary_cache::credentials::Credentials;
use serde_json::Value;

const INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";

/// The flags of a normal run here, besides those every provisioning test
/// shares (`ProxiedStore::provision_args`).
const FLAGS: [&str; 6] = [
    "--priority",
    "30",
    "--abort-incomplete-multipart-days",
    "7",
    "--wait-timeout",
    "10",
];

fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    FLAGS.iter().chain(extra).copied().collect()
}

/// The store behind the proxy, with the flags of a normal run.
type Rig = ProxiedStore;

impl Rig {
    fn new() -> Rig {
        ProxiedStore::start()
    }

    /// The arguments of a normal run (through the proxy), plus `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        self.provision_args("iam", &flags(extra))
    }

    /// Runs with the normal flags plus `extra`; no secret may be printed.
    fn run(&self, extra: &[&str]) -> Output {
        self.provision("iam", &flags(extra))
    }

    /// Runs with `--json` and returns the report.
    fn run_json(&self, extra: &[&str]) -> (Output, Value) {
        self.provision_json("iam", &flags(extra))
    }
}

/// `(resource, status)` of every line of a JSON report.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The same statuses as `expected` (resource order as reported).
#[track_caller]
fn assert_statuses(report: &Value, expected: &[(&str, &str)]) {
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(r, s)| (r.to_string(), s.to_string()))
        .collect();
    assert_eq!(statuses(report), want, "report:\n{report:#}");
}

const ALL: [&str; 7] = [
    "bucket",
    "nix-cache-info",
    "bucket-policy",
    "lifecycle",
    "writer-policy",
    "writer-identity",
    "attachment",
];

fn all(status: &str) -> Vec<(&'static str, &str)> {
    ALL.iter().map(|r| (*r, status)).collect()
}

#[tokio::test]
async fn fresh_store_is_provisioned_then_converged_runs_only_read() {
    let rig = Rig::new();
    let (o, report) = rig.run_json(&[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_statuses(&report, &all("created"));
    assert_eq!(report["converged"], true);

    // The writer credentials file: 0600, in the state directory.
    assert_eq!(common::mode(&rig.writer_file()), 0o600);

    // Anonymous clients read nix-cache-info as configured, and nothing else.
    let admin = rig.admin_s3();
    let anon = admin.with_credentials(None);
    let info = anon.get_object(BUCKET, "nix-cache-info").await.unwrap();
    assert_eq!(info.as_deref(), Some(INFO.as_bytes()));
    assert!(
        anon.put_object(BUCKET, "x", "y", "text/plain")
            .await
            .is_err()
    );
    assert!(anon.list_page(BUCKET, "", None, 10).await.is_err());

    // The writer writes and reads, but neither deletes nor touches another bucket.
    let writer = admin.with_credentials(Some(rig.writer()));
    writer
        .put_object(BUCKET, "nar/x.nar", "nar", "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(
        writer
            .get_object(BUCKET, "nar/x.nar")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"nar"[..])
    );
    let e = writer.delete_object(BUCKET, "nar/x.nar").await.unwrap_err();
    assert_eq!(e.store_code(), Some("AccessDenied"), "{e}");
    admin.create_bucket("other-bucket").await.unwrap();
    admin
        .put_object("other-bucket", "secret", "s", "text/plain")
        .await
        .unwrap();
    assert!(
        writer
            .put_object("other-bucket", "x", "y", "text/plain")
            .await
            .is_err()
    );
    assert!(writer.get_object("other-bucket", "secret").await.is_err());

    // The lifecycle rule is stored.
    let lc = admin.get_bucket_lifecycle(BUCKET).await.unwrap().unwrap();
    assert!(
        lc.contains("<DaysAfterInitiation>7</DaysAfterInitiation>"),
        "{lc}"
    );

    // Second run: every resource unchanged, reads only, few requests.
    rig.proxy.clear();
    let o = rig.run(&[]);
    assert!(o.status.success(), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), ALL.len() + 1, "{text}");
    for (line, resource) in lines.iter().zip(ALL) {
        assert!(line.starts_with(resource), "{text}");
        assert!(line.contains("  unchanged"), "{text}");
    }
    let sent = rig.proxy.requests();
    let mutating: Vec<String> = rig.proxy.mutating().iter().map(|r| r.describe()).collect();
    assert!(mutating.is_empty(), "a converged run wrote: {mutating:?}");
    assert!(sent.len() <= 12, "{} requests: {sent:#?}", sent.len());
    assert!(
        lines[ALL.len()].starts_with(&format!(
            "converged: {} requests ({} reads, 0 writes)",
            sent.len(),
            sent.len()
        )),
        "{text}"
    );
    // The writer check is a signed GET, never a HEAD.
    assert!(
        sent.iter()
            .any(|r| r.method == "GET" && r.path == format!("/{BUCKET}") && r.query == "location"),
        "{sent:#?}"
    );
}

#[tokio::test]
async fn drift_is_repaired_exactly() {
    let rig = Rig::new();
    let o = rig.run(&[]);
    assert!(o.status.success(), "{}", show(&o));
    let admin = rig.admin_s3();
    let iam = rig.admin_iam();
    let old_key = rig.writer().access_key_id;

    // Drift: no bucket policy, another nix-cache-info, policy detached, key deleted.
    admin.delete_bucket_policy(BUCKET).await.unwrap();
    admin
        .put_object(BUCKET, "nix-cache-info", "StoreDir: /other\n", "text/plain")
        .await
        .unwrap();
    let attached = iam.list_attached_user_policies(WRITER).await.unwrap();
    assert_eq!(attached.len(), 1);
    iam.detach_user_policy(WRITER, &attached[0].arn)
        .await
        .unwrap();
    iam.delete_access_key(WRITER, &old_key).await.unwrap();

    rig.proxy.clear();
    let (o, report) = rig.run_json(&[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_statuses(
        &report,
        &[
            ("bucket", "unchanged"),
            ("nix-cache-info", "updated"),
            ("bucket-policy", "created"),
            ("lifecycle", "unchanged"),
            ("writer-policy", "unchanged"),
            ("writer-identity", "updated"),
            ("attachment", "created"),
        ],
    );
    let mut writes: Vec<String> = rig.proxy.mutating().iter().map(|r| r.describe()).collect();
    writes.sort();
    assert_eq!(
        writes,
        [
            "IAM AttachUserPolicy",
            "IAM CreateAccessKey",
            &format!("PUT /{BUCKET}/nix-cache-info"),
            &format!("PUT /{BUCKET}?policy"),
        ],
        "{:#?}",
        rig.proxy.requests()
    );

    // The new key is in the file and works; the anonymous read is back.
    let new = rig.writer();
    assert_ne!(new.access_key_id, old_key);
    let writer = admin.with_credentials(Some(new));
    writer
        .put_object(BUCKET, "narinfo", "x", "text/plain")
        .await
        .unwrap();
    let anon = admin.with_credentials(None);
    assert_eq!(
        anon.get_object(BUCKET, "nix-cache-info")
            .await
            .unwrap()
            .as_deref(),
        Some(INFO.as_bytes())
    );

    // And the next run has nothing left to do.
    let (o, report) = rig.run_json(&[]);
    assert!(o.status.success(), "{}", show(&o));
    assert_statuses(&report, &all("unchanged"));

    // The writer policy edited behind our back (delete allowed, put not):
    // a new default version, and nothing else.
    let arn = iam.list_attached_user_policies(WRITER).await.unwrap()[0]
        .arn
        .clone();
    let edited = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["s3:GetObject", "s3:DeleteObject"],
        "Resource": ["arn:aws:s3:::nix-cache", "arn:aws:s3:::nix-cache/*"]}]});
    iam.create_policy_version(&arn, &edited).await.unwrap();
    rig.proxy.clear();
    let (o, report) = rig.run_json(&[]);
    assert!(o.status.success(), "{}", show(&o));
    let mut want = all("unchanged");
    want[4] = ("writer-policy", "updated");
    assert_statuses(&report, &want);
    let writes: Vec<String> = rig.proxy.mutating().iter().map(|r| r.describe()).collect();
    assert_eq!(writes, ["IAM CreatePolicyVersion"]);
    let e = writer_after_edit(&rig).await;
    assert_eq!(e.as_deref(), Some("AccessDenied"));
}

/// The store's answer code to a DELETE by the writer (`None`: allowed).
async fn writer_after_edit(rig: &Rig) -> Option<String> {
    let writer = rig.admin_s3().with_credentials(Some(rig.writer()));
    writer
        .put_object(BUCKET, "probe", "x", "text/plain")
        .await
        .unwrap();
    writer
        .delete_object(BUCKET, "probe")
        .await
        .err()
        .and_then(|e| e.store_code().map(str::to_string))
}

#[tokio::test]
async fn dry_run_on_a_fresh_store_changes_nothing() {
    let rig = Rig::new();
    let (o, report) = rig.run_json(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_statuses(
        &report,
        &[
            ("bucket", "would create"),
            ("nix-cache-info", "would create"),
            ("bucket-policy", "would create"),
            ("lifecycle", "would create"),
            ("writer-policy", "would create"),
            ("writer-identity", "would create"),
            ("attachment", "would create"),
        ],
    );
    assert_eq!(report["converged"], false);
    let writes: Vec<String> = rig.proxy.mutating().iter().map(|r| r.describe()).collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(!rig.admin_s3().bucket_exists(BUCKET).await.unwrap());
    assert!(rig.admin_iam().get_user(WRITER).await.unwrap().is_none());
    assert!(!rig.writer_file().exists());
}

#[tokio::test]
async fn concurrent_runs_from_a_manifest_converge() {
    let rig = Rig::new();
    let manifest = common::write(
        rig.dir.path(),
        "manifest.toml",
        &format!(
            "version = 1\n[cache]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\npriority = 30\n\
             [provision]\nbackend = \"iam\"\nadminCredentialsFile = \"{}\"\nstateDir = \"{}\"\n\
             abortIncompleteMultipartDays = 7\nwaitTimeoutSecs = 10\n",
            rig.proxy.endpoint,
            rig.admin_file.display(),
            rig.state_dir().display()
        ),
    );
    let m = manifest.to_str().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            cmd()
                .args(["provision", "--manifest", m])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        rig.assert_no_secret(&o);
        assert!(o.status.success(), "{}", show(&o));
    }
    let o = cmd()
        .args(["provision", "--manifest", m, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_statuses(&report, &all("unchanged"));
    // One key for the writer, and it is the one in the file.
    rig.assert_writer_has_only_its_key().await;
}

#[tokio::test]
async fn private_cache_keeps_foreign_statements() {
    let rig = Rig::new();
    let o = rig.run(&[]);
    assert!(o.status.success(), "{}", show(&o));
    let admin = rig.admin_s3();
    let mut policy = admin.get_bucket_policy(BUCKET).await.unwrap().unwrap();
    let foreign = serde_json::json!({
        "Sid": "TheirListing", "Effect": "Allow", "Principal": {"AWS": ["*"]},
        "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::nix-cache/pub/*"]
    });
    policy["Statement"].as_array_mut().unwrap().push(foreign);
    admin.put_bucket_policy(BUCKET, &policy).await.unwrap();
    // Still public: our statement is there; theirs is not ours to judge.
    let (_, report) = rig.run_json(&[]);
    assert_statuses(&report, &all("unchanged"));

    let (o, report) = rig.run_json(&["--no-public"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        statuses(&report)[2],
        ("bucket-policy".into(), "updated".into())
    );
    let left = admin.get_bucket_policy(BUCKET).await.unwrap().unwrap();
    let sids: Vec<&str> = left["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Sid"].as_str())
        .collect();
    assert_eq!(sids, ["TheirListing"], "{left}");
    let anon = admin.with_credentials(None);
    assert!(anon.get_object(BUCKET, "nix-cache-info").await.is_err());
    let (_, report) = rig.run_json(&["--no-public"]);
    assert_statuses(&report, &all("unchanged"));
}

#[tokio::test]
async fn writer_files_the_store_did_not_issue() {
    let rig = Rig::new();
    // A hand-written file with a key the store never issued: refused, with a way out.
    std::fs::create_dir_all(rig.state_dir()).unwrap();
    let foreign = Credentials::new("AKIAFOREIGN0000000000", "foreign-secret-value-0123456789");
    std::fs::write(rig.writer_file(), foreign.to_env()).unwrap();
    let o = rig.run(&[]);
    assert!(!o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot adopt a given secret"), "{err}");
    assert!(err.contains("Delete this file"), "{err}");
    assert!(!err.contains("foreign-secret-value"), "{err}");

    // Deleted as told: provision issues a key.
    std::fs::remove_file(rig.writer_file()).unwrap();
    let o = rig.run(&[]);
    assert!(o.status.success(), "{}", show(&o));

    // The `s3` backend only checks what it is given: the issued key passes...
    let s3_args = |file: &Path| {
        vec![
            "provision".to_string(),
            "--endpoint".into(),
            rig.proxy.endpoint.clone(),
            "--bucket".into(),
            BUCKET.into(),
            "--backend".into(),
            "s3".into(),
            "--admin-credentials-file".into(),
            rig.admin_file.display().to_string(),
            "--writer-credentials-file".into(),
            file.display().to_string(),
            "--state-dir".into(),
            rig.dir.path().join("s3-state").display().to_string(),
            "--priority".into(),
            "30".into(),
            "--json".into(),
        ]
    };
    let o = cmd().args(s3_args(&rig.writer_file())).output().unwrap();
    rig.assert_no_secret(&o);
    assert!(o.status.success(), "{}", show(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        statuses(&report).last().unwrap(),
        &("writer-identity".to_string(), "unchanged".to_string())
    );
    // ... a second run does not probe the write again ...
    rig.proxy.clear();
    let o = cmd().args(s3_args(&rig.writer_file())).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        rig.proxy.mutating().is_empty(),
        "{:?}",
        rig.proxy.mutating()
    );
    // ... and a wrong secret is named as such.
    let mut wrong = rig.writer();
    wrong.secret_access_key = "not-the-secret-0123456789".into();
    let wrong_file = rig.dir.path().join("wrong.env");
    std::fs::write(&wrong_file, wrong.to_env()).unwrap();
    let o = cmd().args(s3_args(&wrong_file)).output().unwrap();
    assert!(!o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
}

#[tokio::test]
async fn wrong_admin_credentials_are_named() {
    let rig = Rig::new();
    let bad = rig.dir.path().join("bad-admin.env");
    std::fs::write(
        &bad,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY=wrong-secret-0123456789\n",
            rig.sw.admin_key
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = rig.args(&[]);
    let i = args
        .iter()
        .position(|a| a == "--admin-credentials-file")
        .unwrap();
    args[i + 1] = bad.display().to_string();
    let start = Instant::now();
    let o = cmd().args(&args).output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("admin secret") && err.contains(&bad.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "{err}");
    assert!(rig.proxy.mutating().is_empty());
}

#[test]
fn errors_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let admin = common::write(
        dir.path(),
        "admin.env",
        "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=bbbbbbbbbbbbbbbb\n",
    );
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("state");
    let run = |bucket: &str, backend: &str| {
        let start = Instant::now();
        let o = cmd()
            .args(["provision", "--endpoint", &endpoint, "--bucket", bucket])
            .args(["--backend", backend, "--admin-credentials-file"])
            .arg(&admin)
            .arg("--state-dir")
            .arg(&state)
            .args(["--wait-timeout", "3"])
            .output()
            .unwrap();
        (o, start.elapsed())
    };

    // Invalid bucket name: exit 2 at once, naming the flag.
    let (o, took) = run("Nix_Cache", "iam");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--bucket") && err.contains("Nix_Cache"),
        "{err}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A store that never comes up: bounded, logged retries, then a clear error.
    let (o, took) = run(BUCKET, "iam");
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not up yet"), "{err}");
    assert!(err.contains("did not answer within 3s"), "{err}");
    assert!(!err.contains("bbbbbbbbbbbbbbbb"), "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
}
