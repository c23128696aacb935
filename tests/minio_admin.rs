//! The MinIO admin client against a **stand-in for a MinIO server** (see
//! `common/minio_standin.rs`; the real server is AGPL and never runs here).
//!
//! Request shape: MinIO's Python SDK (`MinioAdmin`, the oracle) and our
//! client perform the same operations against the stand-in, which records
//! them and checks their SigV4 signatures; method, path, query, the headers
//! MinIO looks at and the (decrypted) bodies must agree. Where they differ
//! on purpose the test names the difference.
//!
//! Answers: our client's handling of every documented answer, replayed by
//! the stand-in's model of users, policies and attachments.

mod common;

use std::time::Duration;

use common::minio_standin::{AttachRoute, Auth, MinioStandIn, Recorded, Reply, User};
use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::minio::admin::{AdminClient, AttachOutcome};
use serde_json::{Value, json};

const ROOT: &str = "minioadmin-root";
const ROOT_SECRET: &str = "root-secret-0123456789";
const WRITER: &str = "nix-cache-writer";
const WRITER_SECRET: &str = "writer-secret-abcdefghij";
const POLICY: &str = "nix-cache-write";

fn writer_policy() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:GetBucketLocation",
                   "s3:AbortMultipartUpload", "s3:ListBucketMultipartUploads",
                   "s3:ListMultipartUploadParts"],
        "Resource": ["arn:aws:s3:::nix-cache", "arn:aws:s3:::nix-cache/*"]}]})
}

fn client(standin: &MinioStandIn, key: &str, secret: &str) -> AdminClient {
    let mut config = EndpointConfig::new(&standin.url).unwrap();
    config.max_retries = 3;
    AdminClient::new(
        Endpoint::new(config).unwrap(),
        Credentials::new(key, secret),
    )
    .with_credentials_file("/run/credentials/provision/minio-admin.env")
}

fn root_client(standin: &MinioStandIn) -> AdminClient {
    client(standin, ROOT, ROOT_SECRET)
}

fn sdk_admin(standin: &MinioStandIn, ops: Value) -> Vec<Value> {
    common::minio_sdk(
        &["admin", &standin.url],
        &[
            ("MINIO_SDK_ACCESS_KEY", ROOT),
            ("MINIO_SDK_SECRET", ROOT_SECRET),
        ],
        &ops,
    )
    .as_array()
    .unwrap()
    .clone()
}

/// Decrypts recorded bodies with the SDK's `minio.crypto.decrypt`.
fn sdk_decrypt(bodies: &[&[u8]]) -> Vec<Value> {
    let jobs: Vec<Value> = bodies
        .iter()
        .map(|b| json!({"op": "decrypt", "password": ROOT_SECRET, "hex": hex::encode(b)}))
        .collect();
    common::minio_sdk(&["crypto"], &[], &Value::from(jobs))
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let plain = hex::decode(a["hex"].as_str().expect("the SDK decrypts it")).unwrap();
            serde_json::from_slice(&plain).unwrap()
        })
        .collect()
}

fn valid_auth(r: &Recorded) -> (String, Vec<String>) {
    match &r.auth {
        Auth::Valid {
            access_key,
            region,
            signed_headers,
        } => {
            assert_eq!(access_key, ROOT, "{}", r.line());
            (region.clone(), signed_headers.clone())
        }
        other => panic!("{}: signature not valid: {other:?}", r.line()),
    }
}

