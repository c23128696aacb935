//! Signing keys against real Nix 2.8: keys made by us work in `nix store
//! sign`/`verify`, keys made by Nix work here, and our signatures are
//! byte-identical to the ones Nix adds.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::nix::{TestNix, chain_expr};
use common::{cmd, mode, ok, show};
use nix_binary_cache::signing::{self, PublicKey, SecretKey};

/// A salt unique to this test run, so each test builds paths of its own.
fn salt(tag: &str) -> String {
    common::salt(&format!("keys-{tag}"))
}

/// Builds `n` chained derivations and returns the top path.
fn build_chain(nix: &TestNix, tag: &str, n: usize) -> String {
    nix.build_expr(&chain_expr(&salt(tag), n))
        .pop()
        .expect("nix-build printed a path")
}

/// Runs `keys generate` and returns the public key it prints last.
fn generate(secret: &Path, name: &str) -> String {
    let out = ok(run_generate(secret, name));
    out.lines().last().expect("a public key line").to_string()
}

/// Runs `keys generate --name NAME --secret-key-file SECRET`.
fn run_generate(secret: &Path, name: &str) -> std::process::Output {
    cmd()
        .args(["keys", "generate", "--name", name, "--secret-key-file"])
        .arg(secret)
        .output()
        .unwrap()
}

/// Mode bits of a file.
/// The base64 half of a secret key file: the string that must never leak.
fn secret_part(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.trim().split_once(':').unwrap().1.to_string()
}

