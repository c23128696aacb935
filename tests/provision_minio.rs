//! `provision --backend minio` end to end. The identity plane goes to the
//! **stand-in for a MinIO server** (`common/minio_standin.rs`: the real
//! server is AGPL and never runs here), which keeps users, canned policies
//! and attachments in memory as MinIO does and records every request. The
//! bucket plane goes to a real SeaweedFS, through a recording proxy.
//! `--iam-endpoint` splits the two; on a real MinIO both are one endpoint.

mod common;

use std::process::Output;

use common::minio_standin::{AttachRoute, Auth, MinioStandIn, Recorded, User};
use common::show;
use common::store::{BUCKET, ProxiedStore, WRITER};
use nix_binary_cache::credentials::Credentials;
use serde_json::Value;

const POLICY: &str = "nix-cache-write";

/// The store behind the proxy for the bucket plane, and the MinIO stand-in
/// for the admin API.
struct Rig {
    store: ProxiedStore,
    minio: MinioStandIn,
}

impl std::ops::Deref for Rig {
    type Target = ProxiedStore;
    fn deref(&self) -> &ProxiedStore {
        &self.store
    }
}

impl Rig {
    fn new() -> Rig {
        let store = ProxiedStore::start();
        // One admin key pair for both planes, as on a real MinIO.
        let minio = MinioStandIn::start(&store.sw.admin_key, &store.sw.admin_secret);
        minio.with_state(|s| {
            s.buckets.insert(BUCKET.into());
        });
        Rig { store, minio }
    }

    /// The flags of a normal run here, besides those every provisioning
    /// test shares (`ProxiedStore::provision_args`), then `extra`.
    fn flags<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        ["--iam-endpoint", &self.minio.url, "--wait-timeout", "20"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect()
    }

    /// Runs with the normal flags plus `extra`; no secret may be printed.
    fn run(&self, extra: &[&str]) -> Output {
        self.provision("minio", &self.flags(extra))
    }

    /// Runs with `--json`; returns the output and the report.
    fn run_json(&self, extra: &[&str]) -> (Output, Value) {
        self.provision_json("minio", &self.flags(extra))
    }

    /// Runs, expects success and these statuses of writer-policy,
    /// writer-identity and attachment; returns the output and the report.
    #[track_caller]
    fn converge(&self, expected: [&str; 3]) -> (Output, Value) {
        let (o, report) = self.run_json(&[]);
        assert!(o.status.success(), "{}", show(&o));
        assert_eq!(identity_statuses(&report), expected, "{report:#}");
        (o, report)
    }

    /// Puts the writer user into the stand-in's model.
    fn insert_user(&self, secret: &str, policies: &[&str]) {
        self.minio.with_state(|s| {
            s.users.insert(
                WRITER.into(),
                User {
                    secret: secret.into(),
                    enabled: true,
                    policies: policies.iter().map(|p| p.to_string()).collect(),
                },
            );
        });
    }

    /// The requests to the stand-in since the last clear that were not GETs.
    fn minio_writes(&self) -> Vec<String> {
        ops(&self.minio.requests())
            .into_iter()
            .filter(|o| !o.starts_with("GET"))
            .collect()
    }

    fn clear(&self) {
        self.minio.clear();
        self.proxy.clear();
    }
}