#[tokio::test]
async fn same_requests_as_the_sdk() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);

    // The oracle first, on a fresh server.
    let sdk = sdk_admin(
        &standin,
        json!([
            {"call": "user_add", "args": [WRITER, WRITER_SECRET]},
            {"call": "user_info", "args": [WRITER]},
            {"call": "policy_add", "args": [POLICY], "kwargs": {"policy": writer_policy()}},
            {"call": "policy_info", "args": [POLICY]},
            {"call": "attach_policy", "args": [[POLICY]], "kwargs": {"user": WRITER}},
            {"call": "policy_set", "args": [format!("readwrite,{POLICY}")], "kwargs": {"user": WRITER}},
        ]),
    );
    for a in &sdk {
        assert!(a.get("error").is_none(), "the SDK failed: {a}");
    }
    let theirs = standin.requests();
    let their_state = standin.with_state(|s| (s.users.clone(), s.policies.clone()));

    // Then ours, on an identical fresh server.
    standin.reset();
    let c = root_client(&standin);
    c.add_user(WRITER, WRITER_SECRET).await.unwrap();
    let info = c.user_info(WRITER).await.unwrap().unwrap();
    c.add_canned_policy(POLICY, &writer_policy()).await.unwrap();
    let policy = c.info_canned_policy(POLICY).await.unwrap().unwrap();
    let attached = c.attach_policies(WRITER, &[POLICY.into()]).await.unwrap();
    c.set_user_policies(WRITER, &["readwrite".into(), POLICY.into()])
        .await
        .unwrap();
    let ours = standin.requests();
    let our_state = standin.with_state(|s| (s.users.clone(), s.policies.clone()));

    // Same results and the same server state.
    let sdk_info: Value = serde_json::from_str(sdk[1]["result"].as_str().unwrap()).unwrap();
    assert_eq!(sdk_info["status"], "enabled");
    assert!(info.is_enabled());
    let sdk_policy: Value = serde_json::from_str(sdk[3]["result"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy, sdk_policy,
        "v=2 unwrapped equals the SDK's v1 answer"
    );
    let sdk_attached: Value = serde_json::from_str(sdk[4]["result"].as_str().unwrap()).unwrap();
    assert_eq!(sdk_attached["policiesAttached"], json!([POLICY]));
    assert_eq!(attached, AttachOutcome::Attached(vec![POLICY.into()]));
    assert_eq!(our_state, their_state);
    assert_eq!(
        our_state.0[WRITER],
        User {
            secret: WRITER_SECRET.into(),
            enabled: true,
            policies: vec!["readwrite".into(), POLICY.into()],
        }
    );

    assert_eq!(ours.len(), 6, "{ours:#?}");
    assert_eq!(theirs.len(), 6, "{theirs:#?}");
    let mut encrypted_pairs = Vec::new();
    for (t, o) in theirs.iter().zip(&ours) {
        let what = format!("SDK {} vs ours {}", t.line(), o.line());
        assert_eq!(t.method, o.method, "{what}");
        assert_eq!(t.path, o.path, "{what}");
        assert_eq!(t.status, o.status, "{what}");
        let op = o.admin_op().unwrap();

        // Query. Named difference: we ask info-canned-policy for v=2 (the
        // dated form madmin-go uses); the SDK asks for the v1 form.
        let mut our_query = o.sorted_query();
        if op == "info-canned-policy" {
            assert!(our_query.contains(&("v".into(), "2".into())), "{what}");
            assert_eq!(t.param("v"), None, "{what}");
            our_query.retain(|(k, _)| k != "v");
        }
        assert_eq!(t.sorted_query(), our_query, "{what}");

        // Signatures: both valid for service s3, with the headers MinIO
        // requires signed. Named difference: the SDK signs with an empty
        // region (as madmin-go does), we with the configured region; MinIO
        // accepts any region in the scope.
        let (their_region, their_signed) = valid_auth(t);
        let (our_region, our_signed) = valid_auth(o);
        assert_eq!(their_region, "", "{what}");
        assert_eq!(our_region, "us-east-1", "{what}");
        for h in ["host", "x-amz-content-sha256", "x-amz-date"] {
            assert!(their_signed.iter().any(|s| s == h), "{what}: SDK signs {h}");
            assert!(our_signed.iter().any(|s| s == h), "{what}: we sign {h}");
        }

        // Content-Type. Attach requires application/octet-stream, signed.
        // Named difference: the SDK sends it on every request; we send it
        // only where MinIO needs it, and never a form type.
        assert_eq!(
            t.header("content-type"),
            Some("application/octet-stream"),
            "{what}"
        );
        if op == "idp/builtin/policy/attach" {
            assert_eq!(
                o.header("content-type"),
                Some("application/octet-stream"),
                "{what}"
            );
            assert!(our_signed.iter().any(|s| s == "content-type"), "{what}");
        } else {
            assert_eq!(o.header("content-type"), None, "{what}");
        }

        // Bodies: compared as JSON values (key order differs), encrypted
        // ones after decryption by the SDK.
        match op {
            "add-user" | "idp/builtin/policy/attach" => {
                assert!(o.body.len() >= 57, "{what}");
                assert_eq!(
                    o.header("content-length"),
                    Some(o.body.len().to_string().as_str())
                );
                encrypted_pairs.push((op, t.body.clone(), o.body.clone()));
            }
            "add-canned-policy" => {
                let tv: Value = serde_json::from_slice(&t.body).unwrap();
                let ov: Value = serde_json::from_slice(&o.body).unwrap();
                assert_eq!(tv, ov, "{what}");
            }
            _ => {
                assert!(t.body.is_empty() && o.body.is_empty(), "{what}");
            }
        }
    }
    assert_eq!(encrypted_pairs.len(), 2);
    let bodies: Vec<&[u8]> = encrypted_pairs
        .iter()
        .flat_map(|(_, t, o)| [t.as_slice(), o.as_slice()])
        .collect();
    let plain = sdk_decrypt(&bodies);
    assert_eq!(
        plain[0],
        json!({"status": "enabled", "secretKey": WRITER_SECRET})
    );
    assert_eq!(plain[0], plain[1], "add-user bodies");
    assert_eq!(plain[2], json!({"policies": [POLICY], "user": WRITER}));
    assert_eq!(plain[2], plain[3], "attach bodies");
    // Our encrypted bodies never carry the secret in clear.
    let needle = WRITER_SECRET.as_bytes();
    for r in &ours {
        assert!(!r.body.windows(needle.len()).any(|w| w == needle));
    }
}