/// A secret key made by `nix key generate-secret`, and its public key from
/// `nix key convert-secret-to-public`.
fn nix_generated_key(nix: &TestNix, dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let sk = ok(nix.run("nix", &["key", "generate-secret", "--key-name", name]));
    let path = dir.join(format!("{name}.sec"));
    std::fs::write(&path, &sk).unwrap();
    let out = nix
        .command("nix")
        .args(["key", "convert-secret-to-public"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    (path, ok(out).trim().to_string())
}

/// `nix store verify` of one path requiring one trusted signature (a locally
/// built path is otherwise trusted as "ultimate" without any).
fn nix_verify(nix: &TestNix, path: &str, public: &str) -> bool {
    nix.run(
        "nix",
        &[
            "store",
            "verify",
            "--no-contents",
            "--sigs-needed",
            "1",
            "--trusted-public-keys",
            public,
            path,
        ],
    )
    .status
    .success()
}

/// One entry of `nix path-info --json --sigs`.
struct PathInfo {
    path: String,
    nar_hash_nix32: String,
    nar_size: u64,
    references: Vec<String>,
    sigs: Vec<String>,
}

/// Reads path metadata of `path`'s closure from Nix; the SRI `narHash` Nix
/// 2.8 prints is converted to `sha256:<nix32>` by `nix hash to-base32`.
fn path_infos(nix: &TestNix, path: &str) -> Vec<PathInfo> {
    let out = ok(nix.run(
        "nix",
        &["path-info", "--json", "--sigs", "--recursive", path],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .expect("Nix 2.8 prints an array")
        .iter()
        .map(|e| {
            let sri = e["narHash"].as_str().unwrap();
            let nix32 = ok(nix.run("nix", &["hash", "to-base32", sri]));
            PathInfo {
                path: e["path"].as_str().unwrap().to_string(),
                nar_hash_nix32: format!("sha256:{}", nix32.trim()),
                nar_size: e["narSize"].as_u64().unwrap(),
                references: e["references"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
                sigs: e["signatures"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[test]
fn our_key_works_in_nix_store_sign_and_verify() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/ours.sec");
    let public = generate(&key_file, "ours-test-1");
    let top = build_chain(&nix, "sign", 2);

    assert!(!nix_verify(&nix, &top, &public), "unsigned path verified");
    ok(nix.run(
        "nix",
        &[
            "store",
            "sign",
            "--key-file",
            key_file.to_str().unwrap(),
            &top,
        ],
    ));
    assert!(
        nix_verify(&nix, &top, &public),
        "Nix rejects our key's signature"
    );

    // A foreign key with the same name must not verify it.
    let (_, foreign) = nix_generated_key(&nix, dir.path(), "ours-test-1");
    assert_ne!(foreign, public);
    assert!(!nix_verify(&nix, &top, &foreign), "a foreign key verified");
}

#[test]
fn nix_generated_key_is_read_by_us() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, public) = nix_generated_key(&nix, dir.path(), "theirs-test-7");
    let key = SecretKey::from_file(&path).unwrap();
    assert_eq!(key.name, "theirs-test-7");
    assert_eq!(key.public().to_string(), public);
    assert_eq!(PublicKey::parse(&public).unwrap(), key.public());
    // Our serialisation is Nix's, byte for byte.
    assert_eq!(
        key.to_file_string(),
        std::fs::read_to_string(&path).unwrap().trim()
    );
}

#[test]
fn our_signatures_equal_nix_store_sign() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = nix_generated_key(&nix, dir.path(), "same-sig-1");
    let key = SecretKey::from_file(&key_file).unwrap();
    let top = build_chain(&nix, "fp", 3);
    ok(nix.run(
        "nix",
        &[
            "store",
            "sign",
            "--recursive",
            "--key-file",
            key_file.to_str().unwrap(),
            &top,
        ],
    ));

    let infos = path_infos(&nix, &top);
    assert_eq!(infos.len(), 3, "the chain has three paths");
    assert!(
        infos.iter().any(|i| !i.references.is_empty()),
        "the chain has references"
    );
    let trusted = [PublicKey::parse(&public).unwrap()];
    let foreign = [SecretKey::generate("same-sig-1").unwrap().public()];
    for info in &infos {
        let fp = signing::fingerprint(
            &info.path,
            &info.nar_hash_nix32,
            info.nar_size,
            &info.references,
        );
        let ours = key.sign(fp.as_bytes());
        assert!(
            info.sigs.contains(&ours),
            "{}: our signature {ours} is not among Nix's {:?}\nfingerprint {fp}",
            info.path,
            info.sigs
        );
        assert!(signing::verify_any(&fp, &info.sigs, &trusted));
        assert!(!signing::verify_any(&fp, &info.sigs, &foreign));
    }
}

#[test]
fn generate_creates_once_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("state/keys/cache.sec");
    let public_file = dir.path().join("state/keys/cache.pub");

    let out = ok(run_generate(&secret, "cache.test-1"));
    assert!(out.contains(": created"), "{out}");
    let public = out.lines().last().unwrap().to_string();
    assert!(public.starts_with("cache.test-1:"), "{out}");
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(secret.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(&public_file), 0o644);
    assert_eq!(
        std::fs::read_to_string(&public_file).unwrap(),
        format!("{public}\n")
    );
    let key_bytes = std::fs::read(&secret).unwrap();
    let mtime = std::fs::metadata(&secret).unwrap().mtime_nsec();

    // Second run: nothing changes, the same key is reported.
    let out = ok(run_generate(&secret, "cache.test-1"));
    assert!(
        !out.contains("created") && !out.contains("updated"),
        "{out}"
    );
    assert_eq!(out.matches("unchanged").count(), 2, "{out}");
    assert_eq!(out.lines().last().unwrap(), public);
    assert_eq!(std::fs::read(&secret).unwrap(), key_bytes);
    assert_eq!(std::fs::metadata(&secret).unwrap().mtime_nsec(), mtime);

    // A lost or stale public key file is rewritten from the secret key.
    std::fs::write(&public_file, "stale\n").unwrap();
    let out = ok(run_generate(&secret, "cache.test-1"));
    assert!(out.contains("cache.pub: updated"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&public_file).unwrap(),
        format!("{public}\n")
    );

    // An explicit public key file.
    let other_pub = dir.path().join("elsewhere/cache.pub");
    ok(cmd()
        .args([
            "keys",
            "generate",
            "--name",
            "cache.test-1",
            "--secret-key-file",
        ])
        .arg(&secret)
        .arg("--public-key-file")
        .arg(&other_pub)
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read_to_string(&other_pub).unwrap(),
        format!("{public}\n")
    );

    // Another name for the same file: refused, the key is kept.
    let o = run_generate(&secret, "cache.test-2");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cache.sec") && err.contains("`cache.test-1`"),
        "{err}"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), key_bytes);

    // No secret on stdout or stderr of any run.
    let b64 = secret_part(&secret);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&b64));
    assert!(!String::from_utf8_lossy(&o.stderr).contains(&b64));
    assert!(!out.contains(&b64));
}

#[test]
fn key_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "a:b", "a b"] {
        let o = cmd()
            .args(["keys", "generate", "--name", bad, "--secret-key-file"])
            .arg(dir.path().join("k"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--name"),
            "{}",
            show(&o)
        );
    }
    assert!(
        common::listing(dir.path()).is_empty(),
        "{:?}",
        common::listing(dir.path())
    );

    // No `-N`: a warning, not a failure.
    let o = cmd()
        .args([
            "keys",
            "generate",
            "--name",
            "norotation",
            "--secret-key-file",
        ])
        .arg(dir.path().join("k"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning") && err.contains("-N"), "{err}");
}

#[test]
fn keys_public_matches_nix() {
    let nix = TestNix::new();
    let dir = tempfile::tempdir().unwrap();
    let (path, public) = nix_generated_key(&nix, dir.path(), "from-nix-3");
    let out = ok(cmd().args(["keys", "public"]).arg(&path).output().unwrap());
    assert_eq!(out.trim(), public);

    // And the other way round: Nix derives the same public key from ours.
    let ours = dir.path().join("ours.sec");
    let printed = generate(&ours, "ours-4");
    let o = nix
        .command("nix")
        .args(["key", "convert-secret-to-public"])
        .stdin(std::fs::File::open(&ours).unwrap())
        .output()
        .unwrap();
    assert_eq!(ok(o).trim(), printed);
    let out = ok(cmd().args(["keys", "public"]).arg(&ours).output().unwrap());
    assert_eq!(out.trim(), printed);
}

#[test]
fn bad_key_files_give_clear_errors_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let good = SecretKey::generate("bad-case-1").unwrap().to_file_string();
    let b64 = good.split_once(':').unwrap().1;
    let short = base64_of(&[9u8; 48]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("truncated", format!("bad-case-1:{}", &b64[..57]), "base64"),
        (
            "nonbase64",
            format!("bad-case-1:{}*{}", &b64[..40], &b64[41..]),
            "base64",
        ),
        ("wronglen", format!("bad-case-1:{short}"), "48 bytes"),
        ("nocolon", b64.to_string(), "no `:`"),
        (
            "public",
            SecretKey::generate("bad-case-1")
                .unwrap()
                .public()
                .to_string(),
            "32 bytes",
        ),
        ("empty", String::new(), "no `:`"),
    ];
    for (file, content, reason) in &cases {
        let p = dir.path().join(file);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        for args in read_and_generate(&p, "bad-case-1") {
            let o = cmd().args(&args).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{file}: {}", show(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(p.to_str().unwrap()), "{file}: {err}");
            assert!(err.contains(reason), "{file}: want {reason:?} in {err}");
            if content.len() > 30 {
                let tail = content.split_once(':').map_or(content.as_str(), |(_, b)| b);
                assert!(!err.contains(&tail[..20]), "{file}: secret in {err}");
            }
            assert!(o.stdout.is_empty(), "{file}: {}", show(&o));
            assert_eq!(
                &std::fs::read_to_string(&p).unwrap(),
                content,
                "{file} was changed"
            );
        }
    }

    // A directory where the key file should be.
    let o = run_generate(dir.path(), "d-1");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is a directory"),
        "{}",
        show(&o)
    );

    // A dangling symlink: not readable, and never replaced by a new key.
    let link = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("missing-target"), &link).unwrap();
    for args in read_and_generate(&link, "d-1") {
        let o = cmd().args(&args).output().unwrap();
        assert!(!o.status.success(), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("dangling"), "{err}");
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!dir.path().join("missing-target").exists());

    // A missing file under a path whose parent is a regular file.
    let o = cmd()
        .args(["keys", "generate", "--name", "d-1", "--secret-key-file"])
        .arg(dir.path().join("empty/key"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("empty"),
        "{}",
        show(&o)
    );

    // Nothing partial left behind: only the files the test made.
    let mut want: Vec<String> = cases.iter().map(|c| c.0.to_string()).collect();
    want.push("dangling".into());
    want.sort();
    assert_eq!(common::listing(dir.path()), want);
}