/// The identity-plane statuses: writer-policy, writer-identity, attachment.
fn identity_statuses(report: &Value) -> Vec<String> {
    ["writer-policy", "writer-identity", "attachment"]
        .iter()
        .map(|r| {
            report["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["resource"] == *r)
                .unwrap_or_else(|| panic!("no {r} in {report:#}"))["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// What the stand-in saw, as `METHOD op` (admin) or `METHOD path?query`.
fn ops(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .map(|r| match r.admin_op() {
            Some(op) => format!("{} {op}", r.method),
            None if r.query.is_empty() => format!("{} {}", r.method, r.path),
            None => format!("{} {}?{}", r.method, r.path, r.query[0].0),
        })
        .collect()
}

#[test]
fn fresh_then_converged_then_drift_repaired() {
    let rig = Rig::new();

    // A fresh store: everything is created, the secret is generated.
    let (_, report) = rig.converge(["created", "created", "created"]);
    assert_eq!(report["converged"], true);
    assert_eq!(common::mode(&rig.writer_file()), 0o600);
    let writer = rig.writer();
    assert_eq!(writer.access_key_id, WRITER);
    assert!(writer.secret_access_key.len() >= 32);
    rig.minio.with_state(|s| {
        let u = &s.users[WRITER];
        assert_eq!(u.secret, writer.secret_access_key);
        assert!(u.enabled);
        assert_eq!(u.policies, vec![POLICY.to_string()]);
        let stored = s.policies[POLICY].to_string();
        for a in [
            "s3:ListBucketMultipartUploads",
            "s3:ListMultipartUploadParts",
            "s3:PutObject",
        ] {
            assert!(stored.contains(a), "{a} missing from {stored}");
        }
        assert!(!stored.contains("Delete"), "{stored}");
    });
    let first = ops(&rig.minio.requests());
    for want in [
        "GET /minio/health/ready",
        "GET info-canned-policy",
        "GET user-info",
        "PUT add-canned-policy",
        "PUT add-user",
        "POST idp/builtin/policy/attach",
    ] {
        assert!(first.iter().any(|o| o == want), "{want} not in {first:?}");
    }
    // Every request to the stand-in was signed correctly by the admin (or,
    // for the writer check, by the writer); health probes are anonymous.
    for r in rig.minio.requests() {
        assert!(
            !matches!(r.auth, Auth::Invalid(_)),
            "{}: {:?}",
            r.line(),
            r.auth
        );
    }

    // Converged: reads only, on both planes, and it says so.
    rig.clear();
    let (_, report) = rig.converge(["unchanged", "unchanged", "unchanged"]);
    assert_eq!(report["requests"]["writes"], 0, "{report:#}");
    let reqs = rig.minio.requests();
    assert!(reqs.iter().all(Recorded::is_read), "{:?}", ops(&reqs));
    let mut seen = ops(&reqs);
    seen.sort();
    assert_eq!(
        seen,
        [
            "GET /minio/health/ready",
            "GET /nix-cache?location",
            "GET info-canned-policy",
            "GET user-info",
        ]
    );
    let location = reqs
        .iter()
        .find(|r| r.admin_op().is_none() && !r.query.is_empty());
    assert!(
        matches!(&location.unwrap().auth,
            Auth::Valid { access_key, .. } if access_key == WRITER),
        "the writer check is signed as the writer"
    );
    assert!(
        rig.proxy.mutating().is_empty(),
        "{:?}",
        rig.proxy.mutating()
    );
    let text = rig.run(&[]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("converged"),
        "{}",
        show(&text)
    );

    // Someone changed the writer's secret on the server: detected by the
    // signed GET, repaired with add-user, nothing else written.
    rig.minio.with_state(|s| {
        s.users.get_mut(WRITER).unwrap().secret = "changed-by-someone-else".into();
    });
    rig.clear();
    rig.converge(["unchanged", "updated", "unchanged"]);
    assert_eq!(rig.minio_writes(), ["PUT add-user"]);
    rig.minio
        .with_state(|s| assert_eq!(s.users[WRITER].secret, writer.secret_access_key));

    // The policy was edited and detached by hand; MinIO's reordering alone
    // is not a difference (the stand-in stores actions reversed).
    rig.minio.with_state(|s| {
        let p = s.policies.get_mut(POLICY).unwrap();
        p["Statement"][0]["Action"].as_array_mut().unwrap().pop();
        s.users.get_mut(WRITER).unwrap().policies.clear();
    });
    rig.clear();
    rig.converge(["updated", "unchanged", "created"]);
    assert_eq!(
        rig.minio_writes(),
        ["PUT add-canned-policy", "POST idp/builtin/policy/attach"]
    );

    // A disabled user is enabled again (add-user keeps its policies).
    rig.minio
        .with_state(|s| s.users.get_mut(WRITER).unwrap().enabled = false);
    rig.converge(["unchanged", "updated", "unchanged"]);
    rig.minio.with_state(|s| {
        assert!(s.users[WRITER].enabled);
        assert_eq!(s.users[WRITER].policies, vec![POLICY.to_string()]);
    });
}

#[test]
fn given_writer_file_sets_that_secret() {
    let rig = Rig::new();
    let given = Credentials::new(WRITER, "given-secret-from-sops-0123");
    given.write_env_file(&rig.writer_file()).unwrap();
    // The user exists already with another secret.
    rig.insert_user("old-secret-000000", &[]);
    rig.converge(["created", "updated", "created"]);
    assert_eq!(rig.writer(), given, "a given file is never rewritten");
    rig.minio
        .with_state(|s| assert_eq!(s.users[WRITER].secret, given.secret_access_key));

    // A file whose access key is not the writer user is refused up front.
    Credentials::new("someone-else", "given-secret-from-sops-0123")
        .write_env_file(&rig.writer_file())
        .unwrap();
    rig.clear();
    let o = rig.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(rig.writer_file().to_str().unwrap()), "{err}");
    assert!(
        err.contains("someone-else") && err.contains(WRITER),
        "{err}"
    );
    assert!(
        rig.minio.requests().iter().all(Recorded::is_read),
        "nothing written"
    );
}

#[test]
fn dry_run_sends_reads_only() {
    let rig = Rig::new();
    let (o, report) = rig.run_json(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        identity_statuses(&report),
        ["would create", "would create", "would create"]
    );
    assert!(rig.minio.requests().iter().all(Recorded::is_read));
    assert!(
        !rig.writer_file().exists(),
        "no secret generated under --dry-run"
    );
    rig.minio.with_state(|s| assert!(s.users.is_empty()));
}

#[test]
fn old_server_without_attach_keeps_other_policies() {
    let rig = Rig::new();
    rig.minio
        .with_state(|s| s.attach_route = AttachRoute::Missing);
    rig.insert_user("whatever-secret-1", &["readwrite"]);
    rig.converge(["created", "updated", "created"]);
    rig.minio.with_state(|s| {
        assert_eq!(
            s.users[WRITER].policies,
            vec!["readwrite".to_string(), POLICY.into()]
        )
    });
    rig.clear();
    rig.converge(["unchanged", "unchanged", "unchanged"]);
    assert!(rig.minio.requests().iter().all(Recorded::is_read));
}

#[test]
fn waits_for_a_starting_server_and_explains_bad_admin_credentials() {
    let rig = Rig::new();
    rig.minio.with_state(|s| s.starting = 2);
    let (o, _) = rig.converge(["created", "created", "created"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("waiting for MinIO"),
        "{}",
        show(&o)
    );

    // The stand-in's root differs from the admin file (SeaweedFS accepts
    // it; MinIO does not): the error names the file to fix.
    rig.minio
        .with_state(|s| s.root = ("other-root".into(), "other-root-secret".into()));
    let o = rig.run(&[]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    assert!(err.contains(rig.admin_file.to_str().unwrap()), "{err}");
}

#[test]
fn writer_user_that_minio_refuses_is_an_error_before_any_request() {
    let rig = Rig::new();
    for bad in ["ab", "nix=writer", "a,b"] {
        let o = rig.run(&["--writer-user", bad]);
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--writer-user") && err.contains(bad), "{err}");
    }
    assert!(rig.minio.requests().is_empty());
    assert!(rig.proxy.requests().is_empty());
}