#[tokio::test]
async fn answers_of_a_current_server() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);
    let c = root_client(&standin);

    assert_eq!(
        c.user_info(WRITER).await.unwrap(),
        None,
        "NoSuchUser is None"
    );
    assert_eq!(c.info_canned_policy(POLICY).await.unwrap(), None);
    let e = c
        .attach_policies(WRITER, &[POLICY.into()])
        .await
        .unwrap_err();
    assert_eq!(e.store_code(), Some("XMinioAdminNoSuchUser"), "{e}");
    let e = c.attach_user_policy(WRITER, POLICY).await.unwrap_err();
    assert_eq!(
        e.store_code(),
        Some("XMinioAdminNoSuchUser"),
        "no fallback for a missing user: {e}"
    );
    assert!(
        !standin
            .requests()
            .iter()
            .any(|r| r.admin_op() == Some("set-user-or-group-policy"))
    );

    c.add_user(WRITER, WRITER_SECRET).await.unwrap();
    let e = c.attach_user_policy(WRITER, POLICY).await.unwrap_err();
    assert_eq!(e.store_code(), Some("XMinioAdminNoSuchPolicy"), "{e}");

    c.add_canned_policy(POLICY, &writer_policy()).await.unwrap();
    // MinIO hands the policy back reordered: the same sets, another order.
    let back = c.info_canned_policy(POLICY).await.unwrap().unwrap();
    assert_ne!(back, writer_policy());
    assert_eq!(
        sorted(&back["Statement"][0]["Action"]),
        sorted(&writer_policy()["Statement"][0]["Action"])
    );

    standin.clear();
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::Attached(vec![POLICY.into()]),
        "the encrypted 200 answer is decrypted"
    );
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::AlreadyApplied
    );
    let reqs = standin.requests();
    assert_eq!(
        reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 400],
        "{reqs:#?}"
    );
    let info = c.user_info(WRITER).await.unwrap().unwrap();
    assert_eq!(info.policies(), vec![POLICY.to_string()]);

    // A re-added user keeps its mapping and gets the new secret.
    c.add_user(WRITER, "another-secret-123").await.unwrap();
    standin.with_state(|s| {
        assert_eq!(s.users[WRITER].secret, "another-secret-123");
        assert_eq!(s.users[WRITER].policies, vec![POLICY.to_string()]);
    });

    // A short secret gets MinIO's code and a hint.
    let e = c.add_user(WRITER, "short").await.unwrap_err();
    assert_eq!(e.store_code(), Some("XMinioAdminInvalidSecretKey"));
    assert!(e.to_string().contains("at least 8 characters"), "{e}");
}

fn sorted(v: &Value) -> Vec<String> {
    let mut a: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    a.sort();
    a
}

#[tokio::test]
async fn info_canned_policy_from_a_server_without_v2() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);
    let c = root_client(&standin);
    // Servers before 2021-12 ignore v=2 and send the bare document.
    standin.push_reply(
        "/minio/admin/v3/info-canned-policy",
        Reply::json(200, &writer_policy()),
    );
    assert_eq!(
        c.info_canned_policy(POLICY).await.unwrap(),
        Some(writer_policy())
    );
}

#[tokio::test]
async fn early_2023_attach_answers() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);
    standin.with_state(|s| s.attach_route = AttachRoute::Early2023);
    let c = root_client(&standin);
    c.add_user(WRITER, WRITER_SECRET).await.unwrap();
    c.add_canned_policy(POLICY, &writer_policy()).await.unwrap();
    standin.clear();
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::Attached(vec![]),
        "201 without a body"
    );
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::AlreadyApplied,
        "409 XMinioPolicyAlreadyAttached"
    );
    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![201, 409]);
}