#[test]
fn readable_secret_key_warns() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("k.sec");
    let public = generate(&secret, "mode-1");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cmd()
        .args(["keys", "public"])
        .arg(&secret)
        .output()
        .unwrap();
    assert_eq!(ok(o.clone()).trim(), public);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning") && err.contains("0644") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains(&secret_part(&secret)));
    // Generate keeps the key (and warns) rather than touching it.
    let o = run_generate(&secret, "mode-1");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0644"),
        "{}",
        show(&o)
    );
    assert_eq!(ok(o).lines().last().unwrap(), public);
    assert_eq!(mode(&secret), 0o644);
}

#[test]
fn no_secret_in_argv_env_or_output() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("k.sec");
    let s = secret.to_str().unwrap();
    let gen_args = [
        "keys",
        "generate",
        "--name",
        "argv-1",
        "--secret-key-file",
        s,
    ];
    let (out1, trace1) = common::traced_run(&gen_args);
    let (out2, trace2) = common::traced_run(&["keys", "public", s]);
    let b64 = secret_part(&secret);
    // The seed alone, too, in case it were ever printed separately.
    let seed_b64 = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap();
        base64_of(&raw[..32])
    };
    for text in [&out1, &trace1, &out2, &trace2] {
        assert!(!text.contains(&b64), "secret key found in {text}");
        assert!(!text.contains(&seed_b64[..40]), "seed found in {text}");
    }
}

/// The two commands that read a secret key file: `keys public PATH` and
/// `keys generate --name NAME --secret-key-file PATH`.
fn read_and_generate<'a>(path: &'a Path, name: &'a str) -> [Vec<&'a str>; 2] {
    let p = path.to_str().unwrap();
    [
        vec!["keys", "public", p],
        vec!["keys", "generate", "--name", name, "--secret-key-file", p],
    ]
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
