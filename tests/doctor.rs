//! `doctor` against a real SeaweedFS cache made by `provision` and filled
//! by `push` (paths built by a real Nix): a healthy cache passes every
//! check; then one thing at a time is broken, and doctor names the fault
//! and its fix (and provision, where that is the fix, repairs it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use common::cache::{admin, block_on, cache_url, provision_cache};
use common::nix::{TestNix, chain_expr};
use common::seaweed::Seaweed;
use common::store::BUCKET;
use common::{cmd, ok, show};
use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::http::{Endpoint, EndpointConfig};
use nix_binary_cache::iam::IamClient;
use serde_json::Value;

struct Rig {
    s: Seaweed,
    dir: tempfile::TempDir,
    writer: PathBuf,
    key_file: PathBuf,
    public: String,
    manifest: PathBuf,
    /// NIX_CONF_DIR of "the daemon" doctor reads.
    conf_dir: PathBuf,
}

impl Rig {
    /// A provisioned cache with two pushed paths, a signing key, a nix.conf
    /// that trusts it, and the manifest the modules would write.
    fn new() -> Rig {
        let s = Seaweed::start();
        let dir = tempfile::tempdir().unwrap();
        let writer = provision_cache(&s, dir.path(), BUCKET);
        let key_file = dir.path().join("keys/doctor.test-1.sec");
        let public = common::generate_key(&key_file, "doctor.test-1");
        let nix = TestNix::new();
        let salt = common::salt("doctor");
        let top = nix.build_expr(&chain_expr(&salt, 2)).remove(0);
        ok(nix
            .helper()
            .args(["push", "--endpoint", &s.endpoint, "--bucket", BUCKET])
            .arg("--writer-credentials-file")
            .arg(&writer)
            .arg("--signing-key-file")
            .arg(&key_file)
            .arg(&top)
            .output()
            .unwrap());
        let manifest = common::write(
            dir.path(),
            "manifest.toml",
            &format!(
                "version = 1\n[cache]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
                 [trust]\npublicKeys = [\"{public}\"]\n\
                 [push]\nkeyName = \"doctor.test-1\"\nsigningKeyFile = \"{}\"\n\
                 writerCredentialsFile = \"{}\"\n",
                s.endpoint,
                key_file.display(),
                writer.display()
            ),
        );
        let conf_dir = dir.path().join("daemon-conf");
        let r = Rig {
            conf_dir,
            s,
            dir,
            writer,
            key_file,
            public,
            manifest,
        };
        r.set_nix_conf(&format!(
            "substituters = https://cache.nixos.org/\nextra-substituters = {}\n\
             extra-trusted-public-keys = {}\n",
            cache_url(&r.s, BUCKET),
            r.public
        ));
        r
    }

    fn set_nix_conf(&self, text: &str) {
        common::write(&self.conf_dir, "nix.conf", text);
    }

    /// `doctor ARGS --json` with the rig's nix.conf: the output and the
    /// status of each check.
    fn doctor(&self, args: &[&str]) -> (Output, BTreeMap<String, String>, Value) {
        let o = cmd()
            .arg("doctor")
            .args(args)
            .arg("--json")
            .env("NIX_CONF_DIR", &self.conf_dir)
            .output()
            .unwrap();
        self.assert_no_secret(&o);
        let v = common::json_stdout(&o);
        let statuses = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["check"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (o, statuses, v)
    }

    fn manifest_doctor(&self) -> (Output, BTreeMap<String, String>, Value) {
        self.doctor(&["--manifest", self.manifest.to_str().unwrap()])
    }

    fn assert_no_secret(&self, o: &Output) {
        let sk = std::fs::read_to_string(&self.key_file).unwrap();
        let sk = &sk.trim().split_once(':').unwrap().1[..40];
        common::assert_no_secret(o, &[&self.s.admin_secret, sk], &self.writer);
    }

    fn provision(&self) {
        provision_cache(&self.s, self.dir.path(), BUCKET);
    }

    fn objects(&self, prefix: &str) -> Vec<String> {
        block_on(admin(&self.s).list_all(BUCKET, prefix))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }
}

/// Runs doctor until `done` holds for its statuses (a store applies
/// identity changes within a moment), at most 10 s.
#[track_caller]
fn wait_for(
    r: &Rig,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> (Output, BTreeMap<String, String>, Value) {
    let start = std::time::Instant::now();
    loop {
        let report = r.manifest_doctor();
        if done(&report.1) {
            return report;
        }
        assert!(start.elapsed().as_secs() < 10, "{}", show(&report.0));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The checks that are not "ok".
fn not_ok(statuses: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    statuses
        .iter()
        .filter(|(_, s)| *s != "ok")
        .map(|(c, s)| (c.as_str(), s.as_str()))
        .collect()
}

/// The message and fix of `check` in a JSON report.
fn finding(v: &Value, check: &str) -> (String, String) {
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check}: {v}"));
    (
        c["message"].as_str().unwrap().to_string(),
        c["fix"].as_str().unwrap_or("").to_string(),
    )
}

const ALL_CHECKS: [&str; 13] = [
    "endpoint",
    "clock",
    "nix-cache-info",
    "anonymous-write",
    "anonymous-list",
    "writer-credentials",
    "writer-write",
    "writer-delete",
    "signing-key",
    "nix-conf-substituter",
    "nix-conf-keys",
    "nix-user",
    "sample-narinfo",
];

#[track_caller]
fn assert_healthy(r: &Rig) {
    let (o, statuses, _) = r.manifest_doctor();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        statuses
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .len(),
        13
    );
    for c in ALL_CHECKS {
        assert_eq!(
            statuses.get(c).map(String::as_str),
            Some("ok"),
            "{c}: {}",
            show(&o)
        );
    }
}

#[test]
fn healthy_cache_then_one_fault_at_a_time() {
    let r = Rig::new();

    // Healthy, from the manifest: every check ok, text and JSON alike.
    assert_healthy(&r);
    let o = cmd()
        .args(["doctor", "--manifest", r.manifest.to_str().unwrap()])
        .env("NIX_CONF_DIR", &r.conf_dir)
        .output()
        .unwrap();
    let text = ok(o);
    assert!(text.ends_with("13 ok, 0 warn, 0 fail, 0 skip\n"), "{text}");
    assert!(text.contains("ok    sample-narinfo"), "{text}");
    // The same from flags.
    let (o, statuses, _) = r.doctor(&[
        "--endpoint",
        &r.s.endpoint,
        "--bucket",
        BUCKET,
        "--writer-credentials-file",
        r.writer.to_str().unwrap(),
        "--signing-key-file",
        r.key_file.to_str().unwrap(),
        "--public-key",
        &r.public,
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(not_ok(&statuses).is_empty(), "{}", show(&o));
    // No litter: one fixed probe object, however often doctor runs.
    assert_eq!(r.objects("doctor/"), ["doctor/write-probe"]);

    // 1. Bucket policy removed: clients cannot read the cache.
    block_on(admin(&r.s).delete_bucket_policy(BUCKET)).unwrap();
    let (o, statuses, v) = r.manifest_doctor();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        not_ok(&statuses),
        BTreeMap::from([("nix-cache-info", "fail"), ("sample-narinfo", "fail")])
    );
    let (msg, fix) = finding(&v, "nix-cache-info");
    assert!(msg.contains("not readable anonymously"), "{msg}");
    assert!(
        fix.contains("anonymous s3:GetObject") && fix.contains("provision"),
        "{fix}"
    );
    r.provision(); // the fix it names
    assert_healthy(&r);

    // 2. Anyone may write. The bucket policy grants s3:PutObject to
    //    everyone; SeaweedFS 4.48 decides anonymous writes by its own
    //    `anonymous` identity instead (a bucket policy grant alone is not
    //    enough there), so that identity gets the permission too.
    let c = admin(&r.s);
    let good_policy = block_on(c.get_bucket_policy(BUCKET)).unwrap().unwrap();
    let wide = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*",
                       "Action": ["s3:GetObject", "s3:PutObject"],
                       "Resource": [format!("arn:aws:s3:::{BUCKET}/*")]}]
    });
    block_on(c.put_bucket_policy(BUCKET, &wide)).unwrap();
    let iam = IamClient::new(
        Endpoint::new(EndpointConfig::new(&r.s.endpoint).unwrap()).unwrap(),
        Credentials::new(&r.s.admin_key, &r.s.admin_secret),
    );
    let anon_policy = block_on(async {
        iam.create_user("anonymous").await.unwrap();
        let p = iam
            .create_policy(
                "anonymous-write",
                &serde_json::json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": [format!("arn:aws:s3:::{BUCKET}/*")]}]}),
            )
            .await
            .unwrap();
        iam.attach_user_policy("anonymous", &p.arn).await.unwrap();
        p
    });
    let report = wait_for(&r, |s| {
        s.get("anonymous-write").map(String::as_str) == Some("fail")
    });
    for (o, statuses, v) in [report, r.manifest_doctor()] {
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert_eq!(
            not_ok(&statuses),
            BTreeMap::from([("anonymous-write", "fail")])
        );
        let (msg, fix) = finding(&v, "anonymous-write");
        assert!(msg.contains("ANYONE CAN WRITE TO THIS CACHE"), "{msg}");
        // The probe could not be deleted (anonymous DELETE is not granted,
        // the writer may not delete): doctor says where it is.
        assert!(
            msg.contains("doctor/anonymous-write-probe is left"),
            "{msg}"
        );
        assert!(
            fix.contains("s3:PutObject") && fix.contains("bucket policy"),
            "{fix}"
        );
        // One object per probe, however often doctor runs.
        assert_eq!(
            r.objects("doctor/"),
            ["doctor/anonymous-write-probe", "doctor/write-probe"]
        );
    }
    block_on(iam.detach_user_policy("anonymous", &anon_policy.arn)).unwrap();
    block_on(c.put_bucket_policy(BUCKET, &good_policy)).unwrap();
    wait_for(&r, |s| {
        s.get("anonymous-write").map(String::as_str) == Some("ok")
    });
    block_on(c.delete_object(BUCKET, "doctor/anonymous-write-probe")).unwrap();
    assert_healthy(&r);

    // 3. The writer's secret is wrong.
    let w = Credentials::from_env_file(&r.writer).unwrap();
    let bad = common::write(
        r.dir.path(),
        "bad-writer.env",
        &Credentials::new(&w.access_key_id, "not-the-secret-at-all-0123456789").to_env(),
    );
    let (o, statuses, v) = r.doctor(&[
        "--manifest",
        r.manifest.to_str().unwrap(),
        "--writer-credentials-file",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        not_ok(&statuses),
        BTreeMap::from([
            ("writer-credentials", "fail"),
            ("writer-write", "skip"),
            ("writer-delete", "skip"),
            ("sample-narinfo", "skip"),
        ])
    );
    let (msg, fix) = finding(&v, "writer-credentials");
    assert!(
        msg.contains("SignatureDoesNotMatch") && msg.contains("bad-writer.env"),
        "{msg}"
    );
    assert!(fix.contains("current secret"), "{fix}");

    // 4. A signing key clients do not trust: same name, other key; then
    //    another name.
    for (name, want) in [
        ("doctor.test-1", "another key than the trusted key named"),
        ("doctor.other-1", "is not among the configured public keys"),
    ] {
        let other = r.dir.path().join(format!("other/{name}.sec"));
        common::generate_key(&other, name);
        let (o, statuses, v) = r.doctor(&[
            "--manifest",
            r.manifest.to_str().unwrap(),
            "--signing-key-file",
            other.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert_eq!(not_ok(&statuses), BTreeMap::from([("signing-key", "fail")]));
        let (msg, fix) = finding(&v, "signing-key");
        assert!(msg.contains(want), "{msg}");
        assert!(
            fix.contains("services.nixBinaryCache.trust.publicKeys"),
            "{fix}"
        );
    }

    // 5. The daemon's nix.conf lacks the substituter (a later
    //    `substituters =` replaces the extra- one).
    r.set_nix_conf(&format!(
        "extra-substituters = {}\nsubstituters = https://cache.nixos.org/\n\
         extra-trusted-public-keys = {}\n",
        cache_url(&r.s, BUCKET),
        r.public
    ));
    let (o, statuses, v) = r.manifest_doctor();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        not_ok(&statuses),
        BTreeMap::from([("nix-conf-substituter", "fail"), ("nix-user", "warn")])
    );
    let (msg, fix) = finding(&v, "nix-conf-substituter");
    assert!(msg.contains(&cache_url(&r.s, BUCKET)), "{msg}");
    assert!(
        fix.contains("configure --nix-conf") && fix.contains("services.nixBinaryCache.trust"),
        "{fix}"
    );
    // ...and the key.
    r.set_nix_conf(&format!(
        "extra-substituters = {}\n",
        cache_url(&r.s, BUCKET)
    ));
    let (_, statuses, v) = r.manifest_doctor();
    assert_eq!(
        not_ok(&statuses),
        BTreeMap::from([("nix-conf-keys", "fail")])
    );
    assert!(finding(&v, "nix-conf-keys").1.contains(&r.public));
    r.set_nix_conf(&format!(
        "extra-substituters = {}\nextra-trusted-public-keys = {}\n",
        cache_url(&r.s, BUCKET),
        r.public
    ));
    assert_healthy(&r);

    // 6. nix-cache-info for another store directory.
    block_on(c.put_object(
        BUCKET,
        "nix-cache-info",
        "StoreDir: /gnu/store\nWantMassQuery: 1\nPriority: 41\n",
        "text/x-nix-cache-info",
    ))
    .unwrap();
    let (o, statuses, v) = r.manifest_doctor();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        not_ok(&statuses),
        BTreeMap::from([("nix-cache-info", "fail")])
    );
    let (msg, fix) = finding(&v, "nix-cache-info");
    assert!(
        msg.contains("StoreDir /gnu/store") && msg.contains("/nix/store"),
        "{msg}"
    );
    assert!(fix.contains("provision"), "{fix}");
    r.provision();
    assert_healthy(&r);
}

#[test]
fn unreachable_store_fails_the_endpoint_check_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("conf");
    common::write(&conf, "nix.conf", "");
    let o = cmd()
        .args([
            "doctor",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--bucket",
            BUCKET,
        ])
        .env("NIX_CONF_DIR", &conf)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("FAIL  endpoint") && out.contains("cannot reach"),
        "{out}"
    );
    assert!(out.contains("fix: check that the store runs"), "{out}");
    assert!(out.contains("skip  sample-narinfo"), "{out}");
    // The nix.conf checks still run: the substituter is missing there.
    assert!(out.contains("FAIL  nix-conf-substituter"), "{out}");

    // Bad input is exit 2 and names the flag.
    let o = cmd().args(["doctor", "--bucket", BUCKET]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(show(&o).contains("--endpoint"), "{}", show(&o));
}

/// A loopback HTTPS server (Python's `ssl`) with a certificate from a
/// private CA made by `openssl`: it serves `nix-cache-info` and refuses
/// everything else, enough for the endpoint and cache-info checks.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    ca: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_GET(self):
        if self.path == "/nix-cache/nix-cache-info":
            self.reply(200, b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n", "text/x-nix-cache-info")
        else:
            self.reply(403, b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>", "application/xml")
    do_PUT = do_DELETE = do_HEAD = do_GET
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl TlsServer {
    fn start(dir: &std::path::Path) -> TlsServer {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        common::require_tool("openssl", "version");
        let run = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(o.status.success(), "openssl {args:?}: {}", show(&o));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=doctor test CA",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        std::fs::write(dir.join("server.py"), TLS_SERVER).unwrap();
        let mut child = Command::new("python3")
            .arg(dir.join("server.py"))
            .arg(dir.join("leaf.pem"))
            .arg(dir.join("leaf.key"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        TlsServer {
            child,
            port,
            ca: dir.join("ca.pem"),
        }
    }
}

#[test]
fn tls_certificate_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = TlsServer::start(dir.path());
    let conf = dir.path().join("conf");
    common::write(&conf, "nix.conf", "");
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let doctor = |extra: &[&str]| {
        let o = cmd()
            .args(["doctor", "--endpoint", &endpoint, "--bucket", BUCKET])
            .args(extra)
            .env("NIX_CONF_DIR", &conf)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };

    // A certificate from a CA nobody trusts: the endpoint check says so.
    let (code, out) = doctor(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  endpoint") && out.contains("TLS certificate"),
        "{out}"
    );
    assert!(out.contains("fix:") && out.contains("--ca-file"), "{out}");
    assert!(out.contains("skip  nix-cache-info"), "{out}");

    // With its CA the certificate is valid and the cache answers.
    let (_, out) = doctor(&["--ca-file", server.ca.to_str().unwrap()]);
    assert!(out.contains("TLS certificate is valid"), "{out}");
    assert!(out.contains("ok    nix-cache-info"), "{out}");
}

#[test]
fn unprivileged_user_skips_root_secrets_and_learns_about_trust() {
    use std::os::unix::fs::PermissionsExt;
    common::require_tool("setpriv", "--version");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Secrets only root may read, as on a NixOS machine.
    let key = dir.path().join("cache.test-1.sec");
    common::generate_key(&key, "cache.test-1");
    let writer = common::write(
        dir.path(),
        "writer.env",
        &Credentials::new("AKIA1", "s3cr3t").to_env(),
    );
    std::fs::set_permissions(&writer, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = std::fs::read_to_string(dir.path().join("cache.test-1.pub")).unwrap();
    let conf = dir.path().join("conf");
    let run = |nix_conf: &str| {
        common::write(&conf, "nix.conf", nix_conf);
        for p in [&conf, &conf.join("nix.conf")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // As `nobody` (uid and gid 65534).
        let o = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::bin())
            .args([
                "doctor",
                "--endpoint",
                "http://127.0.0.1:9",
                "--bucket",
                BUCKET,
            ])
            .args(["--public-key", public.trim(), "--signing-key-file"])
            .arg(&key)
            .arg("--writer-credentials-file")
            .arg(&writer)
            .env("NIX_CONF_DIR", &conf)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = run("trusted-users = root\n");
    for line in [
        "skip  signing-key",
        "skip  writer-credentials",
        "run doctor as root",
        "FAIL  nix-user",
        "`nobody` is not in trusted-users (root)",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    // trusted-substituters lets the user opt in.
    let out = run(&format!(
        "trusted-substituters = http://127.0.0.1:9/{BUCKET}\ntrusted-public-keys = {public}\n"
    ));
    assert!(
        out.contains("ok    nix-user") && out.contains("may enable it"),
        "{out}"
    );
}