#[tokio::test]
async fn missing_attach_route_falls_back_to_the_union() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);
    standin.with_state(|s| s.attach_route = AttachRoute::Missing);
    let c = root_client(&standin);
    c.add_user(WRITER, WRITER_SECRET).await.unwrap();
    c.add_canned_policy(POLICY, &writer_policy()).await.unwrap();
    // The user already has a policy someone else attached: it must survive
    // the deprecated call, which replaces the whole mapping.
    standin.with_state(|s| {
        s.users.get_mut(WRITER).unwrap().policies = vec!["readwrite".into()];
    });
    standin.clear();
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::MappingReplaced(vec!["readwrite".into(), POLICY.into()])
    );
    let reqs = standin.requests();
    let lines: Vec<(String, Option<&str>, u16)> = reqs
        .iter()
        .map(|r| (r.method.clone(), r.admin_op(), r.status))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("POST".into(), Some("idp/builtin/policy/attach"), 426),
            ("GET".into(), Some("user-info"), 200),
            ("PUT".into(), Some("set-user-or-group-policy"), 200),
        ]
    );
    assert_eq!(
        reqs[2].param("policyName"),
        Some("readwrite,nix-cache-write")
    );
    assert_eq!(reqs[2].param("userOrGroup"), Some(WRITER));
    assert_eq!(reqs[2].param("isGroup"), Some("false"));
    standin.with_state(|s| {
        assert_eq!(
            s.users[WRITER].policies,
            vec!["readwrite".to_string(), POLICY.into()]
        )
    });

    // Converged: the fallback reads and writes nothing more.
    standin.clear();
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::AlreadyApplied
    );
    assert!(
        !standin
            .requests()
            .iter()
            .any(|r| r.admin_op() == Some("set-user-or-group-policy"))
    );

    // A bare 404 from a router that does not know the route also falls back.
    standin.with_state(|s| {
        s.users.get_mut(WRITER).unwrap().policies = vec![];
    });
    standin.push_reply(
        "/minio/admin/v3/idp/builtin/policy/attach",
        Reply {
            status: 404,
            headers: vec![],
            body: b"404 page not found\n".to_vec(),
        },
    );
    assert_eq!(
        c.attach_user_policy(WRITER, POLICY).await.unwrap(),
        AttachOutcome::MappingReplaced(vec![POLICY.into()])
    );
}

#[tokio::test]
async fn wrong_admin_credentials_say_which_file_to_check() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);
    let secret = "not-the-root-secret-xyz";

    let e = client(&standin, "nobody", secret)
        .add_user(WRITER, WRITER_SECRET)
        .await
        .unwrap_err();
    assert_eq!(e.store_code(), Some("InvalidAccessKeyId"), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("/run/credentials/provision/minio-admin.env"),
        "{text}"
    );
    assert!(text.contains("access key"), "{text}");
    assert_eq!(e.exit_code(), 3);

    let e = client(&standin, ROOT, secret)
        .user_info(WRITER)
        .await
        .unwrap_err();
    assert_eq!(e.store_code(), Some("SignatureDoesNotMatch"), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("/run/credentials/provision/minio-admin.env"),
        "{text}"
    );
    assert!(text.contains("secret"), "{text}");

    for t in [format!("{e}"), format!("{e:?}")] {
        for s in [secret, ROOT_SECRET, WRITER_SECRET] {
            assert!(!t.contains(s), "a secret leaked into {t}");
        }
    }
    // Nothing was created with the wrong credentials.
    standin.with_state(|s| assert!(s.users.is_empty()));
}

#[tokio::test]
async fn waits_while_the_server_starts() {
    let standin = MinioStandIn::start(ROOT, ROOT_SECRET);
    let c = root_client(&standin);

    standin.with_state(|s| s.starting = 3);
    assert!(
        c.is_live().await.unwrap(),
        "live answers 200 while starting"
    );
    c.wait_until_ready(Duration::from_secs(20)).await.unwrap();
    let probes: Vec<u16> = standin
        .requests()
        .iter()
        .filter(|r| r.path == "/minio/health/ready")
        .map(|r| r.status)
        .collect();
    assert_eq!(probes, vec![503, 503, 200]);
    assert!(
        standin.requests().iter().all(|r| r.auth == Auth::Anonymous),
        "health probes carry no credentials"
    );

    // Admin calls answered 503 XMinioServerNotInitialized are retried.
    standin.clear();
    standin.with_state(|s| s.starting = 2);
    assert_eq!(c.user_info(WRITER).await.unwrap(), None);
    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 404]);

    // A server that never comes up: a bounded wait, then a clear error.
    standin.with_state(|s| s.starting = u32::MAX);
    let e = c
        .wait_until_ready(Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("did not become ready within"), "{e}");
}
