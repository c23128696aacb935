//! Secret audit: a whole run of the helper's commands against a real
//! SeaweedFS, with every output stream and the argv and environment of
//! every process it executes captured (`strace -f -e trace=execve`, see
//! `common::traced_run`), then searched for the run's secrets: the store's
//! admin secret, the writer secret the store issued, and the signing key
//! (its seed and whole secret key, in base64 and hex). None may appear.
//! Every file the run wrote that holds a secret must be mode 0600 or
//! stricter, in a directory no one else can enter.
//!
//! Commands covered: `keys generate`, `keys public`, `provision` (fresh,
//! converged, dry run), `configure` (nix.conf and AWS profile, applied and
//! as a dry-run diff over an older secret), `check`, `push` (which runs
//! Nix), `enqueue` and `upload-queue --once`, `doctor`, `keys rotate`,
//! `resign` (dry run and applied) and `keys retire`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::nix::{TestNix, chain_expr};
use common::seaweed::Seaweed;
use common::{cmd, mode, traced};
use nix_binary_cache::credentials::Credentials;
use nix_binary_cache::signing::SecretKey;

/// What one traced command left: its name, output and execve trace.
struct Step {
    name: String,
    output: String,
    trace: String,
}

#[derive(Default)]
struct Audit {
    steps: Vec<Step>,
}

impl Audit {
    /// Runs the helper with `args` under strace; it must succeed.
    fn run(&mut self, args: &[&str]) -> String {
        let mut c = cmd();
        c.args(args);
        self.run_command(&c, true)
    }

    /// Runs `c` under strace; with `must_succeed`, a failure fails the test.
    fn run_command(&mut self, c: &std::process::Command, must_succeed: bool) -> String {
        let (status, output, trace) = traced(c);
        let args: Vec<String> = c
            .get_args()
            .take(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            status.success() || !must_succeed,
            "{args:?} failed:\n{output}"
        );
        self.steps.push(Step {
            name: args.join(" "),
            output: output.clone(),
            trace,
        });
        output
    }

    /// Every place a secret appears, as "step: stream".
    fn leaks(&self, secrets: &[(&str, String)]) -> Vec<String> {
        let mut found = Vec::new();
        for step in &self.steps {
            for (what, value) in secrets {
                if step.output.contains(value.as_str()) {
                    found.push(format!("{what} in the output of `{}`", step.name));
                }
                if step.trace.contains(value.as_str()) {
                    let line = step
                        .trace
                        .lines()
                        .find(|l| l.contains(value.as_str()))
                        .unwrap_or_default();
                    let program = line.split('"').nth(1).unwrap_or("?");
                    found.push(format!(
                        "{what} in the argv/environment of {program} (run by `{}`)",
                        step.name
                    ));
                }
            }
        }
        found
    }
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// The forms a secret key could leak in.
fn key_forms(key: &SecretKey) -> Vec<(&'static str, String)> {
    let file = key.to_file_string();
    let whole = file.split_once(':').unwrap().1.to_string();
    let bytes = BASE64.decode(&whole).unwrap();
    vec![
        // The first 40 base64 characters encode only seed bytes.
        ("signing key seed (base64)", whole[..40].to_string()),
        (
            "signing key seed (base64 of the seed alone)",
            BASE64.encode(&bytes[..32])[..40].to_string(),
        ),
        ("signing key seed (hex)", hex::encode(&bytes[..32])),
        ("secret key (base64)", whole),
    ]
}

#[test]
fn no_secret_reaches_output_argv_env_or_a_readable_file() {
    let sw = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let admin_file = sw.admin_env_file(root);
    let state = root.join("state");
    let keys = root.join("keys");
    let key_file = keys.join("signing-key");
    let aws_file = root.join("aws/credentials");
    let nix_conf = root.join("nix/nix.conf");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut audit = Audit::default();

    // Keys: generated, shown, and generated again (kept, unchanged).
    let key_path = s(&key_file);
    let generate = [
        "keys",
        "generate",
        "--name",
        "cache.test-1",
        "--secret-key-file",
        &key_path,
    ];
    audit.run(&generate);
    let public = audit.run(&["keys", "public", &key_path]);
    let public = public.trim().lines().last().unwrap().to_string();
    audit.run(&generate);

    // Provision: fresh, converged, dry run.
    let provision = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "provision",
            "--endpoint",
            &sw.endpoint,
            "--bucket",
            "nix-cache",
            "--backend",
            "iam",
            "--admin-credentials-file",
            &s(&admin_file),
            "--state-dir",
            &s(&state),
            "--wait-timeout",
            "20",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    for extra in [&["--json"][..], &[], &["--dry-run"]] {
        let args = provision(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        audit.run(&args);
    }
    let writer_file = state.join("writer.env");
    let writer = Credentials::from_env_file(&writer_file).unwrap();

    // Configure: nix.conf and the AWS profile, then a dry run whose diff
    // replaces an older secret.
    let substituter = format!("{}/nix-cache", sw.endpoint);
    audit.run(&[
        "configure",
        "--nix-conf",
        &s(&nix_conf),
        "--substituter",
        &substituter,
        "--trusted-public-key",
        &public,
        "--secret-key-file",
        &s(&key_file),
        "--aws-credentials-file",
        &s(&aws_file),
        "--aws-profile",
        "nix-cache",
        "--writer-credentials-file",
        &s(&writer_file),
    ]);
    let old_aws = common::write(
        root,
        "aws-old/credentials",
        &format!(
            "[nix-cache]\naws_access_key_id = {}\naws_secret_access_key = an-older-secret-value\n",
            writer.access_key_id
        ),
    );
    std::fs::set_permissions(&old_aws, std::fs::Permissions::from_mode(0o600)).unwrap();
    let diff = audit.run(&[
        "configure",
        "--dry-run",
        "--aws-credentials-file",
        &s(&old_aws),
        "--aws-profile",
        "nix-cache",
        "--writer-credentials-file",
        &s(&writer_file),
    ]);
    assert!(
        diff.contains("******** (new)"),
        "the dry run shows no masked change:\n{diff}"
    );

    // A manifest that names the secret files (never their content).
    let manifest = common::write(
        root,
        "manifest.toml",
        &format!(
            "version = 1\n[cache]\nendpoint = \"{}\"\nbucket = \"nix-cache\"\n\
             [provision]\nbackend = \"iam\"\nadminCredentialsFile = \"{}\"\n\
             [push]\nkeyName = \"cache.test-1\"\nsigningKeyFile = \"{}\"\n\
             writerCredentialsFile = \"{}\"\n",
            sw.endpoint,
            admin_file.display(),
            key_file.display(),
            writer_file.display()
        ),
    );
    audit.run(&["check", &s(&manifest)]);

    // Push (it runs Nix), the post-build-hook's enqueue and one drain of
    // the upload queue, as the writer.
    let nix = TestNix::new();
    let built = nix.build_expr(&chain_expr("secret-audit", 3));
    let queued = nix.build_expr(&chain_expr("secret-audit-queued", 2));
    // The cache's location and the writer, as every bucket command takes them.
    let store = |c: &mut std::process::Command| {
        c.args(["--endpoint", &sw.endpoint, "--bucket", "nix-cache"])
            .arg("--writer-credentials-file")
            .arg(&writer_file);
    };
    let bucket_args = |c: &mut std::process::Command| {
        store(c);
        c.arg("--signing-key-file").arg(&key_file);
    };
    let mut c = nix.helper();
    c.arg("push");
    bucket_args(&mut c);
    c.args(&built);
    audit.run_command(&c, true);
    let spool = root.join("spool");
    let mut c = nix.helper();
    c.arg("enqueue")
        .arg("--spool")
        .arg(&spool)
        .env("OUT_PATHS", &queued[0]);
    audit.run_command(&c, true);
    let mut c = nix.helper();
    c.args(["upload-queue", "--once", "--spool"]).arg(&spool);
    bucket_args(&mut c);
    audit.run_command(&c, true);

    // Doctor (its verdict does not matter here, only what it prints).
    let mut c = nix.helper();
    c.arg("doctor");
    bucket_args(&mut c);
    c.args(["--public-key", &public, "--substituter-url", &substituter]);
    audit.run_command(&c, false);

    // Rotation: a second key, every narinfo re-signed, the old key retired.
    audit.run(&["keys", "rotate", "--secret-key-file", &s(&key_file)]);
    // `signing-key` has no key name in it: rotate appends `-2`.
    let new_key_file = keys.join("signing-key-2");
    let new_public = audit.run(&["keys", "public", &s(&new_key_file)]);
    let new_public = new_public.trim().lines().last().unwrap().to_string();
    for dry in [true, false] {
        let mut c = cmd();
        c.arg("resign");
        store(&mut c);
        c.arg("--signing-key-file")
            .arg(&new_key_file)
            .args(["--trusted-public-key", &public]);
        if dry {
            c.arg("--dry-run");
        }
        audit.run_command(&c, !dry);
    }
    let mut c = cmd();
    c.args(["keys", "retire"]);
    store(&mut c);
    c.args(["--trusted-public-key", &new_public, "cache.test-1"]);
    audit.run_command(&c, true);

    // The capture works: argv and environment are in the trace.
    let canary = root.join("canary-7f3a9c/signing-key");
    std::fs::create_dir_all(canary.parent().unwrap()).unwrap();
    std::fs::copy(&key_file, &canary).unwrap();
    audit.run(&["keys", "public", &s(&canary)]);
    let last = audit.steps.last().unwrap();
    assert!(
        last.trace.contains("canary-7f3a9c"),
        "argv not traced:\n{}",
        last.trace
    );
    assert!(
        last.trace.contains("PATH="),
        "environment not traced:\n{}",
        last.trace
    );

    // The audit.
    let mut secrets = vec![
        ("admin secret", sw.admin_secret.clone()),
        ("writer secret", writer.secret_access_key.clone()),
    ];
    secrets.extend(key_forms(&SecretKey::from_file(&key_file).unwrap()));
    secrets.extend(key_forms(&SecretKey::from_file(&new_key_file).unwrap()));
    // Nix ran: its execve is in the trace (so argv/env of children are seen).
    assert!(
        audit
            .steps
            .iter()
            .any(|s| s.trace.contains("execve(\"") && s.trace.matches("execve(").count() > 1),
        "no child process was traced"
    );
    let leaks = audit.leaks(&secrets);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    // Files: each file holding a secret is 0600 or stricter, in a 0700 directory.
    let mut holders = Vec::new();
    for f in files(root) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        if secrets.iter().any(|(_, v)| text.contains(v.as_str())) {
            assert_eq!(
                mode(&f) & 0o077,
                0,
                "{} holds a secret but is {:04o}",
                f.display(),
                mode(&f)
            );
            holders.push(f);
        }
    }
    for must in [&writer_file, &key_file, &new_key_file, &aws_file] {
        assert!(
            holders.contains(must),
            "{} holds no secret?",
            must.display()
        );
        let parent = must.parent().unwrap();
        assert_eq!(
            mode(parent) & 0o077,
            0,
            "{} is {:04o}",
            parent.display(),
            mode(parent)
        );
    }
    // Files that must not hold one.
    for public_file in [nix_conf.clone(), keys.join("signing-key.pub")] {
        assert!(
            !holders.contains(&public_file),
            "{} holds a secret",
            public_file.display()
        );
    }
}
